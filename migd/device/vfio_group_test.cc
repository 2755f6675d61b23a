// migd/device/vfio_group_test.cc
//
// VfioOpener against a fake sysfs and /dev tree (regular files and symlinks in
// a temporary directory). With the real ioctl(2), those files answer ENOTTY,
// which pins the error handling; with a fake kernel behind the ioctls, the
// tests pin the call sequence: one open group per group number, one shared
// container with the IOMMU set once, the device name (and VF token) passed to
// VFIO_GROUP_GET_DEVICE_FD, and the cdev + iommufd calls.

#include "migd/device/vfio_group.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "migd/device/vfio_kernel_uapi.h"
#include "migd/device/vfio_open.h"
#include "migd/device/vfio_spec.h"

namespace migd::device {
namespace {

constexpr char kToken[] = "4b0b3a6e-1d7c-4c1e-9d36-2b1c6f0e8a11";
constexpr char kMdev[] = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";

// A throwaway sysfs + /dev tree.
class FakeTree {
 public:
  FakeTree() {
    const char* base = getenv("TEST_TMPDIR");
    std::string pattern =
        std::string(base != nullptr ? base : "/tmp") + "/vfioXXXXXX";
    std::vector<char> buf(pattern.begin(), pattern.end());
    buf.push_back('\0');
    EXPECT_NE(mkdtemp(buf.data()), nullptr);
    root_ = buf.data();
    paths_.sys = root_ + "/sys";
    paths_.dev = root_ + "/dev";
    Mkdirs(paths_.dev + "/vfio");
  }
  ~FakeTree() {
    const std::string cmd = "rm -rf '" + root_ + "'";
    (void)system(cmd.c_str());
  }

  const VfioPaths& paths() const { return paths_; }

  void Mkdirs(const std::string& path) {
    std::string cur;
    for (absl::string_view part : absl::StrSplit(path, '/')) {
      if (part.empty()) continue;
      absl::StrAppend(&cur, "/", part);
      mkdir(cur.c_str(), 0755);
    }
  }
  void Touch(const std::string& path) {
    const int fd = open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0) << path;
    close(fd);
  }
  // A PCI device in `group` (or none when < 0) bound to `driver`.
  void AddPci(const std::string& bdf, int group,
              const std::string& driver = "vfio-pci") {
    AddDevice(paths_.sys + "/bus/pci/devices/" + bdf, group, driver);
  }
  void AddMdev(const std::string& uuid, int group) {
    AddDevice(paths_.sys + "/bus/mdev/devices/" + uuid, group, "vfio_mdev");
  }
  void AddGroupNode(int group) {
    Touch(absl::StrCat(paths_.dev, "/vfio/", group));
  }
  void AddContainerNode() { Touch(paths_.dev + "/vfio/vfio"); }

 private:
  void AddDevice(const std::string& dir, int group, const std::string& driver) {
    Mkdirs(dir);
    if (group >= 0) {
      EXPECT_EQ(
          symlink(
              absl::StrCat("../../../../kernel/iommu_groups/", group).c_str(),
              (dir + "/iommu_group").c_str()),
          0);
    }
    EXPECT_EQ(symlink(("../../../bus/pci/drivers/" + driver).c_str(),
                      (dir + "/driver").c_str()),
              0);
  }

  std::string root_;
  VfioPaths paths_;
};

std::string PathOf(int fd) {
  char buf[4096];
  const ssize_t n =
      readlink(absl::StrCat("/proc/self/fd/", fd).c_str(), buf, sizeof(buf));
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// Answers the group/container/iommufd ioctls the way the kernel does, keyed
// by which fake node an fd is.
class FakeVfio {
 public:
  std::set<int> non_viable_groups;
  // Groups the kernel will not put in a container that already has an IOMMU.
  std::set<int> incompatible_groups;
  std::string required_token;  // non-empty: GET_DEVICE_FD checks it

  int set_container_calls = 0;
  int set_iommu_calls = 0;
  std::set<int> containers_seen;  // container fds groups were put in
  std::vector<std::string> device_names;
  int ioas_allocs = 0;
  std::vector<kuapi::VfioDeviceBindIommufd> binds;
  std::vector<std::array<uint8_t, 16>> bind_tokens;
  std::vector<kuapi::VfioDeviceAttachIommufdPt> attaches;
  int iommufd_fd = -1;

  VfioSyscalls Syscalls() {
    VfioSyscalls s = VfioSyscalls::Real();
    s.ioctl = [this](int fd, unsigned long request, void* arg) {
      const int r = Ioctl(fd, request, arg);
      if (r < 0) {
        errno = -r;
        return -1;
      }
      return r;
    };
    return s;
  }

 private:
  static int GroupNumber(const std::string& path) {
    const size_t slash = path.rfind('/');
    return atoi(path.c_str() + slash + 1);
  }

  int Ioctl(int fd, unsigned long request, void* arg) {
    const std::string path = PathOf(fd);
    if (absl::EndsWith(path, "/vfio/vfio")) {
      if (request == VFIO_GET_API_VERSION) return VFIO_API_VERSION;
      if (request == VFIO_CHECK_EXTENSION) {
        return reinterpret_cast<uintptr_t>(arg) == VFIO_TYPE1v2_IOMMU ? 1 : 0;
      }
      if (request == VFIO_SET_IOMMU) {
        EXPECT_EQ(reinterpret_cast<uintptr_t>(arg),
                  static_cast<uintptr_t>(VFIO_TYPE1v2_IOMMU));
        // (fd numbers are reused once a container closes: no EBUSY check)
        iommu_set_.insert(fd);
        ++set_iommu_calls;
        return 0;
      }
      return -ENOTTY;
    }
    if (absl::EndsWith(path, "/iommu")) {
      if (request == kuapi::kIommuIoasAlloc) {
        auto* alloc = static_cast<kuapi::IommuIoasAlloc*>(arg);
        EXPECT_EQ(alloc->size, sizeof(kuapi::IommuIoasAlloc));
        EXPECT_EQ(alloc->flags, 0u);
        alloc->out_ioas_id = 42;
        ++ioas_allocs;
        iommufd_fd = fd;
        return 0;
      }
      return -ENOTTY;
    }
    if (absl::StrContains(path, "/vfio/devices/vfio")) {
      if (request == kuapi::kVfioDeviceBindIommufd) {
        auto* bind = static_cast<kuapi::VfioDeviceBindIommufd*>(arg);
        binds.push_back(*bind);
        if (bind->flags & kuapi::kVfioDeviceBindFlagToken) {
          std::array<uint8_t, 16> t;
          std::memcpy(t.data(),
                      reinterpret_cast<const void*>(
                          static_cast<uintptr_t>(bind->token_uuid_ptr)),
                      16);
          bind_tokens.push_back(t);
        }
        return 0;
      }
      if (request == kuapi::kVfioDeviceAttachIommufdPt) {
        attaches.push_back(
            *static_cast<kuapi::VfioDeviceAttachIommufdPt*>(arg));
        return 0;
      }
      return -ENOTTY;
    }
    const int group = GroupNumber(path);
    if (request == VFIO_GROUP_GET_STATUS) {
      auto* status = static_cast<struct vfio_group_status*>(arg);
      EXPECT_EQ(status->argsz, sizeof(struct vfio_group_status));
      status->flags =
          non_viable_groups.count(group) ? 0 : VFIO_GROUP_FLAGS_VIABLE;
      return 0;
    }
    if (request == VFIO_GROUP_SET_CONTAINER) {
      const int container = *static_cast<int*>(arg);
      if (incompatible_groups.count(group) && iommu_set_.count(container)) {
        return -EPERM;
      }
      ++set_container_calls;
      containers_seen.insert(container);
      return 0;
    }
    if (request == VFIO_GROUP_GET_DEVICE_FD) {
      const std::string name(static_cast<const char*>(arg));
      device_names.push_back(name);
      if (!required_token.empty() &&
          !absl::EndsWith(name, " vf_token=" + required_token)) {
        return -EACCES;
      }
      return open("/dev/null", O_RDWR | O_CLOEXEC);
    }
    return -ENOTTY;
  }

  std::set<int> iommu_set_;
};

TEST(VfioOpener, DevicesOfOneGroupShareTheGroupAndTheContainer) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddPci("0000:00:04.0", 7);
  tree.AddPci("0000:00:05.0", 7);
  tree.AddGroupNode(7);
  FakeVfio kernel;
  VfioOpener opener(tree.paths(), kernel.Syscalls());

  absl::StatusOr<VfioDeviceFd> a = opener.OpenPci("0000:00:04.0", std::nullopt);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<VfioDeviceFd> b = opener.OpenPci("0000:00:05.0", std::nullopt);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->keepalive, b->keepalive);
  EXPECT_EQ(a->address, "0000:00:04.0");
  EXPECT_EQ(kernel.device_names,
            (std::vector<std::string>{"0000:00:04.0", "0000:00:05.0"}));
  EXPECT_EQ(kernel.set_container_calls, 1);
  EXPECT_EQ(kernel.set_iommu_calls, 1);
  EXPECT_EQ(opener.open_groups(), 1u);
  EXPECT_EQ(opener.open_containers(), 1u);
}

TEST(VfioOpener, AnotherGroupJoinsTheSameContainer) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddPci("0000:00:04.0", 7);
  tree.AddPci("0000:00:06.0", 8);
  tree.AddGroupNode(7);
  tree.AddGroupNode(8);
  FakeVfio kernel;
  VfioOpener opener(tree.paths(), kernel.Syscalls());
  absl::StatusOr<VfioDeviceFd> a = opener.OpenPci("0000:00:04.0", std::nullopt);
  absl::StatusOr<VfioDeviceFd> b = opener.OpenPci("0000:00:06.0", std::nullopt);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->keepalive, b->keepalive);
  EXPECT_EQ(kernel.set_container_calls, 2);
  EXPECT_EQ(kernel.containers_seen.size(), 1u);
  EXPECT_EQ(kernel.set_iommu_calls, 1);
  EXPECT_EQ(opener.open_groups(), 2u);
  EXPECT_EQ(opener.open_containers(), 1u);
}

TEST(VfioOpener, AGroupTheContainerCannotTakeGetsItsOwnContainer) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddPci("0000:00:04.0", 7);
  tree.AddPci("0000:00:06.0", 8);
  tree.AddGroupNode(7);
  tree.AddGroupNode(8);
  FakeVfio kernel;
  kernel.incompatible_groups = {8};
  VfioOpener opener(tree.paths(), kernel.Syscalls());
  absl::StatusOr<VfioDeviceFd> a = opener.OpenPci("0000:00:04.0", std::nullopt);
  absl::StatusOr<VfioDeviceFd> b = opener.OpenPci("0000:00:06.0", std::nullopt);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(kernel.containers_seen.size(), 2u);
  EXPECT_EQ(kernel.set_iommu_calls, 2);
  EXPECT_EQ(opener.open_containers(), 2u);
}

TEST(VfioOpener, TheGroupClosesWithItsLastDeviceAndReopensLater) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddPci("0000:00:04.0", 7);
  tree.AddGroupNode(7);
  FakeVfio kernel;
  VfioOpener opener(tree.paths(), kernel.Syscalls());
  {
    absl::StatusOr<VfioDeviceFd> a =
        opener.OpenPci("0000:00:04.0", std::nullopt);
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_EQ(opener.open_groups(), 1u);
  }
  EXPECT_EQ(opener.open_groups(), 0u);
  EXPECT_EQ(opener.open_containers(), 0u);
  ASSERT_TRUE(opener.OpenPci("0000:00:04.0", std::nullopt).ok());
  EXPECT_EQ(kernel.set_container_calls, 2);
}

TEST(VfioOpener, TheVfTokenGoesToTheKernelAndNowhereElse) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddPci("0000:00:04.0", 7);
  tree.AddGroupNode(7);
  FakeVfio kernel;
  kernel.required_token = kToken;
  VfioOpener opener(tree.paths(), kernel.Syscalls());

  absl::StatusOr<VfioDeviceFd> ok = opener.OpenPci("0000:00:04.0", kToken);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(kernel.device_names.back(),
            absl::StrCat("0000:00:04.0 vf_token=", kToken));

  const std::string wrong = "00000000-0000-0000-0000-000000000000";
  absl::StatusOr<VfioDeviceFd> bad = opener.OpenPci("0000:00:04.0", wrong);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_FALSE(absl::StrContains(bad.status().message(), wrong))
      << bad.status();
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "VF token"))
      << bad.status();

  absl::StatusOr<VfioDeviceFd> missing =
      opener.OpenPci("0000:00:04.0", std::nullopt);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(missing.status().message(), "vf_token="))
      << missing.status();
}

TEST(SetPciVfToken, SendsTheSetFeatureWithTheTokensSixteenBytes) {
  std::vector<uint8_t> sent;
  unsigned long request = 0;
  int fd_seen = -1;
  VfioSyscalls sys = VfioSyscalls::Real();
  sys.ioctl = [&](int fd, unsigned long req, void* arg) {
    fd_seen = fd;
    request = req;
    const auto* header = static_cast<const struct vfio_device_feature*>(arg);
    const auto* bytes = static_cast<const uint8_t*>(arg);
    sent.assign(bytes, bytes + header->argsz);
    return 0;
  };
  ASSERT_TRUE(SetPciVfToken(9, "0000:03:00.0", kToken, sys).ok());
  EXPECT_EQ(fd_seen, 9);
  EXPECT_EQ(request, static_cast<unsigned long>(VFIO_DEVICE_FEATURE));
  ASSERT_EQ(sent.size(), sizeof(struct vfio_device_feature) + 16);
  struct vfio_device_feature header;
  std::memcpy(&header, sent.data(), sizeof(header));
  EXPECT_EQ(header.argsz, sizeof(struct vfio_device_feature) + 16);
  EXPECT_EQ(header.flags,
            static_cast<uint32_t>(VFIO_DEVICE_FEATURE_SET |
                                  VFIO_DEVICE_FEATURE_PCI_VF_TOKEN));
  absl::StatusOr<std::array<uint8_t, 16>> want = UuidBytes(kToken);
  ASSERT_TRUE(want.ok());
  EXPECT_EQ(std::vector<uint8_t>(sent.begin() + sizeof(header), sent.end()),
            std::vector<uint8_t>(want->begin(), want->end()));
}

TEST(SetPciVfToken, ADeviceThatIsNoVfioPciPfIsUnimplementedAndTheTokenUnsaid) {
  VfioSyscalls sys = VfioSyscalls::Real();
  sys.ioctl = [](int, unsigned long, void*) {
    errno = ENOTTY;
    return -1;
  };
  absl::Status s = SetPciVfToken(9, "0000:03:00.0", kToken, sys);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(absl::StrContains(s.message(), "0000:03:00.0")) << s;
  EXPECT_FALSE(absl::StrContains(s.message(), kToken)) << s;
}

TEST(OpenVfioDevice, AVfOfAPfOnVfioPciWithoutTheTokenSaysWhatItNeeds) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddPci("0000:03:00.0", 6);
  tree.AddPci("0000:03:00.1", 7);
  tree.AddGroupNode(7);
  ASSERT_EQ(
      symlink(
          "../0000:03:00.0",
          (tree.paths().sys + "/bus/pci/devices/0000:03:00.1/physfn").c_str()),
      0);
  FakeVfio kernel;
  kernel.required_token = kToken;
  VfioOpener opener(tree.paths(), kernel.Syscalls());
  VfioDeviceConfig config;
  config.name = "nvf0";
  config.address = "0000:03:00.1";
  absl::StatusOr<std::unique_ptr<VfioDevice>> d =
      OpenVfioDevice(config, opener);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(absl::StrContains(
      d.status().message(),
      "vfio device nvf0: VF 0000:03:00.1 belongs to PF 0000:03:00.0, which "
      "vfio-pci drives with SR-IOV enabled: opening it needs the PF owner's "
      "VF token (migctl host vf-token 0000:03:00.0 makes this agent the "
      "owner, or give vf_token= on the device line)"))
      << d.status();
  EXPECT_EQ(PfOfVf("0000:03:00.1", tree.paths()), "0000:03:00.0");
  EXPECT_EQ(PfOfVf("0000:03:00.0", tree.paths()), std::nullopt);
}

TEST(VfioOpener, AnMdevIsAskedForByItsUuid) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddMdev(kMdev, 9);
  tree.AddGroupNode(9);
  FakeVfio kernel;
  VfioOpener opener(tree.paths(), kernel.Syscalls());
  absl::StatusOr<VfioDeviceFd> d = opener.OpenMdev(kMdev);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(kernel.device_names, std::vector<std::string>{kMdev});
  EXPECT_EQ(d->address, kMdev);
}

TEST(VfioOpener, AMissingDeviceIsNotFound) {
  FakeTree tree;
  VfioOpener opener(tree.paths());
  absl::StatusOr<VfioDeviceFd> d = opener.OpenPci("0000:00:1f.7", std::nullopt);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "0000:00:1f.7"))
      << d.status();
}

TEST(VfioOpener, ADeviceWithoutAnIommuGroupSaysTheIommuIsOff) {
  FakeTree tree;
  tree.AddPci("0000:00:04.0", -1);
  VfioOpener opener(tree.paths());
  absl::StatusOr<VfioDeviceFd> d = opener.OpenPci("0000:00:04.0", std::nullopt);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "IOMMU is off"))
      << d.status();
}

TEST(VfioOpener, AGroupWithoutANodeNamesTheDriverToUnbind) {
  FakeTree tree;
  tree.AddPci("0000:00:04.0", 7, "e1000e");
  VfioOpener opener(tree.paths());
  absl::StatusOr<VfioDeviceFd> d = opener.OpenPci("0000:00:04.0", std::nullopt);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "driver e1000e"))
      << d.status();
  EXPECT_TRUE(absl::StrContains(d.status().message(), "errno 2")) << d.status();
}

TEST(VfioOpener, ANoIommuGroupIsUnimplemented) {
  FakeTree tree;
  tree.AddPci("0000:00:04.0", 7);
  tree.Touch(tree.paths().dev + "/vfio/noiommu-7");
  VfioOpener opener(tree.paths());
  EXPECT_EQ(opener.OpenPci("0000:00:04.0", std::nullopt).status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(VfioOpener, ANonViableGroupIsFailedPrecondition) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddPci("0000:00:04.0", 7);
  tree.AddGroupNode(7);
  FakeVfio kernel;
  kernel.non_viable_groups = {7};
  VfioOpener opener(tree.paths(), kernel.Syscalls());
  absl::StatusOr<VfioDeviceFd> d = opener.OpenPci("0000:00:04.0", std::nullopt);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "not viable"))
      << d.status();
}

TEST(VfioOpener, AMissingContainerNodeSaysTheModuleIsNotLoaded) {
  FakeTree tree;
  tree.AddPci("0000:00:04.0", 7);
  tree.AddGroupNode(7);
  FakeVfio kernel;
  VfioOpener opener(tree.paths(), kernel.Syscalls());
  absl::StatusOr<VfioDeviceFd> d = opener.OpenPci("0000:00:04.0", std::nullopt);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "vfio module"))
      << d.status();
}

TEST(VfioOpener, RealIoctlsOnFilesThatAreNotVfioNodesFailCleanly) {
  FakeTree tree;
  tree.AddContainerNode();
  tree.AddPci("0000:00:04.0", 7);
  tree.AddGroupNode(7);
  VfioOpener opener(tree.paths());  // the real ioctl(2): regular files
  absl::StatusOr<VfioDeviceFd> d = opener.OpenPci("0000:00:04.0", std::nullopt);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(absl::StrContains(d.status().message(), "device 0000:00:04.0: "))
      << d.status();
  EXPECT_TRUE(absl::StrContains(d.status().message(), "errno 25"))
      << d.status();
  EXPECT_EQ(opener.open_groups(), 0u);
}

TEST(VfioOpener, BadAddressesAreRefusedBeforeTouchingSysfs) {
  FakeTree tree;
  VfioOpener opener(tree.paths());
  EXPECT_EQ(opener.OpenPci("../../etc", std::nullopt).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opener.OpenMdev("not-a-uuid").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(opener.OpenCdev("/dev/vfio/devices/../../sda", std::nullopt)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<VfioDeviceFd> bad_token =
      opener.OpenPci("0000:00:04.0", std::string("secret-but-not-a-uuid"));
  EXPECT_EQ(bad_token.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(absl::StrContains(bad_token.status().message(), "secret"))
      << bad_token.status();
}

TEST(VfioOpener, CdevNeedsIommufd) {
  FakeTree tree;
  VfioOpener opener(tree.paths());
  absl::Status s = opener.CdevSupport();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(absl::StrContains(s.message(), "CONFIG_IOMMUFD")) << s;
  absl::StatusOr<VfioDeviceFd> d =
      opener.OpenCdev("/dev/vfio/devices/vfio0", std::nullopt);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(absl::StartsWith(d.status().message(),
                               "device /dev/vfio/devices/vfio0: "))
      << d.status();
}

TEST(VfioOpener, CdevNeedsTheDeviceCdevs) {
  FakeTree tree;
  tree.Touch(tree.paths().dev + "/iommu");
  VfioOpener opener(tree.paths());
  absl::Status s = opener.CdevSupport();
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(absl::StrContains(s.message(), "CONFIG_VFIO_DEVICE_CDEV")) << s;
}

TEST(VfioOpener, CdevDevicesBindToOneIommufdAndAttachToOneIoas) {
  FakeTree tree;
  tree.Touch(tree.paths().dev + "/iommu");
  tree.Mkdirs(tree.paths().dev + "/vfio/devices");
  tree.Touch(tree.paths().dev + "/vfio/devices/vfio0");
  tree.Touch(tree.paths().dev + "/vfio/devices/vfio1");
  FakeVfio kernel;
  VfioOpener opener(tree.paths(), kernel.Syscalls());
  ASSERT_TRUE(opener.CdevSupport().ok());
  absl::StatusOr<VfioDeviceFd> a =
      opener.OpenCdev("/dev/vfio/devices/vfio0", std::nullopt);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<VfioDeviceFd> b =
      opener.OpenCdev("/dev/vfio/devices/vfio1", kToken);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->address, "/dev/vfio/devices/vfio0");
  EXPECT_EQ(a->keepalive, b->keepalive);
  EXPECT_EQ(kernel.ioas_allocs, 1);
  ASSERT_EQ(kernel.binds.size(), 2u);
  EXPECT_EQ(kernel.binds[0].argsz, 16u);
  EXPECT_EQ(kernel.binds[0].flags, 0u);
  EXPECT_EQ(kernel.binds[0].iommufd, kernel.iommufd_fd);
  EXPECT_EQ(kernel.binds[1].argsz, 24u);
  EXPECT_EQ(kernel.binds[1].flags, kuapi::kVfioDeviceBindFlagToken);
  ASSERT_EQ(kernel.bind_tokens.size(), 1u);
  EXPECT_EQ(kernel.bind_tokens[0], *UuidBytes(kToken));
  ASSERT_EQ(kernel.attaches.size(), 2u);
  EXPECT_EQ(kernel.attaches[0].argsz, 12u);
  EXPECT_EQ(kernel.attaches[0].flags, 0u);
  EXPECT_EQ(kernel.attaches[0].pt_id, 42u);
}

TEST(VfioOpener, IommuGroupOfReadsTheLink) {
  FakeTree tree;
  tree.AddPci("0000:00:04.0", 12);
  VfioOpener opener(tree.paths());
  absl::StatusOr<int> g =
      opener.IommuGroupOf(tree.paths().sys + "/bus/pci/devices/0000:00:04.0");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(*g, 12);
}

}  // namespace
}  // namespace migd::device
