// migd/host/modules_test.cc
//
// ModprobeLoader runs a stand-in modprobe (a shell script under
// $TEST_TMPDIR) so that the fork/exec, argument and error paths run for
// real without loading anything; DriverOfModule reads a fake tree.

#include "migd/host/modules.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "migd/host/fake_kernel.h"

namespace migd::host {
namespace {

// A script at $TEST_TMPDIR/<name> with `body`.
std::string Script(const std::string& name, const std::string& body) {
  const std::string path = absl::StrCat(getenv("TEST_TMPDIR"), "/", name);
  std::ofstream(path) << "#!/bin/sh\n" << body;
  chmod(path.c_str(), 0755);
  return path;
}

TEST(ModprobeLoader, PassesTheModuleAfterDashDash) {
  const std::string args = absl::StrCat(getenv("TEST_TMPDIR"), "/args");
  ModprobeLoader loader(
      Script("modprobe_ok", absl::StrCat("echo \"$@\" > ", args, "\n")));
  ASSERT_TRUE(loader.Load("vfio-pci").ok());
  std::ifstream in(args);
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "-- vfio_pci");
}

TEST(ModprobeLoader, AMissingModuleIsNotFoundWithModprobesWords) {
  ModprobeLoader loader(
      Script("modprobe_missing",
             "echo \"modprobe: FATAL: Module $2 not found in directory "
             "/lib/modules/x\" >&2\nexit 1\n"));
  absl::Status s = loader.Load("nosuch_vfio_pci");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(s.message(), "nosuch_vfio_pci")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "exit status 1")) << s;
  EXPECT_TRUE(
      absl::StrContains(s.message(), "Module nosuch_vfio_pci not found"))
      << s;
}

TEST(ModprobeLoader, OtherFailuresSayHowItEnded) {
  ModprobeLoader loader(Script(
      "modprobe_fails",
      "echo 'modprobe: ERROR: could not insert x: Operation not permitted' "
      ">&2\nexit 1\n"));
  absl::Status s = loader.Load("x");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(s.message(), "Operation not permitted")) << s;

  ModprobeLoader killed(Script("modprobe_killed", "kill -9 $$\n"));
  s = killed.Load("x");
  EXPECT_TRUE(absl::StrContains(s.message(), "killed by signal 9")) << s;
}

TEST(ModprobeLoader, RefusesABadNameAndAMissingProgram) {
  ModprobeLoader loader(Script("modprobe_never", "exit 0\n"));
  EXPECT_EQ(loader.Load("../x").code(), absl::StatusCode::kInvalidArgument);
  ModprobeLoader missing("/nonexistent/modprobe");
  absl::Status s = missing.Load("vfio_pci");
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(s.message(), "/nonexistent/modprobe")) << s;
}

TEST(DriverOfModule, FindsTheDriverNameTheModuleRegistered) {
  testing::FakeKernel kernel;
  kernel.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
  kernel.AddDriver(
      {"platform", "vfio-platform", "vfio_platform", {}, "vfio_platform_base"});
  EXPECT_EQ(*DriverOfModule(kernel.sysfs(), "vfio_pci", "pci"), "vfio-pci");
  EXPECT_EQ(*DriverOfModule(kernel.sysfs(), "vfio_platform", "platform"),
            "vfio-platform");
  EXPECT_EQ(
      DriverOfModule(kernel.sysfs(), "vfio_pci", "platform").status().code(),
      absl::StatusCode::kNotFound);
  absl::StatusOr<std::string> none =
      DriverOfModule(kernel.sysfs(), "mlx5_vfio_pci", "pci");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(none.status().message(), "not loaded"));
}

TEST(DriverOfModule, SeveralDriversOnOneBusAreAmbiguous) {
  testing::FakeKernel kernel;
  kernel.AddDriver({"pci", "a", "two", {}, ""});
  kernel.AddDriver({"pci", "b", "two", {}, ""});
  absl::StatusOr<std::string> d = DriverOfModule(kernel.sysfs(), "two", "pci");
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "a, b")) << d.status();
}

}  // namespace
}  // namespace migd::host
