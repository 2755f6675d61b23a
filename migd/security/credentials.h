// migd/security/credentials.h
//
// The one place that builds gRPC credentials and channels, for the agent
// (its server, and the channels a source opens to a destination) and for
// migctl. Either plaintext (--insecure, which must be asked for) or mutual
// TLS from files that are read again while the process runs: a rotated
// certificate, key or CA bundle is used for new connections once the next
// reload interval has passed, and connections already open go on with what
// they negotiated.
//
// Server side: the handshake asks for a client certificate and accepts any
// whose key the client proves it holds; the Authorizer (authorizer.h) then
// verifies it against the CA bundle and the policy on every call, so that a
// refused client learns why (UNAUTHENTICATED, PERMISSION_DENIED).
// Client side: the server's certificate must chain to the CA bundle, and
// carry the expected identity when one is named (the address may be an IP:
// then the identity, not the host name, is what proves who answers); without
// one, the address's host must match a DNS or IP SAN of the certificate.

#ifndef MIGD_SECURITY_CREDENTIALS_H_
#define MIGD_SECURITY_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/server_builder.h"
#include "migd/security/authorizer.h"
#include "migd/security/tls_files.h"

namespace migd::security {

// What a channel carries, which sets its tuning.
enum class ChannelUse {
  kControl,  // unary calls and watches: gRPC's defaults
  // Device state: large messages, an 8 MiB HTTP/2 lookahead, a fixed window
  // (no BDP probing), a connection of its own.
  kBulk,
};

// Largest message either side of a transfer accepts (a chunk plus its header).
inline constexpr int kMaxTransferMessageBytes = 16 << 20;

// How a channel notices a connection whose peer stopped answering (a
// partition, a host that is down): a partition fails no call by itself, as
// TCP retransmits for many minutes and a call that only waits for an answer
// sends nothing that could fail.
struct Keepalive {
  // A connection with calls open from which nothing was read for this long
  // is pinged (at least kMinKeepaliveInterval). Zero: never (gRPC's
  // default).
  absl::Duration interval;
  // The connection is closed, and its calls fail with UNAVAILABLE, when the
  // ping is not answered within this long, or when the peer's TCP leaves
  // sent data unacknowledged for as long (TCP_USER_TIMEOUT, which gRPC sets
  // to this; it bounds a connect too). A peer that is busy but alive
  // answers from its gRPC transport whatever its handlers do; but the ping
  // queues behind the data already sent, so this must be longer than the
  // link takes to drain what is queued for it.
  absl::Duration timeout;
};

// The shortest Keepalive::interval Dial uses (a shorter one is raised to
// it). The server side of kBulk accepts pings this often, so that a client's
// own keepalive never costs its connection a GOAWAY.
inline constexpr absl::Duration kMinKeepaliveInterval = absl::Seconds(1);

// The server-side half of kBulk, for a server that also serves transfers:
// large messages, the fixed window, and a ping policy that accepts Dial's
// keepalive pings.
void ApplyBulkServerArguments(grpc::ServerBuilder& builder);

class Credentials {
 public:
  // Plaintext and no identities.
  static std::shared_ptr<Credentials> Insecure();

  // Mutual TLS from `files`, checked first (CheckTlsFiles; errors name the
  // file and the setting, "--tls_" or whatever `flag_prefix` says), then
  // read again every `reload_interval`.
  static absl::StatusOr<std::shared_ptr<Credentials>> Tls(
      const TlsFiles& files, absl::Duration reload_interval,
      const std::string& flag_prefix = "--tls_");

  bool insecure() const { return provider_ == nullptr; }
  const TlsFiles& files() const { return files_; }

  // Credentials for a server: TLS with `authorizer` deciding every call
  // (required unless insecure()).
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
      std::shared_ptr<Authorizer> authorizer) const;

  // Credentials for a client, checking the server as the file comment says.
  std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(
      const std::string& expected_identity) const;

  // A channel to `address` ("host:port") with these credentials, the
  // tuning of `use`, and `keepalive` (none by default).
  std::shared_ptr<grpc::Channel> Dial(const std::string& address,
                                      const std::string& expected_identity,
                                      ChannelUse use,
                                      const Keepalive& keepalive = {}) const;

 private:
  Credentials() = default;

  TlsFiles files_;
  std::shared_ptr<grpc::experimental::FileWatcherCertificateProvider> provider_;
};

}  // namespace migd::security

#endif  // MIGD_SECURITY_CREDENTIALS_H_
