// migd/host/binding_store.cc

#include "migd/host/binding_store.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "migd/host/names.h"
#include "migd/host/scoped_fd.h"

namespace migd::host {
namespace {

constexpr absl::string_view kHeader = "# migd host bindings v1";
constexpr absl::string_view kKeys[] = {"driver", "original_driver",
                                       "original_override"};

std::string JoinPath(const std::string& dir, absl::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::Status ErrnoError(int err, absl::string_view what) {
  return absl::ErrnoToStatus(err, what);
}

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

// write(2) all of `data`, retrying short writes and EINTR.
bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
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
  std::string path = JoinPath(dir, kFileName);
  std::unique_ptr<BindingStore> store(new BindingStore(dir, path));
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT) {
      struct stat st;
      if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "host bindings: ", dir, " is not a directory (the state dir)"));
      }
      return store;
    }
    if (err == ELOOP) {
      return absl::FailedPreconditionError(absl::StrCat(
          "host bindings ", path, " is a symlink, not a regular file"));
    }
    return ErrnoError(err, absl::StrCat("host bindings: open ", path));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return ErrnoError(errno, absl::StrCat("host bindings: stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("host bindings ", path, " is not a regular file"));
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return ErrnoError(errno, absl::StrCat("host bindings: read ", path));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
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
  const std::string tmp = path_ + ".tmp";
  const auto fail = [&](absl::string_view what) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return ErrnoError(err, absl::StrCat("host bindings: ", what));
  };
  // A temporary file left by a crash is stale: replace it.
  ScopedFd fd(::open(tmp.c_str(),
                     O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
                     0600));
  if (!fd.valid()) return fail(absl::StrCat("create ", tmp));
  if (::fchmod(fd.get(), 0600) != 0) return fail(absl::StrCat("chmod ", tmp));
  if (!WriteAll(fd.get(), text)) return fail(absl::StrCat("write ", tmp));
  if (::fsync(fd.get()) != 0) return fail(absl::StrCat("fsync ", tmp));
  if (::close(fd.release()) != 0) return fail(absl::StrCat("close ", tmp));
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    return fail(absl::StrCat("rename ", tmp, " to ", path_));
  }
  // The rename is durable once the directory is.
  ScopedFd dir(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid() || ::fsync(dir.get()) != 0) {
    const int err = errno;
    return ErrnoError(err, absl::StrCat("host bindings: fsync of ", dir_,
                                        " after writing ", path_));
  }
  return absl::OkStatus();
}

}  // namespace migd::host
