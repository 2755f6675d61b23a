// migd/host/sysfs_test.cc
//
// Sysfs and KernelSysfsWriter on plain files and links under $TEST_TMPDIR:
// the root prefix, trimming, link names, listings, and the errors (errno
// text and the path). A regular file takes any write; what the kernel's
// attributes refuse is the fake kernel's business (fake_kernel.h).

#include "migd/host/sysfs.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace migd::host {
namespace {

class SysfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* base = getenv("TEST_TMPDIR");
    std::string pattern =
        absl::StrCat(base != nullptr ? base : "/tmp", "/sysfsXXXXXX");
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    std::filesystem::create_directories(root_ + "/sys/bus/pci/devices/d");
    std::filesystem::create_directories(root_ + "/sys/bus/pci/drivers/e1000e");
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  void Put(const std::string& path, const std::string& content) {
    std::ofstream(root_ + path) << content;
  }
  std::string Get(const std::string& path) {
    std::ifstream in(root_ + path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::string root_;
};

TEST_F(SysfsTest, PathsLiveBelowTheRootWithOrWithoutATrailingSlash) {
  EXPECT_EQ(Sysfs(root_).Path("/sys/x"), root_ + "/sys/x");
  EXPECT_EQ(Sysfs(root_ + "/").Path("/sys/x"), root_ + "/sys/x");
  EXPECT_EQ(Sysfs("/").Path("/sys/x"), "/sys/x");
  EXPECT_EQ(Sysfs("").Path("/sys/x"), "/sys/x");
}

TEST_F(SysfsTest, ReadTrimsWhitespace) {
  Put("/sys/bus/pci/devices/d/vendor", "0x15b3\n");
  EXPECT_EQ(*Sysfs(root_).Read("/sys/bus/pci/devices/d/vendor"), "0x15b3");
}

TEST_F(SysfsTest, ReadOfAMissingFileIsNotFoundNamingThePath) {
  absl::StatusOr<std::string> r = Sysfs(root_).Read("/sys/nope");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(r.status().message(), root_ + "/sys/nope"));
  EXPECT_TRUE(absl::StrContains(r.status().message(), "No such file"));
}

TEST_F(SysfsTest, WriteIsOneWholeValueThroughTheKernelWriter) {
  Put("/sys/bus/pci/devices/d/driver_override", "(null)\n");
  ASSERT_TRUE(Sysfs(root_)
                  .Write("/sys/bus/pci/devices/d/driver_override", "vfio-pci")
                  .ok());
  EXPECT_EQ(Get("/sys/bus/pci/devices/d/driver_override"), "vfio-pci");
}

TEST_F(SysfsTest, WriteNeverCreatesAnAttribute) {
  absl::Status s = Sysfs(root_).Write("/sys/bus/pci/devices/d/new_id", "1");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(s.message(), "write \"1\" to " + root_ +
                                                 "/sys/bus/pci/devices/d/"
                                                 "new_id"))
      << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "No such file")) << s;
  EXPECT_FALSE(
      std::filesystem::exists(root_ + "/sys/bus/pci/devices/d/new_id"));
}

TEST_F(SysfsTest, WriteErrorsCarryTheErrnoText) {
  absl::Status s =
      SysfsWriteError("/sys/bus/pci/drivers_probe", "0000:00:04.0\n", ENODEV);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(),
            "write \"0000:00:04.0\\n\" to /sys/bus/pci/drivers_probe: No such "
            "device");
  EXPECT_EQ(SysfsWriteError("/x", "1", EBUSY).code(),
            absl::StatusCode::kFailedPrecondition);
}

class RecordingWriter final : public SysfsWriter {
 public:
  absl::Status Write(const std::string& path,
                     absl::string_view value) override {
    seen.push_back(absl::StrCat(path, " := ", value));
    return absl::OkStatus();
  }
  std::vector<std::string> seen;
};

TEST_F(SysfsTest, WritesGoThroughTheInjectedWriterWithTheRootedPath) {
  RecordingWriter w;
  ASSERT_TRUE(Sysfs(root_, &w).Write("/sys/bus/pci/drivers_probe", "x").ok());
  EXPECT_EQ(w.seen, std::vector<std::string>{
                        root_ + "/sys/bus/pci/drivers_probe := x"});
}

TEST_F(SysfsTest, LinkNameIsTheTargetsLastComponent) {
  ASSERT_EQ(symlink("../../drivers/e1000e",
                    (root_ + "/sys/bus/pci/devices/d/driver").c_str()),
            0);
  const Sysfs sysfs(root_);
  EXPECT_EQ(*sysfs.LinkTarget("/sys/bus/pci/devices/d/driver"),
            "../../drivers/e1000e");
  EXPECT_EQ(*sysfs.LinkName("/sys/bus/pci/devices/d/driver"), "e1000e");
  EXPECT_EQ(sysfs.LinkName("/sys/bus/pci/devices/d/physfn").status().code(),
            absl::StatusCode::kNotFound);
  Put("/sys/bus/pci/devices/d/vendor", "0x8086\n");
  EXPECT_EQ(sysfs.LinkName("/sys/bus/pci/devices/d/vendor").status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SysfsTest, ListIsSortedWithoutDots) {
  for (const char* f : {"virtfn1", "virtfn0", "vendor"}) {
    Put(absl::StrCat("/sys/bus/pci/devices/d/", f), "");
  }
  EXPECT_EQ(*Sysfs(root_).List("/sys/bus/pci/devices/d"),
            (std::vector<std::string>{"vendor", "virtfn0", "virtfn1"}));
  EXPECT_EQ(Sysfs(root_).List("/sys/nope").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SysfsTest, ExistsFollowsLinks) {
  ASSERT_EQ(symlink("nowhere", (root_ + "/sys/dangling").c_str()), 0);
  EXPECT_TRUE(Sysfs(root_).Exists("/sys/bus/pci/devices/d"));
  EXPECT_FALSE(Sysfs(root_).Exists("/sys/dangling"));
}

}  // namespace
}  // namespace migd::host
