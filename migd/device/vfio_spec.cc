// migd/device/vfio_spec.cc

#include "migd/device/vfio_spec.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "migd/security/redact.h"

namespace migd::device {
namespace {

using Source = VfioDeviceConfig::Source;

constexpr absl::string_view kCdevPrefix = "/dev/vfio/devices/vfio";
// sizeof(sockaddr_un::sun_path) is 108, one byte for the terminating NUL.
constexpr size_t kMaxSocketPath = 107;

// The token as it may appear in an error: a vf_token value is a secret.
std::string Shown(absl::string_view token) {
  if (absl::ConsumePrefix(&token, "vf_token=")) {
    return absl::StrCat("vf_token=", security::Redacted(token));
  }
  return std::string(token);
}

absl::Status BadToken(absl::string_view token, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(
      "vfio device line: bad token \"", Shown(token), "\": ", why));
}

}  // namespace

absl::string_view VfioSourceKey(Source source) {
  switch (source) {
    case Source::kPci:
      return "bdf";
    case Source::kMdev:
      return "mdev";
    case Source::kCdev:
      return "cdev";
    case Source::kFdSocket:
      return "fd_socket";
  }
  return "?";
}

bool IsValidVfioDeviceName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = absl::ascii_isalnum(static_cast<unsigned char>(c)) ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<std::array<uint8_t, 16>> UuidBytes(absl::string_view text) {
  absl::StatusOr<std::string> uuid = NormalizeUuid(text);
  if (!uuid.ok()) return uuid.status();
  std::array<uint8_t, 16> out{};
  size_t n = 0;
  const auto nibble = [](char c) -> uint8_t {
    return static_cast<uint8_t>(c <= '9' ? c - '0' : c - 'a' + 10);
  };
  for (size_t i = 0; i < uuid->size();) {
    if ((*uuid)[i] == '-') {
      ++i;
      continue;
    }
    out[n++] =
        static_cast<uint8_t>(nibble((*uuid)[i]) << 4 | nibble((*uuid)[i + 1]));
    i += 2;
  }
  return out;
}

absl::Status ValidateCdevPath(absl::string_view path) {
  absl::string_view rest = path;
  if (!absl::ConsumePrefix(&rest, kCdevPrefix) || rest.empty() ||
      rest.size() > 9 || (rest.size() > 1 && rest[0] == '0')) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cdev path \"", path, "\" is not /dev/vfio/devices/vfio<N>"));
  }
  for (char c : rest) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cdev path \"", path, "\" is not /dev/vfio/devices/vfio<N>"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateSocketPath(absl::string_view path) {
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("socket path \"", absl::CHexEscape(path), "\": ", why));
  };
  if (path.empty() || path[0] != '/') return bad("must be absolute");
  if (path.size() > kMaxSocketPath) {
    return bad(absl::StrCat("longer than ", kMaxSocketPath,
                            " bytes (the limit of a UNIX socket address)"));
  }
  for (char c : path) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return bad("contains a control character");
    }
  }
  for (absl::string_view part : absl::StrSplit(path.substr(1), '/')) {
    if (part == "." || part == "..") return bad("has a . or .. component");
    if (part.empty()) return bad("has an empty component");
  }
  return absl::OkStatus();
}

absl::Status ValidateVfioDeviceConfig(const VfioDeviceConfig& config) {
  if (!IsValidVfioDeviceName(config.name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("vfio device name \"", absl::CHexEscape(config.name),
                     "\" is not [A-Za-z0-9._:-]{1,64}"));
  }
  const std::string who = absl::StrCat("vfio device ", config.name, ": ");
  absl::Status address;
  switch (config.source) {
    case Source::kPci: {
      absl::StatusOr<std::string> a = NormalizePciAddress(config.address);
      address = a.status();
      if (a.ok() && *a != config.address) {
        address = absl::InvalidArgumentError(
            absl::StrCat("PCI address \"", config.address,
                         "\" is not normalized (want \"", *a, "\")"));
      }
      break;
    }
    case Source::kMdev: {
      absl::StatusOr<std::string> a = NormalizeUuid(config.address);
      if (!a.ok()) {
        address = absl::InvalidArgumentError(absl::StrCat(
            "mdev \"", config.address, "\": ", a.status().message()));
      } else if (*a != config.address) {
        address = absl::InvalidArgumentError(absl::StrCat(
            "mdev UUID \"", config.address, "\" is not lowercase"));
      }
      break;
    }
    case Source::kCdev:
      address = ValidateCdevPath(config.address);
      break;
    case Source::kFdSocket:
      address = ValidateSocketPath(config.address);
      break;
    default:
      address = absl::InvalidArgumentError("unknown source");
  }
  if (!address.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(who, address.message()));
  }
  if (config.vf_token.has_value()) {
    if (config.source != Source::kPci && config.source != Source::kCdev) {
      return absl::InvalidArgumentError(absl::StrCat(
          who, "vf_token goes only with bdf= or cdev= (a ",
          VfioSourceKey(config.source), "= device is opened without one)"));
    }
    absl::StatusOr<std::string> token = NormalizeUuid(*config.vf_token);
    if (!token.ok() || *token != *config.vf_token) {
      return absl::InvalidArgumentError(
          absl::StrCat(who, "vf_token is not a lowercase UUID"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<VfioDeviceConfig> ParseVfioDeviceLine(absl::string_view line) {
  std::vector<absl::string_view> words =
      absl::StrSplit(line, absl::ByAnyChar(" \t\r\n"), absl::SkipEmpty());
  if (words.empty() || words[0] != "vfio") {
    return absl::InvalidArgumentError(
        "vfio device line: want \"vfio NAME bdf=|mdev=|cdev=|fd_socket=...\"");
  }
  if (words.size() < 2) {
    return absl::InvalidArgumentError(
        "vfio device line: missing the device name after \"vfio\"");
  }
  VfioDeviceConfig config;
  config.name = std::string(words[1]);
  if (!IsValidVfioDeviceName(config.name)) {
    return BadToken(words[1], "a device name is [A-Za-z0-9._:-]{1,64}");
  }
  std::set<std::string> seen;
  std::optional<absl::string_view> source_token;
  for (size_t i = 2; i < words.size(); ++i) {
    const absl::string_view token = words[i];
    const size_t eq = token.find('=');
    if (eq == absl::string_view::npos) return BadToken(token, "want key=value");
    const absl::string_view key = token.substr(0, eq);
    const absl::string_view value = token.substr(eq + 1);
    if (!seen.insert(std::string(key)).second) {
      return BadToken(token, absl::StrCat("\"", key, "\" given twice"));
    }
    if (key == "bdf" || key == "mdev" || key == "cdev" || key == "fd_socket") {
      if (source_token.has_value()) {
        return BadToken(
            token, absl::StrCat("a device has one source; \"", *source_token,
                                "\" already names it"));
      }
      source_token = token;
    }
    if (key == "bdf") {
      absl::StatusOr<std::string> a = NormalizePciAddress(value);
      if (!a.ok()) return BadToken(token, a.status().message());
      config.source = Source::kPci;
      config.address = *std::move(a);
    } else if (key == "mdev") {
      absl::StatusOr<std::string> a = NormalizeUuid(value);
      if (!a.ok()) return BadToken(token, a.status().message());
      config.source = Source::kMdev;
      config.address = *std::move(a);
    } else if (key == "cdev") {
      if (absl::Status s = ValidateCdevPath(value); !s.ok()) {
        return BadToken(token, s.message());
      }
      config.source = Source::kCdev;
      config.address = std::string(value);
    } else if (key == "fd_socket") {
      if (absl::Status s = ValidateSocketPath(value); !s.ok()) {
        return BadToken(token, s.message());
      }
      config.source = Source::kFdSocket;
      config.address = std::string(value);
    } else if (key == "vf_token") {
      absl::StatusOr<std::string> t = NormalizeUuid(value);
      if (!t.ok()) return BadToken(token, t.status().message());
      config.vf_token = *std::move(t);
    } else {
      return BadToken(token,
                      "unknown key (want bdf, mdev, cdev, fd_socket, "
                      "vf_token)");
    }
  }
  if (!source_token.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("vfio device line: device ", config.name,
                     " needs one of bdf=, mdev=, cdev=, fd_socket="));
  }
  if (absl::Status s = ValidateVfioDeviceConfig(config); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("vfio device line: ", s.message()));
  }
  return config;
}

}  // namespace migd::device
