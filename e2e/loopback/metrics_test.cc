// Metrics as an operator's Prometheus sees them: two real agents on
// 127.0.0.1 (mutual TLS) serve /metrics, a real Prometheus server scrapes
// both every second, and its query API must show what the agents did: a
// migration that succeeded on both sides (its bytes, its downtime), one the
// destination refused as incompatible (its reason), no job left in flight,
// and each agent's devices by state.
//
// The same Prometheus answers the operator's dashboard (deploy/grafana/
// migd.json, --dashboard): every query of every panel, its variables
// substituted, must be valid PromQL, name only the families and labels the
// agents export, and the panels that migrations feed must show data.
//
// The Prometheus server is Debian's (tools/test fetches it: see
// tools/lib/deps.sh); its path comes from $MIGD_PROMETHEUS, else PATH.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/shell.h"
#include "e2e/testing/status_macros.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "migd/metrics/http_test_util.h"
#include "proto/migd/v1/migration.grpc.pb.h"

extern char** environ;

namespace migd::e2e {
namespace {

using metrics::testing::FreePort;
using metrics::testing::HttpGet;
using metrics::testing::HttpResponse;

constexpr absl::Duration kRpcTimeout = absl::Seconds(60);

// --emulated_plugin=PATH: the emulated devices' plugin (state formats).
std::string& PluginPath() {
  static auto* path = new std::string();
  return *path;
}

// --dashboard=PATH: the Grafana dashboard whose queries are checked.
std::string& DashboardPath() {
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
    if (json.fields().count("status") == 0 ||
        json.fields().at("status").string_value() != "success" ||
        json.fields().count("data") == 0) {
      return absl::InternalError(absl::StrCat("query ", promql, ": ", r.body));
    }
    const auto& data = json.fields().at("data").struct_value();
    if (data.fields().count("resultType") == 0 ||
        data.fields().at("resultType").string_value() != "vector") {
      return absl::InvalidArgumentError(
          absl::StrCat("query ", promql, ": not an instant vector: ", r.body));
    }
    std::vector<Sample> samples;
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
    StartAgentsAndPrometheus(
        "emulated src0 size=256KiB seed=1 format=1\n"
        "emulated src1 size=256KiB seed=2 format=1\n",
        "emulated dst0 size=256KiB seed=3 format=1\n"
        "emulated newer size=256KiB seed=4 format=2\n");
  }

  // A source agent with `source_devices` (a devices config), a destination
  // with `destination_devices`, both serving /metrics and the emulated
  // plugin, and a Prometheus scraping both (label agent="source" and
  // "destination").
  void StartAgentsAndPrometheus(const std::string& source_devices,
                                const std::string& destination_devices) {
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
        source_devices);
    ASSERT_NE(source_, nullptr);
    destination_ = StartAgent(
        "destination",
        {absl::StrCat("--plugin_dir=", plugins), "--metrics_listen=127.0.0.1:0",
         absl::StrCat("--metrics_port_file=", TestTmp(),
                      "/destination.metrics")},
        destination_devices);
    ASSERT_NE(destination_, nullptr);
    std::map<std::string, std::string> targets;
    for (const char* agent : {"source", "destination"}) {
      std::ifstream f(absl::StrCat(TestTmp(), "/", agent, ".metrics"));
      int port = 0;
      ASSERT_TRUE(f >> port) << agent << " wrote no metrics port";
      targets[agent] = absl::StrCat("127.0.0.1:", port);
    }
    ASSERT_OK_AND_ASSIGN(prometheus_, PrometheusServer::Start(binary, targets));
    targets_ = targets;
  }

  // PrepareIncoming + StartMigration of one device pair; the job's end on
  // the source, or the StartMigration refusal.
  absl::StatusOr<v1::Migration> Migrate(
      const std::string& job, const std::string& from, const std::string& to,
      const v1::MigrationPolicy& policy = v1::MigrationPolicy()) {
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
    *start.mutable_policy() = policy;
    v1::Migration started;
    r = CallStartMigration(source_->stub(), start, &started, kRpcTimeout);
    if (!r.status.ok()) return absl::FailedPreconditionError(DescribeCall(r));
    return WaitForEnd(source_->stub(), job, absl::Now() + kRpcTimeout);
  }

  std::unique_ptr<PrometheusServer> prometheus_;
  std::map<std::string, std::string> targets_;  // agent -> its /metrics
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

  // What each agent serves passes Prometheus's own linter.
  const std::string promtool =
      std::filesystem::path(PrometheusBinary()).parent_path() / "promtool";
  ASSERT_EQ(access(promtool.c_str(), X_OK), 0) << "no " << promtool;
  for (const auto& [agent, address] : targets_) {
    const int port = std::stoi(address.substr(address.rfind(':') + 1));
    HttpResponse scrape = HttpGet(port, "/metrics");
    ASSERT_EQ(scrape.code, 200) << agent;
    const std::string file = absl::StrCat(TestTmp(), "/", agent, ".prom");
    std::ofstream(file) << scrape.body;
    CommandResult lint = RunShell(absl::StrCat(
        ShellQuote(promtool), " check metrics <", ShellQuote(file)));
    EXPECT_EQ(lint.exit_code, 0) << agent << ": " << lint.output;
    EXPECT_EQ(lint.output, "") << agent;
  }

  // The gRPC health service answers SERVING (grpc.health.v1, on the agent's
  // own port, through mutual TLS): HealthCheckRequest{} is no bytes, and
  // HealthCheckResponse{status: SERVING} is field 1 = 1.
  grpc::GenericStub health(source_->channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  grpc::ByteBuffer request, response;
  grpc::Slice empty;
  request = grpc::ByteBuffer(&empty, 1);
  std::mutex mu;
  std::condition_variable cv;
  bool answered = false;
  grpc::Status status;
  health.UnaryCall(&context, "/grpc.health.v1.Health/Check",
                   grpc::StubOptions(), &request, &response,
                   [&](grpc::Status s) {
                     std::lock_guard<std::mutex> lock(mu);
                     status = std::move(s);
                     answered = true;
                     cv.notify_one();
                   });
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return answered; });
  }
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << "not SERVING";
}

// ---- The operator's dashboard ----------------------------------------------

// One query of a dashboard panel.
struct PanelQuery {
  std::string panel;  // the panel's title
  std::string ref_id;
  std::string expr;
};

void CollectQueries(const google::protobuf::ListValue& panels,
                    std::vector<PanelQuery>* out) {
  for (const google::protobuf::Value& panel : panels.values()) {
    const auto& fields = panel.struct_value().fields();
    const auto title = fields.find("title");
    const std::string name =
        title == fields.end() ? "(untitled)" : title->second.string_value();
    if (const auto nested = fields.find("panels"); nested != fields.end()) {
      CollectQueries(nested->second.list_value(), out);
    }
    const auto targets = fields.find("targets");
    if (targets == fields.end()) continue;
    for (const google::protobuf::Value& target :
         targets->second.list_value().values()) {
      const auto& t = target.struct_value().fields();
      const auto expr = t.find("expr");
      const auto ref = t.find("refId");
      out->push_back({name, ref == t.end() ? "?" : ref->second.string_value(),
                      expr == t.end() ? "" : expr->second.string_value()});
    }
  }
}

// Every query of every panel of the Grafana dashboard at `path`.
absl::StatusOr<std::vector<PanelQuery>> DashboardQueries(
    const std::string& path) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  const std::string text((std::istreambuf_iterator<char>(f)),
                         std::istreambuf_iterator<char>());
  google::protobuf::Struct json;
  if (!google::protobuf::util::JsonStringToMessage(text, &json).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not JSON"));
  }
  const auto panels = json.fields().find("panels");
  if (panels == json.fields().end()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no panels"));
  }
  std::vector<PanelQuery> queries;
  CollectQueries(panels->second.list_value(), &queries);
  return queries;
}

// The query Grafana sends with every agent selected, a one-minute rate
// window, a five-minute range and the default downtime limit.
// kInvalidArgument when a variable is left that this does not know.
absl::StatusOr<std::string> Substitute(const std::string& expr) {
  std::string out = expr;
  // One at a time: $__rate_interval and $__range share a prefix.
  for (const auto& [variable, value] :
       std::vector<std::pair<std::string, std::string>>{
           {"$__rate_interval", "1m"},
           {"$__range", "5m"},
           {"${downtime_limit}", "0.3"},
           {"$downtime_limit", "0.3"},
           {"$instance", ".*"}}) {
    out = absl::StrReplaceAll(out, {{variable, value}});
  }
  if (absl::StrContains(out, "$")) {
    return absl::InvalidArgumentError(
        absl::StrCat("a dashboard variable the test does not know in: ", expr));
  }
  return out;
}

// The migd metric names `expr` reads.
std::set<std::string> MetricNames(const std::string& expr) {
  static const std::regex kName("\\bmigd_[a-z0-9_]+");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), kName);
       it != std::sregex_iterator(); ++it) {
    names.insert(it->str());
  }
  return names;
}

// The labels `expr` selects a migd metric by: (metric, label) pairs.
std::vector<std::pair<std::string, std::string>> SelectorLabels(
    const std::string& expr) {
  static const std::regex kSelector("(migd_[a-z0-9_]+)\\{([^}]*)\\}");
  static const std::regex kMatcher("([A-Za-z_][A-Za-z0-9_]*)\\s*(=~|!~|!=|=)");
  std::vector<std::pair<std::string, std::string>> labels;
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), kSelector);
       it != std::sregex_iterator(); ++it) {
    const std::string metric = (*it)[1].str();
    const std::string matchers = (*it)[2].str();
    for (auto m =
             std::sregex_iterator(matchers.begin(), matchers.end(), kMatcher);
         m != std::sregex_iterator(); ++m) {
      labels.emplace_back(metric, (*m)[1].str());
    }
  }
  return labels;
}

// The labels `expr` aggregates by (or without).
std::set<std::string> GroupingLabels(const std::string& expr) {
  static const std::regex kBy("\\b(?:by|without)\\s*\\(([^)]*)\\)");
  std::set<std::string> labels;
  for (auto it = std::sregex_iterator(expr.begin(), expr.end(), kBy);
       it != std::sregex_iterator(); ++it) {
    for (absl::string_view label :
         absl::StrSplit((*it)[1].str(), ',', absl::SkipWhitespace())) {
      labels.insert(std::string(absl::StripAsciiWhitespace(label)));
    }
  }
  return labels;
}

// Devices that pre-copy while their state keeps changing (64 MiB/s), so
// that every family shows: pre-copy bytes and iterations, the dirty rate,
// a notice (a job that switches over without converging).
class DashboardTest : public MetricsTest {
 protected:
  void SetUp() override {
    constexpr absl::string_view kLive =
        "size=1MiB format=1 flags=STOP_COPY|P2P|PRE_COPY dirty_rate=64MiB";
    StartAgentsAndPrometheus(
        absl::StrCat("emulated src0 seed=1 ", kLive, "\n",
                     "emulated src1 seed=2 ", kLive, "\n"),
        absl::StrCat("emulated dst0 seed=3 ", kLive, "\n",
                     "emulated newer seed=4 size=1MiB format=2 "
                     "flags=STOP_COPY|P2P|PRE_COPY\n"));
  }
};

TEST_F(DashboardTest,
       EveryPanelQueryRunsOnExportedFamiliesAndFedPanelsShowData) {
  ASSERT_FALSE(DashboardPath().empty()) << "no --dashboard=PATH";
  ASSERT_OK_AND_ASSIGN(std::vector<PanelQuery> queries,
                       DashboardQueries(DashboardPath()));
  ASSERT_FALSE(queries.empty()) << DashboardPath() << " has no queries";
  ASSERT_OK(prometheus_
                ->Await("count(up{job=\"migd\"} == 1)",
                        [](double v) { return v == 2; })
                .status());

  // A job pre-copy cannot converge for (1 KiB/s assumed, a 10 ms limit):
  // it switches over at its one iteration, with a notice.
  v1::MigrationPolicy capped;
  capped.set_bandwidth_bytes_per_second(1024);
  capped.mutable_downtime_limit()->set_nanos(10'000'000);
  capped.set_max_iterations(1);
  ASSERT_OK_AND_ASSIGN(v1::Migration first,
                       Migrate("job-capped", "src0", "dst0", capped));
  ASSERT_EQ(v1::Phase_Name(first.phase()), "PHASE_SUCCEEDED")
      << first.DebugString();
  ASSERT_FALSE(Migrate("job-refused", "src1", "newer").ok());
  // Prometheus holds the first counts before the second job adds to them,
  // so that rates over the window are above zero.
  ASSERT_OK(prometheus_
                ->Await("migd_migrations_total{agent=\"source\","
                        "outcome=\"succeeded\"}",
                        [](double v) { return v == 1; })
                .status());
  ASSERT_OK_AND_ASSIGN(v1::Migration second, Migrate("job-2", "src1", "dst0"));
  ASSERT_EQ(v1::Phase_Name(second.phase()), "PHASE_SUCCEEDED")
      << second.DebugString();
  ASSERT_OK(prometheus_
                ->Await("migd_migrations_total{agent=\"source\","
                        "outcome=\"succeeded\"}",
                        [](double v) { return v == 2; })
                .status());

  // The families and labels the agents export, as Prometheus stores them.
  ASSERT_OK_AND_ASSIGN(std::vector<PrometheusServer::Sample> series,
                       prometheus_->Query("{__name__=~\"migd_.+\"}"));
  std::map<std::string, std::set<std::string>> labels_of;
  for (const PrometheusServer::Sample& s : series) {
    std::set<std::string>& labels = labels_of[s.labels.at("__name__")];
    for (const auto& [label, value] : s.labels) labels.insert(label);
  }

  for (const PanelQuery& q : queries) {
    SCOPED_TRACE(
        absl::StrCat("panel \"", q.panel, "\" query ", q.ref_id, ": ", q.expr));
    ASSERT_FALSE(q.expr.empty());
    ASSERT_OK_AND_ASSIGN(const std::string promql, Substitute(q.expr));
    // Valid PromQL: Prometheus answers it with status "success".
    EXPECT_OK(prometheus_->Query(promql).status());
    std::set<std::string> known_labels;
    for (const std::string& metric : MetricNames(q.expr)) {
      const auto it = labels_of.find(metric);
      if (it == labels_of.end()) {
        ADD_FAILURE() << metric << " is not a family the agents export";
        continue;
      }
      known_labels.insert(it->second.begin(), it->second.end());
    }
    for (const auto& [metric, label] : SelectorLabels(q.expr)) {
      const auto it = labels_of.find(metric);
      EXPECT_TRUE(it != labels_of.end() && it->second.count(label) != 0)
          << metric << " has no label " << label;
    }
    if (!known_labels.empty()) {
      for (const std::string& label : GroupingLabels(q.expr)) {
        EXPECT_EQ(known_labels.count(label), 1u)
            << "aggregates by " << label << ", which "
            << absl::StrJoin(MetricNames(q.expr), ", ") << " lack";
      }
    }
  }

  // The panels these migrations feed show data: every query a series, and
  // the first one a value above zero where the migrations make one (the
  // devices; counters that grew after a scrape: two successes, the first
  // scraped before the second). A counter that appeared once (one refusal,
  // one notice) has not grown within the window.
  const std::map<std::string, bool> fed = {
      {"Migrations by outcome", true},
      {"Failures by reason", false},
      {"Downtime quantiles", true},
      {"Downtime parts", true},
      {"Throughput per migration", true},
      {"Bytes moved: pre-copy vs stop-copy", true},
      {"Devices by state", true},
      {"Job notices", false}};
  const std::function<bool(double)> positive = [](double v) {
    return std::isfinite(v) && v > 0;
  };
  const std::function<bool(double)> any = [](double) { return true; };
  for (const auto& [panel, above_zero] : fed) {
    SCOPED_TRACE(panel);
    bool first = true;
    for (const PanelQuery& q : queries) {
      if (q.panel != panel) continue;
      ASSERT_OK_AND_ASSIGN(const std::string promql, Substitute(q.expr));
      EXPECT_OK(prometheus_->Await(promql, first && above_zero ? positive : any)
                    .status());
      first = false;
    }
    EXPECT_FALSE(first) << "the dashboard has no panel \"" << panel << "\"";
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
    } else if (absl::ConsumePrefix(&arg, "--dashboard=")) {
      migd::e2e::DashboardPath() = std::string(arg);
    }
  }
  return RUN_ALL_TESTS();
}
