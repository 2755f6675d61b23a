// Compatibility before any state moves, with real agents on 127.0.0.1 (mutual
// TLS) that load the emulated devices' plugin (vendor-plugins/emulated) from
// a plugin directory: a source device whose state format the destination
// device does not read is refused by CheckMigration and by StartMigration,
// naming the field and both values, and nothing changes on either side; a
// compatible pair checks migratable with a measured bandwidth; ListPlugins
// shows what loaded and what did not.

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/device_checks.h"
#include "e2e/testing/migctl.h"
#include "e2e/testing/run_pki.h"
#include "e2e/testing/shell.h"
#include "e2e/testing/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace migd::e2e {
namespace {

constexpr absl::Duration kRpcTimeout = absl::Seconds(60);

// --emulated_plugin=PATH: the emulated devices' plugin.
std::string& PluginPath() {
  static auto* path = new std::string();
  return *path;
}

// A plugin directory of the test's own: the emulated plugin, and a file that
// is no plugin (it must be reported and skipped).
std::string PluginDir() {
  const std::string dir = absl::StrCat(getenv("TEST_TMPDIR"), "/plugins");
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(PluginPath(), dir + "/emulated.so",
                             std::filesystem::copy_options::overwrite_existing);
  std::ofstream(dir + "/broken.so") << "not a shared object\n";
  return dir;
}

class CompatTest : public AgentTest {
 protected:
  void SetUp() override {
    const std::string plugins = absl::StrCat("--plugin_dir=", PluginDir());
    source_ = StartAgent("source", {plugins},
                         "emulated src0 size=256KiB seed=1 format=1\n"
                         "emulated src1 size=256KiB seed=2 format=1\n");
    ASSERT_NE(source_, nullptr);
    destination_ = StartAgent("destination", {plugins},
                              "emulated newer size=256KiB seed=3 format=2\n"
                              "emulated same size=256KiB seed=4 format=1\n");
    ASSERT_NE(destination_, nullptr);
  }

  v1::CheckMigrationResponse Check(const std::string& from,
                                   const std::string& to) {
    v1::CheckMigrationRequest request;
    v1::DevicePair* p = request.add_devices();
    p->set_source_device(from);
    p->set_destination_device(to);
    request.set_destination(destination_->address());
    request.set_destination_identity(destination_->identity());
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    v1::CheckMigrationResponse response;
    grpc::Status s =
        source_->stub().CheckMigration(&context, request, &response);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return response;
  }
};

TEST_F(CompatTest, ACompatiblePairChecksMigratableWithABandwidth) {
  v1::CheckMigrationResponse r = Check("src0", "same");
  ASSERT_EQ(r.devices_size(), 1) << r.DebugString();
  EXPECT_TRUE(r.migratable()) << r.DebugString();
  const v1::DeviceMigratability& d = r.devices(0);
  EXPECT_TRUE(d.migratable()) << d.DebugString();
  EXPECT_EQ(d.source_plugin(), "emulated");
  EXPECT_EQ(d.destination_plugin(), "emulated");
  EXPECT_EQ(d.source_summary(), "state format 1, 262144 bytes");
  EXPECT_GT(d.stop_copy_bytes(), 262144u);
  EXPECT_GT(r.bandwidth_bytes_per_second(), 0u);
  EXPECT_TRUE(r.has_predicted_downtime());
  EXPECT_EQ(r.destination_identity(), destination_->identity());
}

// The destination device reads state format 2, the source writes format 1:
// found by the dry run and by StartMigration before any state moves, naming
// the field and both values; both sides' devices are as they were.
TEST_F(CompatTest, AnIncompatibleStateFormatIsRefusedBeforeAnyStateMoves) {
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_before,
                       DeviceMap(destination_->stub()));

  v1::CheckMigrationResponse r = Check("src0", "newer");
  EXPECT_FALSE(r.migratable()) << r.DebugString();
  ASSERT_EQ(r.devices_size(), 1);
  ASSERT_EQ(r.devices(0).blockers_size(), 1) << r.DebugString();
  const v1::MigrationBlocker& b = r.devices(0).blockers(0);
  EXPECT_EQ(
      v1::MigrationBlocker::Kind_Name(b.kind()),
      v1::MigrationBlocker::Kind_Name(v1::MigrationBlocker::KIND_INCOMPATIBLE));
  EXPECT_EQ(b.side(), "destination");
  EXPECT_EQ(b.field(), "state_format");
  EXPECT_EQ(b.source_value(), "1");
  EXPECT_EQ(b.destination_value(), "2");

  v1::PrepareIncomingRequest prepare;
  prepare.set_job_id("job-incompatible");
  v1::DevicePair* p = prepare.add_devices();
  p->set_source_device("src0");
  p->set_destination_device("newer");
  prepare.set_source_identity(source_->identity());
  v1::PrepareIncomingResponse prepared;
  {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
    ASSERT_TRUE(destination_->stub()
                    .PrepareIncoming(&context, prepare, &prepared)
                    .ok());
  }
  v1::StartMigrationRequest start;
  start.set_job_id("job-incompatible");
  *start.mutable_devices() = prepare.devices();
  start.set_destination(destination_->address());
  start.set_destination_identity(destination_->identity());
  start.set_transfer_token(prepared.transfer_token());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kRpcTimeout));
  v1::Migration started;
  grpc::Status s = source_->stub().StartMigration(&context, start, &started);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
      << s.error_message();
  EXPECT_EQ(ErrorReasonOf(context), "ERROR_REASON_INCOMPATIBLE");
  EXPECT_TRUE(absl::StrContains(s.error_message(),
                                "state_format differs (source 1, "
                                "destination 2)"))
      << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "newer"))
      << s.error_message();

  // The destination's prepared job ended (its source can never send a state
  // that loads here) and let its device go.
  v1::GetMigrationRequest get;
  get.set_job_id("job-incompatible");
  v1::Migration ended;
  grpc::ClientContext get_context;
  ASSERT_TRUE(
      destination_->stub().GetMigration(&get_context, get, &ended).ok());
  EXPECT_EQ(v1::Phase_Name(ended.phase()), v1::Phase_Name(v1::PHASE_FAILED));
  EXPECT_EQ(v1::ErrorReason_Name(ended.failure().reason()),
            "ERROR_REASON_INCOMPATIBLE");

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ASSERT_OK_AND_ASSIGN(DeviceMapT destination_after,
                       DeviceMap(destination_->stub()));
  ExpectDevices("source", source_after, {"src0", "src1"},
                v1::DEVICE_STATE_RUNNING, &source_before);
  ExpectDevices("destination", destination_after, {"newer", "same"},
                v1::DEVICE_STATE_RUNNING, &destination_before);
}

// The operator's dry run: `migctl check` prints the blocker with the field
// and both values and exits 3 (blocked); the same pair with a compatible
// destination device exits 0. Nothing changes on either side.
TEST_F(CompatTest, MigctlCheckReportsTheIncompatibleFieldAndExitsBlocked) {
  const std::string migctl = MigctlPath();
  ASSERT_FALSE(migctl.empty()) << "no --migctl_binary";
  ASSERT_OK_AND_ASSIGN(RunPki * pki, RunPki::Get());
  ASSERT_OK_AND_ASSIGN(security::TlsFiles op, pki->Files("operator"));
  ASSERT_OK_AND_ASSIGN(DeviceMapT source_before, DeviceMap(source_->stub()));
  auto check = [&](const std::string& devices) {
    return RunShell(MigctlCommand(
        migctl, *source_, op, "/nonexistent",
        absl::StrCat("check --devices=", devices,
                     " --destination=", destination_->address(),
                     " --destination_identity=", destination_->identity())));
  };
  CommandResult blocked = check("src0:newer");
  EXPECT_EQ(blocked.exit_code, 3) << blocked.output;
  EXPECT_TRUE(absl::StrContains(blocked.output, "BLOCKED")) << blocked.output;
  EXPECT_TRUE(absl::StrContains(blocked.output, "state_format"))
      << blocked.output;
  EXPECT_TRUE(absl::StrContains(blocked.output, "source 1, destination 2"))
      << blocked.output;

  CommandResult ok = check("src0:same");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_TRUE(absl::StrContains(ok.output, "MIGRATABLE")) << ok.output;

  ASSERT_OK_AND_ASSIGN(DeviceMapT source_after, DeviceMap(source_->stub()));
  ExpectDevices("source", source_after, {"src0", "src1"},
                v1::DEVICE_STATE_RUNNING, &source_before);
}

TEST_F(CompatTest, ADeviceMissingOnTheDestinationIsABlocker) {
  v1::CheckMigrationResponse r = Check("src0", "nosuch");
  EXPECT_FALSE(r.migratable());
  ASSERT_EQ(r.devices_size(), 1);
  ASSERT_EQ(r.devices(0).blockers_size(), 1) << r.DebugString();
  EXPECT_EQ(r.devices(0).blockers(0).kind(),
            v1::MigrationBlocker::KIND_DEVICE_NOT_FOUND);
  EXPECT_EQ(r.devices(0).blockers(0).side(), "destination");
}

TEST_F(CompatTest,
       ListPluginsShowsWhatLoadedWhatSpeaksForWhichDeviceAndWhatDidNot) {
  v1::ListPluginsRequest request;
  v1::ListPluginsResponse r;
  grpc::ClientContext context;
  ASSERT_TRUE(source_->stub().ListPlugins(&context, request, &r).ok());
  ASSERT_EQ(r.plugins_size(), 1) << r.DebugString();
  EXPECT_EQ(r.plugins(0).name(), "emulated");
  EXPECT_EQ(r.plugins(0).abi_version(), 2u);  // built against this header
  ASSERT_EQ(r.plugins(0).devices_size(), 2);
  EXPECT_EQ(r.plugins(0).devices(0), "src0");
  ASSERT_EQ(r.failures_size(), 1) << r.DebugString();
  EXPECT_TRUE(absl::EndsWith(r.failures(0).path(), "broken.so"));
  EXPECT_TRUE(absl::StrContains(r.failures(0).reason(), "cannot load it"));
  EXPECT_TRUE(r.conflicts().empty());
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
