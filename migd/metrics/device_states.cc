#include "migd/metrics/device_states.h"

#include <map>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/strip.h"

namespace migd::metrics {
namespace {

std::string StateLabel(v1::DeviceState state) {
  absl::string_view name = v1::DeviceState_Name(state);
  absl::ConsumePrefix(&name, "DEVICE_STATE_");
  return absl::AsciiStrToLower(name);
}

prometheus::ClientMetric GaugeOf(
    double value, std::vector<prometheus::ClientMetric::Label> labels) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  return m;
}

}  // namespace

DeviceStates::DeviceStates(std::function<std::vector<DeviceSample>()> sample)
    : sample_(std::move(sample)) {}

std::vector<prometheus::MetricFamily> DeviceStates::Collect() const {
  std::map<std::string, int> by_state;
  for (int s = v1::DeviceState_MIN; s <= v1::DeviceState_MAX; ++s) {
    if (v1::DeviceState_IsValid(s)) {
      by_state[StateLabel(static_cast<v1::DeviceState>(s))] = 0;
    }
  }
  by_state["unknown"] = 0;
  int claimed = 0;
  for (const DeviceSample& d : sample_()) {
    ++by_state[d.state_known ? StateLabel(d.state) : "unknown"];
    if (d.claimed) ++claimed;
  }
  prometheus::MetricFamily states;
  states.name = "migd_devices";
  states.help = "This agent's devices by VFIO migration state";
  states.type = prometheus::MetricType::Gauge;
  for (const auto& [state, count] : by_state) {
    states.metric.push_back(GaugeOf(count, {{"state", state}}));
  }
  prometheus::MetricFamily held;
  held.name = "migd_devices_claimed";
  held.help = "This agent's devices that belong to a migration job";
  held.type = prometheus::MetricType::Gauge;
  held.metric.push_back(GaugeOf(claimed, {}));
  return {std::move(states), std::move(held)};
}

}  // namespace migd::metrics
