// migd/device/vfio_device_test.cc
//
// VfioDevice against a fake kernel: the VFIO core's VFIO_DEVICE_FEATURE
// checks (vfio_ioctl_device_feature and vfio_check_feature in
// drivers/vfio/vfio_main.c: argsz, GET/SET/PROBE rules) in front of a variant
// driver that accepts only single-step arcs and hands out real pipe fds as
// data fds. It pins what migd sends the kernel and what it makes of the
// answers; the real kernel path is exercised in the VM tier.

#include "migd/device/vfio_device.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "migd/device/vfio_errors.h"
#include "migd/vfio/planner.h"
#include "migd/vfio/uapi.h"

namespace migd::device {
namespace {

using vfio::MigState;

constexpr vfio::MigFlags kAll =
    vfio::kMigStopCopy | vfio::kMigP2P | vfio::kMigPreCopy;
constexpr char kAddress[] = "0000:00:04.0";

struct Arc {
  MigState from;
  MigState to;
  bool operator==(const Arc& o) const { return from == o.from && to == o.to; }
};

std::ostream& operator<<(std::ostream& os, const Arc& a) {
  return os << vfio::MigStateName(a.from) << "->" << vfio::MigStateName(a.to);
}

class FakeKernel {
 public:
  explicit FakeKernel(vfio::MigFlags flags) : flags_(flags) {
    device_fd_ = open("/dev/null", O_RDWR | O_CLOEXEC);
  }

  // The device fd to hand to VfioDevice::Create (a real fd, so closing it is
  // real too).
  base::UniqueFd TakeDeviceFd() { return base::UniqueFd(device_fd_); }

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

  // Knobs.
  bool has_migration = true;
  bool has_data_size = true;
  bool has_logging = true;
  bool report_eopnotsupp = false;
  bool omit_data_fd = false;
  uint64_t stop_copy_length = 12345;
  uint64_t driver_log_page_size = 0;  // 0: keep the requested one
  struct Fault {
    Arc arc;
    int err;
    MigState left;
  };
  std::optional<Fault> fault;
  std::vector<uint64_t> dirty_iovas;  // reported by DMA_LOGGING_REPORT
  std::string precopy_data = "precopy-";
  std::string stopcopy_data = "stopcopy";

  // What the fake saw.
  MigState state = MigState::kRunning;
  std::vector<Arc> arcs;
  int feature_calls = 0;
  int resets = 0;
  uint64_t log_page_size = 0;
  std::vector<IovaRange> log_ranges;
  base::UniqueFd load_reader;  // the driver's side of a RESUMING data fd

 private:
  static constexpr uint32_t kGet = VFIO_DEVICE_FEATURE_GET;
  static constexpr uint32_t kSet = VFIO_DEVICE_FEATURE_SET;
  static constexpr uint32_t kProbe = VFIO_DEVICE_FEATURE_PROBE;

  // vfio_check_feature().
  static int CheckFeature(uint32_t flags, size_t argsz, uint32_t supported,
                          size_t minsz) {
    if ((flags & (kGet | kSet)) & ~supported) return -EINVAL;
    if (flags & kProbe) return 0;
    if (!(flags & (kGet | kSet))) return -EINVAL;
    if (argsz < minsz) return -EINVAL;
    return 1;
  }

  int Ioctl(int fd, unsigned long request, void* arg) {
    EXPECT_EQ(fd, device_fd_) << "ioctl on a fd that is not the device";
    if (request == VFIO_DEVICE_RESET) {
      ++resets;
      state = MigState::kRunning;
      save_writer_.reset();
      load_reader.reset();
      return 0;
    }
    if (request != VFIO_DEVICE_FEATURE) return -ENOTTY;
    ++feature_calls;
    auto* feature = static_cast<struct vfio_device_feature*>(arg);
    const size_t minsz = offsetof(struct vfio_device_feature, data);
    if (feature->argsz < minsz) return -EINVAL;
    const uint32_t flags = feature->flags;
    if (flags & ~(VFIO_DEVICE_FEATURE_MASK | kSet | kGet | kProbe)) {
      return -EINVAL;
    }
    if (!(flags & kProbe) && (flags & kSet) && (flags & kGet)) return -EINVAL;
    const size_t argsz = feature->argsz - minsz;
    void* data = feature->data;
    switch (flags & VFIO_DEVICE_FEATURE_MASK) {
      case VFIO_DEVICE_FEATURE_MIGRATION: {
        if (!has_migration) return -ENOTTY;
        struct vfio_device_feature_migration mig = {};
        int r = CheckFeature(flags, argsz, kGet, sizeof(mig));
        if (r != 1) return r;
        mig.flags = flags_;
        std::memcpy(data, &mig, sizeof(mig));
        return 0;
      }
      case VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE: {
        if (!has_migration) return -ENOTTY;  // no mig_ops
        struct vfio_device_feature_mig_state mig;
        int r = CheckFeature(flags, argsz, kSet | kGet, sizeof(mig));
        if (r != 1) return r;
        std::memcpy(&mig, data, sizeof(mig));
        if (flags & kGet) {
          mig.device_state = static_cast<uint32_t>(state);
          mig.data_fd = -1;
          std::memcpy(data, &mig, sizeof(mig));
          return 0;
        }
        return SetState(mig, data);
      }
      case VFIO_DEVICE_FEATURE_MIG_DATA_SIZE: {
        if (!has_data_size) return -ENOTTY;
        struct vfio_device_feature_mig_data_size size = {};
        int r = CheckFeature(flags, argsz, kGet, sizeof(size));
        if (r != 1) return r;
        size.stop_copy_length = stop_copy_length;
        std::memcpy(data, &size, sizeof(size));
        return 0;
      }
      case VFIO_DEVICE_FEATURE_DMA_LOGGING_START: {
        if (!has_logging) return -ENOTTY;
        struct vfio_device_feature_dma_logging_control control;
        int r = CheckFeature(flags, argsz, kSet, sizeof(control));
        if (r != 1) return r;
        std::memcpy(&control, data, sizeof(control));
        if (control.num_ranges == 0) return -EINVAL;
        if (control.num_ranges > 4096 / 16) return -E2BIG;
        if (log_page_size != 0) return -EINVAL;  // already started
        const auto* ranges = reinterpret_cast<
            const struct vfio_device_feature_dma_logging_range*>(
            static_cast<uintptr_t>(control.ranges));
        log_ranges.clear();
        for (uint32_t i = 0; i < control.num_ranges; ++i) {
          if (ranges[i].iova % control.page_size ||
              ranges[i].length % control.page_size) {
            return -EINVAL;
          }
          log_ranges.push_back({ranges[i].iova, ranges[i].length});
        }
        if (driver_log_page_size != 0) control.page_size = driver_log_page_size;
        log_page_size = control.page_size;
        std::memcpy(data, &control, sizeof(control));
        return 0;
      }
      case VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP: {
        if (!has_logging) return -ENOTTY;
        int r = CheckFeature(flags, argsz, kSet, 0);
        if (r != 1) return r;
        log_page_size = 0;
        return 0;
      }
      case VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT: {
        if (!has_logging) return -ENOTTY;
        struct vfio_device_feature_dma_logging_report report;
        int r = CheckFeature(flags, argsz, kGet, sizeof(report));
        if (r != 1) return r;
        std::memcpy(&report, data, sizeof(report));
        if (report.page_size < 4096 ||
            (report.page_size & (report.page_size - 1))) {
          return -EINVAL;
        }
        if (report_eopnotsupp) return -EOPNOTSUPP;  // no IOVA-bitmap helpers
        if (log_page_size == 0) return -EINVAL;
        auto* bitmap =
            reinterpret_cast<uint64_t*>(static_cast<uintptr_t>(report.bitmap));
        for (uint64_t iova : dirty_iovas) {
          if (iova < report.iova || iova >= report.iova + report.length) {
            continue;
          }
          const uint64_t bit = (iova - report.iova) / report.page_size;
          bitmap[bit / 64] |= uint64_t{1} << (bit % 64);  // only ever sets
        }
        dirty_iovas.clear();
        return 0;
      }
      default:
        return -ENOTTY;
    }
  }

  int SetState(struct vfio_device_feature_mig_state mig, void* data) {
    std::optional<MigState> to = vfio::MigStateFromRaw(mig.device_state);
    if (!to.has_value() || !vfio::StateSupported(flags_, *to) ||
        *to == MigState::kError) {
      return -EINVAL;
    }
    const Arc arc{state, *to};
    arcs.push_back(arc);
    // A variant driver sees single arcs only (the core walks far targets);
    // migd must never rely on the core's walk.
    absl::StatusOr<MigState> next = vfio::NextState(flags_, state, *to);
    EXPECT_TRUE(next.ok() && *next == *to)
        << "migd asked for " << arc << ", not a single arc";
    if (!next.ok() || *next != *to) return -EINVAL;
    mig.data_fd = -1;
    if (fault.has_value() && fault->arc == arc) {
      state = fault->left;
      std::memcpy(data, &mig, sizeof(mig));
      return -fault->err;
    }
    const bool was_saving = vfio::IsSavingState(state);
    if (*to == MigState::kResuming) {
      int fds[2];
      EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
      load_reader.reset(fds[0]);
      mig.data_fd = fds[1];
    } else if (vfio::IsSavingState(*to) && !was_saving) {
      int fds[2];
      EXPECT_EQ(pipe2(fds, O_CLOEXEC), 0);
      save_writer_.reset(fds[1]);
      mig.data_fd = fds[0];
      WriteSave(*to == MigState::kStopCopy ? stopcopy_data : precopy_data);
    } else if (was_saving && *to == MigState::kStopCopy) {
      WriteSave(stopcopy_data);
    }
    if (*to == MigState::kStopCopy) save_writer_.reset();  // EOF after it
    if (!vfio::IsSavingState(*to)) save_writer_.reset();
    if (state == MigState::kResuming) load_reader.reset();
    if (omit_data_fd && mig.data_fd >= 0) {
      close(mig.data_fd);
      mig.data_fd = -1;
    }
    state = *to;
    std::memcpy(data, &mig, sizeof(mig));
    return 0;
  }

  void WriteSave(const std::string& s) {
    ASSERT_EQ(write(save_writer_.get(), s.data(), s.size()),
              static_cast<ssize_t>(s.size()));
  }

  const vfio::MigFlags flags_;
  int device_fd_ = -1;
  base::UniqueFd save_writer_;
};

std::unique_ptr<VfioDevice> MakeDevice(FakeKernel& kernel) {
  absl::StatusOr<std::unique_ptr<VfioDevice>> d = VfioDevice::Create(
      "edu0", kAddress, kernel.TakeDeviceFd(), nullptr, kernel.Syscalls());
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : nullptr;
}

std::string ReadAll(DataStream& stream) {
  std::string out;
  std::vector<uint8_t> buf(7);
  for (;;) {
    absl::StatusOr<ReadResult> n = stream.Read(absl::MakeSpan(buf));
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || n->kind != ReadResult::Kind::kData) return out;
    out.append(buf.begin(), buf.begin() + n->bytes);
  }
}

std::string ReadExactly(DataStream& stream, size_t len) {
  std::string out;
  std::vector<uint8_t> buf(len);
  while (out.size() < len) {
    absl::StatusOr<ReadResult> n =
        stream.Read(absl::MakeSpan(buf.data(), len - out.size()));
    EXPECT_TRUE(n.ok()) << n.status();
    if (!n.ok() || n->kind != ReadResult::Kind::kData) break;
    out.append(buf.begin(), buf.begin() + n->bytes);
  }
  return out;
}

TEST(VfioDevice, CreateReadsTheMigrationFlags) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->name(), "edu0");
  EXPECT_EQ(d->kind(), "vfio");
  EXPECT_EQ(d->address(), kAddress);
  absl::StatusOr<vfio::MigFlags> flags = d->GetFlags();
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(*flags, kAll);
}

TEST(VfioDevice, ADeviceWithoutMigrationOpensWithFlagsZeroAndRefusesToMigrate) {
  // vfio-pci on a device without a variant driver: the MIGRATION feature
  // GET fails with ENOTTY (so would MIG_DEVICE_STATE).
  FakeKernel kernel(kAll);
  kernel.has_migration = false;
  absl::StatusOr<std::unique_ptr<VfioDevice>> d =
      VfioDevice::Create("nvf0", "0000:03:00.1", kernel.TakeDeviceFd(), nullptr,
                         kernel.Syscalls(), "vfio-pci");
  ASSERT_TRUE(d.ok()) << d.status();
  absl::StatusOr<vfio::MigFlags> flags = (*d)->GetFlags();
  ASSERT_TRUE(flags.ok()) << flags.status();
  EXPECT_EQ(*flags, 0u);
  const std::string want =
      "device nvf0 (0000:03:00.1): its driver vfio-pci offers no VFIO "
      "migration (VFIO_DEVICE_FEATURE_MIGRATION: ENOTTY); bind a variant "
      "driver that does";
  absl::Status why = (*d)->CheckMigratable();
  EXPECT_EQ(why.code(), absl::StatusCode::kFailedPrecondition) << why;
  EXPECT_EQ(why.message(), want);
  // The migration uAPI is refused with the same words, no ioctl issued.
  const int calls = kernel.feature_calls;
  absl::StatusOr<MigState> state = (*d)->GetState();
  EXPECT_EQ(state.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(state.status().message(), want);
  absl::StatusOr<std::unique_ptr<DataStream>> set =
      (*d)->SetState(MigState::kStop);
  EXPECT_EQ(set.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(set.status().message(), want);
  EXPECT_EQ((*d)->GetStopCopySize().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(kernel.feature_calls, calls);
  EXPECT_TRUE(kernel.arcs.empty());
}

TEST(VfioDevice, AMigratableDeviceIsMigratable) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(d->CheckMigratable().ok());
}

TEST(VfioDevice, WithoutTheDriverNameTheMessageStillSaysWhy) {
  FakeKernel kernel(kAll);
  kernel.has_migration = false;
  absl::StatusOr<std::unique_ptr<VfioDevice>> d = VfioDevice::Create(
      "edu0", kAddress, kernel.TakeDeviceFd(), nullptr, kernel.Syscalls());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(absl::StrContains((*d)->CheckMigratable().message(),
                                "its driver offers no VFIO migration"))
      << (*d)->CheckMigratable();
}

TEST(VfioDevice, OtherErrorsOfTheMigrationFeatureStillFailTheOpen) {
  FakeKernel kernel(kAll);
  absl::StatusOr<std::unique_ptr<VfioDevice>> d =
      VfioDevice::Create("edu0", kAddress, kernel.TakeDeviceFd(), nullptr, [] {
        VfioSyscalls s = VfioSyscalls::Real();
        s.ioctl = [](int, unsigned long, void*) {
          errno = EIO;
          return -1;
        };
        return s;
      }());
  ASSERT_FALSE(d.ok());
  EXPECT_TRUE(absl::StrContains(d.status().message(), "GET MIGRATION"))
      << d.status();
}

TEST(VfioDevice, ErrorsNameTheAddressAloneWhenItIsTheName) {
  FakeKernel kernel(kAll);
  kernel.state = MigState::kError;
  absl::StatusOr<std::unique_ptr<VfioDevice>> d = VfioDevice::Create(
      kAddress, kAddress, kernel.TakeDeviceFd(), nullptr, kernel.Syscalls());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(
      absl::StartsWith((*d)->SetState(MigState::kStop).status().message(),
                       "device 0000:00:04.0: SET_STATE ERROR -> STOP"))
      << (*d)->SetState(MigState::kStop).status();
}

TEST(VfioDevice, GetStateAsksTheKernel) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  kernel.state = MigState::kRunningP2P;
  absl::StatusOr<MigState> s = d->GetState();
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, MigState::kRunningP2P);
}

TEST(VfioDevice, RunningToStopCopyWalksOneArcAtATimeAndOpensASaveStream) {
  FakeKernel kernel(vfio::kMigStopCopy | vfio::kMigP2P);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  auto stream = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(stream.ok()) << stream.status();
  ASSERT_NE(*stream, nullptr);
  EXPECT_EQ(kernel.arcs,
            (std::vector<Arc>{{MigState::kRunning, MigState::kRunningP2P},
                              {MigState::kRunningP2P, MigState::kStop},
                              {MigState::kStop, MigState::kStopCopy}}));
  EXPECT_EQ(ReadAll(**stream), "stopcopy");
}

TEST(VfioDevice, WithoutP2PTheWalkSkipsRunningP2P) {
  FakeKernel kernel(vfio::kMigStopCopy);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  ASSERT_TRUE(d->SetState(MigState::kStopCopy).ok());
  EXPECT_EQ(kernel.arcs,
            (std::vector<Arc>{{MigState::kRunning, MigState::kStop},
                              {MigState::kStop, MigState::kStopCopy}}));
}

TEST(VfioDevice, PreCopyToStopCopyReturnsNoNewStreamAndTheOldOneGoesOn) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  auto pre = d->SetState(MigState::kPreCopy);
  ASSERT_TRUE(pre.ok()) << pre.status();
  ASSERT_NE(*pre, nullptr);
  EXPECT_EQ(ReadExactly(**pre, 3), "pre");

  auto stop_copy = d->SetState(MigState::kStopCopy);
  ASSERT_TRUE(stop_copy.ok()) << stop_copy.status();
  EXPECT_EQ(*stop_copy, nullptr);
  EXPECT_EQ(kernel.arcs,
            (std::vector<Arc>{{MigState::kRunning, MigState::kPreCopy},
                              {MigState::kPreCopy, MigState::kPreCopyP2P},
                              {MigState::kPreCopyP2P, MigState::kStopCopy}}));
  EXPECT_EQ(ReadAll(**pre), "copy-stopcopy");
}

TEST(VfioDevice, ResumingOpensALoadStreamThatEndsAtStop) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  auto load = d->SetState(MigState::kResuming);
  ASSERT_TRUE(load.ok()) << load.status();
  ASSERT_NE(*load, nullptr);
  EXPECT_EQ(kernel.arcs.back(), (Arc{MigState::kStop, MigState::kResuming}));
  const std::string state = "loaded";
  absl::StatusOr<size_t> n = (*load)->Write(absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(state.data()), state.size()));
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, state.size());
  char got[16] = {};
  ASSERT_EQ(read(kernel.load_reader.get(), got, sizeof(got)),
            static_cast<ssize_t>(state.size()));
  EXPECT_EQ(std::string(got), state);

  auto stop = d->SetState(MigState::kStop);
  ASSERT_TRUE(stop.ok()) << stop.status();
  EXPECT_EQ(*stop, nullptr);
  EXPECT_EQ(
      (*load)
          ->Write(absl::MakeConstSpan(
              reinterpret_cast<const uint8_t*>(state.data()), state.size()))
          .status()
          .code(),
      absl::StatusCode::kFailedPrecondition);
}

TEST(VfioDevice, AFailedArcNamesTheArcTheWalkAndWhereTheDeviceWasLeft) {
  FakeKernel kernel(vfio::kMigStopCopy | vfio::kMigP2P);
  kernel.fault = FakeKernel::Fault{
      {MigState::kRunningP2P, MigState::kStop}, EIO, MigState::kError};
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  auto stream = d->SetState(MigState::kStopCopy);
  ASSERT_FALSE(stream.ok());
  EXPECT_EQ(stream.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(stream.status().message(),
            "device edu0 (0000:00:04.0): SET_STATE RUNNING_P2P -> STOP: "
            "Input/output error (errno 5); on the way RUNNING -> STOP_COPY; "
            "device left in ERROR");
  EXPECT_EQ(ErrnoOf(stream.status()), EIO);
  absl::StatusOr<MigState> state = d->GetState();
  ASSERT_TRUE(state.ok());
  EXPECT_EQ(*state, MigState::kError);
  // No arc past the failure.
  EXPECT_EQ(kernel.arcs.size(), 2u);
}

TEST(VfioDevice, ErrorIsLeftOnlyByReset) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  kernel.state = MigState::kError;
  const size_t arcs_before = kernel.arcs.size();
  EXPECT_EQ(d->SetState(MigState::kRunning).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(kernel.arcs.size(), arcs_before);
  ASSERT_TRUE(d->Reset().ok());
  EXPECT_EQ(kernel.resets, 1);
  EXPECT_EQ(*d->GetState(), MigState::kRunning);
}

TEST(VfioDevice, RejectedLoadAtResumingToStopKeepsTheErrnoAndTheState) {
  FakeKernel kernel(kAll);
  kernel.fault = FakeKernel::Fault{
      {MigState::kResuming, MigState::kStop}, EINVAL, MigState::kResuming};
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  auto load = d->SetState(MigState::kResuming);
  ASSERT_TRUE(load.ok()) << load.status();
  auto stop = d->SetState(MigState::kStop);
  EXPECT_EQ(stop.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(stop.status().message(),
                                "SET_STATE RESUMING -> STOP: Invalid argument "
                                "(errno 22); device left in RESUMING"))
      << stop.status();
  // Aborting RESUMING needs a reset, which ends the load session.
  ASSERT_TRUE(d->Reset().ok());
  const uint8_t byte = 0;
  EXPECT_EQ((*load)->Write(absl::MakeConstSpan(&byte, 1)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VfioDevice, ARefusedTargetIssuesNoSet) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  ASSERT_TRUE(d->SetState(MigState::kStopCopy).ok());
  const size_t arcs_before = kernel.arcs.size();
  auto back = d->SetState(MigState::kPreCopy);
  EXPECT_EQ(back.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StartsWith(back.status().message(),
                               "device edu0 (0000:00:04.0): SET_STATE "
                               "STOP_COPY -> PRE_COPY: "))
      << back.status();
  EXPECT_EQ(kernel.arcs.size(), arcs_before);
}

TEST(VfioDevice, LeavingTheSavingStatesEndsTheStream) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  auto pre = d->SetState(MigState::kPreCopy);
  ASSERT_TRUE(pre.ok() && *pre != nullptr);
  ASSERT_TRUE(d->SetState(MigState::kRunning).ok());
  std::vector<uint8_t> buf(4);
  absl::StatusOr<ReadResult> n = (*pre)->Read(absl::MakeSpan(buf));
  EXPECT_EQ(n.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(n.status().message(), "PRE_COPY -> RUNNING"))
      << n.status();
}

TEST(VfioDevice, DestroyingTheDeviceEndsItsStream) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  auto pre = d->SetState(MigState::kPreCopy);
  ASSERT_TRUE(pre.ok() && *pre != nullptr);
  d.reset();
  std::vector<uint8_t> buf(4);
  EXPECT_EQ((*pre)->Read(absl::MakeSpan(buf)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VfioDevice, AnArcThatMustOpenASessionButReturnsNoFdIsInternal) {
  FakeKernel kernel(kAll);
  kernel.omit_data_fd = true;
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  auto s = d->SetState(MigState::kStopCopy);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(s.status().message(), "returned no data fd"))
      << s.status();
}

TEST(VfioDevice, StopCopySizeComesFromMigDataSize) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  absl::StatusOr<uint64_t> size = d->GetStopCopySize();
  ASSERT_TRUE(size.ok()) << size.status();
  EXPECT_EQ(*size, 12345u);
}

TEST(VfioDevice, StopCopySizeOnAKernelWithoutMigDataSizeIsUnimplemented) {
  FakeKernel kernel(kAll);
  kernel.has_data_size = false;
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  EXPECT_EQ(d->GetStopCopySize().status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST(VfioDevice, DmaLoggingPassesRangesAndReportsDirtyPages) {
  FakeKernel kernel(kAll);
  kernel.driver_log_page_size = 8192;
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  ASSERT_TRUE(
      d->StartDmaLogging(4096, {{0x100000, 0x10000}, {0, 0x4000}}).ok());
  EXPECT_EQ(kernel.log_ranges.size(), 2u);
  EXPECT_EQ(kernel.log_ranges[0].iova, 0x100000u);
  EXPECT_EQ(kernel.log_ranges[0].length, 0x10000u);
  EXPECT_EQ(d->dma_logging_page_size(), 8192u);

  kernel.dirty_iovas = {0x100000, 0x103000, 0x10f000};
  // The kernel only sets bits: whatever the caller's bitmap held is cleared.
  std::vector<uint64_t> bitmap(4, ~uint64_t{0});
  ASSERT_TRUE(d->ReportDmaLogging(0x100000, 0x10000, 4096, &bitmap).ok());
  ASSERT_EQ(bitmap.size(), 1u);
  EXPECT_EQ(bitmap[0],
            (uint64_t{1} << 0) | (uint64_t{1} << 3) | (uint64_t{1} << 15));
  ASSERT_TRUE(d->StopDmaLogging().ok());
  EXPECT_EQ(d->dma_logging_page_size(), 0u);
}

TEST(VfioDevice, ReportEopnotsuppTellsTheCallerToFallBackToAllDirty) {
  FakeKernel kernel(kAll);
  kernel.report_eopnotsupp = true;
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  ASSERT_TRUE(d->StartDmaLogging(4096, {{0, 0x10000}}).ok());
  std::vector<uint64_t> bitmap;
  absl::Status s = d->ReportDmaLogging(0, 0x10000, 4096, &bitmap);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(absl::StrContains(
      s.message(),
      "DMA logging reports are not supported by this kernel/driver"))
      << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "0000:00:04.0")) << s;
}

TEST(VfioDevice, DmaLoggingOnADriverWithoutItIsUnimplemented) {
  FakeKernel kernel(kAll);
  kernel.has_logging = false;
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  EXPECT_EQ(d->StartDmaLogging(4096, {{0, 0x1000}}).code(),
            absl::StatusCode::kUnimplemented);
  std::vector<uint64_t> bitmap;
  EXPECT_EQ(d->ReportDmaLogging(0, 0x1000, 4096, &bitmap).code(),
            absl::StatusCode::kUnimplemented);
  absl::StatusOr<bool> probe = d->ProbeDmaLogging();
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_FALSE(*probe);
}

TEST(VfioDevice, ProbeFindsDmaLogging) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  absl::StatusOr<bool> probe = d->ProbeDmaLogging();
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_TRUE(*probe);
}

TEST(VfioDevice, StartingTwiceIsFailedPrecondition) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  ASSERT_TRUE(d->StartDmaLogging(4096, {{0, 0x1000}}).ok());
  EXPECT_EQ(d->StartDmaLogging(4096, {{0, 0x1000}}).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(VfioDevice, BadDmaArgumentsAreRefusedBeforeAnyIoctl) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  const int calls = kernel.feature_calls;
  EXPECT_EQ(d->StartDmaLogging(3000, {{0, 0x1000}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d->StartDmaLogging(4096, {}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d->StartDmaLogging(4096, {{0x800, 0x1000}}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d->StartDmaLogging(4096, {{0, 0x2000}, {0x1000, 0x1000}}).code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<uint64_t> bitmap;
  EXPECT_EQ(d->ReportDmaLogging(0, 0, 4096, &bitmap).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d->ReportDmaLogging(~uint64_t{0}, 2, 4096, &bitmap).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(d->ReportDmaLogging(0, 4096, 4096, nullptr).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kernel.feature_calls, calls);
}

TEST(VfioDevice, StateDigestIsUnimplemented) {
  FakeKernel kernel(kAll);
  std::unique_ptr<VfioDevice> d = MakeDevice(kernel);
  EXPECT_EQ(d->StateDigest().status().code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace migd::device
