// TransferClient against an in-process destination on 127.0.0.1 that ends the
// session by cancelling the call, as an agent's TransferService does: with its
// cause sent first (TransferResponse.aborted), the client reports that cause;
// without one (an operator's CancelMigration there), CANCELLED.

#include "migd/transfer/transfer_client.h"

#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/base/reason.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::transfer {
namespace {

// Generous for a loaded machine; a healthy run takes milliseconds.
constexpr absl::Duration kDeadline = absl::Seconds(30);

// Accepts the control stream, then ends it by cancelling the call, after
// sending `aborted` when set.
class CancellingDestination final : public v1::TransferService::Service {
 public:
  explicit CancellingDestination(std::optional<v1::SessionAborted> aborted)
      : aborted_(std::move(aborted)) {}

  grpc::Status Transfer(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::TransferResponse, v1::TransferRequest>*
          stream) override {
    v1::TransferRequest request;
    if (!stream->Read(&request) || !request.has_header()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no header");
    }
    v1::TransferResponse response;
    response.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_2);
    if (!stream->Write(response)) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "source went away");
    }
    if (aborted_.has_value()) {
      response.Clear();
      *response.mutable_aborted() = *aborted_;
      stream->Write(response);
    }
    context->TryCancel();
    // Never reaches the source: the call is cancelled.
    return grpc::Status(grpc::StatusCode::INTERNAL, "not this");
  }

 private:
  const std::optional<v1::SessionAborted> aborted_;
};

class TransferClientTest : public ::testing::Test {
 protected:
  void Serve(std::optional<v1::SessionAborted> aborted) {
    destination_ = std::make_unique<CancellingDestination>(std::move(aborted));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(destination_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port, 0);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials());
  }

  std::unique_ptr<TransferClient> Open() {
    v1::SessionHeader header;
    header.set_job_id("job-1");
    header.set_transfer_token("token");
    header.set_protocol_version(v1::PROTOCOL_VERSION_2);
    header.set_stream_index(0);
    header.set_num_streams(1);
    absl::StatusOr<std::unique_ptr<TransferClient>> client =
        TransferClient::Open(channel_, header, kDeadline);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // What the session's next send returns once the destination ended it.
  static absl::Status SendAfterTheEnd(TransferClient& client) {
    EXPECT_TRUE(client.AwaitEnd(kDeadline)) << "the session did not end";
    v1::TransferRequest marker;
    marker.mutable_marker()->set_kind(v1::PhaseMarker::STOP_COPY);
    return client.Send(marker);
  }

  void TearDown() override {
    if (server_ != nullptr) server_->Shutdown();
  }

  std::unique_ptr<CancellingDestination> destination_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(TransferClientTest, ADestinationThatGivesUpIsReportedWithItsCause) {
  v1::SessionAborted aborted;
  aborted.set_reason("ERROR_REASON_TIMEOUT");
  aborted.set_code(static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  aborted.set_message("source sent nothing for 3s");
  ASSERT_NO_FATAL_FAILURE(Serve(aborted));
  std::unique_ptr<TransferClient> client = Open();
  ASSERT_NE(client, nullptr);

  const absl::Status said = client->DestinationAbort(kDeadline);
  EXPECT_EQ(said.code(), absl::StatusCode::kDeadlineExceeded) << said;
  EXPECT_EQ(base::ReasonName(base::ReasonOf(said)), "ERROR_REASON_TIMEOUT")
      << said;

  const absl::Status s = SendAfterTheEnd(*client);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(base::ReasonName(base::ReasonOf(s)), "ERROR_REASON_TIMEOUT") << s;
  EXPECT_EQ(s.message(),
            "destination: the destination ended the session: source sent "
            "nothing for 3s")
      << s;
}

// Only the cause's code and reason are the destination's to choose; a code
// that is no error still makes one.
TEST_F(TransferClientTest, AnAbortWithoutAnErrorCodeIsStillAnError) {
  v1::SessionAborted aborted;
  aborted.set_reason("ERROR_REASON_DEVICE_ERROR");
  aborted.set_code(0);
  aborted.set_message("device emu0: load rejected");
  ASSERT_NO_FATAL_FAILURE(Serve(aborted));
  std::unique_ptr<TransferClient> client = Open();
  ASSERT_NE(client, nullptr);

  const absl::Status s = SendAfterTheEnd(*client);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnknown) << s;
  EXPECT_EQ(base::ReasonName(base::ReasonOf(s)), "ERROR_REASON_DEVICE_ERROR")
      << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "load rejected")) << s;
}

// The destination's CancelMigration cancels the session without a cause:
// that is a cancel.
TEST_F(TransferClientTest, ASessionCancelledWithoutACauseIsACancel) {
  ASSERT_NO_FATAL_FAILURE(Serve(std::nullopt));
  std::unique_ptr<TransferClient> client = Open();
  ASSERT_NE(client, nullptr);

  EXPECT_TRUE(client->DestinationAbort(kDeadline).ok());
  const absl::Status s = SendAfterTheEnd(*client);
  EXPECT_EQ(s.code(), absl::StatusCode::kCancelled) << s;
  EXPECT_EQ(base::ReasonName(base::ReasonOf(s)), "ERROR_REASON_CANCELLED") << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "cancelled the session")) << s;
}

}  // namespace
}  // namespace migd::transfer
