// migd/device/vfio_syscalls.h
//
// The few system calls the VFIO backend makes on device, group, container and
// data fds, behind std::functions so unit tests can stand in for a kernel
// (answer feature ioctls, return ENOMSG from a read) without VFIO hardware.
// Production code always uses VfioSyscalls::Real().

#ifndef MIGD_DEVICE_VFIO_SYSCALLS_H_
#define MIGD_DEVICE_VFIO_SYSCALLS_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <functional>

namespace migd::device {

struct VfioSyscalls {
  // ioctl(2). `arg` is a pointer, or an integer argument cast to void*
  // (VFIO_SET_IOMMU, VFIO_CHECK_EXTENSION). Returns -1 and sets errno on
  // failure, like the system call.
  std::function<int(int fd, unsigned long request, void* arg)> ioctl;
  // read(2) / write(2), same contract.
  std::function<ssize_t(int fd, void* buf, size_t count)> read;
  std::function<ssize_t(int fd, const void* buf, size_t count)> write;
  // writev(2); when unset, writes go piece by piece through `write`.
  std::function<ssize_t(int fd, const struct iovec* iov, int iovcnt)> writev;

  // The real system calls.
  static VfioSyscalls Real();
};

}  // namespace migd::device

#endif  // MIGD_DEVICE_VFIO_SYSCALLS_H_
