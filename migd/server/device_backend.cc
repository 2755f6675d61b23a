#include "migd/server/device_backend.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace migd::server {

absl::Status DeviceBackends::Register(std::unique_ptr<DeviceBackend> backend) {
  if (backend == nullptr) {
    return absl::InvalidArgumentError("no device backend to register");
  }
  const std::string kind = backend->kind();
  // The configuration finds a line's backend by its first word; a kind that
  // is not one word would never be found (or make its lines comments).
  if (kind.empty() || kind.front() == '#' ||
      kind.find_first_of(" \t\r\n") != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device backend kind \"", kind,
        "\" is not one word (config lines start with their kind)"));
  }
  if (auto [it, fresh] = backends_.emplace(kind, std::move(backend)); !fresh) {
    return absl::AlreadyExistsError(absl::StrCat("device backend kind \"", kind,
                                                 "\" is already registered"));
  }
  return absl::OkStatus();
}

const DeviceBackend* DeviceBackends::Find(absl::string_view kind) const {
  auto it = backends_.find(kind);
  return it == backends_.end() ? nullptr : it->second.get();
}

std::vector<std::string> DeviceBackends::Kinds() const {
  std::vector<std::string> out;
  out.reserve(backends_.size());
  for (const auto& [kind, backend] : backends_) out.push_back(kind);
  return out;
}

}  // namespace migd::server
