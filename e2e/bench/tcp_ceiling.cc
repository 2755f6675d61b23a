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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Options {
  uint64_t bytes = uint64_t{1} << 30;
  int connections = 1;
  size_t chunk = size_t{1} << 20;
};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "tcp_ceiling: %s\n", what.c_str());
  std::exit(2);
}

[[noreturn]] void DieErrno(const std::string& what) {
  Die(what + ": " + std::strerror(errno));
}

// "4GiB", "64MiB", "1MiB", "512KiB", "4G", "1000" (bytes).
bool ParseSize(const std::string& text, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str()) return false;
  const std::string unit(end);
  uint64_t mult = 1;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "K" || unit == "KiB") {
    mult = uint64_t{1} << 10;
  } else if (unit == "M" || unit == "MiB") {
    mult = uint64_t{1} << 20;
  } else if (unit == "G" || unit == "GiB") {
    mult = uint64_t{1} << 30;
  } else {
    return false;
  }
  if (v > UINT64_MAX / mult) return false;
  *out = v * mult;
  return true;
}

Options Parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const size_t eq = arg.find('=');
    const std::string key = arg.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : arg.substr(eq + 1);
    uint64_t n = 0;
    if (key == "--bytes" && ParseSize(value, &n) && n > 0) {
      o.bytes = n;
    } else if (key == "--connections" && ParseSize(value, &n) && n >= 1 &&
               n <= 64) {
      o.connections = static_cast<int>(n);
    } else if (key == "--chunk" && ParseSize(value, &n) && n >= 1 &&
               n <= (uint64_t{64} << 20)) {
      o.chunk = n;
    } else if (key == "--help" || key == "-h") {
      std::printf(
          "usage: tcp_ceiling --bytes=SIZE [--connections=N] [--chunk=SIZE]\n");
      std::exit(0);
    } else {
      Die("bad argument '" + arg +
          "' (expected --bytes=SIZE>0, --connections=1..64, "
          "--chunk=1..64MiB)");
    }
  }
  return o;
}

double Now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Cpu {
  double user = 0;
  double sys = 0;
};

Cpu CpuNow() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6,
          ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6};
}

uint64_t Share(const Options& o, int i) {
  const uint64_t each = o.bytes / o.connections;
  return i == o.connections - 1 ? o.bytes - each * (o.connections - 1) : each;
}

bool WriteAll(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

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
// each with the byte count it got, and writes "user sys" to `report_fd`.
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
      std::vector<char> buf(o.chunk);
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
  char line[128];
  const int n = std::snprintf(line, sizeof line, "%.6f %.6f\n",
                              c1.user - c0.user, c1.sys - c0.sys);
  if (!WriteAll(report_fd, line, static_cast<size_t>(n))) {
    DieErrno("receiver: report");
  }
  return 0;
}

void Send(const Options& o, uint16_t port) {
  std::vector<char> src(o.chunk);
  uint64_t x = 0x9e3779b97f4a7c15ull;  // incompressible, not that it matters
  for (char& c : src) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
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
        const size_t n = left < o.chunk ? static_cast<size_t>(left) : o.chunk;
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

}  // namespace

int main(int argc, char** argv) {
  const Options o = Parse(argc, argv);

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
  int report[2];
  if (pipe(report) != 0) DieErrno("pipe");

  const pid_t child = fork();
  if (child < 0) DieErrno("fork");
  if (child == 0) {
    close(report[0]);
    _exit(Receive(o, listen_fd, report[1]));
  }
  close(report[1]);
  close(listen_fd);

  const Cpu c0 = CpuNow();
  const double t0 = Now();
  Send(o, ntohs(a.sin_port));
  const double t1 = Now();
  const Cpu c1 = CpuNow();

  char line[128] = {};
  size_t have = 0;
  for (;;) {
    const ssize_t r = read(report[0], line + have, sizeof line - 1 - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += static_cast<size_t>(r);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("receiver failed");
  Cpu rx;
  if (std::sscanf(line, "%lf %lf", &rx.user, &rx.sys) != 2) {
    Die("receiver sent no CPU report");
  }

  const double wall = t1 - t0;
  const double gib = static_cast<double>(o.bytes) / (1u << 30);
  const Cpu tx{c1.user - c0.user, c1.sys - c0.sys};
  std::printf(
      "{\"bytes\":%llu,\"connections\":%d,\"chunk\":%zu,\"wall_s\":%.6f,"
      "\"gbps\":%.4f,"
      "\"sender\":{\"user_s\":%.4f,\"sys_s\":%.4f,\"cpu_s_per_gib\":%.4f},"
      "\"receiver\":{\"user_s\":%.4f,\"sys_s\":%.4f,\"cpu_s_per_gib\":%.4f}}\n",
      static_cast<unsigned long long>(o.bytes), o.connections, o.chunk, wall,
      o.bytes / wall / 1e9, tx.user, tx.sys, (tx.user + tx.sys) / gib, rx.user,
      rx.sys, (rx.user + rx.sys) / gib);
  return 0;
}
