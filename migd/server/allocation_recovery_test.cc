// migd/server/allocation_recovery_test.cc
//
// An agent that dies (as under kill -9) in a job whose destination device
// it allocated by class, and its next start on the same state dir. Each run
// of the agent is the parts Agent::Start wires: the journal (a real SQLite
// file) and its observer, the host stores, a real HostServiceImpl on a fake
// sysfs tree, and, in the first run, the MigrationServiceImpl that prepares
// the job. The fake kernel (fake_kernel.h) outlives the runs, as a host's
// kernel outlives its agent. A death cuts, at once, everything the run
// would still write to the journal or do to the host, then lets its objects
// go: nothing of the job's end reaches the record or the allocation. A
// start replays Agent::Start's order: the stores, AllocationRecovery's
// Reopen, journal::Recover, Decide, then Release through the HostService.
// As in prepare_by_class_test, opening the allocated VFIO device is the one
// step a fake tree cannot answer: the open hands back an emulated device of
// that name, in the state a test wants recovery to find.

#include "migd/server/allocation_recovery.h"

#include <stdlib.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "migd/device/emulated_device.h"
#include "migd/host/allocation_store.h"
#include "migd/host/binding_store.h"
#include "migd/host/fake_kernel.h"
#include "migd/host/mdev.h"
#include "migd/journal/journal.h"
#include "migd/journal/journal_observer.h"
#include "migd/journal/recovery.h"
#include "migd/migration/device_registry.h"
#include "migd/migration/job_table.h"
#include "migd/server/host_service.h"
#include "migd/server/migration_service.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::server {
namespace {

using host::testing::FakeGroupUsage;
using host::testing::FakeKernel;
using host::testing::FakePciDevice;
using vfio::MigState;

constexpr char kVf[] = "0000:5e:01.1";   // 15b3:101e on mlx5_core, group 11
constexpr char kVf2[] = "0000:5e:01.2";  // the same, group 12
constexpr char kMdevParent[] = "/sys/devices/virtual/mbochs/mbochs";
constexpr char kDomain[] = "6f1c0e4e-1111-4222-8333-444455556666";

// Forwards to the journal's observer until the run dies; from then on
// nothing reaches the journal, as after a kill -9.
class Severable final : public migration::JobObserver {
 public:
  explicit Severable(std::shared_ptr<migration::JobObserver> next)
      : next_(std::move(next)) {}

  void Cut() {
    absl::MutexLock lock(&mu_);
    next_ = nullptr;
  }

  absl::Status BeforeAct(const v1::Migration& record, uint64_t revision,
                         absl::string_view what) override {
    absl::MutexLock lock(&mu_);
    return next_ == nullptr ? absl::OkStatus()
                            : next_->BeforeAct(record, revision, what);
  }
  void AfterChange(const v1::Migration& record, uint64_t revision,
                   absl::string_view message) override {
    absl::MutexLock lock(&mu_);
    if (next_ != nullptr) next_->AfterChange(record, revision, message);
  }

 private:
  absl::Mutex mu_;
  std::shared_ptr<migration::JobObserver> next_ ABSL_GUARDED_BY(mu_);
};

using OpenFn = AllocationRecovery::OpenFn;

// An emulated device `name` in `state` (walked there through the arcs);
// `fail_arc`: an arc it fails (into ERROR).
std::unique_ptr<device::Device> Emulated(
    const std::string& name, MigState state = MigState::kRunning,
    std::optional<device::MigArc> fail_arc = std::nullopt) {
  device::EmulatedDeviceConfig c;
  c.name = name;
  c.state_size = 4096;
  c.fail_arc = fail_arc;
  absl::StatusOr<std::unique_ptr<device::EmulatedDevice>> d =
      device::EmulatedDevice::Create(c);
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return nullptr;
  if (state != MigState::kRunning) {
    absl::StatusOr<std::unique_ptr<device::DataStream>> s =
        (*d)->SetState(state);
    EXPECT_TRUE(s.ok()) << s.status();
  }
  return *std::move(d);
}

// Opens every device fresh (RUNNING), noting what it was asked to open.
OpenFn Fresh(std::vector<std::string>* opened) {
  return [opened](const std::string& name, const std::string& source)
             -> absl::StatusOr<std::unique_ptr<device::Device>> {
    opened->push_back(source);
    return Emulated(name);
  };
}

bool HasNotice(const v1::Migration& m, absl::string_view text) {
  for (const std::string& n : m.notices()) {
    if (absl::StrContains(n, text)) return true;
  }
  return false;
}

class AllocationRecoveryTest : public ::testing::Test {
 protected:
  // One run of the agent. Members go in reverse: the jobs before the
  // devices they use, the observer before its journal.
  struct Run {
    std::unique_ptr<journal::Journal> journal;
    std::shared_ptr<journal::JournalObserver> observer;
    std::shared_ptr<Severable> severable;
    std::unique_ptr<host::BindingStore> bindings;
    std::unique_ptr<host::AllocationStore> allocations;
    std::unique_ptr<HostServiceImpl> host;
    // False once the run died: its host changes stop.
    std::shared_ptr<std::atomic<bool>> alive =
        std::make_shared<std::atomic<bool>>(true);
    migration::DeviceRegistry registry;
    migration::JobTable jobs;
    std::unique_ptr<MigrationServiceImpl> service;
  };

  void SetUp() override {
    kernel_.AddDriver({"pci", "vfio-pci", "vfio_pci", {}, "vfio_pci_core"});
    kernel_.AddDriver({"pci", "mlx5_core", "mlx5_core", {"15b3:101e"}, ""});
    kernel_.WriteFile("/lib/modules/test/modules.alias",
                      "alias vfio_pci:v*d*sv*sd*bc*sc*i* vfio_pci\n");
    for (const auto& [bdf, group] : {std::pair{kVf, 11}, {kVf2, 12}}) {
      FakePciDevice vf;
      vf.bdf = bdf;
      vf.group = group;
      vf.driver = "mlx5_core";
      kernel_.AddPciDevice(vf);
    }
    kernel_.AddMdevParent(kMdevParent, "mbochs",
                          {{"mbochs-small", "small", 2, "vfio-pci"}});
    const char* base = getenv("TEST_TMPDIR");
    dir_ = absl::StrCat(base != nullptr ? base : "/tmp", "/allocrecXXXXXX");
    ASSERT_NE(mkdtemp(dir_.data()), nullptr);
  }

  void TearDown() override {
    run_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // What every run opens: the journal, its observer, the host stores and
  // the HostService over them.
  std::unique_ptr<Run> Open() {
    auto run = std::make_unique<Run>();
    absl::StatusOr<std::unique_ptr<journal::Journal>> j =
        journal::Journal::Open(dir_);
    EXPECT_TRUE(j.ok()) << j.status();
    if (!j.ok()) return nullptr;
    run->journal = *std::move(j);
    run->observer =
        std::make_shared<journal::JournalObserver>(run->journal.get());
    run->severable = std::make_shared<Severable>(run->observer);
    run->bindings = *host::BindingStore::Open(dir_);
    run->allocations = *host::AllocationStore::Open(dir_);
    HostServiceOptions h;
    h.sysfs_root = kernel_.root();
    h.writer = &kernel_;
    h.modules = &kernel_;
    h.usage = &usage_;
    h.bindings = run->bindings.get();
    h.allocations = run->allocations.get();
    h.devices = &run->registry;
    h.kernel_release = "test";
    run->host = std::make_unique<HostServiceImpl>(std::move(h));
    return run;
  }

  // The first run: serves PrepareIncoming, allocating through its
  // HostService and opening what it allocated with `open`.
  void FirstRun(OpenFn open = nullptr) {
    run_ = Open();
    ASSERT_NE(run_, nullptr);
    Run* run = run_.get();
    MigrationServiceOptions o;
    o.observers = {run->severable};
    o.allocate =
        [run](const std::string& job, const std::string& key,
              const v1::DeviceClass& c) -> absl::StatusOr<v1::AllocatedDevice> {
      v1::AllocateDevicesRequest req;
      req.set_owner(job);
      v1::DeviceRequest* d = req.add_devices();
      d->set_key(key);
      *d->mutable_device_class() = c;
      absl::StatusOr<v1::AllocateDevicesResponse> r = run->host->Allocate(req);
      if (!r.ok()) return r.status();
      return r->devices(0);
    };
    o.release_allocations = [run](const std::string& job) -> absl::Status {
      if (!*run->alive) return absl::AbortedError("the agent died first");
      return run->host->Release(job).status();
    };
    o.open_vfio = open != nullptr ? open : Fresh(&first_opened_);
    run->service = std::make_unique<MigrationServiceImpl>(
        &run->registry, &run->jobs, std::move(o));
  }

  // PrepareIncoming of `job` from source device src0 to a device of `c`.
  grpc::Status Prepare(const std::string& job, const v1::DeviceClass& c,
                       v1::PrepareIncomingResponse* response = nullptr) {
    v1::PrepareIncomingRequest req;
    req.set_job_id(job);
    v1::DevicePair* p = req.add_devices();
    p->set_source_device("src0");
    *p->mutable_destination_class() = c;
    grpc::ServerContext ctx;
    v1::PrepareIncomingResponse ignored;
    return run_->service->PrepareIncoming(
        &ctx, &req, response != nullptr ? response : &ignored);
  }

  // The run dies: from here on nothing it does reaches the journal or the
  // host (what it had written stays), then its objects go.
  void Die() {
    run_->observer->Flush();
    run_->severable->Cut();
    *run_->alive = false;
    run_.reset();
  }

  // The next start on the same state dir, as Agent::Start orders it; the
  // allocated devices open with `open`.
  void Start(const OpenFn& open) {
    run_ = Open();
    ASSERT_NE(run_, nullptr);
    std::optional<AllocationRecovery> allocated;
    std::map<std::string, std::string> unavailable;
    if (std::vector<host::Allocation> held = run_->allocations->List();
        !held.empty()) {
      absl::StatusOr<std::vector<v1::Migration>> records =
          run_->journal->LoadAll();
      ASSERT_TRUE(records.ok()) << records.status();
      allocated.emplace(*records, held);
      unavailable = allocated->Reopen(open, run_->registry);
    }
    absl::StatusOr<journal::RecoveryReport> report =
        journal::Recover(*run_->journal, run_->registry, run_->jobs,
                         {run_->severable}, unavailable);
    ASSERT_TRUE(report.ok()) << report.status();
    if (allocated.has_value()) {
      allocated->Decide(run_->jobs, run_->registry);
      HostServiceImpl* host = run_->host.get();
      allocated->Release([host](const std::string& owner) {
        return host->Release(owner).status();
      });
    }
  }

  // Rewrites the journal's record of `job` (between runs) to what a crash
  // at a later point of the job would have left.
  void Rewrite(const std::string& job,
               const std::function<void(v1::Migration&)>& change) {
    absl::StatusOr<std::unique_ptr<journal::Journal>> j =
        journal::Journal::Open(dir_);
    ASSERT_TRUE(j.ok()) << j.status();
    absl::StatusOr<std::vector<v1::Migration>> all = (*j)->LoadAll();
    ASSERT_TRUE(all.ok()) << all.status();
    for (v1::Migration& m : *all) {
      if (m.job_id() != job) continue;
      change(m);
      ASSERT_TRUE((*j)->Record(m).ok());
      return;
    }
    FAIL() << "no job " << job << " in the journal";
  }

  v1::Migration Record(const std::string& job) {
    absl::StatusOr<std::shared_ptr<migration::Job>> j = run_->jobs.Find(job);
    EXPECT_TRUE(j.ok()) << j.status();
    return j.ok() ? (*j)->Snapshot() : v1::Migration();
  }

  // host-allocations as on disk: "owner key host-name".
  std::vector<std::string> Allocations() {
    absl::StatusOr<std::unique_ptr<host::AllocationStore>> store =
        host::AllocationStore::Open(dir_);
    EXPECT_TRUE(store.ok()) << store.status();
    std::vector<std::string> out;
    if (!store.ok()) return out;
    for (const host::Allocation& a : (*store)->List()) {
      out.push_back(absl::StrCat(a.owner, " ", a.key, " ", a.host_name()));
    }
    return out;
  }

  std::string DriverOf(const std::string& bdf) {
    absl::StatusOr<std::string> d =
        kernel_.sysfs().LinkName("/sys/bus/pci/devices/" + bdf + "/driver");
    return d.ok() ? *d : "(none)";
  }

  std::vector<std::string> Instances() {
    std::vector<std::string> out;
    absl::StatusOr<std::vector<host::MdevInstance>> made =
        host::ListMdevInstances(kernel_.sysfs(), "mbochs");
    EXPECT_TRUE(made.ok()) << made.status();
    if (!made.ok()) return out;
    for (const host::MdevInstance& m : *made) out.push_back(m.uuid);
    return out;
  }

  FakeKernel kernel_;
  FakeGroupUsage usage_;
  std::string dir_;
  std::unique_ptr<Run> run_;
  std::vector<std::string> first_opened_;
};

v1::DeviceClass Ids(const std::string& ids) {
  v1::DeviceClass c;
  c.set_pci_ids(ids);
  return c;
}

v1::DeviceClass Mdev(const std::string& type) {
  v1::DeviceClass c;
  c.set_mdev_type(type);
  return c;
}

TEST_F(AllocationRecoveryTest, ADeadJobsDeviceIsReleasedAtTheNextStart) {
  FirstRun();
  v1::PrepareIncomingResponse prepared;
  ASSERT_TRUE(Prepare("j1", Ids("15b3:101e"), &prepared).ok());
  ASSERT_EQ(prepared.migration().devices(0).device(), "alloc-j1-0");
  Die();
  // Nothing ended the job: the device is still allocated and bound.
  EXPECT_EQ(Allocations(), std::vector<std::string>{"j1 src0 0000:5e:01.1"});
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");

  std::vector<std::string> opened;
  Start(Fresh(&opened));
  // Opened again under the job's name, so that recovery reset it.
  EXPECT_EQ(opened, std::vector<std::string>{"bdf=0000:5e:01.1"});
  const v1::Migration m = Record("j1");
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_EQ(m.failure().reason(), v1::ERROR_REASON_AGENT_RESTARTED);
  EXPECT_TRUE(HasNotice(m, "its devices were reset")) << m.ShortDebugString();
  EXPECT_FALSE(HasNotice(m, "not configured")) << m.ShortDebugString();
  // Released as the job's end would have released it: closed, removed,
  // back on its driver, no record left.
  EXPECT_EQ(run_->registry.Find("alloc-j1-0"), nullptr);
  EXPECT_TRUE(Allocations().empty());
  EXPECT_EQ(DriverOf(kVf), "mlx5_core");
  EXPECT_TRUE(run_->bindings->List().empty());
}

TEST_F(AllocationRecoveryTest, ADeadJobsMdevInstanceIsRemovedAtTheNextStart) {
  FirstRun();
  v1::PrepareIncomingResponse prepared;
  ASSERT_TRUE(Prepare("j1", Mdev("mbochs-small"), &prepared).ok());
  const std::string uuid = prepared.migration().devices(0).host_address();
  Die();
  EXPECT_EQ(Instances(), std::vector<std::string>{uuid});

  std::vector<std::string> opened;
  Start(Fresh(&opened));
  EXPECT_EQ(opened, std::vector<std::string>{"mdev=" + uuid});
  EXPECT_EQ(Record("j1").phase(), v1::PHASE_FAILED);
  EXPECT_TRUE(Instances().empty());
  EXPECT_TRUE(Allocations().empty());
}

// What cannot be examined is not released, and the job says why its device
// was left alone; a later start, which cannot tell what the first one
// examined, keeps it too: the operator releases it.
TEST_F(AllocationRecoveryTest, ADeviceThatDoesNotOpenAgainKeepsItsAllocation) {
  FirstRun();
  ASSERT_TRUE(Prepare("j1", Ids("15b3:101e")).ok());
  Die();

  Start([](const std::string&, const std::string&)
            -> absl::StatusOr<std::unique_ptr<device::Device>> {
    return absl::NotFoundError("no /dev/vfio/11");
  });
  const v1::Migration m = Record("j1");
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_TRUE(HasNotice(m,
                        "device alloc-j1-0 is not on this agent (allocated "
                        "device 0000:5e:01.1 could not be opened again: no "
                        "/dev/vfio/11; its allocation is kept)"))
      << m.ShortDebugString();
  EXPECT_EQ(Allocations(), std::vector<std::string>{"j1 src0 0000:5e:01.1"});
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");

  run_.reset();
  std::vector<std::string> opened;
  Start(Fresh(&opened));
  EXPECT_TRUE(opened.empty());
  EXPECT_EQ(Allocations(), std::vector<std::string>{"j1 src0 0000:5e:01.1"});
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
}

// Recovery leaves a destination device found in STOP there (it may have
// loaded the VM's state): it stays open and allocated, as a device that
// loaded does when a job ends at run time.
TEST_F(AllocationRecoveryTest, ADeviceFoundInStopKeepsItsAllocation) {
  FirstRun();
  ASSERT_TRUE(Prepare("j1", Ids("15b3:101e")).ok());
  Die();

  Start([](const std::string& name, const std::string&)
            -> absl::StatusOr<std::unique_ptr<device::Device>> {
    return Emulated(name, MigState::kStop);
  });
  const v1::Migration m = Record("j1");
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_TRUE(HasNotice(m, "found in STOP")) << m.ShortDebugString();
  device::Device* d = run_->registry.Find("alloc-j1-0");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->GetState().value(), MigState::kStop);
  EXPECT_EQ(Allocations(), std::vector<std::string>{"j1 src0 0000:5e:01.1"});
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
}

// Died after COMMIT with the device loaded: recovery resumes it and the job
// succeeds; the device runs the VM, open and allocated.
TEST_F(AllocationRecoveryTest, AJobThatSucceedsAtRestartKeepsItsDevice) {
  FirstRun();
  ASSERT_TRUE(Prepare("j1", Ids("15b3:101e")).ok());
  Die();
  Rewrite("j1", [](v1::Migration& m) { m.set_phase(v1::PHASE_LOADING); });

  Start([](const std::string& name, const std::string&)
            -> absl::StatusOr<std::unique_ptr<device::Device>> {
    return Emulated(name, MigState::kStop);
  });
  EXPECT_EQ(Record("j1").phase(), v1::PHASE_SUCCEEDED);
  device::Device* d = run_->registry.Find("alloc-j1-0");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->GetState().value(), MigState::kRunning);
  EXPECT_EQ(Allocations(), std::vector<std::string>{"j1 src0 0000:5e:01.1"});
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
}

// Died after COMMIT, the device not found loaded: the job is in doubt and
// keeps its device open and held for ResolveMigration.
TEST_F(AllocationRecoveryTest, AJobInDoubtAtRestartKeepsItsDeviceHeld) {
  FirstRun();
  ASSERT_TRUE(Prepare("j1", Ids("15b3:101e")).ok());
  Die();
  Rewrite("j1", [](v1::Migration& m) { m.set_phase(v1::PHASE_LOADING); });

  std::vector<std::string> opened;
  Start(Fresh(&opened));
  EXPECT_EQ(Record("j1").phase(), v1::PHASE_IN_DOUBT);
  ASSERT_NE(run_->registry.Find("alloc-j1-0"), nullptr);
  EXPECT_EQ(run_->registry.Owner("alloc-j1-0"), "j1");
  EXPECT_EQ(Allocations(), std::vector<std::string>{"j1 src0 0000:5e:01.1"});
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
}

// A job that ended at run time, on record, whose release the agent died
// before: released at the next start when none of its devices loaded the
// VM's state, kept when one did.
TEST_F(AllocationRecoveryTest, AJobThatEndedBeforeItsReleaseIsSettledAtStart) {
  // j1's device fails its way to RESUMING: the prepare fails, the job ends
  // FAILED on record, and the run dies before the release that follows.
  FirstRun([](const std::string& name, const std::string&)
               -> absl::StatusOr<std::unique_ptr<device::Device>> {
    if (name != "alloc-j1-0") return Emulated(name);
    return Emulated(name, MigState::kRunning,
                    device::MigArc{MigState::kStop, MigState::kResuming});
  });
  *run_->alive = false;
  ASSERT_FALSE(Prepare("j1", Ids("15b3:101e")).ok());
  // j2 ended after its device loaded (RESUMING -> STOP), which the job
  // stood down: a run keeps such a device allocated.
  ASSERT_TRUE(Prepare("j2", Ids("15b3:101e")).ok());
  Die();
  Rewrite("j2", [](v1::Migration& m) {
    m.set_phase(v1::PHASE_FAILED);
    m.mutable_failure()->set_reason(v1::ERROR_REASON_STATE_REJECTED);
    for (v1::DeviceState s :
         {v1::DEVICE_STATE_RESUMING, v1::DEVICE_STATE_STOP}) {
      v1::StateChange* c = m.add_state_changes();
      c->set_device("alloc-j2-0");
      c->set_state(s);
    }
  });
  ASSERT_EQ(Allocations(), (std::vector<std::string>{"j1 src0 0000:5e:01.1",
                                                     "j2 src0 0000:5e:01.2"}));

  std::vector<std::string> opened;
  Start(Fresh(&opened));
  EXPECT_TRUE(opened.empty());  // ended jobs are not recovered
  EXPECT_EQ(Record("j1").phase(), v1::PHASE_FAILED);
  EXPECT_EQ(Allocations(), std::vector<std::string>{"j2 src0 0000:5e:01.2"});
  EXPECT_EQ(DriverOf(kVf), "mlx5_core");
  EXPECT_EQ(DriverOf(kVf2), "vfio-pci");
}

// A libvirt domain's allocation (AllocateDevices) is no job's: a start
// leaves it as it is while it releases a dead job's.
TEST_F(AllocationRecoveryTest, ADomainsAllocationIsNeverTouched) {
  FirstRun();
  v1::AllocateDevicesRequest req;
  req.set_owner(kDomain);
  v1::DeviceRequest* d = req.add_devices();
  d->set_key("0000:3b:02.0");
  d->mutable_device_class()->set_pci_ids("15b3:101e");
  ASSERT_TRUE(run_->host->Allocate(req).ok());
  ASSERT_TRUE(Prepare("j1", Ids("15b3:101e")).ok());
  Die();

  std::vector<std::string> opened;
  Start(Fresh(&opened));
  EXPECT_EQ(opened, std::vector<std::string>{"bdf=0000:5e:01.2"});
  EXPECT_EQ(Allocations(), std::vector<std::string>{absl::StrCat(
                               kDomain, " 0000:3b:02.0 0000:5e:01.1")});
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
  EXPECT_EQ(DriverOf(kVf2), "mlx5_core");
}

// An owner that is a job id but holds an allocation the job's record does
// not name (an owner chosen by someone else too) is not taken for the job:
// none of its allocations is touched.
TEST_F(AllocationRecoveryTest, AnOwnerHoldingMoreThanItsJobIsLeftAlone) {
  FirstRun();
  ASSERT_TRUE(Prepare("j1", Ids("15b3:101e")).ok());
  v1::AllocateDevicesRequest req;
  req.set_owner("j1");
  v1::DeviceRequest* d = req.add_devices();
  d->set_key("other");
  d->mutable_device_class()->set_pci_ids("15b3:101e");
  ASSERT_TRUE(run_->host->Allocate(req).ok());
  Die();

  std::vector<std::string> opened;
  Start(Fresh(&opened));
  EXPECT_TRUE(opened.empty());
  const v1::Migration m = Record("j1");
  EXPECT_EQ(m.phase(), v1::PHASE_FAILED);
  EXPECT_TRUE(HasNotice(m, "also holds allocations the job does not name"))
      << m.ShortDebugString();
  EXPECT_EQ(Allocations(), (std::vector<std::string>{"j1 src0 0000:5e:01.1",
                                                     "j1 other 0000:5e:01.2"}));
  EXPECT_EQ(DriverOf(kVf), "vfio-pci");
  EXPECT_EQ(DriverOf(kVf2), "vfio-pci");
}

}  // namespace
}  // namespace migd::server
