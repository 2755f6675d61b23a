#include "cli/args.h"

#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace migd::cli {
namespace {

struct CommandSpec {
  const char* name;
  std::vector<std::string> required;  // flags, without "--"
  std::vector<std::string> optional;
  bool takes_job_arg;  // exactly one positional JOB
  const char* synopsis;
  const char* summary;
  // At most one positional AGENT, instead of --agent.
  bool takes_agent_arg = false;
  // Required positional arguments, by name (host commands): Options::args.
  std::vector<std::string> args = {};
};

// The host commands are "host WORD": `migctl host status ADDRESS`.
constexpr absl::string_view kHostWords =
    "status, bind, unbind, vfs, vf-token, mdev-types, mdev-create, "
    "mdev-remove, "
    "allocate, release, allocations";

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>{
      {"devices", {}, {}, false, "devices", "list the agent's devices"},
      {"prepare",
       {"job", "devices"},
       {"source", "source_identity", "source_agent"},
       false,
       "prepare --job=J --devices=SRC:DST[,SRC:DST...] [--source=TEXT] "
       "[--source_identity=ID | --source_agent=AGENT]",
       "prepare this (destination) agent for job J and print the transfer\n"
       "      token, bound to the source agent's identity: --source_identity,\n"
       "      or learned by asking --source_agent (or --source when it names\n"
       "      a config agent); the token's expiry goes to stderr. DST may be\n"
       "      a class (pci:VVVV:DDDD[:SVVV:SDDD], mdev:TYPE[@PARENT],\n"
       "      kind:KIND): the agent picks, binds or creates a device of it,\n"
       "      named on stderr"},
      {"migrate",
       {"job", "devices", "destination"},
       {"destination_identity", "token", "downtime_limit", "bandwidth",
        "max_iterations", "max_precopy_time", "on_no_convergence",
        "ack_timeout", "allow_mixed_p2p", "no_precopy", "chunk",
        "phase_timeout", "streams", "dirty_ranges", "dirty_page_size"},
       false,
       "migrate --job=J --devices=SRC:DST[,SRC:DST...] "
       "--destination=NAME|HOST:PORT [--destination_identity=ID] [--token=T] "
       "[POLICY FLAGS] "
       "[--dirty_ranges=IOVA+LEN[,IOVA+LEN...] [--dirty_page_size=SIZE]]",
       "migrate devices from this (source) agent to the destination agent\n"
       "      and follow the job to its end; without --token, first prepares\n"
       "      the destination (its address is also its control address);\n"
       "      the token is bound to this agent's identity and the source\n"
       "      to the destination's (learned from their certificates, or\n"
       "      --destination_identity); --dirty_ranges has the devices' DMA\n"
       "      writes tracked (dirty-pages). Without --token, DST may be a\n"
       "      class, as for prepare: the job uses the device picked"},
      {"check",
       {"devices", "destination"},
       {"destination_identity"},
       false,
       "check --devices=SRC:DST[,SRC:DST...] --destination=NAME|HOST:PORT "
       "[--destination_identity=ID]",
       "ask this (source) agent whether the devices can migrate to the\n"
       "      destination agent, changing nothing on either: per device the\n"
       "      plugins on both sides and what blocks it (an incompatible\n"
       "      field with both values, what to do instead), the bandwidth\n"
       "      measured to the destination and the downtime predicted from\n"
       "      the devices' stop-copy sizes; the destination's identity as\n"
       "      migrate learns it. Exit 0 when every device can migrate, 3\n"
       "      when one is blocked"},
      {"status", {}, {}, true, "status JOB", "show one job"},
      {"watch", {}, {}, true, "watch JOB", "follow a job until it ends"},
      {"dirty-pages",
       {},
       {"wait"},
       true,
       "dirty-pages JOB [--wait]",
       "print the pages the devices of source job JOB wrote by DMA, one\n"
       "      line per bitmap the agent serves, until the job ends (the job\n"
       "      must have been started with --dirty_ranges); run it alongside\n"
       "      migrate, see below"},
      {"cancel",
       {},
       {},
       true,
       "cancel JOB",
       "cancel a job in any phase but IN_DOUBT"},
      {"resolve",
       {"outcome"},
       {},
       true,
       "resolve JOB --outcome=source|destination",
       "decide where the devices of job JOB, IN_DOUBT on this agent, run:\n"
       "      the job's other agent cannot say (it is gone for good). source:\n"
       "      a source job resumes its devices, a destination job resets\n"
       "      them; destination: a source job releases its devices for good,\n"
       "      a destination job resumes them. Logged with your identity.\n"
       "      Only when you know the other side does not run the VM"},
      {"list", {}, {}, false, "list", "list the agent's jobs, newest first"},
      {"plugins",
       {},
       {},
       false,
       "plugins [AGENT]",
       "list the vendor plugins the agent (AGENT, else --agent) loaded and\n"
       "      the devices each speaks for, then the plugin files that did not\n"
       "      load and why, and the devices two plugins claim alike",
       /*takes_agent_arg=*/true},
      {"identity",
       {},
       {},
       false,
       "identity",
       "show who answers: the identity, subject, serial number and validity\n"
       "      of the agent's certificate, and this client's own"},
      {"host status",
       {},
       {},
       false,
       "host status ADDRESS",
       "what the agent's host says of PCI device ADDRESS (0000:03:00.1):\n"
       "      its driver (a `driver: NAME` line), the VFIO driver migd would\n"
       "      bind it to and why, its IOMMU group, whether it is in use or\n"
       "      bound by migd, SR-IOV and mdev facts",
       false,
       {"ADDRESS"}},
      {"host bind",
       {},
       {"driver"},
       false,
       "host bind ADDRESS [--driver=MODULE]",
       "bind the device to a VFIO driver: MODULE (vfio_pci,\n"
       "      mlx5_vfio_pci, ...), else migd's choice from modules.alias;\n"
       "      the agent records its original driver first, for unbind",
       false,
       {"ADDRESS"}},
      {"host unbind",
       {},
       {"to_no_driver"},
       false,
       "host unbind ADDRESS [--to_no_driver]",
       "return a device migd bound to the driver it had before;\n"
       "      --to_no_driver leaves any device on no driver instead",
       false,
       {"ADDRESS"}},
      {"host vfs",
       {},
       {},
       false,
       "host vfs PF COUNT",
       "give SR-IOV PF COUNT VFs (0 removes them; a change destroys and\n"
       "      recreates every VF)",
       false,
       {"PF", "COUNT"}},
      {"host vf-token",
       {},
       {},
       false,
       "host vf-token PF",
       "make the agent the owner of the VF token of PF (on vfio-pci with\n"
       "      enable_sriov=1): a random token, stored and set; its VFs' opens\n"
       "      present it. Prints the token's id, never the token",
       false,
       {"PF"}},
      {"host mdev-types",
       {},
       {},
       false,
       "host mdev-types PARENT",
       "the mdev types PARENT offers, and its instances",
       false,
       {"PARENT"}},
      {"host mdev-create",
       {},
       {"uuid"},
       false,
       "host mdev-create PARENT TYPE [--uuid=UUID]",
       "create an mdev instance of TYPE on PARENT and print its UUID\n"
       "      (a fresh one unless --uuid)",
       false,
       {"PARENT", "TYPE"}},
      {"host mdev-remove",
       {},
       {},
       false,
       "host mdev-remove UUID",
       "remove an mdev instance",
       false,
       {"UUID"}},
      {"host allocate",
       {},
       {"driver"},
       false,
       "host allocate OWNER KEY=CLASS [KEY=CLASS...] [--driver=MODULE]",
       "allocate a free device of each CLASS (pci:VVVV:DDDD[:SVVV:SDDD],\n"
       "      mdev:TYPE, mdev:TYPE@PARENT) for OWNER (a domain UUID, a job\n"
       "      id), bound to its VFIO driver (MODULE, else migd's choice) or\n"
       "      created; all or nothing; again for the same OWNER and KEYs\n"
       "      gives the same devices",
       false,
       {"OWNER"}},
      {"host release",
       {},
       {},
       false,
       "host release OWNER",
       "release everything OWNER holds: PCI devices back to their\n"
       "      original driver, mdev instances removed",
       false,
       {"OWNER"}},
      {"host allocations",
       {},
       {},
       false,
       "host allocations [OWNER]",
       "the devices allocated (to OWNER, or to anyone)"},
  };
  return *commands;
}

const CommandSpec* FindCommand(absl::string_view name) {
  for (const auto& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

bool IsGlobalFlag(absl::string_view name) {
  return name == "agent" || name == "output" || name == "timeout" ||
         name == "config" || name == "tls_cert" || name == "tls_key" ||
         name == "tls_ca" || name == "insecure" || name == "agent_identity";
}

// Flags that need no value: `--name` means true; `--name=true|false` also
// works, but `--name VALUE` does not take the next argument.
bool IsBoolFlag(absl::string_view name) {
  return name == "allow_mixed_p2p" || name == "no_precopy" || name == "wait" ||
         name == "insecure" || name == "to_no_driver";
}

// Parses a bool flag's value ("true" or "false").
absl::StatusOr<bool> ParseBoolValue(absl::string_view name,
                                    const std::string& value) {
  if (value == "true") return true;
  if (value == "false") return false;
  return absl::InvalidArgumentError(absl::StrCat(
      "--", name, ": takes no value (or true/false), not '", value, "'"));
}

bool IsCommandFlag(absl::string_view name) {
  for (const auto& c : Commands()) {
    for (const auto& f : c.required) {
      if (f == name) return true;
    }
    for (const auto& f : c.optional) {
      if (f == name) return true;
    }
  }
  return false;
}

bool Contains(const std::vector<std::string>& v, absl::string_view s) {
  for (const auto& e : v) {
    if (e == s) return true;
  }
  return false;
}

bool IsHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// A device name that cannot be mistaken for part of a pair.
bool IsPlainName(absl::string_view s) {
  return !s.empty() && !absl::StrContains(s, ':') && !absl::StrContains(s, ',');
}

bool IsValidJobId(absl::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::Status UsageError(absl::string_view command, absl::string_view what) {
  if (command.empty()) return absl::InvalidArgumentError(what);
  return absl::InvalidArgumentError(absl::StrCat(command, ": ", what));
}

// Plain digits only: SimpleAtoi would also take signs and spaces.
bool ParseDigits(absl::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(text, out);
}

// The largest google.protobuf.Duration (10000 years).
constexpr int64_t kMaxProtoDurationSeconds = 315576000000;

// Sets the policy field of `name` from `value`; a usage error (without the
// command) naming the flag when the value is bad.
absl::Status ParsePolicyFlag(absl::string_view name, const std::string& value,
                             PolicyArgs* p) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, ": ", why));
  };
  if (name == "no_precopy" || name == "allow_mixed_p2p") {
    absl::StatusOr<bool> on = ParseBoolValue(name, value);
    if (!on.ok()) return on.status();
    (name == "no_precopy" ? p->no_precopy : p->allow_mixed_p2p) = *on;
    return absl::OkStatus();
  }
  if (name == "downtime_limit" || name == "max_precopy_time" ||
      name == "ack_timeout" || name == "phase_timeout") {
    absl::StatusOr<absl::Duration> d = ParsePolicyDuration(value);
    if (!d.ok()) return bad(d.status().message());
    if (name == "downtime_limit") p->downtime_limit = *d;
    if (name == "max_precopy_time") p->max_precopy_time = *d;
    if (name == "ack_timeout") p->ack_timeout = *d;
    if (name == "phase_timeout") p->phase_timeout = *d;
    return absl::OkStatus();
  }
  if (name == "bandwidth") {
    absl::string_view size = value;
    absl::ConsumeSuffix(&size, "/s");
    absl::StatusOr<uint64_t> b = ParseByteSize(size);
    if (!b.ok()) return bad(b.status().message());
    p->bandwidth = *b;
    return absl::OkStatus();
  }
  if (name == "chunk") {
    absl::StatusOr<uint64_t> b = ParseByteSize(value);
    if (!b.ok()) return bad(b.status().message());
    if (*b < kMinChunkBytes || *b > kMaxChunkBytes) {
      return bad(absl::StrCat("must be from 4KiB to 8MiB, not '", value, "'"));
    }
    p->chunk_bytes = static_cast<uint32_t>(*b);
    return absl::OkStatus();
  }
  if (name == "streams") {
    uint64_t n = 0;
    if (!ParseDigits(value, &n) || n < 1 || n > 16) {
      return bad(absl::StrCat("want 1 to 16 data streams, not '", value, "'"));
    }
    p->streams = static_cast<uint32_t>(n);
    return absl::OkStatus();
  }
  if (name == "max_iterations") {
    uint64_t n = 0;
    if (!ParseDigits(value, &n) || n == 0 ||
        n > std::numeric_limits<uint32_t>::max()) {
      return bad(absl::StrCat("want a whole number from 1 to ",
                              std::numeric_limits<uint32_t>::max(), ", not '",
                              value, "'"));
    }
    p->max_iterations = static_cast<uint32_t>(n);
    return absl::OkStatus();
  }
  if (name == "on_no_convergence") {
    if (value == "switchover") {
      p->fail_if_not_converged = false;
    } else if (value == "fail") {
      p->fail_if_not_converged = true;
    } else {
      return bad(absl::StrCat("must be switchover or fail, not '", value, "'"));
    }
    return absl::OkStatus();
  }
  return absl::InternalError(absl::StrCat("--", name, " is not a policy flag"));
}

bool IsPolicyFlag(absl::string_view name) {
  return name == "allow_mixed_p2p" || name == "no_precopy" ||
         name == "downtime_limit" || name == "bandwidth" ||
         name == "max_iterations" || name == "max_precopy_time" ||
         name == "on_no_convergence" || name == "ack_timeout" ||
         name == "chunk" || name == "phase_timeout" || name == "streams";
}

// A number of --dirty_ranges or --dirty_page_size: hex with 0x, or
// ParseByteSize's form; 0 only when `allow_zero`.
absl::StatusOr<uint64_t> ParseAddressOrSize(absl::string_view text,
                                            bool allow_zero) {
  if (absl::StartsWith(text, "0x") || absl::StartsWith(text, "0X")) {
    absl::string_view hex = text.substr(2);
    if (hex.empty() || !IsHex(hex)) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "' is not a hex number"));
    }
    while (hex.size() > 1 && hex[0] == '0') hex.remove_prefix(1);
    uint64_t n = 0;
    if (hex.size() > 16 || !absl::SimpleHexAtoi(hex, &n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "' is too large"));
    }
    if (n == 0 && !allow_zero) {
      return absl::InvalidArgumentError(
          absl::StrCat("must be at least 1 byte, not '", text, "'"));
    }
    return n;
  }
  if (allow_zero && !text.empty() &&
      text.find_first_not_of('0') == absl::string_view::npos) {
    return 0;
  }
  return ParseByteSize(text);
}

}  // namespace

absl::StatusOr<std::vector<IovaRangeArg>> ParseDirtyRanges(
    absl::string_view text, uint64_t page_size) {
  auto bad = [](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("--dirty_ranges: ", why));
  };
  if (text.empty()) return bad("empty (want IOVA+LEN,...)");
  std::vector<IovaRangeArg> ranges;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    if (item.empty()) {
      return bad(absl::StrCat("empty element in '", text, "'"));
    }
    std::vector<absl::string_view> parts = absl::StrSplit(item, '+');
    if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
      return bad(
          absl::StrCat("'", item, "' is not IOVA+LEN (e.g. 0x200000+1MiB)"));
    }
    absl::StatusOr<uint64_t> iova = ParseAddressOrSize(parts[0], true);
    if (!iova.ok()) {
      return bad(absl::StrCat("'", item, "': IOVA ", iova.status().message()));
    }
    absl::StatusOr<uint64_t> length = ParseAddressOrSize(parts[1], false);
    if (!length.ok()) {
      return bad(
          absl::StrCat("'", item, "': length ", length.status().message()));
    }
    if (*length - 1 > std::numeric_limits<uint64_t>::max() - *iova) {
      return bad(absl::StrCat("'", item, "' wraps around the IOVA space"));
    }
    if (*iova % page_size != 0 || *length % page_size != 0) {
      return bad(absl::StrCat("'", item, "' is not aligned to the ", page_size,
                              "-byte page"));
    }
    ranges.push_back({*iova, *length});
  }
  for (size_t i = 0; i < ranges.size(); ++i) {
    for (size_t j = i + 1; j < ranges.size(); ++j) {
      const IovaRangeArg& a = ranges[i];
      const IovaRangeArg& b = ranges[j];
      if (a.iova <= b.iova + (b.length - 1) &&
          b.iova <= a.iova + (a.length - 1)) {
        return bad(absl::StrCat("ranges at 0x", absl::Hex(a.iova), " and 0x",
                                absl::Hex(b.iova), " overlap"));
      }
    }
  }
  return ranges;
}

absl::StatusOr<uint64_t> ParseDirtyPageSize(absl::string_view text) {
  absl::StatusOr<uint64_t> size = ParseAddressOrSize(text, false);
  if (!size.ok()) return size.status();
  if (*size < 4096 || *size > kMaxDirtyPageSize || (*size & (*size - 1)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "must be a power of two from 4KiB to 1GiB, not '", text, "'"));
  }
  return *size;
}

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  const absl::string_view original = text;
  auto digits = [&text]() {
    size_t n = 0;
    while (n < text.size() &&
           absl::ascii_isdigit(static_cast<unsigned char>(text[n]))) {
      ++n;
    }
    absl::string_view d = text.substr(0, n);
    text.remove_prefix(n);
    return d;
  };
  absl::string_view whole = digits();
  absl::string_view fraction;
  bool has_point = absl::ConsumePrefix(&text, ".");
  if (has_point) fraction = digits();
  const absl::string_view unit = text;
  if (whole.empty() || (has_point && fraction.empty())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", original, "' is not a size (e.g. 4096, 512KiB, 500MiB, 1.5GiB)"));
  }
  int shift = -1;
  for (const auto& [names, s] :
       std::vector<std::pair<std::vector<absl::string_view>, int>>{
           {{"", "B"}, 0},
           {{"K", "KiB"}, 10},
           {{"M", "MiB"}, 20},
           {{"G", "GiB"}, 30},
           {{"T", "TiB"}, 40}}) {
    for (absl::string_view n : names) {
      if (absl::EqualsIgnoreCase(unit, n)) shift = s;
    }
  }
  if (shift < 0) {
    for (absl::string_view si : {"KB", "MB", "GB", "TB"}) {
      if (absl::EqualsIgnoreCase(unit, si)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "'", original, "': ", unit, " is ambiguous; write ",
            unit.substr(0, 1), "iB (powers of 1024) or plain bytes"));
      }
    }
    return absl::InvalidArgumentError(
        absl::StrCat("'", original, "': unknown unit '", unit,
                     "' (want B, K/KiB, M/MiB, G/GiB or T/TiB)"));
  }
  if (shift == 0 && !fraction.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", original, "': a byte count is a whole number"));
  }
  uint64_t n = 0;
  const absl::Status too_big =
      absl::InvalidArgumentError(absl::StrCat("'", original, "' is too large"));
  if (!absl::SimpleAtoi(whole, &n) ||
      n > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return too_big;
  }
  uint64_t bytes = n << shift;
  // Up to 18 fraction digits are exact in 64 bits; more cannot matter here.
  if (fraction.size() > 18) fraction = fraction.substr(0, 18);
  if (!fraction.empty()) {
    uint64_t num = 0;
    absl::SimpleAtoi(fraction, &num);
    unsigned __int128 den = 1;
    for (size_t i = 0; i < fraction.size(); ++i) den *= 10;
    uint64_t extra = static_cast<uint64_t>(
        (static_cast<unsigned __int128>(num) << shift) / den);
    if (bytes > std::numeric_limits<uint64_t>::max() - extra) return too_big;
    bytes += extra;
  }
  if (bytes == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("must be at least 1 byte, not '", original, "'"));
  }
  return bytes;
}

absl::StatusOr<absl::Duration> ParsePolicyDuration(absl::string_view text) {
  absl::Duration d;
  if (!absl::ParseDuration(text, &d)) {
    bool bare = !text.empty();
    for (char c : text) {
      bare = bare &&
             (absl::ascii_isdigit(static_cast<unsigned char>(c)) || c == '.');
    }
    if (bare) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "' needs a unit (e.g. 300ms, 2s, 1m)"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a duration (e.g. 300ms, 2s, 1m)"));
  }
  if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("must be positive and finite, not '", text, "'"));
  }
  if (d > absl::Seconds(kMaxProtoDurationSeconds)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is too long"));
  }
  return d;
}

bool IsPciAddress(absl::string_view s) {
  // BB:DD.F
  auto short_form = [](absl::string_view t) {
    return t.size() == 7 && IsHex(t.substr(0, 2)) && t[2] == ':' &&
           IsHex(t.substr(3, 2)) && t[5] == '.' && t[6] >= '0' && t[6] <= '7';
  };
  if (short_form(s)) return true;
  return s.size() == 12 && IsHex(s.substr(0, 4)) && s[4] == ':' &&
         short_form(s.substr(5));
}

bool IsDeviceClassArg(absl::string_view text) {
  return absl::StartsWith(text, "pci:") || absl::StartsWith(text, "mdev:") ||
         absl::StartsWith(text, "kind:");
}

absl::StatusOr<DeviceClassArg> ParseDeviceClassArg(absl::string_view text,
                                                   bool allow_kind) {
  const std::string classes =
      allow_kind ? "pci:VVVV:DDDD[:SVVV:SDDD], mdev:TYPE[@PARENT] or kind:KIND"
                 : "pci:VVVV:DDDD[:SVVV:SDDD], mdev:TYPE or mdev:TYPE@PARENT";
  DeviceClassArg c;
  absl::string_view rest = text;
  if (absl::ConsumePrefix(&rest, "pci:")) {
    if (rest.empty()) {
      return absl::InvalidArgumentError("the PCI ids after pci: are empty");
    }
    c.pci_ids = std::string(rest);
    return c;
  }
  if (absl::ConsumePrefix(&rest, "mdev:")) {
    const size_t at = rest.find('@');
    c.mdev_type = std::string(rest.substr(0, at));
    if (at != absl::string_view::npos) {
      c.mdev_parent = std::string(rest.substr(at + 1));
      if (c.mdev_parent.empty()) {
        return absl::InvalidArgumentError("the PARENT after @ is empty");
      }
    }
    if (c.mdev_type.empty()) {
      return absl::InvalidArgumentError("the mdev TYPE is empty");
    }
    return c;
  }
  if (allow_kind && absl::ConsumePrefix(&rest, "kind:")) {
    if (rest.empty()) {
      return absl::InvalidArgumentError("the KIND after kind: is empty");
    }
    c.agent_kind = std::string(rest);
    return c;
  }
  return absl::InvalidArgumentError(absl::StrCat("CLASS must be ", classes));
}

absl::StatusOr<std::vector<DevicePairArg>> ParseDevicePairs(
    absl::string_view text) {
  if (text.empty()) {
    return absl::InvalidArgumentError("--devices: empty (want SRC:DST,...)");
  }
  std::vector<DevicePairArg> pairs;
  std::set<std::string> sources, destinations;
  auto name_ok = [](absl::string_view s) {
    return IsPlainName(s) || IsPciAddress(s);
  };
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    if (item.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: empty element in '", text, "'"));
    }
    std::vector<DevicePairArg> candidates;
    std::vector<absl::string_view> classes;  // the DST of each class split
    for (size_t p = item.find(':'); p != absl::string_view::npos;
         p = item.find(':', p + 1)) {
      absl::string_view src = item.substr(0, p);
      absl::string_view dst = item.substr(p + 1);
      if (!name_ok(src)) continue;
      if (IsDeviceClassArg(dst)) {
        candidates.push_back({std::string(src), "", {}});
        classes.push_back(dst);
      } else if (name_ok(dst)) {
        candidates.push_back({std::string(src), std::string(dst), {}});
        classes.push_back({});
      }
    }
    if (candidates.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--devices: '", item,
          "' is not SRC:DST (source device:destination device, or "
          "SRC:CLASS with CLASS pci:VVVV:DDDD, mdev:TYPE[@PARENT] or "
          "kind:KIND)"));
    }
    if (candidates.size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: '", item,
                       "' can be split into SRC:DST more than one way"));
    }
    DevicePairArg& pair = candidates.front();
    if (!classes.front().empty()) {
      absl::StatusOr<DeviceClassArg> c =
          ParseDeviceClassArg(classes.front(), /*allow_kind=*/true);
      if (!c.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--devices: '", classes.front(), "': ", c.status().message()));
      }
      pair.destination_class = *std::move(c);
    }
    if (!sources.insert(pair.source).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--devices: source device '", pair.source, "' listed twice"));
    }
    // Several devices may come from one class; a named one only once.
    if (!pair.destination.empty() &&
        !destinations.insert(pair.destination).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: destination device '", pair.destination,
                       "' listed twice"));
    }
    pairs.push_back(std::move(pair));
  }
  return pairs;
}

absl::StatusOr<AllocateArg> ParseAllocateArg(absl::string_view text) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text,
        "' is not KEY=CLASS (CLASS: pci:VVVV:DDDD[:SVVV:SDDD], mdev:TYPE or "
        "mdev:TYPE@PARENT)"));
  }
  AllocateArg a;
  a.key = std::string(text.substr(0, eq));
  absl::StatusOr<DeviceClassArg> c =
      ParseDeviceClassArg(text.substr(eq + 1), /*allow_kind=*/false);
  if (!c.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "': ", c.status().message()));
  }
  a.device_class = *std::move(c);
  return a;
}

absl::StatusOr<Options> ParseArgs(const std::vector<std::string>& args,
                                  std::string* command_out) {
  Options o;
  const CommandSpec* spec = nullptr;
  std::vector<std::string> positional;
  std::set<std::string> seen_flags;
  std::string devices_text;
  std::string dirty_ranges_text;
  bool only_positional = false;
  bool host = false;  // "host" seen, its command word not yet

  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      if (spec == nullptr && !o.help && host) {
        spec = FindCommand(absl::StrCat("host ", arg));
        if (spec == nullptr) {
          return UsageError("host", absl::StrCat("unknown host command '", arg,
                                                 "' (", kHostWords, ")"));
        }
        o.command = spec->name;
        if (command_out != nullptr) *command_out = o.command;
        continue;
      }
      if (spec == nullptr && !o.help && o.command.empty()) {
        if (arg == "help") {
          o.help = true;
          continue;
        }
        if (arg == "host") {
          host = true;
          if (command_out != nullptr) *command_out = "host";
          continue;
        }
        spec = FindCommand(arg);
        if (spec == nullptr) {
          return UsageError("", absl::StrCat("unknown command '", arg, "'"));
        }
        o.command = spec->name;
        if (command_out != nullptr) *command_out = o.command;
        continue;
      }
      positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      o.help = true;
      continue;
    }
    absl::string_view name = arg;
    name.remove_prefix(absl::StartsWith(name, "--") ? 2 : 1);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != absl::string_view::npos) {
      value = std::string(name.substr(eq + 1));
      name = name.substr(0, eq);
      has_value = true;
    }
    const std::string cmd = o.command;
    bool global = IsGlobalFlag(name);
    if (!global) {
      if (spec == nullptr) {
        if (IsCommandFlag(name)) {
          return UsageError(
              "", absl::StrCat("--", name, " must come after the command"));
        }
        return UsageError("", absl::StrCat("unknown flag --", name));
      }
      if (!Contains(spec->required, name) && !Contains(spec->optional, name)) {
        return UsageError(cmd, absl::StrCat("unknown flag --", name));
      }
    }
    if (!has_value && IsBoolFlag(name)) {
      value = "true";
      has_value = true;
    }
    if (!has_value) {
      if (i + 1 >= args.size()) {
        return UsageError(global ? "" : cmd,
                          absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (!seen_flags.insert(std::string(name)).second) {
      return UsageError(global ? "" : cmd,
                        absl::StrCat("--", name, " given twice"));
    }
    if (value.empty()) {
      return UsageError(global ? "" : cmd,
                        absl::StrCat("--", name, " needs a value"));
    }
    if (name == "agent") {
      o.agent = value;
    } else if (name == "agent_identity") {
      o.agent_identity = value;
    } else if (name == "config") {
      o.config = value;
    } else if (name == "tls_cert") {
      o.tls_cert = value;
    } else if (name == "tls_key") {
      o.tls_key = value;
    } else if (name == "tls_ca") {
      o.tls_ca = value;
    } else if (name == "insecure") {
      absl::StatusOr<bool> on = ParseBoolValue(name, value);
      if (!on.ok()) return UsageError("", on.status().message());
      o.insecure = *on;
    } else if (name == "output") {
      if (value == "text") {
        o.output = OutputFormat::kText;
      } else if (value == "json") {
        o.output = OutputFormat::kJson;
      } else {
        return UsageError(
            "",
            absl::StrCat("--output must be text or json, not '", value, "'"));
      }
    } else if (name == "timeout") {
      absl::Duration d;
      int64_t seconds;
      if (absl::SimpleAtoi(value, &seconds)) {
        d = absl::Seconds(seconds);
      } else if (!absl::ParseDuration(value, &d)) {
        return UsageError("", absl::StrCat("--timeout: '", value,
                                           "' is not a duration (e.g. 30s, "
                                           "500ms, 2m)"));
      }
      if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
        return UsageError("", absl::StrCat("--timeout must be positive and "
                                           "finite, not '",
                                           value, "'"));
      }
      o.timeout = d;
      o.timeout_given = true;
    } else if (name == "job") {
      o.job = value;
    } else if (name == "devices") {
      devices_text = value;
    } else if (name == "source") {
      o.source = value;
    } else if (name == "source_identity") {
      o.source_identity = value;
    } else if (name == "source_agent") {
      o.source_agent = value;
    } else if (name == "destination") {
      o.destination = value;
    } else if (name == "destination_identity") {
      o.destination_identity = value;
    } else if (name == "token") {
      o.token = value;
    } else if (name == "dirty_ranges") {
      dirty_ranges_text = value;
    } else if (name == "dirty_page_size") {
      absl::StatusOr<uint64_t> size = ParseDirtyPageSize(value);
      if (!size.ok()) {
        return UsageError(
            cmd, absl::StrCat("--dirty_page_size: ", size.status().message()));
      }
      o.dirty_page_size = *size;
    } else if (name == "outcome") {
      if (value != "source" && value != "destination") {
        return UsageError(cmd, absl::StrCat("--outcome must be source or "
                                            "destination, not '",
                                            value, "'"));
      }
      o.outcome = value;
    } else if (name == "wait") {
      absl::StatusOr<bool> on = ParseBoolValue(name, value);
      if (!on.ok()) return UsageError(cmd, on.status().message());
      o.wait = *on;
    } else if (name == "to_no_driver") {
      absl::StatusOr<bool> on = ParseBoolValue(name, value);
      if (!on.ok()) return UsageError(cmd, on.status().message());
      o.to_no_driver = *on;
    } else if (name == "driver") {
      o.driver = value;
    } else if (name == "uuid") {
      o.uuid = value;
    } else if (IsPolicyFlag(name)) {
      if (absl::Status s = ParsePolicyFlag(name, value, &o.policy); !s.ok()) {
        return UsageError(cmd, s.message());
      }
    }
  }

  if (o.help) return o;
  if (spec == nullptr && host) {
    return UsageError(
        "host", absl::StrCat("missing the host command (", kHostWords, ")"));
  }
  if (spec == nullptr) return UsageError("", "missing command");
  const std::string cmd = o.command;
  for (const std::string& name : spec->args) {
    if (positional.empty()) return UsageError(cmd, "missing " + name);
    if (positional.front().empty()) return UsageError(cmd, "empty " + name);
    o.args.push_back(positional.front());
    positional.erase(positional.begin());
  }
  if (cmd == "host vfs") {
    uint64_t n = 0;
    if (!ParseDigits(o.args[1], &n) ||
        n > std::numeric_limits<uint32_t>::max()) {
      return UsageError(cmd, absl::StrCat("COUNT '", o.args[1],
                                          "' is not a whole number of VFs"));
    }
    o.vf_count = static_cast<uint32_t>(n);
  }
  if (cmd == "host allocate") {
    if (positional.empty()) return UsageError(cmd, "missing KEY=CLASS");
    for (const std::string& p : positional) {
      absl::StatusOr<AllocateArg> a = ParseAllocateArg(p);
      if (!a.ok()) return UsageError(cmd, a.status().message());
      o.allocate.push_back(*std::move(a));
    }
    positional.clear();
  }
  if (cmd == "host allocations" && !positional.empty()) {
    if (positional.front().empty()) return UsageError(cmd, "empty OWNER");
    o.args.push_back(positional.front());
    positional.erase(positional.begin());
  }
  for (const auto& f : spec->required) {
    if (!seen_flags.count(f)) {
      return UsageError(cmd, absl::StrCat("missing --", f));
    }
  }
  if (spec->takes_job_arg) {
    if (positional.empty()) return UsageError(cmd, "missing JOB");
    o.job = positional.front();
    positional.erase(positional.begin());
  }
  if (spec->takes_agent_arg && !positional.empty()) {
    if (seen_flags.count("agent")) {
      return UsageError(cmd, "give AGENT or --agent, not both");
    }
    if (positional.front().empty()) return UsageError(cmd, "empty AGENT");
    o.agent = positional.front();
    positional.erase(positional.begin());
  }
  if (!positional.empty()) {
    return UsageError(
        cmd, absl::StrCat("unexpected argument '", positional[0], "'"));
  }
  if ((spec->takes_job_arg || seen_flags.count("job")) &&
      !IsValidJobId(o.job)) {
    return UsageError(
        cmd, absl::StrCat("'", o.job,
                          "' is not a valid job id ([A-Za-z0-9._-], 1..64 "
                          "characters)"));
  }
  if (seen_flags.count("source_identity") && seen_flags.count("source_agent")) {
    return UsageError(cmd,
                      "give --source_identity or --source_agent, not both");
  }
  if (seen_flags.count("devices")) {
    auto pairs = ParseDevicePairs(devices_text);
    if (!pairs.ok()) return UsageError(cmd, pairs.status().message());
    o.devices = *std::move(pairs);
    // The destination agent picks a device of a class when it prepares the
    // job: a check changes nothing there, and a given token means the job
    // was prepared already, with its devices named.
    for (const DevicePairArg& p : o.devices) {
      if (p.destination_class.empty()) continue;
      if (cmd == "check") {
        return UsageError(
            cmd, absl::StrCat("--devices: '", p.source,
                              "': check needs the destination device by "
                              "name, not a class"));
      }
      if (seen_flags.count("token")) {
        return UsageError(
            cmd, absl::StrCat("--devices: '", p.source,
                              "': a destination class is picked by the "
                              "prepare that migrate makes without --token; "
                              "with --token name the prepared devices"));
      }
    }
  }
  if (seen_flags.count("dirty_page_size") &&
      !seen_flags.count("dirty_ranges")) {
    return UsageError(cmd, "--dirty_page_size needs --dirty_ranges");
  }
  if (seen_flags.count("dirty_ranges")) {
    auto ranges = ParseDirtyRanges(dirty_ranges_text, o.dirty_page_size);
    if (!ranges.ok()) return UsageError(cmd, ranges.status().message());
    o.dirty_ranges = *std::move(ranges);
  }
  return o;
}

std::string UsageLine(absl::string_view command) {
  static constexpr char kGlobal[] =
      "usage: migctl [--agent=NAME|HOST:PORT] [--output=text|json] "
      "[--timeout=DURATION] [TLS FLAGS] ";
  const CommandSpec* spec = FindCommand(command);
  if (spec == nullptr && command == "host") {
    return absl::StrCat(kGlobal, "host ",
                        "status|bind|unbind|vfs|vf-token|mdev-types|"
                        "mdev-create|"
                        "mdev-remove|allocate|release|allocations ARGS");
  }
  if (spec == nullptr) return absl::StrCat(kGlobal, "COMMAND [ARGS]");
  return absl::StrCat(kGlobal, spec->synopsis);
}

std::string HelpText() {
  std::string out =
      absl::StrCat(UsageLine(""), "\n\n",
                   "Talks to a migd agent's control API "
                   "(migd.v1.MigrationService,\nand HostService for "
                   "`host`) over gRPC with mutual TLS: migctl proves who\n"
                   "it is with its certificate, and the agent with its "
                   "own, checked against\nthe CA bundle (see TLS below). "
                   "--insecure is plaintext.\n\n"
                   "Commands:\n");
  for (const auto& c : Commands()) {
    absl::StrAppend(&out, "  ", c.synopsis, "\n      ", c.summary, "\n");
  }
  absl::StrAppend(
      &out,
      "\nGlobal flags (anywhere on the line; --name=value or --name value):\n"
      "  --agent=NAME|HOST:PORT\n"
      "                       agent to talk to: an agent of the config file, "
      "or an\n"
      "                       address (default: the config's default_agent, "
      "else\n"
      "                       ",
      kDefaultAgent,
      ")\n"
      "  --output=text|json   text for people (default); json for programs:\n"
      "                       one object per command, one line per event for\n"
      "                       migrate and watch, per bitmap for dirty-pages\n"
      "  --timeout=DURATION   deadline of each request, e.g. 30s, 2m (default "
      "30s);\n"
      "                       migrate, watch and dirty-pages follow a job "
      "with\n"
      "                       no deadline unless --timeout is given\n"
      "  --help, -h           this text\n"
      "\nTLS, the default. Each setting is the flag's, else the "
      "environment's, else\nthe config file's for the agent, else the "
      "config file's top level:\n"
      "  --tls_cert=FILE      this client's certificate (PEM)       "
      "MIGCTL_TLS_CERT\n"
      "  --tls_key=FILE       its private key                       "
      "MIGCTL_TLS_KEY\n"
      "  --tls_ca=FILE        CAs the agent's certificate chains to "
      "MIGCTL_TLS_CA\n"
      "  --agent_identity=ID  identity (URI or DNS SAN) the agent's "
      "certificate must\n"
      "                       carry, e.g. spiffe://example.org/agent/host5; "
      "without\n"
      "                       one, the agent's host must match a DNS or IP "
      "SAN\n"
      "  --insecure           plaintext, for an agent run with --insecure: "
      "nothing\n"
      "                       encrypted, nobody authenticated; warns on stderr"
      "\n"
      "                                                             "
      "MIGCTL_INSECURE=1\n"
      "  --config=FILE        the config file                       "
      "MIGCTL_CONFIG\n"
      "                       (default $XDG_CONFIG_HOME/migctl/config, else\n"
      "                       ~/.config/migctl/config; these two may be "
      "missing)\n"
      "The config file names the credentials and the agents, e.g.\n"
      "  # credentials used for every agent unless the agent says otherwise\n"
      "  tls_cert = /etc/migd/tls/operator.pem\n"
      "  tls_key  = /etc/migd/tls/operator.key\n"
      "  tls_ca   = ca.pem        # relative paths: from the config's "
      "directory\n"
      "  default_agent = src\n"
      "  [agent src]\n"
      "  address  = 10.0.0.5:7070\n"
      "  identity = spiffe://example.org/agent/host5\n"
      "  [agent dst]\n"
      "  address  = 10.0.0.6:7070\n"
      "  identity = spiffe://example.org/agent/host6\n"
      "  insecure = false\n"
      "An [agent NAME] takes address, identity, tls_cert, tls_key, tls_ca "
      "and\ninsecure (true or false). --agent=NAME and --destination=NAME "
      "use them;\n--agent_identity and --destination_identity override the "
      "identity.\n"
      "A job's transfer token is bound to the source agent's identity, and "
      "the\nsource checks the destination's: migrate learns both from the "
      "agents'\ncertificates. `migctl identity` shows what an agent's "
      "certificate says.\n"
      "\nPolicy flags of migrate (unset ones keep the agent's defaults):\n"
      "  --downtime_limit=DUR     switch over once the state left to move "
      "fits in\n"
      "                           this much downtime (default 300ms)\n"
      "  --bandwidth=SIZE[/s]     bandwidth to assume for that estimate, e.g.\n"
      "                           500MiB (default: measured during the job)\n"
      "  --max_iterations=N       pre-copy iterations at most (default 30)\n"
      "  --max_precopy_time=DUR   pre-copy time at most (default 300s)\n"
      "  --on_no_convergence=switchover|fail\n"
      "                           at a cap: switch over anyway (default) or "
      "fail\n"
      "                           the job, leaving the source running\n"
      "  --ack_timeout=DUR        wait for the destination to acknowledge the\n"
      "                           initial pre-copy data (default 60s)\n"
      "  --allow_mixed_p2p        allow a job whose devices do not all support "
      "P2P\n"
      "  --no_precopy             move the state only once the devices "
      "stopped,\n"
      "                           even for devices that support pre-copy\n"
      "  --streams=N              parallel data streams (connections), "
      "1..16\n"
      "  --chunk=SIZE             data chunk on the wire, 4KiB..8MiB "
      "(default 1MiB)\n"
      "  --phase_timeout=DUR      fail a phase that makes no progress this "
      "long\n"
      "                           (default: the agent's "
      "--phase_timeout_seconds)\n"
      "DUR has a unit (300ms, 2s, 5m); SIZE is bytes or K/KiB, M/MiB, G/GiB, "
      "T/TiB.\n"
      "\nDMA dirty-page tracking (migrate):\n"
      "  --dirty_ranges=IOVA+LEN[,IOVA+LEN...]\n"
      "                           track the pages the devices write by DMA in\n"
      "                           these IOVA ranges while the job runs; IOVA\n"
      "                           and LEN are hex (0x200000) or decimal, LEN\n"
      "                           may be a SIZE (0x200000+1MiB); aligned to\n"
      "                           the page size, not overlapping\n"
      "  --dirty_page_size=SIZE   tracking granularity, a power of two from\n"
      "                           4KiB (default 4096)\n"
      "The agent serves the bitmaps while the job runs; `migctl dirty-pages\n"
      "JOB` consumes them, one line per bitmap (text: device, iteration, "
      "final,\n"
      "all_dirty and the dirty page IOVAs in hex; json: the DirtyPages "
      "message),\n"
      "and ends with the job. Run it alongside migrate, e.g.\n"
      "  T=$(migctl --agent=DST prepare --job=J --devices=S:D "
      "--source_agent=SRC)\n"
      "  migctl --agent=SRC migrate --job=J --devices=S:D --destination=DST "
      "\\\n"
      "      --token=$T --dirty_ranges=0x200000+1MiB &\n"
      "  migctl --agent=SRC dirty-pages --wait J\n"
      "--wait retries while the agent does not know the job yet (until\n"
      "--timeout); bitmaps not taken yet are merged, never dropped, so a\n"
      "late start loses nothing. A device that cannot report has all_dirty\n"
      "set: treat every page of the range as dirty.\n"
      "\nDevice names may be PCI addresses: "
      "--devices=0000:3b:00.1:0000:5e:00.1\n"
      "Interrupting migrate or watch does not stop the job; use `migctl "
      "cancel JOB`.\n"
      "\nThe end of a migration is a commit: once the source sent COMMIT, "
      "the\ndestination may run the devices, and the source never resumes "
      "them on its\nown. When the destination's answer does not arrive, the "
      "job is IN_DOUBT\n(devices stopped) and the source asks the "
      "destination until it answers.\nIf it never can (its host is gone), "
      "`migctl resolve JOB\n--outcome=source|destination` decides; "
      "`migctl status JOB` says so.\n"
      "\nThe host commands change the agent's host (operator role; status "
      "and\nmdev-types also for observers). `host status` prints one "
      "\"key: value\" per\nline (driver: NAME, driver: (none) on no "
      "driver), for scripts too:\n"
      "  migctl host bind 0000:03:00.1 && migctl host status 0000:03:00.1 "
      "|\n      sed -n 's/^driver: //p'\n"
      "A bind is recorded on the agent first, so that `host unbind` returns "
      "the\ndevice to its original driver, even after the agent restarted.\n"
      "\nExit status: 0 success; 1 a request failed or the job did not "
      "succeed;\n"
      "2 a usage error, or a config or TLS file that is missing or wrong "
      "(nothing\nwas sent); 3 check found a device that cannot migrate.\n");
  return out;
}

}  // namespace migd::cli
