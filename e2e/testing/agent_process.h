// e2e/testing/agent_process.h
//
// Starts real migd agents as child processes for loopback tests, and the small
// client helpers those tests share. Each agent runs in its own process group
// and its own fresh directory, listens on 127.0.0.1 (or where AgentOptions
// says, e.g. in another network namespace) on a port it picks itself
// and reports through --port_file; the handle waits for that file with a
// deadline (never a fixed sleep) and stops and reaps the agent when destroyed.
//
// The agent binary is found through the MIGD_BINARY environment variable or a
// --migd_binary=PATH command-line argument of the test (set from
// $(rootpath //migd:migd) in the test's BUILD rule). Agent stdout/stderr go to
// a log file in $TEST_UNDECLARED_OUTPUTS_DIR (or $TEST_TMPDIR), kept after the
// test for post-mortems.
//
// Agents serve mutual TLS unless a test asks for --insecure: each gets an
// agent certificate of the run's PKI (run_pki.h; agent-a unless told), that
// PKI's CA bundle and the harness's policy, under which every harness agent
// trusts the others as peers. The handle's own client calls as the operator
// and checks that the agent's certificate carries the agent's identity.
//
// Thread-safety: an AgentProcess is used from the thread that created it. The
// agent is started with PR_SET_PDEATHSIG, which fires when that *thread*
// exits, so create agents from the test's main thread (gtest's default).

#ifndef MIGD_E2E_TESTING_AGENT_PROCESS_H_
#define MIGD_E2E_TESTING_AGENT_PROCESS_H_

#include <signal.h>
#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "migd/security/credentials.h"
#include "migd/security/tls_files.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::e2e {

// Path of the migd binary under test, made absolute: $MIGD_BINARY, else the
// value of a --migd_binary=PATH argument of this process. kNotFound when
// neither is set, kFailedPrecondition when the file is not executable.
absl::StatusOr<std::string> MigdBinaryPath();

struct AgentOptions {
  // Passed as --name and used for the log file name ("<name>.log"); should be
  // unique within the test run (e.g. "<Suite>.<Test>.source").
  std::string name = "agent";
  // Extra flags, e.g. {"--emulated_devices=emu0,emu1"}. --listen, --port_file
  // and --name are added by the harness, and the TLS flags (see `security`);
  // --plugin_dir= (no plugins) unless they hold a --plugin_dir.
  std::vector<std::string> args;
  enum class Security {
    // Mutual TLS: the harness adds --tls_cert and --tls_key (copies of the
    // run PKI's `tls_name` certificate and key in the agent's directory, so
    // that a test may replace them), --tls_ca (the run PKI's CA bundle) and
    // --tls_policy (the harness's policy, run_pki.h).
    kMutualTls,
    // Plaintext: --insecure. Also chosen when `args` holds "--insecure".
    kInsecure,
    // No flag added: `args` say how the agent is secured, for tests of the
    // agent's own checks of its TLS flags.
    kAsArgsSay,
  };
  Security security = Security::kMutualTls;
  // kMutualTls: which agent certificate of the run PKI the agent serves and
  // dials with ("agent-a" ... "agent-z", run_pki.h); its identity is
  // spiffe://migd.local/agent/<tls_name>.
  std::string tls_name = "agent-a";
  // When not empty, written to "devices.conf" in the agent's directory and
  // passed as --devices_config.
  std::string devices_config;
  // How long the agent may take to write its port file and accept connections.
  absl::Duration start_timeout = absl::Seconds(30);
  // Binary to run; MigdBinaryPath() when empty.
  std::string binary;
  // The agent's --state_dir (its job journal). Empty: "state" in the agent's
  // own fresh directory. A test that restarts an agent passes the first
  // one's state_dir() again. Not added when `args` has a --state_dir.
  std::string state_dir;
  // Words the agent is started under, before the binary, e.g.
  // {"/usr/bin/nsenter", "--net=/proc/PID/ns/net", "--"} to run it in another
  // network namespace. The first is executed (an absolute path) and must
  // exec the agent in the same process (nsenter without --fork does), so
  // that pid() and the process group are the agent's. Empty: the binary.
  std::vector<std::string> exec_prefix;
  // The host the agent listens on (--listen=HOST:PORT), e.g. "0.0.0.0" for an
  // agent reached over several interfaces.
  std::string listen_host = "127.0.0.1";
  // The port it listens on; 0: one it picks. A fixed port lets an agent
  // restarted on its state dir be reached where its peers knew it.
  int listen_port = 0;
  // The host the harness dials, when not listen_host (e.g. the agent listens
  // on 0.0.0.0 and is reached at 10.0.1.2). address() names it.
  std::string connect_host;
};

class AgentProcess {
 public:
  // Spawns the agent and waits until it serves. Fails with kDeadlineExceeded
  // when it does not serve in time, kAborted when it exits first; both carry
  // the tail of the agent's log.
  static absl::StatusOr<std::unique_ptr<AgentProcess>> Start(
      AgentOptions options);

  // Stops the agent (SIGTERM to its group, SIGKILL after a grace period) and
  // reaps it. Reports on stderr if the agent had died on its own.
  ~AgentProcess();

  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  // "127.0.0.1:PORT" (else connect_host or listen_host, and the port), both
  // for MigrationService and TransferService.
  const std::string& address() const { return address_; }
  const std::string& name() const { return options_.name; }
  // The agent's working directory (fresh, under $TEST_TMPDIR).
  const std::string& dir() const { return dir_; }
  // Its journal directory (--state_dir).
  const std::string& state_dir() const { return state_dir_; }
  const std::string& log_path() const { return log_path_; }
  pid_t pid() const { return pid_; }

  // A client of the agent's MigrationService (one channel per agent): as the
  // run PKI's operator, expecting the agent's identity; in plaintext for an
  // insecure agent.
  migd::v1::MigrationService::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }

  // The agent's certificate identity, spiffe://migd.local/agent/<tls_name>;
  // "" unless it serves mutual TLS set up by the harness (kMutualTls). What a
  // PrepareIncomingRequest names as source_identity when this agent is the
  // source, and a StartMigrationRequest as destination_identity.
  const std::string& identity() const { return identity_; }
  bool insecure() const {
    return options_.security == AgentOptions::Security::kInsecure;
  }
  // kMutualTls: the agent's certificate and key (the files it was started
  // with, in dir(): renaming new ones over them rotates its certificate) and
  // the run PKI's CA bundle.
  const security::TlsFiles& tls_files() const { return tls_files_; }

  // A new channel to the agent with `credentials`, checking that the agent's
  // certificate carries identity() (when not empty). With `own_connection`
  // the channel does not share a connection with any other channel
  // (grpc.use_local_subchannel_pool): its calls see a fresh handshake.
  std::shared_ptr<grpc::Channel> Dial(
      std::shared_ptr<grpc::ChannelCredentials> credentials,
      bool own_connection = false) const;
  std::shared_ptr<grpc::Channel> Dial(const security::Credentials& credentials,
                                      bool own_connection = false) const;
  // A MigrationService client calling as `who` of the run PKI ("operator",
  // "observer", "agent-c", or any name issued there); in plaintext for an
  // insecure agent.
  absl::StatusOr<std::unique_ptr<migd::v1::MigrationService::Stub>> StubAs(
      const std::string& who) const;

  // Sends `sig` to the agent's process group and, for a fatal signal, waits
  // for the agent to exit and reaps it. Idempotent once the agent is gone.
  absl::Status Kill(int sig = SIGKILL);

  // SIGTERM, then SIGKILL if the agent has not exited within `grace`; reaps.
  // Closes this handle's client channel first (an open connection holds up
  // the agent's gRPC server shutdown), so stub() must not be used afterwards.
  // Returns how the agent ended ("exited 0", "killed by signal 9 (Killed)").
  absl::StatusOr<std::string> Stop(absl::Duration grace = absl::Seconds(10));

  // True while the process has not exited (reaps it if it has).
  bool Running();

  // True once Kill(SIGKILL/SIGTERM) or Stop() was called: an exit after that
  // is expected, any other exit is the agent dying on its own.
  bool killed_by_test() const { return signalled_; }

  // The last `max_bytes` of the agent's log.
  std::string LogTail(size_t max_bytes = 4096) const;

 private:
  explicit AgentProcess(AgentOptions options) : options_(std::move(options)) {}

  absl::Status Spawn(const std::string& binary);
  absl::Status WaitUntilServing();
  // Waits (polling waitpid) until the process exits or `deadline`. True when
  // it has been reaped.
  bool WaitForExit(absl::Time deadline);

  // The credentials stub() calls with, per options_.security.
  absl::StatusOr<std::shared_ptr<security::Credentials>> ClientCredentials()
      const;
  // kMutualTls: copies the agent's certificate and key into dir_ and returns
  // the TLS flags.
  absl::StatusOr<std::vector<std::string>> TlsFlags();

  AgentOptions options_;
  std::string identity_;
  security::TlsFiles tls_files_;
  std::string dir_;
  std::string port_file_;
  std::string state_dir_;
  std::string log_path_;
  std::string address_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  bool serving_ = false;    // Start() succeeded
  bool signalled_ = false;  // we sent a terminating signal
  int wait_status_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<migd::v1::MigrationService::Stub> stub_;
};

// ---- Client helpers ------------------------------------------------------

// True for PHASE_SUCCEEDED, PHASE_FAILED and PHASE_CANCELLED.
bool IsTerminal(migd::v1::Phase phase);

// True for the phases in which device state moves (PRE_COPY, STOP_COPY).
bool IsTransferPhase(migd::v1::Phase phase);

// Value of the "migd-error-reason" trailing metadata after a finished call,
// or "" when absent.
std::string ErrorReasonOf(const grpc::ClientContext& context);

// ListDevices as name -> Device.
absl::StatusOr<std::map<std::string, migd::v1::Device>> DeviceMap(
    migd::v1::MigrationService::Stub& stub,
    absl::Duration timeout = absl::Seconds(10));

absl::StatusOr<migd::v1::Migration> GetMigration(
    migd::v1::MigrationService::Stub& stub, absl::string_view job_id,
    absl::Duration timeout = absl::Seconds(10));

// Waits until the job satisfies `predicate` and returns that snapshot. Uses
// WatchMigration (falls back to polling GetMigration if the stream is not
// available). Fails with kDeadlineExceeded at `deadline`, and with
// kFailedPrecondition when the job ends (terminal phase) without satisfying
// the predicate; both messages include the last snapshot seen.
absl::StatusOr<migd::v1::Migration> WaitForPhase(
    migd::v1::MigrationService::Stub& stub, absl::string_view job_id,
    const std::function<bool(const migd::v1::Migration&)>& predicate,
    absl::Time deadline);

// WaitForPhase until the job is in a terminal phase.
absl::StatusOr<migd::v1::Migration> WaitForEnd(
    migd::v1::MigrationService::Stub& stub, absl::string_view job_id,
    absl::Time deadline);

// Outcome of a unary RPC: its status and the "migd-error-reason" trailer, so
// a test can check the code, the reason and the message of a refusal.
struct CallResult {
  grpc::Status status;
  std::string reason;
};

// "code N reason 'R' message 'M'", for assertion messages.
std::string DescribeCall(const CallResult& result);

// PrepareIncoming and StartMigration with a deadline of `timeout`.
CallResult CallPrepareIncoming(migd::v1::MigrationService::Stub& stub,
                               const migd::v1::PrepareIncomingRequest& request,
                               migd::v1::PrepareIncomingResponse* response,
                               absl::Duration timeout = absl::Seconds(30));
CallResult CallStartMigration(migd::v1::MigrationService::Stub& stub,
                              const migd::v1::StartMigrationRequest& request,
                              migd::v1::Migration* response,
                              absl::Duration timeout = absl::Seconds(30));

// A google.protobuf.Duration as an absl::Duration.
absl::Duration FromProtoDuration(const google::protobuf::Duration& d);

// A fresh directory "<stem>.XXXXXX" under $TEST_TMPDIR (else $TMPDIR, /tmp),
// for files a test hands to agents before they start (e.g. device logs).
absl::StatusOr<std::string> MakeTestDir(absl::string_view stem);

// Ends a test's use of an agent it did not kill itself: kAborted (with the
// log tail) when the agent died on its own during the test; otherwise stops
// it with SIGTERM and returns kInternal unless it exited 0.
absl::Status StopCleanly(AgentProcess& agent,
                         absl::Duration grace = absl::Seconds(10));

}  // namespace migd::e2e

#endif  // MIGD_E2E_TESTING_AGENT_PROCESS_H_
