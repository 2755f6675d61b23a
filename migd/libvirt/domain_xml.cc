#include "migd/libvirt/domain_xml.h"

#include <libxml/parser.h>
#include <libxml/tree.h>

#include <cstdio>
#include <cstdlib>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "migd/host/names.h"

namespace migd::libvirt {
namespace {

bool Named(const xmlNode* node, const char* name) {
  return node != nullptr && node->type == XML_ELEMENT_NODE &&
         xmlStrcmp(node->name, reinterpret_cast<const xmlChar*>(name)) == 0;
}

bool InMigdNamespace(const xmlNode* node) {
  return node->ns != nullptr && node->ns->href != nullptr &&
         absl::string_view(reinterpret_cast<const char*>(node->ns->href)) ==
             kMigdNamespace;
}

// The first child element named `name` (no namespace, as libvirt's own
// elements are), or nullptr.
xmlNode* Child(xmlNode* parent, const char* name) {
  for (xmlNode* c = parent->children; c != nullptr; c = c->next) {
    if (Named(c, name) && (c->ns == nullptr || !InMigdNamespace(c))) return c;
  }
  return nullptr;
}

// An attribute's value; empty when absent.
std::string Attr(const xmlNode* node, const char* name) {
  xmlChar* v = xmlGetProp(node, reinterpret_cast<const xmlChar*>(name));
  if (v == nullptr) return "";
  std::string out(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return out;
}

void SetAttr(xmlNode* node, const char* name, const std::string& value) {
  xmlSetProp(node, reinterpret_cast<const xmlChar*>(name),
             reinterpret_cast<const xmlChar*>(value.c_str()));
}

std::string Text(xmlNode* node) {
  xmlChar* v = xmlNodeGetContent(node);
  if (v == nullptr) return "";
  std::string out(reinterpret_cast<const char*>(v));
  xmlFree(v);
  return std::string(absl::StripAsciiWhitespace(out));
}

// A number as libvirt writes address parts: "0x3b" or decimal "59".
bool ParseNumber(const std::string& text, unsigned long max,
                 unsigned long* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  const unsigned long v = std::strtoul(text.c_str(), &end, 0);
  if (end == nullptr || *end != '\0' || v > max) return false;
  *out = v;
  return true;
}

// "0000:3b:02.0" from <address domain bus slot function>.
absl::StatusOr<std::string> PciAddressOf(const xmlNode* address) {
  unsigned long domain = 0, bus = 0, slot = 0, function = 0;
  if (!ParseNumber(Attr(address, "domain"), 0xffff, &domain) ||
      !ParseNumber(Attr(address, "bus"), 0xff, &bus) ||
      !ParseNumber(Attr(address, "slot"), 0x1f, &slot) ||
      !ParseNumber(Attr(address, "function"), 7, &function)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a PCI hostdev's <source><address> is not domain/bus/slot/function "
        "(domain='",
        Attr(address, "domain"), "' bus='", Attr(address, "bus"), "' slot='",
        Attr(address, "slot"), "' function='", Attr(address, "function"),
        "')"));
  }
  return absl::StrFormat("%04x:%02x:%02x.%x", domain, bus, slot, function);
}

// The 8-4-4-4-12 form the host's names accept (migd/host/names.h).
bool IsUuid(absl::string_view s) { return host::NormalizeUuid(s).ok(); }

// The <source><address> of a subsystem hostdev of type pci or mdev;
// nullptr for any other hostdev.
xmlNode* SourceAddress(xmlNode* hostdev, Hostdev::Kind* kind) {
  if (Attr(hostdev, "mode") != "subsystem") return nullptr;
  const std::string type = Attr(hostdev, "type");
  if (type == "pci") {
    *kind = Hostdev::Kind::kPci;
  } else if (type == "mdev") {
    *kind = Hostdev::Kind::kMdev;
  } else {
    return nullptr;
  }
  xmlNode* source = Child(hostdev, "source");
  return source == nullptr ? nullptr : Child(source, "address");
}

// migd's <devices> element under <metadata>, or nullptr.
xmlNode* MigdMetadata(xmlNode* root) {
  xmlNode* metadata = Child(root, "metadata");
  if (metadata == nullptr) return nullptr;
  for (xmlNode* c = metadata->children; c != nullptr; c = c->next) {
    if (Named(c, "devices") && InMigdNamespace(c)) return c;
  }
  return nullptr;
}

}  // namespace

struct DomainXml::Doc {
  explicit Doc(xmlDoc* d) : doc(d) {}
  ~Doc() { xmlFreeDoc(doc); }
  Doc(const Doc&) = delete;
  Doc& operator=(const Doc&) = delete;
  xmlDoc* doc;
};

DomainXml::DomainXml(std::unique_ptr<Doc> doc) : doc_(std::move(doc)) {}
DomainXml::DomainXml(DomainXml&&) noexcept = default;
DomainXml& DomainXml::operator=(DomainXml&&) noexcept = default;
DomainXml::~DomainXml() = default;

absl::StatusOr<DomainXml> DomainXml::Parse(absl::string_view xml) {
  // No network, no entity substitution: a definition names no external
  // resource the hook would fetch. Errors are returned, not printed.
  xmlDoc* doc = xmlReadMemory(
      xml.data(), static_cast<int>(xml.size()), "domain.xml", nullptr,
      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
  if (doc == nullptr) {
    const xmlError* e = xmlGetLastError();
    return absl::InvalidArgumentError(
        absl::StrCat("the domain definition is not XML",
                     e != nullptr && e->message != nullptr
                         ? absl::StrCat(": line ", e->line, ": ",
                                        absl::StripAsciiWhitespace(e->message))
                         : ""));
  }
  DomainXml d(std::make_unique<Doc>(doc));
  if (absl::Status s = d.Load(); !s.ok()) return s;
  return d;
}

absl::Status DomainXml::Load() {
  xmlNode* root = xmlDocGetRootElement(doc_->doc);
  if (!Named(root, "domain")) {
    return absl::InvalidArgumentError(
        "the definition's root element is not <domain>");
  }
  xmlNode* name = Child(root, "name");
  xmlNode* uuid = Child(root, "uuid");
  if (name == nullptr || Text(name).empty()) {
    return absl::InvalidArgumentError("the domain has no <name>");
  }
  name_ = Text(name);
  if (uuid == nullptr || !IsUuid(Text(uuid))) {
    return absl::InvalidArgumentError(
        absl::StrCat("domain ", name_, " has no <uuid> in 8-4-4-4-12 form"));
  }
  uuid_ = absl::AsciiStrToLower(Text(uuid));

  hostdevs_.clear();
  if (xmlNode* devices = Child(root, "devices"); devices != nullptr) {
    for (xmlNode* c = devices->children; c != nullptr; c = c->next) {
      if (!Named(c, "hostdev")) continue;
      Hostdev h;
      xmlNode* address = SourceAddress(c, &h.kind);
      if (address == nullptr) continue;
      if (h.kind == Hostdev::Kind::kPci) {
        absl::StatusOr<std::string> a = PciAddressOf(address);
        if (!a.ok()) {
          return absl::InvalidArgumentError(
              absl::StrCat("domain ", name_, ": ", a.status().message()));
        }
        h.source = *a;
      } else {
        const std::string u = Attr(address, "uuid");
        if (!IsUuid(u)) {
          return absl::InvalidArgumentError(
              absl::StrCat("domain ", name_, ": an mdev hostdev's uuid '", u,
                           "' is not a UUID"));
        }
        h.source = absl::AsciiStrToLower(u);
      }
      hostdevs_.push_back(std::move(h));
    }
  }

  migd_devices_.clear();
  std::set<std::string> seen;
  if (xmlNode* migd = MigdMetadata(root); migd != nullptr) {
    for (xmlNode* c = migd->children; c != nullptr; c = c->next) {
      if (c->type != XML_ELEMENT_NODE) continue;
      if (!Named(c, "device") || !InMigdNamespace(c)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "domain ", name_, ": migd metadata holds an unknown element <",
            reinterpret_cast<const char*>(c->name), ">"));
      }
      MigdDevice d{absl::AsciiStrToLower(Attr(c, "source")), Attr(c, "class"),
                   Attr(c, "driver")};
      if (d.source.empty() || d.device_class.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "domain ", name_,
            ": a <migd:device> needs both source= and class= (source='",
            d.source, "' class='", d.device_class, "')"));
      }
      if (!seen.insert(d.source).second) {
        return absl::InvalidArgumentError(absl::StrCat(
            "domain ", name_, ": migd metadata names ", d.source, " twice"));
      }
      migd_devices_.push_back(std::move(d));
    }
  }
  return absl::OkStatus();
}

absl::Status DomainXml::Retarget(const std::map<std::string, Target>& targets) {
  xmlNode* root = xmlDocGetRootElement(doc_->doc);
  xmlNode* devices = Child(root, "devices");
  // First find every device by where it is now, and check every target;
  // then change.
  struct Change {
    xmlNode* address;
    Hostdev::Kind kind;
    std::string new_source;
    unsigned domain = 0, bus = 0, slot = 0, function = 0;
  };
  std::map<std::string, Change> changes;
  for (xmlNode* c = devices == nullptr ? nullptr : devices->children;
       c != nullptr; c = c->next) {
    if (!Named(c, "hostdev")) continue;
    Hostdev::Kind kind = Hostdev::Kind::kPci;
    xmlNode* address = SourceAddress(c, &kind);
    if (address == nullptr) continue;
    const std::string here = kind == Hostdev::Kind::kPci
                                 ? PciAddressOf(address).value_or("")
                                 : absl::AsciiStrToLower(Attr(address, "uuid"));
    auto t = targets.find(here);
    if (t == targets.end()) continue;
    Change change{address, kind, ""};
    if (kind == Hostdev::Kind::kPci) {
      char extra = 0;
      if (t->second.pci_address.empty() ||
          std::sscanf(t->second.pci_address.c_str(), "%x:%x:%x.%x%c",
                      &change.domain, &change.bus, &change.slot,
                      &change.function, &extra) != 4 ||
          change.domain > 0xffff || change.bus > 0xff || change.slot > 0x1f ||
          change.function > 7) {
        return absl::InvalidArgumentError(
            absl::StrCat("host device ", here, " of domain ", name_,
                         " is PCI; its new place '", t->second.pci_address,
                         "' is not a PCI address"));
      }
      change.new_source =
          absl::StrFormat("%04x:%02x:%02x.%x", change.domain, change.bus,
                          change.slot, change.function);
    } else {
      if (!IsUuid(t->second.mdev_uuid)) {
        return absl::InvalidArgumentError(
            absl::StrCat("host device ", here, " of domain ", name_,
                         " is an mdev; its new place '", t->second.mdev_uuid,
                         "' is not a UUID"));
      }
      change.new_source = absl::AsciiStrToLower(t->second.mdev_uuid);
    }
    changes.emplace(here, std::move(change));
  }
  for (const auto& [source, target] : targets) {
    if (changes.count(source) == 0) {
      return absl::NotFoundError(
          absl::StrCat("domain ", name_, " has no host device ", source));
    }
  }
  xmlNode* migd = MigdMetadata(root);
  std::vector<std::pair<xmlNode*, std::string>> metadata;
  for (xmlNode* c = migd == nullptr ? nullptr : migd->children; c != nullptr;
       c = c->next) {
    if (!Named(c, "device") || !InMigdNamespace(c)) continue;
    auto it = changes.find(absl::AsciiStrToLower(Attr(c, "source")));
    if (it != changes.end()) metadata.emplace_back(c, it->second.new_source);
  }
  for (auto& [source, change] : changes) {
    if (change.kind == Hostdev::Kind::kPci) {
      SetAttr(change.address, "domain",
              absl::StrFormat("0x%04x", change.domain));
      SetAttr(change.address, "bus", absl::StrFormat("0x%02x", change.bus));
      SetAttr(change.address, "slot", absl::StrFormat("0x%02x", change.slot));
      SetAttr(change.address, "function",
              absl::StrFormat("0x%x", change.function));
    } else {
      SetAttr(change.address, "uuid", change.new_source);
    }
  }
  for (auto& [node, source] : metadata) SetAttr(node, "source", source);
  return Load();
}

std::string DomainXml::Serialize() const {
  xmlBuffer* buffer = xmlBufferCreate();
  xmlNodeDump(buffer, doc_->doc, xmlDocGetRootElement(doc_->doc), 0, 0);
  std::string out(reinterpret_cast<const char*>(xmlBufferContent(buffer)),
                  xmlBufferLength(buffer));
  xmlBufferFree(buffer);
  out.push_back('\n');
  return out;
}

}  // namespace migd::libvirt
