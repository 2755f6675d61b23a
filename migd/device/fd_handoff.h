// migd/device/fd_handoff.h
//
// Hands a VFIO device fd from the process that owns the device (the VMM, while
// the VM runs) to the agent over a UNIX socket, with SCM_RIGHTS: both then hold
// the same open file, so the agent can drive migration on a device it could
// not open itself (a VFIO group is exclusive to one process).
//
// One connection carries one message, sent with a single sendmsg(2) that
// attaches exactly one fd (little-endian):
//
//   "MGFD" | u16 version (1) | u16 N, the name length (1..128) | N bytes of
//   name
//
// The name says which device the fd is (a PCI address, a cdev path, the VMM's
// id), [A-Za-z0-9._:/-]{1,128}. The VMM listens; the agent connects (FetchFd)
// and receives. SOCK_STREAM and SOCK_SEQPACKET both work.

#ifndef MIGD_DEVICE_FD_HANDOFF_H_
#define MIGD_DEVICE_FD_HANDOFF_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "migd/base/unique_fd.h"

namespace migd::device {

inline constexpr size_t kMaxHandoffNameLength = 128;
inline constexpr size_t kHandoffHeaderBytes = 8;
inline constexpr absl::Duration kDefaultHandoffTimeout = absl::Seconds(10);

// True when `name` matches [A-Za-z0-9._:/-]{1,128}.
bool IsValidHandoffName(absl::string_view name);

struct HandedOverFd {
  std::string name;
  base::UniqueFd fd;
};

// Sends one handoff message naming `name` with `fd` attached on the connected
// UNIX socket `socket`. kInvalidArgument for a bad name or fd; errno-mapped
// errors otherwise (EPIPE when the peer left: kInternal).
absl::Status SendFd(int socket, absl::string_view name, int fd);

// Receives one handoff message from the connected UNIX socket `socket`,
// waiting at most `timeout` for it (kDeadlineExceeded). The fd comes with
// O_CLOEXEC. kInvalidArgument when the message is malformed (bad magic,
// version, length or name, bytes after it), carries no fd or more than one
// (the extra fds are closed); kUnavailable when the peer closes before the
// message is complete.
absl::StatusOr<HandedOverFd> ReceiveFd(int socket, absl::Duration timeout);

// The agent side: connects to the UNIX socket at `socket_path`
// (ValidateSocketPath), receives one message (ReceiveFd) and disconnects.
// kNotFound when nothing is at the path, kUnavailable when nobody listens;
// errors name the path.
absl::StatusOr<HandedOverFd> FetchFd(
    absl::string_view socket_path,
    absl::Duration timeout = kDefaultHandoffTimeout);

}  // namespace migd::device

#endif  // MIGD_DEVICE_FD_HANDOFF_H_
