// migd/metrics/server.h
//
// Serves Prometheus's text format at http://<listen>/metrics (prometheus-cpp's
// pull exposer, civetweb underneath). Plain HTTP without authentication:
// prometheus-cpp's exposer offers basic auth but not TLS here, so the agent
// keeps the endpoint on a loopback address unless told otherwise (see
// ValidateMetricsListen), and a scraper on the same host (or a sidecar)
// reaches it. What it serves holds no secret: counts, durations, device
// states; never a token, key or device state byte.

#ifndef MIGD_METRICS_SERVER_H_
#define MIGD_METRICS_SERVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

namespace prometheus {
class Exposer;
}

namespace migd::metrics {

// OK for "host:port" with a numeric port (0: any free one) and a host that
// is an IPv4 address, "[IPv6]" or "localhost". A host that is not a
// loopback address is refused unless `allow_remote` (the endpoint has no
// TLS). kInvalidArgument naming the flag value otherwise.
absl::Status ValidateMetricsListen(const std::string& listen,
                                   bool allow_remote);

class MetricsServer {
 public:
  // Listens on `listen` (validated by the caller) and serves every one of
  // `collectables` at /metrics. kUnavailable when it cannot bind.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& listen,
      std::vector<std::shared_ptr<prometheus::Collectable>> collectables);

  ~MetricsServer();

  // The port it listens on (the one picked for port 0).
  int port() const { return port_; }

 private:
  MetricsServer() = default;

  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace migd::metrics

#endif  // MIGD_METRICS_SERVER_H_
