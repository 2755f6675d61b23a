#include "migd/plugins/registry.h"

#include <dirent.h>
#include <dlfcn.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/plugin.h"

namespace migd::plugins {

absl::Status Registry::Load(const std::string& path) {
  // RTLD_LOCAL: two plugins may define the same symbols without meeting.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return absl::FailedPreconditionError(absl::StrCat(
        "plugin ", path, ": cannot load it: ", why ? why : "dlopen failed"));
  }
  dlerror();  // clear
  void* entry = dlsym(handle, MIGD_PLUGIN_ENTRY_SYMBOL);
  if (entry == nullptr) {
    dlclose(handle);
    return absl::FailedPreconditionError(
        absl::StrCat("plugin ", path, ": it exports no ",
                     MIGD_PLUGIN_ENTRY_SYMBOL, " function: not a migd plugin"));
  }
  const migd_plugin* table = reinterpret_cast<migd_plugin_entry_fn>(entry)();
  absl::StatusOr<std::unique_ptr<Plugin>> plugin =
      Plugin::Adopt(table, handle, path, log_);
  if (!plugin.ok()) return plugin.status();
  return Register(*std::move(plugin));
}

absl::Status Registry::Adopt(const migd_plugin* table,
                             const std::string& path) {
  absl::StatusOr<std::unique_ptr<Plugin>> plugin =
      Plugin::Adopt(table, nullptr, path, log_);
  if (!plugin.ok()) return plugin.status();
  return Register(*std::move(plugin));
}

absl::Status Registry::Register(std::unique_ptr<Plugin> plugin) {
  auto it = plugins_.find(plugin->name());
  if (it != plugins_.end()) {
    return absl::FailedPreconditionError(
        absl::StrCat("plugin ", plugin->path(), ": its name \"", plugin->name(),
                     "\" is taken by ", it->second->path(), " (loaded first)"));
  }
  base::LogInfo("plugin ", plugin->name(), " ", plugin->version(),
                " loaded from ", plugin->path(), " (ABI ",
                plugin->abi_version(), ")");
  const std::string name = plugin->name();
  plugins_.emplace(name, std::move(plugin));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<LoadFailure>> Registry::LoadDirectory(
    const std::string& dir) {
  std::vector<LoadFailure> failures;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) {
      base::LogInfo("no plugin directory ", dir,
                    ": every device gets the generic behaviour");
      return failures;
    }
    return absl::NotFoundError(absl::StrCat(
        "plugin directory ", dir, ": cannot read it: ", strerror(errno)));
  }
  std::vector<std::string> files;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (absl::EndsWith(name, ".so")) files.push_back(name);
  }
  closedir(d);
  std::sort(files.begin(), files.end());
  for (const std::string& f : files) {
    const std::string path = absl::StrCat(dir, "/", f);
    if (absl::Status s = Load(path); !s.ok()) {
      base::LogWarning(s.message(), "; skipped");
      failures.push_back({path, std::string(s.message())});
    }
  }
  return failures;
}

absl::StatusOr<const Plugin*> Registry::ClaimantOf(
    const DeviceFacts& device) const {
  const Plugin* best = nullptr;
  int best_score = 0;
  const Plugin* tie = nullptr;
  for (const auto& [name, plugin] : plugins_) {
    const int score = plugin->Claim(device);
    if (score <= 0) continue;
    if (score > best_score) {
      best = plugin.get();
      best_score = score;
      tie = nullptr;
    } else if (score == best_score) {
      tie = plugin.get();
    }
  }
  if (tie != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device.name, ": plugins ", best->name(), " (", best->path(),
        ") and ", tie->name(), " (", tie->path(), ") both claim it with score ",
        best_score, "; remove one of them from the plugin directory"));
  }
  return best;
}

const Plugin* Registry::Find(const std::string& name) const {
  auto it = plugins_.find(name);
  return it == plugins_.end() ? nullptr : it->second.get();
}

std::vector<const Plugin*> Registry::List() const {
  std::vector<const Plugin*> out;
  for (const auto& [name, plugin] : plugins_) out.push_back(plugin.get());
  return out;
}

}  // namespace migd::plugins
