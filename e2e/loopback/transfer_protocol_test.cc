// e2e/loopback/transfer_protocol_test.cc
//
// Loopback tier for the destination's side of the transfer protocol: a real
// destination agent on 127.0.0.1 driven by a hand-made source (TransferClient,
// no source agent), so that a test can send what a source agent never would:
// a data stream that stops without its STREAM_END, a STREAM_END that
// miscounts, a control header on the data method. Each must fail with the
// reason the source reads back, and a failed destination job must leave its
// device reset and free. A destination that gives up on a session (a failed
// stream, a silent source) tells the source why on the control stream before
// it cancels the call. Also the agent's limits on data streams: a stream
// that never sends its header is ended, and streams beyond the cap are
// refused.
//
// The destination serves mutual TLS; the hand-made source calls with an agent
// certificate of the run PKI (kSourceName), to which the tests bind their
// transfer tokens.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/run_pki.h"
#include "e2e/testing/status_macros.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"
#include "migd/base/crc32c.h"
#include "migd/base/reason.h"
#include "migd/security/credentials.h"
#include "migd/security/testing/test_pki.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/grpc_status.h"
#include "migd/transfer/transfer_client.h"
#include "proto/migd/v1/migration.grpc.pb.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::e2e {
namespace {

using ::migd::transfer::TransferClient;
using ::migd::v1::Migration;

// Deadlines. Generous for a loaded 2-core machine; a healthy run takes a
// fraction of each.
constexpr absl::Duration kRpcTimeout = absl::Seconds(30);
constexpr absl::Duration kJobTimeout = absl::Seconds(60);

constexpr char kDevice[] = "emu0";

// The hand-made source's certificate: a harness agent name that no agent of
// these tests serves with (each test starts one agent, agent-a).
constexpr char kSourceName[] = "agent-c";

// A bulk channel to `agent` (expecting its identity) with kSourceName's
// certificate, as a source agent dials a destination.
absl::StatusOr<std::shared_ptr<grpc::Channel>> DialAsSource(
    const AgentProcess& agent) {
  absl::StatusOr<RunPki*> pki = RunPki::Get();
  if (!pki.ok()) return pki.status();
  absl::StatusOr<std::shared_ptr<security::Credentials>> credentials =
      (*pki)->ClientCredentials(kSourceName);
  if (!credentials.ok()) return credentials.status();
  return (*credentials)
      ->Dial(agent.address(), agent.identity(), security::ChannelUse::kBulk);
}

// Names, so that a mismatch prints "ERROR_REASON_..." rather than a number.
std::string ReasonName(v1::ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}
std::string ReasonName(const absl::Status& status) {
  return ReasonName(base::ReasonOf(status));
}

// A chunk of device 0 carrying `data`, with the CRC32C the destination checks.
v1::TransferRequest Chunk(uint64_t sequence, uint64_t offset,
                          absl::string_view data) {
  v1::TransferRequest request;
  v1::DataChunk* chunk = request.mutable_chunk();
  chunk->set_device(0);
  chunk->set_sequence(sequence);
  chunk->set_offset(offset);
  chunk->set_crc32c(base::Crc32c(data.data(), data.size()));
  chunk->set_data(std::string(data));
  return request;
}

class TransferProtocolTest : public AgentTest {
 protected:
  void SetUp() override {
    std::vector<std::string> args = {"--emulated_devices=emu0",
                                     "--emulated_state_size=1MiB",
                                     "--emulated_seed=2"};
    for (const std::string& arg : ExtraArgs()) args.push_back(arg);
    destination_ = StartAgent("destination", std::move(args));
    ASSERT_NE(destination_, nullptr);
    ASSERT_OK_AND_ASSIGN(channel_, DialAsSource(*destination_));
  }

  // More flags for the destination agent.
  virtual std::vector<std::string> ExtraArgs() const { return {}; }

  void TearDown() override {
    // An open connection holds up the agent's shutdown, which AgentTest
    // expects to be clean.
    data_.reset();
    control_.reset();
    channel_.reset();
    AgentTest::TearDown();
  }

  // PrepareIncoming of emu0 -> emu0 for `job_id`; keeps the answer.
  void Prepare(absl::string_view job_id) {
    v1::PrepareIncomingRequest request;
    request.set_job_id(std::string(job_id));
    v1::DevicePair* pair = request.add_devices();
    pair->set_source_device(kDevice);
    pair->set_destination_device(kDevice);
    request.set_source("transfer-protocol-test");
    request.set_source_identity(
        security::testing::TestPki::AgentIdentity(kSourceName));
    CallResult r =
        CallPrepareIncoming(destination_->stub(), request, &prepared_);
    ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
    ASSERT_FALSE(prepared_.transfer_token().empty());
  }

  // The header of stream `index` of a session with one data stream, for the
  // prepared job. The control stream's (index 0) lists the devices the way
  // the destination's Attach matches them against what it prepared.
  v1::SessionHeader Header(uint32_t index) const {
    v1::SessionHeader header;
    header.set_job_id(prepared_.migration().job_id());
    header.set_transfer_token(prepared_.transfer_token());
    header.set_protocol_version(v1::PROTOCOL_VERSION_1);
    header.set_stream_index(index);
    header.set_num_streams(1);
    if (index != 0) return header;
    const auto& devices = prepared_.migration().devices();
    for (int i = 0; i < devices.size(); ++i) {
      v1::DeviceDescriptor* d = header.add_devices();
      d->set_index(i);
      d->set_source_device(devices[i].peer_device());
      d->set_destination_device(devices[i].device());
      d->set_kind("emulated");
    }
    return header;
  }

  // Opens the control stream and data stream 1 of the prepared job.
  void OpenSession() {
    ASSERT_OK_AND_ASSIGN(
        control_, TransferClient::Open(channel_, Header(0), kRpcTimeout));
    ASSERT_OK_AND_ASSIGN(
        data_, TransferClient::Open(channel_, Header(1), kRpcTimeout));
  }

  // The destination job ended PHASE_FAILED with `reason` and a message
  // containing `says`, and its device was reset: RUNNING and free.
  void ExpectDestinationFailed(v1::ErrorReason reason, absl::string_view says) {
    ASSERT_OK_AND_ASSIGN(
        Migration end,
        WaitForEnd(destination_->stub(), prepared_.migration().job_id(),
                   absl::Now() + kJobTimeout));
    EXPECT_EQ(v1::Phase_Name(end.phase()), v1::Phase_Name(v1::PHASE_FAILED))
        << end.ShortDebugString();
    EXPECT_EQ(ReasonName(end.failure().reason()), ReasonName(reason))
        << end.failure().message();
    EXPECT_TRUE(absl::StrContains(end.failure().message(), says))
        << end.failure().message();
    ASSERT_OK_AND_ASSIGN(DeviceMapT devices, DeviceMap(destination_->stub()));
    ASSERT_EQ(devices.count(kDevice), 1u);
    EXPECT_EQ(v1::DeviceState_Name(devices[kDevice].state()),
              v1::DeviceState_Name(v1::DEVICE_STATE_RUNNING));
    EXPECT_EQ(devices[kDevice].job_id(), "") << "device still held by a job";
  }

  std::shared_ptr<grpc::Channel> channel_;
  v1::PrepareIncomingResponse prepared_;
  std::unique_ptr<TransferClient> control_;
  std::unique_ptr<TransferClient> data_;
};

// A half-close is all the destination sees of a source that gave up or of a
// connection that broke under it; only STREAM_END says the stream is whole.
TEST_F(TransferProtocolTest,
       DataStreamClosedWithoutStreamEndFailsTheDestinationAsADrop) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-no-stream-end"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  // A good chunk, so the stream is not empty: the magic that starts every
  // emulated device's stream, which the device takes as the first bytes.
  absl::Status sent = data_->Send(Chunk(0, 0, "MIGDEMU1"));
  ASSERT_TRUE(sent.ok()) << sent;

  absl::Status closed = data_->FinishData();  // no STREAM_END before it
  EXPECT_EQ(ReasonName(closed), ReasonName(v1::ERROR_REASON_PEER_UNAVAILABLE))
      << closed;
  EXPECT_TRUE(absl::StrContains(closed.message(), "without its STREAM_END"))
      << closed;
  ExpectDestinationFailed(v1::ERROR_REASON_PEER_UNAVAILABLE,
                          "without its STREAM_END");
}

TEST_F(TransferProtocolTest,
       StreamEndThatMiscountsFailsTheDestinationAsCorrupted) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-miscounted-stream-end"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  // The chunk count is right, the byte count is not: the stream carried 8
  // bytes, the marker claims 4096.
  absl::Status sent = data_->Send(Chunk(0, 0, "MIGDEMU1"));
  ASSERT_TRUE(sent.ok()) << sent;
  v1::TransferRequest end;
  end.mutable_marker()->set_kind(v1::PhaseMarker::STREAM_END);
  end.mutable_marker()->set_sequence(1);
  end.mutable_marker()->set_total_bytes(4096);
  sent = data_->Send(end);
  ASSERT_TRUE(sent.ok()) << sent;

  absl::Status closed = data_->FinishData();
  EXPECT_EQ(ReasonName(closed), ReasonName(v1::ERROR_REASON_STREAM_CORRUPTED))
      << closed;
  ExpectDestinationFailed(v1::ERROR_REASON_STREAM_CORRUPTED, "STREAM_END");
}

// The other streams of a session are cancelled when one fails; the control
// stream says why first, so a source that sees the cancel there (or on
// another data stream) still reports the failing stream's cause.
TEST_F(TransferProtocolTest, AFailedDataStreamsCauseReachesTheControlStream) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-cause-on-control"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  absl::Status sent = data_->Send(Chunk(0, 0, "MIGDEMU1"));
  ASSERT_TRUE(sent.ok()) << sent;
  v1::TransferRequest end;
  end.mutable_marker()->set_kind(v1::PhaseMarker::STREAM_END);
  end.mutable_marker()->set_sequence(1);
  end.mutable_marker()->set_total_bytes(4096);  // 8 were sent
  sent = data_->Send(end);
  ASSERT_TRUE(sent.ok()) << sent;
  ASSERT_TRUE(control_->AwaitEnd(kRpcTimeout))
      << "the destination did not end the control stream";

  const absl::Status said = control_->DestinationAbort(kRpcTimeout);
  EXPECT_EQ(ReasonName(said), ReasonName(v1::ERROR_REASON_STREAM_CORRUPTED))
      << said;
  EXPECT_TRUE(absl::StrContains(said.message(), "data stream 1")) << said;
  // What the source's next message on the control stream returns.
  v1::TransferRequest marker;
  marker.mutable_marker()->set_kind(v1::PhaseMarker::STOP_COPY);
  const absl::Status control = control_->Send(marker);
  EXPECT_EQ(ReasonName(control), ReasonName(v1::ERROR_REASON_STREAM_CORRUPTED))
      << control;
  ExpectDestinationFailed(v1::ERROR_REASON_STREAM_CORRUPTED, "STREAM_END");
}

// A destination that waits one second for a silent source.
class TransferIdleTest : public TransferProtocolTest {
 protected:
  std::vector<std::string> ExtraArgs() const override {
    return {"--phase_timeout_seconds=1"};
  }
};

// The destination gives up on a source that sent nothing for its idle
// timeout, and ends the call by cancelling it: the status it would return
// never reaches the source, so its cause comes first, on the control stream.
TEST_F(TransferIdleTest, ASilentSourceIsToldTheDestinationTimedOut) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-silent-source"));
  grpc::internal::RpcMethod method(transfer::kTransferMethod,
                                   grpc::internal::RpcMethod::BIDI_STREAMING,
                                   channel_);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  std::unique_ptr<
      grpc::ClientReaderWriter<grpc::ByteBuffer, v1::TransferResponse>>
      call(grpc::internal::ClientReaderWriterFactory<
           grpc::ByteBuffer, v1::TransferResponse>::Create(channel_.get(),
                                                           method, &context));
  v1::TransferRequest request;
  *request.mutable_header() = Header(0);
  ASSERT_TRUE(call->Write(transfer::EncodeRequest(request, nullptr)));
  v1::TransferResponse response;
  ASSERT_TRUE(call->Read(&response));
  ASSERT_TRUE(response.has_accepted()) << response.ShortDebugString();

  // Then nothing is sent, and the next answer is the destination's cause.
  ASSERT_TRUE(call->Read(&response)) << "the session ended without a cause";
  ASSERT_TRUE(response.has_aborted()) << response.ShortDebugString();
  EXPECT_EQ(response.aborted().reason(), ReasonName(v1::ERROR_REASON_TIMEOUT));
  EXPECT_EQ(response.aborted().code(),
            static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_TRUE(absl::StrContains(response.aborted().message(),
                                "source sent nothing for 1s"))
      << response.aborted().message();
  // The call ends cancelled, as it did before the cause was sent.
  EXPECT_FALSE(call->Read(&response)) << response.ShortDebugString();
  EXPECT_EQ(call->Finish().error_code(), grpc::StatusCode::CANCELLED);
  ExpectDestinationFailed(v1::ERROR_REASON_TIMEOUT,
                          "source sent nothing for 1s");
}

// The same session through TransferClient, as a source agent runs it: the
// failure it reports is the destination's, TIMEOUT, not a cancel.
TEST_F(TransferIdleTest, ASilentSourceReportsTheDestinationsTimeout) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-silent-client"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  ASSERT_TRUE(control_->AwaitEnd(kRpcTimeout))
      << "the destination did not end the session";
  v1::TransferRequest marker;
  marker.mutable_marker()->set_kind(v1::PhaseMarker::STOP_COPY);
  const absl::Status s = control_->Send(marker);
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_EQ(ReasonName(s), ReasonName(v1::ERROR_REASON_TIMEOUT)) << s;
  EXPECT_TRUE(absl::StrContains(
      s.message(),
      "destination: the destination ended the session: source "
      "sent nothing for 1s"))
      << s;
  ExpectDestinationFailed(v1::ERROR_REASON_TIMEOUT,
                          "source sent nothing for 1s");
}

// TransferClient picks the method from stream_index, so this call is made by
// hand. No control stream is attached: were the index not checked, the
// refusal would be NOT_PREPARED instead.
TEST_F(TransferProtocolTest, ControlStreamOnTheDataMethodIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-control-on-data"));
  grpc::internal::RpcMethod method(transfer::kTransferDataMethod,
                                   grpc::internal::RpcMethod::BIDI_STREAMING,
                                   channel_);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  std::unique_ptr<
      grpc::ClientReaderWriter<grpc::ByteBuffer, v1::TransferResponse>>
      call(grpc::internal::ClientReaderWriterFactory<
           grpc::ByteBuffer, v1::TransferResponse>::Create(channel_.get(),
                                                           method, &context));
  v1::TransferRequest request;
  *request.mutable_header() = Header(0);
  ASSERT_TRUE(call->Write(transfer::EncodeRequest(request, nullptr)));

  v1::TransferResponse response;
  EXPECT_FALSE(call->Read(&response))
      << "accepted: " << response.ShortDebugString();
  absl::Status refused = transfer::FromGrpcStatus(call->Finish(), context);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  EXPECT_EQ(ReasonName(refused), ReasonName(v1::ERROR_REASON_PROTOCOL_ERROR))
      << refused;
  // A stray stream is refused without touching the job.
  ASSERT_OK_AND_ASSIGN(
      Migration job,
      GetMigration(destination_->stub(), prepared_.migration().job_id()));
  EXPECT_EQ(v1::Phase_Name(job.phase()), v1::Phase_Name(v1::PHASE_PREPARED));
}

// An agent that serves one data stream at a time and waits one second for a
// stream's header: a peer that opens calls and says nothing holds neither
// threads nor the agent for long.
class TransferLimitsTest : public AgentTest {
 protected:
  void SetUp() override {
    destination_ = StartAgent(
        "destination", {"--emulated_devices=emu0", "--emulated_state_size=1MiB",
                        "--max_data_streams=1", "--phase_timeout_seconds=1"});
    ASSERT_NE(destination_, nullptr);
    ASSERT_OK_AND_ASSIGN(channel_, DialAsSource(*destination_));
  }

  void TearDown() override {
    channel_.reset();
    AgentTest::TearDown();
  }

  struct RawCall {
    grpc::ClientContext context;
    std::unique_ptr<
        grpc::ClientReaderWriter<grpc::ByteBuffer, v1::TransferResponse>>
        stream;
  };
  // A call of `method` (TransferData unless told) that sends nothing.
  std::unique_ptr<RawCall> OpenSilent(
      const char* name = transfer::kTransferDataMethod) {
    auto call = std::make_unique<RawCall>();
    grpc::internal::RpcMethod method(
        name, grpc::internal::RpcMethod::BIDI_STREAMING, channel_);
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    call->stream.reset(
        grpc::internal::ClientReaderWriterFactory<
            grpc::ByteBuffer, v1::TransferResponse>::Create(channel_.get(),
                                                            method,
                                                            &call->context));
    return call;
  }

  std::shared_ptr<grpc::Channel> channel_;
};

TEST_F(TransferLimitsTest, DataStreamWithoutAHeaderIsEndedAtTheIdleTimeout) {
  std::unique_ptr<RawCall> call = OpenSilent();
  const absl::Time start = absl::Now();
  const grpc::Status status = call->stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << status.error_message();
  EXPECT_TRUE(
      absl::StrContains(status.error_message(), "no session header within 1s"))
      << status.error_message();
  // Ended by the agent, well before the call's own deadline.
  EXPECT_LT(absl::Now() - start, kRpcTimeout);
}

// The control stream is a sync call, which the agent can only cancel.
TEST_F(TransferLimitsTest, ControlStreamWithoutAHeaderIsCancelled) {
  std::unique_ptr<RawCall> call = OpenSilent(transfer::kTransferMethod);
  const absl::Time start = absl::Now();
  const grpc::Status status = call->stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED)
      << status.error_message();
  EXPECT_LT(absl::Now() - start, kRpcTimeout);
}

TEST_F(TransferLimitsTest, DataStreamsBeyondTheCapAreRefused) {
  // The first is served (and waits for its header); the second arrives on
  // the same connection after it and finds the one place taken.
  std::unique_ptr<RawCall> first = OpenSilent();
  std::unique_ptr<RawCall> second = OpenSilent();
  const grpc::Status refused = second->stream->Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "already serving 1"))
      << refused.error_message();
  // The first one ends at its header deadline; then a stream is served
  // again (and ends the same way, not refused).
  EXPECT_EQ(first->stream->Finish().error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
  std::unique_ptr<RawCall> third = OpenSilent();
  const grpc::Status served = third->stream->Finish();
  EXPECT_EQ(served.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED)
      << served.error_message();
}

}  // namespace
}  // namespace migd::e2e
