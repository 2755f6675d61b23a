// migd/host/allocation_store.cc

#include "migd/host/allocation_store.h"

#include <map>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "migd/host/names.h"
#include "migd/host/state_file.h"

namespace migd::host {
namespace {

constexpr absl::string_view kHeader = "# migd host allocations v1";
constexpr absl::string_view kWhat = "host allocations";
constexpr size_t kMaxName = 128;

// The words of a line after its kind, as key=value, in this order.
constexpr absl::string_view kPciKeys[] = {"owner", "key", "address", "driver",
                                          "bound"};
constexpr absl::string_view kMdevKeys[] = {"owner", "key", "uuid", "parent",
                                           "type"};

absl::Status CheckAllocation(const Allocation& a) {
  if (absl::Status s = ValidateAllocationName("owner", a.owner); !s.ok()) {
    return s;
  }
  if (absl::Status s = ValidateAllocationName("key", a.key); !s.ok()) return s;
  if (a.kind == Allocation::Kind::kPci) {
    absl::StatusOr<std::string> bdf = NormalizePciAddress(a.address);
    if (!bdf.ok()) return bdf.status();
    if (*bdf != a.address) {
      return absl::InvalidArgumentError(absl::StrCat(
          "address \"", a.address, "\" is not normalized (", *bdf, ")"));
    }
    if (absl::Status s = ValidateDeviceName(a.driver); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("driver: ", s.message()));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> uuid = NormalizeUuid(a.mdev_uuid);
  if (!uuid.ok()) return uuid.status();
  if (*uuid != a.mdev_uuid) {
    return absl::InvalidArgumentError(absl::StrCat(
        "uuid \"", a.mdev_uuid, "\" is not normalized (", *uuid, ")"));
  }
  for (const auto& [what, name] :
       {std::pair{"parent", &a.mdev_parent}, std::pair{"type", &a.mdev_type}}) {
    if (absl::Status s = ValidateDeviceName(*name); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateAllocationName(absl::string_view what,
                                    absl::string_view text) {
  bool ok = !text.empty() && text.size() <= kMaxName;
  for (size_t i = 0; ok && i < text.size(); ++i) {
    const char c = text[i];
    ok = absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == ':' || c == '@' || c == '+' || c == '/' || c == '-';
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", absl::CHexEscape(text),
                     "\" is not 1..128 of [A-Za-z0-9._:@+/-]"));
  }
  return absl::OkStatus();
}

std::string FormatAllocationLine(const Allocation& a) {
  if (a.kind == Allocation::Kind::kPci) {
    return absl::StrCat("pci owner=", a.owner, " key=", a.key,
                        " address=", a.address, " driver=", a.driver,
                        " bound=", a.bound ? "yes" : "no");
  }
  return absl::StrCat("mdev owner=", a.owner, " key=", a.key,
                      " uuid=", a.mdev_uuid, " parent=", a.mdev_parent,
                      " type=", a.mdev_type);
}

absl::StatusOr<Allocation> ParseAllocationLine(absl::string_view line) {
  std::vector<absl::string_view> words =
      absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (words.empty()) return absl::InvalidArgumentError("the line is empty");
  Allocation a;
  absl::Span<const absl::string_view> keys;
  if (words[0] == "pci") {
    a.kind = Allocation::Kind::kPci;
    keys = kPciKeys;
  } else if (words[0] == "mdev") {
    a.kind = Allocation::Kind::kMdev;
    keys = kMdevKeys;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown kind \"", words[0], "\" (pci or mdev)"));
  }
  if (words.size() != 1 + keys.size()) {
    return absl::InvalidArgumentError(absl::StrCat("want ", 1 + keys.size(),
                                                   " words for ", words[0],
                                                   ", got ", words.size()));
  }
  std::vector<std::string> values;
  for (size_t i = 0; i < keys.size(); ++i) {
    absl::string_view word = words[1 + i];
    if (!absl::ConsumePrefix(&word, keys[i]) ||
        !absl::ConsumePrefix(&word, "=")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "word ", 2 + i, " is \"", words[1 + i], "\", not ", keys[i], "=..."));
    }
    values.emplace_back(word);
  }
  a.owner = values[0];
  a.key = values[1];
  if (a.kind == Allocation::Kind::kPci) {
    a.address = values[2];
    a.driver = values[3];
    if (values[4] != "yes" && values[4] != "no") {
      return absl::InvalidArgumentError(
          absl::StrCat("bound=", values[4], " is not yes or no"));
    }
    a.bound = values[4] == "yes";
  } else {
    a.mdev_uuid = values[2];
    a.mdev_parent = values[3];
    a.mdev_type = values[4];
  }
  if (absl::Status s = CheckAllocation(a); !s.ok()) return s;
  return a;
}

absl::StatusOr<std::unique_ptr<AllocationStore>> AllocationStore::Open(
    const std::string& dir) {
  std::string path = StatePath(dir, kFileName);
  std::unique_ptr<AllocationStore> store(new AllocationStore(dir, path));
  absl::StatusOr<std::optional<std::string>> text =
      ReadStateFile(kWhat, dir, path);
  if (!text.ok()) return text.status();
  if (!text->has_value()) return store;
  const auto corrupt = [&](int line_no, absl::string_view what) {
    return absl::DataLossError(absl::StrCat(
        "host allocations ", path, ":", line_no, " is corrupt (", what,
        "); it records the devices migd allocated and must release: fix the "
        "line, or move the file aside and release those devices by hand "
        "(migctl host unbind, migctl host mdev-remove)"));
  };
  const std::string& all = **text;
  if (!all.empty() && all.back() != '\n') {
    int lines = 1;
    for (char c : all) lines += c == '\n' ? 1 : 0;
    return corrupt(lines, "the last line is cut off");
  }
  std::set<std::pair<std::string, std::string>> keys;
  std::set<std::string> devices;
  int line_no = 0;
  absl::MutexLock lock(&store->mu_);
  for (absl::string_view line : absl::StrSplit(all, '\n')) {
    ++line_no;
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    absl::StatusOr<Allocation> a = ParseAllocationLine(line);
    if (!a.ok()) return corrupt(line_no, a.status().message());
    if (!keys.emplace(a->owner, a->key).second) {
      return corrupt(line_no, absl::StrCat("owner ", a->owner, "'s key ",
                                           a->key, " is recorded twice"));
    }
    if (!devices.insert(a->host_name()).second) {
      return corrupt(line_no, absl::StrCat("device ", a->host_name(),
                                           " is allocated twice"));
    }
    store->all_.push_back(*std::move(a));
  }
  return store;
}

std::vector<Allocation> AllocationStore::List(absl::string_view owner) const {
  absl::MutexLock lock(&mu_);
  std::vector<Allocation> out;
  for (const Allocation& a : all_) {
    if (owner.empty() || a.owner == owner) out.push_back(a);
  }
  return out;
}

std::optional<Allocation> AllocationStore::Find(absl::string_view owner,
                                                absl::string_view key) const {
  absl::MutexLock lock(&mu_);
  for (const Allocation& a : all_) {
    if (a.owner == owner && a.key == key) return a;
  }
  return std::nullopt;
}

std::optional<Allocation> AllocationStore::Holding(
    absl::string_view host_name) const {
  absl::MutexLock lock(&mu_);
  for (const Allocation& a : all_) {
    if (a.host_name() == host_name) return a;
  }
  return std::nullopt;
}

absl::Status AllocationStore::Put(const Allocation& a) {
  if (absl::Status s = CheckAllocation(a); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("host allocations ", path_, ": ", s.message()));
  }
  absl::MutexLock lock(&mu_);
  std::vector<Allocation> next = all_;
  bool replaced = false;
  for (Allocation& have : next) {
    if (have.owner == a.owner && have.key == a.key) {
      have = a;
      replaced = true;
    } else if (have.host_name() == a.host_name()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "host allocations ", path_, ": device ", a.host_name(),
          " is allocated to ", have.owner, " (key ", have.key, ") already"));
    }
  }
  if (!replaced) next.push_back(a);
  if (absl::Status s = Write(next); !s.ok()) return s;
  all_ = std::move(next);
  return absl::OkStatus();
}

absl::Status AllocationStore::Remove(absl::string_view owner,
                                     absl::string_view key) {
  absl::MutexLock lock(&mu_);
  std::vector<Allocation> next;
  for (const Allocation& a : all_) {
    if (a.owner != owner || a.key != key) next.push_back(a);
  }
  if (next.size() == all_.size()) return absl::OkStatus();
  if (absl::Status s = Write(next); !s.ok()) return s;
  all_ = std::move(next);
  return absl::OkStatus();
}

absl::Status AllocationStore::Write(const std::vector<Allocation>& all) const {
  std::string text = absl::StrCat(
      kHeader,
      "\n# One line per device allocated, in order: pci owner= key= address= "
      "driver= bound=yes|no, or mdev owner= key= uuid= parent= type=.\n");
  for (const Allocation& a : all) {
    absl::StrAppend(&text, FormatAllocationLine(a), "\n");
  }
  return WriteStateFile(kWhat, dir_, path_, text);
}

}  // namespace migd::host
