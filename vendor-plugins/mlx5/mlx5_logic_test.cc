// The mlx5 plugin's logic on RECORDED `devlink dev info` outputs of real
// ConnectX PFs (testdata/, sources in testdata/SOURCES.md), parsed back
// into what the devlink client would have filled, and on fake sysfs trees.

#include "vendor-plugins/mlx5/mlx5_logic.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "migd/plugin.h"
#include "vendor-plugins/mlx5/devlink.h"

namespace {

namespace fs = std::filesystem;

std::string ReadTestdata(const std::string& name) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* ws = std::getenv("TEST_WORKSPACE");
  const std::string path = std::string(srcdir != nullptr ? srcdir : ".") + "/" +
                           (ws != nullptr ? ws : "migd") +
                           "/vendor-plugins/mlx5/testdata/" + name;
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "cannot read " << path;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

void Put(const std::string& s, char* out, size_t size) {
  std::snprintf(out, size, "%s", s.c_str());
}

// iproute2's `devlink dev info` text, one migd_devlink_info per handle:
//
//   pci/0000:08:00.0:            a handle, unindented, ending with ':'
//     driver mlx5_core           driver, serial_number; other keys ignored
//     versions:
//         fixed:                 fixed / running / stored
//           fw.psid MT_...       name value
//
// Lines beginning with '$' (the command) and blank lines are skipped.
std::map<std::string, migd_devlink_info> ParseDevlinkDevInfo(
    const std::string& text) {
  std::map<std::string, migd_devlink_info> devices;
  migd_devlink_info* current = nullptr;
  std::string section;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (line.empty() || line[0] == '$') continue;
    if (line[0] != ' ') {
      absl::string_view handle = line;
      EXPECT_TRUE(absl::ConsumeSuffix(&handle, ":")) << line;
      current = &devices[std::string(handle)];
      std::memset(current, 0, sizeof(*current));
      section.clear();
      continue;
    }
    if (current == nullptr) continue;
    const std::string trimmed(absl::StripAsciiWhitespace(line));
    if (trimmed == "versions:") continue;
    if (trimmed == "fixed:" || trimmed == "running:" || trimmed == "stored:") {
      section = trimmed.substr(0, trimmed.size() - 1);
      continue;
    }
    const size_t space = trimmed.find(' ');
    if (space == std::string::npos) continue;
    const std::string key = trimmed.substr(0, space);
    const std::string value = trimmed.substr(space + 1);
    migd_devlink_version* list = nullptr;
    size_t* count = nullptr;
    if (section == "fixed") {
      list = current->fixed;
      count = &current->fixed_count;
    } else if (section == "running") {
      list = current->running;
      count = &current->running_count;
    } else if (section == "stored") {
      list = current->stored;
      count = &current->stored_count;
    } else if (key == "driver") {
      Put(value, current->driver, sizeof(current->driver));
    } else if (key == "serial_number") {
      Put(value, current->serial_number, sizeof(current->serial_number));
    }
    if (list != nullptr && *count < MIGD_DEVLINK_MAX_VERSIONS) {
      Put(key, list[*count].name, sizeof(list[*count].name));
      Put(value, list[*count].value, sizeof(list[*count].value));
      ++*count;
    }
  }
  return devices;
}

struct IdentityResult {
  int rc;
  mlx5_identity id;
  std::string error;
};

IdentityResult IdentityOf(const std::string& file, const std::string& handle,
                          const std::string& edit_from = "",
                          const std::string& edit_to = "") {
  std::string text = ReadTestdata(file);
  if (!edit_from.empty()) {
    EXPECT_TRUE(absl::StrContains(text, edit_from));
    text = absl::StrReplaceAll(text, {{edit_from, edit_to}});
  }
  const auto devices = ParseDevlinkDevInfo(text);
  IdentityResult r{};
  auto it = devices.find(handle);
  EXPECT_NE(it, devices.end()) << handle << " is not in " << file;
  if (it == devices.end()) return {-ENOENT, {}, "no such handle"};
  char error[512] = "";
  r.rc = mlx5_identity_from_info(&it->second, handle.c_str(), &r.id, error,
                                 sizeof(error));
  r.error = error;
  return r;
}

constexpr char kCx7[] = "netdev-2025-03-18-pirko.txt";
constexpr char kCx6Dx[] = "stable-2026-04-08-mahameed.txt";
constexpr char kOperator[] = "nic-configuration-operator-496.txt";

TEST(RecordedDevlinkInfo, ParsesAsTheClientWouldFillIt) {
  const auto devices = ParseDevlinkDevInfo(ReadTestdata(kCx7));
  ASSERT_EQ(devices.size(), 4u);  // two PFs, two auxiliary devices
  const migd_devlink_info& pf = devices.at("pci/0000:08:00.0");
  EXPECT_STREQ(pf.driver, "mlx5_core");
  EXPECT_STREQ(pf.serial_number, "e4397f872caeed218000846daa7d2f49");
  EXPECT_EQ(pf.fixed_count, 1u);
  EXPECT_EQ(pf.running_count, 2u);
  EXPECT_EQ(pf.stored_count, 2u);
}

TEST(Identity, OfARecordedConnectXPfIsItsPsidAndRunningFirmware) {
  const IdentityResult r = IdentityOf(kCx7, "pci/0000:08:00.0");
  ASSERT_EQ(r.rc, 0) << r.error;
  EXPECT_STREQ(r.id.psid, "MT_0000000894");
  EXPECT_STREQ(r.id.firmware, "28.41.1000");
  char summary[128];
  mlx5_identity_summary(&r.id, summary, sizeof(summary));
  EXPECT_STREQ(summary, "PSID MT_0000000894, firmware 28.41.1000");
}

TEST(Identity, UsesTheRunningVersionNotAStoredOneThatFailed) {
  // Stored 255.255.65535: the pending image could not be queried.
  const IdentityResult r = IdentityOf(kCx6Dx, "pci/0000:00:06.0");
  ASSERT_EQ(r.rc, 0) << r.error;
  EXPECT_STREQ(r.id.psid, "MT_0000000436");
  EXPECT_STREQ(r.id.firmware, "22.41.0188");
}

TEST(Identity, TakesAPsidOfAnyFormAndARunningVersionAlone) {
  const IdentityResult cx8 = IdentityOf(kOperator, "pci/0000:0d:00.0");
  ASSERT_EQ(cx8.rc, 0) << cx8.error;
  EXPECT_STREQ(cx8.id.psid, "NVD0000000072");
  EXPECT_STREQ(cx8.id.firmware, "40.48.1132");
  const IdentityResult bf3 = IdentityOf(kOperator, "pci/0000:48:00.0");
  ASSERT_EQ(bf3.rc, 0) << bf3.error;
  EXPECT_STREQ(bf3.id.psid, "MT_0000001188");
  EXPECT_STREQ(bf3.id.firmware, "32.47.3576");
}

TEST(Identity, AnAuxiliaryDeviceHasNoneAndTheErrorSaysWhatIsMissing) {
  const IdentityResult r = IdentityOf(kCx7, "auxiliary/mlx5_core.eth.0");
  EXPECT_EQ(r.rc, -ENODATA);
  EXPECT_TRUE(absl::StrContains(r.error, "auxiliary/mlx5_core.eth.0"))
      << r.error;
  EXPECT_TRUE(absl::StrContains(r.error, "no fixed fw.psid")) << r.error;
  EXPECT_TRUE(absl::StrContains(r.error, "mlx5_core.eth")) << r.error;
}

TEST(Identity, ARunningVersionTheDriverCouldNotQueryIsAnError) {
  const IdentityResult r =
      IdentityOf(kCx6Dx, "pci/0000:00:06.0", "fw.version 22.41.0188",
                 "fw.version 255.255.65535");
  EXPECT_EQ(r.rc, -EIO);
  EXPECT_TRUE(absl::StrContains(r.error, "255.255.65535")) << r.error;
  EXPECT_TRUE(absl::StrContains(r.error, "could not query")) << r.error;
}

TEST(Compare, TwoPfsOfTheRecordedCardAreCompatible) {
  const IdentityResult a = IdentityOf(kCx7, "pci/0000:08:00.0");
  const IdentityResult b = IdentityOf(kCx7, "pci/0000:08:00.1");
  ASSERT_EQ(a.rc, 0) << a.error;
  ASSERT_EQ(b.rc, 0) << b.error;
  mlx5_verdict v;
  mlx5_compare(&a.id, &b.id, &v);
  EXPECT_TRUE(v.compatible);
  EXPECT_EQ(v.field, nullptr);
}

TEST(Compare, AnotherBoardIsIncompatibleNamingPsidAndBothValues) {
  const IdentityResult cx7 = IdentityOf(kCx7, "pci/0000:08:00.0");
  const IdentityResult cx6dx = IdentityOf(kCx6Dx, "pci/0000:00:06.0");
  ASSERT_EQ(cx7.rc, 0) << cx7.error;
  ASSERT_EQ(cx6dx.rc, 0) << cx6dx.error;
  mlx5_verdict v;
  mlx5_compare(&cx7.id, &cx6dx.id, &v);
  EXPECT_FALSE(v.compatible);
  ASSERT_NE(v.field, nullptr);
  EXPECT_STREQ(v.field, "psid");
  EXPECT_STREQ(v.source_value, "MT_0000000894");
  EXPECT_STREQ(v.destination_value, "MT_0000000436");
  EXPECT_TRUE(absl::StrContains(v.message, "board")) << v.message;
}

TEST(Compare, BlueField3AndConnectX8DifferInPsid) {
  const IdentityResult bf3 = IdentityOf(kOperator, "pci/0000:48:00.0");
  const IdentityResult cx8 = IdentityOf(kOperator, "pci/0000:0d:00.0");
  mlx5_verdict v;
  mlx5_compare(&bf3.id, &cx8.id, &v);
  EXPECT_FALSE(v.compatible);
  ASSERT_NE(v.field, nullptr);
  EXPECT_STREQ(v.field, "psid");
  EXPECT_STREQ(v.source_value, "MT_0000001188");
  EXPECT_STREQ(v.destination_value, "NVD0000000072");
}

TEST(Compare, OtherFirmwareOnTheSameBoardIsIncompatibleWithBothValues) {
  // The recorded ConnectX-6 Dx, and a copy edited to a later firmware: the
  // same board after an update.
  const IdentityResult before = IdentityOf(kCx6Dx, "pci/0000:00:06.0");
  const IdentityResult after =
      IdentityOf(kCx6Dx, "pci/0000:00:06.0", "fw.version 22.41.0188",
                 "fw.version 22.43.1020");
  ASSERT_EQ(before.rc, 0) << before.error;
  ASSERT_EQ(after.rc, 0) << after.error;
  mlx5_verdict v;
  mlx5_compare(&before.id, &after.id, &v);
  EXPECT_FALSE(v.compatible);
  ASSERT_NE(v.field, nullptr);
  EXPECT_STREQ(v.field, "firmware");
  EXPECT_STREQ(v.source_value, "22.41.0188");
  EXPECT_STREQ(v.destination_value, "22.43.1020");
  EXPECT_TRUE(absl::StrContains(v.message, "firmware")) << v.message;
}

TEST(Descriptor, RoundTripsEveryRecordedIdentity) {
  for (const auto& [file, handle] :
       std::map<std::string, std::string>{{kCx7, "pci/0000:08:00.1"},
                                          {kCx6Dx, "pci/0000:00:06.0"},
                                          {kOperator, "pci/0000:0d:00.0"}}) {
    const IdentityResult r = IdentityOf(file, handle);
    ASSERT_EQ(r.rc, 0) << r.error;
    char buffer[256];
    const size_t n = mlx5_descriptor_encode(&r.id, buffer, sizeof(buffer));
    ASSERT_LE(n, sizeof(buffer));
    EXPECT_EQ(std::string(buffer, n), std::string("mlx5-desc 1\npsid=") +
                                          r.id.psid + "\nfw=" + r.id.firmware +
                                          "\n");
    mlx5_identity back;
    char error[256] = "";
    ASSERT_EQ(mlx5_descriptor_decode(reinterpret_cast<const uint8_t*>(buffer),
                                     n, &back, error, sizeof(error)),
              0)
        << error;
    EXPECT_STREQ(back.psid, r.id.psid);
    EXPECT_STREQ(back.firmware, r.id.firmware);
  }
}

TEST(Descriptor, EncodeSaysHowMuchRoomItNeeds) {
  const IdentityResult r = IdentityOf(kCx7, "pci/0000:08:00.0");
  char small[8];
  const size_t n = mlx5_descriptor_encode(&r.id, small, sizeof(small));
  EXPECT_EQ(n, std::strlen("mlx5-desc 1\npsid=MT_0000000894\nfw=28.41.1000\n"));
}

TEST(Descriptor, AMalformedOneIsAnErrorNamingWhatIsWrong) {
  static constexpr char kWithNul[] = "mlx5-desc 1\npsid=a\0\nfw=b\n";
  const std::map<std::string, std::string> cases = {
      {"state_version=1 mem_kib=4096", "not an mlx5 descriptor"},
      {"", "not an mlx5 descriptor"},
      {"mlx5-desc one\npsid=a\nfw=b\n", "malformed mlx5 descriptor header"},
      {"mlx5-desc 0\npsid=a\nfw=b\n", "malformed mlx5 descriptor header"},
      {"mlx5-desc 2\npsid=a\nfw=b\n", "format 2 is newer"},
      {"mlx5-desc 1\npsid=a\n", "has no fw"},
      {"mlx5-desc 1\nfw=b\n", "has no psid"},
      {"mlx5-desc 1\npsid=a\nfw=b", "truncated"},
      {"mlx5-desc 1\npsid a\nfw=b\n", "line 2 \"psid a\" is not key=value"},
      {"mlx5-desc 1\npsid=a\npsid=c\nfw=b\n", "psid twice"},
      {"mlx5-desc 1\npsid=\nfw=b\n", "psid is empty"},
      {std::string(kWithNul, sizeof(kWithNul) - 1), "NUL"},
  };
  for (const auto& [descriptor, expected] : cases) {
    mlx5_identity id;
    char error[256] = "";
    EXPECT_EQ(mlx5_descriptor_decode(
                  reinterpret_cast<const uint8_t*>(descriptor.data()),
                  descriptor.size(), &id, error, sizeof(error)),
              -EINVAL)
        << descriptor;
    EXPECT_TRUE(absl::StrContains(error, expected))
        << "descriptor \"" << descriptor << "\": " << error;
  }
}

TEST(Descriptor, KeysAddedWithinFormat1AreIgnored) {
  const std::string d =
      "mlx5-desc 1\npsid=MT_0000000894\nvhca=3\nfw=28.41.1000\n";
  mlx5_identity id;
  char error[256] = "";
  ASSERT_EQ(mlx5_descriptor_decode(reinterpret_cast<const uint8_t*>(d.data()),
                                   d.size(), &id, error, sizeof(error)),
            0)
      << error;
  EXPECT_STREQ(id.psid, "MT_0000000894");
  EXPECT_STREQ(id.firmware, "28.41.1000");
}

// PF 0000:3b:00.0 with VFs 0000:3b:00.2 (virtfn0) and 0000:3b:00.3
// (virtfn1) under TEST_TMPDIR/<name>, linked as the kernel links them; a
// VF 0000:3b:00.4 whose PF does not list it.
std::string FakeTree(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/" +
                          name + "/devices/pci0000:3a/0000:3a:00.0";
  fs::remove_all(dir);
  for (const char* bdf :
       {"0000:3b:00.0", "0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4"}) {
    fs::create_directories(dir + "/" + bdf);
  }
  for (const char* vf : {"0000:3b:00.2", "0000:3b:00.3", "0000:3b:00.4"}) {
    fs::create_symlink("../0000:3b:00.0", dir + "/" + vf + "/physfn");
  }
  fs::create_symlink("../0000:3b:00.2", dir + "/0000:3b:00.0/virtfn0");
  fs::create_symlink("../0000:3b:00.3", dir + "/0000:3b:00.0/virtfn1");
  return dir;
}

TEST(VfParent, FollowsPhysfnAndFindsTheVfNumberInThePfsVirtfnLinks) {
  const std::string dir = FakeTree("VfParentFinds");
  char pf[MLX5_BDF_MAX];
  int vf = -1;
  char error[512] = "";
  ASSERT_EQ(mlx5_vf_parent((dir + "/0000:3b:00.3").c_str(), pf, sizeof(pf), &vf,
                           error, sizeof(error)),
            0)
      << error;
  EXPECT_STREQ(pf, "0000:3b:00.0");
  EXPECT_EQ(vf, 1);
}

TEST(VfParent, APfIsNotAVf) {
  const std::string dir = FakeTree("VfParentPf");
  char pf[MLX5_BDF_MAX];
  int vf;
  char error[512] = "";
  EXPECT_EQ(mlx5_vf_parent((dir + "/0000:3b:00.0").c_str(), pf, sizeof(pf), &vf,
                           error, sizeof(error)),
            -ENOENT);
  EXPECT_TRUE(absl::StrContains(error, "physfn")) << error;
}

TEST(VfParent, AVfItsPfDoesNotListHasNoNumber) {
  const std::string dir = FakeTree("VfParentUnlisted");
  char pf[MLX5_BDF_MAX];
  int vf;
  char error[512] = "";
  EXPECT_EQ(mlx5_vf_parent((dir + "/0000:3b:00.4").c_str(), pf, sizeof(pf), &vf,
                           error, sizeof(error)),
            -ENOENT);
  EXPECT_TRUE(absl::StrContains(error, "no virtfnN link")) << error;
  EXPECT_TRUE(absl::StrContains(error, "0000:3b:00.4")) << error;
}

TEST(Assess, WithoutWhereThePfIsTheRemedyShowsPlaceholders) {
  const mlx5_vf_facts facts = {"vf3", "0000:3b:00.5", 0x101e, nullptr,
                               0,     nullptr,        -1};
  mlx5_assessment a;
  mlx5_assess(&facts, &a);
  EXPECT_FALSE(a.migratable);
  EXPECT_TRUE(absl::StrContains(a.reason, "bound to no driver")) << a.reason;
  EXPECT_TRUE(absl::StrContains(
      a.remedy, "migd-devlink set-migratable pci/<PF> <VF number> on"))
      << a.remedy;
}

TEST(Assess, VouchesOnlyForMigrationFlags) {
  const mlx5_vf_facts facts = {
      "vf0",
      "0000:3b:00.2",
      0x101e,
      "mlx5_vfio_pci",
      MIGD_MIGRATION_STOP_COPY | MIGD_MIGRATION_P2P | (uint64_t{1} << 10),
      "0000:3b:00.0",
      0};
  mlx5_assessment a;
  mlx5_assess(&facts, &a);
  EXPECT_TRUE(a.migratable);
  EXPECT_EQ(a.migration_flags, MIGD_MIGRATION_STOP_COPY | MIGD_MIGRATION_P2P);
}

TEST(ExplainErrno, WritesWhileResumingFollowTheDriversRecords) {
  char text[512];
  EXPECT_EQ(mlx5_explain_errno("write", -EOPNOTSUPP, text, sizeof(text)), 1);
  EXPECT_TRUE(absl::StrContains(text, "newer driver")) << text;
  EXPECT_EQ(mlx5_explain_errno("write", ENODEV, text, sizeof(text)), 1);
  EXPECT_TRUE(absl::StrContains(text, "earlier write")) << text;
  EXPECT_EQ(mlx5_explain_errno("RESUMING -> STOP", EINVAL, text, sizeof(text)),
            1);
  EXPECT_TRUE(absl::StrContains(text, "empty image")) << text;
}

TEST(ExplainErrno, SaysNothingWhereTheDriverGivesNoMeaning) {
  char text[512] = "stale";
  EXPECT_EQ(mlx5_explain_errno("STOP -> RUNNING", EIO, text, sizeof(text)), 0);
  EXPECT_STREQ(text, "");
  EXPECT_EQ(mlx5_explain_errno("readiness", ENODEV, text, sizeof(text)), 0);
  EXPECT_EQ(mlx5_explain_errno(nullptr, EIO, text, sizeof(text)), 0);
}

}  // namespace
