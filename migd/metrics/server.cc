#include "migd/metrics/server.h"

#include <exception>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "prometheus/exposer.h"

namespace migd::metrics {

absl::Status ValidateMetricsListen(const std::string& listen,
                                   bool allow_remote) {
  const size_t colon = listen.rfind(':');
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("--metrics_listen \"", listen, "\": ", why));
  };
  if (colon == std::string::npos || colon == 0) {
    return bad("want HOST:PORT, e.g. 127.0.0.1:9464");
  }
  int port = 0;
  if (!absl::SimpleAtoi(absl::string_view(listen).substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return bad("the port is not a number from 0 to 65535");
  }
  const std::string host = listen.substr(0, colon);
  bool loopback =
      host == "localhost" || host == "[::1]" || absl::StartsWith(host, "127.");
  bool numeric = true;
  if (host.front() == '[') {
    numeric = host.back() == ']';
  } else if (host != "localhost") {
    for (char c : host)
      numeric = numeric && ((c >= '0' && c <= '9') || c == '.');
  }
  if (!numeric) return bad("the host must be an IP address or localhost");
  if (!loopback && !allow_remote) {
    return bad(
        "not a loopback address: the metrics endpoint is plain HTTP without "
        "authentication; pass --metrics_allow_remote to serve it there "
        "anyway (behind a firewall or network policy)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& listen,
    std::vector<std::shared_ptr<prometheus::Collectable>> collectables) {
  std::unique_ptr<MetricsServer> server(new MetricsServer());
  // civetweb reports a port it cannot bind by an exception out of the
  // exposer's constructor; nothing else here throws.
  try {
    server->exposer_ = std::make_unique<prometheus::Exposer>(listen, 1);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", listen,
                     " (address in use or not local?)"));
  }
  const std::vector<int> ports = server->exposer_->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("metrics: no port listening for ", listen));
  }
  server->port_ = ports.front();
  server->collectables_ = std::move(collectables);
  for (const auto& c : server->collectables_) {
    server->exposer_->RegisterCollectable(c);
  }
  return server;
}

MetricsServer::~MetricsServer() {
  // Stop serving before the collectables go.
  exposer_.reset();
}

}  // namespace migd::metrics
