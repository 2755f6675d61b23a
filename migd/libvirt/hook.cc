#include "migd/libvirt/hook.h"

#include <map>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "migd/host/names.h"
#include "migd/libvirt/domain_xml.h"
#include "migd/libvirt/libvirt_check.h"

namespace migd::libvirt {
namespace {

// A module name as modprobe spells it (migd/host/names.h).
bool ModuleName(absl::string_view s) {
  return host::CanonicalModuleName(s).ok();
}

HookResult Refuse(const std::string& domain, absl::string_view what,
                  const absl::Status& why,
                  const std::function<void(const std::string&)>& log) {
  const std::string line =
      absl::StrCat("domain ", domain, ": ", what, ": ", why.message());
  log(line);
  return {1, "", absl::StrCat("migd: ", line, "\n")};
}

// The requests migd's metadata makes of `xml`'s host devices; an error when
// the metadata names a device the definition does not have, or a class it
// cannot read.
absl::StatusOr<std::vector<DeviceRequest>> RequestsOf(const DomainXml& xml) {
  std::set<std::string> hostdevs;
  for (const Hostdev& h : xml.hostdevs()) hostdevs.insert(h.source);
  std::vector<DeviceRequest> requests;
  for (const MigdDevice& d : xml.migd_devices()) {
    if (hostdevs.count(d.source) == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("migd metadata names ", d.source,
                       ", which is no <hostdev> source of the definition"));
    }
    DeviceRequest r;
    r.key = d.source;
    if (absl::Status s = ParseDeviceClass(d.device_class, &r); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", d.source, ": ", s.message()));
    }
    if (!d.driver.empty() && !ModuleName(d.driver)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device ", d.source, ": driver '", d.driver, "' is no module name"));
    }
    r.driver = d.driver;
    requests.push_back(std::move(r));
  }
  return requests;
}

std::string Describe(const Allocation& a) {
  return a.mdev_uuid.empty()
             ? absl::StrCat(
                   a.key, " -> ", a.pci_address,
                   a.driver.empty() ? "" : absl::StrCat(" (", a.driver, ")"))
             : absl::StrCat(a.key, " -> mdev ", a.mdev_uuid);
}

HookResult MigrateBegin(const HookCall& call, Agent& agent,
                        const std::function<void(const std::string&)>& log) {
  absl::StatusOr<DomainXml> xml = DomainXml::Parse(call.definition);
  if (!xml.ok()) {
    return Refuse(call.domain, "incoming definition", xml.status(), log);
  }
  absl::StatusOr<std::vector<DeviceRequest>> requests = RequestsOf(*xml);
  if (!requests.ok()) {
    return Refuse(call.domain, "incoming definition", requests.status(), log);
  }
  if (requests->empty()) {
    log(absl::StrCat("domain ", call.domain,
                     ": no migd metadata; definition unchanged"));
    return {0, "", ""};
  }
  if (absl::Status s = CheckWithLibvirt(call.definition); !s.ok()) {
    return Refuse(call.domain, "incoming definition", s, log);
  }
  const std::string owner = xml->uuid();
  absl::StatusOr<std::vector<Allocation>> allocated =
      agent.Allocate(owner, *requests);
  if (!allocated.ok()) {
    return Refuse(call.domain, "cannot allocate its devices here",
                  allocated.status(), log);
  }
  std::vector<std::string> said;
  std::map<std::string, Target> targets;
  for (const Allocation& a : *allocated) {
    targets[a.key] = Target{a.pci_address, a.mdev_uuid};
    said.push_back(Describe(a));
  }
  log(absl::StrCat("domain ", call.domain, ": allocated (owner ", owner,
                   "): ", absl::StrJoin(said, ", ")));
  // From here on a failure gives back what was allocated.
  auto undo = [&](absl::string_view what, const absl::Status& why) {
    absl::StatusOr<std::vector<Allocation>> released = agent.Release(owner);
    log(absl::StrCat(
        "domain ", call.domain, ": released its devices again",
        released.ok()
            ? ""
            : absl::StrCat(" (failed: ", released.status().message(), ")")));
    return Refuse(call.domain, what, why, log);
  };
  if (absl::Status s = xml->Retarget(targets); !s.ok()) {
    return undo("cannot point the definition at its devices", s);
  }
  const std::string out = xml->Serialize();
  if (absl::Status s = CheckWithLibvirt(out); !s.ok()) {
    return undo("the rewritten definition", s);
  }
  log(absl::StrCat("domain ", call.domain, ": definition rewritten for ",
                   targets.size(), " device(s)"));
  return {0, out, ""};
}

HookResult PrepareBegin(const HookCall& call, Agent& agent,
                        const std::function<void(const std::string&)>& log) {
  absl::StatusOr<DomainXml> xml = DomainXml::Parse(call.definition);
  if (!xml.ok()) return Refuse(call.domain, "definition", xml.status(), log);
  absl::StatusOr<std::vector<DeviceRequest>> requests = RequestsOf(*xml);
  if (!requests.ok()) {
    return Refuse(call.domain, "definition", requests.status(), log);
  }
  absl::StatusOr<std::vector<Allocation>> held = agent.List(xml->uuid());
  if (!held.ok()) {
    return Refuse(call.domain, "cannot list its devices", held.status(), log);
  }
  std::set<std::string> allocated;
  for (const Allocation& a : *held) allocated.insert(a.pci_address);
  for (const DeviceRequest& r : *requests) {
    if (r.pci_ids.empty()) continue;            // an mdev is there or not
    if (allocated.count(r.key) != 0) continue;  // bound when allocated
    if (absl::Status s = agent.Bind(r.key, r.driver); !s.ok()) {
      return Refuse(call.domain, absl::StrCat("cannot bind ", r.key), s, log);
    }
    log(absl::StrCat("domain ", call.domain, ": ", r.key, " on its driver",
                     r.driver.empty() ? "" : absl::StrCat(" ", r.driver)));
  }
  return {0, "", ""};
}

HookResult Release(const HookCall& call, Agent& agent,
                   const std::function<void(const std::string&)>& log) {
  absl::StatusOr<DomainXml> xml = DomainXml::Parse(call.definition);
  if (!xml.ok()) return Refuse(call.domain, "definition", xml.status(), log);
  absl::StatusOr<std::vector<Allocation>> released = agent.Release(xml->uuid());
  if (!released.ok()) {
    return Refuse(call.domain, "cannot release its devices", released.status(),
                  log);
  }
  if (!released->empty()) {
    std::vector<std::string> said;
    for (const Allocation& a : *released) said.push_back(Describe(a));
    log(absl::StrCat("domain ", call.domain, ": released ",
                     absl::StrJoin(said, ", ")));
  }
  return {0, "", ""};
}

}  // namespace

absl::Status ParseDeviceClass(absl::string_view text, DeviceRequest* request) {
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "pci:")) {
    absl::StatusOr<host::PciIds> ids = host::ParsePciIds(rest);
    if (!ids.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "class '", text, "': want pci:VVVV:DDDD or pci:VVVV:DDDD:SVVV:SDDD"));
    }
    request->pci_ids = host::FormatPciIds(*ids);
    return absl::OkStatus();
  }
  if (absl::ConsumePrefix(&rest, "mdev:")) {
    std::pair<absl::string_view, absl::string_view> parts =
        absl::StrSplit(rest, absl::MaxSplits('@', 1));
    auto name_ok = [](absl::string_view s) {
      if (s.empty() || s.size() > 128 || s == "." || s == "..") return false;
      for (char c : s) {
        if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' &&
            c != '_' && c != '.' && c != ':') {
          return false;
        }
      }
      return true;
    };
    if (!name_ok(parts.first) ||
        (!parts.second.empty() && !name_ok(parts.second)) ||
        (absl::StrContains(rest, '@') && parts.second.empty())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "class '", text, "': want mdev:TYPE or mdev:TYPE@PARENT"));
    }
    request->mdev_type = std::string(parts.first);
    request->mdev_parent = std::string(parts.second);
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "class '", text, "': want pci:VVVV:DDDD or mdev:TYPE[@PARENT]"));
}

HookResult RunHook(const HookCall& call, Agent& agent,
                   const std::function<void(const std::string&)>& log) {
  const std::string op = absl::StrCat(call.operation, " ", call.sub_operation);
  log(absl::StrCat("domain ", call.domain, ": ", op, " ", call.extra));
  if (op == "migrate begin") return MigrateBegin(call, agent, log);
  if (op == "prepare begin") return PrepareBegin(call, agent, log);
  if (op == "stopped end" || op == "release end") {
    return Release(call, agent, log);
  }
  return {0, "", ""};
}

}  // namespace migd::libvirt
