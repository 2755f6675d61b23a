#include "migd/security/credentials.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "grpc/grpc.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/support/channel_arguments.h"

namespace migd::security {
namespace {

namespace gx = ::grpc::experimental;

// Accepts the server only if its certificate (already verified against the
// CA bundle by gRPC) carries `expected` as a URI or DNS SAN.
class IdentityVerifier final : public gx::ExternalCertificateVerifier {
 public:
  explicit IdentityVerifier(std::string expected)
      : expected_(std::move(expected)) {}

  bool Verify(gx::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    std::vector<std::string> names;
    for (const auto& list : {request->uri_names(), request->dns_names()}) {
      for (grpc::string_ref n : list) names.emplace_back(n.data(), n.size());
    }
    if (std::find(names.begin(), names.end(), expected_) != names.end()) {
      *sync_status = grpc::Status::OK;
    } else {
      *sync_status =
          grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                       absl::StrCat("the server's certificate names ",
                                    names.empty() ? "no identity"
                                                  : absl::StrJoin(names, ", "),
                                    ", not the expected ", expected_));
    }
    return true;  // decided synchronously
  }

  void Cancel(gx::TlsCustomVerificationCheckRequest*) override {}

 private:
  const std::string expected_;
};

}  // namespace

void ApplyBulkServerArguments(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(kMaxTransferMessageBytes);
  builder.SetMaxSendMessageSize(kMaxTransferMessageBytes);
  builder.AddChannelArgument("grpc.http2.lookahead_bytes", 8 << 20);
  // A fixed window bounds what gRPC buffers per stream (a transfer's
  // control stream; device state moves on the data channel) while the
  // other side makes it wait (see Dial).
  builder.AddChannelArgument("grpc.http2.bdp_probe", 0);
  // A source pings the connection of a job it waits on (Dial's keepalive)
  // as often as every kMinKeepaliveInterval while this side sends it
  // nothing: while it waits for an acknowledgement, or for the completion
  // while this agent loads. gRPC's default policy counts a ping within 5
  // minutes of the last one, with no data sent in between, as a strike, and
  // the third strike ends the connection with GOAWAY (too_many_pings),
  // failing the job. A keepalive ping comes at least its interval after the
  // previous one was answered, so half the shortest interval leaves room for
  // timer slack, while a client pinging faster than any source does still
  // gets its strikes.
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      static_cast<int>(absl::ToInt64Milliseconds(kMinKeepaliveInterval / 2)));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
}

std::shared_ptr<Credentials> Credentials::Insecure() {
  return std::shared_ptr<Credentials>(new Credentials());
}

absl::StatusOr<std::shared_ptr<Credentials>> Credentials::Tls(
    const TlsFiles& files, absl::Duration reload_interval,
    const std::string& flag_prefix) {
  if (absl::Status s = CheckTlsFiles(files, flag_prefix); !s.ok()) return s;
  if (reload_interval < absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "the certificate reload interval must be at least 1s");
  }
  std::shared_ptr<Credentials> c(new Credentials());
  c->files_ = files;
  c->provider_ = std::make_shared<gx::FileWatcherCertificateProvider>(
      files.key, files.cert, files.ca,
      static_cast<unsigned int>(absl::ToInt64Seconds(reload_interval)));
  return c;
}

std::shared_ptr<grpc::ServerCredentials> Credentials::ServerCredentials(
    std::shared_ptr<Authorizer> authorizer) const {
  if (insecure()) return grpc::InsecureServerCredentials();
  gx::TlsServerCredentialsOptions options(provider_);
  options.watch_identity_key_cert_pairs();
  options.watch_root_certs();
  // Any certificate whose key the client holds passes the handshake; the
  // Authorizer verifies the chain per call and says why it refuses one.
  options.set_cert_request_type(
      GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
  options.set_certificate_verifier(
      std::make_shared<gx::NoOpCertificateVerifier>());
  std::shared_ptr<grpc::ServerCredentials> creds =
      gx::TlsServerCredentials(options);
  creds->SetAuthMetadataProcessor(std::move(authorizer));
  return creds;
}

std::shared_ptr<grpc::ChannelCredentials> Credentials::ChannelCredentials(
    const std::string& expected_identity) const {
  if (insecure()) return grpc::InsecureChannelCredentials();
  gx::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider_);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_verify_server_certs(true);
  if (!expected_identity.empty()) {
    options.set_check_call_host(false);
    options.set_certificate_verifier(
        gx::ExternalCertificateVerifier::Create<IdentityVerifier>(
            expected_identity));
  }
  return gx::TlsCredentials(options);
}

std::shared_ptr<grpc::Channel> Credentials::Dial(
    const std::string& address, const std::string& expected_identity,
    ChannelUse use, const Keepalive& keepalive) const {
  grpc::ChannelArguments args;
  if (keepalive.interval > absl::ZeroDuration()) {
    // gRPC takes int milliseconds.
    auto ms = [](absl::Duration d, absl::Duration at_least) {
      return static_cast<int>(absl::ToInt64Milliseconds(std::clamp(
          d, at_least, absl::Milliseconds(std::numeric_limits<int>::max()))));
    };
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                ms(keepalive.interval, kMinKeepaliveInterval));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                ms(keepalive.timeout, absl::Milliseconds(1)));
    // The default allows 2 pings, then none until data is sent: a source
    // waiting for an acknowledgement sends nothing for as long as it waits.
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  if (use == ChannelUse::kBulk) {
    args.SetMaxSendMessageSize(kMaxTransferMessageBytes);
    args.SetMaxReceiveMessageSize(kMaxTransferMessageBytes);
    args.SetInt("grpc.http2.lookahead_bytes", 8 << 20);
    // A fixed window: with BDP probing it grows without bound while a
    // stream waits, and what waits in gRPC is memory outside the agent's cap.
    args.SetInt("grpc.http2.bdp_probe", 0);
    // Each job gets its own connection: a stalled job must not slow another.
    args.SetInt("grpc.use_local_subchannel_pool", 1);
  }
  return grpc::CreateCustomChannel(address,
                                   ChannelCredentials(expected_identity), args);
}

}  // namespace migd::security
