#include "migd/metrics/server.h"

#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "migd/metrics/device_states.h"
#include "migd/metrics/http_test_util.h"
#include "prometheus/counter.h"
#include "prometheus/registry.h"

namespace migd::metrics {
namespace {

using testing::HttpGet;
using testing::HttpResponse;

TEST(MetricsServer, ServesEveryCollectableAtSlashMetrics) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildCounter()
      .Name("migd_test_total")
      .Help("a test counter")
      .Register(*registry)
      .Add({{"role", "source"}})
      .Increment(3);
  auto devices = std::make_shared<DeviceStates>([] {
    std::vector<DeviceSample> d(3);
    d[0] = {true, v1::DEVICE_STATE_RUNNING, false};
    d[1] = {true, v1::DEVICE_STATE_RUNNING, true};
    d[2] = {false, v1::DEVICE_STATE_ERROR, true};
    return d;
  });
  auto server = MetricsServer::Start("127.0.0.1:0", {registry, devices});
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_GT((*server)->port(), 0);
  const HttpResponse scrape = HttpGet((*server)->port(), "/metrics");
  EXPECT_EQ(scrape.code, 200) << scrape.body;
  const std::string& body = scrape.body;
  EXPECT_TRUE(absl::StrContains(body, "migd_test_total{role=\"source\"} 3"))
      << body;
  EXPECT_TRUE(absl::StrContains(body, "migd_devices{state=\"running\"} 2"))
      << body;
  EXPECT_TRUE(absl::StrContains(body, "migd_devices{state=\"unknown\"} 1"))
      << body;
  // Every state is there, a zero included, so that series do not vanish.
  EXPECT_TRUE(absl::StrContains(body, "migd_devices{state=\"stop_copy\"} 0"))
      << body;
  EXPECT_TRUE(absl::StrContains(body, "migd_devices_claimed 2")) << body;
}

TEST(MetricsServer, APortInUseIsAnErrorNotACrash) {
  auto first = MetricsServer::Start("127.0.0.1:0", {});
  ASSERT_TRUE(first.ok()) << first.status();
  auto second =
      MetricsServer::Start(absl::StrCat("127.0.0.1:", (*first)->port()), {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(second.status().message(),
                                absl::StrCat(":", (*first)->port())))
      << second.status();
}

TEST(ValidateMetricsListen, LoopbackOnlyUnlessAskedAndWellFormed) {
  EXPECT_TRUE(ValidateMetricsListen("127.0.0.1:9464", false).ok());
  EXPECT_TRUE(ValidateMetricsListen("localhost:9464", false).ok());
  EXPECT_TRUE(ValidateMetricsListen("[::1]:9464", false).ok());
  EXPECT_TRUE(ValidateMetricsListen("127.0.0.1:0", false).ok());
  absl::Status remote = ValidateMetricsListen("0.0.0.0:9464", false);
  EXPECT_EQ(remote.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(remote.message(), "--metrics_allow_remote"))
      << remote;
  EXPECT_TRUE(ValidateMetricsListen("0.0.0.0:9464", true).ok());
  EXPECT_FALSE(ValidateMetricsListen("9464", false).ok());
  EXPECT_FALSE(ValidateMetricsListen("127.0.0.1:http", false).ok());
  EXPECT_FALSE(ValidateMetricsListen("127.0.0.1:70000", false).ok());
  EXPECT_FALSE(ValidateMetricsListen("metrics.example:9464", true).ok());
}

}  // namespace
}  // namespace migd::metrics
