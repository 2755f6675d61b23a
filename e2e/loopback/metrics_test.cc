// Metrics as an operator's Prometheus sees them: two real agents on
// 127.0.0.1 (mutual TLS) serve /metrics, a real Prometheus server scrapes
// both every second, and its query API must show what the agents did: a
// migration that succeeded on both sides (its bytes, its downtime), one the
// destination refused as incompatible (its reason), no job left in flight,
// and each agent's devices by state.
//
// The Prometheus server is Debian's (tools/test fetches it: see
// tools/lib/deps.sh); its path comes from $MIGD_PROMETHEUS, else PATH.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/status_macros.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/migration.grpc.pb.h"

extern char** environ;

namespace migd::e2e {
namespace {

constexpr absl::Duration kRpcTimeout = absl::Seconds(60);

// --emulated_plugin=PATH: the emulated devices' plugin (state formats).
std::string& PluginPath() {
  static auto* path = new std::string();
  return *path;
}

std::string TestTmp() {
  const char* dir = getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

// The Prometheus server binary, or "" when there is none.
std::string PrometheusBinary() {
  if (const char* p = getenv("MIGD_PROMETHEUS"); p != nullptr && *p != 0) {
    return p;
  }
  for (const char* candidate :
       {"/usr/bin/prometheus",
        "/var/cache/migd-test/prometheus/usr/bin/prometheus"}) {
    if (access(candidate, X_OK) == 0) return candidate;
  }
  return "";
}

// A port nothing listens on right now (bound and released).
int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// GET http://127.0.0.1:<port><target> (HTTP/1.0): status code and body;
// code 0 when the connection failed.
struct HttpResponse {
  int code = 0;
  std::string body;
};
HttpResponse HttpGet(int port, const std::string& target) {
  HttpResponse r;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string raw;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    const std::string request =
        absl::StrCat("GET ", target, " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    if (write(fd, request.data(), request.size()) ==
        static_cast<ssize_t>(request.size())) {
      char buf[8192];
      ssize_t n;
      while ((n = read(fd, buf, sizeof(buf))) > 0) raw.append(buf, n);
    }
  }
  close(fd);
  absl::string_view v = raw;
  if (!absl::ConsumePrefix(&v, "HTTP/1.")) return r;
  if (v.size() < 5 || !absl::SimpleAtoi(v.substr(2, 3), &r.code)) return r;
  const size_t body = raw.find("\r\n\r\n");
  if (body != std::string::npos) r.body = raw.substr(body + 4);
  return r;
}

std::string UrlEncode(absl::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      absl::StrAppend(&out, "%", absl::Hex(c, absl::kZeroPad2));
    }
  }
  return out;
}

// A Prometheus server of the test's own, scraping `targets` (label "agent"
// -> "127.0.0.1:port") every second.
class PrometheusServer {
 public:
  static absl::StatusOr<std::unique_ptr<PrometheusServer>> Start(
      const std::string& binary,
      const std::map<std::string, std::string>& targets) {
    std::unique_ptr<PrometheusServer> p(new PrometheusServer());
    const std::string dir = absl::StrCat(TestTmp(), "/prometheus");
    std::filesystem::create_directories(dir + "/data");
    std::ofstream config(dir + "/prometheus.yml");
    config << "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
              "scrape_configs:\n  - job_name: migd\n    static_configs:\n";
    for (const auto& [agent, address] : targets) {
      config << "      - targets: ['" << address << "']\n"
             << "        labels: {agent: " << agent << "}\n";
    }
    config.close();
    p->port_ = FreePort();
    p->log_ = dir + "/prometheus.log";
    std::vector<std::string> args = {
        binary, absl::StrCat("--config.file=", dir, "/prometheus.yml"),
        absl::StrCat("--storage.tsdb.path=", dir, "/data"),
        absl::StrCat("--web.listen-address=127.0.0.1:", p->port_),
        "--log.level=warn"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, p->log_.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    const int rc = posix_spawn(&p->pid_, binary.c_str(), &actions, nullptr,
                               argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      p->pid_ = -1;
      return absl::InternalError(
          absl::StrCat("cannot run ", binary, ": ", strerror(rc)));
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (HttpGet(p->port_, "/-/ready").code != 200) {
      if (absl::Now() > deadline || waitpid(p->pid_, nullptr, WNOHANG) != 0) {
        return absl::UnavailableError(absl::StrCat(
            "Prometheus did not become ready; its log:\n", p->LogTail()));
      }
      absl::SleepFor(absl::Milliseconds(200));
    }
    return p;
  }

  ~PrometheusServer() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
  }

  // An instant query's result: one entry per series, its labels and value.
  struct Sample {
    std::map<std::string, std::string> labels;
    double value = 0;
  };
  absl::StatusOr<std::vector<Sample>> Query(const std::string& promql) const {
    HttpResponse r =
        HttpGet(port_, absl::StrCat("/api/v1/query?query=", UrlEncode(promql)));
    if (r.code != 200) {
      return absl::UnavailableError(
          absl::StrCat("query ", promql, ": HTTP ", r.code, " ", r.body));
    }
    google::protobuf::Struct json;
    if (!google::protobuf::util::JsonStringToMessage(r.body, &json).ok()) {
      return absl::InternalError(absl::StrCat("not JSON: ", r.body));
    }
    std::vector<Sample> samples;
    const auto& data = json.fields().at("data").struct_value();
    for (const auto& entry : data.fields().at("result").list_value().values()) {
      Sample s;
      for (const auto& [k, v] :
           entry.struct_value().fields().at("metric").struct_value().fields()) {
        s.labels[k] = v.string_value();
      }
      const auto& value =
          entry.struct_value().fields().at("value").list_value().values();
      if (value.size() != 2 ||
          !absl::SimpleAtod(value[1].string_value(), &s.value)) {
        return absl::InternalError(absl::StrCat("bad value in ", r.body));
      }
      samples.push_back(std::move(s));
    }
    return samples;
  }

  // Polls `promql` until it has a series whose value satisfies `want` and
  // returns that value; the last answer in the error otherwise.
  absl::StatusOr<double> Await(
      const std::string& promql, const std::function<bool(double)>& want,
      absl::Duration timeout = absl::Seconds(30)) const {
    const absl::Time deadline = absl::Now() + timeout;
    std::string last = "no answer";
    while (true) {
      absl::StatusOr<std::vector<Sample>> samples = Query(promql);
      if (samples.ok()) {
        last = samples->empty() ? "no series" : "";
        for (const Sample& s : *samples) {
          if (want(s.value)) return s.value;
          absl::StrAppend(&last, last.empty() ? "" : ", ", s.value);
        }
      } else {
        last = std::string(samples.status().message());
      }
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            promql, ": ", last, " after ", absl::FormatDuration(timeout)));
      }
      absl::SleepFor(absl::Milliseconds(500));
    }
  }

  std::string LogTail() const {
    std::ifstream f(log_);
    std::string text((std::istreambuf_iterator<char>(f)),
                     std::istreambuf_iterator<char>());
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
  }

 private:
  PrometheusServer() = default;
  pid_t pid_ = -1;
  int port_ = 0;
  std::string log_;
};

// The status of `expr` is OK, else its message.
#define EXPECT_OK(expr)                                     \
  do {                                                      \
    const absl::Status migd_status = (expr);                \
    EXPECT_TRUE(migd_status.ok()) << migd_status.message(); \
  } while (0)
#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const absl::Status migd_status = (expr);                \
    ASSERT_TRUE(migd_status.ok()) << migd_status.message(); \
  } while (0)

class MetricsTest : public AgentTest {
 protected:
  void SetUp() override {
    const std::string binary = PrometheusBinary();
    ASSERT_FALSE(binary.empty())
        << "no Prometheus server: run tools/test (it fetches one), or set "
           "MIGD_PROMETHEUS to a prometheus binary";
    const std::string plugins = absl::StrCat(TestTmp(), "/plugins");
    std::filesystem::create_directories(plugins);
    std::filesystem::copy_file(
        PluginPath(), plugins + "/emulated.so",
        std::filesystem::copy_options::overwrite_existing);
    source_ = StartAgent(
        "source",
        {absl::StrCat("--plugin_dir=", plugins), "--metrics_listen=127.0.0.1:0",
         absl::StrCat("--metrics_port_file=", TestTmp(), "/source.metrics")},
        "emulated src0 size=256KiB seed=1 format=1\n"
        "emulated src1 size=256KiB seed=2 format=1\n");
    ASSERT_NE(source_, nullptr);
    destination_ = StartAgent(
        "destination",
        {absl::StrCat("--plugin_dir=", plugins), "--metrics_listen=127.0.0.1:0",
         absl::StrCat("--metrics_port_file=", TestTmp(),
                      "/destination.metrics")},
        "emulated dst0 size=256KiB seed=3 format=1\n"
        "emulated newer size=256KiB seed=4 format=2\n");
    ASSERT_NE(destination_, nullptr);
    std::map<std::string, std::string> targets;
    for (const char* agent : {"source", "destination"}) {
      std::ifstream f(absl::StrCat(TestTmp(), "/", agent, ".metrics"));
      int port = 0;
      ASSERT_TRUE(f >> port) << agent << " wrote no metrics port";
      targets[agent] = absl::StrCat("127.0.0.1:", port);
    }
    ASSERT_OK_AND_ASSIGN(prometheus_, PrometheusServer::Start(binary, targets));
  }

  // PrepareIncoming + StartMigration of one device pair; the job's end on
  // the source, or the StartMigration refusal.
  absl::StatusOr<v1::Migration> Migrate(const std::string& job,
                                        const std::string& from,
                                        const std::string& to) {
    v1::PrepareIncomingRequest prepare;
    prepare.set_job_id(job);
    v1::DevicePair* p = prepare.add_devices();
    p->set_source_device(from);
    p->set_destination_device(to);
    prepare.set_source_identity(source_->identity());
    v1::PrepareIncomingResponse prepared;
    CallResult r = CallPrepareIncoming(destination_->stub(), prepare, &prepared,
                                       kRpcTimeout);
    if (!r.status.ok()) return absl::InternalError(DescribeCall(r));
    v1::StartMigrationRequest start;
    start.set_job_id(job);
    *start.mutable_devices() = prepare.devices();
    start.set_destination(destination_->address());
    start.set_destination_identity(destination_->identity());
    start.set_transfer_token(prepared.transfer_token());
    v1::Migration started;
    r = CallStartMigration(source_->stub(), start, &started, kRpcTimeout);
    if (!r.status.ok()) return absl::FailedPreconditionError(DescribeCall(r));
    return WaitForEnd(source_->stub(), job, absl::Now() + kRpcTimeout);
  }

  std::unique_ptr<PrometheusServer> prometheus_;
};

TEST_F(MetricsTest, PrometheusSeesMigrationsTheirBytesDowntimeAndDevices) {
  // Both agents are scraped.
  ASSERT_OK(prometheus_
                ->Await("count(up{job=\"migd\"} == 1)",
                        [](double v) { return v == 2; })
                .status());

  ASSERT_OK_AND_ASSIGN(v1::Migration done, Migrate("job-ok", "src0", "dst0"));
  ASSERT_EQ(v1::Phase_Name(done.phase()), "PHASE_SUCCEEDED")
      << done.DebugString();
  absl::StatusOr<v1::Migration> refused = Migrate("job-bad", "src1", "newer");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "INCOMPATIBLE"))
      << refused.status();

  for (const char* agent : {"source", "destination"}) {
    EXPECT_OK(prometheus_
                  ->Await(absl::StrCat("migd_migrations_total{agent=\"", agent,
                                       "\",outcome=\"succeeded\"}"),
                          [](double v) { return v == 1; })
                  .status());
    EXPECT_OK(prometheus_
                  ->Await(absl::StrCat("migd_migrations_started_total{agent=\"",
                                       agent, "\"}"),
                          [](double v) { return v == 2; })
                  .status());
  }
  EXPECT_OK(prometheus_
                ->Await("migd_migrations_total{agent=\"destination\","
                        "outcome=\"failed\",reason=\"incompatible\"}",
                        [](double v) { return v == 1; })
                .status());
  // What moved: at least the device's 256 KiB, all of it without pre-copy
  // (the emulated devices' default) in stop-copy, and no more than the job
  // itself reported.
  const double moved = static_cast<double>(done.stop_copy_bytes());
  EXPECT_OK(
      prometheus_
          ->Await("migd_transferred_bytes_total{agent=\"source\","
                  "phase=\"stopcopy\"}",
                  [moved](double v) { return v >= 256 * 1024 && v == moved; })
          .status());
  // The job's downtime, observed once, in the histogram's sum.
  const double downtime =
      absl::ToDoubleSeconds(FromProtoDuration(done.downtime()));
  EXPECT_OK(prometheus_
                ->Await("migd_downtime_seconds_count{agent=\"source\"}",
                        [](double v) { return v == 1; })
                .status());
  EXPECT_OK(prometheus_
                ->Await("migd_downtime_seconds_sum{agent=\"source\"}",
                        [downtime](double v) {
                          return v > 0 && std::abs(v - downtime) < 1e-6;
                        })
                .status());
  EXPECT_OK(prometheus_
                ->Await("histogram_quantile(0.5, "
                        "migd_downtime_seconds_bucket{agent=\"source\"})",
                        [](double v) { return v > 0; })
                .status());
  // Nothing left in flight on either side.
  EXPECT_OK(prometheus_
                ->Await("sum(migd_migrations_in_flight)",
                        [](double v) { return v == 0; })
                .status());
  // The source refused by the destination failed too, with the same reason.
  EXPECT_OK(prometheus_
                ->Await("migd_migrations_total{agent=\"source\","
                        "outcome=\"failed\",reason=\"incompatible\"}",
                        [](double v) { return v == 1; })
                .status());
  // Devices by state, read at scrape time: the source's migrated device
  // stopped (the VM runs on the destination now), the other three running,
  // none held by a job.
  EXPECT_OK(prometheus_
                ->Await("migd_devices{agent=\"source\",state=\"stop\"}",
                        [](double v) { return v == 1; })
                .status());
  for (const auto& [agent, running] :
       std::map<std::string, int>{{"source", 1}, {"destination", 2}}) {
    EXPECT_OK(
        prometheus_
            ->Await(absl::StrCat("migd_devices{agent=\"", agent,
                                 "\",state=\"running\"}"),
                    [running = running](double v) { return v == running; })
            .status());
    EXPECT_OK(
        prometheus_
            ->Await(absl::StrCat("migd_devices_claimed{agent=\"", agent, "\"}"),
                    [](double v) { return v == 0; })
            .status());
  }
}

}  // namespace
}  // namespace migd::e2e

int main(int argc, char** argv) {
  testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--emulated_plugin=")) {
      migd::e2e::PluginPath() = std::string(arg);
    }
  }
  return RUN_ALL_TESTS();
}
