// cli/commands.h
//
// migctl's commands over migd.v1.MigrationService (and migd.v1.HostService
// for `migctl host ...`). Everything the program does
// goes through an Env (output streams, how to reach an agent, the environment
// variables, the terminal), so a test can run a whole command line against an
// in-process fake agent and look at what was printed and the exit status.
//
// Before any RPC, a command resolves the agents it talks to (endpoint.h) and
// makes their credentials (security::Credentials, which checks the TLS
// files); what is wrong there is printed as it is and exits kExitUsage.

#ifndef MIGD_CLI_COMMANDS_H_
#define MIGD_CLI_COMMANDS_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/endpoint.h"
#include "grpcpp/grpcpp.h"
#include "migd/security/credentials.h"

namespace migd::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure =
    1;  // an RPC failed or the job did not succeed
inline constexpr int kExitUsage = 2;  // also a config or TLS file problem
// `check` answered: a device cannot migrate (see its report).
inline constexpr int kExitBlocked = 3;

// Trailing metadata key of the machine-readable error reason.
inline constexpr char kErrorReasonKey[] = "migd-error-reason";

struct Env {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  // A channel to the agent at `address` ("host:port") with `credentials`,
  // whose certificate must carry `expected_identity` when that is not empty:
  // credentials.Dial(address, expected_identity, ChannelUse::kControl) (a
  // test may route the address elsewhere).
  std::function<std::shared_ptr<grpc::ChannelInterface>(
      const security::Credentials& credentials, const std::string& address,
      const std::string& expected_identity)>
      dial;
  // The process environment: MIGCTL_*, XDG_CONFIG_HOME, HOME. None when null.
  EnvLookup getenv;
  // Whether `out` is a terminal (progress bar redrawn in place), and its width.
  bool out_is_terminal = false;
  int terminal_width = 80;
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// The Env of a program of its own, printing to `out` and `err`: channels
// dialed with the credentials for control calls (ChannelUse::kControl) and
// the process's environment variables. Not a terminal: a caller whose `out`
// is one sets out_is_terminal and terminal_width.
Env ProcessEnv(std::ostream* out, std::ostream* err);

// Runs a whole command line (the arguments after the program name): parses it,
// prints help or a usage error, or runs the command. Returns the exit status.
int Main(const std::vector<std::string>& args, const Env& env);

// Runs one parsed command. Returns the exit status.
int RunCommand(const Options& options, const Env& env);

// "migctl: <command>: <CODE>: <message> (reason: <reason>)", the reason part
// only when `reason` is not empty. No trailing newline.
std::string FormatRpcError(const std::string& command,
                           const grpc::Status& status,
                           const std::string& reason);

// "NOT_FOUND", "UNAVAILABLE", ...; the number for a code gRPC does not define.
std::string StatusCodeName(grpc::StatusCode code);

}  // namespace migd::cli

#endif  // MIGD_CLI_COMMANDS_H_
