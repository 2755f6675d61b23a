// migd/host/scoped_fd.h
//
// An owned file descriptor for migd/host: closes itself when it goes out of
// scope, so no path that returns early leaks an attribute, group node or
// pipe. A stand-in for migd/device/unique_fd.h, which //migd/device's
// visibility does not offer to migd/host; move-only, like it.

#ifndef MIGD_HOST_SCOPED_FD_H_
#define MIGD_HOST_SCOPED_FD_H_

#include <unistd.h>

namespace migd::host {

class ScopedFd {
 public:
  ScopedFd() = default;
  // Takes ownership of `fd` (negative means none).
  explicit ScopedFd(int fd) : fd_(fd < 0 ? -1 : fd) {}
  ~ScopedFd() { reset(); }

  ScopedFd(ScopedFd&& other) noexcept : fd_(other.release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  // The descriptor, or -1.
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

  // Gives up ownership without closing; returns the descriptor (or -1).
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

  // Closes the owned descriptor (if any) and takes `fd`. close(2) is not
  // retried on EINTR: on Linux the descriptor is gone either way.
  void reset(int fd = -1) {
    const int old = fd_;
    fd_ = fd < 0 ? -1 : fd;
    if (old >= 0 && old != fd_) ::close(old);
  }

 private:
  int fd_ = -1;
};

}  // namespace migd::host

#endif  // MIGD_HOST_SCOPED_FD_H_
