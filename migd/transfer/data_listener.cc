#include "migd/transfer/data_listener.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"

namespace migd::transfer {

absl::StatusOr<std::unique_ptr<DataListener>> DataListener::Start(
    DataListenerOptions options, Handler handler) {
  std::string host;
  uint16_t port = 0;
  if (absl::Status s = SplitHostPort(options.address, &host, &port); !s.ok()) {
    return s;
  }
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const char* node = host.empty() || host == "*" ? nullptr : host.c_str();
  if (int e = getaddrinfo(node, std::to_string(port).c_str(), &hints, &found);
      e != 0) {
    return absl::UnavailableError(absl::StrCat("data channel: cannot resolve ",
                                               options.address, ": ",
                                               gai_strerror(e)));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> list(found, &freeaddrinfo);
  std::unique_ptr<DataListener> l(
      new DataListener(std::move(options), std::move(handler)));
  std::string error = "no address";
  for (addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    int fd =
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error = strerror(errno);
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
      error = strerror(errno);
      close(fd);
      continue;
    }
    sockaddr_storage ss = {};
    socklen_t len = sizeof(ss);
    getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    l->port_ = ntohs(ss.ss_family == AF_INET
                         ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                         : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
    l->fd_ = fd;
    break;
  }
  if (l->fd_ < 0) {
    return absl::UnavailableError(absl::StrCat(
        "data channel: cannot listen on ", l->options_.address, ": ", error));
  }
  DataListener* raw = l.get();
  l->acceptor_ = std::thread([raw] {
    base::NameThisThread("data-accept");
    raw->AcceptLoop();
  });
  return l;
}

DataListener::~DataListener() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (Served& s : served_) {
      if (s.conn != nullptr) s.conn->Shutdown();
    }
  }
  // Wakes accept(), which then fails.
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  std::list<Served> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(served_);
  }
  for (Served& s : left) {
    if (s.thread.joinable()) s.thread.join();
  }
  if (fd_ >= 0) close(fd_);
}

void DataListener::ReapLocked() {
  for (auto it = served_.begin(); it != served_.end();) {
    if (it->done) {
      it->thread.join();
      it = served_.erase(it);
    } else {
      ++it;
    }
  }
}

void DataListener::AcceptLoop() {
  for (;;) {
    int fd = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      if (fd >= 0) close(fd);
      return;
    }
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
          errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        if (errno != EINTR && errno != ECONNABORTED) {
          base::LogWarning("data channel: accept: ", strerror(errno));
          mu_.Unlock();
          absl::SleepFor(absl::Milliseconds(50));
          mu_.Lock();
        }
        continue;
      }
      base::LogError("data channel: accept failed: ", strerror(errno));
      return;
    }
    ReapLocked();
    if (served_.size() >= 2 * options_.max_connections) {
      base::LogWarning("data channel: closed a connection unserved: ",
                       served_.size(), " are open already");
      close(fd);
      continue;
    }
    served_.emplace_back();
    Served* served = &served_.back();
    served->thread = std::thread([this, served, fd] { Serve(served, fd); });
  }
}

void DataListener::Serve(Served* served, int fd) {
  base::NameThisThread("dst-data");
  security::SslCtxPtr ctx;
  absl::StatusOr<std::unique_ptr<DataConnection>> conn;
  if (options_.tls) {
    absl::StatusOr<security::SslCtxPtr> made = options_.tls();
    if (made.ok()) {
      ctx = *std::move(made);
    } else {
      conn = made.status();
      close(fd);
    }
  }
  if (!options_.tls || ctx != nullptr) {
    conn = DataConnection::Adopt(fd, ctx.get(), options_.dead_peer_timeout);
  }
  absl::Status admission;
  if (conn.ok()) {
    // Known before the handshake, so that the destructor's shutdown ends a
    // handshake that hangs too.
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      conn = absl::CancelledError("the data channel is stopping");
    } else {
      served->conn = conn->get();
      if (admitted_ < options_.max_connections) {
        ++admitted_;
        served->admitted = true;
      } else {
        admission = base::Error(
            absl::StatusCode::kResourceExhausted,
            v1::ERROR_REASON_PEER_UNAVAILABLE,
            absl::StrCat("the destination is already serving ", admitted_,
                         " data streams, its limit (--max_data_streams)"));
      }
    }
  }
  if (conn.ok()) {
    if (absl::Status s = (*conn)->ServerHandshake(options_.handshake_timeout);
        !s.ok()) {
      base::LogWarning("data channel: dropped a connection: ",
                       base::StatusText(s));
    } else {
      handler_(**conn, admission);
    }
  } else if (conn.status().code() != absl::StatusCode::kCancelled) {
    base::LogWarning("data channel: dropped a connection: ",
                     base::StatusText(conn.status()));
  }
  absl::MutexLock lock(&mu_);
  served->conn = nullptr;
  if (served->admitted) --admitted_;
  served->admitted = false;
  // Closed before the thread is reaped (the lock orders it with the
  // destructor's shutdown of served->conn, which is null now).
  conn = absl::CancelledError("");
  served->done = true;
}

}  // namespace migd::transfer
