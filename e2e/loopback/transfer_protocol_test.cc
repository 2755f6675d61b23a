// e2e/loopback/transfer_protocol_test.cc
//
// Loopback tier for the destination's side of the transfer protocol: a real
// destination agent on 127.0.0.1 driven by a hand-made source (no source
// agent), so that a test can send what a source agent never would. The
// hand-made source opens the control stream with TransferClient and its data
// streams as connections of the destination's data channel
// (SessionAccepted.data_port), writing the frames itself: a data stream that
// stops without its STREAM_END, a STREAM_END that miscounts, a chunk whose
// CRC32C is wrong or that is larger than its stream's max_chunk_bytes, a
// control header on the data channel, a data header of another protocol
// version or from another identity than the job's token is bound to, a
// client without a certificate or with one of another CA. Each must fail
// with the reason the source reads back (the answer to the stream's header,
// or the stream's verdict), and a failed destination job must leave its
// device reset and free. A destination that gives up on a session (a failed
// stream, a silent source) tells the source why on the control stream before
// it cancels the call. Also the agent's limits on data connections: one that
// never sends its header is dropped, and those beyond the cap are refused.
//
// The destination serves mutual TLS on both its gRPC port and its data
// channel; the hand-made source calls with an agent certificate of the run
// PKI (kSourceName), to which the tests bind their transfer tokens. The
// destination's data channel listens on a port the test picks
// (--data_listen), so that a test may reach it without a control stream.

#include <openssl/ssl.h>
#include <sys/uio.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/run_pki.h"
#include "e2e/testing/status_macros.h"
#include "google/protobuf/message_lite.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/support/sync_stream.h"
#include "gtest/gtest.h"
#include "migd/base/crc32c.h"
#include "migd/base/reason.h"
#include "migd/base/watchdog.h"
#include "migd/metrics/http_test_util.h"
#include "migd/security/credentials.h"
#include "migd/security/testing/test_pki.h"
#include "migd/security/tls_context.h"
#include "migd/security/tls_files.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/data_connection.h"
#include "migd/transfer/data_frame.h"
#include "migd/transfer/transfer_client.h"
#include "proto/migd/v1/migration.grpc.pb.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

// Fails the test, naming the expression and its status, unless `expr` (an
// absl::Status) is OK.
#define ASSERT_STATUS_OK(expr)                                   \
  do {                                                           \
    const absl::Status status_ok_ = (expr);                      \
    ASSERT_TRUE(status_ok_.ok()) << #expr << ": " << status_ok_; \
  } while (false)

namespace migd::e2e {
namespace {

using ::migd::security::testing::TestPki;
using ::migd::transfer::DataConnection;
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
// Another harness agent, which the policy trusts as much, but to which no
// job's token is bound.
constexpr char kOtherAgentName[] = "agent-d";

// The max_chunk_bytes the data streams' headers announce.
constexpr uint32_t kChunkBytes = 64 << 10;

// The magic that starts every emulated device's stream, which the device
// takes as the first bytes: a good first chunk.
constexpr absl::string_view kMagic = "MIGDEMU1";

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

// The client TLS context of `name` of the run PKI, as a source agent makes
// one for its data streams.
absl::StatusOr<security::SslCtxPtr> ClientContextOf(const std::string& name) {
  absl::StatusOr<RunPki*> pki = RunPki::Get();
  if (!pki.ok()) return pki.status();
  absl::StatusOr<security::TlsFiles> files = (*pki)->Files(name);
  if (!files.ok()) return files.status();
  return security::NewTlsContext(*files, security::TlsSide::kClient);
}

// A data channel connection to 127.0.0.1:`port` with `tls`, expecting the
// destination's `identity`, as the source opens one.
absl::StatusOr<std::unique_ptr<DataConnection>> DialData(
    uint16_t port, SSL_CTX* tls, const std::string& identity) {
  return DataConnection::Dial("127.0.0.1", port, tls, identity, kRpcTimeout,
                              kRpcTimeout);
}

// Names, so that a mismatch prints "ERROR_REASON_..." rather than a number.
std::string ReasonName(v1::ErrorReason reason) {
  return v1::ErrorReason_Name(reason);
}
std::string ReasonName(const absl::Status& status) {
  return ReasonName(base::ReasonOf(status));
}

// Reads one length-prefixed message from `conn`. A destination that does not
// answer within `timeout` fails the test instead of hanging it: the
// connection is shut down then, and the answer is kDeadlineExceeded, which a
// closed or failed connection never gives.
absl::Status ReadWithin(DataConnection& conn,
                        google::protobuf::MessageLite* message,
                        absl::Duration timeout = kRpcTimeout) {
  bool expired = false;
  absl::Status read;
  {
    base::Watchdog watch(timeout, [&expired, &conn] {
      expired = true;
      conn.Shutdown();
    });
    read = transfer::ReadMessage(conn, message);
  }
  if (!read.ok() && expired) {
    return absl::DeadlineExceededError(
        absl::StrCat("the test gave up waiting ", absl::FormatDuration(timeout),
                     " for the destination's message"));
  }
  return read;
}

// Sends a data stream's header and returns the destination's answer to it.
absl::StatusOr<v1::TransferResponse> Present(DataConnection& conn,
                                             const v1::SessionHeader& header) {
  if (absl::Status s = transfer::WriteMessage(conn, header); !s.ok()) {
    return base::Annotate(s, "sending the header");
  }
  v1::TransferResponse answer;
  if (absl::Status s = ReadWithin(conn, &answer); !s.ok()) {
    return base::Annotate(s, "reading the answer to the header");
  }
  return answer;
}

// The answer refuses the stream (TransferResponse.aborted) with `code`,
// `reason` and a message containing `says`.
void ExpectRefused(const v1::TransferResponse& answer, absl::StatusCode code,
                   v1::ErrorReason reason, absl::string_view says) {
  ASSERT_TRUE(answer.has_aborted()) << answer.ShortDebugString();
  const absl::Status refused = transfer::StatusFromMessage(answer.aborted());
  EXPECT_EQ(refused.code(), code) << refused;
  EXPECT_EQ(ReasonName(refused), ReasonName(reason)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), says)) << refused;
}

// The header of a chunk of device 0 carrying `data`, with the CRC32C the
// destination checks; SendChunk writes its frame, then `data`.
transfer::ChunkHeader ChunkOf(uint64_t sequence, uint64_t offset,
                              absl::string_view data) {
  transfer::ChunkHeader header;
  header.device = 0;
  header.sequence = sequence;
  header.offset = offset;
  header.crc32c = base::Crc32c(data.data(), data.size());
  return header;
}
absl::Status SendChunk(DataConnection& conn,
                       const transfer::ChunkHeader& header,
                       absl::string_view data) {
  const transfer::FrameBytes frame =
      transfer::EncodeChunkFrame(header, static_cast<uint32_t>(data.size()));
  const iovec parts[2] = {
      {const_cast<uint8_t*>(frame.data()), frame.size()},
      {const_cast<char*>(data.data()), data.size()},
  };
  return conn.WriteAll(parts);
}

// A frame alone (a STREAM_END, or a chunk's frame without its payload).
absl::Status SendFrame(DataConnection& conn,
                       const transfer::FrameBytes& frame) {
  const iovec part = {const_cast<uint8_t*>(frame.data()), frame.size()};
  return conn.WriteAll(absl::MakeConstSpan(&part, 1));
}

// The destination's verdict on a data stream (a SessionAborted, code 0 for
// OK) as a status; kInternal, saying so, when none could be read.
absl::Status Verdict(DataConnection& conn) {
  v1::SessionAborted verdict;
  if (absl::Status s = ReadWithin(conn, &verdict); !s.ok()) {
    return absl::InternalError(
        absl::StrCat("no verdict: ", base::StatusText(s)));
  }
  return transfer::StatusFromMessage(verdict);
}

// Waits up to `timeout` for a line of `agent`'s log that contains every one
// of `fragments`.
bool LogSays(const AgentProcess& agent,
             const std::vector<std::string>& fragments,
             absl::Duration timeout = absl::Seconds(10)) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    std::ifstream in(agent.log_path());
    for (std::string line; std::getline(in, line);) {
      bool all = true;
      for (const std::string& f : fragments) {
        all = all && absl::StrContains(line, f);
      }
      if (all) return true;
    }
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

// The destination's --data_listen flag for a port picked now.
std::string DataListenFlag(uint16_t port) {
  return absl::StrCat("--data_listen=127.0.0.1:", port);
}

class TransferProtocolTest : public AgentTest {
 protected:
  void SetUp() override {
    data_port_ = static_cast<uint16_t>(metrics::testing::FreePort());
    ASSERT_NE(data_port_, 0) << "no free loopback port";
    std::vector<std::string> args = {
        "--emulated_devices=emu0", "--emulated_state_size=1MiB",
        "--emulated_seed=2", DataListenFlag(data_port_)};
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
    request.set_source_identity(TestPki::AgentIdentity(kSourceName));
    CallResult r =
        CallPrepareIncoming(destination_->stub(), request, &prepared_);
    ASSERT_TRUE(r.status.ok()) << DescribeCall(r);
    ASSERT_FALSE(prepared_.transfer_token().empty());
  }

  const std::string& job_id() const { return prepared_.migration().job_id(); }

  // The header of stream `index` of a session with one data stream, for the
  // prepared job. The control stream's (index 0) lists the devices the way
  // the destination's Attach matches them against what it prepared; a data
  // stream's names the largest chunk it carries.
  v1::SessionHeader Header(uint32_t index) const {
    v1::SessionHeader header;
    header.set_job_id(job_id());
    header.set_transfer_token(prepared_.transfer_token());
    header.set_protocol_version(v1::PROTOCOL_VERSION_2);
    header.set_stream_index(index);
    header.set_num_streams(1);
    if (index != 0) {
      header.set_max_chunk_bytes(kChunkBytes);
      return header;
    }
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

  // Opens the control stream of the prepared job, which names the data
  // channel's port.
  void OpenControl() {
    ASSERT_OK_AND_ASSIGN(
        control_, TransferClient::Open(channel_, Header(0), kRpcTimeout));
    ASSERT_EQ(control_->data_port(), data_port_)
        << "SessionAccepted.data_port is not the data channel's";
  }

  // A data channel connection to the port the control stream named, with
  // `name`'s certificate, expecting the destination's identity.
  absl::StatusOr<std::unique_ptr<DataConnection>> DialDataAs(
      const std::string& name) {
    absl::StatusOr<security::SslCtxPtr> tls = ClientContextOf(name);
    if (!tls.ok()) return tls.status();
    return DialData(static_cast<uint16_t>(control_->data_port()), tls->get(),
                    destination_->identity());
  }

  // Opens data stream 1 of the attached session as the source does and
  // checks that the destination accepts it.
  void OpenData() {
    ASSERT_OK_AND_ASSIGN(data_, DialDataAs(kSourceName));
    EXPECT_EQ(data_->peer_identity(), destination_->identity());
    ASSERT_OK_AND_ASSIGN(v1::TransferResponse answer,
                         Present(*data_, Header(1)));
    ASSERT_TRUE(answer.has_accepted()) << answer.ShortDebugString();
    EXPECT_EQ(v1::ProtocolVersion_Name(answer.accepted().protocol_version()),
              v1::ProtocolVersion_Name(v1::PROTOCOL_VERSION_2));
  }

  // Opens the control stream and data stream 1 of the prepared job.
  void OpenSession() {
    ASSERT_NO_FATAL_FAILURE(OpenControl());
    ASSERT_NO_FATAL_FAILURE(OpenData());
  }

  // The prepared job as the destination reports it now.
  void ExpectJob(v1::Phase phase, uint64_t bytes_done) {
    ASSERT_OK_AND_ASSIGN(Migration job,
                         GetMigration(destination_->stub(), job_id()));
    EXPECT_EQ(v1::Phase_Name(job.phase()), v1::Phase_Name(phase))
        << job.ShortDebugString();
    EXPECT_EQ(job.bytes_done(), bytes_done) << job.ShortDebugString();
  }

  // Data stream 1 of the attached session, opened as the source does it,
  // carries one good chunk and its STREAM_END: the destination takes it
  // (verdict OK), the chunk reached the device, and the job goes on.
  void ExpectDataStreamServed() {
    ASSERT_NO_FATAL_FAILURE(OpenData());
    ASSERT_STATUS_OK(SendChunk(*data_, ChunkOf(0, 0, kMagic), kMagic));
    ASSERT_STATUS_OK(
        SendFrame(*data_, transfer::EncodeStreamEndFrame(1, kMagic.size())));
    const absl::Status verdict = Verdict(*data_);
    EXPECT_TRUE(verdict.ok()) << verdict;
    ExpectJob(v1::PHASE_PRE_COPY, kMagic.size());
  }

  // A data connection made with `tls` (to the data channel's port; no
  // control stream is attached) gets no stream: its TLS handshake fails, and
  // the agent logs why (`says`). The prepared job is untouched, and the
  // agent serves the real source's session right after.
  void ExpectHandshakeRefused(SSL_CTX* tls, absl::string_view says) {
    const absl::Status refused = [&]() -> absl::Status {
      absl::StatusOr<std::unique_ptr<DataConnection>> conn =
          DialData(data_port_, tls, destination_->identity());
      if (!conn.ok()) return conn.status();
      absl::StatusOr<v1::TransferResponse> answer = Present(**conn, Header(1));
      if (!answer.ok()) return answer.status();
      return absl::InternalError(absl::StrCat(
          "the destination answered the header: ", answer->ShortDebugString()));
    }();
    // In TLS 1.3 the client's side of the handshake is over before the
    // server checks the client's certificate: the client may only learn of
    // the refusal (the agent's alert, or a reset) when it next writes or
    // reads.
    EXPECT_TRUE(refused.code() == absl::StatusCode::kUnauthenticated ||
                refused.code() == absl::StatusCode::kUnavailable)
        << refused;
    EXPECT_TRUE(
        LogSays(*destination_, {"data channel: dropped a connection",
                                "TLS handshake failed", std::string(says)}))
        << destination_->LogTail();
    ExpectJob(v1::PHASE_PREPARED, 0);
    ASSERT_NO_FATAL_FAILURE(OpenControl());
    ExpectDataStreamServed();
  }

  // The destination job ended PHASE_FAILED with `reason` and a message
  // containing `says`, and its device was reset: RUNNING and free.
  void ExpectDestinationFailed(v1::ErrorReason reason, absl::string_view says) {
    ASSERT_OK_AND_ASSIGN(
        Migration end,
        WaitForEnd(destination_->stub(), job_id(), absl::Now() + kJobTimeout));
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

  uint16_t data_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  v1::PrepareIncomingResponse prepared_;
  std::unique_ptr<TransferClient> control_;
  std::unique_ptr<DataConnection> data_;
};

// A closed connection is all the destination sees of a source that gave up
// or of a connection that broke under it; only STREAM_END says the stream is
// whole.
TEST_F(TransferProtocolTest,
       DataStreamClosedWithoutStreamEndFailsTheDestinationAsADrop) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-no-stream-end"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  // A good chunk, so the stream is not empty.
  ASSERT_STATUS_OK(SendChunk(*data_, ChunkOf(0, 0, kMagic), kMagic));

  data_->CloseWrite();  // no STREAM_END before it
  const absl::Status verdict = Verdict(*data_);
  EXPECT_EQ(verdict.code(), absl::StatusCode::kUnavailable) << verdict;
  EXPECT_EQ(ReasonName(verdict), ReasonName(v1::ERROR_REASON_PEER_UNAVAILABLE))
      << verdict;
  EXPECT_TRUE(absl::StrContains(
      verdict.message(),
      "data stream 1: ended after 1 chunks without its STREAM_END"))
      << verdict;
  ExpectDestinationFailed(v1::ERROR_REASON_PEER_UNAVAILABLE,
                          "without its STREAM_END");
}

TEST_F(TransferProtocolTest,
       StreamEndThatMiscountsFailsTheDestinationAsCorrupted) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-miscounted-stream-end"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  // The chunk count is right, the byte count is not: the stream carried 8
  // bytes, the STREAM_END claims 4096.
  ASSERT_STATUS_OK(SendChunk(*data_, ChunkOf(0, 0, kMagic), kMagic));
  ASSERT_STATUS_OK(SendFrame(*data_, transfer::EncodeStreamEndFrame(1, 4096)));

  const absl::Status verdict = Verdict(*data_);
  EXPECT_EQ(verdict.code(), absl::StatusCode::kDataLoss) << verdict;
  EXPECT_EQ(ReasonName(verdict), ReasonName(v1::ERROR_REASON_STREAM_CORRUPTED))
      << verdict;
  EXPECT_TRUE(absl::StrContains(verdict.message(),
                                "STREAM_END counts 1 chunks of 4096 bytes, "
                                "the stream delivered 1 chunks of 8 bytes"))
      << verdict;
  ExpectDestinationFailed(v1::ERROR_REASON_STREAM_CORRUPTED, "STREAM_END");
}

// The other streams of a session are cancelled when one fails; the control
// stream says why first, so a source that sees the cancel there (or on
// another data stream) still reports the failing stream's cause.
TEST_F(TransferProtocolTest, AFailedDataStreamsCauseReachesTheControlStream) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-cause-on-control"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  ASSERT_STATUS_OK(SendChunk(*data_, ChunkOf(0, 0, kMagic), kMagic));
  ASSERT_STATUS_OK(
      SendFrame(*data_, transfer::EncodeStreamEndFrame(1, 4096)));  // 8 sent
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
  // And the data stream's own verdict says the same.
  const absl::Status verdict = Verdict(*data_);
  EXPECT_EQ(ReasonName(verdict), ReasonName(v1::ERROR_REASON_STREAM_CORRUPTED))
      << verdict;
  ExpectDestinationFailed(v1::ERROR_REASON_STREAM_CORRUPTED, "STREAM_END");
}

// A chunk whose bytes do not match its CRC32C never reaches the device.
TEST_F(TransferProtocolTest, ChunkWithABadCrcFailsTheDestinationAsCorrupted) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-bad-crc"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  transfer::ChunkHeader chunk = ChunkOf(0, 0, kMagic);
  chunk.crc32c ^= 1;  // one bit off
  ASSERT_STATUS_OK(SendChunk(*data_, chunk, kMagic));

  const absl::Status verdict = Verdict(*data_);
  EXPECT_EQ(verdict.code(), absl::StatusCode::kDataLoss) << verdict;
  EXPECT_EQ(ReasonName(verdict), ReasonName(v1::ERROR_REASON_STREAM_CORRUPTED))
      << verdict;
  EXPECT_TRUE(absl::StrContains(verdict.message(),
                                "data stream 1: chunk 0 of device 0"))
      << verdict;
  EXPECT_TRUE(absl::StrContains(verdict.message(),
                                absl::StrFormat("expected %08x", chunk.crc32c)))
      << verdict;
  ExpectDestinationFailed(v1::ERROR_REASON_STREAM_CORRUPTED, "CRC32C");
  ExpectJob(v1::PHASE_FAILED, 0);
}

// The destination sizes its receive buffers by the header's max_chunk_bytes:
// a frame announcing more is refused from the frame alone, before any of its
// payload is read (so the test sends none).
TEST_F(TransferProtocolTest, ChunkOverTheStreamsMaxChunkBytesIsAProtocolError) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-oversized-chunk"));
  ASSERT_NO_FATAL_FAILURE(OpenSession());
  transfer::ChunkHeader chunk;
  chunk.crc32c = 0x12345678;
  ASSERT_STATUS_OK(
      SendFrame(*data_, transfer::EncodeChunkFrame(chunk, kChunkBytes + 1)));

  const absl::Status verdict = Verdict(*data_);
  EXPECT_EQ(verdict.code(), absl::StatusCode::kInvalidArgument) << verdict;
  EXPECT_EQ(ReasonName(verdict), ReasonName(v1::ERROR_REASON_PROTOCOL_ERROR))
      << verdict;
  EXPECT_TRUE(absl::StrContains(
      verdict.message(),
      absl::StrCat("chunk 0 of ", kChunkBytes + 1, " bytes (1 to ", kChunkBytes,
                   ", the stream's max_chunk_bytes)")))
      << verdict;
  ExpectDestinationFailed(v1::ERROR_REASON_PROTOCOL_ERROR, "max_chunk_bytes");
  ExpectJob(v1::PHASE_FAILED, 0);
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
  EXPECT_EQ(response.accepted().data_port(), data_port_);

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

// The same session through TransferClient and a data connection, as a
// source agent runs it: the failure it reports is the destination's,
// TIMEOUT, not a cancel.
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

// The data channel carries data streams only. No control stream is
// attached: were the index not checked, the refusal would be NOT_PREPARED
// (no attached session) instead.
TEST_F(TransferProtocolTest, ControlHeaderOnTheDataChannelIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-control-on-data"));
  ASSERT_OK_AND_ASSIGN(security::SslCtxPtr tls, ClientContextOf(kSourceName));
  ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<DataConnection> conn,
      DialData(data_port_, tls.get(), destination_->identity()));
  ASSERT_OK_AND_ASSIGN(v1::TransferResponse answer, Present(*conn, Header(0)));
  ExpectRefused(answer, absl::StatusCode::kInvalidArgument,
                v1::ERROR_REASON_PROTOCOL_ERROR,
                "the control stream is the Transfer call");
  // A stray stream is refused without touching the job.
  ExpectJob(v1::PHASE_PREPARED, 0);
}

// The job's token is bound to the source's identity, and so is every stream
// of its session: another agent that learned the token (a trusted identity,
// even) gets no data stream, and loads nothing. The refusal changes nothing:
// the stream's index stays free for the source.
TEST_F(TransferProtocolTest, DataStreamFromAnotherIdentityIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-data-from-another-identity"));
  ASSERT_NO_FATAL_FAILURE(OpenControl());  // as kSourceName
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DataConnection> conn,
                       DialDataAs(kOtherAgentName));
  ASSERT_OK_AND_ASSIGN(v1::TransferResponse answer, Present(*conn, Header(1)));
  ExpectRefused(
      answer, absl::StatusCode::kPermissionDenied, v1::ERROR_REASON_BAD_TOKEN,
      absl::StrCat("the transfer token of job ", job_id(),
                   " is bound to source ", TestPki::AgentIdentity(kSourceName),
                   "; this session comes from ",
                   TestPki::AgentIdentity(kOtherAgentName)));
  // The destination closed the refused connection.
  v1::SessionAborted more;
  const absl::Status after = ReadWithin(*conn, &more);
  EXPECT_FALSE(after.ok()) << "a message after the refusal: "
                           << more.ShortDebugString();
  EXPECT_NE(after.code(), absl::StatusCode::kDeadlineExceeded) << after;
  conn.reset();

  ExpectJob(v1::PHASE_PRE_COPY, 0);
  ExpectDataStreamServed();
}

// The data channel is mutual TLS like the agent's gRPC port: a client that
// presents no certificate gets no stream, and the agent serves on.
TEST_F(TransferProtocolTest, DataChannelRefusesAClientWithoutACertificate) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-client-without-certificate"));
  ASSERT_OK_AND_ASSIGN(RunPki * pki, RunPki::Get());
  // Trusts the agent's CA (so the client gets past its own check of the
  // agent), presents nothing.
  security::SslCtxPtr tls(SSL_CTX_new(TLS_client_method()));
  ASSERT_NE(tls, nullptr);
  SSL_CTX_set_min_proto_version(tls.get(), TLS1_3_VERSION);
  ASSERT_EQ(
      SSL_CTX_load_verify_locations(tls.get(), pki->ca().c_str(), nullptr), 1)
      << security::TakeOpenSslErrors();
  SSL_CTX_set_verify(tls.get(), SSL_VERIFY_PEER, nullptr);
  ExpectHandshakeRefused(tls.get(), "peer did not return a certificate");
}

// Nor does one whose certificate another CA signed, though it names the
// job's source.
TEST_F(TransferProtocolTest, DataChannelRefusesACertificateFromAnotherCa) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-certificate-from-another-ca"));
  ASSERT_OK_AND_ASSIGN(RunPki * pki, RunPki::Get());
  ASSERT_OK_AND_ASSIGN(TestPki other, TestPki::Create("other-ca"));
  ASSERT_STATUS_OK(
      other
          .Issue(kSourceName, {"--uri=" + TestPki::AgentIdentity(kSourceName),
                               "--dns=localhost", "--ip=127.0.0.1"})
          .status());
  security::TlsFiles files = other.FilesFor(kSourceName);
  files.ca = pki->ca();  // trusts the agent
  ASSERT_OK_AND_ASSIGN(
      security::SslCtxPtr tls,
      security::NewTlsContext(files, security::TlsSide::kClient));
  ExpectHandshakeRefused(tls.get(), "unable to get local issuer certificate");
}

// A data stream speaks the session's protocol: a header of another version
// is refused, and, as every refused header, changes nothing.
TEST_F(TransferProtocolTest, DataHeaderOfAnotherProtocolVersionIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Prepare("job-data-header-version-1"));
  ASSERT_NO_FATAL_FAILURE(OpenControl());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DataConnection> conn,
                       DialDataAs(kSourceName));
  v1::SessionHeader header = Header(1);
  header.set_protocol_version(v1::PROTOCOL_VERSION_1);
  ASSERT_OK_AND_ASSIGN(v1::TransferResponse answer, Present(*conn, header));
  ExpectRefused(answer, absl::StatusCode::kInvalidArgument,
                v1::ERROR_REASON_PROTOCOL_ERROR,
                "transfer protocol version 1 is not supported");
  conn.reset();

  ExpectJob(v1::PHASE_PRE_COPY, 0);
  ExpectDataStreamServed();
}

// An agent that serves one data connection at a time and waits one second
// for a stream's header: a peer that connects and says nothing holds neither
// threads nor the agent for long.
class TransferLimitsTest : public AgentTest {
 protected:
  void SetUp() override {
    data_port_ = static_cast<uint16_t>(metrics::testing::FreePort());
    ASSERT_NE(data_port_, 0) << "no free loopback port";
    destination_ = StartAgent(
        "destination", {"--emulated_devices=emu0", "--emulated_state_size=1MiB",
                        "--max_data_streams=1", "--phase_timeout_seconds=1",
                        DataListenFlag(data_port_)});
    ASSERT_NE(destination_, nullptr);
    ASSERT_OK_AND_ASSIGN(channel_, DialAsSource(*destination_));
    ASSERT_OK_AND_ASSIGN(tls_, ClientContextOf(kSourceName));
  }

  void TearDown() override {
    channel_.reset();
    AgentTest::TearDown();
  }

  // A data channel connection as the source makes one.
  absl::StatusOr<std::unique_ptr<DataConnection>> Connect() {
    return DialData(data_port_, tls_.get(), destination_->identity());
  }

  // A data stream's header for a job this agent never prepared.
  static v1::SessionHeader StrayHeader() {
    v1::SessionHeader header;
    header.set_job_id("job-never-prepared");
    header.set_transfer_token("no-token");
    header.set_protocol_version(v1::PROTOCOL_VERSION_2);
    header.set_stream_index(1);
    header.set_num_streams(1);
    header.set_max_chunk_bytes(kChunkBytes);
    return header;
  }

  // A new connection presenting StrayHeader(): the status of the answer
  // (the refusal's, or OK for an acceptance), else why none came.
  absl::Status StrayAnswer() {
    absl::StatusOr<std::unique_ptr<DataConnection>> conn = Connect();
    if (!conn.ok()) return base::Annotate(conn.status(), "connecting");
    absl::StatusOr<v1::TransferResponse> answer =
        Present(**conn, StrayHeader());
    if (!answer.ok()) return answer.status();
    return answer->has_aborted()
               ? transfer::StatusFromMessage(answer->aborted())
               : absl::OkStatus();
  }

  // A Transfer (control stream) call that sends nothing.
  struct RawCall {
    grpc::ClientContext context;
    std::unique_ptr<
        grpc::ClientReaderWriter<grpc::ByteBuffer, v1::TransferResponse>>
        stream;
  };
  std::unique_ptr<RawCall> OpenSilentControl() {
    auto call = std::make_unique<RawCall>();
    grpc::internal::RpcMethod method(transfer::kTransferMethod,
                                     grpc::internal::RpcMethod::BIDI_STREAMING,
                                     channel_);
    call->context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    call->stream.reset(
        grpc::internal::ClientReaderWriterFactory<
            grpc::ByteBuffer, v1::TransferResponse>::Create(channel_.get(),
                                                            method,
                                                            &call->context));
    return call;
  }

  uint16_t data_port_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  security::SslCtxPtr tls_;
};

TEST_F(TransferLimitsTest,
       DataConnectionWithoutAHeaderIsDroppedAtTheIdleTimeout) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DataConnection> conn, Connect());
  const absl::Time start = absl::Now();
  v1::TransferResponse answer;
  const absl::Status read = ReadWithin(*conn, &answer);
  const absl::Duration waited = absl::Now() - start;
  EXPECT_FALSE(read.ok()) << "answered: " << answer.ShortDebugString();
  // Closed by the agent (not our own deadline), after waiting for the
  // header, and well before the test would give up.
  EXPECT_NE(read.code(), absl::StatusCode::kDeadlineExceeded) << read;
  EXPECT_GE(waited, absl::Milliseconds(500));
  EXPECT_LT(waited, kRpcTimeout);
  EXPECT_TRUE(LogSays(*destination_, {"dropped a data connection from",
                                      "no session header within 1s"}))
      << destination_->LogTail();
}

// The control stream is a sync call, which the agent can only cancel.
TEST_F(TransferLimitsTest, ControlStreamWithoutAHeaderIsCancelled) {
  std::unique_ptr<RawCall> call = OpenSilentControl();
  const absl::Time start = absl::Now();
  const grpc::Status status = call->stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED)
      << status.error_message();
  EXPECT_LT(absl::Now() - start, kRpcTimeout);
}

TEST_F(TransferLimitsTest, DataStreamsBeyondTheCapAreRefused) {
  // The first is served (and waits for its header); the second comes after
  // it and finds the one place taken. It still gets its header read and
  // answered, so its source learns why.
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DataConnection> first, Connect());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<DataConnection> second, Connect());
  ASSERT_OK_AND_ASSIGN(v1::TransferResponse answer,
                       Present(*second, StrayHeader()));
  ExpectRefused(answer, absl::StatusCode::kResourceExhausted,
                v1::ERROR_REASON_PEER_UNAVAILABLE,
                "the destination is already serving 1 data streams, its "
                "limit (--max_data_streams)");
  second.reset();

  // The first one is dropped at its header deadline.
  v1::TransferResponse none;
  const absl::Status dropped = ReadWithin(*first, &none);
  EXPECT_FALSE(dropped.ok()) << "answered: " << none.ShortDebugString();
  EXPECT_NE(dropped.code(), absl::StatusCode::kDeadlineExceeded) << dropped;
  first.reset();

  // Then a connection is served again: its header reaches the jobs, which
  // know no such job. The first's place is given back as its thread ends,
  // an instant after the agent closed it; a connection that comes in that
  // instant may still find it taken, so this one tries for a while.
  absl::Status third;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(10);;) {
    third = StrayAnswer();
    const bool not_yet = third.code() == absl::StatusCode::kResourceExhausted ||
                         third.code() == absl::StatusCode::kUnavailable ||
                         third.code() == absl::StatusCode::kUnauthenticated;
    if (!not_yet || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(third.code(), absl::StatusCode::kFailedPrecondition) << third;
  EXPECT_EQ(ReasonName(third), ReasonName(v1::ERROR_REASON_NOT_PREPARED))
      << third;
  EXPECT_TRUE(absl::StrContains(
      third.message(), "no incoming job job-never-prepared is prepared"))
      << third;
}

}  // namespace
}  // namespace migd::e2e
