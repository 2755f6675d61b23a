#include "e2e/bench/ceiling_common.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace migd::bench {
namespace {

// Set once by ParseOptions or NameTool, before any thread exists.
const char* tool_name = "ceiling";

// The inverse of ParseSize in the largest unit that divides `n`: "64MiB",
// "16777200".
std::string FormatSize(uint64_t n) {
  static constexpr struct {
    int shift;
    const char* unit;
  } kUnits[] = {{30, "GiB"}, {20, "MiB"}, {10, "KiB"}};
  for (const auto& u : kUnits) {
    if (n != 0 && n % (uint64_t{1} << u.shift) == 0) {
      return std::to_string(n >> u.shift) + u.unit;
    }
  }
  return std::to_string(n);
}

double Now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Reads the receiver's CPU report and reaps it; dies unless it exited with 0
// after reporting.
Cpu AwaitReceiver(const Receiver& receiver) {
  char line[128];
  ReadToEnd(receiver.report_fd, line, sizeof line);
  close(receiver.report_fd);
  int status = 0;
  waitpid(receiver.pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("receiver failed");
  Cpu used;
  if (std::sscanf(line, "%lf %lf", &used.user, &used.sys) != 2) {
    Die("receiver sent no CPU report");
  }
  return used;
}

}  // namespace

void NameTool(const Tool& tool) { tool_name = tool.name; }

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

Options ParseOptions(const Tool& tool, int argc, char** argv) {
  NameTool(tool);
  const std::string write_key = std::string("--") + tool.write_flag;
  const std::string text_key =
      tool.text_flag == nullptr ? "" : std::string("--") + tool.text_flag;
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
    } else if (key == write_key && ParseSize(value, &n) && n >= 1 &&
               n <= tool.max_write_bytes) {
      o.write_bytes = n;
    } else if (!text_key.empty() && key == text_key && !value.empty()) {
      o.text = value;
    } else if (key == "--help" || key == "-h") {
      std::printf("usage: %s --bytes=SIZE [--connections=N] [%s=SIZE]%s\n",
                  tool.name, write_key.c_str(),
                  text_key.empty() ? "" : (" [" + text_key + "=...]").c_str());
      std::exit(0);
    } else {
      Die("bad argument '" + arg +
          "' (expected --bytes=SIZE>0, --connections=1..64, " + write_key +
          "=1.." + FormatSize(tool.max_write_bytes) +
          (text_key.empty() ? "" : ", " + text_key + "=...") + ")");
    }
  }
  return o;
}

void Die(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", tool_name, what.c_str());
  std::exit(2);
}

void DieErrno(const std::string& what) {
  Die(what + ": " + std::strerror(errno));
}

uint64_t Share(const Options& o, int i) {
  const uint64_t each = o.bytes / o.connections;
  return i == o.connections - 1 ? o.bytes - each * (o.connections - 1) : each;
}

void FillIncompressible(char* p, size_t n) {
  uint64_t x = 0x9e3779b97f4a7c15ull;  // incompressible, not that it matters
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = static_cast<char>(x);
  }
}

Cpu CpuNow() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6,
          ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6};
}

Cpu operator-(const Cpu& later, const Cpu& earlier) {
  return {later.user - earlier.user, later.sys - earlier.sys};
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

void ReadToEnd(int fd, char* buf, size_t cap) {
  size_t have = 0;
  while (have + 1 < cap) {
    const ssize_t r = read(fd, buf + have, cap - 1 - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += static_cast<size_t>(r);
  }
  buf[have] = '\0';
}

Receiver ForkReceiver(const std::function<int(int report_fd)>& receive) {
  int report[2];
  if (pipe(report) != 0) DieErrno("pipe");
  const pid_t child = fork();
  if (child < 0) DieErrno("fork");
  if (child == 0) {
    close(report[0]);
    _exit(receive(report[1]));
  }
  close(report[1]);
  return {child, report[0]};
}

void ReportCpu(int report_fd, const Cpu& used) {
  char line[128];
  const int n =
      std::snprintf(line, sizeof line, "%.6f %.6f\n", used.user, used.sys);
  if (!WriteAll(report_fd, line, static_cast<size_t>(n))) {
    DieErrno("receiver: report");
  }
}

Measurement Measure(const Receiver& receiver,
                    const std::function<void()>& send) {
  const Cpu c0 = CpuNow();
  const double t0 = Now();
  send();
  const double t1 = Now();
  const Cpu c1 = CpuNow();
  return {t1 - t0, c1 - c0, AwaitReceiver(receiver)};
}

void PrintResult(const Tool& tool, const Options& o, const Measurement& m,
                 const std::string& extra_json) {
  const double gib = static_cast<double>(o.bytes) / (1u << 30);
  std::printf(
      "{\"bytes\":%llu,\"connections\":%d,\"%s\":%zu,\"wall_s\":%.6f,"
      "\"gbps\":%.4f,"
      "\"sender\":{\"user_s\":%.4f,\"sys_s\":%.4f,\"cpu_s_per_gib\":%.4f},"
      "\"receiver\":{\"user_s\":%.4f,\"sys_s\":%.4f,\"cpu_s_per_gib\":%.4f}"
      "%s}\n",
      static_cast<unsigned long long>(o.bytes), o.connections, tool.write_flag,
      o.write_bytes, m.wall_s, o.bytes / m.wall_s / 1e9, m.sender.user,
      m.sender.sys, (m.sender.user + m.sender.sys) / gib, m.receiver.user,
      m.receiver.sys, (m.receiver.user + m.receiver.sys) / gib,
      extra_json.c_str());
}

void MeasureSend(const Tool& tool, const Options& o, const Receiver& receiver,
                 const std::function<void()>& send) {
  PrintResult(tool, o, Measure(receiver, send));
}

}  // namespace migd::bench
