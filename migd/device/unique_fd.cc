// migd/device/unique_fd.cc

#include "migd/device/unique_fd.h"

#include <unistd.h>

namespace migd::device {

void UniqueFd::reset(int fd) {
  const int old = fd_;
  fd_ = fd < 0 ? -1 : fd;
  if (old >= 0 && old != fd_) ::close(old);
}

}  // namespace migd::device
