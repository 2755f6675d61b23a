#include "e2e/testing/emulated_devices.h"

#include "absl/strings/str_cat.h"

namespace migd::e2e {

std::vector<EmuSpec> Emus(int count, absl::string_view size, uint64_t seed_base,
                          absl::string_view extra, absl::string_view prefix) {
  std::vector<EmuSpec> specs;
  for (int i = 0; i < count; ++i) {
    specs.push_back({absl::StrCat(prefix, i), std::string(size),
                     seed_base + static_cast<uint64_t>(i), std::string(extra)});
  }
  return specs;
}

std::vector<EmuSpec> Mirror(std::vector<EmuSpec> specs) {
  for (EmuSpec& s : specs) {
    s.seed += 1000;
    s.extra.clear();
  }
  return specs;
}

std::string DevicesConfig(const std::vector<EmuSpec>& specs) {
  std::string out;
  for (const EmuSpec& s : specs) {
    absl::StrAppend(&out, "emulated ", s.name, " size=", s.size,
                    " seed=", s.seed, " flags=STOP_COPY|P2P|PRE_COPY",
                    s.extra.empty() ? "" : " ", s.extra, "\n");
  }
  return out;
}

std::vector<std::string> NamesOf(const std::vector<EmuSpec>& specs) {
  std::vector<std::string> names;
  for (const EmuSpec& s : specs) names.push_back(s.name);
  return names;
}

}  // namespace migd::e2e
