// migd/device/vfio_device.cc

#include "migd/device/vfio_device.h"

#include <errno.h>
#include <linux/vfio.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "migd/device/vfio_errors.h"
#include "migd/vfio/planner.h"

namespace migd::device {
namespace {

using vfio::MigState;
using vfio::MigStateName;

// VFIO_DEVICE_RESET's EAGAIN (pci_try_reset_function could not lock the
// device) is worth a few retries.
constexpr int kResetAttempts = 20;
constexpr absl::Duration kResetRetryDelay = absl::Milliseconds(50);

bool IsPowerOfTwo(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// True when a device moving from `a` to `b` keeps its data session: both in
// the saving group (PRE_COPY, PRE_COPY_P2P, STOP_COPY), or both RESUMING.
bool SameSession(MigState a, MigState b) {
  return (vfio::IsSavingState(a) && vfio::IsSavingState(b)) ||
         (a == MigState::kResuming && b == MigState::kResuming);
}

// True when the single arc `from` -> `to` starts a session (returns a data
// fd): into the saving group from outside it, or into RESUMING.
bool OpensSession(MigState from, MigState to) {
  return to == MigState::kResuming ||
         (vfio::IsSavingState(to) && !vfio::IsSavingState(from));
}

// "edu0 (0000:00:04.0)", or the address alone when it is the name.
std::string Who(const std::string& name, const std::string& address) {
  if (name == address || name.empty()) return address;
  return absl::StrCat(name, " (", address, ")");
}

size_t MaxDmaRanges() {
  const long page = sysconf(_SC_PAGESIZE);
  return static_cast<size_t>(page > 0 ? page : 4096) /
         sizeof(struct vfio_device_feature_dma_logging_range);
}

}  // namespace

absl::StatusOr<std::unique_ptr<VfioDevice>> VfioDevice::Create(
    std::string name, std::string address, base::UniqueFd fd,
    std::shared_ptr<const void> keepalive, VfioSyscalls syscalls,
    std::string driver) {
  const std::string who = Who(name, address);
  if (!fd.valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", who, ": no device fd"));
  }
  struct vfio_device_feature_migration mig = {};
  // Not a member yet: issue the one GET by hand.
  std::vector<uint64_t> buf(
      (sizeof(struct vfio_device_feature) + sizeof(mig) + 7) / 8, 0);
  auto* feature = reinterpret_cast<struct vfio_device_feature*>(buf.data());
  int r;
  do {
    feature->argsz = sizeof(struct vfio_device_feature) + sizeof(mig);
    feature->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION;
    r = syscalls.ioctl(fd.get(), VFIO_DEVICE_FEATURE, feature);
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    const int err = errno;
    if (err == ENOTTY || err == EOPNOTSUPP) {
      // No migration in this driver: the device is still the agent's (to
      // list, and to refuse migrations of, saying why).
      absl::Status why = absl::FailedPreconditionError(absl::StrCat(
          "device ", who, ": its driver ",
          driver.empty() ? "" : absl::StrCat(driver, " "),
          "offers no VFIO migration (VFIO_DEVICE_FEATURE_MIGRATION: ",
          err == ENOTTY ? "ENOTTY" : "EOPNOTSUPP",
          "); bind a variant driver that does"));
      return std::unique_ptr<VfioDevice>(new VfioDevice(
          std::move(name), std::move(address), std::move(fd),
          std::move(keepalive), std::move(syscalls), 0, std::move(why)));
    }
    return VfioErrnoError(who, "GET MIGRATION", VfioOp::kGetFeature, err);
  }
  std::memcpy(&mig, feature->data, sizeof(mig));
  if ((mig.flags & vfio::kMigStopCopy) == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", who, ": migration flags ", vfio::MigFlagsName(mig.flags),
        " lack STOP_COPY, which the uAPI requires"));
  }
  return std::unique_ptr<VfioDevice>(new VfioDevice(
      std::move(name), std::move(address), std::move(fd), std::move(keepalive),
      std::move(syscalls), mig.flags, absl::OkStatus()));
}

VfioDevice::VfioDevice(std::string name, std::string address, base::UniqueFd fd,
                       std::shared_ptr<const void> keepalive,
                       VfioSyscalls syscalls, vfio::MigFlags flags,
                       absl::Status no_migration)
    : name_(std::move(name)),
      address_(std::move(address)),
      who_(Who(name_, address_)),
      keepalive_(std::move(keepalive)),
      fd_(std::move(fd)),
      sys_(std::move(syscalls)),
      flags_(flags),
      no_migration_(std::move(no_migration)),
      sessions_(std::make_shared<VfioSessionTracker>()) {}

VfioDevice::~VfioDevice() { sessions_->End("the device was closed"); }

int VfioDevice::Feature(uint32_t flags, void* data, size_t size) {
  // The payload follows the 8-byte header; keep it 8-byte aligned for the
  // kernel's __aligned_u64 fields.
  std::vector<uint64_t> buf((sizeof(struct vfio_device_feature) + size + 7) / 8,
                            0);
  auto* feature = reinterpret_cast<struct vfio_device_feature*>(buf.data());
  feature->argsz =
      static_cast<__u32>(sizeof(struct vfio_device_feature) + size);
  feature->flags = flags;
  if (size > 0) std::memcpy(feature->data, data, size);
  const int r = sys_.ioctl(fd_.get(), VFIO_DEVICE_FEATURE, feature);
  const int err = errno;
  if (size > 0) std::memcpy(data, feature->data, size);
  errno = err;
  return r;
}

int VfioDevice::FeatureNoEintr(uint32_t flags, void* data, size_t size) {
  int r;
  do {
    r = Feature(flags, data, size);
  } while (r != 0 && errno == EINTR);
  return r;
}

absl::StatusOr<vfio::MigFlags> VfioDevice::GetFlags() { return flags_; }

absl::StatusOr<MigState> VfioDevice::GetState() {
  absl::MutexLock l(&mu_);
  return GetStateLocked();
}

absl::StatusOr<MigState> VfioDevice::GetStateLocked() {
  // Without migration there is no migration state to read (the kernel
  // would answer ENOTTY).
  if (!no_migration_.ok()) return no_migration_;
  struct vfio_device_feature_mig_state mig = {};
  mig.data_fd = -1;
  if (FeatureNoEintr(
          VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &mig,
          sizeof(mig)) != 0) {
    return VfioErrnoError(who_, "GET_STATE", VfioOp::kGetFeature, errno);
  }
  std::optional<MigState> state = vfio::MigStateFromRaw(mig.device_state);
  if (!state.has_value()) {
    return absl::InternalError(absl::StrCat("device ", who_,
                                            ": GET_STATE: the kernel reports "
                                            "state ",
                                            mig.device_state,
                                            ", which migd does not know"));
  }
  return *state;
}

absl::StatusOr<base::UniqueFd> VfioDevice::SetArcLocked(MigState from,
                                                        MigState to) {
  for (;;) {
    struct vfio_device_feature_mig_state mig = {};
    mig.device_state = static_cast<__u32>(to);
    mig.data_fd = -1;
    if (Feature(VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                &mig, sizeof(mig)) == 0) {
      return base::UniqueFd(mig.data_fd);
    }
    const int err = errno;
    if (err == EINTR) {
      // Interrupted before the driver acted: retry only if nothing moved.
      absl::StatusOr<MigState> now = GetStateLocked();
      if (now.ok() && *now == from) continue;
    }
    return VfioArcError(who_, from, to, err);
  }
}

absl::StatusOr<std::unique_ptr<DataStream>> VfioDevice::SetState(
    MigState target) {
  absl::MutexLock l(&mu_);
  if (!no_migration_.ok()) return no_migration_;
  if (!vfio::MigStateFromRaw(static_cast<uint32_t>(target)).has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat("device ", who_, ": no such migration state ",
                     static_cast<uint32_t>(target)));
  }
  absl::StatusOr<MigState> start = GetStateLocked();
  if (!start.ok()) return start.status();
  absl::StatusOr<std::vector<MigState>> arcs =
      vfio::PlanArcs(flags_, *start, target);
  if (!arcs.ok()) {
    return absl::Status(
        arcs.status().code(),
        absl::StrCat("device ", who_, ": SET_STATE ", MigStateName(*start),
                     " -> ", MigStateName(target), ": ",
                     arcs.status().message()));
  }
  const std::string walk =
      arcs->size() > 1 ? absl::StrCat("; on the way ", MigStateName(*start),
                                      " -> ", MigStateName(target))
                       : "";
  MigState cur = *start;
  std::unique_ptr<DataStream> stream;
  for (MigState next : *arcs) {
    absl::StatusOr<base::UniqueFd> fd = SetArcLocked(cur, next);
    if (!fd.ok()) {
      absl::StatusOr<MigState> now = GetStateLocked();
      std::string where;
      if (now.ok()) {
        where = absl::StrCat("; device left in ", MigStateName(*now));
        if (!SameSession(cur, *now)) {
          sessions_->End(absl::StrCat("the device is in ", MigStateName(*now),
                                      " after a failed arc"));
        }
      } else {
        where = absl::StrCat("; device state unknown (", now.status().message(),
                             ")");
        sessions_->End("the device state is unknown after a failed arc");
      }
      return AppendToMessage(fd.status(), absl::StrCat(walk, where));
    }
    if (fd->valid()) {
      // A new session: the old one (if any) is over.
      const uint64_t id = sessions_->Begin();
      stream = std::make_unique<VfioDataStream>(
          who_,
          next == MigState::kResuming ? VfioDataStream::Direction::kLoad
                                      : VfioDataStream::Direction::kSave,
          *std::move(fd), sessions_, id, sys_);
    } else if (OpensSession(cur, next)) {
      sessions_->End(absl::StrCat("SET_STATE ", MigStateName(cur), " -> ",
                                  MigStateName(next), " returned no data fd"));
      return absl::InternalError(absl::StrCat(
          "device ", who_, ": SET_STATE ", MigStateName(cur), " -> ",
          MigStateName(next),
          " succeeded but returned no data fd, though the arc starts a "
          "session (driver bug); device left in ",
          MigStateName(next)));
    } else if (!SameSession(cur, next)) {
      sessions_->End(absl::StrCat("the device moved ", MigStateName(cur),
                                  " -> ", MigStateName(next)));
    }
    cur = next;
  }
  return stream;
}

absl::StatusOr<uint64_t> VfioDevice::GetStopCopySize() {
  if (!no_migration_.ok()) return no_migration_;
  absl::MutexLock l(&mu_);
  struct vfio_device_feature_mig_data_size size = {};
  if (FeatureNoEintr(
          VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &size,
          sizeof(size)) != 0) {
    const int err = errno;
    absl::Status s =
        VfioErrnoError(who_, "GET MIG_DATA_SIZE", VfioOp::kGetFeature, err);
    if (err == ENOTTY) {
      return AppendToMessage(s, " (kernels before 6.2 have no MIG_DATA_SIZE)");
    }
    return s;
  }
  return static_cast<uint64_t>(size.stop_copy_length);
}

absl::Status VfioDevice::StartDmaLogging(uint64_t page_size,
                                         const std::vector<IovaRange>& ranges) {
  const std::string who = absl::StrCat("device ", who_, ": ");
  if (page_size < 4096 || !IsPowerOfTwo(page_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, "DMA logging page size ", page_size,
                     " is not a power of two >= 4096"));
  }
  const size_t max_ranges = MaxDmaRanges();
  if (ranges.empty() || ranges.size() > max_ranges) {
    return absl::InvalidArgumentError(absl::StrCat(who, "DMA logging needs 1..",
                                                   max_ranges, " ranges, got ",
                                                   ranges.size()));
  }
  std::vector<struct vfio_device_feature_dma_logging_range> kranges;
  kranges.reserve(ranges.size());
  for (const IovaRange& r : ranges) {
    if (r.length == 0 || r.iova % page_size != 0 || r.length % page_size != 0 ||
        r.length > std::numeric_limits<uint64_t>::max() - r.iova) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%sDMA logging range [0x%x, +0x%x) is empty, overflows or is not "
          "aligned to the %d-byte page",
          who, r.iova, r.length, page_size));
    }
    struct vfio_device_feature_dma_logging_range kr = {};
    kr.iova = r.iova;
    kr.length = r.length;
    kranges.push_back(kr);
  }
  std::vector<struct vfio_device_feature_dma_logging_range> sorted = kranges;
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.iova < b.iova; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].iova < sorted[i - 1].iova + sorted[i - 1].length) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%sDMA logging ranges [0x%x, +0x%x) and [0x%x, +0x%x) overlap", who,
          static_cast<uint64_t>(sorted[i - 1].iova),
          static_cast<uint64_t>(sorted[i - 1].length),
          static_cast<uint64_t>(sorted[i].iova),
          static_cast<uint64_t>(sorted[i].length)));
    }
  }
  struct vfio_device_feature_dma_logging_control control = {};
  control.page_size = page_size;
  control.num_ranges = static_cast<__u32>(kranges.size());
  control.ranges = reinterpret_cast<uintptr_t>(kranges.data());
  absl::MutexLock l(&mu_);
  if (FeatureNoEintr(
          VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
          &control, sizeof(control)) != 0) {
    const int err = errno;
    absl::Status s =
        VfioErrnoError(who_, "DMA_LOGGING_START", VfioOp::kDmaLogging, err);
    if (err == ENOTTY || err == EOPNOTSUPP) {
      return AppendToMessage(s, " (this device or driver has no DMA logging)");
    }
    if (err == EINVAL) {
      return AppendToMessage(s,
                             " (already started, or ranges the driver "
                             "refuses)");
    }
    return s;
  }
  // The driver reports the tracking page size it chose.
  dma_page_size_ = control.page_size;
  return absl::OkStatus();
}

absl::Status VfioDevice::ReportDmaLogging(uint64_t iova, uint64_t length,
                                          uint64_t page_size,
                                          std::vector<uint64_t>* bitmap) {
  const std::string who = absl::StrCat("device ", who_, ": ");
  if (bitmap == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(who, "null bitmap"));
  }
  if (page_size < 4096 || !IsPowerOfTwo(page_size)) {
    return absl::InvalidArgumentError(
        absl::StrCat(who, "DMA report page size ", page_size,
                     " is not a power of two >= 4096"));
  }
  if (length == 0 || length > std::numeric_limits<uint64_t>::max() - iova) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%sDMA report range [0x%x, +0x%x) is empty or overflows", who, iova,
        length));
  }
  const uint64_t nbits = (length - 1) / page_size + 1;
  // The kernel only sets bits: start from a clean bitmap.
  bitmap->assign((nbits + 63) / 64, 0);
  struct vfio_device_feature_dma_logging_report report = {};
  report.iova = iova;
  report.length = length;
  report.page_size = page_size;
  report.bitmap = reinterpret_cast<uintptr_t>(bitmap->data());
  absl::MutexLock l(&mu_);
  // EINTR: bits already reported stay set in the bitmap, so a retry loses
  // nothing.
  if (FeatureNoEintr(
          VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT,
          &report, sizeof(report)) != 0) {
    const int err = errno;
    if (err == ENOTTY) {
      return AppendToMessage(
          VfioErrnoError(who_, "DMA_LOGGING_REPORT", VfioOp::kDmaLoggingReport,
                         err),
          " (this device or driver has no DMA logging): treat the range as "
          "all dirty");
    }
    return VfioDmaReportError(who_, err);
  }
  return absl::OkStatus();
}

absl::Status VfioDevice::StopDmaLogging() {
  absl::MutexLock l(&mu_);
  if (FeatureNoEintr(
          VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP,
          nullptr, 0) != 0) {
    return VfioErrnoError(who_, "DMA_LOGGING_STOP", VfioOp::kDmaLogging, errno);
  }
  dma_page_size_ = 0;
  return absl::OkStatus();
}

absl::StatusOr<bool> VfioDevice::ProbeDmaLogging() {
  absl::MutexLock l(&mu_);
  if (FeatureNoEintr(VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET |
                         VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                     nullptr, 0) == 0) {
    return true;
  }
  const int err = errno;
  if (err == ENOTTY || err == EOPNOTSUPP) return false;
  return VfioErrnoError(who_, "PROBE DMA_LOGGING_START", VfioOp::kDmaLogging,
                        err);
}

uint64_t VfioDevice::dma_logging_page_size() const {
  absl::MutexLock l(&mu_);
  return dma_page_size_;
}

absl::Status VfioDevice::Reset() {
  absl::MutexLock l(&mu_);
  int err = 0;
  for (int attempt = 0; attempt < kResetAttempts; ++attempt) {
    if (sys_.ioctl(fd_.get(), VFIO_DEVICE_RESET, nullptr) == 0) {
      sessions_->End("the device was reset");
      return absl::OkStatus();
    }
    err = errno;
    if (err == EINTR) continue;
    if (err != EAGAIN) break;
    absl::SleepFor(kResetRetryDelay);
  }
  // A failed reset may still have torn the session down: ask.
  absl::StatusOr<MigState> now = GetStateLocked();
  if (!now.ok() ||
      (!vfio::IsSavingState(*now) && *now != MigState::kResuming)) {
    sessions_->End("a reset was attempted");
  }
  absl::Status s =
      VfioErrnoError(who_, "VFIO_DEVICE_RESET", VfioOp::kReset, err);
  if (err == EINVAL) {
    s = AppendToMessage(s, " (vfio-pci found no reset method for the device)");
  }
  return AppendToMessage(
      s, now.ok() ? absl::StrCat("; device in ", MigStateName(*now))
                  : std::string("; device state unknown"));
}

absl::StatusOr<std::string> VfioDevice::StateDigest() {
  return absl::UnimplementedError(absl::StrCat(
      "device ", who_, ": a kernel VFIO device's state is opaque: no digest"));
}

}  // namespace migd::device
