#include "cli/commands.h"

#include <stdlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "cli/fake_agent.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/security/credentials.h"
#include "proto/migd/v1/migration.grpc.pb.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

migd::v1::Migration Job(migd::v1::Phase phase, uint64_t done) {
  migd::v1::Migration m;
  m.set_job_id("j1");
  m.set_role(migd::v1::ROLE_SOURCE);
  m.set_phase(phase);
  m.set_bytes_done(done);
  m.set_bytes_total(100);
  auto* d = m.add_devices();
  d->set_device("emu0");
  d->set_peer_device("dst0");
  d->set_state(migd::v1::DEVICE_STATE_RUNNING);
  d->set_bytes_done(done);
  return m;
}

migd::v1::MigrationEvent Event(migd::v1::Phase phase, uint64_t done) {
  migd::v1::MigrationEvent e;
  *e.mutable_migration() = Job(phase, done);
  return e;
}

// What stderr starts with for a command run with MIGCTL_INSECURE=1.
constexpr char kPlaintextWarning[] =
    "migctl: warning: plaintext connection (MIGCTL_INSECURE=1): the agent is "
    "not authenticated and nothing is encrypted\n";

// A new file under $TEST_TMPDIR holding `text`; returns its path.
std::string WriteTempFile(const std::string& name, const std::string& text) {
  const char* tmp = getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/cfg.XXXXXX");
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  std::string path = absl::StrCat(dir, "/", name);
  std::ofstream(path) << text;
  return path;
}

// Two fake agents, "src:1" and "dst:1", reached in process (in plaintext:
// the environment has MIGCTL_INSECURE=1 and nothing else); any other address
// is a port nothing listens on.
class CommandsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_server_ = grpc::ServerBuilder()
                      .RegisterService(&src_)
                      .RegisterService(&src_host_)
                      .BuildAndStart();
    dst_server_ = grpc::ServerBuilder().RegisterService(&dst_).BuildAndStart();
    ASSERT_NE(src_server_, nullptr);
    ASSERT_NE(dst_server_, nullptr);
    env_.out = &out_;
    env_.err = &err_;
    vars_["MIGCTL_INSECURE"] = "1";
    env_.getenv =
        [this](const std::string& name) -> std::optional<std::string> {
      auto it = vars_.find(name);
      if (it == vars_.end()) return std::nullopt;
      return it->second;
    };
    env_.dial =
        [this](const security::Credentials&, const std::string& address,
               const std::string&) -> std::shared_ptr<grpc::ChannelInterface> {
      grpc::ChannelArguments args;
      if (address == "src:1") return src_server_->InProcessChannel(args);
      if (address == "dst:1") return dst_server_->InProcessChannel(args);
      return grpc::CreateChannel("127.0.0.1:1",
                                 grpc::InsecureChannelCredentials());
    };
  }

  void TearDown() override {
    src_server_->Shutdown();
    dst_server_->Shutdown();
  }

  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), "--agent=src:1");
    return Main(args, env_);
  }

  std::vector<std::string> OutLines() const {
    return absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  }

  // stderr after the plaintext warning (which the tests of it check).
  std::string Errors() const {
    std::string e = err_.str();
    if (absl::StartsWith(e, kPlaintextWarning)) {
      e.erase(0, strlen(kPlaintextWarning));
    }
    return e;
  }

  FakeAgent src_, dst_;
  FakeHostAgent src_host_;  // src's HostService
  std::unique_ptr<grpc::Server> src_server_, dst_server_;
  std::ostringstream out_, err_;
  std::map<std::string, std::string> vars_;  // the environment
  Env env_;
};

TEST_F(CommandsTest, DevicesPrintsATable) {
  auto* d = src_.devices.add_devices();
  d->set_name("emu0");
  d->set_kind("emulated");
  d->set_state_digest("crc32c:12345678");
  EXPECT_EQ(Run({"devices"}), kExitOk);
  EXPECT_THAT(out_.str(), StartsWith("NAME  KIND      STATE  FLAGS  JOB  SIZE  "
                                     "DIGEST\n"
                                     "emu0  emulated  ERROR  -      -    -     "
                                     "crc32c:12345678\n"));
  EXPECT_EQ(Errors(), "");
}

TEST_F(CommandsTest, DevicesJsonUsesProtoFieldNames) {
  src_.devices.add_devices()->set_state_digest("crc32c:12345678");
  EXPECT_EQ(Run({"devices", "--output=json"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"state_digest\": \"crc32c:12345678\""));
}

TEST_F(CommandsTest, RpcErrorShowsCodeMessageAndReason) {
  src_.errors["ListDevices"] = {grpc::StatusCode::FAILED_PRECONDITION,
                                "device emu0 is busy",
                                "ERROR_REASON_DEVICE_BUSY"};
  EXPECT_EQ(Run({"devices"}), kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: devices: FAILED_PRECONDITION: device emu0 is busy "
            "(reason: ERROR_REASON_DEVICE_BUSY)\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CommandsTest, RpcErrorWithoutReasonLeavesItOut) {
  src_.errors["GetMigration"] = {grpc::StatusCode::NOT_FOUND, "no job j9", ""};
  EXPECT_EQ(Run({"status", "j9"}), kExitFailure);
  EXPECT_EQ(Errors(), "migctl: status: NOT_FOUND: no job j9\n");
}

TEST_F(CommandsTest, UnreachableAgentIsUnavailable) {
  EXPECT_EQ(Main({"--agent=127.0.0.1:1", "--timeout=5s", "list"}, env_),
            kExitFailure);
  EXPECT_THAT(Errors(), StartsWith("migctl: list: UNAVAILABLE: "));
}

TEST_F(CommandsTest, UsageErrorExitsTwoWithTheCommandsUsageLine) {
  EXPECT_EQ(Run({"prepare", "--job=j1"}), kExitUsage);
  EXPECT_THAT(Errors(), StartsWith("migctl: prepare: missing --devices\n"
                                   "usage: migctl [--agent=NAME|HOST:PORT] "
                                   "[--output=text|json] [--timeout=DURATION] "
                                   "[TLS FLAGS] prepare --job=J"));
  EXPECT_TRUE(dst_.prepares.empty());
  EXPECT_TRUE(src_.prepares.empty());
}

TEST_F(CommandsTest, UnknownCommandIsAUsageError) {
  EXPECT_EQ(Run({"explode"}), kExitUsage);
  EXPECT_THAT(Errors(), StartsWith("migctl: unknown command 'explode'\n"
                                   "usage: migctl "));
}

TEST_F(CommandsTest, HelpGoesToStdoutAndExitsZero) {
  EXPECT_EQ(Run({"--help"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("mutual TLS"));
}

TEST_F(CommandsTest, PreparePrintsOnlyTheToken) {
  EXPECT_EQ(Main({"--agent=dst:1", "prepare", "--job=j1", "--devices=emu0:dst0",
                  "--source=src-host"},
                 env_),
            kExitOk);
  EXPECT_EQ(out_.str(), "tok-j1\n");
  ASSERT_EQ(dst_.prepares.size(), 1u);
  EXPECT_EQ(dst_.prepares[0].source(), "src-host");
  ASSERT_EQ(dst_.prepares[0].devices_size(), 1);
  EXPECT_EQ(dst_.prepares[0].devices(0).source_device(), "emu0");
  EXPECT_EQ(dst_.prepares[0].devices(0).destination_device(), "dst0");
}

TEST_F(CommandsTest, MigratePreparesTheDestinationThenStartsAndWatches) {
  src_.events = {Event(migd::v1::PHASE_CONNECTING, 0),
                 Event(migd::v1::PHASE_STOP_COPY, 50),
                 Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitOk)
      << Errors();
  ASSERT_EQ(dst_.prepares.size(), 1u);
  EXPECT_EQ(dst_.prepares[0].job_id(), "j1");
  EXPECT_EQ(dst_.prepares[0].source(), "src:1");
  ASSERT_EQ(src_.starts.size(), 1u);
  EXPECT_EQ(src_.starts[0].transfer_token(), "tok-j1");
  EXPECT_EQ(src_.starts[0].destination(), "dst:1");
  EXPECT_EQ(src_.starts[0].devices(0).destination_device(), "dst0");
  std::string out = out_.str();
  EXPECT_THAT(out, HasSubstr("Prepared job j1 on destination dst:1\n"));
  EXPECT_THAT(out, HasSubstr("Started job j1: src:1 -> dst:1\n"));
  // Not a terminal: one plain line per change, then the summary.
  EXPECT_THAT(out, HasSubstr("] CONNECTING 0/100 B 0%"));
  EXPECT_THAT(out, HasSubstr("] STOP_COPY 50/100 B 50%"));
  EXPECT_THAT(out, HasSubstr("Job j1 SUCCEEDED\n  transferred  100 B\n"));
  EXPECT_THAT(out, HasSubstr("  devices      emu0 -> dst0  RUNNING  100 B\n"));
  EXPECT_EQ(out.find('\r'), std::string::npos);
  EXPECT_EQ(Errors(), "");
}

TEST_F(CommandsTest, MigrateByClassStartsWithTheDevicesTheDestinationPicked) {
  src_.events = {Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(
      Run({"migrate", "--job=j1", "--devices=emu0:dst0,edu0:pci:1234:11e8",
           "--destination=dst:1"}),
      kExitOk)
      << Errors();
  ASSERT_EQ(dst_.prepares.size(), 1u);
  ASSERT_EQ(dst_.prepares[0].devices_size(), 2);
  EXPECT_EQ(dst_.prepares[0].devices(0).destination_device(), "dst0");
  EXPECT_FALSE(dst_.prepares[0].devices(0).has_destination_class());
  EXPECT_EQ(dst_.prepares[0].devices(1).destination_device(), "");
  EXPECT_EQ(dst_.prepares[0].devices(1).destination_class().pci_ids(),
            "1234:11e8");
  ASSERT_EQ(src_.starts.size(), 1u);
  ASSERT_EQ(src_.starts[0].devices_size(), 2);
  EXPECT_EQ(src_.starts[0].devices(0).destination_device(), "dst0");
  EXPECT_EQ(src_.starts[0].devices(1).source_device(), "edu0");
  EXPECT_EQ(src_.starts[0].devices(1).destination_device(), "picked-1");
  EXPECT_FALSE(src_.starts[0].devices(1).has_destination_class());
  EXPECT_THAT(out_.str(),
              HasSubstr("Prepared job j1 on destination dst:1: picked edu0 -> "
                        "picked-1 (0000:00:01.0)\n"));
}

TEST_F(CommandsTest, PrepareByClassNamesThePickedDevicesOnStderr) {
  EXPECT_EQ(Main({"--agent=dst:1", "prepare", "--job=j1",
                  "--devices=gpu:mdev:mbochs-small", "--source=src-host"},
                 env_),
            kExitOk)
      << Errors();
  EXPECT_EQ(out_.str(), "tok-j1\n");
  EXPECT_THAT(Errors(), HasSubstr("migctl: prepare: job j1: the destination "
                                  "picked gpu -> picked-0 (0000:00:00.0)\n"));
}

TEST_F(CommandsTest, MigrateSendsThePolicyFlags) {
  src_.events = {Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1", "--downtime_limit=250ms",
                 "--bandwidth=500MiB/s", "--max_iterations=7",
                 "--max_precopy_time=90s", "--on_no_convergence=fail",
                 "--ack_timeout=1.5s", "--allow_mixed_p2p", "--no_precopy",
                 "--chunk=64KiB", "--phase_timeout=2m"}),
            kExitOk)
      << Errors();
  ASSERT_EQ(src_.starts.size(), 1u);
  const migd::v1::MigrationPolicy& p = src_.starts[0].policy();
  EXPECT_EQ(p.downtime_limit().seconds(), 0);
  EXPECT_EQ(p.downtime_limit().nanos(), 250000000);
  EXPECT_EQ(p.bandwidth_bytes_per_second(), 500ull << 20);
  EXPECT_EQ(p.max_iterations(), 7u);
  EXPECT_EQ(p.max_precopy_time().seconds(), 90);
  EXPECT_EQ(p.on_no_convergence(),
            migd::v1::MigrationPolicy::ON_NO_CONVERGENCE_FAIL);
  EXPECT_EQ(p.switchover_ack_timeout().seconds(), 1);
  EXPECT_EQ(p.switchover_ack_timeout().nanos(), 500000000);
  EXPECT_TRUE(p.allow_mixed_p2p());
  EXPECT_TRUE(p.disable_precopy());
  EXPECT_EQ(p.chunk_bytes(), 64u << 10);
  EXPECT_EQ(p.phase_timeout().seconds(), 120);
}

TEST_F(CommandsTest, MigrateWithoutPolicyFlagsLeavesTheAgentsDefaults) {
  src_.events = {Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitOk);
  ASSERT_EQ(src_.starts.size(), 1u);
  const migd::v1::MigrationPolicy& p = src_.starts[0].policy();
  EXPECT_FALSE(p.has_downtime_limit());
  EXPECT_FALSE(p.has_max_precopy_time());
  EXPECT_FALSE(p.has_switchover_ack_timeout());
  EXPECT_FALSE(p.has_phase_timeout());
  EXPECT_EQ(p.bandwidth_bytes_per_second(), 0u);
  EXPECT_EQ(p.max_iterations(), 0u);
  EXPECT_EQ(p.chunk_bytes(), 0u);
  EXPECT_EQ(p.on_no_convergence(),
            migd::v1::MigrationPolicy::ON_NO_CONVERGENCE_SWITCH_OVER);
  EXPECT_FALSE(p.allow_mixed_p2p());
  EXPECT_FALSE(p.disable_precopy());
}

TEST_F(CommandsTest, BadPolicyValueIsAUsageErrorAndStartsNothing) {
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1", "--bandwidth=lots"}),
            kExitUsage);
  EXPECT_THAT(Errors(), StartsWith("migctl: migrate: --bandwidth: 'lots' "
                                   "is not a size"));
  EXPECT_TRUE(dst_.prepares.empty());
  EXPECT_TRUE(src_.starts.empty());
}

// The source job of a pre-copy migration at `iteration`, in `phase`.
migd::v1::MigrationEvent PrecopyEvent(migd::v1::Phase phase, uint32_t iteration,
                                      uint64_t done, bool converged) {
  migd::v1::MigrationEvent e = Event(phase, done);
  migd::v1::Migration* m = e.mutable_migration();
  m->set_bytes_total(1000);
  m->set_precopy_bytes(std::min<uint64_t>(done, 900));
  m->set_stop_copy_bytes(done > 900 ? done - 900 : 0);
  migd::v1::PrecopyProgress* p = m->mutable_precopy();
  p->set_iteration(iteration);
  p->set_remaining_bytes(1000 - done);
  p->mutable_expected_downtime()->set_nanos(3000000);
  p->set_converged(converged);
  e.set_message(absl::StrCat("pre-copy iteration ", iteration));
  return e;
}

TEST_F(CommandsTest, MigrateShowsPreCopyIterationsAndTheDowntimeBreakdown) {
  migd::v1::MigrationEvent done =
      PrecopyEvent(migd::v1::PHASE_SUCCEEDED, 2, 1000, true);
  migd::v1::Migration* m = done.mutable_migration();
  m->mutable_downtime()->set_nanos(41000000);
  m->mutable_downtime_breakdown()->mutable_stop_copy_transfer()->set_nanos(
      12000000);
  m->mutable_downtime_breakdown()->mutable_load()->set_nanos(28000000);
  m->mutable_downtime_breakdown()->mutable_resume()->set_nanos(1000000);
  m->add_notices(
      "device emu0 has no DMA logging: every page is reported "
      "dirty");
  src_.events = {PrecopyEvent(migd::v1::PHASE_PRE_COPY, 1, 800, false),
                 PrecopyEvent(migd::v1::PHASE_PRE_COPY, 2, 900, true),
                 PrecopyEvent(migd::v1::PHASE_STOP_COPY, 2, 950, true), done};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitOk)
      << Errors();
  std::string out = out_.str();
  EXPECT_THAT(out, HasSubstr("] PRE_COPY 800/1000 B 80% (it 1, 200 B left, "
                             "~3.0ms downtime): pre-copy iteration 1\n"));
  EXPECT_THAT(out, HasSubstr(" (it 2, 100 B left, ~3.0ms downtime, "
                             "converged): pre-copy iteration 2\n"));
  EXPECT_THAT(out, HasSubstr("  pre-copy     2 iterations, converged; 900 B "
                             "pre-copy, 100 B stop-copy\n"
                             "  downtime     41ms (stop-copy 12ms, load 28ms, "
                             "resume 1.0ms)\n"
                             "  notices      device emu0 has no DMA logging: "
                             "every page is reported dirty\n"));
}

TEST_F(CommandsTest, MigrateOnATerminalShowsThePreCopyEstimateInTheBar) {
  env_.out_is_terminal = true;
  env_.terminal_width = 79;
  src_.events = {PrecopyEvent(migd::v1::PHASE_PRE_COPY, 3, 800, false),
                 Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("] 800/1000 B   80%  it 3  200 B left  "
                                    "~3.0ms"));
}

TEST_F(CommandsTest, MigrateWithATokenDoesNotPrepare) {
  src_.events = {Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1", "--token=given"}),
            kExitOk);
  EXPECT_TRUE(dst_.prepares.empty());
  ASSERT_EQ(src_.starts.size(), 1u);
  EXPECT_EQ(src_.starts[0].transfer_token(), "given");
}

TEST_F(CommandsTest, MigrateWithDirtyRangesAsksForDirtyTracking) {
  src_.events = {Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(
      Run({"migrate", "--job=j1", "--devices=emu0:dst0", "--destination=dst:1",
           "--token=given", "--dirty_ranges=0x200000+1MiB,0+0x2000",
           "--dirty_page_size=8KiB"}),
      kExitOk)
      << Errors();
  ASSERT_EQ(src_.starts.size(), 1u);
  ASSERT_TRUE(src_.starts[0].has_dirty_tracking());
  const migd::v1::DirtyTracking& t = src_.starts[0].dirty_tracking();
  EXPECT_EQ(t.page_size(), 8192u);
  ASSERT_EQ(t.ranges_size(), 2);
  EXPECT_EQ(t.ranges(0).iova(), 0x200000u);
  EXPECT_EQ(t.ranges(0).length(), 1u << 20);
  EXPECT_EQ(t.ranges(1).iova(), 0u);
  EXPECT_EQ(t.ranges(1).length(), 0x2000u);
}

TEST_F(CommandsTest, MigrateWithoutDirtyRangesAsksForNoTracking) {
  src_.events = {Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1", "--token=given"}),
            kExitOk);
  ASSERT_EQ(src_.starts.size(), 1u);
  EXPECT_FALSE(src_.starts[0].has_dirty_tracking());
}

TEST_F(CommandsTest, BadDirtyRangesAreAUsageErrorAndStartNothing) {
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1", "--dirty_ranges=0x1000+100"}),
            kExitUsage);
  EXPECT_THAT(Errors(),
              StartsWith("migctl: migrate: --dirty_ranges: '0x1000+100' is "
                         "not aligned to the 4096-byte page\n"));
  EXPECT_TRUE(dst_.prepares.empty());
  EXPECT_TRUE(src_.starts.empty());
}

// A bitmap of `pages` pages at 0x200000 with the given pages set.
migd::v1::DirtyPages Bitmap(const std::string& device, uint32_t iteration,
                            bool final, std::vector<int> set) {
  migd::v1::DirtyPages p;
  p.set_device(device);
  p.set_iova(0x200000);
  p.set_length(16 * 4096);
  p.set_page_size(4096);
  p.set_iteration(iteration);
  p.set_final(final);
  std::string bits(8, '\0');
  for (int n : set)
    bits[n / 8] = static_cast<char>(bits[n / 8] | (1 << (n % 8)));
  p.set_bitmap(bits);
  return p;
}

TEST_F(CommandsTest, DirtyPagesPrintsOneLinePerBitmapUntilTheStreamEnds) {
  migd::v1::DirtyPages all;
  all.set_device("edu1");
  all.set_iova(0x10000);
  all.set_length(3 * 4096);
  all.set_page_size(4096);
  all.set_all_dirty(true);
  all.set_iteration(1);
  src_.dirty = {Bitmap("edu0", 1, false, {0, 3, 9}), all,
                Bitmap("edu0", 2, true, {})};
  EXPECT_EQ(Run({"dirty-pages", "j1"}), kExitOk) << Errors();
  EXPECT_EQ(out_.str(),
            "device=edu0 iteration=1 final=false all_dirty=false "
            "range=0x200000+0x10000 page_size=4096 dirty=3 "
            "pages=0x200000,0x203000,0x209000\n"
            "device=edu1 iteration=1 final=false all_dirty=true "
            "range=0x10000+0x3000 page_size=4096 dirty=3 pages=all\n"
            "device=edu0 iteration=2 final=true all_dirty=false "
            "range=0x200000+0x10000 page_size=4096 dirty=0 pages=-\n");
  EXPECT_EQ(Errors(), "");
  EXPECT_EQ(src_.dirty_watches, std::vector<std::string>{"j1"});
}

TEST_F(CommandsTest, DirtyPagesJsonPrintsOneMessagePerLine) {
  src_.dirty = {Bitmap("edu0", 1, false, {1}), Bitmap("edu0", 2, true, {})};
  EXPECT_EQ(Run({"--output=json", "dirty-pages", "j1"}), kExitOk);
  std::vector<std::string> lines = OutLines();
  ASSERT_EQ(lines.size(), 2u) << out_.str();
  EXPECT_THAT(lines[0],
              StartsWith("{\"device\":\"edu0\",\"iova\":\"2097152\""));
  EXPECT_THAT(lines[0], HasSubstr("\"bitmap\":\"AgAAAAAAAAA=\""));
  EXPECT_THAT(lines[0], HasSubstr("\"final\":false"));
  EXPECT_THAT(lines[1], HasSubstr("\"final\":true"));
}

TEST_F(CommandsTest, DirtyPagesOfAJobWithoutTrackingFails) {
  src_.errors["WatchDirtyPages"] = {
      grpc::StatusCode::FAILED_PRECONDITION,
      "job j1 is not a source job with dirty_tracking",
      "ERROR_REASON_INVALID_REQUEST"};
  EXPECT_EQ(Run({"dirty-pages", "--wait", "j1"}), kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: dirty-pages: FAILED_PRECONDITION: WatchDirtyPages on "
            "src:1: job j1 is not a source job with dirty_tracking (reason: "
            "ERROR_REASON_INVALID_REQUEST)\n");
  EXPECT_EQ(src_.dirty_watches.size(), 1u);  // not retried
}

TEST_F(CommandsTest, DirtyPagesOfAnUnknownJobFailsAtOnceWithoutWait) {
  src_.dirty_not_found = 1;
  src_.dirty = {Bitmap("edu0", 1, true, {2})};
  EXPECT_EQ(Run({"dirty-pages", "j1"}), kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: dirty-pages: NOT_FOUND: WatchDirtyPages on src:1: no job "
            "j1\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CommandsTest, DirtyPagesWaitsForAJobNotStartedYet) {
  src_.dirty_not_found = 3;
  src_.dirty = {Bitmap("edu0", 0, true, {2})};
  EXPECT_EQ(Run({"dirty-pages", "--wait", "j1"}), kExitOk) << Errors();
  EXPECT_EQ(src_.dirty_watches.size(), 4u);
  EXPECT_THAT(out_.str(), HasSubstr(" final=true "));
  EXPECT_THAT(out_.str(), HasSubstr(" pages=0x202000\n"));
  EXPECT_EQ(Errors(), "");
}

TEST_F(CommandsTest, DirtyPagesWaitGivesUpAtTheTimeout) {
  src_.dirty_not_found = 1000;
  EXPECT_EQ(Run({"--timeout=350ms", "dirty-pages", "--wait", "j1"}),
            kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: dirty-pages: NOT_FOUND: WatchDirtyPages on src:1: no job "
            "j1\n");
  EXPECT_GE(src_.dirty_watches.size(), 2u);
  EXPECT_LE(src_.dirty_watches.size(), 5u);
}

TEST_F(CommandsTest, MigrateOnATerminalRedrawsABar) {
  env_.out_is_terminal = true;
  env_.terminal_width = 79;
  src_.events = {Event(migd::v1::PHASE_STOP_COPY, 50),
                 Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\r\x1b[K"));
  EXPECT_THAT(out_.str(),
              HasSubstr("STOP_COPY    [========================>   "));
}

TEST_F(CommandsTest, MigrateJsonPrintsOneMigrationPerEventAndNoSummary) {
  src_.events = {Event(migd::v1::PHASE_CONNECTING, 0),
                 Event(migd::v1::PHASE_STOP_COPY, 50),
                 Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"--output=json", "migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitOk);
  std::vector<std::string> lines = OutLines();
  ASSERT_EQ(lines.size(), 3u) << out_.str();
  for (const auto& line : lines) {
    EXPECT_THAT(line, StartsWith("{\"job_id\":\"j1\""));
  }
  EXPECT_THAT(lines[2], HasSubstr("\"phase\":\"PHASE_SUCCEEDED\""));
}

TEST_F(CommandsTest, FailedJobPrintsReasonAndMessageAndExitsOne) {
  migd::v1::MigrationEvent failed = Event(migd::v1::PHASE_FAILED, 40);
  failed.mutable_migration()->mutable_failure()->set_reason(
      migd::v1::ERROR_REASON_STATE_REJECTED);
  failed.mutable_migration()->mutable_failure()->set_message(
      "dst0: RESUMING -> STOP failed: Invalid argument");
  src_.events = {Event(migd::v1::PHASE_STOP_COPY, 40), failed};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: migrate: job j1 FAILED: ERROR_REASON_STATE_REJECTED: "
            "dst0: RESUMING -> STOP failed: Invalid argument\n");
  EXPECT_THAT(out_.str(), HasSubstr("Job j1 FAILED\n"));
}

TEST_F(CommandsTest, CancelledJobExitsOne) {
  migd::v1::MigrationEvent cancelled = Event(migd::v1::PHASE_CANCELLED, 0);
  cancelled.mutable_migration()->mutable_failure()->set_reason(
      migd::v1::ERROR_REASON_CANCELLED);
  src_.events = {cancelled};
  EXPECT_EQ(Run({"watch", "j1"}), kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: watch: job j1 CANCELLED: ERROR_REASON_CANCELLED\n");
}

TEST_F(CommandsTest, FailedStartCancelsTheDestinationItPrepared) {
  src_.errors["StartMigration"] = {grpc::StatusCode::PERMISSION_DENIED,
                                   "transfer token does not match",
                                   "ERROR_REASON_BAD_TOKEN"};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: migrate: PERMISSION_DENIED: StartMigration on src:1: "
            "transfer token does not match (reason: ERROR_REASON_BAD_TOKEN)\n"
            "migctl: migrate: cancelled the prepared job j1 on dst:1\n");
  EXPECT_EQ(dst_.cancels, std::vector<std::string>{"j1"});
}

TEST_F(CommandsTest, FailedPrepareDoesNotStart) {
  dst_.errors["PrepareIncoming"] = {grpc::StatusCode::NOT_FOUND,
                                    "no device dst7",
                                    "ERROR_REASON_DEVICE_NOT_FOUND"};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst7",
                 "--destination=dst:1"}),
            kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: migrate: NOT_FOUND: PrepareIncoming on dst:1: no device "
            "dst7 (reason: ERROR_REASON_DEVICE_NOT_FOUND)\n");
  EXPECT_TRUE(src_.starts.empty());
}

TEST_F(CommandsTest, WatchErrorIsReported) {
  src_.errors["WatchMigration"] = {grpc::StatusCode::NOT_FOUND, "no job j1",
                                   "ERROR_REASON_JOB_NOT_FOUND"};
  EXPECT_EQ(Run({"watch", "j1"}), kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: watch: NOT_FOUND: WatchMigration on src:1: no job j1 "
            "(reason: ERROR_REASON_JOB_NOT_FOUND)\n");
}

TEST_F(CommandsTest, WatchClosedEarlyFallsBackToGetMigration) {
  src_.events = {Event(migd::v1::PHASE_STOP_COPY, 10)};
  src_.job = Job(migd::v1::PHASE_SUCCEEDED, 100);
  EXPECT_EQ(Run({"watch", "j1"}), kExitOk) << Errors();
  EXPECT_THAT(out_.str(), HasSubstr("Job j1 SUCCEEDED"));
}

TEST_F(CommandsTest, WatchClosedEarlyOnARunningJobFails) {
  src_.events = {Event(migd::v1::PHASE_STOP_COPY, 10)};
  src_.job = Job(migd::v1::PHASE_STOP_COPY, 10);
  EXPECT_EQ(Run({"watch", "j1"}), kExitFailure);
  EXPECT_THAT(Errors(), HasSubstr("ended the watch while job j1 is in phase "
                                  "STOP_COPY"));
}

TEST_F(CommandsTest, StatusTextAndJson) {
  src_.job = Job(migd::v1::PHASE_STOP_COPY, 10);
  EXPECT_EQ(Run({"status", "j1"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("phase     STOP_COPY\n"));
  out_.str("");
  EXPECT_EQ(Run({"status", "j1", "--output", "json"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"phase\": \"PHASE_STOP_COPY\""));
}

TEST_F(CommandsTest, StatusShowsPreCopyAndDowntime) {
  src_.job = PrecopyEvent(migd::v1::PHASE_PRE_COPY, 4, 800, false).migration();
  EXPECT_EQ(Run({"status", "j1"}), kExitOk);
  EXPECT_THAT(out_.str(),
              HasSubstr("pre-copy  4 iterations, not converged "
                        "yet\n"
                        "estimate  200 B left, expected downtime "
                        "3.0ms\n"
                        "moved     800 B pre-copy, 0 B stop-copy\n"));
  out_.str("");
  migd::v1::Migration done =
      PrecopyEvent(migd::v1::PHASE_SUCCEEDED, 4, 1000, true).migration();
  done.mutable_downtime()->set_nanos(41000000);
  done.mutable_downtime_breakdown()->mutable_load()->set_nanos(28000000);
  src_.job = done;
  EXPECT_EQ(Run({"status", "j1"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("downtime  41ms (load 28ms)\n"));
}

TEST_F(CommandsTest, CancelShowsThePhase) {
  src_.job = Job(migd::v1::PHASE_ROLLING_BACK, 10);
  EXPECT_EQ(Run({"cancel", "j1"}), kExitOk);
  EXPECT_EQ(out_.str(), "Job j1: ROLLING_BACK\n");
  EXPECT_EQ(src_.cancels, std::vector<std::string>{"j1"});
}

TEST_F(CommandsTest, CancelOfAnEndedJobSaysSo) {
  src_.job = Job(migd::v1::PHASE_SUCCEEDED, 100);
  EXPECT_EQ(Run({"cancel", "j1"}), kExitOk);
  EXPECT_EQ(out_.str(),
            "Job j1 had already ended (SUCCEEDED); nothing to "
            "cancel\n");
}

TEST_F(CommandsTest, ResolveSendsTheDecisionAndPrintsWhereTheDevicesRun) {
  src_.job = Job(migd::v1::PHASE_SUCCEEDED, 100);
  EXPECT_EQ(Run({"resolve", "j1", "--outcome=destination"}), kExitOk);
  EXPECT_EQ(out_.str(),
            "Job j1 resolved: the devices run on the destination; the job "
            "is SUCCEEDED\n");
  ASSERT_EQ(src_.resolves.size(), 1u);
  EXPECT_EQ(src_.resolves[0].job_id(), "j1");
  EXPECT_EQ(migd::v1::Resolution_Name(src_.resolves[0].resolution()),
            "RESOLUTION_DESTINATION");
  out_.str("");
  src_.job = Job(migd::v1::PHASE_FAILED, 100);
  EXPECT_EQ(Run({"resolve", "j1", "--outcome=source"}), kExitOk);
  EXPECT_EQ(migd::v1::Resolution_Name(src_.resolves[1].resolution()),
            "RESOLUTION_SOURCE");
  EXPECT_EQ(out_.str(),
            "Job j1 resolved: the devices run on the source; the job is "
            "FAILED\n");
}

TEST_F(CommandsTest, ResolveOfAJobNotInDoubtFailsWithTheAgentsReason) {
  src_.errors["ResolveMigration"] = {grpc::StatusCode::FAILED_PRECONDITION,
                                     "job j1 is SUCCEEDED, not IN_DOUBT",
                                     "ERROR_REASON_NOT_IN_DOUBT"};
  EXPECT_EQ(Run({"resolve", "j1", "--outcome=source"}), kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: resolve: FAILED_PRECONDITION: job j1 is SUCCEEDED, not "
            "IN_DOUBT (reason: ERROR_REASON_NOT_IN_DOUBT)\n");
}

TEST_F(CommandsTest, ResolveWithoutAnOutcomeSendsNothing) {
  EXPECT_EQ(Run({"resolve", "j1"}), kExitUsage);
  EXPECT_TRUE(src_.resolves.empty());
}

TEST_F(CommandsTest, StatusOfAJobInDoubtSaysWhatToDo) {
  migd::v1::Migration m = Job(migd::v1::PHASE_IN_DOUBT, 10);
  m.mutable_in_doubt()->set_attempts(3);
  m.mutable_in_doubt()->set_last_answer("no answer (UNAVAILABLE: refused)");
  src_.job = m;
  EXPECT_EQ(Run({"status", "j1"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("phase     IN_DOUBT\n"));
  EXPECT_THAT(out_.str(),
              HasSubstr("asked     the destination 3 times; last answer: no "
                        "answer (UNAVAILABLE: refused)\n"));
  EXPECT_THAT(out_.str(),
              HasSubstr("migctl resolve j1 --outcome=source       resume the "
                        "devices here\n"));
}

TEST_F(CommandsTest, ListPrintsATable) {
  src_.job = Job(migd::v1::PHASE_SUCCEEDED, 100);
  EXPECT_EQ(Run({"list"}), kExitOk);
  EXPECT_THAT(out_.str(), StartsWith("JOB  ROLE    PHASE      PEER  PROGRESS"));
  EXPECT_THAT(out_.str(), HasSubstr("j1   SOURCE  SUCCEEDED"));
}

TEST_F(CommandsTest, PlaintextWarnsOnceOnStderrAndSendsNoIdentities) {
  src_.events = {Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitOk);
  EXPECT_THAT(err_.str(), StartsWith(kPlaintextWarning));
  EXPECT_EQ(Errors(), "");  // one warning for both agents
  ASSERT_EQ(dst_.prepares.size(), 1u);
  EXPECT_EQ(dst_.prepares[0].source_identity(), "");
  ASSERT_EQ(src_.starts.size(), 1u);
  EXPECT_EQ(src_.starts[0].destination_identity(), "");
  EXPECT_EQ(src_.list_devices_calls, 0);  // nothing to learn in plaintext
}

TEST_F(CommandsTest, InsecureFlagWarnsNamingTheFlag) {
  vars_.clear();
  EXPECT_EQ(Run({"--insecure", "devices"}), kExitOk);
  EXPECT_EQ(err_.str(),
            "migctl: warning: plaintext connection (--insecure): the agent is "
            "not authenticated and nothing is encrypted\n");
}

TEST_F(CommandsTest, InsecureFalseOnTheCommandLineBeatsTheEnvironment) {
  EXPECT_EQ(Run({"--insecure=false", "devices"}), kExitUsage);
  EXPECT_THAT(err_.str(), StartsWith("migctl: --tls_cert, --tls_key and "
                                     "--tls_ca are not set (flags, "));
  EXPECT_EQ(src_.list_devices_calls, 0);
}

TEST_F(CommandsTest, WithoutATlsFileOrInsecureNothingIsSent) {
  vars_ = {{"HOME", "/nonexistent-home"},
           {"MIGCTL_TLS_KEY", "/etc/migd/operator.key"},
           {"MIGCTL_TLS_CA", "/etc/migd/ca.pem"}};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitUsage);
  EXPECT_EQ(err_.str(),
            "migctl: --tls_cert is not set (flag, MIGCTL_TLS_CERT, or "
            "tls_cert in /nonexistent-home/.config/migctl/config); use "
            "--insecure for an agent that runs without TLS\n");
  EXPECT_EQ(src_.list_devices_calls, 0);
  EXPECT_TRUE(dst_.prepares.empty());
  EXPECT_TRUE(src_.starts.empty());
}

TEST_F(CommandsTest, AMissingTlsFileIsNamedBeforeAnyRpc) {
  vars_ = {{"MIGCTL_TLS_CERT", "/nonexistent/operator.pem"},
           {"MIGCTL_TLS_KEY", "/nonexistent/operator.key"},
           {"MIGCTL_TLS_CA", "/nonexistent/ca.pem"}};
  EXPECT_EQ(Run({"devices"}), kExitUsage);
  EXPECT_EQ(err_.str(),
            "migctl: --tls_cert /nonexistent/operator.pem: No such file or "
            "directory\n");
  EXPECT_EQ(src_.list_devices_calls, 0);
}

TEST_F(CommandsTest, AgentsByTheirNameInTheConfigFile) {
  std::string config = WriteTempFile("config",
                                     "insecure = true\n"
                                     "default_agent = a\n"
                                     "[agent a]\naddress = src:1\n"
                                     "[agent b]\naddress = dst:1\n");
  vars_ = {{"MIGCTL_CONFIG", config}};
  src_.events = {Event(migd::v1::PHASE_SUCCEEDED, 100)};
  EXPECT_EQ(
      Main({"migrate", "--job=j1", "--devices=emu0:dst0", "--destination=b"},
           env_),
      kExitOk)
      << err_.str();
  EXPECT_THAT(err_.str(),
              StartsWith(absl::StrCat("migctl: warning: plaintext connection "
                                      "(insecure = true in ",
                                      config, "): ")));
  ASSERT_EQ(dst_.prepares.size(), 1u);
  EXPECT_EQ(dst_.prepares[0].source(), "src:1");
  ASSERT_EQ(src_.starts.size(), 1u);
  EXPECT_EQ(src_.starts[0].destination(), "dst:1");
  EXPECT_THAT(out_.str(),
              HasSubstr("Started job j1: a (src:1) -> b (dst:1)\n"));
}

TEST_F(CommandsTest, AnAgentNameTheConfigDoesNotKnowIsAnError) {
  std::string config = WriteTempFile("config", "[agent a]\naddress = src:1\n");
  vars_["MIGCTL_CONFIG"] = config;
  EXPECT_EQ(
      Run({"migrate", "--job=j1", "--devices=emu0:dst0", "--destination=c"}),
      kExitUsage);
  EXPECT_EQ(Errors(), absl::StrCat("migctl: --destination=c: not HOST:PORT, "
                                   "and ",
                                   config, " has no [agent c]\n"));
  EXPECT_TRUE(dst_.prepares.empty());
}

TEST_F(CommandsTest, AMalformedConfigIsAnErrorNamingItsLine) {
  std::string config =
      WriteTempFile("config", "# mine\ntls_cert /etc/migd/operator.pem\n");
  EXPECT_EQ(Run({"--config", config, "devices"}), kExitUsage);
  EXPECT_EQ(err_.str(),
            absl::StrCat("migctl: ", config,
                         ":2: want KEY = VALUE or [agent NAME], not 'tls_cert "
                         "/etc/migd/operator.pem'\n"));
  EXPECT_EQ(src_.list_devices_calls, 0);
}

TEST_F(CommandsTest, AConfigNamedExplicitlyMustExist) {
  vars_["MIGCTL_CONFIG"] = "/nonexistent/migctl.conf";
  EXPECT_EQ(Run({"devices"}), kExitUsage);
  EXPECT_EQ(err_.str(),
            "migctl: config file /nonexistent/migctl.conf does not exist\n");
}

TEST_F(CommandsTest, StatusShowsThePeersIdentity) {
  src_.job = Job(migd::v1::PHASE_STOP_COPY, 10);
  src_.job.set_peer("10.0.0.6:7070");
  src_.job.set_peer_identity("spiffe://example.org/agent/host6");
  EXPECT_EQ(Run({"status", "j1"}), kExitOk);
  EXPECT_THAT(out_.str(),
              HasSubstr("peer      10.0.0.6:7070\n"
                        "peer id   spiffe://example.org/agent/host6\n"));
  out_.str("");
  EXPECT_EQ(Run({"status", "j1", "--output=json"}), kExitOk);
  EXPECT_THAT(out_.str(), HasSubstr("\"peer_identity\": "
                                    "\"spiffe://example.org/agent/host6\""));
}

TEST_F(CommandsTest, PrepareSaysWhenTheTokenExpiresOnStderrOnly) {
  dst_.token_expires.set_seconds(1767225600);  // 2026-01-01T00:00:00Z
  env_.now = [] { return absl::FromUnixSeconds(1767225600 - 300); };
  EXPECT_EQ(
      Main({"--agent=dst:1", "prepare", "--job=j1", "--devices=emu0:dst0"},
           env_),
      kExitOk);
  EXPECT_EQ(out_.str(), "tok-j1\n");
  EXPECT_EQ(Errors(),
            "migctl: prepare: the token of job j1 expires at "
            "2026-01-01T00:00:00Z (in 5m00s)\n");
  out_.str("");
  EXPECT_EQ(Main({"--agent=dst:1", "--output=json", "prepare", "--job=j2",
                  "--devices=emu0:dst0"},
                 env_),
            kExitOk);
  EXPECT_THAT(out_.str(),
              HasSubstr("\"token_expires\": \"2026-01-01T00:00:00Z\""));
}

TEST_F(CommandsTest, TheTokenIsRedactedFromErrors) {
  src_.errors["StartMigration"] = {grpc::StatusCode::PERMISSION_DENIED,
                                   "token tok-j1 is bound to another source",
                                   "ERROR_REASON_BAD_TOKEN"};
  EXPECT_EQ(Run({"migrate", "--job=j1", "--devices=emu0:dst0",
                 "--destination=dst:1"}),
            kExitFailure);
  EXPECT_THAT(Errors(), HasSubstr("StartMigration on src:1: token <redacted> "
                                  "is bound to another source"));
  EXPECT_EQ(err_.str().find("tok-j1"), std::string::npos);
  EXPECT_EQ(out_.str().find("tok-j1"), std::string::npos);
}

TEST_F(CommandsTest, IdentityInPlaintextSaysThereIsNone) {
  EXPECT_EQ(Run({"identity"}), kExitOk) << Errors();
  EXPECT_EQ(out_.str(),
            "agent       src:1\n"
            "connection  plaintext (MIGCTL_INSECURE=1): nothing encrypted, "
            "no certificate, no identity\n");
  out_.str("");
  EXPECT_EQ(Run({"identity", "--output=json"}), kExitOk);
  EXPECT_EQ(out_.str(),
            "{\n  \"agent\": \"src:1\",\n  \"address\": \"src:1\",\n"
            "  \"tls\": false,\n  \"identity\": \"\"\n}\n");
}

// A source device `src` checked against destination device `dst`, both
// spoken for by the emulated plugin, with 4 MiB to move in stop-copy.
migd::v1::DeviceMigratability Checked(const std::string& src,
                                      const std::string& dst) {
  migd::v1::DeviceMigratability d;
  d.set_source_device(src);
  d.set_destination_device(dst);
  d.set_migratable(true);
  d.set_source_plugin("emulated");
  d.set_source_summary("emulated device, format 1");
  d.set_destination_plugin("emulated");
  d.set_destination_summary("emulated device, format 1");
  d.set_stop_copy_bytes(4 << 20);
  return d;
}

// A check of emu0 -> dst0 and emu1 -> dst1 where emu1's state has format 2,
// which dst1 (format 1) cannot load, and emu1's plugin says it cannot
// migrate from this host either.
migd::v1::CheckMigrationResponse BlockedCheck() {
  migd::v1::CheckMigrationResponse r;
  r.set_migratable(false);
  *r.add_devices() = Checked("emu0", "dst0");
  migd::v1::DeviceMigratability* d = r.add_devices();
  *d = Checked("emu1", "dst1");
  d->set_migratable(false);
  d->set_source_summary("emulated device, format 2");
  migd::v1::MigrationBlocker* b = d->add_blockers();
  b->set_kind(migd::v1::MigrationBlocker::KIND_NO_MIGRATION_SUPPORT);
  b->set_side("source");
  b->set_message("emu1 runs a firmware without state save");
  b->set_remedy("update emu1's firmware to 2.1 or later");
  b = d->add_blockers();
  b->set_kind(migd::v1::MigrationBlocker::KIND_INCOMPATIBLE);
  b->set_side("destination");
  b->set_message(
      "device dst1: the state of source device emu1 cannot load "
      "here");
  b->set_field("format");
  b->set_source_value("2");
  b->set_destination_value("1");
  r.set_bandwidth_bytes_per_second(300 << 20);
  r.mutable_predicted_downtime()->set_nanos(26666666);
  r.set_destination_identity("spiffe://example.org/agent/host6");
  return r;
}

TEST_F(CommandsTest, CheckOfMigratableDevicesReportsThemAndExitsZero) {
  src_.check.set_migratable(true);
  *src_.check.add_devices() = Checked("emu0", "dst0");
  *src_.check.add_devices() = Checked("emu1", "dst1");
  src_.check.set_bandwidth_bytes_per_second(300 << 20);
  src_.check.mutable_predicted_downtime()->set_nanos(26666666);
  EXPECT_EQ(
      Run({"check", "--devices=emu0:dst0,emu1:dst1", "--destination=dst:1"}),
      kExitOk)
      << Errors();
  EXPECT_EQ(out_.str(),
            "MIGRATABLE: 2 devices to dst:1 (no identity); bandwidth 300.0 "
            "MiB/s, predicted downtime 26ms\n"
            "emu0 -> dst0  migratable\n"
            "  source       emulated: emulated device, format 1\n"
            "  destination  emulated: emulated device, format 1\n"
            "  stop-copy    4.0 MiB\n"
            "emu1 -> dst1  migratable\n"
            "  source       emulated: emulated device, format 1\n"
            "  destination  emulated: emulated device, format 1\n"
            "  stop-copy    4.0 MiB\n");
  EXPECT_EQ(Errors(), "");
  ASSERT_EQ(src_.checks.size(), 1u);
  const migd::v1::CheckMigrationRequest& req = src_.checks[0];
  EXPECT_EQ(req.destination(), "dst:1");
  EXPECT_EQ(req.destination_identity(), "");  // plaintext: none to check
  ASSERT_EQ(req.devices_size(), 2);
  EXPECT_EQ(req.devices(1).source_device(), "emu1");
  EXPECT_EQ(req.devices(1).destination_device(), "dst1");
}

TEST_F(CommandsTest, CheckChangesNothingOnEitherAgent) {
  src_.check.set_migratable(true);
  *src_.check.add_devices() = Checked("emu0", "dst0");
  EXPECT_EQ(Run({"check", "--devices=emu0:dst0", "--destination=dst:1"}),
            kExitOk);
  EXPECT_TRUE(dst_.prepares.empty());
  EXPECT_TRUE(src_.starts.empty());
  EXPECT_TRUE(dst_.checks.empty());  // the source asks the destination
  EXPECT_EQ(dst_.list_devices_calls, 0);
}

TEST_F(CommandsTest, CheckOfABlockedDeviceShowsEachBlockerAndExitsThree) {
  src_.check = BlockedCheck();
  EXPECT_EQ(
      Run({"check", "--devices=emu0:dst0,emu1:dst1", "--destination=dst:1"}),
      kExitBlocked);
  EXPECT_EQ(out_.str(),
            "BLOCKED: 1 of 2 devices cannot migrate to dst:1 (identity "
            "spiffe://example.org/agent/host6); bandwidth 300.0 MiB/s, "
            "predicted downtime 26ms\n"
            "emu0 -> dst0  migratable\n"
            "  source       emulated: emulated device, format 1\n"
            "  destination  emulated: emulated device, format 1\n"
            "  stop-copy    4.0 MiB\n"
            "emu1 -> dst1  BLOCKED\n"
            "  source       emulated: emulated device, format 2\n"
            "  destination  emulated: emulated device, format 1\n"
            "  stop-copy    4.0 MiB\n"
            "  blocker      source, no migration support: emu1 runs a "
            "firmware without state save; remedy: update emu1's firmware to "
            "2.1 or later\n"
            "  blocker      destination, incompatible: device dst1: the state "
            "of source device emu1 cannot load here; format: source 2, "
            "destination 1\n");
  EXPECT_EQ(Errors(), "");
  EXPECT_NE(kExitBlocked, kExitFailure);
  EXPECT_NE(kExitBlocked, kExitUsage);
}

TEST_F(CommandsTest, CheckOfAnUnreachableDestinationSaysWhatIsNotKnown) {
  src_.check.set_migratable(false);
  migd::v1::DeviceMigratability* d = src_.check.add_devices();
  *d = Checked("emu0", "dst0");
  d->set_migratable(false);
  d->clear_destination_plugin();
  d->clear_destination_summary();
  migd::v1::MigrationBlocker* b = d->add_blockers();
  b->set_kind(migd::v1::MigrationBlocker::KIND_DESTINATION_UNREACHABLE);
  b->set_side("destination");
  b->set_message(
      "the destination did not answer the check: connection "
      "refused (UNAVAILABLE)");
  EXPECT_EQ(Run({"check", "--devices=emu0:dst0", "--destination=dst:1"}),
            kExitBlocked);
  EXPECT_EQ(OutLines()[0],
            "BLOCKED: 1 of 1 device cannot migrate to dst:1 (no identity); "
            "bandwidth not measured, predicted downtime unknown");
  EXPECT_THAT(out_.str(),
              HasSubstr("  destination  -\n"
                        "  stop-copy    4.0 MiB\n"
                        "  blocker      destination, destination unreachable: "
                        "the destination did not answer the check: "
                        "connection refused (UNAVAILABLE)\n"));
}

TEST_F(CommandsTest, CheckJsonParsesBackToTheResponseAndKeepsTheExitStatus) {
  src_.check = BlockedCheck();
  EXPECT_EQ(Run({"check", "--output=json", "--devices=emu0:dst0,emu1:dst1",
                 "--destination=dst:1"}),
            kExitBlocked);
  EXPECT_THAT(out_.str(), HasSubstr("\"destination_value\": \"1\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"kind\": \"KIND_INCOMPATIBLE\""));
  // Fields at their defaults are there too, for a script to rely on.
  EXPECT_THAT(out_.str(), HasSubstr("\"remedy\": \"\""));
  migd::v1::CheckMigrationResponse parsed;
  auto status =
      google::protobuf::util::JsonStringToMessage(out_.str(), &parsed);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(
      parsed, BlockedCheck()))
      << parsed.DebugString();
  EXPECT_EQ(Errors(), "");
}

TEST_F(CommandsTest, CheckThatFailsIsAnRpcErrorNotABlockedReport) {
  src_.errors["CheckMigration"] = {grpc::StatusCode::INVALID_ARGUMENT,
                                   "no device emu9 on this agent",
                                   "ERROR_REASON_INVALID_REQUEST"};
  EXPECT_EQ(Run({"check", "--devices=emu9:dst0", "--destination=dst:1"}),
            kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: check: INVALID_ARGUMENT: CheckMigration on src:1: no "
            "device emu9 on this agent (reason: "
            "ERROR_REASON_INVALID_REQUEST)\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CommandsTest, CheckWithoutADestinationIsAUsageErrorAndSendsNothing) {
  EXPECT_EQ(Run({"check", "--devices=emu0:dst0"}), kExitUsage);
  EXPECT_THAT(Errors(), StartsWith("migctl: check: missing --destination\n"
                                   "usage: migctl "));
  EXPECT_TRUE(src_.checks.empty());
}

// The emulated plugin speaking for two devices, a plugin file that did not
// load, and a device two plugins claim alike.
migd::v1::ListPluginsResponse SomePlugins() {
  migd::v1::ListPluginsResponse r;
  r.set_plugin_dir("/usr/lib/migd/plugins");
  migd::v1::PluginInfo* p = r.add_plugins();
  p->set_name("emulated");
  p->set_version("1.2.0");
  p->set_description("migd's emulated devices");
  p->set_path("/usr/lib/migd/plugins/libemulated.so");
  p->set_abi_version(1);
  p->add_devices("emu0");
  p->add_devices("emu1");
  p = r.add_plugins();
  p->set_name("idle");
  p->set_version("0.1");
  p->set_path("/usr/lib/migd/plugins/libidle.so");
  p->set_abi_version(1);
  migd::v1::PluginLoadFailure* f = r.add_failures();
  f->set_path("/usr/lib/migd/plugins/libold.so");
  f->set_reason("ABI 0 is older than this agent's oldest (1)");
  r.add_conflicts("emu2: plugins emulated and idle claim it at score 10");
  return r;
}

TEST_F(CommandsTest, PluginsListsThePluginsThenFailuresAndConflicts) {
  src_.plugins = SomePlugins();
  EXPECT_EQ(Run({"plugins"}), kExitOk) << Errors();
  EXPECT_EQ(out_.str(),
            "Plugins loaded from /usr/lib/migd/plugins:\n"
            "NAME      VERSION  ABI  DEVICES     PATH                          "
            "        DESCRIPTION\n"
            "emulated  1.2.0    1    emu0, emu1  "
            "/usr/lib/migd/plugins/libemulated.so  migd's emulated devices\n"
            "idle      0.1      1    -           "
            "/usr/lib/migd/plugins/libidle.so      -\n"
            "Failed to load:\n"
            "  /usr/lib/migd/plugins/libold.so: ABI 0 is older than this "
            "agent's oldest (1)\n"
            "Conflicts:\n"
            "  emu2: plugins emulated and idle claim it at score 10\n");
  EXPECT_EQ(Errors(), "");
}

TEST_F(CommandsTest, PluginsOfAnAgentWithoutAnySaysSo) {
  src_.plugins.set_plugin_dir("/usr/lib/migd/plugins");
  EXPECT_EQ(Run({"plugins"}), kExitOk);
  EXPECT_EQ(out_.str(), "No plugins loaded from /usr/lib/migd/plugins\n");
}

TEST_F(CommandsTest, PluginsJsonParsesBackToTheResponse) {
  src_.plugins = SomePlugins();
  EXPECT_EQ(Run({"plugins", "--output=json"}), kExitOk);
  migd::v1::ListPluginsResponse parsed;
  auto status =
      google::protobuf::util::JsonStringToMessage(out_.str(), &parsed);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_TRUE(
      google::protobuf::util::MessageDifferencer::Equals(parsed, SomePlugins()))
      << parsed.DebugString();
  EXPECT_THAT(out_.str(), HasSubstr("\"abi_version\": 1"));
}

TEST_F(CommandsTest, PluginsAsksTheAgentNamedByItsArgument) {
  dst_.plugins = SomePlugins();
  EXPECT_EQ(Main({"plugins", "dst:1"}, env_), kExitOk) << Errors();
  EXPECT_EQ(dst_.list_plugins_calls, 1);
  EXPECT_EQ(src_.list_plugins_calls, 0);
  EXPECT_THAT(out_.str(), HasSubstr("Conflicts:\n"));
}

TEST_F(CommandsTest, PluginsWithBothAnArgumentAndAgentIsAUsageError) {
  EXPECT_EQ(Run({"plugins", "dst:1"}), kExitUsage);
  EXPECT_THAT(Errors(), StartsWith("migctl: plugins: give AGENT or --agent, "
                                   "not both\n"));
  EXPECT_EQ(src_.list_plugins_calls + dst_.list_plugins_calls, 0);
}

TEST_F(CommandsTest, PluginsErrorIsReported) {
  src_.errors["ListPlugins"] = {grpc::StatusCode::PERMISSION_DENIED,
                                "ListPlugins: not for spiffe://x/nobody", ""};
  EXPECT_EQ(Run({"plugins"}), kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: plugins: PERMISSION_DENIED: ListPlugins: not for "
            "spiffe://x/nobody\n");
}

// ---- migctl host ----

migd::v1::HostDevice SomeHostDevice() {
  migd::v1::HostDevice d;
  d.set_bus("pci");
  d.set_address("0000:03:00.1");
  d.set_vendor_id(0x15b3);
  d.set_device_id(0x101e);
  d.set_driver("mlx5_core");
  d.set_chosen_module("mlx5_vfio_pci");
  d.set_choice_reason("alias ... of mlx5_vfio_pci matches (5 wildcards)");
  d.set_iommu_group(12);
  d.set_group_viable(true);
  return d;
}

TEST_F(CommandsTest, HostStatusPrintsOneKeyValueLinePerFact) {
  src_host_.device = SomeHostDevice();
  EXPECT_EQ(Run({"host", "status", "0000:03:00.1"}), kExitOk) << Errors();
  ASSERT_EQ(src_host_.gets.size(), 1u);
  EXPECT_EQ(src_host_.gets[0].address(), "0000:03:00.1");
  EXPECT_THAT(out_.str(), StartsWith("address: 0000:03:00.1\nbus: pci\n"));
  // What a guest script greps for.
  EXPECT_THAT(out_.str(), HasSubstr("\ndriver: mlx5_core\n"));
  EXPECT_THAT(out_.str(), HasSubstr("\nvfio_module: mlx5_vfio_pci\n"));
  EXPECT_THAT(out_.str(), HasSubstr("\niommu_group: 12\n"));
  EXPECT_EQ(Errors(), "");
}

TEST_F(CommandsTest, HostStatusJsonParsesBackToTheDevice) {
  src_host_.device = SomeHostDevice();
  EXPECT_EQ(Run({"--output=json", "host", "status", "0000:03:00.1"}), kExitOk);
  migd::v1::HostDevice parsed;
  auto status =
      google::protobuf::util::JsonStringToMessage(out_.str(), &parsed);
  ASSERT_TRUE(status.ok()) << status.ToString();
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(
      parsed, SomeHostDevice()))
      << parsed.DebugString();
  EXPECT_THAT(out_.str(), HasSubstr("\"driver\": \"mlx5_core\""));
}

TEST_F(CommandsTest, HostBindSendsTheDriverAndPrintsWhatItDid) {
  src_host_.device = SomeHostDevice();
  src_host_.device.set_driver("vfio-pci");
  src_host_.outcome = "bound to vfio-pci (was on mlx5_core)";
  EXPECT_EQ(Run({"host", "bind", "0000:03:00.1", "--driver=vfio-pci"}), kExitOk)
      << Errors();
  ASSERT_EQ(src_host_.binds.size(), 1u);
  EXPECT_EQ(src_host_.binds[0].address(), "0000:03:00.1");
  EXPECT_EQ(src_host_.binds[0].driver(), "vfio-pci");
  EXPECT_THAT(out_.str(), StartsWith("0000:03:00.1: bound to vfio-pci (was on "
                                     "mlx5_core)\naddress: 0000:03:00.1\n"));
  EXPECT_THAT(out_.str(), HasSubstr("\ndriver: vfio-pci\n"));
}

TEST_F(CommandsTest, HostBindWithoutADriverLeavesTheChoiceToTheAgent) {
  EXPECT_EQ(Run({"host", "bind", "0000:03:00.1"}), kExitOk) << Errors();
  ASSERT_EQ(src_host_.binds.size(), 1u);
  EXPECT_EQ(src_host_.binds[0].driver(), "");
}

TEST_F(CommandsTest, HostUnbindSendsToNoDriverOnlyWhenAsked) {
  EXPECT_EQ(Run({"host", "unbind", "0000:03:00.1"}), kExitOk) << Errors();
  EXPECT_EQ(Run({"host", "unbind", "--to_no_driver", "0000:03:00.1"}), kExitOk)
      << Errors();
  ASSERT_EQ(src_host_.unbinds.size(), 2u);
  EXPECT_FALSE(src_host_.unbinds[0].to_no_driver());
  EXPECT_TRUE(src_host_.unbinds[1].to_no_driver());
  EXPECT_EQ(src_host_.unbinds[1].address(), "0000:03:00.1");
}

TEST_F(CommandsTest, HostVfsSendsTheCount) {
  src_host_.outcome = "VFs: 0 -> 4";
  EXPECT_EQ(Run({"host", "vfs", "0000:07:00.0", "4"}), kExitOk) << Errors();
  ASSERT_EQ(src_host_.vf_counts.size(), 1u);
  EXPECT_EQ(src_host_.vf_counts[0].pf_address(), "0000:07:00.0");
  EXPECT_EQ(src_host_.vf_counts[0].count(), 4u);
  EXPECT_THAT(out_.str(), StartsWith("0000:07:00.0: VFs: 0 -> 4\n"));
}

TEST_F(CommandsTest, HostVfTokenSendsThePfAndPrintsTheTokenIdOnly) {
  src_host_.outcome = "this agent owns the PF's VF token";
  EXPECT_EQ(Run({"host", "vf-token", "0000:07:00.0"}), kExitOk) << Errors();
  ASSERT_EQ(src_host_.vf_tokens.size(), 1u);
  EXPECT_EQ(src_host_.vf_tokens[0].pf_address(), "0000:07:00.0");
  EXPECT_EQ(out_.str(),
            "0000:07:00.0: this agent owns the PF's VF token\n"
            "token_id: 1a2b3c4d\n");
}

TEST_F(CommandsTest, HostVfTokenJsonUsesProtoFieldNames) {
  EXPECT_EQ(Run({"--output=json", "host", "vf-token", "0000:07:00.0"}), kExitOk)
      << Errors();
  EXPECT_THAT(out_.str(), HasSubstr("\"token_id\": \"1a2b3c4d\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"pf_address\": \"0000:07:00.0\""));
}

TEST_F(CommandsTest, HostVfTokenRefusalExitsOne) {
  src_host_.errors["SetVfToken"] = {
      grpc::StatusCode::FAILED_PRECONDITION,
      "set the VF token of PF 0000:07:00.0 refused: it is on nvme, not "
      "vfio-pci",
      "ERROR_REASON_HOST_PRECONDITION"};
  EXPECT_EQ(Run({"host", "vf-token", "0000:07:00.0"}), kExitFailure);
  EXPECT_THAT(Errors(), HasSubstr("not vfio-pci"));
}

TEST_F(CommandsTest, HostRefusalShowsCodeMessageReasonAndExitsOne) {
  src_host_.errors["BindDevice"] = {
      grpc::StatusCode::FAILED_PRECONDITION,
      "bind pci device 0000:06:00.0 refused: it is this agent's device vf0, "
      "held by job job-7",
      "ERROR_REASON_DEVICE_BUSY"};
  EXPECT_EQ(Run({"host", "bind", "0000:06:00.0"}), kExitFailure);
  EXPECT_EQ(Errors(),
            "migctl: host bind: FAILED_PRECONDITION: bind pci device "
            "0000:06:00.0 refused: it is this agent's device vf0, held by job "
            "job-7 (reason: ERROR_REASON_DEVICE_BUSY)\n");
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CommandsTest, HostMdevCreatePrintsOnlyTheUuidOnStdout) {
  EXPECT_EQ(Run({"host", "mdev-create", "mbochs", "mbochs-small"}), kExitOk)
      << Errors();
  EXPECT_EQ(out_.str(), "0b2a4d1e-1111-4222-8333-444455556666\n");
  EXPECT_EQ(Errors(),
            "migctl: host mdev-create: created mdev "
            "0b2a4d1e-1111-4222-8333-444455556666 of type mbochs-small on "
            "mbochs\n");
  ASSERT_EQ(src_host_.creates.size(), 1u);
  EXPECT_EQ(src_host_.creates[0].uuid(), "");

  out_.str("");
  EXPECT_EQ(Run({"host", "mdev-create", "mbochs", "mbochs-small",
                 "--uuid=11111111-2222-4333-8444-555555555555"}),
            kExitOk);
  EXPECT_EQ(src_host_.creates[1].uuid(),
            "11111111-2222-4333-8444-555555555555");
  EXPECT_EQ(out_.str(), "11111111-2222-4333-8444-555555555555\n");
}

TEST_F(CommandsTest, HostMdevTypesAndRemove) {
  auto* t = src_host_.mdev_types.add_types();
  t->set_id("mbochs-small");
  t->set_name("small");
  t->set_available_instances(2);
  t->set_device_api("vfio-pci");
  EXPECT_EQ(Run({"host", "mdev-types", "mbochs"}), kExitOk) << Errors();
  EXPECT_EQ(out_.str(),
            "parent: mbochs\n"
            "TYPE          AVAILABLE  API       NAME\n"
            "mbochs-small  2          vfio-pci  small\n"
            "instances: none\n");
  out_.str("");
  EXPECT_EQ(
      Run({"host", "mdev-remove", "0b2a4d1e-1111-4222-8333-444455556666"}),
      kExitOk)
      << Errors();
  EXPECT_EQ(out_.str(),
            "Removed mdev 0b2a4d1e-1111-4222-8333-444455556666 (type "
            "mbochs-small on mbochs)\n");
}

TEST_F(CommandsTest, HostUsageErrorsExitTwoAndSendNothing) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"host"}, "migctl: host: missing the host command (status, bind, "},
      {{"host", "frob"}, "migctl: host: unknown host command 'frob'"},
      {{"host", "status"}, "migctl: host status: missing ADDRESS\n"},
      {{"host", "vfs", "0000:07:00.0"}, "migctl: host vfs: missing COUNT\n"},
      {{"host", "vfs", "0000:07:00.0", "-1"}, "migctl: host vfs: "},
      {{"host", "vfs", "0000:07:00.0", "four"},
       "migctl: host vfs: COUNT 'four' is not a whole number of VFs\n"},
      {{"host", "status", "0000:03:00.1", "extra"},
       "migctl: host status: unexpected argument 'extra'\n"},
      {{"host", "status", "0000:03:00.1", "--driver=x"},
       "migctl: host status: unknown flag --driver\n"},
      {{"host", "mdev-create", "mbochs"},
       "migctl: host mdev-create: missing TYPE\n"}};
  for (const auto& [args, error] : cases) {
    err_.str("");
    EXPECT_EQ(Run(args), kExitUsage) << absl::StrJoin(args, " ");
    EXPECT_THAT(Errors(), StartsWith(error)) << absl::StrJoin(args, " ");
  }
  EXPECT_TRUE(src_host_.gets.empty());
  EXPECT_TRUE(src_host_.vf_counts.empty());
  EXPECT_TRUE(src_host_.creates.empty());
}

TEST_F(CommandsTest, HostAllocateSendsTheClassesAndPrintsWhatWasPicked) {
  EXPECT_EQ(Run({"host", "allocate", "dom-1", "0000:3b:02.0=pci:15b3:101e",
                 "k2=mdev:mbochs-small@mbochs", "--driver=mlx5_vfio_pci"}),
            kExitOk)
      << Errors();
  ASSERT_EQ(src_host_.allocates.size(), 1u);
  const migd::v1::AllocateDevicesRequest& req = src_host_.allocates[0];
  EXPECT_EQ(req.owner(), "dom-1");
  ASSERT_EQ(req.devices_size(), 2);
  EXPECT_EQ(req.devices(0).key(), "0000:3b:02.0");
  EXPECT_EQ(req.devices(0).device_class().pci_ids(), "15b3:101e");
  EXPECT_EQ(req.devices(0).driver(), "mlx5_vfio_pci");
  EXPECT_EQ(req.devices(1).device_class().mdev_type(), "mbochs-small");
  EXPECT_EQ(req.devices(1).device_class().mdev_parent(), "mbochs");
  EXPECT_EQ(req.devices(1).driver(), "");
  EXPECT_EQ(out_.str(),
            "OWNER  KEY           DEVICE                                "
            "DRIVER\n"
            "dom-1  0000:3b:02.0  0000:5e:01.1                          "
            "mlx5_vfio_pci\n"
            "dom-1  k2            20000000-0000-4000-8000-000000000000  "
            "mdev mbochs-small on mbochs\n");
}

TEST_F(CommandsTest, HostAllocateJsonIsTheResponse) {
  EXPECT_EQ(
      Run({"--output=json", "host", "allocate", "dom-1", "k=pci:15b3:101e"}),
      kExitOk)
      << Errors();
  EXPECT_THAT(out_.str(), HasSubstr("\"address\": \"0000:5e:01.1\""));
  EXPECT_THAT(out_.str(), HasSubstr("\"owner\": \"dom-1\""));
}

TEST_F(CommandsTest, HostAllocateRefusalExitsOneWithTheReason) {
  src_host_.errors["AllocateDevices"] = {
      grpc::StatusCode::FAILED_PRECONDITION,
      "allocate for dom-2: device request 0 (key k, class 15b3:101e) failed: "
      "no free device of class 15b3:101e: 1 candidate, all held "
      "(0000:5e:01.1 by dom-1 (key k))",
      "ERROR_REASON_DEVICE_BUSY"};
  EXPECT_EQ(Run({"host", "allocate", "dom-2", "k=pci:15b3:101e"}),
            kExitFailure);
  EXPECT_THAT(Errors(), HasSubstr("0000:5e:01.1 by dom-1 (key k)"));
  EXPECT_THAT(Errors(), HasSubstr("(reason: ERROR_REASON_DEVICE_BUSY)"));
  EXPECT_EQ(out_.str(), "");
}

TEST_F(CommandsTest, HostReleaseAndAllocations) {
  migd::v1::AllocatedDevice a;
  a.set_owner("dom-1");
  a.set_key("k");
  a.set_address("0000:5e:01.3");
  a.set_driver("vfio-pci");
  src_host_.allocations = {a};
  EXPECT_EQ(Run({"host", "allocations"}), kExitOk) << Errors();
  EXPECT_EQ(out_.str(),
            "OWNER  KEY  DEVICE        DRIVER\n"
            "dom-1  k    0000:5e:01.3  vfio-pci\n");
  ASSERT_EQ(src_host_.allocation_lists.size(), 1u);
  EXPECT_EQ(src_host_.allocation_lists[0].owner(), "");
  out_.str("");
  EXPECT_EQ(Run({"host", "allocations", "dom-2"}), kExitOk) << Errors();
  EXPECT_EQ(out_.str(), "no allocations\n");
  EXPECT_EQ(src_host_.allocation_lists[1].owner(), "dom-2");
  out_.str("");
  EXPECT_EQ(Run({"host", "release", "dom-1"}), kExitOk) << Errors();
  EXPECT_EQ(out_.str(),
            "Released 1 device(s) of dom-1\n"
            "OWNER  KEY  DEVICE        DRIVER\n"
            "dom-1  k    0000:5e:01.3  vfio-pci\n");
  ASSERT_EQ(src_host_.releases.size(), 1u);
  EXPECT_EQ(src_host_.releases[0].owner(), "dom-1");
  out_.str("");
  EXPECT_EQ(Run({"--output=json", "host", "release", "dom-9"}), kExitOk);
  EXPECT_EQ(out_.str(), "{\n \"released\": []\n}\n");
}

TEST(StatusCodeName, KnownAndUnknownCodes) {
  EXPECT_EQ(StatusCodeName(grpc::StatusCode::UNAVAILABLE), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(static_cast<grpc::StatusCode>(42)), "CODE_42");
}

}  // namespace
}  // namespace migd::cli
