// evacuate: starts the transfer benchmark's host evacuation the way a control
// plane would, from one process with concurrent RPCs. One migctl process per
// job is not that: on a busy machine (the first jobs' transfers already use
// the CPUs) each C++ gRPC process takes a while to start, so launching 32 of
// them one after the other spreads the jobs' starts over a second or more,
// and the first and the last jobs run among fewer others than the rest.
//
// --jobs=PATH names a file with one job per line: the migctl command line of
// that job after the program name, its arguments separated by tabs, e.g.
//
//   --insecure<TAB>--agent=127.0.0.1:5000<TAB>--output=json<TAB>migrate<TAB>...
//
// Blank lines are skipped. evacuate starts one thread per job; each waits
// until every thread exists, then all are released together and each runs
// its command line in-process (cli::Main, what migctl's main runs) with its
// own output streams. Once every job has returned it prints one JSON line per
// job, in the file's order:
//
//   {"line":N,"exit_status":S,"seconds":T,"stdout":"...","stderr":"..."}
//
// N is the job's line in the file (from 1), S migctl's exit status, T the
// seconds from the release to the end of its command. Exits 0 once every job
// ran, whatever their exit statuses; 2 when the command line or the jobs file
// is wrong. The environment is the process's (MIGCTL_*, MIGCTL_CONFIG), as
// for migctl. Usage:
//   evacuate --jobs=PATH

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "cli/commands.h"

namespace migd::bench {
namespace {

constexpr int kExitUsage = 2;
constexpr char kUsage[] = "usage: evacuate --jobs=PATH";

// One job of the jobs file.
struct Job {
  int line = 0;                   // in the file, from 1
  std::vector<std::string> args;  // migctl's, after the program name
};

// What one job's command line did.
struct JobResult {
  int exit_status = 0;
  double seconds = 0;  // from the release to the end of its cli::Main
  std::string out;
  std::string err;
};

// The jobs in `path`, in order. kNotFound when the file cannot be opened,
// kDataLoss when reading it fails, kInvalidArgument when it holds no job;
// the message names the file.
absl::StatusOr<std::vector<Job>> ReadJobs(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot read the jobs file ", path,
                                            ": ", strerror(errno)));
  }
  std::vector<Job> jobs;
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    if (text.empty()) continue;
    jobs.push_back(Job{line, absl::StrSplit(text, '\t')});
  }
  if (in.bad()) {
    return absl::DataLossError(
        absl::StrCat("error while reading the jobs file ", path));
  }
  if (jobs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("the jobs file ", path, " has no job"));
  }
  return jobs;
}

// `text` as a JSON string, quotes included. Bytes from 0x80 up pass through:
// migctl prints UTF-8.
std::string JsonString(absl::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          absl::StrAppendFormat(&out, "\\u%04x", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  out += "\"";
  return out;
}

// Runs every job's command line on a thread of its own, all released at
// once when every thread exists; returns their results in the jobs' order.
std::vector<JobResult> RunTogether(const std::vector<Job>& jobs) {
  using Clock = std::chrono::steady_clock;
  std::vector<JobResult> results(jobs.size());
  absl::Mutex mu;
  size_t waiting = 0;  // guarded by mu
  absl::Notification go;
  // Written before `go` is notified, read after: the notification orders it.
  Clock::time_point released;

  std::vector<std::thread> threads;
  threads.reserve(jobs.size());
  for (size_t i = 0; i < jobs.size(); ++i) {
    threads.emplace_back([&, i] {
      std::ostringstream out, err;
      const cli::Env env = cli::ProcessEnv(&out, &err);
      {
        absl::MutexLock lock(&mu);
        ++waiting;
      }
      go.WaitForNotification();
      JobResult& r = results[i];
      r.exit_status = cli::Main(jobs[i].args, env);
      r.seconds =
          std::chrono::duration<double>(Clock::now() - released).count();
      r.out = out.str();
      r.err = err.str();
    });
  }
  {
    auto all_waiting = [&] { return waiting == jobs.size(); };
    absl::MutexLock lock(&mu, absl::Condition(&all_waiting));
  }
  released = Clock::now();
  go.Notify();
  for (std::thread& t : threads) t.join();
  return results;
}

int Main(int argc, char** argv) {
  std::optional<std::string> path;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << kUsage << "\n";
      return 0;
    }
    std::string problem;
    if (!absl::ConsumePrefix(&arg, "--jobs=")) {
      problem = absl::StrCat("unexpected argument '", argv[i], "'");
    } else if (arg.empty()) {
      problem = "--jobs needs a path";
    } else if (path) {
      problem = "--jobs given twice";
    } else {
      path = std::string(arg);
      continue;
    }
    std::cerr << "evacuate: " << problem << "\n" << kUsage << "\n";
    return kExitUsage;
  }
  if (!path) {
    std::cerr << "evacuate: --jobs=PATH is required\n" << kUsage << "\n";
    return kExitUsage;
  }
  absl::StatusOr<std::vector<Job>> jobs = ReadJobs(*path);
  if (!jobs.ok()) {
    std::cerr << "evacuate: " << jobs.status().message() << "\n";
    return kExitUsage;
  }
  std::vector<JobResult> results = RunTogether(*jobs);
  for (size_t i = 0; i < results.size(); ++i) {
    const JobResult& r = results[i];
    std::cout << absl::StrFormat(
        "{\"line\":%d,\"exit_status\":%d,\"seconds\":%.6f,\"stdout\":%s,"
        "\"stderr\":%s}\n",
        (*jobs)[i].line, r.exit_status, r.seconds, JsonString(r.out),
        JsonString(r.err));
  }
  std::cout.flush();
  return std::cout ? 0 : 1;
}

}  // namespace
}  // namespace migd::bench

int main(int argc, char** argv) { return migd::bench::Main(argc, argv); }
