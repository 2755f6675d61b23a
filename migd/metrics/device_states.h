// migd/metrics/device_states.h
//
// migd_devices{state}: this agent's devices by VFIO migration state, read
// when Prometheus scrapes (a device's state is what the kernel says now, not
// what a job last saw), plus migd_devices_claimed: how many belong to a job.
// Every state is reported, those with no device as 0, so that a dashboard's
// series do not come and go.

#ifndef MIGD_METRICS_DEVICE_STATES_H_
#define MIGD_METRICS_DEVICE_STATES_H_

#include <functional>
#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::metrics {

// One device as a scrape sees it: its state, or none when it could not be
// read (reported as state="unknown"), and whether a job holds it.
struct DeviceSample {
  bool state_known = false;
  v1::DeviceState state = v1::DEVICE_STATE_ERROR;
  bool claimed = false;
};

class DeviceStates final : public prometheus::Collectable {
 public:
  // `sample` lists the devices; it is called on the exposer's threads,
  // once per scrape, and must be safe to call from any thread.
  explicit DeviceStates(std::function<std::vector<DeviceSample>()> sample);

  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  std::function<std::vector<DeviceSample>()> sample_;
};

}  // namespace migd::metrics

#endif  // MIGD_METRICS_DEVICE_STATES_H_
