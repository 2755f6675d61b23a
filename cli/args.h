// cli/args.h
//
// migctl's command line: `migctl [global flags] COMMAND [command flags]
// [ARGS]`. Global flags (--agent, --output, --timeout, the TLS flags, --help)
// may appear anywhere; command flags only after their command. Flags take
// `--name=value` or `--name value`. Everything wrong with a command line is
// reported as a usage error that names the command and what was wrong, before
// any RPC is made. What the agent names and TLS flags resolve to (with the
// environment and the config file) is endpoint.h's business.

#ifndef MIGD_CLI_ARGS_H_
#define MIGD_CLI_ARGS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace migd::cli {

inline constexpr char kDefaultAgent[] = "127.0.0.1:7070";
inline constexpr absl::Duration kDefaultTimeout = absl::Seconds(30);

enum class OutputFormat { kText, kJson };

// A class of device, for the agent to pick one of (migd.v1.DeviceClass):
// "pci:VVVV:DDDD[:SVVV:SDDD]", "mdev:TYPE[@PARENT]", or, where a prepare
// may name one of the agent's configured devices by kind, "kind:KIND".
struct DeviceClassArg {
  std::string pci_ids;
  std::string mdev_type;
  std::string mdev_parent;
  std::string agent_kind;

  bool empty() const {
    return pci_ids.empty() && mdev_type.empty() && agent_kind.empty();
  }
  bool operator==(const DeviceClassArg&) const = default;
};

// Whether `text` is spelled as a class: it starts with "pci:", "mdev:" or
// "kind:".
bool IsDeviceClassArg(absl::string_view text);

// Parses a class; "kind:" only when `allow_kind`. kInvalidArgument saying
// what is wrong (without quoting `text`: the caller says where it was). The
// ids and names themselves the agent checks.
absl::StatusOr<DeviceClassArg> ParseDeviceClassArg(absl::string_view text,
                                                   bool allow_kind);

struct DevicePairArg {
  std::string source;
  // The destination device's name, or (a prepare only) the class the
  // destination agent picks one of; exactly one is set.
  std::string destination;
  DeviceClassArg destination_class;

  bool operator==(const DevicePairArg&) const = default;
};

// One KEY=CLASS of `host allocate` (CLASS: pci: or mdev:).
struct AllocateArg {
  std::string key;
  DeviceClassArg device_class;

  bool operator==(const AllocateArg&) const = default;
};

// "KEY=pci:15b3:101e", "KEY=mdev:mbochs-small@mbochs"; kInvalidArgument
// saying what is wrong.
absl::StatusOr<AllocateArg> ParseAllocateArg(absl::string_view text);

// migrate's migration policy flags. Unset values leave the agent's default
// (see migd.v1.MigrationPolicy).
struct PolicyArgs {
  std::optional<absl::Duration> downtime_limit;  // --downtime_limit
  std::optional<uint64_t> bandwidth;             // --bandwidth, bytes/s
  std::optional<uint32_t> max_iterations;        // --max_iterations
  std::optional<absl::Duration> max_precopy_time;
  // --on_no_convergence: true for "fail", false for "switchover".
  std::optional<bool> fail_if_not_converged;
  std::optional<absl::Duration> ack_timeout;  // --ack_timeout
  bool allow_mixed_p2p = false;               // --allow_mixed_p2p
  bool no_precopy = false;                    // --no_precopy
  std::optional<uint32_t> chunk_bytes;        // --chunk
  std::optional<uint32_t> streams;            // --streams
  std::optional<absl::Duration> phase_timeout;

  bool operator==(const PolicyArgs& o) const {
    return downtime_limit == o.downtime_limit && bandwidth == o.bandwidth &&
           max_iterations == o.max_iterations &&
           max_precopy_time == o.max_precopy_time &&
           fail_if_not_converged == o.fail_if_not_converged &&
           ack_timeout == o.ack_timeout &&
           allow_mixed_p2p == o.allow_mixed_p2p && no_precopy == o.no_precopy &&
           chunk_bytes == o.chunk_bytes && phase_timeout == o.phase_timeout &&
           streams == o.streams;
  }
};

// One IOVA range of migrate's --dirty_ranges.
struct IovaRangeArg {
  uint64_t iova = 0;
  uint64_t length = 0;

  bool operator==(const IovaRangeArg& o) const {
    return iova == o.iova && length == o.length;
  }
};

// The DMA page size when --dirty_page_size is not given, and the largest one
// accepted (migd.v1.DirtyTracking.page_size).
inline constexpr uint64_t kDefaultDirtyPageSize = 4096;
inline constexpr uint64_t kMaxDirtyPageSize = uint64_t{1} << 30;

// The chunk sizes the agent accepts (migd.v1.MigrationPolicy.chunk_bytes).
inline constexpr uint64_t kMinChunkBytes = 4 << 10;
inline constexpr uint64_t kMaxChunkBytes = 8 << 20;

struct Options {
  // Global.
  // --agent (or the AGENT argument of plugins): a config agent's name or
  // HOST:PORT; "" when not given (then the config's default_agent, else
  // kDefaultAgent).
  std::string agent;
  std::string agent_identity;    // --agent_identity
  std::string config;            // --config
  std::string tls_cert;          // --tls_cert
  std::string tls_key;           // --tls_key
  std::string tls_ca;            // --tls_ca
  std::optional<bool> insecure;  // --insecure (or --insecure=false)
  OutputFormat output = OutputFormat::kText;
  absl::Duration timeout = kDefaultTimeout;
  bool timeout_given = false;  // --timeout was on the command line
  bool help = false;           // --help, -h or the `help` command

  // "devices", "prepare", "migrate", "check", "status", "watch",
  // "dirty-pages", "cancel", "resolve", "list", "plugins", "identity", or a
  // host command: "host status", "host bind", "host unbind", "host vfs",
  // "host mdev-types", "host mdev-create", "host mdev-remove", "host
  // allocate", "host release", "host allocations"; empty only together
  // with `help`.
  std::string command;

  // Command flags and arguments (which ones are set depends on `command`).
  // --job, or the JOB argument of status/watch/dirty-pages/cancel/resolve
  std::string job;
  std::vector<DevicePairArg> devices;
  std::string source;           // prepare --source (for the record)
  std::string source_identity;  // prepare --source_identity
  std::string source_agent;     // prepare --source_agent
  // migrate and check --destination: a config agent's name or HOST:PORT.
  std::string destination;
  // migrate and check --destination_identity
  std::string destination_identity;
  std::string token;  // migrate --token
  PolicyArgs policy;  // migrate's policy flags
  // migrate --dirty_ranges (empty: no dirty tracking) and --dirty_page_size
  // (kDefaultDirtyPageSize unless given; only with --dirty_ranges).
  std::vector<IovaRangeArg> dirty_ranges;
  uint64_t dirty_page_size = kDefaultDirtyPageSize;
  bool wait = false;  // dirty-pages --wait
  // resolve --outcome: "source" or "destination".
  std::string outcome;

  // The host commands' positional arguments, in order: ADDRESS (status,
  // bind, unbind), PF COUNT (vfs), PARENT (mdev-types), PARENT TYPE
  // (mdev-create), UUID (mdev-remove), OWNER (allocate, release; optional
  // for allocations). Checked by the agent, except COUNT.
  std::vector<std::string> args;
  std::vector<AllocateArg> allocate;  // host allocate KEY=CLASS...
  uint32_t vf_count = 0;              // host vfs COUNT
  std::string driver;         // host bind, allocate --driver (a module name)
  bool to_no_driver = false;  // host unbind --to_no_driver
  std::string uuid;           // host mdev-create --uuid
};

// Parses the arguments after the program name. On a usage error returns
// kInvalidArgument whose message says what was wrong ("prepare: missing
// --job", "unknown command 'foo'"), and sets *command (if not null) to the
// command word when one was seen, so the caller can print its usage line.
absl::StatusOr<Options> ParseArgs(const std::vector<std::string>& args,
                                  std::string* command = nullptr);

// Parses "SRC:DST[,SRC:DST...]". A name may itself be a PCI address
// ("0000:3b:00.1" or "3b:00.1"): the pair is split at the one colon that
// leaves a plain name or a PCI address on each side. DST may instead be a
// class ("edu0:pci:1234:11e8", "vm-gpu:mdev:mbochs-small@mbochs",
// "src0:kind:emulated"): the destination agent picks the device when the
// job is prepared; several pairs may name the same class. kInvalidArgument
// for an empty list or element, an element that is not a pair, an
// ambiguous split, a malformed class, or a device named twice on the same
// side.
absl::StatusOr<std::vector<DevicePairArg>> ParseDevicePairs(
    absl::string_view text);

// Parses a byte count: digits with an optional fraction and an optional
// binary unit, B, K/KiB, M/MiB, G/GiB or T/TiB (case-insensitive; K = KiB =
// 1024): "4096", "500MiB", "1.5GiB". The result is rounded down to whole
// bytes and must be at least 1. kInvalidArgument saying what is wrong
// otherwise (decimal units such as "MB" are refused as ambiguous).
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

// Parses "IOVA+LEN[,IOVA+LEN...]". Each number is hex with a 0x prefix, or
// decimal with an optional binary unit as ParseByteSize takes it ("0x200000",
// "2MiB", "1048576"); the IOVA may be 0, the length not. kInvalidArgument
// naming the bad element for a malformed one, a range that wraps around the
// 64-bit IOVA space, a range not aligned to `page_size`, or two ranges that
// overlap. The order given is kept.
absl::StatusOr<std::vector<IovaRangeArg>> ParseDirtyRanges(
    absl::string_view text, uint64_t page_size);

// Parses --dirty_page_size: a size (ParseByteSize, or hex with 0x) that is a
// power of two from 4096 to kMaxDirtyPageSize.
absl::StatusOr<uint64_t> ParseDirtyPageSize(absl::string_view text);

// Parses a duration with its unit ("300ms", "1.5s", "2m", "1h30m"); must be
// positive and finite. A bare number is refused: the policy durations range
// from milliseconds to minutes, so the unit matters.
absl::StatusOr<absl::Duration> ParsePolicyDuration(absl::string_view text);

// True for "DDDD:BB:DD.F" and "BB:DD.F" (hex digits, function 0-7).
bool IsPciAddress(absl::string_view s);

// "usage: migctl [global flags] prepare --job=J ..." for one command, or the
// general usage line when `command` is empty or unknown. No trailing newline.
std::string UsageLine(absl::string_view command);

// The full --help text, ending in a newline.
std::string HelpText();

}  // namespace migd::cli

#endif  // MIGD_CLI_ARGS_H_
