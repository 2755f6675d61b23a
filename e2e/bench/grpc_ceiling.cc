// grpc_ceiling: the loopback gRPC ceiling the transfer benchmark compares
// migd with, next to tcp_ceiling. It separates what gRPC itself costs on the
// machine from what migd adds: the same transport migd uses, configured the
// same way, with nothing on either end.
//
// A sender process moves --bytes over 127.0.0.1 to a receiver process on
// --connections gRPC channels (each its own connection, MakeTransferChannel as
// migd builds it), one bidi-streaming call per channel, one thread per call on
// each side, the bytes split evenly. As migd served its data streams before
// they moved to the data channel, the method is registered raw, served on
// the async API with a thread per call
// (transfer::ThreadedCalls), and each message is a grpc::ByteBuffer: a 16-byte
// header slice plus a --message_bytes (1 MiB) slice of one page-aligned buffer,
// lent to gRPC without a copy. The receiver reads each message and drops it,
// then answers with the byte count it got. The sender connects every channel
// first, then times from starting the calls to the last call's status; each
// side measures its own CPU over that span (getrusage, all threads, gRPC's
// own included). Both processes use migd's heap settings
// (base::TuneAllocatorForBulkTransfer).
//
// Plaintext by default. With --tls_dir=DIR (a PKI minted by tools/pki) the
// channels carry mutual TLS as migd's data streams do: the receiver serves
// with DIR/agent-b's certificate and the agent's per-call check
// (security::Authorizer with DIR/ca.pem and DIR/policy.conf), the sender dials
// with DIR/agent-a's, both built by migd's security::Credentials. Prints one
// JSON object:
//
//   {"bytes":N,"connections":C,"message_bytes":K,"wall_s":S,"gbps":G,
//    "sender":{"user_s":U,"sys_s":Y,"cpu_s_per_gib":X},
//    "receiver":{"user_s":U,"sys_s":Y,"cpu_s_per_gib":X}}
//
// gbps is 1e9 bytes of payload per second. Usage:
//   grpc_ceiling --bytes=4GiB [--connections=1] [--message_bytes=1MiB]
//                [--tls_dir=DIR]

#include <sys/prctl.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "e2e/bench/ceiling_common.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/impl/rpc_service_method.h"
#include "grpcpp/support/sync_stream.h"
#include "migd/base/alloc_tuning.h"
#include "migd/security/authorizer.h"
#include "migd/security/credentials.h"
#include "migd/transfer/threaded_calls.h"
#include "migd/transfer/transfer_client.h"

namespace migd::bench {
namespace {

// Served under the name of migd's data streams: with --tls_dir the agent's
// policy lets an agent's certificate (role agent) call it, as it lets a
// source agent call the destination's.
// The control stream's name, which the agents' policy lets an agent call:
// the per-call check is part of what gRPC costs here.
constexpr char kMethod[] = "/migd.v1.TransferService/Transfer";
constexpr size_t kHeaderBytes = 16;  // stands in for a chunk's header
constexpr size_t kPageBytes = 4096;

constexpr Tool kTool = {
    .name = "grpc_ceiling",
    .write_flag = "message_bytes",
    // The largest payload that fits migd's message limit with its header.
    .max_write_bytes = security::kMaxTransferMessageBytes - kHeaderBytes,
    .text_flag = "tls_dir"};

// What the two sides are with --tls_dir: tools/pki's two agents.
constexpr char kReceiverCert[] = "agent-b";
constexpr char kSenderCert[] = "agent-a";
// The agent's default --tls_reload_seconds; nothing rotates during a run.
constexpr absl::Duration kReloadInterval = absl::Seconds(60);

// Plaintext without --tls_dir; else mutual TLS with `cert` (NAME.pem and
// NAME.key) and ca.pem from that directory. Call it after the fork: it
// starts gRPC's certificate watcher.
std::shared_ptr<security::Credentials> SideCredentials(
    const Options& o, const std::string& cert) {
  if (o.text.empty()) return security::Credentials::Insecure();
  const std::string base = o.text + "/" + cert;
  absl::StatusOr<std::shared_ptr<security::Credentials>> credentials =
      security::Credentials::Tls(
          {base + ".pem", base + ".key", o.text + "/ca.pem"}, kReloadInterval);
  if (!credentials.ok()) {
    Die("--tls_dir " + o.text + ": " +
        std::string(credentials.status().message()));
  }
  return *std::move(credentials);
}

// The receiver's server credentials: plaintext, or TLS with the agent's
// per-call check of the client's certificate against ca.pem and policy.conf.
std::shared_ptr<grpc::ServerCredentials> ServerCredentials(
    const Options& o, const security::Credentials& credentials) {
  if (credentials.insecure()) return credentials.ServerCredentials(nullptr);
  absl::StatusOr<std::shared_ptr<security::Authorizer>> authorizer =
      security::Authorizer::Load(o.text + "/ca.pem", o.text + "/policy.conf");
  if (!authorizer.ok()) {
    Die("--tls_dir " + o.text + ": " +
        std::string(authorizer.status().message()));
  }
  return credentials.ServerCredentials(*std::move(authorizer));
}

grpc::ByteBuffer CountMessage(uint64_t n) {
  grpc::Slice s(&n, sizeof n);
  return grpc::ByteBuffer(&s, 1);
}

// The inverse of CountMessage; false unless `message` is 8 bytes.
bool ReadCount(const grpc::ByteBuffer& message, uint64_t* n) {
  std::vector<grpc::Slice> slices;
  if (message.Length() != sizeof *n || !message.Dump(&slices).ok()) {
    return false;
  }
  char* p = reinterpret_cast<char*>(n);
  for (const grpc::Slice& s : slices) {
    std::memcpy(p, s.begin(), s.size());
    p += s.size();
  }
  return true;
}

// The receiving end: a raw bidi-streaming method served as migd served its
// data streams before they moved to the data channel (async API, a thread
// per call with its own completion queue: transfer::ThreadedCalls), that
// counts what arrives and drops it.
class Sink final : public grpc::Service {
 public:
  explicit Sink(int calls) : calls_left_(calls) {
    AddMethod(new grpc::internal::RpcServiceMethod(
        kMethod, grpc::internal::RpcMethod::BIDI_STREAMING, nullptr));
    MarkMethodRaw(0);
  }

  void Request(transfer::ServerStream* stream,
               grpc::ServerCompletionQueue* queue, void* tag) {
    RequestAsyncBidiStreaming(0, stream->context(), stream->raw(),
                              stream->queue(), queue, tag);
  }

  void Serve(transfer::ServerStream& stream) {
    uint64_t got = 0;
    grpc::ByteBuffer message;
    while (stream.Read(&message)) {
      got += message.Length();
      message.Clear();  // gRPC's read buffers go back now, as in migd
    }
    stream.Write(CountMessage(got));
    stream.Finish(grpc::Status::OK);
    {
      std::lock_guard<std::mutex> lock(mu_);
      --calls_left_;
    }
    done_.notify_all();
  }

  // Returns once `calls` calls have read everything and answered.
  void AwaitCalls() {
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [this] { return calls_left_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable done_;
  int calls_left_;
};

// The receiver process: serves on 127.0.0.1:0, writes the port to `port_fd`,
// and once every call is done reports its CPU time to `report_fd`.
int Receive(const Options& o, int port_fd, int report_fd) {
  Sink sink(o.connections);
  // Outlives the server: it holds the certificate watcher.
  const std::shared_ptr<security::Credentials> credentials =
      SideCredentials(o, kReceiverCert);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", ServerCredentials(o, *credentials),
                           &port);
  builder.RegisterService(&sink);
  // The server arguments of the agent (Agent::Start).
  security::ApplyBulkServerArguments(builder);
  transfer::ThreadedCalls calls(
      builder.AddCompletionQueue(),
      [&sink](transfer::ServerStream* stream,
              grpc::ServerCompletionQueue* queue,
              void* tag) { sink.Request(stream, queue, tag); },
      [&sink](transfer::ServerStream& stream) { sink.Serve(stream); },
      static_cast<size_t>(o.connections));
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) Die("receiver: cannot serve");
  calls.Start();
  const std::string line = std::to_string(port) + "\n";
  if (!WriteAll(port_fd, line.data(), line.size())) {
    DieErrno("receiver: port");
  }
  close(port_fd);

  const Cpu c0 = CpuNow();
  sink.AwaitCalls();
  const Cpu c1 = CpuNow();
  // Lets the calls' statuses reach the sender before the process goes.
  server->Shutdown();
  calls.Shutdown();
  ReportCpu(report_fd, c1 - c0);
  return 0;
}

using Buffer = std::unique_ptr<char, decltype(&std::free)>;

// What the sender lends to every message as a static slice: no copy and no
// refcount, the cheapest a sender can hand gRPC its bytes. Page-aligned, like
// migd's pooled buffers.
Buffer SourceBuffer(size_t bytes) {
  const size_t alloc = (bytes + kPageBytes - 1) / kPageBytes * kPageBytes;
  Buffer src(static_cast<char*>(std::aligned_alloc(kPageBytes, alloc)),
             &std::free);
  if (src == nullptr) Die("sender: out of memory");
  FillIncompressible(src.get(), alloc);
  return src;
}

// One channel per connection, built as migd builds its transfer channels, each
// connected before the clock starts: migd's transfer time, too, starts at its
// first chunk, after its streams are up.
// With TLS the receiver's certificate must match the address (its IP SAN
// 127.0.0.1), as a destination's must when no identity is named.
std::vector<std::shared_ptr<grpc::Channel>> Connect(
    const Options& o, const security::Credentials& credentials,
    const std::string& address) {
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  for (int i = 0; i < o.connections; ++i) {
    channels.push_back(
        credentials.Dial(address, "", security::ChannelUse::kBulk));
    if (!channels.back()->WaitForConnected(std::chrono::system_clock::now() +
                                           std::chrono::seconds(30))) {
      Die("sender: cannot connect to " + address);
    }
  }
  return channels;
}

void Send(const Options& o,
          const std::vector<std::shared_ptr<grpc::Channel>>& channels,
          const char* src) {
  std::vector<std::thread> threads;
  for (int i = 0; i < o.connections; ++i) {
    threads.emplace_back([&o, &channels, src, i] {
      const std::shared_ptr<grpc::Channel>& channel = channels[i];
      const grpc::internal::RpcMethod method(
          kMethod, grpc::internal::RpcMethod::BIDI_STREAMING, channel);
      grpc::ClientContext context;
      std::unique_ptr<
          grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>>
          stream(grpc::internal::ClientReaderWriterFactory<
                 grpc::ByteBuffer, grpc::ByteBuffer>::Create(channel.get(),
                                                             method, &context));
      const uint64_t share = Share(o, i);
      uint64_t sequence = 0;
      uint64_t payload = 0;
      for (uint64_t left = share; left > 0; ++sequence) {
        const size_t n =
            left < o.write_bytes ? static_cast<size_t>(left) : o.write_bytes;
        const uint64_t header[2] = {sequence, share - left};
        static_assert(sizeof header == kHeaderBytes);
        grpc::Slice parts[2] = {grpc::Slice(header, sizeof header),
                                grpc::Slice(src, n, grpc::Slice::STATIC_SLICE)};
        if (!stream->Write(grpc::ByteBuffer(parts, 2))) break;
        left -= n;
        payload += n;
      }
      stream->WritesDone();
      grpc::ByteBuffer answer;
      const bool answered = stream->Read(&answer);
      const grpc::Status status = stream->Finish();
      if (!status.ok()) {
        Die("sender: call " + std::to_string(i) + ": " +
            status.error_message());
      }
      uint64_t got = 0;
      if (!answered || !ReadCount(answer, &got)) {
        Die("sender: call " + std::to_string(i) + ": no byte count");
      }
      const uint64_t sent = payload + sequence * kHeaderBytes;
      if (payload != share || got != sent) {
        Die("receiver got " + std::to_string(got) + " of " +
            std::to_string(sent) + " bytes on call " + std::to_string(i));
      }
    });
  }
  for (auto& t : threads) t.join();
}

int Main(int argc, char** argv) {
  const Options o = ParseOptions(kTool, argc, argv);
  // The heap settings of migd itself: without them gRPC's receive buffers
  // fault back in for every message and the ceiling would be migd's floor.
  base::TuneAllocatorForBulkTransfer();

  int port_pipe[2];
  if (pipe(port_pipe) != 0) DieErrno("pipe");
  // Fork before either side touches gRPC: each process starts its own.
  const Receiver receiver = ForkReceiver([&](int report_fd) {
    // A sender that died leaves no one to end the calls.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(port_pipe[0]);
    return Receive(o, port_pipe[1], report_fd);
  });
  close(port_pipe[1]);

  char line[128];
  ReadToEnd(port_pipe[0], line, sizeof line);
  close(port_pipe[0]);
  const int port = std::atoi(line);
  if (port <= 0) Die("receiver did not start");

  const Buffer src = SourceBuffer(o.write_bytes);
  const std::shared_ptr<security::Credentials> credentials =
      SideCredentials(o, kSenderCert);
  const std::vector<std::shared_ptr<grpc::Channel>> channels =
      Connect(o, *credentials, "127.0.0.1:" + std::to_string(port));
  MeasureSend(kTool, o, receiver, [&] { Send(o, channels, src.get()); });
  return 0;
}

}  // namespace
}  // namespace migd::bench

int main(int argc, char** argv) { return migd::bench::Main(argc, argv); }
