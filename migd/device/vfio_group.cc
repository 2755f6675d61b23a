// migd/device/vfio_group.cc

#include "migd/device/vfio_group.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "migd/device/vfio_errors.h"
#include "migd/device/vfio_kernel_uapi.h"
#include "migd/device/vfio_spec.h"

namespace migd::device {
namespace {

absl::StatusOr<std::string> ReadLink(const std::string& path) {
  std::array<char, 4096> buf;
  const ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
  if (n < 0) {
    return absl::Status(
        VfioErrnoCode(VfioOp::kOpen, errno),
        absl::StrCat("readlink ", path, ": ", ErrnoText(errno)));
  }
  if (static_cast<size_t>(n) == buf.size()) {
    return absl::InternalError(absl::StrCat("readlink ", path, ": too long"));
  }
  return std::string(buf.data(), static_cast<size_t>(n));
}

absl::string_view Basename(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The driver the device at `sysfs_dir` is bound to, or "no driver".
std::string DriverOf(const std::string& sysfs_dir) {
  absl::StatusOr<std::string> link = ReadLink(sysfs_dir + "/driver");
  if (!link.ok()) return "no driver";
  return absl::StrCat("driver ", Basename(*link));
}

base::UniqueFd OpenRw(const std::string& path) {
  return base::UniqueFd(::open(path.c_str(), O_RDWR | O_CLOEXEC));
}

}  // namespace

VfioOpener::VfioOpener(VfioPaths paths, VfioSyscalls syscalls)
    : paths_(std::move(paths)), sys_(std::move(syscalls)) {}

int VfioOpener::Ioctl(int fd, unsigned long request, void* arg) const {
  int r;
  do {
    r = sys_.ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  return r;
}

absl::StatusOr<int> VfioOpener::IommuGroupOf(
    const std::string& sysfs_device_dir) const {
  const std::string link_path = sysfs_device_dir + "/iommu_group";
  absl::StatusOr<std::string> link = ReadLink(link_path);
  if (!link.ok()) {
    if (!IsDirectory(sysfs_device_dir)) {
      return absl::NotFoundError(absl::StrCat(
          "no such device: ", sysfs_device_dir, " does not exist"));
    }
    if (absl::IsNotFound(link.status())) {
      return absl::FailedPreconditionError(absl::StrCat(
          sysfs_device_dir,
          " has no iommu_group: the IOMMU is off (boot with intel_iommu=on or "
          "amd_iommu=on; no-IOMMU mode is not supported)"));
    }
    return link.status();
  }
  int group = -1;
  if (!absl::SimpleAtoi(Basename(*link), &group) || group < 0) {
    return absl::InternalError(absl::StrCat(link_path, " points to \"", *link,
                                            "\", not an IOMMU group number"));
  }
  return group;
}

absl::StatusOr<std::shared_ptr<VfioContainer>> VfioOpener::NewContainer(
    const std::string& address) const {
  const std::string path = paths_.dev + "/vfio/vfio";
  base::UniqueFd fd = OpenRw(path);
  if (!fd.valid()) {
    const int err = errno;
    absl::Status s = VfioErrnoError(address, absl::StrCat("open ", path),
                                    VfioOp::kOpen, err);
    if (err == ENOENT)
      return AppendToMessage(s, " (is the vfio module loaded?)");
    return s;
  }
  const int version = Ioctl(fd.get(), VFIO_GET_API_VERSION, nullptr);
  if (version < 0) {
    return VfioErrnoError(address, absl::StrCat(path, ": VFIO_GET_API_VERSION"),
                          VfioOp::kOpen, errno);
  }
  if (version != VFIO_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrCat("device ", address, ": ", path, ": VFIO API version ",
                     version, ", migd speaks ", VFIO_API_VERSION));
  }
  const int has_type1v2 = Ioctl(fd.get(), VFIO_CHECK_EXTENSION,
                                reinterpret_cast<void*>(VFIO_TYPE1v2_IOMMU));
  if (has_type1v2 < 0) {
    return VfioErrnoError(address,
                          absl::StrCat(path, ": VFIO_CHECK_EXTENSION(TYPE1v2)"),
                          VfioOp::kOpen, errno);
  }
  if (has_type1v2 == 0) {
    return absl::UnimplementedError(
        absl::StrCat("device ", address, ": ", path,
                     " offers no type1v2 IOMMU (is vfio_iommu_type1 loaded?)"));
  }
  return std::make_shared<VfioContainer>(std::move(fd));
}

absl::StatusOr<std::shared_ptr<VfioGroup>> VfioOpener::GroupLocked(
    int number, const std::string& address, const std::string& sysfs_dir) {
  if (auto it = groups_.find(number); it != groups_.end()) {
    if (std::shared_ptr<VfioGroup> g = it->second.lock()) return g;
  }
  const std::string path = absl::StrCat(paths_.dev, "/vfio/", number);
  base::UniqueFd fd = OpenRw(path);
  if (!fd.valid()) {
    const int err = errno;
    absl::Status s = VfioErrnoError(address, absl::StrCat("open ", path),
                                    VfioOp::kOpen, err);
    if (err == ENOENT) {
      if (Exists(absl::StrCat(paths_.dev, "/vfio/noiommu-", number))) {
        return absl::UnimplementedError(
            absl::StrCat("device ", address, ": IOMMU group ", number,
                         " is a no-IOMMU group: migd needs an IOMMU"));
      }
      return AppendToMessage(
          s, absl::StrCat(" (bind the device to vfio-pci or its variant "
                          "driver; it has ",
                          DriverOf(sysfs_dir), ")"));
    }
    if (err == EBUSY) {
      return AppendToMessage(
          s,
          " (another process holds the group, e.g. the VMM: have it hand "
          "the device fd over with fd_socket=)");
    }
    return s;
  }
  struct vfio_group_status status = {};
  status.argsz = sizeof(status);
  if (Ioctl(fd.get(), VFIO_GROUP_GET_STATUS, &status) < 0) {
    return VfioErrnoError(address,
                          absl::StrCat(path, ": VFIO_GROUP_GET_STATUS"),
                          VfioOp::kOpen, errno);
  }
  if ((status.flags & VFIO_GROUP_FLAGS_VIABLE) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", address, ": IOMMU group ", number,
        " is not viable: every device in ", paths_.sys, "/kernel/iommu_groups/",
        number, "/devices must be bound to a vfio driver or to none"));
  }
  // Join a container this opener already has; a new one only when the kernel
  // will not share (an incompatible IOMMU domain).
  std::shared_ptr<VfioContainer> container;
  std::vector<std::weak_ptr<VfioContainer>> live;
  for (const std::weak_ptr<VfioContainer>& weak : containers_) {
    std::shared_ptr<VfioContainer> c = weak.lock();
    if (c == nullptr) continue;
    live.push_back(c);
    if (container != nullptr) continue;
    int cfd = c->fd();
    if (Ioctl(fd.get(), VFIO_GROUP_SET_CONTAINER, &cfd) == 0) container = c;
  }
  containers_ = std::move(live);
  if (container == nullptr) {
    absl::StatusOr<std::shared_ptr<VfioContainer>> fresh =
        NewContainer(address);
    if (!fresh.ok()) return fresh.status();
    int cfd = (*fresh)->fd();
    if (Ioctl(fd.get(), VFIO_GROUP_SET_CONTAINER, &cfd) < 0) {
      return VfioErrnoError(address,
                            absl::StrCat(path, ": VFIO_GROUP_SET_CONTAINER"),
                            VfioOp::kOpen, errno);
    }
    // The IOMMU driver is chosen once per container, after its first group.
    if (Ioctl(cfd, VFIO_SET_IOMMU,
              reinterpret_cast<void*>(VFIO_TYPE1v2_IOMMU)) < 0) {
      return VfioErrnoError(address, "VFIO_SET_IOMMU(TYPE1v2)", VfioOp::kOpen,
                            errno);
    }
    container = *std::move(fresh);
    containers_.push_back(container);
  }
  auto group = std::make_shared<VfioGroup>(number, std::move(fd), container);
  groups_[number] = group;
  return group;
}

absl::StatusOr<VfioDeviceFd> VfioOpener::OpenInGroup(
    const std::string& sysfs_dir, const std::string& address,
    std::string kernel_name) {
  const bool has_token = absl::StrContains(kernel_name, " vf_token=");
  // Whatever happens, the buffer that carried the token is wiped.
  struct Wipe {
    std::string* s;
    ~Wipe() { explicit_bzero(s->data(), s->size()); }
  } wipe{&kernel_name};

  absl::StatusOr<int> number = IommuGroupOf(sysfs_dir);
  if (!number.ok()) {
    return absl::Status(
        number.status().code(),
        absl::StrCat("device ", address, ": ", number.status().message()));
  }
  absl::MutexLock l(&mu_);
  absl::StatusOr<std::shared_ptr<VfioGroup>> group =
      GroupLocked(*number, address, sysfs_dir);
  if (!group.ok()) return group.status();
  const int fd =
      Ioctl((*group)->fd(), VFIO_GROUP_GET_DEVICE_FD, kernel_name.data());
  if (fd < 0) {
    const int err = errno;
    absl::Status s = VfioErrnoError(
        address, absl::StrCat("VFIO_GROUP_GET_DEVICE_FD in group ", *number),
        VfioOp::kOpen, err);
    if (err == EACCES || err == EPERM) {
      return AppendToMessage(
          s, has_token ? " (the VF token does not match the one set on the PF)"
                       : " (a VF of a PF owned by a userspace driver needs "
                         "vf_token=)");
    }
    if (err == ENODEV || err == ENOENT) {
      return AppendToMessage(s, " (the group has no such device)");
    }
    if (err == EBUSY) return AppendToMessage(s, " (the device is in use)");
    return s;
  }
  VfioDeviceFd out;
  out.fd = base::UniqueFd(fd);
  out.address = address;
  out.keepalive = *std::move(group);
  return out;
}

absl::StatusOr<VfioDeviceFd> VfioOpener::OpenPci(
    absl::string_view bdf, const std::optional<std::string>& vf_token) {
  absl::StatusOr<std::string> address = NormalizePciAddress(bdf);
  if (!address.ok()) return address.status();
  std::string kernel_name = *address;
  if (vf_token.has_value()) {
    absl::StatusOr<std::string> token = NormalizeUuid(*vf_token);
    if (!token.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device ", *address, ": vf_token: ", token.status().message()));
    }
    absl::StrAppend(&kernel_name, " vf_token=", *token);
    explicit_bzero(token->data(), token->size());
  }
  return OpenInGroup(absl::StrCat(paths_.sys, "/bus/pci/devices/", *address),
                     *address, std::move(kernel_name));
}

absl::StatusOr<VfioDeviceFd> VfioOpener::OpenMdev(absl::string_view uuid) {
  absl::StatusOr<std::string> address = NormalizeUuid(uuid);
  if (!address.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("mdev \"", uuid, "\": ", address.status().message()));
  }
  return OpenInGroup(absl::StrCat(paths_.sys, "/bus/mdev/devices/", *address),
                     *address, *address);
}

absl::Status VfioOpener::CdevSupport() const {
  if (!Exists(paths_.dev + "/iommu")) {
    return absl::UnimplementedError(absl::StrCat(
        "this kernel has no iommufd (", paths_.dev,
        "/iommu is missing: CONFIG_IOMMUFD is off, as in Debian's kernels, or "
        "the iommufd module is not loaded); open the device with bdf= or "
        "mdev= (group/container) instead"));
  }
  if (!IsDirectory(paths_.dev + "/vfio/devices")) {
    return absl::UnimplementedError(absl::StrCat(
        "this kernel has no VFIO device cdevs (", paths_.dev,
        "/vfio/devices is missing: CONFIG_VFIO_DEVICE_CDEV is off); open the "
        "device with bdf= or mdev= (group/container) instead"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<VfioIommufd>> VfioOpener::IommufdLocked(
    const std::string& address) {
  if (std::shared_ptr<VfioIommufd> p = iommufd_.lock()) return p;
  const std::string path = paths_.dev + "/iommu";
  base::UniqueFd fd = OpenRw(path);
  if (!fd.valid()) {
    return VfioErrnoError(address, absl::StrCat("open ", path), VfioOp::kOpen,
                          errno);
  }
  kuapi::IommuIoasAlloc alloc = {};
  alloc.size = sizeof(alloc);
  alloc.flags = 0;
  if (Ioctl(fd.get(), kuapi::kIommuIoasAlloc, &alloc) < 0) {
    return VfioErrnoError(address, absl::StrCat(path, ": IOMMU_IOAS_ALLOC"),
                          VfioOp::kOpen, errno);
  }
  auto p = std::make_shared<VfioIommufd>(std::move(fd), alloc.out_ioas_id);
  iommufd_ = p;
  return p;
}

absl::StatusOr<VfioDeviceFd> VfioOpener::OpenCdev(
    absl::string_view path, const std::optional<std::string>& vf_token) {
  if (absl::Status s = ValidateCdevPath(path); !s.ok()) return s;
  const std::string address(path);
  std::array<uint8_t, 16> token{};
  struct Wipe {
    std::array<uint8_t, 16>* t;
    ~Wipe() { explicit_bzero(t->data(), t->size()); }
  } wipe{&token};
  if (vf_token.has_value()) {
    absl::StatusOr<std::array<uint8_t, 16>> bytes = UuidBytes(*vf_token);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device ", address, ": vf_token: ", bytes.status().message()));
    }
    token = *bytes;
    explicit_bzero(bytes->data(), bytes->size());
  }
  if (absl::Status s = CdevSupport(); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("device ", address, ": ", s.message()));
  }
  // "/dev/vfio/devices/vfioN" below paths_.dev.
  const std::string local =
      paths_.dev + std::string(path.substr(std::string("/dev").size()));
  base::UniqueFd fd = OpenRw(local);
  if (!fd.valid()) {
    const int err = errno;
    absl::Status s = VfioErrnoError(address, absl::StrCat("open ", local),
                                    VfioOp::kOpen, err);
    if (err == EBUSY) {
      return AppendToMessage(s, " (another process holds the device)");
    }
    return s;
  }
  absl::MutexLock l(&mu_);
  absl::StatusOr<std::shared_ptr<VfioIommufd>> iommufd = IommufdLocked(address);
  if (!iommufd.ok()) return iommufd.status();

  kuapi::VfioDeviceBindIommufd bind = {};
  bind.argsz =
      vf_token.has_value() ? sizeof(bind) : kuapi::kVfioDeviceBindIommufdSizeV1;
  bind.flags = vf_token.has_value() ? kuapi::kVfioDeviceBindFlagToken : 0;
  bind.iommufd = (*iommufd)->fd();
  bind.token_uuid_ptr =
      vf_token.has_value() ? reinterpret_cast<uintptr_t>(token.data()) : 0;
  if (Ioctl(fd.get(), kuapi::kVfioDeviceBindIommufd, &bind) < 0) {
    const int err = errno;
    absl::Status s =
        VfioErrnoError(address, "VFIO_DEVICE_BIND_IOMMUFD", VfioOp::kOpen, err);
    if (err == EINVAL && vf_token.has_value()) {
      return AppendToMessage(
          s,
          " (this kernel may predate VF tokens on cdevs: use bdf= with "
          "vf_token=)");
    }
    if (err == EACCES || err == EPERM) {
      return AppendToMessage(
          s, vf_token.has_value()
                 ? " (the VF token does not match the one set on the PF)"
                 : " (a VF of a PF owned by a userspace driver needs "
                   "vf_token=)");
    }
    return s;
  }
  kuapi::VfioDeviceAttachIommufdPt attach = {};
  attach.argsz = sizeof(attach);
  attach.flags = 0;
  attach.pt_id = (*iommufd)->ioas_id();
  if (Ioctl(fd.get(), kuapi::kVfioDeviceAttachIommufdPt, &attach) < 0) {
    return VfioErrnoError(address, "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                          VfioOp::kOpen, errno);
  }
  VfioDeviceFd out;
  out.fd = std::move(fd);
  out.address = address;
  out.keepalive = *std::move(iommufd);
  return out;
}

absl::Status SetPciVfToken(int device_fd, const std::string& address,
                           absl::string_view token,
                           const VfioSyscalls& syscalls) {
  absl::StatusOr<std::array<uint8_t, 16>> bytes = UuidBytes(token);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", address, ": the VF token is not a UUID"));
  }
  // struct vfio_device_feature followed by the uuid_t.
  alignas(struct vfio_device_feature)
      std::array<uint8_t, sizeof(struct vfio_device_feature) + 16>
          buf{};
  struct Wipe {
    std::array<uint8_t, sizeof(struct vfio_device_feature) + 16>* b;
    std::array<uint8_t, 16>* t;
    ~Wipe() {
      explicit_bzero(b->data(), b->size());
      explicit_bzero(t->data(), t->size());
    }
  } wipe{&buf, &*bytes};
  struct vfio_device_feature header = {};
  header.argsz = static_cast<uint32_t>(buf.size());
  header.flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
  memcpy(buf.data(), &header, sizeof(header));
  memcpy(buf.data() + sizeof(header), bytes->data(), bytes->size());
  int r;
  do {
    r = syscalls.ioctl(device_fd, VFIO_DEVICE_FEATURE, buf.data());
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    const int err = errno;
    if (err == ENOTTY) {
      return absl::UnimplementedError(absl::StrCat(
          "device ", address,
          ": VFIO_DEVICE_FEATURE(PCI_VF_TOKEN) refused (ENOTTY): it is not "
          "an SR-IOV PF on vfio-pci"));
    }
    return VfioErrnoError(address, "VFIO_DEVICE_FEATURE(SET PCI_VF_TOKEN)",
                          VfioOp::kOpen, err);
  }
  return absl::OkStatus();
}

size_t VfioOpener::open_groups() const {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& [number, weak] : groups_) n += weak.expired() ? 0 : 1;
  return n;
}

size_t VfioOpener::open_containers() const {
  absl::MutexLock l(&mu_);
  size_t n = 0;
  for (const auto& weak : containers_) n += weak.expired() ? 0 : 1;
  return n;
}

}  // namespace migd::device
