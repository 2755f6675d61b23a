// migd/host/names.cc

#include "migd/host/names.h"

#include <cstdint>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace migd::host {
namespace {

bool AllHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return !s.empty();
}

// Exactly 4 hex digits, either case.
bool ParseHex16(absl::string_view text, uint16_t* out) {
  uint32_t v = 0;
  if (text.size() != 4 || !AllHex(text) || !absl::SimpleHexAtoi(text, &v)) {
    return false;
  }
  *out = static_cast<uint16_t>(v);
  return true;
}

// MODULE_NAME_LEN is 64 - sizeof(unsigned long), one byte of it the NUL.
constexpr size_t kMaxModuleName = 55;
constexpr size_t kMaxDeviceName = 128;

}  // namespace

absl::StatusOr<std::string> NormalizePciAddress(absl::string_view text) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("PCI address \"", absl::CHexEscape(text),
                     "\" is not DOMAIN:BUS:DEV.FN (e.g. 0000:00:04.0): ", why));
  };
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  if (parts.size() != 3) return bad("want two ':'");
  std::vector<absl::string_view> dev_fn = absl::StrSplit(parts[2], '.');
  if (dev_fn.size() != 2) return bad("want one '.' before the function");
  const absl::string_view domain = parts[0], bus = parts[1], dev = dev_fn[0],
                          fn = dev_fn[1];
  if (domain.size() < 4 || domain.size() > 8 || !AllHex(domain)) {
    return bad("the domain is 4 to 8 hex digits");
  }
  if (bus.size() != 2 || !AllHex(bus)) return bad("the bus is 2 hex digits");
  uint32_t dev_num = 0;
  if (dev.size() != 2 || !AllHex(dev) || !absl::SimpleHexAtoi(dev, &dev_num) ||
      dev_num > 0x1f) {
    return bad("the device is 2 hex digits, at most 1f");
  }
  if (fn.size() != 1 || fn[0] < '0' || fn[0] > '7') {
    return bad("the function is one digit 0-7");
  }
  return absl::AsciiStrToLower(text);
}

absl::StatusOr<std::string> NormalizeUuid(absl::string_view text) {
  static constexpr size_t kGroups[] = {8, 4, 4, 4, 12};
  std::vector<absl::string_view> parts = absl::StrSplit(text, '-');
  bool ok = parts.size() == 5;
  for (size_t i = 0; ok && i < 5; ++i) {
    ok = parts[i].size() == kGroups[i] && AllHex(parts[i]);
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        "not a UUID (want 8-4-4-4-12 hex digits)");
  }
  return absl::AsciiStrToLower(text);
}

absl::Status ValidateDeviceName(absl::string_view name) {
  bool ok = !name.empty() && name.size() <= kMaxDeviceName && name != "." &&
            name != "..";
  for (size_t i = 0; ok && i < name.size(); ++i) {
    const char c = name[i];
    ok = absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' ||
         c == '_' || c == ':' || c == '@' || c == '+' || c == '-';
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device name \"", absl::CHexEscape(name),
        "\" is not one sysfs entry ([A-Za-z0-9._:@+-]{1,128}, not . or ..)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> CanonicalModuleName(absl::string_view text) {
  bool ok = !text.empty() && text.size() <= kMaxModuleName;
  std::string out(text);
  for (size_t i = 0; ok && i < out.size(); ++i) {
    if (out[i] == '-') out[i] = '_';
    ok = absl::ascii_isalnum(static_cast<unsigned char>(out[i])) ||
         out[i] == '_';
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("module name \"", absl::CHexEscape(text),
                     "\" is not [A-Za-z0-9_-]{1,55}"));
  }
  return out;
}

absl::StatusOr<PciIds> ParsePciIds(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  PciIds ids;
  uint16_t sv = 0, sd = 0;
  const bool ok = (parts.size() == 2 || parts.size() == 4) &&
                  ParseHex16(parts[0], &ids.vendor) &&
                  ParseHex16(parts[1], &ids.device) &&
                  (parts.size() == 2 ||
                   (ParseHex16(parts[2], &sv) && ParseHex16(parts[3], &sd)));
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pci_ids \"", absl::CHexEscape(text),
        "\" is not VVVV:DDDD or VVVV:DDDD:SVVV:SDDD (4 hex digits each)"));
  }
  if (parts.size() == 4) {
    ids.subsystem_vendor = sv;
    ids.subsystem_device = sd;
  }
  return ids;
}

std::string FormatPciIds(const PciIds& ids) {
  const auto hex = [](uint16_t v) {
    return absl::StrCat(absl::Hex(v, absl::kZeroPad4));
  };
  std::string out = absl::StrCat(hex(ids.vendor), ":", hex(ids.device));
  if (ids.subsystem_vendor.has_value()) {
    absl::StrAppend(&out, ":", hex(*ids.subsystem_vendor), ":",
                    hex(*ids.subsystem_device));
  }
  return out;
}

}  // namespace migd::host
