// migd/host/modalias.cc

#include "migd/host/modalias.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "migd/base/unique_fd.h"
#include "migd/host/names.h"

namespace migd::host {
namespace {

constexpr absl::string_view kVfioPciPrefix = "vfio_pci:";

// What the reader is willing to hold: Debian's modules.alias is ~1.5 MB.
constexpr size_t kMaxAliasFile = 64 << 20;

int Wildcards(absl::string_view pattern) {
  return static_cast<int>(std::count(pattern.begin(), pattern.end(), '*'));
}

std::string Plural(int n, absl::string_view word) {
  return absl::StrCat(n, " ", word, n == 1 ? "" : "s");
}

// "1ac3:0101" from "pci:v00001AC3d00000101sv...", lowercase; empty when
// the modalias does not start that way.
std::string IdsOf(absl::string_view modalias) {
  absl::string_view rest = modalias;
  if (!absl::ConsumePrefix(&rest, "pci:v") || rest.size() < 17 ||
      rest[8] != 'd') {
    return "";
  }
  const absl::string_view vendor = rest.substr(0, 8);
  const absl::string_view device = rest.substr(9, 8);
  for (absl::string_view hex : {vendor, device}) {
    for (char c : hex) {
      if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return "";
    }
  }
  return absl::AsciiStrToLower(
      absl::StrCat(vendor.substr(4), ":", device.substr(4)));
}

}  // namespace

absl::StatusOr<std::vector<VfioPciAlias>> ParseVfioPciAliases(
    absl::string_view text, absl::string_view source) {
  std::vector<VfioPciAlias> out;
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (words[0] != "alias") continue;
    if (words.size() != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ":", number, ": \"", absl::CHexEscape(line),
                       "\" is not \"alias PATTERN MODULE\""));
    }
    if (!absl::StartsWith(words[1], kVfioPciPrefix)) continue;
    out.push_back({std::string(words[1]), std::string(words[2])});
  }
  return out;
}

std::string ModulesAliasPath(absl::string_view root,
                             absl::string_view release) {
  std::string rel(release);
  if (rel.empty()) {
    struct utsname u;
    if (::uname(&u) == 0) rel = u.release;
  }
  while (!root.empty() && root.back() == '/') root.remove_suffix(1);
  return absl::StrCat(root, "/lib/modules/", rel, "/modules.alias");
}

absl::StatusOr<std::vector<VfioPciAlias>> LoadVfioPciAliases(
    absl::string_view root, absl::string_view release) {
  const std::string path = ModulesAliasPath(root, release);
  base::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          path, " does not exist (has depmod run for this kernel?)"));
    }
    return absl::ErrnoToStatus(errno, "read " + path);
  }
  std::string text;
  std::array<char, 64 << 10> buf;
  for (;;) {
    const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "read " + path);
    if (n == 0) break;
    text.append(buf.data(), static_cast<size_t>(n));
    if (text.size() > kMaxAliasFile) {
      return absl::OutOfRangeError(absl::StrCat("read ", path, ": longer than ",
                                                kMaxAliasFile, " bytes"));
    }
  }
  return ParseVfioPciAliases(text, path);
}

absl::StatusOr<VfioModuleChoice> ChooseVfioPciModule(
    absl::string_view device, absl::string_view modalias,
    const std::vector<VfioPciAlias>& aliases, absl::string_view explicit_module,
    const std::optional<ModulePreference>& preference) {
  if (!explicit_module.empty()) {
    absl::StatusOr<std::string> module = CanonicalModuleName(explicit_module);
    if (!module.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device ", device,
          ": the explicit driver choice: ", module.status().message()));
    }
    return VfioModuleChoice{*module,
                            absl::StrCat("chosen explicitly: ", *module)};
  }
  if (preference.has_value()) {
    // Checked as a driver the operator names is: a variant driver must
    // know the device.
    absl::StatusOr<std::string> module =
        CanonicalModuleName(preference->module);
    absl::StatusOr<std::string> fits =
        module.ok() ? CheckModuleFits(device, modalias, aliases, *module)
                    : absl::StatusOr<std::string>(module.status());
    if (!fits.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", device, ": ", preference->source, " prefers driver \"",
          absl::CHexEscape(preference->module), "\", which cannot be taken: ",
          fits.status().message(), "; choose the driver explicitly"));
    }
    return VfioModuleChoice{
        *module,
        absl::StrCat("preferred by ", preference->source, ": ", *fits)};
  }
  absl::string_view rest = modalias;
  if (!absl::ConsumePrefix(&rest, "pci:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", device, ": modalias \"",
                     absl::CHexEscape(modalias), "\" is not a pci: modalias"));
  }
  const std::string subject = absl::StrCat(kVfioPciPrefix, rest);

  const VfioPciAlias* best = nullptr;
  const VfioPciAlias* rival = nullptr;  // a different module, as specific
  for (const VfioPciAlias& a : aliases) {
    if (::fnmatch(a.pattern.c_str(), subject.c_str(), 0) != 0) continue;
    if (best == nullptr || Wildcards(a.pattern) < Wildcards(best->pattern)) {
      best = &a;
      rival = nullptr;
    } else if (Wildcards(a.pattern) == Wildcards(best->pattern) &&
               CanonicalModuleName(a.module).value_or(a.module) !=
                   CanonicalModuleName(best->module).value_or(best->module) &&
               rival == nullptr) {
      rival = &a;
    }
  }
  if (best == nullptr) {
    return VfioModuleChoice{"vfio_pci", "no vfio_pci alias matches: vfio-pci"};
  }
  const int n = Wildcards(best->pattern);
  if (rival != nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", device, " (", modalias, "): modules ",
                     best->module, " (", best->pattern, ") and ", rival->module,
                     " (", rival->pattern, ") match equally (",
                     Plural(n, "wildcard"), "); choose the driver explicitly"));
  }
  absl::StatusOr<std::string> module = CanonicalModuleName(best->module);
  if (!module.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", device, ": alias ", best->pattern, ": ",
                     module.status().message()));
  }
  return VfioModuleChoice{
      *module, absl::StrCat("alias ", best->pattern, " of ", best->module,
                            " matches (", Plural(n, "wildcard"), ")")};
}

absl::StatusOr<VfioModuleChoice> ChooseVfioPciModuleFor(
    const std::string& bdf, absl::string_view modalias,
    const std::vector<VfioPciAlias>& aliases,
    const ModulePreferenceFn& prefer) {
  std::optional<ModulePreference> preference;
  if (prefer) {
    absl::StatusOr<std::optional<ModulePreference>> p = prefer(bdf);
    if (!p.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "device ", bdf, ": its driver preference cannot be told: ",
          p.status().message(), "; choose the driver explicitly"));
    }
    preference = *std::move(p);
  }
  return ChooseVfioPciModule(bdf, modalias, aliases, "", preference);
}

absl::StatusOr<std::string> CheckModuleFits(
    absl::string_view device, absl::string_view modalias,
    const std::vector<VfioPciAlias>& aliases, absl::string_view module) {
  absl::StatusOr<std::string> name = CanonicalModuleName(module);
  if (!name.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device ", device, ": driver ", module, ": ", name.status().message()));
  }
  absl::string_view rest = modalias;
  if (!absl::ConsumePrefix(&rest, "pci:")) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", device, ": modalias \"",
                     absl::CHexEscape(modalias), "\" is not a pci: modalias"));
  }
  const std::string subject = absl::StrCat(kVfioPciPrefix, rest);
  std::vector<std::string> own;  // the module's patterns, in file order
  for (const VfioPciAlias& a : aliases) {
    if (CanonicalModuleName(a.module).value_or(a.module) != *name) continue;
    if (::fnmatch(a.pattern.c_str(), subject.c_str(), 0) == 0) {
      return absl::StrCat("alias ", a.pattern, " of ", a.module, " matches");
    }
    own.push_back(a.pattern);
  }
  if (own.empty()) {
    return absl::StrCat("module ", *name,
                        " has no vfio_pci alias: not checked against the "
                        "device");
  }
  const std::string ids = IdsOf(modalias);
  return absl::FailedPreconditionError(absl::StrCat(
      "module ", *name, " drives only the devices its vfio_pci aliases match (",
      absl::StrJoin(own, ", "), "), and device ", device, " (",
      ids.empty() ? "" : absl::StrCat("ids ", ids, ", "), "modalias ", modalias,
      ") matches none of them: a variant driver would drive a "
      "device it does not know"));
}

}  // namespace migd::host
