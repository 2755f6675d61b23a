// migd/transfer/data_listener.h
//
// The destination's end of the data channel: a TCP listener whose every
// connection gets a thread of its own, which runs the TLS handshake (when
// the agent uses TLS) and then the handler, from the connection's first byte
// to its last. That thread is the whole receive path of a data stream
// (data_receiver.h): it reads, checks and writes each chunk itself, with no
// hand-off between threads.
//
// Connections beyond `max_connections` at once are still handed to the
// handler, with an admission error (RESOURCE_EXHAUSTED) it answers the
// stream's header with, so the source learns why; beyond twice that they are
// closed unserved. The destructor stops accepting, shuts every open connection
// down (a blocked read returns) and joins the threads.

#ifndef MIGD_TRANSFER_DATA_LISTENER_H_
#define MIGD_TRANSFER_DATA_LISTENER_H_

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migd/security/tls_context.h"
#include "migd/transfer/data_connection.h"

namespace migd::transfer {

struct DataListenerOptions {
  // "host:port" ("[v6]:port"); port 0 picks one (port() says which).
  std::string address;
  // A server context for each new connection (files read again, so a
  // rotated certificate is used); null for plaintext.
  std::function<absl::StatusOr<security::SslCtxPtr>()> tls;
  // How long a new connection may take to finish its TLS handshake.
  absl::Duration handshake_timeout = absl::Seconds(10);
  // Keepalive and TCP_USER_TIMEOUT (data_connection.h).
  absl::Duration dead_peer_timeout = absl::Seconds(60);
  size_t max_connections = 64;
};

class DataListener {
 public:
  // Runs on the connection's thread; the connection closes when it returns.
  // `admission` is OK, or why the connection may not be served.
  using Handler =
      std::function<void(DataConnection& conn, const absl::Status& admission)>;

  // Binds and listens. kUnavailable naming the address when it cannot.
  static absl::StatusOr<std::unique_ptr<DataListener>> Start(
      DataListenerOptions options, Handler handler);

  ~DataListener();
  DataListener(const DataListener&) = delete;
  DataListener& operator=(const DataListener&) = delete;

  uint16_t port() const { return port_; }

 private:
  struct Served {
    std::thread thread;
    DataConnection* conn = nullptr;  // set while the handler runs
    bool done = false;
    bool admitted = false;  // counted against max_connections
  };

  DataListener(DataListenerOptions options, Handler handler)
      : options_(std::move(options)), handler_(std::move(handler)) {}
  void AcceptLoop();
  void Serve(Served* served, int fd);
  // Joins the threads of connections that ended.
  void ReapLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DataListenerOptions options_;
  const Handler handler_;
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread acceptor_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::list<Served> served_ ABSL_GUARDED_BY(mu_);
  size_t admitted_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_DATA_LISTENER_H_
