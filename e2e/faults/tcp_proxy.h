// e2e/faults/tcp_proxy.h
//
// A small TCP proxy of the test's own, for the faults nft cannot make: delay
// (the kernel here has no netem) and a stall of chosen connections at a
// chosen moment. It listens on one address and forwards every connection to
// a target, each direction on two threads: one reads and stamps what it read
// with the time it may be delivered, the other writes it out at that time.
// Bytes are never dropped or reordered; a cut holds them (a partition as the
// endpoints see it: connections stay up, nothing arrives) until Heal().
//
// Threads: Start() and the destructor on one thread; the setters from any.

#ifndef MIGD_E2E_FAULTS_TCP_PROXY_H_
#define MIGD_E2E_FAULTS_TCP_PROXY_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace migd::e2e {

class TcpProxy {
 public:
  // Listens on listen_host, on `listen_port` (0: a port the kernel picks);
  // forwards to target_host:target_port (IPv4 addresses).
  static absl::StatusOr<std::unique_ptr<TcpProxy>> Start(
      const std::string& listen_host, const std::string& target_host,
      int target_port, int listen_port = 0);
  // Closes every connection and joins the threads.
  ~TcpProxy();

  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }

  // Bytes read from now on are delivered this much later: `to_target` from
  // the connecting side to the target, `from_target` the other way.
  void SetDelay(absl::Duration to_target, absl::Duration from_target);
  // Holds every byte in both directions until Heal().
  void Cut();
  void Heal();

 private:
  struct Pipe;
  struct Connection;

  TcpProxy() = default;
  void AcceptLoop();
  void Pump(Pipe* pipe);     // reads
  void Deliver(Pipe* pipe);  // writes

  std::string target_host_;
  int target_port_ = 0;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;

  absl::Mutex mu_;
  absl::CondVar changed_;  // a segment queued, a stream ended, Heal, stop
  absl::Duration delay_to_target_ ABSL_GUARDED_BY(mu_);
  absl::Duration delay_from_target_ ABSL_GUARDED_BY(mu_);
  bool cut_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);
};

}  // namespace migd::e2e

#endif  // MIGD_E2E_FAULTS_TCP_PROXY_H_
