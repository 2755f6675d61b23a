// migd/server/host_service.cc

#include "migd/server/host_service.h"

#include <string.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/host/mdev.h"
#include "migd/host/modalias.h"
#include "migd/host/names.h"
#include "migd/host/sriov.h"
#include "migd/security/identity.h"
#include "migd/transfer/grpc_status.h"

namespace migd::server {
namespace {

using host::Bus;
using transfer::ToGrpcStatus;

constexpr absl::string_view kNone = "(none)";

std::string PciDir(absl::string_view bdf) {
  return absl::StrCat("/sys/bus/pci/devices/", bdf);
}

absl::Status Prefixed(absl::string_view prefix, const absl::Status& s) {
  return base::Annotate(s, prefix);
}

// The reason of a status from the host library, for a call that made
// `writes` sysfs writes before it failed: from the first write on, the
// kernel refused a step (and the library rolled back): DEVICE_ERROR, with
// the code the errno gave (kInternal when the rollback failed too). Before
// any write, by the code: a malformed name, something missing
// (`not_found`), the host not as the request needs, a name in use.
absl::Status HostError(
    const absl::Status& s, int writes,
    v1::ErrorReason not_found = v1::ERROR_REASON_DEVICE_NOT_FOUND) {
  if (s.ok() || base::HasReason(s)) return s;
  if (writes > 0) return base::WithReason(s, v1::ERROR_REASON_DEVICE_ERROR);
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
      return base::WithReason(s, v1::ERROR_REASON_INVALID_REQUEST);
    case absl::StatusCode::kNotFound:
      return base::WithReason(s, not_found);
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kResourceExhausted:
      return base::WithReason(s, v1::ERROR_REASON_HOST_PRECONDITION);
    case absl::StatusCode::kAlreadyExists:
      return base::WithReason(s, v1::ERROR_REASON_DEVICE_BUSY);
    default:
      return base::WithReason(s, v1::ERROR_REASON_INTERNAL);
  }
}

absl::Status HostPrecondition(absl::StatusCode code, absl::string_view msg) {
  return base::Error(code, v1::ERROR_REASON_HOST_PRECONDITION, msg);
}

// A hex id as sysfs writes it ("0x1ac3"); 0 when it cannot be read.
uint32_t ReadHex(const host::Sysfs& sysfs, const std::string& path) {
  absl::StatusOr<std::string> text = sysfs.Read(path);
  if (!text.ok()) return 0;
  absl::string_view digits = *text;
  absl::ConsumePrefix(&digits, "0x");
  uint32_t value = 0;
  return absl::SimpleHexAtoi(digits, &value) ? value : 0;
}

std::string Show(const std::optional<std::string>& name) {
  return name.has_value() ? *name : std::string(kNone);
}

std::string DescribeBinding(const host::Binding& b) {
  return absl::StrCat(Show(b.driver), " with driver_override ",
                      Show(b.override));
}

void FillMdevType(const host::MdevType& t, v1::MdevType* out) {
  out->set_id(t.id);
  out->set_name(t.name);
  out->set_available_instances(
      static_cast<uint32_t>(std::max(0, t.available_instances)));
  out->set_device_api(t.device_api);
}

void FillMdev(const host::MdevInstance& m, v1::Mdev* out) {
  out->set_uuid(m.uuid);
  out->set_parent(m.parent);
  out->set_type(m.type);
}

void FillAllocated(const host::Allocation& a, v1::AllocatedDevice* out) {
  out->set_key(a.key);
  out->set_owner(a.owner);
  if (a.kind == host::Allocation::Kind::kPci) {
    out->set_address(a.address);
    out->set_driver(a.driver);
  } else {
    out->set_mdev_uuid(a.mdev_uuid);
    out->set_mdev_parent(a.mdev_parent);
    out->set_mdev_type(a.mdev_type);
  }
}

// The reason of a status from the allocator: the service's own (its bind,
// unbind, mdev operations) when it has one, else by the allocator's cause
// and the code.
absl::Status AllocationError(const absl::Status& s) {
  if (s.ok() || base::HasReason(s)) return s;
  const std::string cause = host::AllocatorCause(s);
  if (cause == "busy") {
    return base::WithReason(s, v1::ERROR_REASON_DEVICE_BUSY);
  }
  if (cause == "store") return base::WithReason(s, v1::ERROR_REASON_JOURNAL);
  return HostError(s, 0);
}

// The caller's identity, for the log of a change.
std::string Caller(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  std::string who = auth == nullptr ? "" : security::PeerIdentity(*auth);
  return who.empty() ? "a caller without identity" : who;
}

// Logs a change's result with its caller and returns the gRPC status.
template <typename T, typename Out>
grpc::Status Answer(grpc::ServerContext* context, absl::string_view what,
                    absl::StatusOr<T> result, Out* response) {
  if (!result.ok()) {
    base::LogWarning("host: ", what, " by ", Caller(*context),
                     " refused or failed: ", result.status().message());
    return ToGrpcStatus(result.status(), context);
  }
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace

// Per-key exclusion: Acquire waits until none of its keys is held by
// another caller, then holds them all at once (so two callers of several
// keys cannot deadlock).
class HostServiceImpl::Locks {
 public:
  class Held {
   public:
    Held(Locks* locks, std::vector<std::string> keys)
        : locks_(locks), keys_(std::move(keys)) {}
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    ~Held() { locks_->Release(keys_); }

   private:
    Locks* locks_;
    std::vector<std::string> keys_;
  };

  std::unique_ptr<Held> Acquire(std::vector<std::string> keys) {
    absl::MutexLock lock(&mu_);
    const auto any_held = [&] {
      for (const std::string& k : keys) {
        if (held_.count(k) > 0) return true;
      }
      return false;
    };
    while (any_held()) released_.Wait(&mu_);
    for (const std::string& k : keys) held_.insert(k);
    return std::make_unique<Held>(this, std::move(keys));
  }

 private:
  void Release(const std::vector<std::string>& keys) {
    absl::MutexLock lock(&mu_);
    for (const std::string& k : keys) held_.erase(k);
    released_.SignalAll();
  }

  absl::Mutex mu_;
  absl::CondVar released_;
  std::set<std::string> held_ ABSL_GUARDED_BY(mu_);
};

// Counts the writes one call makes (every call has its own), passing them
// to the service's writer.
class HostServiceImpl::CountingWriter final : public host::SysfsWriter {
 public:
  explicit CountingWriter(host::SysfsWriter* next) : next_(next) {}
  absl::Status Write(const std::string& path,
                     absl::string_view value) override {
    ++writes_;
    return next_->Write(path, value);
  }
  int writes() const { return writes_; }

 private:
  host::SysfsWriter* next_;
  int writes_ = 0;
};

// The allocator's hands: this service's own operations, so that an
// allocation binds, unbinds and makes mdevs with the same checks, records
// and per-device locks as BindDevice and the others.
class HostServiceImpl::Actions final : public host::HostActions {
 public:
  explicit Actions(HostServiceImpl* service) : service_(service) {}

  absl::StatusOr<Bound> BindPci(const std::string& bdf,
                                const std::string& module) override {
    absl::StatusOr<v1::HostDevice> out = service_->DoBind(bdf, module);
    if (!out.ok()) return out.status();
    // DoBind says "nothing to do" when the device was on the driver.
    return Bound{out->driver(),
                 !absl::StartsWith(out->outcome(), "nothing to do")};
  }

  absl::Status UnbindPci(const std::string& bdf) override {
    if (service_->options_.bindings == nullptr ||
        !service_->options_.bindings->Find(Bus::kPci, bdf).has_value()) {
      return absl::OkStatus();  // migd did not move it: nothing to undo
    }
    return service_->DoUnbind(bdf, false).status();
  }

  absl::Status CreateMdev(const std::string& parent, const std::string& type,
                          const std::string& uuid) override {
    return service_->CreateMdevInstance(parent, type, uuid).status();
  }

  absl::Status RemoveMdev(const std::string& uuid) override {
    absl::Status s = service_->DoRemoveMdev(uuid).status();
    return absl::IsNotFound(s) ? absl::OkStatus() : s;
  }

 private:
  HostServiceImpl* const service_;
};

HostServiceImpl::HostServiceImpl(HostServiceOptions options)
    : options_(std::move(options)),
      locks_(std::make_unique<Locks>()),
      actions_(std::make_unique<Actions>(this)) {
  if (options_.allocations != nullptr && options_.usage != nullptr) {
    host::AllocatorOptions a;
    a.claimed_by = [this](const std::string& host_name) {
      if (options_.devices == nullptr) return std::string();
      auto it = options_.device_names.find(host_name);
      return it == options_.device_names.end()
                 ? std::string()
                 : options_.devices->Owner(it->second);
    };
    a.bindings = options_.bindings;
    a.kernel_release = options_.kernel_release;
    a.module_preference = options_.module_preference;
    allocator_ = std::make_unique<host::Allocator>(
        host::Sysfs(options_.sysfs_root), *options_.usage, *actions_,
        *options_.allocations, std::move(a));
  }
}

HostServiceImpl::~HostServiceImpl() = default;

absl::Status HostServiceImpl::RefuseAllocated(const std::string& host_name,
                                              const std::string& what) const {
  if (allocator_ == nullptr) return absl::OkStatus();
  std::optional<host::Allocation> a = allocator_->Holding(host_name);
  if (!a.has_value()) return absl::OkStatus();
  return base::Error(
      absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_BUSY,
      absl::StrCat(what, " refused: it is allocated to ", a->owner, " (key ",
                   a->key, "); release it first (migctl host release ",
                   a->owner, "); nothing was changed"));
}

host::SysfsWriter* HostServiceImpl::writer() {
  return options_.writer != nullptr ? options_.writer : &kernel_writer_;
}

absl::Status HostServiceImpl::RefuseClaimed(const std::string& host_name,
                                            const std::string& what) const {
  if (options_.devices == nullptr) return absl::OkStatus();
  auto it = options_.device_names.find(host_name);
  if (it == options_.device_names.end()) return absl::OkStatus();
  const std::string job = options_.devices->Owner(it->second);
  if (job.empty()) return absl::OkStatus();
  return base::Error(
      absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_BUSY,
      absl::StrCat(what, " refused: it is this agent's device ", it->second,
                   ", held by job ", job,
                   " (a migration); wait for the job to end or cancel it "
                   "(migctl cancel ",
                   job, "); nothing was changed"));
}

absl::Status HostServiceImpl::RefuseInUse(const host::Sysfs& sysfs,
                                          const std::string& bdf,
                                          const std::string& what) {
  const std::string dir = PciDir(bdf);
  if (!host::OnVfioDriver(sysfs, dir)) return absl::OkStatus();
  absl::StatusOr<int> group = host::IommuGroupOf(sysfs, dir, bdf);
  if (!group.ok()) return absl::OkStatus();  // the group check reports it
  absl::StatusOr<bool> busy = options_.usage->InUse(*group);
  if (!busy.ok()) {
    return HostPrecondition(
        busy.status().code(),
        absl::StrCat(what, " refused: ", busy.status().message(),
                     "; nothing was changed"));
  }
  if (!*busy) return absl::OkStatus();
  absl::StatusOr<std::optional<std::string>> driver =
      host::BoundDriver(sysfs, dir);
  auto own = options_.device_names.find(bdf);
  return base::Error(
      absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_BUSY,
      absl::StrCat(
          what, " refused: the device is in use (on ",
          driver.ok() ? Show(*driver) : "a VFIO driver", ", and IOMMU group ",
          *group, " is held",
          own != options_.device_names.end()
              ? absl::StrCat(" by this agent, whose device ", own->second,
                             " it is (take it out of the devices config "
                             "first), or by a VMM")
              : " by another process, e.g. a VMM",
          "); nothing was changed"));
}

v1::HostDevice HostServiceImpl::Describe(const host::Sysfs& sysfs,
                                         const std::string& bdf) {
  const std::string dir = PciDir(bdf);
  v1::HostDevice out;
  out.set_bus("pci");
  out.set_address(bdf);
  out.set_vendor_id(ReadHex(sysfs, dir + "/vendor"));
  out.set_device_id(ReadHex(sysfs, dir + "/device"));
  out.set_subsystem_vendor_id(ReadHex(sysfs, dir + "/subsystem_vendor"));
  out.set_subsystem_device_id(ReadHex(sysfs, dir + "/subsystem_device"));
  out.set_class_code(ReadHex(sysfs, dir + "/class"));
  const auto notice = [&](absl::string_view what, const absl::Status& s) {
    out.add_notices(absl::StrCat(what, ": ", s.message()));
  };

  absl::StatusOr<std::optional<std::string>> driver =
      host::BoundDriver(sysfs, dir);
  if (driver.ok()) {
    out.set_driver(driver->value_or(""));
  } else {
    notice("driver", driver.status());
  }
  absl::StatusOr<std::string> override = sysfs.Read(dir + "/driver_override");
  if (override.ok()) {
    if (*override != "(null)") out.set_driver_override(*override);
  } else if (!absl::IsNotFound(override.status())) {
    notice("driver_override", override.status());
  }

  absl::StatusOr<std::string> modalias = sysfs.Read(dir + "/modalias");
  if (modalias.ok()) {
    out.set_modalias(*modalias);
    absl::StatusOr<std::vector<host::VfioPciAlias>> aliases =
        host::LoadVfioPciAliases(sysfs.root(), options_.kernel_release);
    absl::StatusOr<host::VfioModuleChoice> choice =
        aliases.ok() ? host::ChooseVfioPciModuleFor(bdf, *modalias, *aliases,
                                                    options_.module_preference)
                     : absl::StatusOr<host::VfioModuleChoice>(aliases.status());
    if (choice.ok()) {
      out.set_chosen_module(choice->module);
      out.set_choice_reason(choice->reason);
      absl::StatusOr<std::string> registered =
          host::DriverOfModule(sysfs, choice->module, "pci");
      if (registered.ok()) out.set_chosen_driver(*registered);
    } else {
      out.set_choice_error(std::string(choice.status().message()));
    }
  } else {
    out.set_choice_error(
        absl::StrCat("no modalias: ", modalias.status().message()));
  }

  absl::StatusOr<int> group = host::IommuGroupOf(sysfs, dir, bdf);
  if (group.ok()) {
    out.set_iommu_group(*group);
    absl::Status viable = host::CheckGroupViable(sysfs, *group, bdf);
    out.set_group_viable(viable.ok());
    if (!viable.ok()) {
      out.set_group_not_viable_reason(std::string(viable.message()));
    }
    if (host::OnVfioDriver(sysfs, dir)) {
      absl::StatusOr<bool> busy = options_.usage->InUse(*group);
      if (busy.ok()) {
        out.set_in_use(*busy);
      } else {
        notice("in use", busy.status());
      }
    }
  } else {
    out.set_iommu_group(-1);
    out.set_group_viable(false);
    out.set_group_not_viable_reason(std::string(group.status().message()));
  }

  if (options_.bindings != nullptr) {
    if (std::optional<host::BindRecord> r =
            options_.bindings->Find(Bus::kPci, bdf)) {
      out.set_bound_by_migd(true);
      v1::MigdBinding* b = out.mutable_migd_binding();
      b->set_driver(r->driver);
      b->set_original_driver(r->original.driver.value_or(""));
      b->set_original_driver_override(r->original.override.value_or(""));
      if (driver.ok() && *driver != r->driver) {
        out.add_notices(absl::StrCat(
            "migd's record says it bound the device to ", r->driver,
            ", but it is on ", Show(*driver),
            ": a bind or unbind was cut short (an agent crash?) or someone "
            "else moved it; an unbind returns it to ",
            DescribeBinding(r->original)));
      }
    }
  }

  if (absl::StatusOr<int> total = host::TotalVfs(sysfs, bdf); total.ok()) {
    v1::SriovPf* pf = out.mutable_sriov_pf();
    pf->set_total_vfs(static_cast<uint32_t>(*total));
    if (absl::StatusOr<int> n = host::NumVfs(sysfs, bdf); n.ok()) {
      pf->set_num_vfs(static_cast<uint32_t>(*n));
    } else {
      notice("sriov_numvfs", n.status());
    }
    absl::StatusOr<std::vector<host::VirtualFunction>> vfs =
        host::ListVfs(sysfs, bdf);
    if (vfs.ok()) {
      for (const host::VirtualFunction& vf : *vfs) {
        v1::VirtualFunction* v = pf->add_vfs();
        v->set_index(static_cast<uint32_t>(vf.index));
        v->set_address(vf.bdf);
      }
    } else {
      notice("VFs", vfs.status());
    }
  }
  if (sysfs.Exists(dir + "/physfn")) {
    absl::StatusOr<host::PfOfVf> pf = host::PhysicalFunctionOf(sysfs, bdf);
    if (pf.ok()) {
      out.mutable_sriov_vf()->set_pf_address(pf->pf);
      out.mutable_sriov_vf()->set_index(static_cast<uint32_t>(pf->index));
    } else {
      notice("PF", pf.status());
    }
  }

  if (sysfs.Exists(absl::StrCat("/sys/class/mdev_bus/", bdf))) {
    absl::StatusOr<std::vector<host::MdevType>> types =
        host::ListMdevTypes(sysfs, bdf);
    if (types.ok()) {
      for (const host::MdevType& t : *types) {
        FillMdevType(t, out.add_mdev_types());
      }
    } else {
      notice("mdev types", types.status());
    }
    absl::StatusOr<std::vector<host::MdevInstance>> mdevs =
        host::ListMdevInstances(sysfs, bdf);
    if (mdevs.ok()) {
      for (const host::MdevInstance& m : *mdevs) FillMdev(m, out.add_mdevs());
    } else {
      notice("mdev instances", mdevs.status());
    }
  }

  if (auto it = options_.device_names.find(bdf);
      it != options_.device_names.end()) {
    out.set_agent_device(it->second);
    if (options_.devices != nullptr) {
      out.set_job_id(options_.devices->Owner(it->second));
    }
  }
  return out;
}

namespace {

// `address` normalized, of a PCI device that exists.
absl::StatusOr<std::string> ExistingPci(const host::Sysfs& sysfs,
                                        absl::string_view address) {
  absl::StatusOr<std::string> bdf = host::NormalizePciAddress(address);
  if (!bdf.ok()) return base::InvalidRequest(bdf.status().message());
  const std::string dir = PciDir(*bdf);
  if (!sysfs.Exists(dir)) {
    return base::Error(absl::StatusCode::kNotFound,
                       v1::ERROR_REASON_DEVICE_NOT_FOUND,
                       absl::StrCat("pci device ", *bdf, " does not exist (no ",
                                    sysfs.Path(dir), ")"));
  }
  return bdf;
}

}  // namespace

absl::StatusOr<v1::HostDevice> HostServiceImpl::Get(
    const std::string& address) {
  const host::Sysfs sysfs(options_.sysfs_root, writer());
  absl::StatusOr<std::string> bdf = ExistingPci(sysfs, address);
  if (!bdf.ok()) return bdf.status();
  return Describe(sysfs, *bdf);
}

absl::StatusOr<v1::HostDevice> HostServiceImpl::Bind(
    const std::string& address, const std::string& driver) {
  if (absl::StatusOr<std::string> bdf = host::NormalizePciAddress(address);
      bdf.ok()) {
    if (absl::Status s =
            RefuseAllocated(*bdf, absl::StrCat("bind pci device ", *bdf));
        !s.ok()) {
      return s;
    }
  }
  return DoBind(address, driver);
}

absl::StatusOr<v1::HostDevice> HostServiceImpl::DoBind(
    const std::string& address, const std::string& driver) {
  absl::StatusOr<std::string> normalized = host::NormalizePciAddress(address);
  if (!normalized.ok()) {
    return base::InvalidRequest(normalized.status().message());
  }
  const std::string bdf = *normalized;
  std::string explicit_module;
  if (!driver.empty()) {
    absl::StatusOr<std::string> m = host::CanonicalModuleName(driver);
    if (!m.ok()) {
      return base::InvalidRequest(absl::StrCat(
          "bind pci device ", bdf, ": driver: ", m.status().message()));
    }
    explicit_module = *m;
  }
  const std::string what = absl::StrCat("bind pci device ", bdf);
  if (options_.bindings == nullptr) {
    return HostPrecondition(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat(what,
                     " refused: this agent has no state directory to record "
                     "the bind in (without the record the device could not "
                     "be returned to its driver after a restart)"));
  }
  std::unique_ptr<Locks::Held> held = locks_->Acquire({"pci:" + bdf});
  CountingWriter counter(writer());
  const host::Sysfs sysfs(options_.sysfs_root, &counter);
  if (absl::StatusOr<std::string> e = ExistingPci(sysfs, bdf); !e.ok()) {
    return e.status();
  }
  if (absl::Status s = RefuseClaimed(bdf, what); !s.ok()) return s;
  host::Binder binder(sysfs, *options_.modules, *options_.usage,
                      options_.prepare_host);
  absl::StatusOr<host::Binding> current = binder.Current(Bus::kPci, bdf);
  if (!current.ok()) return HostError(current.status(), counter.writes());

  // The module: the caller's, else migd's choice.
  std::string module = explicit_module;
  if (module.empty()) {
    absl::StatusOr<std::vector<host::VfioPciAlias>> aliases =
        host::LoadVfioPciAliases(sysfs.root(), options_.kernel_release);
    if (!aliases.ok()) {
      return HostPrecondition(
          aliases.status().code(),
          absl::StrCat(what, " refused: cannot choose its VFIO driver: ",
                       aliases.status().message(),
                       "; name the driver (e.g. vfio_pci); nothing was "
                       "changed"));
    }
    absl::StatusOr<std::string> modalias =
        sysfs.Read(PciDir(bdf) + "/modalias");
    if (!modalias.ok()) return HostError(modalias.status(), counter.writes());
    absl::StatusOr<host::VfioModuleChoice> choice =
        host::ChooseVfioPciModuleFor(bdf, *modalias, *aliases,
                                     options_.module_preference);
    if (!choice.ok()) {
      return HostPrecondition(
          absl::StatusCode::kFailedPrecondition,
          absl::StrCat(what, " refused: ", choice.status().message(),
                       "; nothing was changed"));
    }
    module = choice->module;
  } else {
    // A named variant driver must know the device: one of its vfio_pci
    // aliases matches it (host/modalias.h). Without modules.alias there is
    // nothing to check against: the operator's word stands.
    absl::StatusOr<std::vector<host::VfioPciAlias>> aliases =
        host::LoadVfioPciAliases(sysfs.root(), options_.kernel_release);
    if (!aliases.ok() && !absl::IsNotFound(aliases.status())) {
      return HostPrecondition(
          aliases.status().code(),
          absl::StrCat(what, " to module ", module,
                       " refused: cannot check that it drives the device: ",
                       aliases.status().message(), "; nothing was changed"));
    }
    if (aliases.ok()) {
      absl::StatusOr<std::string> modalias =
          sysfs.Read(PciDir(bdf) + "/modalias");
      if (!modalias.ok()) return HostError(modalias.status(), counter.writes());
      absl::StatusOr<std::string> fits =
          host::CheckModuleFits(bdf, *modalias, *aliases, module);
      if (!fits.ok()) {
        return HostPrecondition(
            absl::StatusCode::kFailedPrecondition,
            absl::StrCat(what, " to module ", module,
                         " refused: ", fits.status().message(),
                         "; name a driver that drives it, or none (migd's "
                         "choice); nothing was changed"));
      }
    }
  }

  const std::optional<host::BindRecord> record =
      options_.bindings->Find(Bus::kPci, bdf);
  absl::StatusOr<std::string> registered =
      host::DriverOfModule(sysfs, module, "pci");
  const auto answer = [&](const std::string& outcome) {
    v1::HostDevice out = Describe(sysfs, bdf);
    out.set_outcome(outcome);
    return out;
  };
  const auto refuse_other = [&](const host::BindRecord& r) {
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_BUSY,
        absl::StrCat(what, " to module ", module, " refused: migd bound it to ",
                     r.driver, " already (from ", DescribeBinding(r.original),
                     "); unbind it first (migctl host unbind ", bdf,
                     "); nothing was changed"));
  };
  if (registered.ok() && current->driver == *registered) {
    if (record.has_value() && record->driver != *registered) {
      return refuse_other(*record);
    }
    return answer(absl::StrCat(
        "nothing to do: it is on ", *registered, " already",
        record.has_value()
            ? ""
            : " (migd did not bind it: an unbind needs to_no_driver)"));
  }
  if (record.has_value()) {
    // A record of migd's and the device not on its driver: a bind cut short
    // (which a bind to the same driver finishes), or another driver asked.
    const bool same =
        registered.ok()
            ? *registered == record->driver
            : host::CanonicalModuleName(record->driver).value_or("") == module;
    if (!same) return refuse_other(*record);
  }
  if (absl::Status s = RefuseInUse(sysfs, bdf, what); !s.ok()) return s;
  absl::StatusOr<int> group = host::IommuGroupOf(sysfs, PciDir(bdf), bdf);
  if (!group.ok()) {
    return HostError(Prefixed(what + " refused", group.status()),
                     counter.writes());
  }
  if (absl::Status s = host::CheckGroupViable(sysfs, *group, bdf); !s.ok()) {
    return HostError(Prefixed(what + " refused", s), counter.writes());
  }
  if (!registered.ok()) {
    if (!absl::IsNotFound(registered.status())) {
      return HostError(Prefixed(what + " refused", registered.status()),
                       counter.writes());
    }
    // Loading a module moves no device (a VFIO driver binds only devices
    // whose driver_override names it).
    if (absl::Status s = options_.modules->Load(module); !s.ok()) {
      return HostPrecondition(
          s.code(), absl::StrCat(what, ": loading module ", module, " failed: ",
                                 s.message(), "; the device was not touched"));
    }
    registered = host::DriverOfModule(sysfs, module, "pci");
    if (!registered.ok()) {
      return HostPrecondition(
          absl::StatusCode::kFailedPrecondition,
          absl::StrCat(what, ": module ", module, " loaded, but ",
                       registered.status().message(),
                       "; the device was not touched"));
    }
    if (record.has_value() && record->driver != *registered) {
      return refuse_other(*record);
    }
  }

  // Record first: a crash from here on leaves a record that points back to
  // where the device was (binding_store.h).
  const bool new_record = !record.has_value();
  if (new_record) {
    const host::BindRecord intent{Bus::kPci, bdf, *registered, *current, true};
    if (absl::Status s = options_.bindings->Put(intent); !s.ok()) {
      return base::Error(
          s.code(), v1::ERROR_REASON_JOURNAL,
          absl::StrCat(what, " to ", *registered,
                       " refused: recording it (so that it can be undone "
                       "after a restart) failed: ",
                       s.message(), "; nothing was changed"));
    }
  }
  absl::StatusOr<host::BindRecord> bound = binder.Bind(Bus::kPci, bdf, module);
  if (!bound.ok()) {
    absl::Status error = HostError(bound.status(), counter.writes());
    if (!new_record) {
      return Prefixed(
          absl::StrCat(what,
                       " (finishing an earlier bind of migd's; its "
                       "record stays, an unbind returns the device to ",
                       DescribeBinding(record->original), ")"),
          error);
    }
    if (absl::Status rm = options_.bindings->Remove(Bus::kPci, bdf); !rm.ok()) {
      base::LogError("host: ", what,
                     ": the bind failed and forgetting its "
                     "record failed too: ",
                     rm.message());
      return base::Annotate(
          error, absl::StrCat("(migd's record of the intended bind stays in ",
                              options_.bindings->path(), ": ", rm.message(),
                              "; an unbind removes it)"));
    }
    return error;
  }
  if (!bound->changed && new_record) {
    // Someone else put it there meanwhile: migd did not bind it.
    if (absl::Status rm = options_.bindings->Remove(Bus::kPci, bdf); !rm.ok()) {
      base::LogError("host: ", what,
                     ": forgetting a record failed: ", rm.message());
    }
  }
  const host::Binding& from = record.has_value() ? record->original : *current;
  return answer(absl::StrCat("bound to ", *registered, " (was on ",
                             DescribeBinding(from), ")"));
}

absl::StatusOr<v1::HostDevice> HostServiceImpl::Unbind(
    const std::string& address, bool to_no_driver) {
  if (absl::StatusOr<std::string> bdf = host::NormalizePciAddress(address);
      bdf.ok()) {
    if (absl::Status s =
            RefuseAllocated(*bdf, absl::StrCat("unbind pci device ", *bdf));
        !s.ok()) {
      return s;
    }
  }
  return DoUnbind(address, to_no_driver);
}

absl::StatusOr<v1::HostDevice> HostServiceImpl::DoUnbind(
    const std::string& address, bool to_no_driver) {
  absl::StatusOr<std::string> normalized = host::NormalizePciAddress(address);
  if (!normalized.ok()) {
    return base::InvalidRequest(normalized.status().message());
  }
  const std::string bdf = *normalized;
  const std::string what = absl::StrCat("unbind pci device ", bdf);
  std::unique_ptr<Locks::Held> held = locks_->Acquire({"pci:" + bdf});
  CountingWriter counter(writer());
  const host::Sysfs sysfs(options_.sysfs_root, &counter);
  if (absl::StatusOr<std::string> e = ExistingPci(sysfs, bdf); !e.ok()) {
    return e.status();
  }
  if (absl::Status s = RefuseClaimed(bdf, what); !s.ok()) return s;
  host::Binder binder(sysfs, *options_.modules, *options_.usage);
  absl::StatusOr<host::Binding> current = binder.Current(Bus::kPci, bdf);
  if (!current.ok()) return HostError(current.status(), counter.writes());
  const std::optional<host::BindRecord> record =
      options_.bindings != nullptr ? options_.bindings->Find(Bus::kPci, bdf)
                                   : std::nullopt;
  if (!record.has_value() && !to_no_driver) {
    return HostPrecondition(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat(what, " refused: migd did not bind it (no record",
                     options_.bindings != nullptr
                         ? absl::StrCat(" in ", options_.bindings->path())
                         : "",
                     "), so it does not know where the device came from; it "
                     "is on ",
                     DescribeBinding(*current),
                     ". To release it from its driver anyway, unbind with "
                     "to_no_driver (migctl host unbind --to_no_driver ",
                     bdf, "); nothing was changed"));
  }
  // The PF this agent holds for its VF token leaves vfio-pci, and the
  // kernel's token with it: let go of both first.
  if (options_.vf_tokens != nullptr && options_.vf_tokens->Holds(bdf)) {
    if (absl::Status s = options_.vf_tokens->Release(bdf); !s.ok()) {
      return base::Error(s.code(), v1::ERROR_REASON_JOURNAL,
                         absl::StrCat(what, " refused: ", s.message(),
                                      "; nothing was changed"));
    }
  }
  if (absl::Status s = RefuseInUse(sysfs, bdf, what); !s.ok()) return s;

  std::string outcome;
  if (to_no_driver) {
    if (absl::Status s = binder.UnbindToNoDriver(Bus::kPci, bdf); !s.ok()) {
      return HostError(s, counter.writes());
    }
    outcome = absl::StrCat("released to no driver (was on ",
                           DescribeBinding(*current), ")");
  } else {
    if (absl::Status s = binder.Unbind(*record); !s.ok()) {
      return HostError(s, counter.writes());
    }
    outcome = absl::StrCat("returned to ", DescribeBinding(record->original),
                           " (was on ", DescribeBinding(*current), ")");
  }
  if (record.has_value()) {
    if (absl::Status rm = options_.bindings->Remove(Bus::kPci, bdf); !rm.ok()) {
      return base::Error(
          rm.code(), v1::ERROR_REASON_JOURNAL,
          absl::StrCat(what, ": ", outcome,
                       ", but forgetting migd's record failed: ", rm.message(),
                       "; it shows as bound by migd until an unbind removes "
                       "the record"));
    }
  }
  v1::HostDevice out = Describe(sysfs, bdf);
  out.set_outcome(outcome);
  return out;
}

absl::StatusOr<v1::HostDevice> HostServiceImpl::SetVfs(
    const std::string& pf_address, uint32_t count) {
  absl::StatusOr<std::string> normalized =
      host::NormalizePciAddress(pf_address);
  if (!normalized.ok()) {
    return base::InvalidRequest(normalized.status().message());
  }
  const std::string bdf = *normalized;
  const std::string what = absl::StrCat("set ", count, " VFs on PF ", bdf);
  if (count > static_cast<uint32_t>(std::numeric_limits<int>::max())) {
    return base::InvalidRequest(absl::StrCat(what, ": too many"));
  }
  // The PF first, then its VFs (which only a VF count change, under the
  // PF's lock, makes or destroys).
  std::unique_ptr<Locks::Held> pf_held = locks_->Acquire({"pci:" + bdf});
  CountingWriter counter(writer());
  const host::Sysfs sysfs(options_.sysfs_root, &counter);
  if (absl::StatusOr<std::string> e = ExistingPci(sysfs, bdf); !e.ok()) {
    return e.status();
  }
  // The request against the device first: a count the PF cannot have (or
  // a PF without SR-IOV) is refused as such, whatever its VFs are.
  absl::StatusOr<int> total = host::TotalVfs(sysfs, bdf);
  if (!total.ok()) {
    return HostError(Prefixed(what + " refused", total.status()),
                     counter.writes());
  }
  if (static_cast<int>(count) > *total) {
    return base::InvalidRequest(absl::StrCat(
        what, " refused: asks for ", count, " VFs; the device supports 0 to ",
        *total, " (sriov_totalvfs); nothing was changed"));
  }
  if (absl::Status s = RefuseClaimed(bdf, what); !s.ok()) return s;
  absl::StatusOr<int> current = host::NumVfs(sysfs, bdf);
  if (!current.ok()) {
    return HostError(Prefixed(what + " refused", current.status()),
                     counter.writes());
  }
  std::unique_ptr<Locks::Held> vfs_held;
  if (*current != static_cast<int>(count) && *current > 0) {
    absl::StatusOr<std::vector<host::VirtualFunction>> vfs =
        host::ListVfs(sysfs, bdf);
    if (!vfs.ok()) return HostError(vfs.status(), counter.writes());
    std::vector<std::string> keys;
    for (const host::VirtualFunction& vf : *vfs)
      keys.push_back("pci:" + vf.bdf);
    vfs_held = locks_->Acquire(std::move(keys));
    // Every VF is destroyed (a count changes only through 0).
    for (const host::VirtualFunction& vf : *vfs) {
      const std::string of = absl::StrCat(what, " (VF ", vf.index, ", ", vf.bdf,
                                          ", would be destroyed)");
      if (absl::Status s = RefuseClaimed(vf.bdf, of); !s.ok()) return s;
      if (options_.bindings != nullptr) {
        if (std::optional<host::BindRecord> r =
                options_.bindings->Find(Bus::kPci, vf.bdf)) {
          return base::Error(
              absl::StatusCode::kFailedPrecondition,
              v1::ERROR_REASON_DEVICE_BUSY,
              absl::StrCat(of, " refused: migd bound the VF to ", r->driver,
                           "; unbind it first (migctl host unbind ", vf.bdf,
                           "); nothing was changed"));
        }
      }
      if (absl::Status s = RefuseInUse(sysfs, vf.bdf, of); !s.ok()) return s;
    }
  }
  if (absl::Status s =
          host::SetNumVfs(sysfs, *options_.usage, bdf, static_cast<int>(count));
      !s.ok()) {
    return HostError(s, counter.writes());
  }
  v1::HostDevice out = Describe(sysfs, bdf);
  out.set_outcome(
      *current == static_cast<int>(count)
          ? absl::StrCat("nothing to do: it has ", count, " VFs already")
          : absl::StrCat("VFs: ", *current, " -> ", count));
  return out;
}

absl::StatusOr<v1::VfTokenResponse> HostServiceImpl::OwnVfToken(
    const std::string& pf_address) {
  absl::StatusOr<std::string> normalized =
      host::NormalizePciAddress(pf_address);
  if (!normalized.ok()) {
    return base::InvalidRequest(normalized.status().message());
  }
  const std::string bdf = *normalized;
  const std::string what = absl::StrCat("set the VF token of PF ", bdf);
  std::unique_ptr<Locks::Held> held = locks_->Acquire({"pci:" + bdf});
  const host::Sysfs sysfs(options_.sysfs_root, writer());
  if (absl::StatusOr<std::string> e = ExistingPci(sysfs, bdf); !e.ok()) {
    return e.status();
  }
  if (options_.vf_tokens == nullptr) {
    return HostPrecondition(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat(what,
                     " refused: this agent has no state directory to keep "
                     "the token in; nothing was changed"));
  }
  if (absl::Status s = RefuseClaimed(bdf, what); !s.ok()) return s;
  const std::string dir = PciDir(bdf);
  absl::StatusOr<std::optional<std::string>> driver =
      host::BoundDriver(sysfs, dir);
  if (!driver.ok()) return HostError(driver.status(), 0);
  if (!driver->has_value() || **driver != "vfio-pci") {
    return HostPrecondition(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat(what, " refused: it is on ", Show(*driver),
                     ", not vfio-pci; only a PF that vfio-pci drives has a VF "
                     "token (migctl host bind ",
                     bdf, " --driver=vfio_pci); nothing was changed"));
  }
  absl::StatusOr<std::string> sriov =
      sysfs.Read("/sys/module/vfio_pci/parameters/enable_sriov");
  if (!sriov.ok() || absl::StripAsciiWhitespace(*sriov) != "Y") {
    return HostPrecondition(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat(
            what, " refused: vfio_pci is loaded without enable_sriov=1 (",
            sysfs.Path("/sys/module/vfio_pci/parameters/enable_sriov"),
            sriov.ok()
                ? absl::StrCat(" reads ", absl::StripAsciiWhitespace(*sriov))
                : " is missing",
            "), so its VFs need no token; load it with "
            "enable_sriov=1 (options vfio_pci enable_sriov=1 in "
            "/etc/modprobe.d); nothing was changed"));
  }
  if (absl::StatusOr<int> total = host::TotalVfs(sysfs, bdf); !total.ok()) {
    return HostError(Prefixed(what + " refused", total.status()), 0);
  }
  v1::VfTokenResponse out;
  out.set_pf_address(bdf);
  if (options_.vf_tokens->Holds(bdf)) {
    if (std::optional<std::string> token = options_.vf_tokens->TokenFor(bdf)) {
      out.set_token_id(VfTokens::TokenId(*token));
      explicit_bzero(token->data(), token->size());
      out.set_outcome("nothing to do: this agent owns the PF's VF token");
      return out;
    }
  }
  if (absl::Status s = RefuseInUse(sysfs, bdf, what); !s.ok()) return s;
  absl::StatusOr<std::string> id = options_.vf_tokens->Own(bdf);
  if (!id.ok()) {
    return HostError(Prefixed(what + " failed", id.status()), 0);
  }
  out.set_token_id(*id);
  out.set_outcome(absl::StrCat("this agent owns the PF's VF token (id ", *id,
                               ", stored in ", options_.vf_tokens->dir(),
                               ") and holds the PF open"));
  return out;
}

absl::StatusOr<v1::ListMdevTypesResponse> HostServiceImpl::MdevTypes(
    const std::string& parent) {
  const host::Sysfs sysfs(options_.sysfs_root, writer());
  absl::StatusOr<std::vector<host::MdevType>> types =
      host::ListMdevTypes(sysfs, parent);
  if (!types.ok()) return HostError(types.status(), 0);
  v1::ListMdevTypesResponse out;
  out.set_parent(parent);
  for (const host::MdevType& t : *types) FillMdevType(t, out.add_types());
  absl::StatusOr<std::vector<host::MdevInstance>> mdevs =
      host::ListMdevInstances(sysfs, parent);
  if (!mdevs.ok()) return HostError(mdevs.status(), 0);
  for (const host::MdevInstance& m : *mdevs) FillMdev(m, out.add_instances());
  return out;
}

absl::StatusOr<v1::Mdev> HostServiceImpl::CreateMdevInstance(
    const std::string& parent, const std::string& type,
    const std::string& uuid) {
  if (absl::Status s = host::ValidateDeviceName(parent); !s.ok()) {
    return base::InvalidRequest(absl::StrCat("mdev parent: ", s.message()));
  }
  if (type.empty()) return base::InvalidRequest("mdev type is empty");
  std::unique_ptr<Locks::Held> held =
      locks_->Acquire({"mdev-parent:" + parent});
  CountingWriter counter(writer());
  const host::Sysfs sysfs(options_.sysfs_root, &counter);
  // A parent that is missing is not found; a type it lacks is the host's.
  if (absl::StatusOr<std::vector<host::MdevType>> types =
          host::ListMdevTypes(sysfs, parent);
      !types.ok()) {
    return HostError(
        Prefixed(absl::StrCat("create an mdev of type ", type, " on ", parent),
                 types.status()),
        counter.writes());
  }
  absl::StatusOr<std::string> made = host::CreateMdev(
      sysfs, parent, type,
      uuid.empty() ? std::nullopt : std::optional<absl::string_view>(uuid));
  if (!made.ok()) {
    return HostError(made.status(), counter.writes(),
                     v1::ERROR_REASON_HOST_PRECONDITION);
  }
  v1::Mdev out;
  out.set_uuid(*made);
  out.set_parent(parent);
  out.set_type(type);
  return out;
}

absl::StatusOr<v1::Mdev> HostServiceImpl::RemoveMdevInstance(
    const std::string& uuid) {
  if (absl::StatusOr<std::string> id = host::NormalizeUuid(uuid); id.ok()) {
    if (absl::Status s =
            RefuseAllocated(*id, absl::StrCat("remove mdev ", *id));
        !s.ok()) {
      return s;
    }
  }
  return DoRemoveMdev(uuid);
}

absl::StatusOr<v1::Mdev> HostServiceImpl::DoRemoveMdev(
    const std::string& uuid) {
  absl::StatusOr<std::string> id = host::NormalizeUuid(uuid);
  if (!id.ok()) {
    return base::InvalidRequest(
        absl::StrCat("mdev instance: ", id.status().message()));
  }
  const std::string what = absl::StrCat("remove mdev ", *id);
  std::unique_ptr<Locks::Held> held = locks_->Acquire({"mdev:" + *id});
  CountingWriter counter(writer());
  const host::Sysfs sysfs(options_.sysfs_root, &counter);
  if (absl::Status s = RefuseClaimed(*id, what); !s.ok()) return s;
  absl::StatusOr<std::vector<host::MdevInstance>> all =
      host::ListMdevInstances(sysfs);
  if (!all.ok()) return HostError(all.status(), counter.writes());
  std::optional<host::MdevInstance> found;
  for (const host::MdevInstance& m : *all) {
    if (m.uuid == *id) found = m;
  }
  if (!found.has_value()) {
    return base::Error(
        absl::StatusCode::kNotFound, v1::ERROR_REASON_DEVICE_NOT_FOUND,
        absl::StrCat(what, ": no such mdev instance (no ",
                     sysfs.Path("/sys/bus/mdev/devices/" + *id), ")"));
  }
  if (absl::Status s = host::RemoveMdev(sysfs, *id); !s.ok()) {
    return HostError(Prefixed(what, s), counter.writes());
  }
  v1::Mdev out;
  FillMdev(*found, &out);
  return out;
}

grpc::Status HostServiceImpl::GetHostDevice(
    grpc::ServerContext* context, const v1::GetHostDeviceRequest* request,
    v1::HostDevice* response) {
  absl::StatusOr<v1::HostDevice> r = Get(request->address());
  if (!r.ok()) return ToGrpcStatus(r.status(), context);
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status HostServiceImpl::BindDevice(grpc::ServerContext* context,
                                         const v1::BindDeviceRequest* request,
                                         v1::HostDevice* response) {
  absl::StatusOr<v1::HostDevice> r =
      Bind(request->address(), request->driver());
  if (r.ok()) {
    base::LogInfo("host: ", Caller(*context), ": pci device ", r->address(),
                  ": ", r->outcome());
  }
  return Answer(context, absl::StrCat("bind ", request->address()),
                std::move(r), response);
}

grpc::Status HostServiceImpl::UnbindDevice(
    grpc::ServerContext* context, const v1::UnbindDeviceRequest* request,
    v1::HostDevice* response) {
  absl::StatusOr<v1::HostDevice> r =
      Unbind(request->address(), request->to_no_driver());
  if (r.ok()) {
    base::LogInfo("host: ", Caller(*context), ": pci device ", r->address(),
                  ": ", r->outcome());
  }
  return Answer(context, absl::StrCat("unbind ", request->address()),
                std::move(r), response);
}

grpc::Status HostServiceImpl::SetVfCount(grpc::ServerContext* context,
                                         const v1::SetVfCountRequest* request,
                                         v1::HostDevice* response) {
  absl::StatusOr<v1::HostDevice> r =
      SetVfs(request->pf_address(), request->count());
  if (r.ok()) {
    base::LogInfo("host: ", Caller(*context), ": PF ", r->address(), ": ",
                  r->outcome());
  }
  return Answer(
      context,
      absl::StrCat("set ", request->count(), " VFs on ", request->pf_address()),
      std::move(r), response);
}

grpc::Status HostServiceImpl::SetVfToken(grpc::ServerContext* context,
                                         const v1::SetVfTokenRequest* request,
                                         v1::VfTokenResponse* response) {
  absl::StatusOr<v1::VfTokenResponse> r = OwnVfToken(request->pf_address());
  if (r.ok()) {
    base::LogInfo("host: ", Caller(*context), ": PF ", r->pf_address(), ": ",
                  r->outcome());
  }
  return Answer(context,
                absl::StrCat("set the VF token of ", request->pf_address()),
                std::move(r), response);
}

grpc::Status HostServiceImpl::ListMdevTypes(
    grpc::ServerContext* context, const v1::ListMdevTypesRequest* request,
    v1::ListMdevTypesResponse* response) {
  absl::StatusOr<v1::ListMdevTypesResponse> r = MdevTypes(request->parent());
  if (!r.ok()) return ToGrpcStatus(r.status(), context);
  *response = *std::move(r);
  return grpc::Status::OK;
}

grpc::Status HostServiceImpl::CreateMdev(grpc::ServerContext* context,
                                         const v1::CreateMdevRequest* request,
                                         v1::Mdev* response) {
  absl::StatusOr<v1::Mdev> r =
      CreateMdevInstance(request->parent(), request->type(), request->uuid());
  if (r.ok()) {
    base::LogInfo("host: ", Caller(*context), ": created mdev ", r->uuid(),
                  " of type ", r->type(), " on ", r->parent());
  }
  return Answer(context,
                absl::StrCat("create an mdev of type ", request->type(), " on ",
                             request->parent()),
                std::move(r), response);
}

grpc::Status HostServiceImpl::RemoveMdev(grpc::ServerContext* context,
                                         const v1::RemoveMdevRequest* request,
                                         v1::Mdev* response) {
  absl::StatusOr<v1::Mdev> r = RemoveMdevInstance(request->uuid());
  if (r.ok()) {
    base::LogInfo("host: ", Caller(*context), ": removed mdev ", r->uuid(),
                  " of type ", r->type(), " on ", r->parent());
  }
  return Answer(context, "remove an mdev", std::move(r), response);
}

absl::StatusOr<v1::AllocateDevicesResponse> HostServiceImpl::Allocate(
    const v1::AllocateDevicesRequest& request) {
  if (allocator_ == nullptr) {
    return HostPrecondition(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat("allocate for ", request.owner(),
                     " refused: this agent has no state directory to record "
                     "allocations in (without the record the devices could "
                     "not be released after a restart)"));
  }
  std::vector<host::DeviceRequest> requests;
  for (const v1::DeviceRequest& r : request.devices()) {
    host::DeviceRequest& out = requests.emplace_back();
    out.key = r.key();
    out.device_class.pci_ids = r.device_class().pci_ids();
    out.device_class.mdev_type = r.device_class().mdev_type();
    out.device_class.mdev_parent = r.device_class().mdev_parent();
    out.driver = r.driver();
    if (!r.device_class().agent_kind().empty()) {
      return base::InvalidRequest(absl::StrCat(
          "device request key ", r.key(),
          ": agent_kind is for PrepareIncoming (the agent's configured "
          "devices), not for allocation"));
    }
  }
  absl::StatusOr<std::vector<host::Allocation>> made =
      allocator_->Allocate(request.owner(), requests);
  if (!made.ok()) return AllocationError(made.status());
  v1::AllocateDevicesResponse out;
  for (const host::Allocation& a : *made) FillAllocated(a, out.add_devices());
  return out;
}

absl::StatusOr<v1::ReleaseDevicesResponse> HostServiceImpl::Release(
    const std::string& owner) {
  v1::ReleaseDevicesResponse out;
  if (allocator_ == nullptr) {
    if (absl::Status s = host::ValidateAllocationName("owner", owner);
        !s.ok()) {
      return base::InvalidRequest(s.message());
    }
    return out;  // nothing can have been allocated
  }
  if (options_.before_release) {
    if (absl::Status s = host::ValidateAllocationName("owner", owner);
        !s.ok()) {
      return base::InvalidRequest(s.message());
    }
    if (absl::Status s = options_.before_release(owner); !s.ok()) {
      return base::Annotate(
          s, absl::StrCat("release for ", owner,
                          ": nothing released, closing the devices the "
                          "agent holds open failed"));
    }
  }
  absl::StatusOr<std::vector<host::Allocation>> released =
      allocator_->Release(owner);
  if (!released.ok()) return AllocationError(released.status());
  for (const host::Allocation& a : *released) {
    FillAllocated(a, out.add_released());
  }
  return out;
}

v1::ListAllocationsResponse HostServiceImpl::Allocations(
    const std::string& owner) const {
  v1::ListAllocationsResponse out;
  if (allocator_ == nullptr) return out;
  for (const host::Allocation& a : allocator_->List(owner)) {
    FillAllocated(a, out.add_devices());
  }
  return out;
}

grpc::Status HostServiceImpl::AllocateDevices(
    grpc::ServerContext* context, const v1::AllocateDevicesRequest* request,
    v1::AllocateDevicesResponse* response) {
  absl::StatusOr<v1::AllocateDevicesResponse> r = Allocate(*request);
  if (r.ok()) {
    for (const v1::AllocatedDevice& d : r->devices()) {
      base::LogInfo(
          "host: ", Caller(*context), ": allocated to ", d.owner(), " key ",
          d.key(), ": ",
          d.address().empty()
              ? absl::StrCat("mdev ", d.mdev_uuid(), " of type ", d.mdev_type(),
                             " on ", d.mdev_parent())
              : absl::StrCat("pci device ", d.address(), " on ", d.driver()));
    }
  }
  return Answer(context, absl::StrCat("allocate for ", request->owner()),
                std::move(r), response);
}

grpc::Status HostServiceImpl::ReleaseDevices(
    grpc::ServerContext* context, const v1::ReleaseDevicesRequest* request,
    v1::ReleaseDevicesResponse* response) {
  absl::StatusOr<v1::ReleaseDevicesResponse> r = Release(request->owner());
  if (r.ok()) {
    base::LogInfo("host: ", Caller(*context), ": released ", r->released_size(),
                  " device(s) of ", request->owner());
  }
  return Answer(context, absl::StrCat("release for ", request->owner()),
                std::move(r), response);
}

grpc::Status HostServiceImpl::ListAllocations(
    grpc::ServerContext* context, const v1::ListAllocationsRequest* request,
    v1::ListAllocationsResponse* response) {
  *response = Allocations(request->owner());
  return grpc::Status::OK;
}

}  // namespace migd::server
