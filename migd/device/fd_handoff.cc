// migd/device/fd_handoff.cc

#include "migd/device/fd_handoff.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "migd/device/vfio_errors.h"
#include "migd/device/vfio_spec.h"

namespace migd::device {
namespace {

constexpr char kMagic[4] = {'M', 'G', 'F', 'D'};
constexpr uint16_t kVersion = 1;
// Room for more fds than allowed, so extras are seen (and closed), not
// silently truncated.
constexpr size_t kMaxFdsPerMessage = 8;

absl::Status ErrnoStatus(absl::string_view what, int err) {
  return absl::Status(VfioErrnoCode(VfioOp::kOpen, err),
                      absl::StrCat("fd handoff: ", what, ": ", ErrnoText(err)));
}

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
uint16_t GetU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

// Milliseconds left until `deadline`, rounded up, for poll(2).
int PollTimeout(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(
      std::min<int64_t>(absl::ToInt64Milliseconds(left + absl::Milliseconds(1) -
                                                  absl::Nanoseconds(1)),
                        1 << 30));
}

}  // namespace

bool IsValidHandoffName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxHandoffNameLength) return false;
  for (char c : name) {
    const bool ok = absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
                    c == '.' || c == '_' || c == ':' || c == '/' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::Status SendFd(int socket, absl::string_view name, int fd) {
  if (!IsValidHandoffName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd handoff: name \"", absl::CHexEscape(name),
                     "\" is not [A-Za-z0-9._:/-]{1,128}"));
  }
  if (fd < 0) {
    return absl::InvalidArgumentError("fd handoff: no fd to send");
  }
  std::vector<uint8_t> message(kHandoffHeaderBytes + name.size());
  std::memcpy(message.data(), kMagic, 4);
  PutU16(&message[4], kVersion);
  PutU16(&message[6], static_cast<uint16_t>(name.size()));
  std::memcpy(&message[kHandoffHeaderBytes], name.data(), name.size());

  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  struct iovec iov = {message.data(), message.size()};
  struct msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  struct cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &fd, sizeof(int));

  size_t sent = 0;
  while (sent < message.size()) {
    ssize_t n;
    if (sent == 0) {
      n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
    } else {
      // A stream socket took part of it; the fd went with the first byte.
      n = ::send(socket, message.data() + sent, message.size() - sent,
                 MSG_NOSIGNAL);
    }
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        struct pollfd p = {socket, POLLOUT, 0};
        if (::poll(&p, 1, -1) < 0 && errno != EINTR) {
          return ErrnoStatus("poll", errno);
        }
        continue;
      }
      return ErrnoStatus("sendmsg", err);
    }
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<HandedOverFd> ReceiveFd(int socket, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  // One byte more than the largest message, so trailing bytes show.
  std::array<uint8_t, kHandoffHeaderBytes + kMaxHandoffNameLength + 1> buf{};
  size_t have = 0;
  size_t need = kHandoffHeaderBytes;
  base::UniqueFd fd;
  int extra_fds = 0;
  bool truncated_control = false;

  while (have < need) {
    struct pollfd p = {socket, POLLIN, 0};
    const int ready = ::poll(&p, 1, PollTimeout(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("poll", errno);
    }
    if (ready == 0) {
      return absl::DeadlineExceededError(absl::StrCat(
          "fd handoff: no complete message within ",
          absl::FormatDuration(timeout), " (", have, " bytes so far)"));
    }
    alignas(struct cmsghdr) char
        control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
    struct iovec iov = {buf.data() + have, buf.size() - have};
    struct msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    const ssize_t n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR || err == EAGAIN || err == EWOULDBLOCK) continue;
      return ErrnoStatus("recvmsg", err);
    }
    for (struct cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr;
         c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int received;
        std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        if (!fd.valid()) {
          fd.reset(received);
        } else {
          ::close(received);
          ++extra_fds;
        }
      }
    }
    if ((msg.msg_flags & MSG_CTRUNC) != 0) truncated_control = true;
    if ((msg.msg_flags & MSG_TRUNC) != 0) {
      return absl::InvalidArgumentError(
          "fd handoff: message longer than the protocol allows");
    }
    if (n == 0) {
      return absl::UnavailableError(
          absl::StrCat("fd handoff: the peer closed the connection after ",
                       have, " of ", need, " bytes"));
    }
    have += static_cast<size_t>(n);
    if (have >= kHandoffHeaderBytes) {
      if (std::memcmp(buf.data(), kMagic, 4) != 0) {
        return absl::InvalidArgumentError(
            "fd handoff: bad magic (not a migd fd handoff message)");
      }
      const uint16_t version = GetU16(&buf[4]);
      if (version != kVersion) {
        return absl::InvalidArgumentError(
            absl::StrCat("fd handoff: unsupported version ", version,
                         " (migd speaks ", kVersion, ")"));
      }
      const uint16_t len = GetU16(&buf[6]);
      if (len == 0 || len > kMaxHandoffNameLength) {
        return absl::InvalidArgumentError(
            absl::StrCat("fd handoff: name length ", len, " not in 1..",
                         kMaxHandoffNameLength));
      }
      need = kHandoffHeaderBytes + len;
    }
  }
  if (have > need) {
    return absl::InvalidArgumentError(absl::StrCat(
        "fd handoff: ", have - need, " unexpected bytes after the message"));
  }
  if (truncated_control || extra_fds > 0) {
    return absl::InvalidArgumentError(
        "fd handoff: the message carried more than one fd");
  }
  if (!fd.valid()) {
    return absl::InvalidArgumentError("fd handoff: the message carried no fd");
  }
  HandedOverFd out;
  out.name.assign(reinterpret_cast<const char*>(&buf[kHandoffHeaderBytes]),
                  need - kHandoffHeaderBytes);
  if (!IsValidHandoffName(out.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd handoff: name \"", absl::CHexEscape(out.name),
                     "\" is not [A-Za-z0-9._:/-]{1,128}"));
  }
  out.fd = std::move(fd);
  return out;
}

absl::StatusOr<HandedOverFd> FetchFd(absl::string_view socket_path,
                                     absl::Duration timeout) {
  if (absl::Status s = ValidateSocketPath(socket_path); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd handoff: ", s.message()));
  }
  const std::string where = absl::StrCat("fd handoff from ", socket_path);
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  base::UniqueFd sock;
  int err = 0;
  // SOCK_STREAM first; a SOCK_SEQPACKET listener answers EPROTOTYPE.
  for (int type : {SOCK_STREAM, SOCK_SEQPACKET}) {
    sock.reset(::socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
    if (!sock.valid()) {
      return ErrnoStatus(absl::StrCat(socket_path, ": socket"), errno);
    }
    // Bounds a connect that waits for room in a full listen backlog.
    struct timeval tv = {};
    tv.tv_sec = static_cast<time_t>(absl::ToInt64Seconds(timeout));
    tv.tv_usec = static_cast<suseconds_t>(
        absl::ToInt64Microseconds(timeout % absl::Seconds(1)));
    ::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int r;
    do {
      r = ::connect(sock.get(), reinterpret_cast<struct sockaddr*>(&addr),
                    sizeof(addr));
    } while (r < 0 && errno == EINTR);
    if (r == 0) {
      err = 0;
      break;
    }
    err = errno;
    if (err != EPROTOTYPE) break;
  }
  if (err != 0) {
    absl::Status s = ErrnoStatus(absl::StrCat(socket_path, ": connect"), err);
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          s.message(), " (is the VMM running and serving the device?)"));
    }
    if (err == ECONNREFUSED) {
      return absl::UnavailableError(
          absl::StrCat(s.message(), " (nobody listens on the socket)"));
    }
    return s;
  }
  absl::StatusOr<HandedOverFd> got = ReceiveFd(sock.get(), timeout);
  if (!got.ok()) {
    return absl::Status(got.status().code(),
                        absl::StrCat(where, ": ",
                                     absl::StripPrefix(got.status().message(),
                                                       "fd handoff: ")));
  }
  return got;
}

}  // namespace migd::device
