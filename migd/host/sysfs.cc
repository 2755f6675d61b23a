// migd/host/sysfs.cc

#include "migd/host/sysfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "migd/base/unique_fd.h"

namespace migd::host {
namespace {

// Text attributes are at most a page; anything much longer is not one.
constexpr size_t kMaxAttribute = 64 << 10;

SysfsWriter& KernelWriter() {
  static KernelSysfsWriter* const writer = new KernelSysfsWriter();
  return *writer;
}

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};

}  // namespace

absl::Status SysfsWriteError(const std::string& path, absl::string_view value,
                             int err) {
  return absl::ErrnoToStatus(
      err, absl::StrCat("write \"", absl::CHexEscape(value), "\" to ", path));
}

absl::Status KernelSysfsWriter::Write(const std::string& path,
                                      absl::string_view value) {
  base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC));
  if (!fd.valid()) return SysfsWriteError(path, value, errno);
  ssize_t n;
  do {
    n = ::write(fd.get(), value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  if (n < 0) return SysfsWriteError(path, value, errno);
  if (static_cast<size_t>(n) != value.size()) {
    // An attribute's store takes the whole value or fails; a short count
    // means the kernel took part of it, which nothing here can repair.
    return absl::InternalError(
        absl::StrCat("write \"", absl::CHexEscape(value), "\" to ", path,
                     ": only ", n, " of ", value.size(), " bytes were taken"));
  }
  return absl::OkStatus();
}

Sysfs::Sysfs(absl::string_view root, SysfsWriter* writer)
    : root_(root), writer_(writer != nullptr ? writer : &KernelWriter()) {
  while (!root_.empty() && root_.back() == '/') root_.pop_back();
}

std::string Sysfs::Path(absl::string_view path) const {
  return absl::StrCat(root_, path);
}

absl::StatusOr<std::string> Sysfs::Read(absl::string_view path) const {
  const std::string full = Path(path);
  base::UniqueFd fd(::open(full.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, "read " + full);
  std::string out;
  std::array<char, 4096> buf;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "read " + full);
    if (n == 0) break;
    out.append(buf.data(), static_cast<size_t>(n));
    if (out.size() > kMaxAttribute) {
      return absl::OutOfRangeError(absl::StrCat("read ", full, ": longer than ",
                                                kMaxAttribute, " bytes"));
    }
  }
  return std::string(absl::StripAsciiWhitespace(out));
}

absl::Status Sysfs::Write(absl::string_view path,
                          absl::string_view value) const {
  return writer_->Write(Path(path), value);
}

absl::StatusOr<std::string> Sysfs::LinkTarget(absl::string_view path) const {
  const std::string full = Path(path);
  std::array<char, 4096> buf;
  const ssize_t n = ::readlink(full.c_str(), buf.data(), buf.size());
  if (n < 0) {
    const int err = errno;
    if (err == EINVAL) {
      return absl::FailedPreconditionError(
          absl::StrCat(full, " is not a symlink"));
    }
    return absl::ErrnoToStatus(err, "readlink " + full);
  }
  if (static_cast<size_t>(n) == buf.size()) {
    return absl::OutOfRangeError(
        absl::StrCat("readlink ", full, ": target too long"));
  }
  return std::string(buf.data(), static_cast<size_t>(n));
}

absl::StatusOr<std::string> Sysfs::LinkName(absl::string_view path) const {
  absl::StatusOr<std::string> target = LinkTarget(path);
  if (!target.ok()) return target.status();
  while (!target->empty() && target->back() == '/') target->pop_back();
  const size_t slash = target->rfind('/');
  return slash == std::string::npos ? *target : target->substr(slash + 1);
}

absl::StatusOr<std::vector<std::string>> Sysfs::List(
    absl::string_view path) const {
  const std::string full = Path(path);
  std::unique_ptr<DIR, DirCloser> dir(::opendir(full.c_str()));
  if (dir == nullptr) return absl::ErrnoToStatus(errno, "list " + full);
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* e = ::readdir(dir.get())) {
    const absl::string_view name = e->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  if (errno != 0) return absl::ErrnoToStatus(errno, "list " + full);
  std::sort(names.begin(), names.end());
  return names;
}

bool Sysfs::Exists(absl::string_view path) const {
  struct stat st;
  return ::stat(Path(path).c_str(), &st) == 0;
}

}  // namespace migd::host
