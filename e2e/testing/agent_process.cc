#include "e2e/testing/agent_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "e2e/testing/run_pki.h"
#include "grpcpp/support/channel_arguments.h"
#include "migd/security/testing/test_pki.h"

namespace migd::e2e {
namespace {

using ::migd::v1::Migration;

// How often conditions (port file, process exit, job phase) are re-checked.
constexpr absl::Duration kPollInterval = absl::Milliseconds(10);

std::string ErrnoMessage(absl::string_view what, int err) {
  return absl::StrCat(what, ": ", strerror(err));
}

// Reads a whole file; nullopt when it cannot be opened.
std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

absl::Status WriteFile(const std::string& path, absl::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    return absl::InternalError(
        ErrnoMessage(absl::StrCat("open ", path), errno));
  }
  out.write(contents.data(), contents.size());
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("write ", path, " failed"));
  return absl::OkStatus();
}

std::string MakeAbsolute(const std::string& path) {
  if (absl::StartsWith(path, "/")) return path;
  char cwd[4096];
  if (getcwd(cwd, sizeof(cwd)) == nullptr) return path;
  return absl::StrCat(cwd, "/", path);
}

// $TEST_TMPDIR, else $TMPDIR, else /tmp.
std::string TempRoot() {
  for (const char* var : {"TEST_TMPDIR", "TMPDIR"}) {
    const char* value = getenv(var);
    if (value != nullptr && *value != '\0') return value;
  }
  return "/tmp";
}

// Where agent logs go: $TEST_UNDECLARED_OUTPUTS_DIR, else the temp root.
std::string LogRoot() {
  const char* value = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
  if (value != nullptr && *value != '\0') {
    mkdir(value, 0755);  // Bazel creates it; harmless when it exists.
    return value;
  }
  return TempRoot();
}

std::string SanitizeFileName(absl::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '-' && c != '_') {
      c = '_';
    }
  }
  return out.empty() ? "agent" : out;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return absl::StrCat("exited ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (",
                        strsignal(WTERMSIG(status)), ")");
  }
  return absl::StrCat("wait status ", status);
}

// Parses the port file's contents: "PORT" or "HOST:PORT", optionally followed
// by a newline. 0 when not (yet) a valid port.
int ParsePort(absl::string_view contents) {
  contents = absl::StripAsciiWhitespace(contents);
  size_t colon = contents.rfind(':');
  if (colon != absl::string_view::npos) contents = contents.substr(colon + 1);
  int port = 0;
  if (!absl::SimpleAtoi(contents, &port) || port <= 0 || port > 65535) {
    return 0;
  }
  return port;
}

std::string Snapshot(const Migration& m) { return m.ShortDebugString(); }

}  // namespace

absl::StatusOr<std::string> MigdBinaryPath() {
  std::string path;
  const char* env = getenv("MIGD_BINARY");
  if (env != nullptr && *env != '\0') {
    path = env;
  } else if (std::optional<std::string> cmdline =
                 ReadFile("/proc/self/cmdline")) {
    for (absl::string_view arg :
         absl::StrSplit(*cmdline, '\0', absl::SkipEmpty())) {
      if (absl::ConsumePrefix(&arg, "--migd_binary=")) path = std::string(arg);
    }
  }
  if (path.empty()) {
    return absl::NotFoundError(
        "migd binary not given: set MIGD_BINARY or pass --migd_binary=PATH "
        "(e.g. from $(rootpath //migd:migd))");
  }
  path = MakeAbsolute(path);
  if (access(path.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        ErrnoMessage(absl::StrCat("migd binary ", path), errno));
  }
  return path;
}

absl::StatusOr<std::unique_ptr<AgentProcess>> AgentProcess::Start(
    AgentOptions options) {
  std::string binary = options.binary;
  if (binary.empty()) {
    absl::StatusOr<std::string> found = MigdBinaryPath();
    if (!found.ok()) return found.status();
    binary = *found;
  }
  if (options.security == AgentOptions::Security::kMutualTls &&
      std::find(options.args.begin(), options.args.end(), "--insecure") !=
          options.args.end()) {
    options.security = AgentOptions::Security::kInsecure;
  }
  std::unique_ptr<AgentProcess> agent(new AgentProcess(std::move(options)));
  if (absl::Status s = agent->Spawn(binary); !s.ok()) return s;
  if (absl::Status s = agent->WaitUntilServing(); !s.ok()) return s;
  agent->serving_ = true;
  return agent;
}

absl::Status AgentProcess::Spawn(const std::string& binary) {
  const std::string stem = SanitizeFileName(options_.name);

  std::string dir_template = absl::StrCat(TempRoot(), "/", stem, ".XXXXXX");
  if (mkdtemp(dir_template.data()) == nullptr) {
    return absl::InternalError(
        ErrnoMessage(absl::StrCat("mkdtemp ", dir_template), errno));
  }
  dir_ = dir_template;
  port_file_ = absl::StrCat(dir_, "/port");

  std::vector<std::string> args = options_.exec_prefix;
  const size_t binary_at = args.size();
  args.insert(args.end(), {
                              binary,
                              absl::StrCat("--listen=", options_.listen_host,
                                           ":", options_.listen_port),
                              absl::StrCat("--port_file=", port_file_),
                              absl::StrCat("--name=", options_.name),
                          });
  // Every agent keeps its journal apart: two agents on one state dir refuse.
  if (std::none_of(options_.args.begin(), options_.args.end(),
                   [](const std::string& a) {
                     return absl::StartsWith(a, "--state_dir=");
                   })) {
    state_dir_ = options_.state_dir.empty() ? absl::StrCat(dir_, "/state")
                                            : options_.state_dir;
    args.push_back(absl::StrCat("--state_dir=", state_dir_));
  }
  // Only the plugins a test asks for: not whatever this host has installed.
  if (std::none_of(options_.args.begin(), options_.args.end(),
                   [](const std::string& a) {
                     return absl::StartsWith(a, "--plugin_dir=");
                   })) {
    args.push_back("--plugin_dir=");
  }
  if (!options_.devices_config.empty()) {
    std::string config_path = absl::StrCat(dir_, "/devices.conf");
    if (absl::Status s = WriteFile(config_path, options_.devices_config);
        !s.ok()) {
      return s;
    }
    args.push_back(absl::StrCat("--devices_config=", config_path));
  }
  switch (options_.security) {
    case AgentOptions::Security::kMutualTls: {
      absl::StatusOr<std::vector<std::string>> tls = TlsFlags();
      if (!tls.ok()) return tls.status();
      args.insert(args.end(), tls->begin(), tls->end());
      break;
    }
    case AgentOptions::Security::kInsecure:
      if (std::find(options_.args.begin(), options_.args.end(), "--insecure") ==
          options_.args.end()) {
        args.push_back("--insecure");
      }
      break;
    case AgentOptions::Security::kAsArgsSay:
      break;
  }
  args.insert(args.end(), options_.args.begin(), options_.args.end());

  // A log file that does not overwrite another agent's log of the same name.
  int log_fd = -1;
  for (int attempt = 1; log_fd < 0; ++attempt) {
    log_path_ =
        absl::StrCat(LogRoot(), "/", stem,
                     attempt == 1 ? "" : absl::StrCat("-", attempt), ".log");
    log_fd =
        open(log_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (log_fd < 0 && (errno != EEXIST || attempt > 100)) {
      return absl::InternalError(
          ErrnoMessage(absl::StrCat("open ", log_path_), errno));
    }
  }
  std::string header = absl::StrCat("# ", absl::StrJoin(args, " "), "\n");
  (void)!write(log_fd, header.data(), header.size());

  // Everything the child needs is prepared before fork: after fork only
  // async-signal-safe calls are allowed (the test process has gRPC threads).
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const char* child_dir = dir_.c_str();
  const char* exec_path = binary_at > 0 ? argv[0] : binary.c_str();

  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(log_fd);
    return absl::InternalError(ErrnoMessage("fork", err));
  }
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);  // the test died before prctl
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
    if (chdir(child_dir) != 0) _exit(125);
    execv(exec_path, argv.data());
    static const char kMsg[] = "agent_process: execv failed\n";
    (void)!write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
    _exit(127);
  }
  setpgid(pid, pid);  // also in the parent, so kill(-pid) works right away
  close(log_fd);
  pid_ = pid;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> AgentProcess::TlsFlags() {
  absl::StatusOr<RunPki*> pki = RunPki::Get();
  if (!pki.ok()) return pki.status();
  absl::StatusOr<security::TlsFiles> files = (*pki)->Files(options_.tls_name);
  if (!files.ok()) return files.status();
  // Copies of the agent's own, which a test may replace (rotation) without
  // touching the run PKI that other agents use.
  tls_files_.cert = absl::StrCat(dir_, "/agent.pem");
  tls_files_.key = absl::StrCat(dir_, "/agent.key");
  tls_files_.ca = files->ca;
  for (const auto& [from, to] : {std::pair{files->cert, tls_files_.cert},
                                 std::pair{files->key, tls_files_.key}}) {
    std::optional<std::string> contents = ReadFile(from);
    if (!contents.has_value()) {
      return absl::NotFoundError(absl::StrCat("cannot read ", from));
    }
    if (absl::Status s = WriteFile(to, *contents); !s.ok()) return s;
    chmod(to.c_str(), 0600);
  }
  identity_ = security::testing::TestPki::AgentIdentity(options_.tls_name);
  return std::vector<std::string>{
      absl::StrCat("--tls_cert=", tls_files_.cert),
      absl::StrCat("--tls_key=", tls_files_.key),
      absl::StrCat("--tls_ca=", tls_files_.ca),
      absl::StrCat("--tls_policy=", (*pki)->policy()),
  };
}

absl::StatusOr<std::shared_ptr<security::Credentials>>
AgentProcess::ClientCredentials() const {
  if (insecure()) return security::Credentials::Insecure();
  absl::StatusOr<RunPki*> pki = RunPki::Get();
  if (!pki.ok()) return pki.status();
  return (*pki)->ClientCredentials("operator");
}

std::shared_ptr<grpc::Channel> AgentProcess::Dial(
    std::shared_ptr<grpc::ChannelCredentials> credentials,
    bool own_connection) const {
  grpc::ChannelArguments args;
  if (own_connection) args.SetInt("grpc.use_local_subchannel_pool", 1);
  return grpc::CreateCustomChannel(address_, std::move(credentials), args);
}

std::shared_ptr<grpc::Channel> AgentProcess::Dial(
    const security::Credentials& credentials, bool own_connection) const {
  return Dial(credentials.ChannelCredentials(identity_), own_connection);
}

absl::StatusOr<std::unique_ptr<migd::v1::MigrationService::Stub>>
AgentProcess::StubAs(const std::string& who) const {
  std::shared_ptr<security::Credentials> credentials;
  if (insecure()) {
    credentials = security::Credentials::Insecure();
  } else {
    absl::StatusOr<RunPki*> pki = RunPki::Get();
    if (!pki.ok()) return pki.status();
    absl::StatusOr<std::shared_ptr<security::Credentials>> made =
        (*pki)->ClientCredentials(who);
    if (!made.ok()) return made.status();
    credentials = *std::move(made);
  }
  return migd::v1::MigrationService::NewStub(Dial(*credentials));
}

absl::Status AgentProcess::WaitUntilServing() {
  absl::StatusOr<std::shared_ptr<security::Credentials>> credentials =
      ClientCredentials();
  if (!credentials.ok()) return credentials.status();
  const absl::Time deadline = absl::Now() + options_.start_timeout;
  std::string previous;
  while (true) {
    if (!Running()) {
      return absl::AbortedError(absl::StrCat(
          "agent ", options_.name, " ", DescribeWaitStatus(wait_status_),
          " before serving; log ", log_path_, ":\n", LogTail()));
    }
    std::optional<std::string> contents = ReadFile(port_file_);
    if (contents.has_value()) {
      const int port = ParsePort(*contents);
      // Guard against reading a half-written file: take the port when the
      // line is complete or the contents did not change since the last poll.
      if (port != 0 &&
          (absl::EndsWith(*contents, "\n") || *contents == previous)) {
        address_ =
            absl::StrCat(options_.connect_host.empty() ? options_.listen_host
                                                       : options_.connect_host,
                         ":", port);
        channel_ = Dial(**credentials);
        if (channel_->WaitForConnected(absl::ToChronoTime(deadline))) {
          stub_ = migd::v1::MigrationService::NewStub(channel_);
          return absl::OkStatus();
        }
        break;
      }
      previous = *contents;
    }
    if (absl::Now() >= deadline) break;
    absl::SleepFor(kPollInterval);
  }
  return absl::DeadlineExceededError(absl::StrCat(
      "agent ", options_.name, " did not serve within ",
      absl::FormatDuration(options_.start_timeout),
      address_.empty() ? " (no port file)"
                       : absl::StrCat(" (port file says ", address_, ")"),
      insecure() ? ""
                 : absl::StrCat("; the harness calls over TLS as the operator",
                                identity_.empty()
                                    ? ""
                                    : absl::StrCat(", expecting ", identity_)),
      "; log ", log_path_, ":\n", LogTail()));
}

bool AgentProcess::Running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    wait_status_ = status;
    return false;
  }
  return r == 0;
}

bool AgentProcess::WaitForExit(absl::Time deadline) {
  while (Running()) {
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(kPollInterval);
  }
  return true;
}

absl::Status AgentProcess::Kill(int sig) {
  if (!Running()) return absl::OkStatus();
  const bool fatal = sig == SIGKILL || sig == SIGTERM;
  if (fatal) signalled_ = true;
  if (kill(-pid_, sig) != 0 && errno != ESRCH) {
    return absl::InternalError(
        ErrnoMessage(absl::StrCat("kill agent ", options_.name), errno));
  }
  if (!fatal) return absl::OkStatus();
  if (!WaitForExit(absl::Now() + absl::Seconds(10))) {
    return absl::DeadlineExceededError(absl::StrCat(
        "agent ", options_.name, " did not exit after signal ", sig));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> AgentProcess::Stop(absl::Duration grace) {
  // An open client connection holds up a gRPC server's shutdown until its
  // deadline; let the agent shut down as fast as it can.
  stub_.reset();
  channel_.reset();
  if (Running()) {
    signalled_ = true;
    kill(-pid_, SIGTERM);
    if (!WaitForExit(absl::Now() + grace)) {
      kill(-pid_, SIGKILL);
      if (!WaitForExit(absl::Now() + absl::Seconds(10))) {
        return absl::DeadlineExceededError(absl::StrCat(
            "agent ", options_.name, " (pid ", pid_, ") survived SIGKILL"));
      }
    }
  }
  // Whatever the agent left in its group (it should leave nothing).
  if (pid_ > 0) kill(-pid_, SIGKILL);
  return DescribeWaitStatus(wait_status_);
}

AgentProcess::~AgentProcess() {
  if (pid_ <= 0) return;
  // Start() already reported an agent that died before serving.
  const bool died_on_its_own = serving_ && !Running() && !signalled_;
  absl::StatusOr<std::string> how = Stop();
  if (died_on_its_own) {
    std::cerr << "agent_process: agent " << options_.name << " (pid " << pid_
              << ") had exited on its own: " << DescribeWaitStatus(wait_status_)
              << "; log " << log_path_ << ":\n"
              << LogTail() << std::endl;
  } else if (!how.ok()) {
    std::cerr << "agent_process: " << how.status() << std::endl;
  }
}

std::string AgentProcess::LogTail(size_t max_bytes) const {
  std::optional<std::string> contents = ReadFile(log_path_);
  if (!contents.has_value()) return "(no log)";
  if (contents->size() <= max_bytes) return *contents;
  return absl::StrCat("...", contents->substr(contents->size() - max_bytes));
}

// ---- Client helpers ------------------------------------------------------

bool IsTerminal(migd::v1::Phase phase) {
  return phase == migd::v1::PHASE_SUCCEEDED ||
         phase == migd::v1::PHASE_FAILED || phase == migd::v1::PHASE_CANCELLED;
}

bool IsTransferPhase(migd::v1::Phase phase) {
  return phase == migd::v1::PHASE_PRE_COPY ||
         phase == migd::v1::PHASE_STOP_COPY;
}

std::string ErrorReasonOf(const grpc::ClientContext& context) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find("migd-error-reason");
  if (it == trailers.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

absl::StatusOr<std::map<std::string, migd::v1::Device>> DeviceMap(
    migd::v1::MigrationService::Stub& stub, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  migd::v1::ListDevicesResponse response;
  grpc::Status status =
      stub.ListDevices(&context, migd::v1::ListDevicesRequest(), &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("ListDevices: ", status.error_message()));
  }
  std::map<std::string, migd::v1::Device> devices;
  for (const migd::v1::Device& device : response.devices()) {
    devices[device.name()] = device;
  }
  return devices;
}

absl::StatusOr<Migration> GetMigration(migd::v1::MigrationService::Stub& stub,
                                       absl::string_view job_id,
                                       absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  migd::v1::GetMigrationRequest request;
  request.set_job_id(std::string(job_id));
  Migration migration;
  grpc::Status status = stub.GetMigration(&context, request, &migration);
  if (!status.ok()) {
    return absl::Status(
        static_cast<absl::StatusCode>(status.error_code()),
        absl::StrCat("GetMigration ", job_id, ": ", status.error_message()));
  }
  return migration;
}

absl::StatusOr<Migration> WaitForPhase(
    migd::v1::MigrationService::Stub& stub, absl::string_view job_id,
    const std::function<bool(const Migration&)>& predicate,
    absl::Time deadline) {
  std::optional<Migration> last;
  auto ended = [&](const Migration& m) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " ended without reaching the awaited ",
                     "condition: ", Snapshot(m)));
  };
  auto timed_out = [&]() {
    return absl::DeadlineExceededError(absl::StrCat(
        "job ", job_id, ": condition not reached by the deadline; last seen: ",
        last.has_value() ? Snapshot(*last) : "(nothing)"));
  };

  // WatchMigration: a snapshot, then one event per change, until the end.
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(deadline));
    migd::v1::WatchMigrationRequest request;
    request.set_job_id(std::string(job_id));
    std::unique_ptr<grpc::ClientReader<migd::v1::MigrationEvent>> reader =
        stub.WatchMigration(&context, request);
    migd::v1::MigrationEvent event;
    while (reader->Read(&event)) {
      last = event.migration();
      if (predicate(*last) || IsTerminal(last->phase())) {
        context.TryCancel();
        reader->Finish();
        if (predicate(*last)) return *last;
        return ended(*last);
      }
    }
    grpc::Status status = reader->Finish();
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
        absl::Now() >= deadline) {
      return timed_out();
    }
    if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
      return absl::NotFoundError(absl::StrCat("WatchMigration ", job_id, ": ",
                                              status.error_message()));
    }
    // The stream ended early (or is not served): go on by polling.
  }

  while (true) {
    absl::StatusOr<Migration> m = GetMigration(
        stub, job_id, std::max(deadline - absl::Now(), absl::Milliseconds(1)));
    if (m.ok()) {
      last = *m;
      if (predicate(*last)) return *last;
      if (IsTerminal(last->phase())) return ended(*last);
    } else if (absl::IsNotFound(m.status())) {
      return m.status();
    }
    if (absl::Now() >= deadline) return timed_out();
    absl::SleepFor(std::min(kPollInterval * 2, deadline - absl::Now()));
  }
}

absl::StatusOr<Migration> WaitForEnd(migd::v1::MigrationService::Stub& stub,
                                     absl::string_view job_id,
                                     absl::Time deadline) {
  return WaitForPhase(
      stub, job_id, [](const Migration& m) { return IsTerminal(m.phase()); },
      deadline);
}

std::string DescribeCall(const CallResult& result) {
  return absl::StrCat("code ", result.status.error_code(), " reason '",
                      result.reason, "' message '",
                      result.status.error_message(), "'");
}

CallResult CallPrepareIncoming(migd::v1::MigrationService::Stub& stub,
                               const migd::v1::PrepareIncomingRequest& request,
                               migd::v1::PrepareIncomingResponse* response,
                               absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  CallResult result;
  result.status = stub.PrepareIncoming(&context, request, response);
  result.reason = ErrorReasonOf(context);
  return result;
}

CallResult CallStartMigration(migd::v1::MigrationService::Stub& stub,
                              const migd::v1::StartMigrationRequest& request,
                              Migration* response, absl::Duration timeout) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  CallResult result;
  result.status = stub.StartMigration(&context, request, response);
  result.reason = ErrorReasonOf(context);
  return result;
}

absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

absl::StatusOr<std::string> MakeTestDir(absl::string_view stem) {
  std::string dir =
      absl::StrCat(TempRoot(), "/", SanitizeFileName(stem), ".XXXXXX");
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(
        ErrnoMessage(absl::StrCat("mkdtemp ", dir), errno));
  }
  return dir;
}

absl::Status StopCleanly(AgentProcess& agent, absl::Duration grace) {
  if (!agent.Running()) {
    return absl::AbortedError(
        absl::StrCat("agent ", agent.name(), " died during the test; log ",
                     agent.log_path(), ":\n", agent.LogTail()));
  }
  absl::StatusOr<std::string> how = agent.Stop(grace);
  if (!how.ok()) return how.status();
  if (*how != "exited 0") {
    return absl::InternalError(absl::StrCat("agent ", agent.name(),
                                            " on SIGTERM: ", *how, "; log ",
                                            agent.log_path()));
  }
  return absl::OkStatus();
}

}  // namespace migd::e2e
