#include "migd/transfer/data_connection.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "migd/base/reason.h"
#include "migd/base/watchdog.h"
#include "migd/security/tls_context.h"

namespace migd::transfer {
namespace {

absl::Status Unavailable(const std::string& what) {
  return base::Error(absl::StatusCode::kUnavailable,
                     v1::ERROR_REASON_PEER_UNAVAILABLE, what);
}

std::string AddressOf(int fd) {
  sockaddr_storage ss = {};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  char host[INET6_ADDRSTRLEN] = {};
  uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
    port = ntohs(a->sin_port);
    return absl::StrCat(host, ":", port);
  }
  auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
  inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
  port = ntohs(a->sin6_port);
  return absl::StrCat("[", host, "]:", port);
}

// OpenSSL writes with write(2), which raises SIGPIPE when the peer has
// closed: this blocks SIGPIPE on the calling thread while it writes and
// discards one raised meanwhile, so that a closed peer fails the write
// (EPIPE) whatever the process does with the signal.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    pending_before_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_, &old_);
  }
  ~SigpipeGuard() {
    if (!pending_before_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        timespec zero = {0, 0};
        sigtimedwait(&pipe_, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t pipe_;
  sigset_t old_;
  bool pending_before_ = false;
};

}  // namespace

void TuneDataSocket(int fd, absl::Duration dead_peer_timeout) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (dead_peer_timeout <= absl::ZeroDuration() ||
      dead_peer_timeout == absl::InfiniteDuration()) {
    return;
  }
  // Unacknowledged data older than this fails the connection, and an idle
  // one is probed from a third of it: a peer that is gone is noticed within
  // about the timeout whether this side writes or waits.
  unsigned int ms = static_cast<unsigned int>(
      std::max<int64_t>(1000, absl::ToInt64Milliseconds(dead_peer_timeout)));
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  int idle = std::max<int>(1, static_cast<int>(ms / 3000));
  int count = 3;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof(count));
}

absl::Status SplitHostPort(const std::string& address, std::string* host,
                           uint16_t* port) {
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" is not host:port"));
  }
  std::string h = address.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') {
    h = h.substr(1, h.size() - 2);
  }
  uint32_t p = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &p) || p > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("address \"", address, "\" has no valid port"));
  }
  *host = h;
  *port = static_cast<uint16_t>(p);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DataConnection>> DataConnection::Dial(
    const std::string& host, uint16_t port, SSL_CTX* tls,
    const std::string& expected_identity, absl::Duration timeout,
    absl::Duration dead_peer_timeout) {
  const std::string where = absl::StrCat(
      host.find(':') != std::string::npos ? absl::StrCat("[", host, "]") : host,
      ":", port);
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int e = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints,
                          &found);
      e != 0) {
    return Unavailable(absl::StrCat("data channel ", where,
                                    ": cannot resolve: ", gai_strerror(e)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, &freeaddrinfo);
  const absl::Time deadline = absl::Now() + timeout;
  std::string last_error = "no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
               ai->ai_protocol);
    if (fd < 0) {
      last_error = strerror(errno);
      continue;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p = {fd, POLLOUT, 0};
      int64_t ms = std::max<int64_t>(
          0, absl::ToInt64Milliseconds(deadline - absl::Now()));
      rc = poll(&p, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
      if (rc == 0) {
        close(fd);
        return base::Error(
            absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
            absl::StrCat("data channel ", where, ": no connection within ",
                         absl::FormatDuration(timeout)));
      }
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (rc < 0) err = errno;
      errno = err;
      rc = err == 0 ? 0 : -1;
    }
    if (rc != 0) {
      last_error = strerror(errno);
      close(fd);
      continue;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    absl::StatusOr<std::unique_ptr<DataConnection>> made =
        Wrap(fd, tls, dead_peer_timeout, where);
    if (!made.ok()) return made.status();
    std::unique_ptr<DataConnection> conn = *std::move(made);
    if (conn->ssl_ != nullptr) {
      absl::Status s =
          conn->Handshake(/*server=*/false, deadline - absl::Now());
      if (!s.ok()) return s;
      if (!expected_identity.empty() &&
          conn->peer_identity_ != expected_identity) {
        return base::Error(
            absl::StatusCode::kUnauthenticated,
            v1::ERROR_REASON_PEER_UNAVAILABLE,
            absl::StrCat("data channel ", where, " answered as \"",
                         conn->peer_identity_, "\", not as \"",
                         expected_identity, "\" (the control stream's peer)"));
      }
    }
    return conn;
  }
  return Unavailable(
      absl::StrCat("data channel ", where, ": cannot connect: ", last_error));
}

absl::StatusOr<std::unique_ptr<DataConnection>> DataConnection::Adopt(
    int fd, SSL_CTX* tls, absl::Duration dead_peer_timeout) {
  return Wrap(fd, tls, dead_peer_timeout, AddressOf(fd));
}

absl::StatusOr<std::unique_ptr<DataConnection>> DataConnection::Wrap(
    int fd, SSL_CTX* tls, absl::Duration dead_peer_timeout, std::string peer) {
  TuneDataSocket(fd, dead_peer_timeout);
  SSL* ssl = nullptr;
  if (tls != nullptr) {
    ssl = SSL_new(tls);
    if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1) {
      if (ssl != nullptr) SSL_free(ssl);
      close(fd);
      return absl::InternalError(
          absl::StrCat("data channel: ", security::TakeOpenSslErrors()));
    }
  }
  std::unique_ptr<DataConnection> conn(new DataConnection(fd, ssl));
  conn->peer_ = std::move(peer);
  return conn;
}

absl::Status DataConnection::ServerHandshake(absl::Duration timeout) {
  if (ssl_ == nullptr) return absl::OkStatus();
  return Handshake(/*server=*/true, timeout);
}

absl::Status DataConnection::Handshake(bool server, absl::Duration timeout) {
  bool timed_out = false;
  int rc;
  {
    // A peer that connects and says nothing must not hold this thread.
    base::Watchdog watch(timeout, [&] {
      timed_out = true;
      ::shutdown(fd_, SHUT_RDWR);
    });
    ERR_clear_error();
    SigpipeGuard no_sigpipe;
    rc = server ? SSL_accept(ssl_) : SSL_connect(ssl_);
  }
  if (rc != 1) {
    if (shut_down_.load() && !timed_out) {
      return absl::CancelledError(
          absl::StrCat("data channel ", peer_, ": shut down"));
    }
    if (timed_out) {
      return base::Error(
          absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
          absl::StrCat("data channel ", peer_, ": no TLS handshake within ",
                       absl::FormatDuration(timeout)));
    }
    std::string why = security::TakeOpenSslErrors();
    if (why.empty()) why = "the peer closed the connection";
    long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) {
      why = absl::StrCat(X509_verify_cert_error_string(verify), " (", why, ")");
    }
    return base::Error(
        absl::StatusCode::kUnauthenticated, v1::ERROR_REASON_PEER_UNAVAILABLE,
        absl::StrCat("data channel ", peer_, ": TLS handshake failed: ", why));
  }
  peer_identity_ = security::TlsPeerIdentity(ssl_);
  return absl::OkStatus();
}

DataConnection::~DataConnection() {
  if (ssl_ != nullptr) SSL_free(ssl_);
  close(fd_);
}

void DataConnection::Shutdown() {
  if (shut_down_.exchange(true)) return;
  ::shutdown(fd_, SHUT_RDWR);
}

void DataConnection::CloseWrite() {
  if (ssl_ != nullptr) {
    SigpipeGuard no_sigpipe;
    (void)SSL_shutdown(ssl_);
  }
  ::shutdown(fd_, SHUT_WR);
}

std::string DataConnection::cipher() const {
  if (ssl_ == nullptr) return "";
  const char* name = SSL_get_cipher_name(ssl_);
  return name == nullptr ? "" : name;
}

absl::Status DataConnection::IoError(const char* what, int ssl_result) {
  if (shut_down_.load()) {
    return absl::CancelledError(
        absl::StrCat("data channel ", peer_, ": shut down"));
  }
  int err = errno;
  std::string detail;
  if (ssl_ != nullptr) {
    int e = SSL_get_error(ssl_, ssl_result);
    detail = security::TakeOpenSslErrors();
    if (e == SSL_ERROR_ZERO_RETURN) detail = "the peer closed the connection";
    if (e != SSL_ERROR_SYSCALL && detail.empty()) {
      detail = absl::StrCat("TLS error ", e);
    }
  }
  if (detail.empty()) {
    detail = err == 0 ? "the peer closed the connection" : strerror(err);
  }
  return Unavailable(
      absl::StrCat("data channel ", peer_, ": ", what, ": ", detail));
}

absl::Status DataConnection::WriteAll(absl::Span<const iovec> parts) {
  if (ssl_ != nullptr) {
    SigpipeGuard no_sigpipe;
    for (const iovec& v : parts) {
      const char* p = static_cast<const char*>(v.iov_base);
      size_t left = v.iov_len;
      while (left > 0) {
        size_t n = 0;
        errno = 0;
        int rc = SSL_write_ex(ssl_, p, left, &n);
        if (rc != 1) return IoError("write", rc);
        p += n;
        left -= n;
      }
    }
    return absl::OkStatus();
  }
  iovec local[8];
  if (parts.size() > std::size(local)) {
    for (const iovec& v : parts) {
      if (absl::Status s = WriteAll(absl::MakeConstSpan(&v, 1)); !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }
  std::copy(parts.begin(), parts.end(), local);
  iovec* v = local;
  size_t count = parts.size();
  while (count > 0) {
    errno = 0;
    // MSG_NOSIGNAL: a peer that closed fails the write (EPIPE) instead of
    // killing the process with SIGPIPE.
    msghdr msg = {};
    msg.msg_iov = v;
    msg.msg_iovlen = count;
    ssize_t n = sendmsg(fd_, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return IoError("write", 0);
    size_t done = static_cast<size_t>(n);
    while (count > 0 && done >= v->iov_len) {
      done -= v->iov_len;
      ++v;
      --count;
    }
    if (count > 0) {
      v->iov_base = static_cast<char*>(v->iov_base) + done;
      v->iov_len -= done;
    }
  }
  return absl::OkStatus();
}

absl::Status DataConnection::ReadFull(void* p, size_t n) {
  char* out = static_cast<char*>(p);
  size_t got = 0;
  // SSL_read writes too (a fatal alert on an unexpected EOF, ...). Once per
  // call, not per record: the guard costs a few system calls.
  std::optional<SigpipeGuard> no_sigpipe;
  if (ssl_ != nullptr) no_sigpipe.emplace();
  while (got < n) {
    size_t r = 0;
    errno = 0;
    int rc;
    if (ssl_ != nullptr) {
      rc = SSL_read_ex(ssl_, out + got, n - got, &r);
      if (rc != 1) {
        if (got == 0 && !shut_down_.load() &&
            SSL_get_error(ssl_, rc) == SSL_ERROR_ZERO_RETURN) {
          return absl::OutOfRangeError("end of stream");
        }
        return IoError("read", rc);
      }
    } else {
      ssize_t k = read(fd_, out + got, n - got);
      if (k < 0 && errno == EINTR) continue;
      if (k == 0 && got == 0 && !shut_down_.load()) {
        return absl::OutOfRangeError("end of stream");
      }
      if (k <= 0) return IoError("read", 0);
      r = static_cast<size_t>(k);
    }
    got += r;
  }
  return absl::OkStatus();
}

}  // namespace migd::transfer
