// migd/transfer/transfer_client.h
//
// The source side of one transfer session: opens the TransferService stream to
// the destination agent, presents the session header and waits for the
// destination to accept it, then carries chunks and markers, and finally waits
// for the destination's completion. Any failure carries the destination's own
// status and reason when it gave one.

#ifndef MIGD_TRANSFER_TRANSFER_CLIENT_H_
#define MIGD_TRANSFER_TRANSFER_CLIENT_H_

#include <atomic>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/sync_stream.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::transfer {

class TransferClient {
 public:
  // Opens a session on `channel`: sends `header` and waits up to
  // `handshake_timeout` for SessionAccepted. Fails with the destination's
  // status (PERMISSION_DENIED for a bad token, FAILED_PRECONDITION when
  // nothing is prepared, ...) or UNAVAILABLE / DEADLINE_EXCEEDED when the
  // destination cannot be reached.
  static absl::StatusOr<std::unique_ptr<TransferClient>> Open(
      std::shared_ptr<grpc::Channel> channel, const v1::SessionHeader& header,
      absl::Duration handshake_timeout);

  ~TransferClient();

  // Sends one message. On failure returns why the stream ended (the
  // destination's status when it ended the call).
  absl::Status Send(const v1::TransferRequest& request);

  // Ends the sending side and waits for the destination's Completion.
  absl::StatusOr<v1::Completion> Finish();

  // Aborts the session from any thread; blocked calls return promptly with
  // an error. Safe to call more than once.
  void Cancel();

 private:
  TransferClient() = default;
  // The call's final status, with the destination's reason.
  absl::Status FinishWithError(absl::string_view what);

  std::unique_ptr<v1::TransferService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<v1::TransferRequest, v1::TransferResponse>>
      stream_;
  bool finished_ = false;
  // Set by Cancel(): a CANCELLED status is then ours, not the destination's.
  std::atomic<bool> cancelled_{false};
  absl::Status final_status_;
};

// A channel to `address` ("host:port") tuned for bulk transfer: large
// messages, 8 MiB HTTP/2 lookahead.
std::shared_ptr<grpc::Channel> MakeTransferChannel(const std::string& address);

// Largest message either side accepts (a chunk plus its header).
inline constexpr int kMaxTransferMessageBytes = 16 << 20;

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_TRANSFER_CLIENT_H_
