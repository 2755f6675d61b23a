// cli/args.h
//
// migctl's command line: `migctl [global flags] COMMAND [command flags]
// [ARGS]`. Global flags (--agent, --output, --timeout, --help) may appear
// anywhere; command flags only after their command. Flags take `--name=value`
// or
// `--name value`. Everything wrong with a command line is reported as a usage
// error that names the command and what was wrong, before any RPC is made.

#ifndef MIGD_CLI_ARGS_H_
#define MIGD_CLI_ARGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace migd::cli {

inline constexpr char kDefaultAgent[] = "127.0.0.1:7070";
inline constexpr absl::Duration kDefaultTimeout = absl::Seconds(30);

enum class OutputFormat { kText, kJson };

struct DevicePairArg {
  std::string source;
  std::string destination;

  bool operator==(const DevicePairArg& o) const {
    return source == o.source && destination == o.destination;
  }
};

struct Options {
  // Global.
  std::string agent = kDefaultAgent;
  OutputFormat output = OutputFormat::kText;
  absl::Duration timeout = kDefaultTimeout;
  bool timeout_given = false;  // --timeout was on the command line
  bool help = false;           // --help, -h or the `help` command

  // "devices", "prepare", "migrate", "status", "watch", "cancel" or "list";
  // empty only together with `help`.
  std::string command;

  // Command flags and arguments (which ones are set depends on `command`).
  std::string job;  // --job, or the JOB argument of status/watch/cancel
  std::vector<DevicePairArg> devices;
  std::string source;       // prepare --source
  std::string destination;  // migrate --destination
  std::string token;        // migrate --token
};

// Parses the arguments after the program name. On a usage error returns
// kInvalidArgument whose message says what was wrong ("prepare: missing
// --job", "unknown command 'foo'"), and sets *command (if not null) to the
// command word when one was seen, so the caller can print its usage line.
absl::StatusOr<Options> ParseArgs(const std::vector<std::string>& args,
                                  std::string* command = nullptr);

// Parses "SRC:DST[,SRC:DST...]". A name may itself be a PCI address
// ("0000:3b:00.1" or "3b:00.1"): the pair is split at the one colon that
// leaves a plain name or a PCI address on each side. kInvalidArgument for an
// empty list or element, an element that is not a pair, an ambiguous split,
// or a device named twice on the same side.
absl::StatusOr<std::vector<DevicePairArg>> ParseDevicePairs(
    absl::string_view text);

// True for "DDDD:BB:DD.F" and "BB:DD.F" (hex digits, function 0-7).
bool IsPciAddress(absl::string_view s);

// "usage: migctl [global flags] prepare --job=J ..." for one command, or the
// general usage line when `command` is empty or unknown. No trailing newline.
std::string UsageLine(absl::string_view command);

// The full --help text, ending in a newline.
std::string HelpText();

}  // namespace migd::cli

#endif  // MIGD_CLI_ARGS_H_
