// e2e/testing/emulated_devices.h
//
// Emulated devices for an agent's --devices_config, as tests describe them:
// a list of specs, their config text, their names, and the destination's
// counterpart of a source's list.

#ifndef MIGD_E2E_TESTING_EMULATED_DEVICES_H_
#define MIGD_E2E_TESTING_EMULATED_DEVICES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace migd::e2e {

// One "emulated ..." line of an agent's --devices_config, with the flags
// STOP_COPY|P2P|PRE_COPY.
struct EmuSpec {
  std::string name;
  std::string size = "16MiB";
  uint64_t seed = 1;
  // Further key=value words, e.g. a workload (dirty_rate=...) or a fault.
  std::string extra;
};

// `count` devices "<prefix><i>" of `size`, seeds seed_base + i, each with
// `extra`.
std::vector<EmuSpec> Emus(int count, absl::string_view size, uint64_t seed_base,
                          absl::string_view extra = "",
                          absl::string_view prefix = "emu");

// The destination's counterpart: same names and sizes, other content (seed +
// 1000), no extra words.
std::vector<EmuSpec> Mirror(std::vector<EmuSpec> specs);

// The --devices_config text, a line per spec.
std::string DevicesConfig(const std::vector<EmuSpec>& specs);

std::vector<std::string> NamesOf(const std::vector<EmuSpec>& specs);

}  // namespace migd::e2e

#endif  // MIGD_E2E_TESTING_EMULATED_DEVICES_H_
