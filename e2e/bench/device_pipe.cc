// device_pipe: the third ceiling of the transfer benchmark, the simplest
// correct program that does what migd does: move an emulated device's state
// from one process to another over 127.0.0.1, and prove the destination got
// it. tcp_ceiling moves bytes from nowhere to nowhere and grpc_ceiling moves
// them over gRPC; neither pays the devices' own costs (the save's copy out of
// the source device, the load's copy into the destination, the device's own
// stream checksum). The pipe pays exactly those and a socket, nothing else, so
// migd / pipe is what migd's own machinery costs.
//
// The sender (source) process creates the device the source agent creates for
// --emulated_devices=emu0 (same EmulatedDevice code, same config), moves it
// RUNNING -> STOP_COPY, and reads its stream in chunks of up to 1 MiB, each
// into a buffer of its connection's thread and out with one write (TLS: one
// SSL_write). The receiver (destination) process creates the destination
// agent's dst0, moves it to RESUMING before the clock starts (as bench.py
// prepares the destination before it migrates), receives each chunk into a
// 1 MiB buffer and writes it into the device's stream in stream order. Once
// every byte is in the device it answers each connection with one byte: the
// sender's clock stops there, as migd's transfer time ends at COMMIT (the
// destination then holds the whole stream). Then, off the clock, it moves the
// device RESUMING -> STOP, where the emulated device validates the stream
// (its END record: the content's CRC32C and size), and answers every
// connection with the device's StateDigest; the sender checks it against its
// own device's digest.
//
// Sockets: blocking, TCP_NODELAY on both ends (as gRPC and migd's data
// connections), nothing else tuned.
//
// Framing: every chunk has a 12-byte header, its stream offset (u64) and
// length (u32), host byte order (both ends are this host). A chunk of length
// 0 ends a connection (its offset: the stream's length). That is all the
// framing there is: no checksums (the device checks its stream), no sequence
// numbers (the offset orders the chunks), no acknowledgements but the two
// final answers.
//
// Connections (--connections=N): one thread per connection on each side. The
// device's stream is one serial byte stream, so on the source a thread takes
// a lock, reads the next chunk and notes its offset, unlocks and sends; on
// the destination a thread receives a chunk, then waits (condition variable)
// until every byte before its offset is in the device, writes it and wakes the
// others. N = 1 takes the same path, uncontended. This is the simplest form
// that is correct for any N: the lock pairs each chunk with its offset, the
// offset is the only ordering the destination needs, and the writes happen in
// stream order because the device's load is a parser that needs them in order.
// Within a connection nothing overlaps (a thread reads, then sends; receives,
// then writes), where migd overlaps its device copies with its transport: the
// price of the simplest form, and why migd can beat the pipe on one stream.
//
// Plaintext by default. With --tls_dir=DIR (a PKI minted by tools/pki, as
// grpc_ceiling takes it) every connection carries TLS 1.3 with OpenSSL
// directly, mutual: the receiver serves with DIR/agent-b's certificate and
// requires a client certificate, the sender presents DIR/agent-a's and checks
// that the receiver's is for 127.0.0.1, both against DIR/ca.pem; the cipher
// suite is --tls_ciphersuites (default TLS_AES_128_GCM_SHA256). Both sides
// ask OpenSSL for kernel TLS (SSL_OP_ENABLE_KTLS); whether it got it, per
// direction, is in the result, not required.
//
// Time runs from the first read of the source device's stream (every
// connection is up and both devices are in their states before) to the last
// connection's answer, so it includes the destination's RESUMING -> STOP. Each
// side measures its own CPU (getrusage, all threads): the sender over that
// span, the receiver from before it accepts the connections to after it
// answered. Prints one JSON object, tcp_ceiling's with the stream bytes as
// bytes, and more:
//
//   {"bytes":N,"connections":C,"chunk":1048576,"wall_s":S,"gbps":G,
//    "sender":{...},"receiver":{...},
//    "state_bytes":B,"tls":T,"cipher":"TLS_AES_128_GCM_SHA256",
//    "ktls":{"src_send":K,"src_recv":K,"dst_send":K,"dst_recv":K},
//    "digest_ok":true,"src_digest":"crc32c:...","dst_digest":"crc32c:..."}
//
// cipher is empty in plaintext; a ktls flag is true when every connection of
// that side has kernel TLS in that direction. When the digests differ it
// prints the result, then fails (status 2). Usage:
//   device_pipe --state_size=SIZE [--connections=N] [--seed_src=1]
//               [--seed_dst=2] [--tls_dir=DIR] [--tls_ciphersuites=LIST]

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "e2e/bench/ceiling_common.h"
#include "migd/base/unique_fd.h"
#include "migd/device/device.h"
#include "migd/device/emulated_device.h"
#include "migd/vfio/uapi.h"

namespace migd::bench {
namespace {

// "chunk" is only the result's key for the chunk size: the pipe has no flag
// for it (1 MiB, as the others' default) and parses its own command line.
constexpr Tool kTool = {.name = "device_pipe",
                        .write_flag = "chunk",
                        .max_write_bytes = size_t{1} << 20};

constexpr size_t kChunkBytes = size_t{1} << 20;
constexpr size_t kHeaderBytes = sizeof(uint64_t) + sizeof(uint32_t);
// The answer is "<digest> <ktls send> <ktls recv>": a few dozen bytes.
constexpr uint32_t kMaxAnswerBytes = 256;

// bench.py's agents: the source's device and the destination's.
constexpr char kSourceDevice[] = "emu0";
constexpr char kDestinationDevice[] = "dst0";
// What the two sides are with --tls_dir: tools/pki's two agents, as in
// grpc_ceiling (the receiver serves as the destination agent does).
constexpr char kReceiverCert[] = "agent-b";
constexpr char kSenderCert[] = "agent-a";
constexpr char kLoopback[] = "127.0.0.1";

struct PipeOptions {
  uint64_t state_size = 0;  // --state_size: required
  int connections = 1;      // --connections: 1..64
  uint64_t seed_src = 1;    // --seed_src: the source agent's --emulated_seed
  uint64_t seed_dst = 2;    // --seed_dst: the destination agent's
  std::string tls_dir;      // --tls_dir: empty for plaintext
  std::string ciphersuites = "TLS_AES_128_GCM_SHA256";  // --tls_ciphersuites
};

bool ParseU64(const std::string& text, uint64_t* out) {
  if (text.empty() || text[0] < '0' || text[0] > '9') return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

PipeOptions ParsePipeOptions(int argc, char** argv) {
  PipeOptions p;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    uint64_t n = 0;
    if (key == "--state_size" && ParseSize(value, &n) && n > 0) {
      p.state_size = n;
    } else if (key == "--connections" && ParseU64(value, &n) && n >= 1 &&
               n <= 64) {
      p.connections = static_cast<int>(n);
    } else if (key == "--seed_src" && ParseU64(value, &n)) {
      p.seed_src = n;
    } else if (key == "--seed_dst" && ParseU64(value, &n)) {
      p.seed_dst = n;
    } else if (key == "--tls_dir" && !value.empty()) {
      p.tls_dir = value;
    } else if (key == "--tls_ciphersuites" && !value.empty()) {
      p.ciphersuites = value;
    } else if (key == "--help" || key == "-h") {
      std::printf(
          "usage: %s --state_size=SIZE [--connections=N] [--seed_src=1] "
          "[--seed_dst=2] [--tls_dir=DIR] "
          "[--tls_ciphersuites=TLS_AES_128_GCM_SHA256]\n",
          kTool.name);
      std::exit(0);
    } else {
      Die("bad argument '" + arg +
          "' (expected --state_size=SIZE>0, --connections=1..64, "
          "--seed_src=N, --seed_dst=N, --tls_dir=DIR, "
          "--tls_ciphersuites=LIST)");
    }
  }
  if (p.state_size == 0) Die("--state_size=SIZE is required");
  return p;
}

// The config an agent gives the device of --emulated_devices=NAME
// --emulated_state_size=SIZE --emulated_seed=SEED. The agent's comes from
// server::EmulatedFromList (migd/server/emulated_backend.cc), whose seed
// mixes SEED with the name; migd/server is visible to migd's main only, so
// that one rule is repeated here. bench.py checks the copy on every run: this
// tool's source digest must be the source agent's emu0 digest. The device
// itself is migd/device's EmulatedDevice, the agent's code.
device::EmulatedDeviceConfig AgentDeviceConfig(const std::string& name,
                                               uint64_t state_size,
                                               uint64_t seed) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = state_size;
  // FNV-1a of the name, mixed with the seed (as EmulatedFromList).
  uint64_t h = 1469598103934665603ull;
  for (char ch : c.name) h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
  c.seed = seed * 0x9E3779B97F4A7C15ull ^ h;
  return c;
}

// Creates the device (generates its content); `side` names who failed.
std::unique_ptr<device::EmulatedDevice> CreateDevice(
    const char* side, device::EmulatedDeviceConfig config) {
  absl::StatusOr<std::unique_ptr<device::EmulatedDevice>> made =
      device::EmulatedDevice::Create(std::move(config));
  if (!made.ok()) {
    Die(std::string(side) + ": " + std::string(made.status().message()));
  }
  return *std::move(made);
}

// ---- Connections.

using SslCtx = std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>;
using Ssl = std::unique_ptr<SSL, decltype(&SSL_free)>;

// The calling thread's OpenSSL error queue, emptied, as text.
std::string OpenSslErrors() {
  std::string out;
  char line[256];
  while (const unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, line, sizeof line);
    if (!out.empty()) out += "; ";
    out += line;
  }
  return out.empty() ? "no OpenSSL error queued" : out;
}

// The TLS 1.3 context of one side; dies naming the file or setting OpenSSL
// refused.
SslCtx TlsContext(const PipeOptions& p, bool server) {
  const char* side = server ? "receiver" : "sender";
  const std::string base =
      p.tls_dir + "/" + (server ? kReceiverCert : kSenderCert);
  const std::string pem = base + ".pem";
  const std::string key = base + ".key";
  const std::string ca = p.tls_dir + "/ca.pem";
  SslCtx ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()),
             &SSL_CTX_free);
  const auto fail = [side](const std::string& what) {
    Die(std::string(side) + ": " + what + ": " + OpenSslErrors());
  };
  if (ctx == nullptr) fail("SSL_CTX_new");
  if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION) != 1) {
    fail("cannot limit TLS to 1.3");
  }
  if (SSL_CTX_set_ciphersuites(ctx.get(), p.ciphersuites.c_str()) != 1) {
    fail("--tls_ciphersuites=" + p.ciphersuites +
         ": not a list of TLS 1.3 cipher suites OpenSSL knows");
  }
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), pem.c_str()) != 1) {
    fail("certificate " + pem);
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) !=
      1) {
    fail("key " + key);
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    fail("key " + key + " does not match " + pem);
  }
  if (SSL_CTX_load_verify_locations(ctx.get(), ca.c_str(), nullptr) != 1) {
    fail("CA " + ca);
  }
  // Mutual: the receiver requires the sender's certificate.
  SSL_CTX_set_verify(
      ctx.get(),
      SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
      nullptr);
  // Kernel TLS would move the record layer's copies and crypto into the
  // kernel, which is what a data plane on OpenSSL could have; asked for, not
  // required (the kernel or the library may not have it): the result says
  // whether each direction got it.
  SSL_CTX_set_options(ctx.get(), SSL_OP_ENABLE_KTLS);
  // Nobody resumes a session: no tickets to send or to leave unread.
  if (server) SSL_CTX_set_num_tickets(ctx.get(), 0);
  return ctx;
}

// What went wrong with an SSL call on `ssl` that returned `ret`; `err` is
// errno right after the call.
std::string TlsError(SSL* ssl, int ret, int err) {
  switch (SSL_get_error(ssl, ret)) {
    case SSL_ERROR_ZERO_RETURN:
      return "the peer closed the TLS connection";
    case SSL_ERROR_SYSCALL:
      if (err != 0) return std::strerror(err);
      return "connection closed (" + OpenSslErrors() + ")";
    case SSL_ERROR_SSL:
      return OpenSslErrors();
    default:
      return "SSL error " + std::to_string(SSL_get_error(ssl, ret));
  }
}

// One connection: a TCP socket, with TLS over it or not.
struct Conn {
  base::UniqueFd fd;
  Ssl ssl{nullptr, &SSL_free};  // null in plaintext; freed before the fd
};

// Sends all `n` bytes; dies with `what` and the reason otherwise.
void SendOrDie(Conn& c, const void* p, size_t n, const std::string& what) {
  if (c.ssl == nullptr) {
    if (!WriteAll(c.fd.get(), p, n)) DieErrno(what);
    return;
  }
  const char* at = static_cast<const char*>(p);
  while (n > 0) {
    size_t sent = 0;
    errno = 0;
    const int ret = SSL_write_ex(c.ssl.get(), at, n, &sent);
    if (ret != 1) Die(what + ": " + TlsError(c.ssl.get(), ret, errno));
    at += sent;
    n -= sent;
  }
}

// Receives exactly `n` bytes; dies with `what` and the reason otherwise (the
// peer closing first included).
void RecvOrDie(Conn& c, void* p, size_t n, const std::string& what) {
  char* at = static_cast<char*>(p);
  while (n > 0) {
    size_t got = 0;
    if (c.ssl == nullptr) {
      const ssize_t r = read(c.fd.get(), at, n);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) DieErrno(what);
      if (r == 0) Die(what + ": connection closed by the peer");
      got = static_cast<size_t>(r);
    } else {
      errno = 0;
      const int ret = SSL_read_ex(c.ssl.get(), at, n, &got);
      if (ret != 1) Die(what + ": " + TlsError(c.ssl.get(), ret, errno));
    }
    at += got;
    n -= got;
  }
}

// Without TCP_NODELAY a small write (the end marker, the answer) waits for
// the ACK of the data before it, and a receiver that answered during the TLS
// handshake delays its ACKs (up to 40 ms), as if waiting to send a reply:
// small runs then measure the ACK timer. Both transports the pipe is held
// against set it too (gRPC; migd's data connections).
void NoDelay(int fd, const std::string& where) {
  const int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
    DieErrno(where + ": TCP_NODELAY");
  }
}

bool KtlsSend(const Conn& c) {
  return c.ssl != nullptr && BIO_get_ktls_send(SSL_get_wbio(c.ssl.get()));
}

bool KtlsRecv(const Conn& c) {
  return c.ssl != nullptr && BIO_get_ktls_recv(SSL_get_rbio(c.ssl.get()));
}

std::string Where(const char* side, int i) {
  return std::string(side) + ": connection " + std::to_string(i);
}

// ---- The chunk header.

struct Chunk {
  uint64_t offset = 0;  // stream offset of the chunk's first byte
  uint32_t length = 0;  // 0: the end (offset: the stream's length)
};

void PutHeader(uint8_t* p, const Chunk& c) {
  std::memcpy(p, &c.offset, sizeof c.offset);
  std::memcpy(p + sizeof c.offset, &c.length, sizeof c.length);
}

Chunk GetHeader(const uint8_t* p) {
  Chunk c;
  std::memcpy(&c.offset, p, sizeof c.offset);
  std::memcpy(&c.length, p + sizeof c.offset, sizeof c.length);
  return c;
}

// ---- Source.

// The source device's save stream, shared by the connections. A thread takes
// the next chunk under the lock, so the chunk's offset is the stream position
// it was read at; the device's read (a copy out of its memory, as a kernel
// driver's read() is) is the only thing done under it.
class ChunkSource {
 public:
  explicit ChunkSource(device::DataStream& stream) : stream_(stream) {}

  // Reads the next chunk into `buf`: its offset and length, or length 0 once
  // the stream ended (to every caller from then on).
  Chunk Next(absl::Span<uint8_t> buf) {
    std::lock_guard<std::mutex> lock(mu_);
    if (ended_) return {pos_, 0};
    absl::StatusOr<device::ReadResult> r = stream_.Read(buf);
    if (!r.ok()) Die("sender: " + std::string(r.status().message()));
    if (r->kind == device::ReadResult::Kind::kEndOfStream) {
      ended_ = true;
      return {pos_, 0};
    }
    // In STOP_COPY the stream has data or ends; anything else is a broken
    // device, and a zero-length chunk would end the connection.
    if (r->kind != device::ReadResult::Kind::kData || r->bytes == 0) {
      Die("sender: " + std::string(kSourceDevice) + ": read gave " +
          device::ReadResultText(*r) + " in STOP_COPY");
    }
    const Chunk c{pos_, static_cast<uint32_t>(r->bytes)};
    pos_ += r->bytes;
    return c;
  }

  // The stream's length; once every thread got its end.
  uint64_t total() {
    std::lock_guard<std::mutex> lock(mu_);
    return pos_;
  }

 private:
  std::mutex mu_;
  device::DataStream& stream_;
  uint64_t pos_ = 0;
  bool ended_ = false;
};

// What the receiver answered on one connection.
struct Answer {
  std::string digest;  // the destination device's StateDigest
  bool ktls_send = false;
  bool ktls_recv = false;
};

Answer ReadAnswer(Conn& c, int i) {
  const std::string where = Where("sender", i);
  uint32_t n = 0;
  RecvOrDie(c, &n, sizeof n, where + ": reading the receiver's answer");
  if (n == 0 || n > kMaxAnswerBytes) {
    Die(where + ": the receiver's answer claims " + std::to_string(n) +
        " bytes (1.." + std::to_string(kMaxAnswerBytes) + ")");
  }
  std::string text(n, '\0');
  RecvOrDie(c, text.data(), n, where + ": reading the receiver's answer");
  char digest[64];
  int send = 0;
  int recv = 0;
  const bool parsed =
      std::sscanf(text.c_str(), "%63s %d %d", digest, &send, &recv) == 3;
  // "crc32c:" and 8 hex digits, checked: it goes into the JSON as it is.
  const std::string_view d(parsed ? digest : "");
  if (d.size() != 15 || d.substr(0, 7) != "crc32c:" ||
      !std::all_of(d.begin() + 7, d.end(),
                   [](char ch) { return std::isxdigit(ch) != 0; })) {
    Die(where + ": bad answer from the receiver: '" + text + "'");
  }
  return {std::string(d), send != 0, recv != 0};
}

// One thread per connection: chunks out until the stream's end, then the
// receiver's answer.
void Send(std::vector<Conn>& conns, ChunkSource& chunks) {
  std::vector<std::thread> threads;
  for (int i = 0; i < static_cast<int>(conns.size()); ++i) {
    threads.emplace_back([&conns, &chunks, i] {
      // Header and chunk in one buffer, so each chunk is one write.
      std::vector<uint8_t> buf(kHeaderBytes + kChunkBytes);
      const std::string what = Where("sender", i) + ": sending a chunk";
      for (;;) {
        const Chunk c = chunks.Next(absl::MakeSpan(buf).subspan(kHeaderBytes));
        PutHeader(buf.data(), c);
        SendOrDie(conns[i], buf.data(), kHeaderBytes + c.length, what);
        if (c.length == 0) break;
      }
      // The clock stops when the destination holds every byte (its one-byte
      // word), as migd's transfer time ends at COMMIT: the device's check
      // and the digests come after, off the clock.
      char written = 0;
      RecvOrDie(conns[i], &written, 1, Where("sender", i) + ": waiting");
      if (written != 'W') Die(Where("sender", i) + ": a strange answer");
    });
  }
  for (auto& t : threads) t.join();
}

// ---- Destination.

// The destination device's load stream. The device parses its stream as it
// arrives, so chunks go in in stream order: a thread with a chunk waits until
// every byte before it is in, writes, and wakes the others. No thread waits
// forever: each connection carries its chunks in increasing offsets (its
// source thread read them one after the other), so the chunk at the next
// offset is always the first unwritten one of its connection, and that
// connection's thread receives it without waiting for anything.
class ChunkSink {
 public:
  explicit ChunkSink(device::DataStream& stream) : stream_(stream) {}

  void Write(const Chunk& c, const uint8_t* data, int i) {
    std::unique_lock<std::mutex> lock(mu_);
    turn_.wait(lock, [&] { return next_ >= c.offset; });
    if (next_ != c.offset) {
      Die(Where("receiver", i) + ": chunk at stream offset " +
          std::to_string(c.offset) + " arrived after the stream passed it (" +
          std::to_string(next_) + ")");
    }
    const iovec v{const_cast<uint8_t*>(data), c.length};
    if (absl::Status s = stream_.WriteAll(absl::MakeConstSpan(&v, 1));
        !s.ok()) {
      Die("receiver: " + std::string(s.message()));
    }
    next_ += c.length;
    lock.unlock();
    turn_.notify_all();
  }

  // Bytes written so far.
  uint64_t written() {
    std::lock_guard<std::mutex> lock(mu_);
    return next_;
  }

 private:
  std::mutex mu_;
  std::condition_variable turn_;
  device::DataStream& stream_;
  uint64_t next_ = 0;  // the next offset to write
};

// One thread per connection: chunks in until the connection's end marker;
// returns the stream length the marker gave.
uint64_t ReceiveChunks(Conn& c, ChunkSink& sink, int i) {
  std::vector<uint8_t> buf(kChunkBytes);
  const std::string where = Where("receiver", i);
  for (;;) {
    uint8_t header[kHeaderBytes];
    RecvOrDie(c, header, sizeof header, where + ": reading a chunk header");
    const Chunk chunk = GetHeader(header);
    if (chunk.length == 0) return chunk.offset;
    if (chunk.length > kChunkBytes) {
      Die(where + ": chunk of " + std::to_string(chunk.length) +
          " bytes (at most " + std::to_string(kChunkBytes) + ")");
    }
    RecvOrDie(c, buf.data(), chunk.length, where + ": reading a chunk");
    sink.Write(chunk, buf.data(), i);
  }
}

base::UniqueFd Listen(uint16_t* port) {
  base::UniqueFd fd(socket(AF_INET, SOCK_STREAM, 0));
  if (!fd.valid()) DieErrno("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(fd.get(), 64) != 0 ||
      getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &alen) != 0) {
    DieErrno("listening on 127.0.0.1");
  }
  *port = ntohs(a.sin_port);
  return fd;
}

// The receiver process: makes the destination device and puts it in
// RESUMING, says "ready" on `ready`, accepts the connections (TLS handshakes
// included), loads the stream, moves the device to STOP, answers every
// connection with its digest, and reports its CPU time to `report_fd`.
int Receive(const PipeOptions& p, const base::UniqueFd& listen_fd,
            base::UniqueFd ready, int report_fd) {
  const std::unique_ptr<device::EmulatedDevice> dst = CreateDevice(
      "receiver",
      AgentDeviceConfig(kDestinationDevice, p.state_size, p.seed_dst));
  // RUNNING -> STOP -> RESUMING: the device allocates the buffer it loads into
  // here, before the clock, as bench.py prepares its destination agent.
  absl::StatusOr<std::unique_ptr<device::DataStream>> stream =
      dst->SetState(vfio::MigState::kResuming);
  if (!stream.ok()) Die("receiver: " + std::string(stream.status().message()));
  if (*stream == nullptr) Die("receiver: RESUMING opened no data stream");
  const SslCtx ctx =
      p.tls_dir.empty() ? SslCtx(nullptr, &SSL_CTX_free) : TlsContext(p, true);
  if (!WriteAll(ready.get(), "ready\n", 6)) DieErrno("receiver: ready");
  ready.reset();

  const Cpu c0 = CpuNow();
  std::vector<Conn> conns(p.connections);
  for (int i = 0; i < p.connections; ++i) {
    Conn& c = conns[i];
    c.fd.reset(accept(listen_fd.get(), nullptr, nullptr));
    if (!c.fd.valid()) DieErrno(Where("receiver", i) + ": accept");
    NoDelay(c.fd.get(), Where("receiver", i));
    if (ctx == nullptr) continue;
    c.ssl.reset(SSL_new(ctx.get()));
    if (c.ssl == nullptr || SSL_set_fd(c.ssl.get(), c.fd.get()) != 1) {
      Die(Where("receiver", i) + ": SSL_new: " + OpenSslErrors());
    }
    errno = 0;
    const int ret = SSL_accept(c.ssl.get());
    if (ret != 1) {
      Die(Where("receiver", i) +
          ": TLS handshake: " + TlsError(c.ssl.get(), ret, errno));
    }
  }

  ChunkSink sink(**stream);
  std::vector<uint64_t> ends(p.connections, 0);
  std::vector<std::thread> threads;
  for (int i = 0; i < p.connections; ++i) {
    threads.emplace_back([&conns, &sink, &ends, i] {
      ends[i] = ReceiveChunks(conns[i], sink, i);
    });
  }
  for (auto& t : threads) t.join();
  const uint64_t written = sink.written();
  for (int i = 0; i < p.connections; ++i) {
    if (ends[i] != written) {
      Die(Where("receiver", i) + ": ended the stream at " +
          std::to_string(ends[i]) + " bytes, " + std::to_string(written) +
          " arrived");
    }
  }

  for (int i = 0; i < p.connections; ++i) {
    SendOrDie(conns[i], "W", 1, Where("receiver", i) + ": answering");
  }
  // RESUMING -> STOP: the emulated device checks the stream's END record (the
  // CRC32C it kept while loading, the size) and swaps in what it loaded. Its
  // CPU counts, as the agent's does; the digest, a check of this tool's, not.
  if (absl::StatusOr<std::unique_ptr<device::DataStream>> s =
          dst->SetState(vfio::MigState::kStop);
      !s.ok()) {
    Die("receiver: " + std::string(s.status().message()));
  }
  const Cpu c1 = CpuNow();
  absl::StatusOr<std::string> digest = dst->StateDigest();
  if (!digest.ok()) Die("receiver: " + std::string(digest.status().message()));
  for (int i = 0; i < p.connections; ++i) {
    const std::string text = *digest + " " + (KtlsSend(conns[i]) ? "1" : "0") +
                             " " + (KtlsRecv(conns[i]) ? "1" : "0");
    const uint32_t n = static_cast<uint32_t>(text.size());
    std::string framed(reinterpret_cast<const char*>(&n), sizeof n);
    framed += text;
    SendOrDie(conns[i], framed.data(), framed.size(),
              Where("receiver", i) + ": answering");
  }
  ReportCpu(report_fd, c1 - c0);
  return 0;
}

// The sender's connections, every one up (TLS handshake done) before the
// clock starts, as migd's streams are before its first chunk.
std::vector<Conn> Connect(const PipeOptions& p, uint16_t port, SSL_CTX* ctx) {
  std::vector<Conn> conns(p.connections);
  for (int i = 0; i < p.connections; ++i) {
    Conn& c = conns[i];
    c.fd.reset(socket(AF_INET, SOCK_STREAM, 0));
    if (!c.fd.valid()) DieErrno(Where("sender", i) + ": socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c.fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      DieErrno(Where("sender", i) + ": connect");
    }
    NoDelay(c.fd.get(), Where("sender", i));
    if (ctx == nullptr) continue;
    c.ssl.reset(SSL_new(ctx));
    if (c.ssl == nullptr || SSL_set_fd(c.ssl.get(), c.fd.get()) != 1) {
      Die(Where("sender", i) + ": SSL_new: " + OpenSslErrors());
    }
    // The receiver's certificate must be for the address dialed (its IP SAN),
    // as a destination agent's must when no identity is named.
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c.ssl.get()), kLoopback) !=
        1) {
      Die(Where("sender", i) +
          ": cannot check the peer's IP: " + OpenSslErrors());
    }
    errno = 0;
    const int ret = SSL_connect(c.ssl.get());
    if (ret != 1) {
      Die(Where("sender", i) +
          ": TLS handshake: " + TlsError(c.ssl.get(), ret, errno));
    }
  }
  return conns;
}

const char* JsonBool(bool b) { return b ? "true" : "false"; }

int Main(int argc, char** argv) {
  NameTool(kTool);
  const PipeOptions p = ParsePipeOptions(argc, argv);
  // Once here rather than from both processes (the two configs differ only
  // in name and seed).
  if (absl::Status s = device::ValidateEmulatedDeviceConfig(
          AgentDeviceConfig(kSourceDevice, p.state_size, p.seed_src));
      !s.ok()) {
    Die(std::string(s.message()));
  }
  // A peer that went away fails a write with EPIPE, which names the
  // connection, instead of killing the process without a word.
  std::signal(SIGPIPE, SIG_IGN);

  uint16_t port = 0;
  base::UniqueFd listen_fd = Listen(&port);
  int ready_pipe[2];
  if (pipe(ready_pipe) != 0) DieErrno("pipe");
  base::UniqueFd ready_read(ready_pipe[0]);
  base::UniqueFd ready_write(ready_pipe[1]);
  // Fork before either side makes its device or touches OpenSSL: each
  // process has its own, and no thread exists yet.
  const Receiver receiver = ForkReceiver([&](int report_fd) {
    // A sender that died leaves no one to end the transfer.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    ready_read.reset();
    return Receive(p, listen_fd, std::move(ready_write), report_fd);
  });
  listen_fd.reset();
  ready_write.reset();

  const std::unique_ptr<device::EmulatedDevice> src = CreateDevice(
      "sender", AgentDeviceConfig(kSourceDevice, p.state_size, p.seed_src));
  char line[16];
  ReadToEnd(ready_read.get(), line, sizeof line);
  ready_read.reset();
  if (std::strcmp(line, "ready\n") != 0) Die("receiver did not start");

  const SslCtx ctx =
      p.tls_dir.empty() ? SslCtx(nullptr, &SSL_CTX_free) : TlsContext(p, false);
  std::vector<Conn> conns = Connect(p, port, ctx.get());
  // RUNNING -> STOP -> STOP_COPY opens the save stream, as the source agent's
  // job does when it stops the device.
  absl::StatusOr<std::unique_ptr<device::DataStream>> stream =
      src->SetState(vfio::MigState::kStopCopy);
  if (!stream.ok()) Die("sender: " + std::string(stream.status().message()));
  if (*stream == nullptr) Die("sender: STOP_COPY opened no data stream");
  ChunkSource chunks(**stream);
  std::vector<Answer> answers(p.connections);
  const Measurement m =
      Measure(receiver, [&] { Send(conns, chunks); });
  for (int i = 0; i < p.connections; ++i) {
    answers[i] = ReadAnswer(conns[i], i);
  }

  absl::StatusOr<std::string> src_digest = src->StateDigest();
  if (!src_digest.ok()) {
    Die("sender: " + std::string(src_digest.status().message()));
  }
  for (const Answer& a : answers) {
    if (a.digest != answers[0].digest) {
      Die("the receiver answered " + answers[0].digest + " and " + a.digest +
          " on different connections");
    }
  }
  const std::string& dst_digest = answers[0].digest;
  const bool digest_ok = dst_digest == *src_digest;
  bool src_send = !p.tls_dir.empty();
  bool src_recv = src_send;
  bool dst_send = src_send;
  bool dst_recv = src_send;
  for (int i = 0; i < p.connections; ++i) {
    src_send = src_send && KtlsSend(conns[i]);
    src_recv = src_recv && KtlsRecv(conns[i]);
    dst_send = dst_send && answers[i].ktls_send;
    dst_recv = dst_recv && answers[i].ktls_recv;
  }
  const char* cipher =
      conns[0].ssl == nullptr ? "" : SSL_get_cipher_name(conns[0].ssl.get());

  Options o;
  o.bytes = chunks.total();
  o.connections = p.connections;
  o.write_bytes = kChunkBytes;
  const std::string extra =
      ",\"state_bytes\":" + std::to_string(p.state_size) +
      ",\"tls\":" + JsonBool(!p.tls_dir.empty()) + ",\"cipher\":\"" + cipher +
      "\",\"ktls\":{\"src_send\":" + JsonBool(src_send) +
      ",\"src_recv\":" + JsonBool(src_recv) +
      ",\"dst_send\":" + JsonBool(dst_send) +
      ",\"dst_recv\":" + JsonBool(dst_recv) +
      "},\"digest_ok\":" + JsonBool(digest_ok) + ",\"src_digest\":\"" +
      *src_digest + "\",\"dst_digest\":\"" + dst_digest + "\"";
  PrintResult(kTool, o, m, extra);
  if (!digest_ok) {
    Die("the destination's state digest " + dst_digest +
        " is not the source's " + *src_digest);
  }
  return 0;
}

}  // namespace
}  // namespace migd::bench

int main(int argc, char** argv) { return migd::bench::Main(argc, argv); }
