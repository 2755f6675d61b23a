#include "migd/transfer/transfer_client.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"
#include "migd/base/watchdog.h"
#include "migd/security/identity.h"
#include "migd/transfer/grpc_status.h"

namespace migd::transfer {

absl::StatusOr<std::unique_ptr<TransferClient>> TransferClient::Open(
    std::shared_ptr<grpc::Channel> channel, const v1::SessionHeader& header,
    absl::Duration handshake_timeout,
    std::function<void(uint32_t device)> on_ack) {
  std::unique_ptr<TransferClient> client(new TransferClient());
  client->channel_ = std::move(channel);
  client->method_ = std::make_unique<grpc::internal::RpcMethod>(
      kTransferMethod, grpc::internal::RpcMethod::BIDI_STREAMING,
      client->channel_);
  client->on_ack_ = std::move(on_ack);
  base::Watchdog handshake_watch(handshake_timeout,
                                 [&] { client->context_.TryCancel(); });
  client->stream_.reset(grpc::internal::ClientReaderWriterFactory<
                        grpc::ByteBuffer,
                        v1::TransferResponse>::Create(client->channel_.get(),
                                                      *client->method_,
                                                      &client->context_));
  v1::TransferRequest req;
  *req.mutable_header() = header;
  v1::TransferResponse resp;
  bool ok = client->stream_->Write(EncodeRequest(req, &client->copies_)) &&
            client->stream_->Read(&resp);
  if (ok && resp.has_accepted()) {
    client->data_port_ = resp.accepted().data_port();
    TransferClient* raw = client.get();
    client->reader_ = std::thread([raw] {
      base::NameThisThread("src-answers");
      raw->ReadLoop();
    });
    return client;
  }
  if (!ok) {
    absl::Status s = client->FinishWithError("opening the transfer session");
    if (handshake_watch.expired()) {
      return base::Error(
          absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
          absl::StrCat("destination did not accept the session within ",
                       absl::FormatDuration(handshake_timeout)));
    }
    return s;
  }
  client->Cancel();
  return base::Error(absl::StatusCode::kInternal,
                     v1::ERROR_REASON_PROTOCOL_ERROR,
                     "destination answered the session header with something "
                     "other than SessionAccepted");
}

TransferClient::~TransferClient() {
  if (stream_ && !finished_) {
    context_.TryCancel();
    JoinReader();
    (void)stream_->Finish();
  }
  JoinReader();
}

void TransferClient::ReadLoop() {
  v1::TransferResponse resp;
  while (stream_->Read(&resp)) {
    if (resp.has_switchover_ack()) {
      uint32_t device = resp.switchover_ack().device();
      {
        absl::MutexLock lock(&mu_);
        acked_.insert(device);
      }
      if (on_ack_) on_ack_(device);
    } else if (resp.has_completion()) {
      absl::MutexLock lock(&mu_);
      completion_ = resp.completion();
      completion_received_ = absl::Now();
    } else if (resp.has_aborted()) {
      // The destination gave up and cancels the call next: the call's
      // status will only say CANCELLED.
      absl::MutexLock lock(&mu_);
      if (!aborted_.has_value()) aborted_ = resp.aborted();
    }
  }
  absl::MutexLock lock(&mu_);
  reader_done_ = true;
}

void TransferClient::JoinReader() {
  if (reader_.joinable()) reader_.join();
}

absl::Status TransferClient::FinishWithError(absl::string_view what) {
  if (!finished_) {
    finished_ = true;
    // The call is over (or being cancelled): the reader sees it end too.
    JoinReader();
    grpc::Status s = stream_->Finish();
    final_status_ = FromGrpcStatus(s, context_);
    std::optional<v1::SessionAborted> aborted;
    {
      absl::MutexLock lock(&mu_);
      aborted = aborted_;
    }
    if (!final_status_.ok() && aborted.has_value()) {
      // The destination said why before it cancelled the call: that is the
      // cause, not the CANCELLED (or the broken call) that followed.
      final_status_ = AbortedCause(*aborted);
    } else if (final_status_.ok()) {
      // The destination closed cleanly where it should not have.
      final_status_ = base::Error(
          absl::StatusCode::kInternal, v1::ERROR_REASON_PROTOCOL_ERROR,
          absl::StrCat("destination ended the session while ", what));
    } else if (final_status_.code() == absl::StatusCode::kCancelled &&
               !cancelled_) {
      // The destination's CancelMigration (or its shutdown) cancels the call.
      final_status_ =
          base::Error(absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
                      "the destination cancelled the session");
    } else if (final_status_.code() == absl::StatusCode::kUnimplemented) {
      // An agent that does not speak this protocol (gRPC's status carries
      // no message of its own here).
      final_status_ = base::Error(
          absl::StatusCode::kUnimplemented, v1::ERROR_REASON_PROTOCOL_ERROR,
          absl::StrCat("destination does not serve ", method_->name(),
                       final_status_.message().empty() ? "" : ": ",
                       final_status_.message()));
    } else if (final_status_.code() == absl::StatusCode::kResourceExhausted &&
               base::ReasonOf(final_status_) == v1::ERROR_REASON_INTERNAL) {
      // A destination at its cap of streams: it is there but cannot take
      // this one now, which a control plane may retry (or send elsewhere).
      final_status_ =
          base::WithReason(final_status_, v1::ERROR_REASON_PEER_UNAVAILABLE);
    } else if (final_status_.code() == absl::StatusCode::kUnavailable &&
               base::ReasonOf(final_status_) !=
                   v1::ERROR_REASON_PEER_UNAVAILABLE) {
      final_status_ =
          base::WithReason(final_status_, v1::ERROR_REASON_PEER_UNAVAILABLE);
    }
  }
  return base::Annotate(final_status_, "destination");
}

absl::Status TransferClient::AbortedCause(const v1::SessionAborted& aborted) {
  if (base::ReasonFromName(aborted.reason()) == v1::ERROR_REASON_CANCELLED) {
    // CancelMigration on the destination.
    return base::Error(absl::StatusCode::kCancelled, v1::ERROR_REASON_CANCELLED,
                       "the destination cancelled the session");
  }
  absl::StatusCode code = static_cast<absl::StatusCode>(aborted.code());
  if (aborted.code() <= 0 ||
      aborted.code() > static_cast<int>(absl::StatusCode::kUnauthenticated)) {
    code = absl::StatusCode::kUnknown;  // an abort is never OK
  }
  absl::Status cause(code, absl::StrCat("the destination ended the session: ",
                                        aborted.message()));
  const v1::ErrorReason reason = base::ReasonFromName(aborted.reason());
  if (reason != v1::ERROR_REASON_UNSPECIFIED) {
    cause = base::WithReason(cause, reason);
  }
  return cause;
}

absl::Status TransferClient::Write(const grpc::ByteBuffer& message) {
  if (finished_) return base::Annotate(final_status_, "destination");
  if (stream_->Write(message)) return absl::OkStatus();
  return FinishWithError("sending device state");
}

std::string TransferClient::peer_identity() const {
  std::shared_ptr<const grpc::AuthContext> auth = context_.auth_context();
  return auth == nullptr ? "" : security::PeerIdentity(*auth);
}

absl::Status TransferClient::Send(const v1::TransferRequest& request) {
  return Write(EncodeRequest(request, &copies_));
}

absl::Status TransferClient::AwaitAcks(const std::vector<uint32_t>& devices,
                                       absl::Duration timeout) {
  auto all_acked = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (reader_done_ || interrupted_) return true;
    for (uint32_t d : devices) {
      if (acked_.count(d) == 0) return false;
    }
    return true;
  };
  {
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&all_acked), timeout);
    if (interrupted_) return absl::CancelledError("cancel requested");
    bool done = reader_done_;
    for (uint32_t d : devices) {
      if (acked_.count(d) != 0) continue;
      if (done) break;  // the session ended: report why, below
      return base::Error(
          absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_ACK_TIMEOUT,
          absl::StrCat("destination did not acknowledge the initial data of "
                       "device index ",
                       d, " within ", absl::FormatDuration(timeout)));
    }
    if (!done) return absl::OkStatus();
  }
  return FinishWithError("waiting for switchover acknowledgements");
}

bool TransferClient::acked(uint32_t device) const {
  absl::MutexLock lock(&mu_);
  return acked_.count(device) != 0;
}

absl::StatusOr<v1::Completion> TransferClient::Finish() {
  if (finished_) return base::Annotate(final_status_, "destination");
  if (!stream_->WritesDone()) return FinishWithError("committing");
  JoinReader();
  std::optional<v1::Completion> completion;
  {
    absl::MutexLock lock(&mu_);
    completion = completion_;
  }
  if (!completion.has_value()) return FinishWithError("loading device state");
  finished_ = true;
  grpc::Status s = stream_->Finish();
  if (!s.ok()) return FromGrpcStatus(s, context_);
  return *completion;
}

absl::Time TransferClient::completion_received() const {
  absl::MutexLock lock(&mu_);
  return completion_received_;
}

void TransferClient::Cancel() {
  cancelled_ = true;
  context_.TryCancel();
}

void TransferClient::Interrupt() {
  absl::MutexLock lock(&mu_);
  interrupted_ = true;
}

bool TransferClient::AwaitEnd(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(&reader_done_), timeout);
}

absl::Status TransferClient::DestinationAbort(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto said_or_ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return aborted_.has_value() || reader_done_;
  };
  mu_.AwaitWithTimeout(absl::Condition(&said_or_ended), timeout);
  if (!aborted_.has_value()) return absl::OkStatus();
  return base::Annotate(AbortedCause(*aborted_), "destination");
}

}  // namespace migd::transfer
