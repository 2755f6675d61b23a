// migd/device/vfio_syscalls.cc

#include "migd/device/vfio_syscalls.h"

#include <sys/ioctl.h>
#include <unistd.h>

namespace migd::device {

VfioSyscalls VfioSyscalls::Real() {
  VfioSyscalls s;
  s.ioctl = [](int fd, unsigned long request, void* arg) {
    return ::ioctl(fd, request, arg);
  };
  s.read = [](int fd, void* buf, size_t count) {
    return ::read(fd, buf, count);
  };
  s.write = [](int fd, const void* buf, size_t count) {
    return ::write(fd, buf, count);
  };
  s.writev = [](int fd, const struct iovec* iov, int iovcnt) {
    return ::writev(fd, iov, iovcnt);
  };
  return s;
}

}  // namespace migd::device
