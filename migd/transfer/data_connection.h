// migd/transfer/data_connection.h
//
// One TCP connection of the data channel, plaintext or TLS (security/
// tls_context.h), with blocking reads and writes for the one thread that
// drives it. Shutdown() may come from any other thread: it shuts the socket
// down, which makes a blocked read or write return an error at once. That is
// how a job's cancel, its watchdog or a failure on another stream stops a
// stream that waits on its peer.
//
// TCP keepalive and TCP_USER_TIMEOUT are set from `dead_peer_timeout`, so a
// peer that disappears (a partition, a host that is down) fails the
// connection rather than leaving a write blocked for TCP's many minutes of
// retransmission.

#ifndef MIGD_TRANSFER_DATA_CONNECTION_H_
#define MIGD_TRANSFER_DATA_CONNECTION_H_

#include <openssl/ssl.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace migd::transfer {

class DataConnection {
 public:
  // Connects to `host`:`port` and, when `tls` is not null, runs the TLS
  // handshake as the client; then, when `expected_identity` is not empty,
  // checks that the server's certificate carries it. Everything within
  // `timeout`. kUnavailable (PEER_UNAVAILABLE) when the destination cannot
  // be reached, kUnauthenticated when the handshake fails or the identity
  // differs, kDeadlineExceeded when it takes too long.
  static absl::StatusOr<std::unique_ptr<DataConnection>> Dial(
      const std::string& host, uint16_t port, SSL_CTX* tls,
      const std::string& expected_identity, absl::Duration timeout,
      absl::Duration dead_peer_timeout);

  // Takes an accepted socket (closed with the connection, or at once on
  // failure), TLS with `tls` when it is not null. The server's handshake is
  // ServerHandshake(), so that a Shutdown() can end it too.
  static absl::StatusOr<std::unique_ptr<DataConnection>> Adopt(
      int fd, SSL_CTX* tls, absl::Duration dead_peer_timeout);

  // The TLS handshake as the server, within `timeout` (nothing without TLS).
  // kUnauthenticated when it fails (no certificate, another CA, ...),
  // kDeadlineExceeded when it takes too long, kCancelled after Shutdown().
  absl::Status ServerHandshake(absl::Duration timeout);

  ~DataConnection();
  DataConnection(const DataConnection&) = delete;
  DataConnection& operator=(const DataConnection&) = delete;

  // Writes every byte of `parts`, in order. kUnavailable (PEER_UNAVAILABLE)
  // when the connection fails, kCancelled after Shutdown().
  absl::Status WriteAll(absl::Span<const iovec> parts);

  // Reads exactly `n` bytes. kOutOfRange when the peer closed the
  // connection cleanly before the first byte; kUnavailable when it closed
  // or failed midway; kCancelled after Shutdown().
  absl::Status ReadFull(void* p, size_t n);

  // Shuts the socket down in both directions, from any thread. Idempotent.
  void Shutdown();
  bool shut_down() const { return shut_down_.load(); }

  // Stops sending: the peer reads end of stream once it has read what was
  // sent (TLS: close_notify first).
  void CloseWrite();

  // The peer's certificate identity ("" without TLS), and its address.
  const std::string& peer_identity() const { return peer_identity_; }
  const std::string& peer() const { return peer_; }
  bool tls() const { return ssl_ != nullptr; }
  // The negotiated cipher suite ("" without TLS).
  std::string cipher() const;

 private:
  DataConnection(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  // A connection on a connected `fd` (closed on failure), TLS over it when
  // `tls` is not null, its peer named `peer` in messages.
  static absl::StatusOr<std::unique_ptr<DataConnection>> Wrap(
      int fd, SSL_CTX* tls, absl::Duration dead_peer_timeout, std::string peer);
  absl::Status Handshake(bool server, absl::Duration timeout);
  // The status for a failed read or write, from errno or the SSL error.
  absl::Status IoError(const char* what, int ssl_result);

  const int fd_;
  SSL* const ssl_;
  std::atomic<bool> shut_down_{false};
  std::string peer_identity_;
  std::string peer_;
};

// Applies keepalive and TCP_USER_TIMEOUT from `dead_peer_timeout` and
// TCP_NODELAY to `fd`.
void TuneDataSocket(int fd, absl::Duration dead_peer_timeout);

// "host:port" split, accepting "[v6]:port". kInvalidArgument naming it.
absl::Status SplitHostPort(const std::string& address, std::string* host,
                           uint16_t* port);

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_DATA_CONNECTION_H_
