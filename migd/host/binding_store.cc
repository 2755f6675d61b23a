// migd/host/binding_store.cc

#include "migd/host/binding_store.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "migd/host/names.h"
#include "migd/host/state_file.h"

namespace migd::host {
namespace {

constexpr absl::string_view kHeader = "# migd host bindings v1";
constexpr absl::string_view kKeys[] = {"driver", "original_driver",
                                       "original_override"};

// A name that may stand in a line: one sysfs entry (no space, '=' or
// newline can be in one).
absl::Status CheckName(absl::string_view what, absl::string_view name) {
  if (absl::Status s = ValidateDeviceName(name); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
  }
  return absl::OkStatus();
}

// The device name in `record` as the bus names it: a PCI address is
// normalized (lowercase), a platform name checked.
absl::StatusOr<std::string> DeviceName(Bus bus, absl::string_view device) {
  if (bus == Bus::kPci) return NormalizePciAddress(device);
  if (absl::Status s = CheckName("platform device", device); !s.ok()) return s;
  return std::string(device);
}

absl::Status CheckRecord(const BindRecord& r) {
  absl::StatusOr<std::string> device = DeviceName(r.bus, r.device);
  if (!device.ok()) return device.status();
  if (*device != r.device) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device \"", r.device, "\" is not normalized (", *device, ")"));
  }
  if (absl::Status s = CheckName("driver", r.driver); !s.ok()) return s;
  if (r.original.driver.has_value()) {
    if (absl::Status s = CheckName("original driver", *r.original.driver);
        !s.ok()) {
      return s;
    }
  }
  if (r.original.override.has_value()) {
    if (absl::Status s =
            CheckName("original driver_override", *r.original.override);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string FormatBindingLine(const BindRecord& r) {
  return absl::StrCat(BusName(r.bus), " ", r.device, " driver=", r.driver,
                      " original_driver=", r.original.driver.value_or(""),
                      " original_override=", r.original.override.value_or(""));
}

absl::StatusOr<BindRecord> ParseBindingLine(absl::string_view line) {
  std::vector<absl::string_view> words =
      absl::StrSplit(line, ' ', absl::SkipEmpty());
  if (words.size() != 2 + std::size(kKeys)) {
    return absl::InvalidArgumentError(
        absl::StrCat("want \"BUS DEVICE driver=D original_driver=[D] "
                     "original_override=[O]\", got ",
                     words.size(), " words"));
  }
  BindRecord r;
  r.changed = true;
  if (words[0] == "pci") {
    r.bus = Bus::kPci;
  } else if (words[0] == "platform") {
    r.bus = Bus::kPlatform;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown bus \"", words[0], "\" (pci or platform)"));
  }
  r.device = std::string(words[1]);
  std::string values[std::size(kKeys)];
  for (size_t i = 0; i < std::size(kKeys); ++i) {
    absl::string_view word = words[2 + i];
    if (!absl::ConsumePrefix(&word, kKeys[i]) ||
        !absl::ConsumePrefix(&word, "=")) {
      return absl::InvalidArgumentError(absl::StrCat("word ", 3 + i, " is \"",
                                                     words[2 + i], "\", not ",
                                                     kKeys[i], "=..."));
    }
    values[i] = std::string(word);
  }
  if (values[0].empty()) {
    return absl::InvalidArgumentError("driver= is empty");
  }
  r.driver = values[0];
  if (!values[1].empty()) r.original.driver = values[1];
  if (!values[2].empty()) r.original.override = values[2];
  if (absl::Status s = CheckRecord(r); !s.ok()) return s;
  return r;
}

absl::StatusOr<std::unique_ptr<BindingStore>> BindingStore::Open(
    const std::string& dir) {
  std::string path = StatePath(dir, kFileName);
  std::unique_ptr<BindingStore> store(new BindingStore(dir, path));
  absl::StatusOr<std::optional<std::string>> read =
      ReadStateFile("host bindings", dir, path);
  if (!read.ok()) return read.status();
  if (!read->has_value()) return store;
  const std::string& text = **read;
  const auto corrupt = [&](int line_no, absl::string_view what) {
    return absl::DataLossError(absl::StrCat(
        "host bindings ", path, ":", line_no, " is corrupt (", what,
        "); it records the drivers migd must return devices to: fix the "
        "line, or move the file aside and check those devices' drivers by "
        "hand"));
  };
  if (!text.empty() && text.back() != '\n') {
    // Every write ends the file with a newline: a cut-off last line is
    // damage, not a record.
    int lines = 1;
    for (char c : text) lines += c == '\n' ? 1 : 0;
    return corrupt(lines, "the last line is cut off");
  }
  int line_no = 0;
  absl::MutexLock lock(&store->mu_);
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (line.empty() || absl::StartsWith(line, "#")) continue;
    absl::StatusOr<BindRecord> r = ParseBindingLine(line);
    if (!r.ok()) return corrupt(line_no, r.status().message());
    Key key{r->bus, r->device};
    if (!store->records_.emplace(key, *r).second) {
      return corrupt(line_no,
                     absl::StrCat("device ", r->device, " is recorded twice"));
    }
  }
  return store;
}

std::optional<BindRecord> BindingStore::Find(Bus bus,
                                             absl::string_view device) const {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(Key{bus, std::string(device)});
  if (it == records_.end()) return std::nullopt;
  return it->second;
}

std::vector<BindRecord> BindingStore::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<BindRecord> out;
  for (const auto& [key, r] : records_) out.push_back(r);
  return out;
}

absl::Status BindingStore::Put(const BindRecord& record) {
  if (absl::Status s = CheckRecord(record); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("host bindings ", path_, ": ", s.message()));
  }
  absl::MutexLock lock(&mu_);
  std::map<Key, BindRecord> next = records_;
  BindRecord stored = record;
  stored.changed = true;
  next[Key{record.bus, record.device}] = stored;
  if (absl::Status s = WriteFile(next); !s.ok()) return s;
  records_ = std::move(next);
  return absl::OkStatus();
}

absl::Status BindingStore::Remove(Bus bus, absl::string_view device) {
  absl::MutexLock lock(&mu_);
  const Key key{bus, std::string(device)};
  if (records_.count(key) == 0) return absl::OkStatus();
  std::map<Key, BindRecord> next = records_;
  next.erase(key);
  if (absl::Status s = WriteFile(next); !s.ok()) return s;
  records_ = std::move(next);
  return absl::OkStatus();
}

absl::Status BindingStore::WriteFile(
    const std::map<Key, BindRecord>& records) const {
  std::string text = absl::StrCat(
      kHeader,
      "\n# One line per device migd bound: BUS DEVICE driver=WHERE "
      "original_driver=FROM original_override=FROM (empty: none).\n");
  for (const auto& [key, r] : records) {
    absl::StrAppend(&text, FormatBindingLine(r), "\n");
  }
  return WriteStateFile("host bindings", dir_, path_, text);
}

}  // namespace migd::host
