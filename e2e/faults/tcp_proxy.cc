#include "e2e/faults/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace migd::e2e {
namespace {

// What one direction may hold before its reader stops reading (and TCP's
// flow control stalls the sender).
constexpr size_t kMaxQueued = size_t{8} << 20;

absl::StatusOr<sockaddr_in> Ipv4(const std::string& host, int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("not an IPv4 address: ", host));
  }
  return addr;
}

}  // namespace

struct TcpProxy::Pipe {
  struct Segment {
    absl::Time due;
    std::string bytes;
  };
  int from = -1;
  int to = -1;
  bool to_target = true;
  std::deque<Segment> queue;  // guarded by the proxy's mu_
  size_t queued = 0;
  bool ended = false;  // the reader is done (EOF or error)
  std::thread reader;
  std::thread writer;
};

struct TcpProxy::Connection {
  int client = -1;
  int target = -1;
  Pipe to_target;
  Pipe from_target;
};

absl::StatusOr<std::unique_ptr<TcpProxy>> TcpProxy::Start(
    const std::string& listen_host, const std::string& target_host,
    int target_port, int listen_port) {
  std::unique_ptr<TcpProxy> proxy(new TcpProxy());
  proxy->target_host_ = target_host;
  proxy->target_port_ = target_port;
  if (absl::StatusOr<sockaddr_in> t = Ipv4(target_host, target_port); !t.ok()) {
    return t.status();
  }
  absl::StatusOr<sockaddr_in> addr = Ipv4(listen_host, listen_port);
  if (!addr.ok()) return addr.status();
  proxy->listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (proxy->listen_fd_ < 0) {
    return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  }
  int one = 1;
  setsockopt(proxy->listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(proxy->listen_fd_, reinterpret_cast<const sockaddr*>(&*addr),
           sizeof(*addr)) != 0 ||
      listen(proxy->listen_fd_, 64) != 0) {
    return absl::InternalError(
        absl::StrCat("proxy: listen on ", listen_host, ": ", strerror(errno)));
  }
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  getsockname(proxy->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len);
  proxy->port_ = ntohs(bound.sin_port);
  TcpProxy* raw = proxy.get();
  proxy->acceptor_ = std::thread([raw] { raw->AcceptLoop(); });
  return proxy;
}

TcpProxy::~TcpProxy() {
  stopping_ = true;
  if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  std::vector<std::unique_ptr<Connection>> connections;
  {
    absl::MutexLock lock(&mu_);
    connections.swap(connections_);
    changed_.SignalAll();
    for (const auto& c : connections) {
      shutdown(c->client, SHUT_RDWR);
      shutdown(c->target, SHUT_RDWR);
    }
  }
  for (const auto& c : connections) {
    for (Pipe* p : {&c->to_target, &c->from_target}) {
      if (p->reader.joinable()) p->reader.join();
      if (p->writer.joinable()) p->writer.join();
    }
    close(c->client);
    close(c->target);
  }
}

void TcpProxy::SetDelay(absl::Duration to_target, absl::Duration from_target) {
  absl::MutexLock lock(&mu_);
  delay_to_target_ = to_target;
  delay_from_target_ = from_target;
}

void TcpProxy::Cut() {
  absl::MutexLock lock(&mu_);
  cut_ = true;
}

void TcpProxy::Heal() {
  absl::MutexLock lock(&mu_);
  cut_ = false;
  changed_.SignalAll();
}

void TcpProxy::AcceptLoop() {
  absl::StatusOr<sockaddr_in> target = Ipv4(target_host_, target_port_);
  while (!stopping_) {
    int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return;  // shut down
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, reinterpret_cast<const sockaddr*>(&*target),
                          sizeof(*target)) != 0) {
      if (fd >= 0) close(fd);
      close(client);
      continue;
    }
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_unique<Connection>();
    c->client = client;
    c->target = fd;
    c->to_target = {.from = client, .to = fd, .to_target = true};
    c->from_target = {.from = fd, .to = client, .to_target = false};
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      close(client);
      close(fd);
      return;
    }
    for (Pipe* p : {&c->to_target, &c->from_target}) {
      p->reader = std::thread([this, p] { Pump(p); });
      p->writer = std::thread([this, p] { Deliver(p); });
    }
    connections_.push_back(std::move(c));
  }
}

void TcpProxy::Pump(Pipe* pipe) {
  std::string buffer(64 << 10, '\0');
  for (;;) {
    ssize_t n = read(pipe->from, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    absl::MutexLock lock(&mu_);
    if (n <= 0) {
      pipe->ended = true;
      changed_.SignalAll();
      return;
    }
    mu_.Await(absl::Condition(
        +[](Pipe* p) { return p->queued < kMaxQueued; }, pipe));
    const absl::Duration delay =
        pipe->to_target ? delay_to_target_ : delay_from_target_;
    pipe->queue.push_back(
        {absl::Now() + delay, buffer.substr(0, static_cast<size_t>(n))});
    pipe->queued += static_cast<size_t>(n);
    changed_.SignalAll();
  }
}

void TcpProxy::Deliver(Pipe* pipe) {
  for (;;) {
    std::string bytes;
    {
      absl::MutexLock lock(&mu_);
      // Wait for the first segment to be due (and the link not cut), or for
      // the end of the stream.
      for (;;) {
        if (stopping_) return;
        if (pipe->queue.empty()) {
          if (pipe->ended) {
            shutdown(pipe->to, SHUT_WR);
            return;
          }
        } else if (!cut_ && absl::Now() >= pipe->queue.front().due) {
          break;
        }
        // Until the first segment is due, or anything changes.
        absl::Duration wait = absl::Milliseconds(50);
        if (!pipe->queue.empty() && !cut_) {
          wait = std::max(pipe->queue.front().due - absl::Now(),
                          absl::Microseconds(100));
        }
        changed_.WaitWithTimeout(&mu_, wait);
      }
      bytes = std::move(pipe->queue.front().bytes);
      pipe->queue.pop_front();
      pipe->queued -= bytes.size();
    }
    size_t done = 0;
    while (done < bytes.size()) {
      // MSG_NOSIGNAL: a peer that went away is an error here, not SIGPIPE.
      ssize_t n = send(pipe->to, bytes.data() + done, bytes.size() - done,
                       MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        // The receiving side is gone: stop the reader too.
        shutdown(pipe->from, SHUT_RDWR);
        absl::MutexLock lock(&mu_);
        pipe->queue.clear();
        pipe->queued = 0;
        return;
      }
      done += static_cast<size_t>(n);
    }
  }
}

}  // namespace migd::e2e
