// migd/transfer/transfer_client.h
//
// The source side of one transfer session's control stream: opens the
// TransferService stream to the destination agent, presents the session
// header and waits for the destination to accept it (SessionAccepted names
// the data channel's port), then carries markers, and finally waits for the
// destination's completion. The data streams are data channel connections
// (stream_sender.h). While the source sends, a reader thread
// takes the destination's answers (switchover acknowledgements, completion).
// Any failure carries the destination's own status and reason when it gave one:
// the status the call ended with, or, when the destination ended the session
// by cancelling it, the cause it sent just before (TransferResponse.aborted).
//
// The stream carries raw ByteBuffers (chunk_codec.h), the same
// TransferRequest messages on the wire.

#ifndef MIGD_TRANSFER_TRANSFER_CLIENT_H_
#define MIGD_TRANSFER_TRANSFER_CLIENT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/sync_stream.h"
#include "migd/transfer/chunk_codec.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::transfer {

class TransferClient {
 public:
  // Opens a session on `channel`: sends `header` and waits up to
  // `handshake_timeout` for SessionAccepted. Fails with the destination's
  // status (PERMISSION_DENIED for a bad token, FAILED_PRECONDITION when
  // nothing is prepared, ...) or UNAVAILABLE / DEADLINE_EXCEEDED when the
  // destination cannot be reached.
  // `header` is the control stream's (stream_index 0).
  // `on_ack` runs on the reader thread for each SwitchoverAck.
  static absl::StatusOr<std::unique_ptr<TransferClient>> Open(
      std::shared_ptr<grpc::Channel> channel, const v1::SessionHeader& header,
      absl::Duration handshake_timeout,
      std::function<void(uint32_t device)> on_ack = nullptr);

  ~TransferClient();

  // Sends one message (a marker). On failure returns why the stream ended
  // (the destination's status when it ended the call).
  absl::Status Send(const v1::TransferRequest& request);

  // The data channel port the destination named in SessionAccepted (0:
  // none).
  uint32_t data_port() const { return data_port_; }

  // The destination's certificate identity, as the handshake verified it
  // ("" without TLS).
  std::string peer_identity() const;

  // User-space copies of chunk payload this session made (0 on the
  // zero-copy path).
  const CopyCounter& copies() const { return copies_; }

  // Waits until the destination acknowledged every device in `devices`.
  // kDeadlineExceeded (ACK_TIMEOUT) after `timeout`, naming a device still
  // missing; the session's error when it ended first.
  absl::Status AwaitAcks(const std::vector<uint32_t>& devices,
                         absl::Duration timeout);

  // True when the destination acknowledged `device`.
  bool acked(uint32_t device) const;

  // Ends the sending side and waits for the destination's Completion.
  absl::StatusOr<v1::Completion> Finish();

  // When the Completion arrived (the moment the source learned that the
  // destination runs), as opposed to when Finish() returned after the
  // call's close. InfinitePast() before it arrived.
  absl::Time completion_received() const;

  // Aborts the session from any thread; blocked calls return promptly with
  // an error. Safe to call more than once.
  void Cancel();

  // Wakes an AwaitAcks, now and later, with kCancelled, from any thread;
  // the session itself stays open (so an ABORT marker can still tell the
  // destination why the source gives up).
  void Interrupt();

  // Waits up to `timeout` for the destination to end the session (its
  // answer to an ABORT marker). True when it did.
  bool AwaitEnd(absl::Duration timeout);

  // The destination's cause when it gave up on the session and said so
  // before ending it (TransferResponse.aborted), waiting up to `timeout` for
  // that word or the session's end; OK when the session ended (or is still
  // up) without it. For a failure seen elsewhere first (a data stream the
  // destination cancelled): the control stream says why. From any thread.
  absl::Status DestinationAbort(absl::Duration timeout);

 private:
  TransferClient() = default;
  // The call's final status, with the destination's reason.
  absl::Status FinishWithError(absl::string_view what);
  // The destination's cause as its SessionAborted states it.
  static absl::Status AbortedCause(const v1::SessionAborted& aborted);
  void ReadLoop();
  void JoinReader();

  absl::Status Write(const grpc::ByteBuffer& message);

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::internal::RpcMethod> method_;
  grpc::ClientContext context_;
  // Requests go out as raw ByteBuffers (encoded by chunk_codec), responses
  // come back as messages.
  std::unique_ptr<
      grpc::ClientReaderWriter<grpc::ByteBuffer, v1::TransferResponse>>
      stream_;
  CopyCounter copies_;
  bool finished_ = false;
  uint32_t data_port_ = 0;
  std::function<void(uint32_t)> on_ack_;
  std::thread reader_;
  mutable absl::Mutex mu_;
  std::set<uint32_t> acked_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::Completion> completion_ ABSL_GUARDED_BY(mu_);
  absl::Time completion_received_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  bool reader_done_ ABSL_GUARDED_BY(mu_) = false;
  bool interrupted_ ABSL_GUARDED_BY(mu_) = false;
  // What the destination said when it gave up on the session.
  std::optional<v1::SessionAborted> aborted_ ABSL_GUARDED_BY(mu_);
  // Set by Cancel(): a CANCELLED status is then ours, not the destination's.
  std::atomic<bool> cancelled_{false};
  absl::Status final_status_;
};

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_TRANSFER_CLIENT_H_
