// tcp_ceiling: the raw loopback TCP ceiling the transfer benchmark compares
// migd with. A sender process moves --bytes over 127.0.0.1 to a receiver
// process with plain blocking sockets: write() of --chunk bytes (1 MiB) from
// one buffer, read() into one --chunk buffer (a warm cache on both sides), on
// --connections connections (the bytes split evenly, one thread per connection
// on each side). The sender times from the first connect to the receiver's
// acknowledgement that every byte arrived, and each side measures its own CPU
// (getrusage, all threads). Prints one JSON object:
//
//   {"bytes":N,"connections":C,"chunk":K,"wall_s":S,"gbps":G,
//    "sender":{"user_s":U,"sys_s":Y,"cpu_s_per_gib":X},
//    "receiver":{"user_s":U,"sys_s":Y,"cpu_s_per_gib":X}}
//
// gbps is 1e9 bytes of payload per second. Usage:
//   tcp_ceiling --bytes=4GiB [--connections=1] [--chunk=1MiB]

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "e2e/bench/ceiling_common.h"

namespace migd::bench {
namespace {

constexpr Tool kTool = {.name = "tcp_ceiling",
                        .write_flag = "chunk",
                        .max_write_bytes = uint64_t{64} << 20};

bool ReadAll(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    const ssize_t r = read(fd, c, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// The receiver process: accepts the connections, reads everything, answers
// each with the byte count it got, and reports its CPU time to `report_fd`.
int Receive(const Options& o, int listen_fd, int report_fd) {
  std::vector<std::thread> threads;
  std::vector<uint64_t> got(o.connections, 0);
  std::vector<int> fds;
  const Cpu c0 = CpuNow();
  for (int i = 0; i < o.connections; ++i) {
    const int fd = accept(listen_fd, nullptr, nullptr);
    if (fd < 0) DieErrno("receiver: accept");
    fds.push_back(fd);
    threads.emplace_back([&o, &got, fd, i] {
      std::vector<char> buf(o.write_bytes);
      for (;;) {
        const ssize_t r = read(fd, buf.data(), buf.size());
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) DieErrno("receiver: read");
        if (r == 0) break;
        got[i] += static_cast<uint64_t>(r);
      }
      const uint64_t ack = got[i];
      if (!WriteAll(fd, &ack, sizeof ack)) DieErrno("receiver: ack");
    });
  }
  for (auto& t : threads) t.join();
  const Cpu c1 = CpuNow();
  for (int fd : fds) close(fd);
  ReportCpu(report_fd, c1 - c0);
  return 0;
}

void Send(const Options& o, uint16_t port) {
  std::vector<char> src(o.write_bytes);
  FillIncompressible(src.data(), src.size());
  std::vector<std::thread> threads;
  for (int i = 0; i < o.connections; ++i) {
    threads.emplace_back([&o, &src, port, i] {
      const int fd = socket(AF_INET, SOCK_STREAM, 0);
      if (fd < 0) DieErrno("sender: socket");
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        DieErrno("sender: connect");
      }
      const uint64_t share = Share(o, i);
      for (uint64_t left = share; left > 0;) {
        const size_t n =
            left < o.write_bytes ? static_cast<size_t>(left) : o.write_bytes;
        if (!WriteAll(fd, src.data(), n)) DieErrno("sender: write");
        left -= n;
      }
      shutdown(fd, SHUT_WR);
      uint64_t ack = 0;
      if (!ReadAll(fd, &ack, sizeof ack)) DieErrno("sender: reading the ack");
      if (ack != share) {
        Die("receiver got " + std::to_string(ack) + " of " +
            std::to_string(share) + " bytes");
      }
      close(fd);
    });
  }
  for (auto& t : threads) t.join();
}

int Main(int argc, char** argv) {
  const Options o = ParseOptions(kTool, argc, argv);

  const int listen_fd = socket(AF_INET, SOCK_STREAM, 0);
  if (listen_fd < 0) DieErrno("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = 0;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof a;
  if (bind(listen_fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      listen(listen_fd, 64) != 0 ||
      getsockname(listen_fd, reinterpret_cast<sockaddr*>(&a), &alen) != 0) {
    DieErrno("listening on 127.0.0.1");
  }
  const Receiver receiver = ForkReceiver(
      [&](int report_fd) { return Receive(o, listen_fd, report_fd); });
  close(listen_fd);

  MeasureSend(kTool, o, receiver, [&] { Send(o, ntohs(a.sin_port)); });
  return 0;
}

}  // namespace
}  // namespace migd::bench

int main(int argc, char** argv) { return migd::bench::Main(argc, argv); }
