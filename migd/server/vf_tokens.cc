// migd/server/vf_tokens.cc

#include "migd/server/vf_tokens.h"

#include <dirent.h>
#include <errno.h>
#include <openssl/sha.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "migd/host/mdev.h"
#include "migd/host/names.h"
#include "migd/host/state_file.h"

namespace migd::server {
namespace {

constexpr absl::string_view kWhat = "VF tokens";

// Wipes a string that carried a token.
void Wipe(std::string& s) { explicit_bzero(s.data(), s.size()); }

}  // namespace

VfTokens::VfTokens(std::string state_dir, device::VfioPaths paths,
                   device::VfioSyscalls syscalls)
    : dir_(host::StatePath(state_dir, "vf-tokens")),
      sys_(syscalls),
      opener_(std::move(paths), std::move(syscalls)) {}

std::string VfTokens::TokenId(absl::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(),
         digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), 4));
}

absl::Status VfTokens::EnsureDir() const {
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    const int err = errno;
    return absl::Status(
        absl::ErrnoToStatusCode(err),
        absl::StrCat(kWhat, ": mkdir ", dir_, ": ", strerror(err)));
  }
  struct stat st;
  if (::lstat(dir_.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(kWhat, ": ", dir_, " is not a directory"));
  }
  if ((st.st_mode & 077) != 0 && ::chmod(dir_.c_str(), 0700) != 0) {
    const int err = errno;
    return absl::Status(
        absl::ErrnoToStatusCode(err),
        absl::StrCat(kWhat, ": chmod 0700 ", dir_, ": ", strerror(err)));
  }
  return absl::OkStatus();
}

std::optional<std::string> VfTokens::TokenFor(const std::string& pf) const {
  absl::StatusOr<std::string> bdf = host::NormalizePciAddress(pf);
  if (!bdf.ok()) return std::nullopt;
  absl::StatusOr<std::optional<std::string>> text =
      host::ReadStateFile(kWhat, dir_, host::StatePath(dir_, *bdf));
  if (!text.ok() || !text->has_value()) return std::nullopt;
  std::string raw = **text;
  Wipe(**text);
  absl::StatusOr<std::string> token =
      host::NormalizeUuid(absl::StripAsciiWhitespace(raw));
  Wipe(raw);
  if (!token.ok()) return std::nullopt;
  return *std::move(token);
}

absl::StatusOr<device::VfioDeviceFd> VfTokens::OpenAndSet(
    const std::string& pf, const std::string& token) {
  absl::StatusOr<device::VfioDeviceFd> fd = opener_.OpenPci(pf, std::nullopt);
  if (!fd.ok()) return fd.status();
  if (absl::Status s =
          device::SetPciVfToken(fd->fd.get(), fd->address, token, sys_);
      !s.ok()) {
    return s;
  }
  return fd;
}

std::vector<absl::Status> VfTokens::Restore() {
  std::vector<absl::Status> errors;
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return errors;  // none stored
  std::vector<std::string> pfs;
  while (struct dirent* e = ::readdir(d)) {
    absl::StatusOr<std::string> bdf = host::NormalizePciAddress(e->d_name);
    if (bdf.ok() && *bdf == e->d_name) pfs.push_back(*bdf);
  }
  ::closedir(d);
  for (const std::string& pf : pfs) {
    std::optional<std::string> token = TokenFor(pf);
    if (!token.has_value()) {
      errors.push_back(absl::DataLossError(absl::StrCat(
          kWhat, ": ", host::StatePath(dir_, pf), " holds no UUID")));
      continue;
    }
    absl::StatusOr<device::VfioDeviceFd> fd = OpenAndSet(pf, *token);
    Wipe(*token);
    if (!fd.ok()) {
      errors.push_back(absl::Status(
          fd.status().code(),
          absl::StrCat("PF ", pf, ": setting its stored VF token again: ",
                       fd.status().message())));
      continue;
    }
    absl::MutexLock l(&mu_);
    held_[pf] = *std::move(fd);
  }
  return errors;
}

absl::StatusOr<std::string> VfTokens::Own(const std::string& pf) {
  if (absl::Status s = EnsureDir(); !s.ok()) return s;
  absl::StatusOr<std::string> token = host::RandomUuidV4();
  if (!token.ok()) return token.status();
  struct WipeOnExit {
    std::string* s;
    ~WipeOnExit() { Wipe(*s); }
  } wipe{&*token};
  const std::string path = host::StatePath(dir_, pf);
  // Stored first: a token the kernel has and the disk does not would be lost
  // to a crash.
  if (absl::Status s =
          host::WriteStateFile(kWhat, dir_, path, absl::StrCat(*token, "\n"));
      !s.ok()) {
    return s;
  }
  absl::StatusOr<device::VfioDeviceFd> fd = OpenAndSet(pf, *token);
  if (!fd.ok()) {
    ::unlink(path.c_str());
    return fd.status();
  }
  const std::string id = TokenId(*token);
  absl::MutexLock l(&mu_);
  held_[pf] = *std::move(fd);
  return id;
}

bool VfTokens::Holds(const std::string& pf) const {
  absl::MutexLock l(&mu_);
  return held_.count(pf) > 0;
}

absl::Status VfTokens::Release(const std::string& pf) {
  {
    absl::MutexLock l(&mu_);
    held_.erase(pf);
  }
  const std::string path = host::StatePath(dir_, pf);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    const int err = errno;
    return absl::Status(
        absl::ErrnoToStatusCode(err),
        absl::StrCat(kWhat, ": removing ", path, ": ", strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace migd::server
