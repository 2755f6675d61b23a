// migd/host/state_file.cc

#include "migd/host/state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "migd/base/unique_fd.h"

namespace migd::host {
namespace {

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

std::string StatePath(const std::string& dir, absl::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::StatusOr<std::optional<std::string>> ReadStateFile(
    absl::string_view what, const std::string& dir, const std::string& path) {
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT) {
      struct stat st;
      if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat(
            what, ": ", dir, " is not a directory (the state dir)"));
      }
      return std::nullopt;
    }
    if (err == ELOOP) {
      return absl::FailedPreconditionError(
          absl::StrCat(what, " ", path, " is a symlink, not a regular file"));
    }
    return absl::ErrnoToStatus(err, absl::StrCat(what, ": open ", path));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(what, ": stat ", path));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, " ", path, " is not a regular file"));
  }
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat(what, ": read ", path));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  return text;
}

absl::Status WriteStateFile(absl::string_view what, const std::string& dir,
                            const std::string& path, absl::string_view text) {
  const std::string tmp = path + ".tmp";
  const auto fail = [&](absl::string_view step) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return absl::ErrnoToStatus(err, absl::StrCat(what, ": ", step));
  };
  // A temporary file left by a crash is stale: replace it.
  base::UniqueFd fd(
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
             0600));
  if (!fd.valid()) return fail(absl::StrCat("create ", tmp));
  if (::fchmod(fd.get(), 0600) != 0) return fail(absl::StrCat("chmod ", tmp));
  if (!WriteAll(fd.get(), text)) return fail(absl::StrCat("write ", tmp));
  if (::fsync(fd.get()) != 0) return fail(absl::StrCat("fsync ", tmp));
  if (::close(fd.release()) != 0) return fail(absl::StrCat("close ", tmp));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return fail(absl::StrCat("rename ", tmp, " to ", path));
  }
  // The rename is durable once the directory is.
  base::UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d.valid() || ::fsync(d.get()) != 0) {
    const int err = errno;
    return absl::ErrnoToStatus(
        err, absl::StrCat(what, ": fsync of ", dir, " after writing ", path));
  }
  return absl::OkStatus();
}

}  // namespace migd::host
