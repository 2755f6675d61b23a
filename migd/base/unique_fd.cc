// migd/base/unique_fd.cc

#include "migd/base/unique_fd.h"

#include <unistd.h>

namespace migd::base {

void UniqueFd::reset(int fd) {
  const int old = fd_;
  fd_ = fd < 0 ? -1 : fd;
  if (old >= 0 && old != fd_) ::close(old);
}

}  // namespace migd::base
