// migd/base/unique_fd.h
//
// An owned file descriptor: closes itself when it goes out of scope, so no path
// that returns early leaks it (a VFIO device, group, container or data fd, a
// sysfs attribute, a pipe). Move-only. In migd/base so that migd/device and
// migd/host share one.

#ifndef MIGD_BASE_UNIQUE_FD_H_
#define MIGD_BASE_UNIQUE_FD_H_

namespace migd::base {

class UniqueFd {
 public:
  UniqueFd() = default;
  // Takes ownership of `fd` (negative means none).
  explicit UniqueFd(int fd) : fd_(fd < 0 ? -1 : fd) {}
  ~UniqueFd() { reset(); }

  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

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
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

}  // namespace migd::base

#endif  // MIGD_BASE_UNIQUE_FD_H_
