// The host service through a real agent and migctl, on a fake sysfs tree
// the agent is given with --sysfs_root (migd/host/fake_kernel.h builds it).
// A fake tree reads like the kernel's, but no kernel answers its writes, so
// this tier only reads and refuses: `migctl host status` of a device there;
// a bind of a device that does not exist (NOT_FOUND, DEVICE_NOT_FOUND) and
// of a malformed address (INVALID_ARGUMENT); who may do what (an observer
// reads but cannot bind, an agent cannot even read: PERMISSION_DENIED), with
// the tree and the agent's record of bindings unchanged; and an agent whose
// record of bindings is corrupt does not start, naming the file and line.
// Binding for real is the VM tier's (edu devices in a QEMU guest).

#include <sys/utsname.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "e2e/testing/agent_process.h"
#include "e2e/testing/agent_test.h"
#include "e2e/testing/migctl.h"
#include "e2e/testing/run_pki.h"
#include "e2e/testing/shell.h"
#include "e2e/testing/status_macros.h"
#include "gtest/gtest.h"
#include "migd/host/fake_kernel.h"

namespace migd::e2e {
namespace {

using host::testing::FakeDriver;
using host::testing::FakeKernel;
using host::testing::FakePciDevice;

constexpr char kVf[] = "0000:03:00.1";

class HostTest : public AgentTest {
 protected:
  void SetUp() override {
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:101e"}, ""});
    FakePciDevice vf;
    vf.bdf = kVf;
    vf.group = 12;
    vf.driver = "mlx5_core";
    kernel_.AddPciDevice(vf);
    // The agent reads the running kernel's modules.alias below its root.
    struct utsname u;
    ASSERT_EQ(uname(&u), 0);
    kernel_.WriteFile(
        absl::StrCat("/lib/modules/", u.release, "/modules.alias"),
        "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n"
        "alias vfio_pci:v000015B3d0000101Esv*sd*bc*sc*i* mlx5_vfio_pci\n");
    agent_ = StartAgent("agent", {absl::StrCat("--sysfs_root=", kernel_.root()),
                                  "--emulated_devices=emu0"});
    ASSERT_NE(agent_, nullptr);
    migctl_ = MigctlPath();
    ASSERT_FALSE(migctl_.empty()) << "no --migctl_binary";
  }

  // `migctl ARGS` against the agent as `who` of the run's PKI.
  CommandResult Migctl(const std::string& who, const std::string& args) {
    absl::StatusOr<RunPki*> pki = RunPki::Get();
    EXPECT_TRUE(pki.ok()) << pki.status();
    if (!pki.ok()) return {};
    absl::StatusOr<security::TlsFiles> tls = (*pki)->Files(who);
    EXPECT_TRUE(tls.ok()) << tls.status();
    if (!tls.ok()) return {};
    return RunShell(
        MigctlCommand(migctl_, *agent_, *tls, "/nonexistent", args));
  }

  std::string BindingsFile() const {
    return absl::StrCat(agent_->state_dir(), "/host-bindings");
  }

  FakeKernel kernel_;
  AgentProcess* agent_ = nullptr;
  std::string migctl_;
};

TEST_F(HostTest, StatusShowsTheDeviceOfTheTreeTheAgentWasGiven) {
  CommandResult r = Migctl("operator", absl::StrCat("host status ", kVf));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (const char* line :
       {"address: 0000:03:00.1\n", "\ndriver: mlx5_core\n",
        "\ndriver_override: (none)\n", "\nvfio_module: mlx5_vfio_pci\n",
        "\nvfio_driver: (not loaded)\n", "\niommu_group: 12\n",
        "\ngroup_viable: yes\n", "\nbound_by_migd: no\n"}) {
    EXPECT_TRUE(absl::StrContains(r.output, line)) << line << r.output;
  }
  // The same for a program, and for an observer.
  r = Migctl("observer", absl::StrCat("--output=json host status ", kVf));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "\"driver\": \"mlx5_core\""))
      << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "\"iommu_group\": 12")) << r.output;
}

TEST_F(HostTest, ABindOfADeviceThatDoesNotExistIsNotFound) {
  const auto before = kernel_.Snapshot();
  CommandResult r = Migctl("operator", "host bind 0000:0a:00.0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  for (const char* word :
       {"migctl: host bind: NOT_FOUND", "0000:0a:00.0", "does not exist",
        "(reason: ERROR_REASON_DEVICE_NOT_FOUND)"}) {
    EXPECT_TRUE(absl::StrContains(r.output, word)) << word << r.output;
  }
  r = Migctl("operator", "host bind 0000:03:00.9");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "INVALID_ARGUMENT")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "0000:03:00.9")) << r.output;
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_FALSE(std::filesystem::exists(BindingsFile()));
}

TEST_F(HostTest, AnObserverMayReadButNotBindAndAnAgentMayDoNeither) {
  const auto before = kernel_.Snapshot();
  CommandResult r = Migctl("observer", absl::StrCat("host bind ", kVf));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "PERMISSION_DENIED")) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "BindDevice")) << r.output;
  r = Migctl("observer",
             "host mdev-remove 0b2a4d1e-1111-4222-8333-444455556666");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "PERMISSION_DENIED")) << r.output;

  r = Migctl("agent-b", absl::StrCat("host status ", kVf));
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "PERMISSION_DENIED")) << r.output;

  r = Migctl("operator", absl::StrCat("host status ", kVf));
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "\ndriver: mlx5_core\n")) << r.output;
  EXPECT_EQ(kernel_.Snapshot(), before);
  EXPECT_FALSE(std::filesystem::exists(BindingsFile()));
}

TEST_F(HostTest, ACorruptRecordOfBindingsStopsTheAgentFromStarting) {
  ASSERT_TRUE(StopCleanly(*agent_).ok());
  std::ofstream(BindingsFile())
      << "# migd host bindings v1\n"
      << "pci 0000:03:00.1 driver=vfio-pci original_driver=mlx5_core "
         "original_override=\n"
      << "pci 0000:04:00.0 driver=vfio-pci\n";
  AgentOptions again = NextAgentOptions("restarted");
  again.args = {absl::StrCat("--sysfs_root=", kernel_.root()),
                "--emulated_devices=emu0"};
  again.state_dir = agent_->state_dir();
  absl::StatusOr<std::unique_ptr<AgentProcess>> restarted =
      AgentProcess::Start(again);
  ASSERT_FALSE(restarted.ok()) << "the agent started on corrupt bindings";
  const std::string said(restarted.status().message());
  EXPECT_TRUE(absl::StrContains(said, BindingsFile() + ":3") &&
              absl::StrContains(said, "is corrupt"))
      << said;
}

TEST_F(HostTest, ACorruptRecordOfAllocationsStopsTheAgentFromStarting) {
  ASSERT_TRUE(StopCleanly(*agent_).ok());
  const std::string file = agent_->state_dir() + "/host-allocations";
  std::ofstream(file)
      << "# migd host allocations v1\n"
      << "pci owner=dom-1 key=k address=0000:03:00.1 driver=vfio-pci "
         "bound=sometimes\n";
  AgentOptions again = NextAgentOptions("restarted");
  again.args = {absl::StrCat("--sysfs_root=", kernel_.root()),
                "--emulated_devices=emu0"};
  again.state_dir = agent_->state_dir();
  absl::StatusOr<std::unique_ptr<AgentProcess>> restarted =
      AgentProcess::Start(again);
  ASSERT_FALSE(restarted.ok()) << "the agent started on corrupt allocations";
  const std::string said(restarted.status().message());
  EXPECT_TRUE(absl::StrContains(said, file + ":2") &&
              absl::StrContains(said, "is corrupt"))
      << said;
}

// ListAllocations is the observer's too; AllocateDevices and ReleaseDevices
// the operator's alone.
TEST_F(HostTest, OnlyTheOperatorAllocatesAndReleases) {
  CommandResult r = Migctl("observer", "host allocations");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "no allocations\n");
  r = Migctl("observer", "host allocate dom-1 k=pci:15b3:101e");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "PERMISSION_DENIED")) << r.output;
  r = Migctl("observer", "host release dom-1");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(absl::StrContains(r.output, "PERMISSION_DENIED")) << r.output;
  r = Migctl("operator", "host release dom-1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output, "Released 0 device(s) of dom-1\n");
}

}  // namespace
}  // namespace migd::e2e
