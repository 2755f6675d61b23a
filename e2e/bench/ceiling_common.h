// e2e/bench/ceiling_common.h
//
// What tcp_ceiling and grpc_ceiling share: the same command line, the same
// split of the bytes over connections, the same clocks, the same forked
// receiver that reports its CPU time over a pipe, and the same JSON result.
// bench.py runs both tools with the same flags and reads both results the same
// way, so these must not drift apart; only the transport in between differs.
// device_pipe shares all but the command line (it moves a device's state, so
// it takes a state size instead of --bytes) and adds fields to the result.
//
// A failure here ends the process (Die) rather than returning, except in
// WriteAll, whose callers know what was being written: the tools are one-shot
// measurements with nothing to recover, and a half-measured run must not print
// a result.

#ifndef MIGD_E2E_BENCH_CEILING_COMMON_H_
#define MIGD_E2E_BENCH_CEILING_COMMON_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace migd::bench {

// What sets one ceiling tool apart in its command line and its result.
struct Tool {
  // "tcp_ceiling": the usage line and every error message start with it.
  const char* name;
  // "chunk": the flag (--chunk=SIZE) that sets Options::write_bytes, and the
  // result's key for it.
  const char* write_flag;
  // The largest write_bytes the flag accepts.
  uint64_t max_write_bytes;
  // A flag of the tool's own that takes text, e.g. "tls_dir" (--tls_dir=DIR),
  // whose value goes to Options::text; nullptr when the tool has none.
  const char* text_flag = nullptr;
};

// One run, as the command line sets it.
struct Options {
  uint64_t bytes = uint64_t{1} << 30;  // --bytes: payload over all connections
  int connections = 1;                 // --connections: 1..64
  size_t write_bytes = size_t{1} << 20;  // Tool::write_flag: payload per write
  std::string text;  // Tool::text_flag's value; empty when not given
};

// Parses --bytes=SIZE, --connections=N, --<tool.write_flag>=SIZE (SIZE as
// "4GiB", "64MiB", "512KiB", "4G", "1000"; N likewise) and, when the tool has
// one, --<tool.text_flag>=TEXT (not empty). Prints the usage line
// and exits 0 on --help or -h; dies on anything else. Also names the tool for
// Die, so call it first in main.
Options ParseOptions(const Tool& tool, int argc, char** argv);

// Names the tool for Die as ParseOptions does, for a tool that parses its
// own command line (device_pipe). Call it first in main.
void NameTool(const Tool& tool);

// "4GiB", "64MiB", "512KiB", "4G", "1000" (bytes) -> *out; false if `text` is
// none of these or overflows.
bool ParseSize(const std::string& text, uint64_t* out);

// Prints "<tool>: <what>" to stderr and exits with status 2. The tool is the
// one given to ParseOptions or NameTool ("ceiling" before that).
[[noreturn]] void Die(const std::string& what);

// Die(what + ": " + strerror(errno)).
[[noreturn]] void DieErrno(const std::string& what);

// The bytes connection `i` (0-based) carries: bytes / connections each, the
// last one also the remainder.
uint64_t Share(const Options& o, int i);

// Fills `n` bytes at `p` with a fixed pseudo-random (xorshift) pattern.
void FillIncompressible(char* p, size_t n);

// CPU seconds of the whole process (getrusage RUSAGE_SELF, all threads).
struct Cpu {
  double user = 0;
  double sys = 0;
};
Cpu CpuNow();
Cpu operator-(const Cpu& later, const Cpu& earlier);

// Writes all `n` bytes, retrying on EINTR and short writes. False on any
// other error (errno says which) or if the fd takes no more bytes.
bool WriteAll(int fd, const void* p, size_t n);

// Reads until EOF, an error or `cap` - 1 bytes; the result is NUL-terminated.
void ReadToEnd(int fd, char* buf, size_t cap);

// The receiver process, forked by the sender.
struct Receiver {
  pid_t pid;
  int report_fd;  // the read end of the CPU report pipe
};

// Forks the receiver. The child runs `receive` with the write end of the
// report pipe and exits (_exit) with what it returns; `receive` reports with
// ReportCpu before returning 0. Dies if the pipe or the fork fails.
Receiver ForkReceiver(const std::function<int(int report_fd)>& receive);

// In the receiver: writes the CPU time its side used ("user sys") to
// `report_fd`. Dies if that fails.
void ReportCpu(int report_fd, const Cpu& used);

// What Measure measured.
struct Measurement {
  double wall_s = 0;
  Cpu sender;    // the sending process, over `send`
  Cpu receiver;  // what the receiver reported
};

// In the sender: runs `send` on the clock and under the CPU meter, then reads
// the receiver's CPU report and reaps the receiver. Dies unless the receiver
// exited with 0 after reporting.
Measurement Measure(const Receiver& receiver,
                    const std::function<void()>& send);

// Prints the result as one line of JSON:
//   {"bytes":N,"connections":C,"<write_flag>":K,"wall_s":S,"gbps":G,
//    "sender":{"user_s":U,"sys_s":Y,"cpu_s_per_gib":X},
//    "receiver":{"user_s":U,"sys_s":Y,"cpu_s_per_gib":X}<extra_json>}
// gbps is 1e9 bytes of payload (o.bytes) per second. `extra_json` is empty or
// more members, each with a leading comma (",\"digest_ok\":true").
void PrintResult(const Tool& tool, const Options& o, const Measurement& m,
                 const std::string& extra_json = "");

// Measure, then PrintResult: `send` is the transfer (tcp_ceiling connects
// inside it, grpc_ceiling's channels are connected before). Dies, printing
// nothing, unless the receiver exited with 0 after reporting.
void MeasureSend(const Tool& tool, const Options& o, const Receiver& receiver,
                 const std::function<void()>& send);

}  // namespace migd::bench

#endif  // MIGD_E2E_BENCH_CEILING_COMMON_H_
