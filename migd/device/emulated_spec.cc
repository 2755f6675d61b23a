#include "migd/device/emulated_spec.h"

#include <errno.h>

#include <limits>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "migd/vfio/uapi.h"

namespace migd::device {
namespace {

absl::Status BadToken(absl::string_view token, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("emulated device line: bad token \"", token, "\": ", why));
}

// Plain digits only: SimpleAtoi would also take signs and surrounding spaces.
bool ParseDecimal(absl::string_view text, uint64_t* out) {
  if (text.empty()) return false;
  for (char c : text) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return absl::SimpleAtoi(text, out);
}

absl::StatusOr<uint64_t> ParseSeed(absl::string_view text) {
  uint64_t v = 0;
  if (absl::ConsumePrefix(&text, "0x") || absl::ConsumePrefix(&text, "0X")) {
    bool ok = !text.empty();
    for (char c : text)
      ok = ok && absl::ascii_isxdigit(static_cast<unsigned char>(c));
    if (ok && absl::SimpleHexAtoi(text, &v)) return v;
  } else if (ParseDecimal(text, &v)) {
    return v;
  }
  return absl::InvalidArgumentError(
      "want a decimal or 0x-prefixed hex 64-bit number");
}

absl::StatusOr<vfio::MigFlags> ParseFlags(absl::string_view text) {
  vfio::MigFlags flags = 0;
  for (absl::string_view name : absl::StrSplit(text, '|')) {
    if (absl::EqualsIgnoreCase(name, "STOP_COPY")) {
      flags |= vfio::kMigStopCopy;
    } else if (absl::EqualsIgnoreCase(name, "P2P")) {
      flags |= vfio::kMigP2P;
    } else if (absl::EqualsIgnoreCase(name, "PRE_COPY")) {
      flags |= vfio::kMigPreCopy;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown flag \"", name, "\" (want STOP_COPY, P2P, PRE_COPY)"));
    }
  }
  if ((flags & vfio::kMigStopCopy) == 0) {
    return absl::InvalidArgumentError("flags must include STOP_COPY");
  }
  return flags;
}

absl::StatusOr<MigArc> ParseArc(absl::string_view text) {
  std::vector<absl::string_view> ends = absl::StrSplit(text, '>');
  if (ends.size() != 2) {
    return absl::InvalidArgumentError("want FROM>TO, e.g. STOP>STOP_COPY");
  }
  std::optional<vfio::MigState> from = vfio::ParseMigState(ends[0]);
  std::optional<vfio::MigState> to = vfio::ParseMigState(ends[1]);
  if (!from.has_value() || !to.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown state \"", from.has_value() ? ends[1] : ends[0], "\""));
  }
  return MigArc{*from, *to};
}

// FROM>TO@DURATION, e.g. RESUMING>STOP@2s.
absl::StatusOr<SlowArc> ParseSlowArc(absl::string_view text) {
  const size_t at = text.find('@');
  if (at == absl::string_view::npos) {
    return absl::InvalidArgumentError(
        "want FROM>TO@DURATION, e.g. RESUMING>STOP@2s");
  }
  absl::StatusOr<MigArc> arc = ParseArc(text.substr(0, at));
  if (!arc.ok()) return arc.status();
  SlowArc slow;
  slow.arc = *arc;
  const absl::string_view duration = text.substr(at + 1);
  if (!absl::ParseDuration(duration, &slow.duration) ||
      slow.duration <= absl::ZeroDuration() || slow.duration > kMaxSlowArc) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad duration \"", duration, "\" (want e.g. 500ms or 2s, ",
                     "at most ", absl::FormatDuration(kMaxSlowArc), ")"));
  }
  return slow;
}

// ERRNO@OFFSET, e.g. ENODEV@64K.
absl::StatusOr<ReadFault> ParseReadFault(absl::string_view text) {
  const size_t at = text.find('@');
  if (at == absl::string_view::npos) {
    return absl::InvalidArgumentError("want ERRNO@OFFSET, e.g. ENODEV@64K");
  }
  const absl::string_view name = text.substr(0, at);
  ReadFault fault;
  if (absl::EqualsIgnoreCase(name, "ENODEV")) {
    fault.err = ENODEV;
  } else if (absl::EqualsIgnoreCase(name, "EBUSY")) {
    fault.err = EBUSY;
  } else if (absl::EqualsIgnoreCase(name, "EIO")) {
    fault.err = EIO;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown errno \"", name, "\" (want ENODEV, EBUSY or EIO)"));
  }
  absl::StatusOr<uint64_t> offset = ParseSize(text.substr(at + 1));
  if (!offset.ok()) return offset.status();
  fault.offset = *offset;
  return fault;
}

}  // namespace

absl::StatusOr<uint64_t> ParseSize(absl::string_view text) {
  const absl::string_view original = text;
  size_t digits = 0;
  while (digits < text.size() &&
         absl::ascii_isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  uint64_t n = 0;
  if (digits == 0 || !absl::SimpleAtoi(text.substr(0, digits), &n)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad size \"", original,
                     "\": want digits with an optional K/KiB, "
                     "M/MiB or G/GiB suffix"));
  }
  const absl::string_view suffix = text.substr(digits);
  int shift = -1;
  if (suffix.empty()) {
    shift = 0;
  } else if (absl::EqualsIgnoreCase(suffix, "K") ||
             absl::EqualsIgnoreCase(suffix, "KiB")) {
    shift = 10;
  } else if (absl::EqualsIgnoreCase(suffix, "M") ||
             absl::EqualsIgnoreCase(suffix, "MiB")) {
    shift = 20;
  } else if (absl::EqualsIgnoreCase(suffix, "G") ||
             absl::EqualsIgnoreCase(suffix, "GiB")) {
    shift = 30;
  }
  if (shift < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad size \"", original, "\": unknown suffix \"", suffix,
                     "\" (want K/KiB, M/MiB or G/GiB)"));
  }
  if (n > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad size \"", original, "\": overflows 64 bits"));
  }
  return n << shift;
}

absl::StatusOr<EmulatedDeviceConfig> ParseEmulatedDeviceLine(
    absl::string_view line) {
  std::vector<absl::string_view> words =
      absl::StrSplit(line, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
  if (words.empty() || words[0] != "emulated") {
    return absl::InvalidArgumentError(absl::StrCat(
        "emulated device line: want \"emulated NAME [key=value...]\", got \"",
        line, "\""));
  }
  if (words.size() < 2) {
    return absl::InvalidArgumentError(
        "emulated device line: missing the device name after \"emulated\"");
  }
  EmulatedDeviceConfig config;
  config.name = std::string(words[1]);
  if (!IsValidEmulatedDeviceName(config.name)) {
    return BadToken(words[1], "a device name is [A-Za-z0-9._:-]{1,64}");
  }
  std::set<std::string> seen;
  for (size_t i = 2; i < words.size(); ++i) {
    const absl::string_view token = words[i];
    const size_t eq = token.find('=');
    if (eq == absl::string_view::npos) return BadToken(token, "want key=value");
    const absl::string_view key = token.substr(0, eq);
    const absl::string_view value = token.substr(eq + 1);
    if (!seen.insert(std::string(key)).second) {
      return BadToken(token, absl::StrCat("\"", key, "\" given twice"));
    }
    absl::Status status;
    if (key == "size") {
      absl::StatusOr<uint64_t> v = ParseSize(value);
      if (v.ok()) config.state_size = *v;
      status = v.status();
    } else if (key == "seed") {
      absl::StatusOr<uint64_t> v = ParseSeed(value);
      if (v.ok()) config.seed = *v;
      status = v.status();
    } else if (key == "format") {
      uint32_t v = 0;
      if (!absl::SimpleAtoi(value, &v) || v == 0) {
        status = absl::InvalidArgumentError("want a positive integer");
      } else {
        config.state_format = v;
      }
    } else if (key == "flags") {
      absl::StatusOr<vfio::MigFlags> v = ParseFlags(value);
      if (v.ok()) config.flags = *v;
      status = v.status();
    } else if (key == "fail_arc") {
      absl::StatusOr<MigArc> v = ParseArc(value);
      if (v.ok()) config.fail_arc = *v;
      status = v.status();
    } else if (key == "slow_arc") {
      absl::StatusOr<SlowArc> v = ParseSlowArc(value);
      if (v.ok()) config.slow_arc = *v;
      status = v.status();
    } else if (key == "corrupt_stream_at") {
      absl::StatusOr<uint64_t> v = ParseSize(value);
      if (v.ok()) config.corrupt_stream_at = *v;
      status = v.status();
    } else if (key == "fail_read") {
      absl::StatusOr<ReadFault> v = ParseReadFault(value);
      if (v.ok()) config.fail_read = *v;
      status = v.status();
    } else if (key == "dirty_rate") {
      absl::string_view size = value;
      absl::ConsumeSuffix(&size, "/s");
      absl::StatusOr<uint64_t> v = ParseSize(size);
      if (v.ok()) config.dirty_rate = *v;
      status = v.status();
    } else if (key == "load_rate") {
      absl::string_view size = value;
      absl::ConsumeSuffix(&size, "/s");
      absl::StatusOr<uint64_t> v = ParseSize(size);
      if (v.ok() && *v == 0) {
        v = absl::InvalidArgumentError(
            "want a rate above 0 (omit the key for a device that loads as "
            "fast as it can)");
      }
      if (v.ok()) config.load_rate = *v;
      status = v.status();
    } else if (key == "dma_rate") {
      uint64_t v = 0;
      if (ParseDecimal(value, &v)) {
        config.dma_rate = v;
      } else {
        status = absl::InvalidArgumentError(
            "want a decimal number of DMA writes per second");
      }
    } else if (key == "dma_write_log") {
      if (value.empty()) {
        status = absl::InvalidArgumentError("want a file path");
      } else {
        config.dma_write_log = std::string(value);
      }
    } else if (key == "dma_logging") {
      if (absl::EqualsIgnoreCase(value, "on")) {
        config.dma_logging = true;
      } else if (absl::EqualsIgnoreCase(value, "off")) {
        config.dma_logging = false;
      } else {
        status = absl::InvalidArgumentError("want on or off");
      }
    } else {
      return BadToken(
          token,
          "unknown key (want size, seed, format, flags, fail_arc, "
          "slow_arc, corrupt_stream_at, fail_read, dirty_rate, load_rate, "
          "dma_rate, dma_write_log, dma_logging)");
    }
    if (!status.ok()) return BadToken(token, status.message());
  }
  // Cross-field checks (fail_arc against flags, corrupt_stream_at and
  // fail_read against size) need the whole line.
  if (absl::Status s = ValidateEmulatedDeviceConfig(config); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("emulated device line: ", s.message()));
  }
  return config;
}

}  // namespace migd::device
