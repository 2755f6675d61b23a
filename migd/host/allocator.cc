// migd/host/allocator.cc

#include "migd/host/allocator.h"

#include <algorithm>
#include <utility>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "migd/host/mdev.h"
#include "migd/host/modalias.h"
#include "migd/host/names.h"

namespace migd::host {
namespace {

constexpr absl::string_view kCauseUrl =
    "type.googleapis.com/migd.host.AllocatorCause";

absl::Status WithCause(absl::Status s, absl::string_view cause) {
  s.SetPayload(kCauseUrl, absl::Cord(cause));
  return s;
}

absl::Status Busy(absl::string_view message) {
  return WithCause(absl::FailedPreconditionError(message), "busy");
}

// `s` with `prefix` before its message, keeping its code and payloads.
absl::Status Prefixed(absl::string_view prefix, const absl::Status& s) {
  absl::Status out(s.code(), absl::StrCat(prefix, s.message()));
  s.ForEachPayload([&](absl::string_view url, const absl::Cord& payload) {
    out.SetPayload(url, payload);
  });
  return out;
}

std::string PciDir(absl::string_view bdf) {
  return absl::StrCat("/sys/bus/pci/devices/", bdf);
}

// A hex id as sysfs writes it ("0x1ac3"); nullopt when it cannot be read.
std::optional<uint16_t> ReadId(const Sysfs& sysfs, const std::string& path) {
  absl::StatusOr<std::string> text = sysfs.Read(path);
  if (!text.ok()) return std::nullopt;
  absl::string_view digits = *text;
  absl::ConsumePrefix(&digits, "0x");
  uint32_t v = 0;
  if (!absl::SimpleHexAtoi(digits, &v) || v > 0xffff) return std::nullopt;
  return static_cast<uint16_t>(v);
}

bool Matches(const Sysfs& sysfs, const std::string& bdf, const PciIds& ids) {
  const std::string dir = PciDir(bdf);
  if (ReadId(sysfs, dir + "/vendor") != ids.vendor ||
      ReadId(sysfs, dir + "/device") != ids.device) {
    return false;
  }
  if (!ids.subsystem_vendor.has_value()) return true;
  return ReadId(sysfs, dir + "/subsystem_vendor") == ids.subsystem_vendor &&
         ReadId(sysfs, dir + "/subsystem_device") == ids.subsystem_device;
}

std::string Held(const Allocation& a) {
  return absl::StrCat("by ", a.owner, " (key ", a.key, ")");
}

}  // namespace

std::string DescribeClass(const DeviceClass& c) {
  if (!c.pci_ids.empty()) {
    absl::StatusOr<PciIds> ids = ParsePciIds(c.pci_ids);
    return ids.ok() ? FormatPciIds(*ids) : c.pci_ids;
  }
  return absl::StrCat("mdev ", c.mdev_type, c.mdev_parent.empty() ? "" : " on ",
                      c.mdev_parent);
}

std::string AllocatorCause(const absl::Status& status) {
  auto p = status.GetPayload(kCauseUrl);
  return p.has_value() ? std::string(*p) : "";
}

// --- RecordedHostActions ---

absl::StatusOr<HostActions::Bound> RecordedHostActions::BindPci(
    const std::string& bdf, const std::string& module_name) {
  Binder binder(sysfs_, modules_, usage_);
  std::string module = module_name;
  if (module.empty()) {
    absl::StatusOr<std::vector<VfioPciAlias>> aliases =
        LoadVfioPciAliases(sysfs_.root(), kernel_release_);
    if (!aliases.ok()) return aliases.status();
    absl::StatusOr<std::string> modalias =
        sysfs_.Read(PciDir(bdf) + "/modalias");
    if (!modalias.ok()) return modalias.status();
    absl::StatusOr<VfioModuleChoice> choice =
        ChooseVfioPciModule(bdf, *modalias, *aliases);
    if (!choice.ok()) return choice.status();
    module = choice->module;
  } else {
    // A named variant driver must know the device (CheckModuleFits); no
    // modules.alias: nothing to check against.
    absl::StatusOr<std::vector<VfioPciAlias>> aliases =
        LoadVfioPciAliases(sysfs_.root(), kernel_release_);
    if (!aliases.ok() && !absl::IsNotFound(aliases.status())) {
      return aliases.status();
    }
    if (aliases.ok()) {
      absl::StatusOr<std::string> modalias =
          sysfs_.Read(PciDir(bdf) + "/modalias");
      if (!modalias.ok()) return modalias.status();
      absl::StatusOr<std::string> fits =
          CheckModuleFits(bdf, *modalias, *aliases, module);
      if (!fits.ok()) return fits.status();
    }
  }
  absl::StatusOr<Binding> current = binder.Current(Bus::kPci, bdf);
  if (!current.ok()) return current.status();
  absl::StatusOr<std::string> driver = DriverOfModule(sysfs_, module, "pci");
  if (!driver.ok()) {
    if (absl::Status s = modules_.Load(module); !s.ok()) return s;
    driver = DriverOfModule(sysfs_, module, "pci");
    if (!driver.ok()) return driver.status();
  }
  if (current->driver == *driver) return Bound{*driver, false};
  const bool new_record = !bindings_.Find(Bus::kPci, bdf).has_value();
  if (new_record) {
    if (absl::Status s =
            bindings_.Put(BindRecord{Bus::kPci, bdf, *driver, *current, true});
        !s.ok()) {
      return s;
    }
  }
  absl::StatusOr<BindRecord> bound = binder.Bind(Bus::kPci, bdf, module);
  if (!bound.ok()) {
    if (new_record) bindings_.Remove(Bus::kPci, bdf).IgnoreError();
    return bound.status();
  }
  return Bound{bound->driver, bound->changed};
}

absl::Status RecordedHostActions::UnbindPci(const std::string& bdf) {
  std::optional<BindRecord> record = bindings_.Find(Bus::kPci, bdf);
  if (!record.has_value()) return absl::OkStatus();
  Binder binder(sysfs_, modules_, usage_);
  if (absl::Status s = binder.Unbind(*record); !s.ok()) return s;
  return bindings_.Remove(Bus::kPci, bdf);
}

absl::Status RecordedHostActions::CreateMdev(const std::string& parent,
                                             const std::string& type,
                                             const std::string& uuid) {
  return host::CreateMdev(sysfs_, parent, type, uuid).status();
}

absl::Status RecordedHostActions::RemoveMdev(const std::string& uuid) {
  absl::Status s = host::RemoveMdev(sysfs_, uuid);
  return absl::IsNotFound(s) ? absl::OkStatus() : s;
}

// --- Allocator ---

Allocator::Allocator(Sysfs sysfs, GroupUsage& usage, HostActions& actions,
                     AllocationStore& store, AllocatorOptions options)
    : sysfs_(std::move(sysfs)),
      usage_(usage),
      actions_(actions),
      store_(store),
      options_(std::move(options)) {}

std::vector<Allocation> Allocator::List(const std::string& owner) const {
  return store_.List(owner);
}

std::optional<Allocation> Allocator::Holding(
    const std::string& host_name) const {
  return store_.Holding(host_name);
}

absl::StatusOr<std::vector<Allocation>> Allocator::Allocate(
    const std::string& owner, const std::vector<DeviceRequest>& requests) {
  if (absl::Status s = ValidateAllocationName("owner", owner); !s.ok()) {
    return s;
  }
  if (requests.empty()) {
    return absl::InvalidArgumentError("no devices requested");
  }
  std::vector<DeviceRequest> checked = requests;
  for (size_t i = 0; i < checked.size(); ++i) {
    DeviceRequest& r = checked[i];
    const std::string which = absl::StrCat("device request ", i, " (key ",
                                           absl::CHexEscape(r.key), "): ");
    if (absl::Status s = ValidateAllocationName("key", r.key); !s.ok()) {
      return Prefixed(which, s);
    }
    for (size_t j = 0; j < i; ++j) {
      if (checked[j].key == r.key) {
        return absl::InvalidArgumentError(
            absl::StrCat(which, "the key is listed twice"));
      }
    }
    const DeviceClass& c = r.device_class;
    if (c.pci_ids.empty() == c.mdev_type.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(which, "the class names ",
                       c.pci_ids.empty() ? "neither pci_ids nor mdev_type"
                                         : "both pci_ids and mdev_type",
                       "; name one"));
    }
    if (!c.pci_ids.empty()) {
      if (absl::StatusOr<PciIds> ids = ParsePciIds(c.pci_ids); !ids.ok()) {
        return Prefixed(which, ids.status());
      }
      if (!c.mdev_parent.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat(which, "mdev_parent is for an mdev_type class"));
      }
      if (!r.driver.empty()) {
        absl::StatusOr<std::string> m = CanonicalModuleName(r.driver);
        if (!m.ok()) return Prefixed(which + "driver: ", m.status());
        r.driver = *m;
      }
    } else {
      if (!r.driver.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            which, "driver is for a PCI class (an mdev has its parent's)"));
      }
      for (const std::string* name : {&c.mdev_type, &c.mdev_parent}) {
        if (name->empty()) continue;
        if (absl::Status s = ValidateDeviceName(*name); !s.ok()) {
          return Prefixed(which, s);
        }
      }
    }
  }

  absl::MutexLock lock(&mu_);
  std::vector<Allocation> out;
  std::vector<Allocation> made;
  const auto undo = [&](const absl::Status& error, size_t i) {
    std::vector<std::string> undone;
    for (auto it = made.rbegin(); it != made.rend(); ++it) {
      absl::Status s = ReleaseOne(*it);
      undone.push_back(
          s.ok() ? absl::StrCat(it->key, " -> ", it->host_name(), " released")
                 : absl::StrCat(it->key, " -> ", it->host_name(),
                                " NOT released: ", s.message()));
    }
    const DeviceRequest& r = checked[i];
    return Prefixed(
        absl::StrCat(
            "allocate for ", owner, ": device request ", i, " (key ", r.key,
            ", class ", DescribeClass(r.device_class), ") failed",
            made.empty()
                ? ""
                : absl::StrCat(" (undone: ", absl::StrJoin(undone, "; "), ")"),
            ": "),
        error);
  };
  for (size_t i = 0; i < checked.size(); ++i) {
    const DeviceRequest& r = checked[i];
    if (std::optional<Allocation> held = store_.Find(owner, r.key)) {
      // The hook may run twice: the same device again, finished if a crash
      // cut it short.
      const DeviceClass& c = r.device_class;
      bool same = false;
      if (held->kind == Allocation::Kind::kPci) {
        absl::StatusOr<PciIds> ids = ParsePciIds(c.pci_ids);
        same = ids.ok() && Matches(sysfs_, held->address, *ids);
      } else {
        same = c.mdev_type == held->mdev_type &&
               (c.mdev_parent.empty() || c.mdev_parent == held->mdev_parent);
      }
      if (!same) {
        return undo(
            Busy(absl::StrCat("the key holds ", held->host_name(),
                              ", not of this class, already; release the "
                              "owner's devices first")),
            i);
      }
      if (absl::Status s = Finish(*held); !s.ok()) return undo(s, i);
      out.push_back(*held);
      continue;
    }
    absl::StatusOr<Allocation> a = AllocateOne(owner, r);
    if (!a.ok()) return undo(a.status(), i);
    made.push_back(*a);
    out.push_back(*a);
  }
  return out;
}

absl::StatusOr<Allocation> Allocator::AllocateOne(
    const std::string& owner, const DeviceRequest& request) {
  if (!request.device_class.pci_ids.empty()) {
    absl::StatusOr<PciIds> ids = ParsePciIds(request.device_class.pci_ids);
    if (!ids.ok()) return ids.status();
    return AllocatePci(owner, request, *ids);
  }
  return AllocateMdev(owner, request);
}

absl::StatusOr<Allocation> Allocator::AllocatePci(const std::string& owner,
                                                  const DeviceRequest& request,
                                                  const PciIds& ids) {
  const std::string cls = FormatPciIds(ids);
  absl::StatusOr<std::vector<std::string>> all =
      sysfs_.List("/sys/bus/pci/devices");
  if (!all.ok() && !absl::IsNotFound(all.status())) return all.status();
  std::optional<absl::StatusOr<std::vector<VfioPciAlias>>> aliases;
  struct Free {
    std::string bdf;
    std::string module;
    bool on_driver = false;
    std::string driver;  // the module's driver, when it is loaded
  };
  std::vector<Free> free;
  std::vector<std::string> taken;  // "0000:5e:01.1 by dom-1 (key ...)"
  size_t unfit = 0;  // of `taken`: not driven by the driver the request names
  for (const std::string& bdf : all.ok() ? *all : std::vector<std::string>{}) {
    if (!Matches(sysfs_, bdf, ids)) continue;
    const std::string dir = PciDir(bdf);
    const auto take = [&](const std::string& why) {
      taken.push_back(absl::StrCat(bdf, " ", why));
    };
    if (std::optional<Allocation> h = store_.Holding(bdf)) {
      take(Held(*h));
      continue;
    }
    if (options_.claimed_by) {
      if (std::string job = options_.claimed_by(bdf); !job.empty()) {
        take(absl::StrCat("by job ", job));
        continue;
      }
    }
    if (options_.bindings != nullptr) {
      if (std::optional<BindRecord> r =
              options_.bindings->Find(Bus::kPci, bdf)) {
        take(absl::StrCat("bound to ", r->driver,
                          " by hand (migctl host bind; unbind it to free it)"));
        continue;
      }
    }
    absl::StatusOr<int> group = IommuGroupOf(sysfs_, dir, bdf);
    if (!group.ok()) {
      take("in no IOMMU group");
      continue;
    }
    if (absl::Status s = CheckGroupViable(sysfs_, *group, bdf); !s.ok()) {
      take(absl::StrCat("in IOMMU group ", *group, ", not viable"));
      continue;
    }
    if (OnVfioDriver(sysfs_, dir)) {
      absl::StatusOr<bool> busy = usage_.InUse(*group);
      if (!busy.ok()) {
        take(absl::StrCat("of unknown use (", busy.status().message(), ")"));
        continue;
      }
      if (*busy) {
        take(absl::StrCat("in use (IOMMU group ", *group,
                          " held by another process)"));
        continue;
      }
    }
    std::string module = request.driver;
    if (module.empty()) {
      if (!aliases.has_value()) {
        aliases = LoadVfioPciAliases(sysfs_.root(), options_.kernel_release);
      }
      if (!aliases->ok()) {
        take(absl::StrCat("without a driver choice (",
                          aliases->status().message(), "; name the driver)"));
        continue;
      }
      absl::StatusOr<std::string> modalias = sysfs_.Read(dir + "/modalias");
      absl::StatusOr<VfioModuleChoice> choice =
          modalias.ok() ? ChooseVfioPciModuleFor(bdf, *modalias, **aliases,
                                                 options_.module_preference)
                        : absl::StatusOr<VfioModuleChoice>(modalias.status());
      if (!choice.ok()) {
        take(absl::StrCat("without a driver choice (",
                          choice.status().message(), ")"));
        continue;
      }
      module = choice->module;
    } else {
      // The driver the request names must drive the device (a variant
      // driver's vfio_pci aliases match it): else it is no candidate.
      if (!aliases.has_value()) {
        aliases = LoadVfioPciAliases(sysfs_.root(), options_.kernel_release);
      }
      if (aliases->ok()) {
        absl::StatusOr<std::string> modalias = sysfs_.Read(dir + "/modalias");
        absl::StatusOr<std::string> fits =
            modalias.ok() ? CheckModuleFits(bdf, *modalias, **aliases, module)
                          : absl::StatusOr<std::string>(modalias.status());
        if (!fits.ok()) {
          take(absl::StrCat("not for driver ", module, " (",
                            fits.status().message(), ")"));
          ++unfit;
          continue;
        }
      } else if (!absl::IsNotFound(aliases->status())) {
        take(absl::StrCat("not checked against driver ", module, " (",
                          aliases->status().message(), ")"));
        continue;
      }
    }
    Free f{bdf, module, false, ""};
    if (absl::StatusOr<std::string> d = DriverOfModule(sysfs_, module, "pci");
        d.ok()) {
      f.driver = *d;
      absl::StatusOr<std::optional<std::string>> now = BoundDriver(sysfs_, dir);
      f.on_driver = now.ok() && *now == f.driver;
    }
    free.push_back(std::move(f));
  }
  if (free.empty()) {
    if (taken.empty()) {
      return absl::NotFoundError(
          absl::StrCat("no PCI device of class ", cls, " on this host"));
    }
    if (unfit == taken.size()) {
      // Not busy: the request names a driver none of them is for.
      return absl::FailedPreconditionError(
          absl::StrCat("no device of class ", cls, " is for driver ",
                       request.driver, ": ", absl::StrJoin(taken, ", ")));
    }
    return Busy(absl::StrCat("no free device of class ", cls, ": ",
                             taken.size(), " candidate",
                             taken.size() == 1 ? "" : "s", ", all held (",
                             absl::StrJoin(taken, ", "), ")"));
  }
  std::stable_sort(free.begin(), free.end(), [](const Free& a, const Free& b) {
    if (a.on_driver != b.on_driver) return a.on_driver;
    return a.bdf < b.bdf;
  });
  const Free& pick = free.front();
  Allocation a;
  a.owner = owner;
  a.key = request.key;
  a.kind = Allocation::Kind::kPci;
  a.address = pick.bdf;
  a.driver = pick.driver.empty() ? pick.module : pick.driver;
  a.bound = !pick.on_driver;
  // Recorded before the device moves: a crash from here on leaves an
  // allocation that a release undoes (host-bindings says where it came
  // from) and a repeat finishes.
  if (absl::Status s = store_.Put(a); !s.ok()) {
    return WithCause(s, "store");
  }
  if (pick.on_driver) return a;
  absl::StatusOr<HostActions::Bound> bound =
      actions_.BindPci(pick.bdf, pick.module);
  if (!bound.ok()) {
    store_.Remove(owner, request.key).IgnoreError();
    return Prefixed(absl::StrCat(pick.bdf, ": "), bound.status());
  }
  if (bound->driver != a.driver || bound->changed != a.bound) {
    a.driver = bound->driver;
    a.bound = bound->changed;
    // Only more exact; the record before it is released as well.
    store_.Put(a).IgnoreError();
  }
  return a;
}

absl::StatusOr<Allocation> Allocator::AllocateMdev(
    const std::string& owner, const DeviceRequest& request) {
  const DeviceClass& c = request.device_class;
  std::vector<std::string> parents;
  if (!c.mdev_parent.empty()) {
    parents.push_back(c.mdev_parent);
  } else {
    absl::StatusOr<std::vector<std::string>> all =
        sysfs_.List("/sys/class/mdev_bus");
    if (!all.ok() && !absl::IsNotFound(all.status())) return all.status();
    if (all.ok()) parents = *std::move(all);
  }
  std::optional<std::string> chosen;
  std::vector<std::string> full;  // "mbochs (instances: u by o (key k))"
  for (const std::string& parent : parents) {
    absl::StatusOr<std::vector<MdevType>> types = ListMdevTypes(sysfs_, parent);
    if (!types.ok()) {
      if (!c.mdev_parent.empty()) return types.status();
      continue;
    }
    const MdevType* type = nullptr;
    std::vector<std::string> ids;
    for (const MdevType& t : *types) {
      ids.push_back(t.id);
      if (t.id == c.mdev_type) type = &t;
    }
    if (type == nullptr) {
      if (!c.mdev_parent.empty()) {
        return absl::NotFoundError(absl::StrCat(
            "mdev parent ", parent, " offers no type ", c.mdev_type,
            " (it offers ", absl::StrJoin(ids, ", "), ")"));
      }
      continue;
    }
    if (type->available_instances > 0) {
      chosen = parent;
      break;
    }
    std::vector<std::string> holders;
    if (absl::StatusOr<std::vector<MdevInstance>> made =
            ListMdevInstances(sysfs_, parent);
        made.ok()) {
      for (const MdevInstance& m : *made) {
        if (m.type != c.mdev_type) continue;
        std::optional<Allocation> h = store_.Holding(m.uuid);
        holders.push_back(absl::StrCat(
            m.uuid, " ", h.has_value() ? Held(*h) : "not allocated by migd"));
      }
    }
    full.push_back(absl::StrCat(
        parent, " (instances: ",
        holders.empty() ? "none" : absl::StrJoin(holders, ", "), ")"));
  }
  if (!chosen.has_value()) {
    if (full.empty()) {
      return absl::NotFoundError(
          absl::StrCat("no mdev parent on this host offers type ", c.mdev_type,
                       parents.empty() ? " (there are no mdev parents)" : ""));
    }
    return Busy(absl::StrCat(
        "no instance of mdev type ", c.mdev_type,
        " is available: ", full.size(), " parent", full.size() == 1 ? "" : "s",
        " offering it, all used up (", absl::StrJoin(full, "; "), ")"));
  }
  absl::StatusOr<std::string> uuid = RandomUuidV4();
  if (!uuid.ok()) return uuid.status();
  Allocation a;
  a.owner = owner;
  a.key = request.key;
  a.kind = Allocation::Kind::kMdev;
  a.mdev_uuid = *uuid;
  a.mdev_parent = *chosen;
  a.mdev_type = c.mdev_type;
  if (absl::Status s = store_.Put(a); !s.ok()) return WithCause(s, "store");
  if (absl::Status s = actions_.CreateMdev(*chosen, c.mdev_type, *uuid);
      !s.ok()) {
    store_.Remove(owner, request.key).IgnoreError();
    return s;
  }
  return a;
}

absl::Status Allocator::Finish(const Allocation& a) {
  if (a.kind == Allocation::Kind::kMdev) {
    if (sysfs_.Exists("/sys/bus/mdev/devices/" + a.mdev_uuid)) {
      return absl::OkStatus();
    }
    return actions_.CreateMdev(a.mdev_parent, a.mdev_type, a.mdev_uuid);
  }
  if (!a.bound) return absl::OkStatus();
  absl::StatusOr<std::optional<std::string>> now =
      BoundDriver(sysfs_, PciDir(a.address));
  if (now.ok() && *now == a.driver) return absl::OkStatus();
  absl::StatusOr<std::string> module = CanonicalModuleName(a.driver);
  if (!module.ok()) return module.status();
  return actions_.BindPci(a.address, *module).status();
}

absl::Status Allocator::ReleaseOne(const Allocation& a) {
  if (a.kind == Allocation::Kind::kMdev) {
    if (absl::Status s = actions_.RemoveMdev(a.mdev_uuid); !s.ok()) return s;
  } else if (a.bound) {
    if (absl::Status s = actions_.UnbindPci(a.address); !s.ok()) return s;
  }
  if (absl::Status s = store_.Remove(a.owner, a.key); !s.ok()) {
    return WithCause(s, "store");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<Allocation>> Allocator::Release(
    const std::string& owner) {
  if (absl::Status s = ValidateAllocationName("owner", owner); !s.ok()) {
    return s;
  }
  absl::MutexLock lock(&mu_);
  std::vector<Allocation> held = store_.List(owner);
  std::vector<Allocation> released;
  std::vector<std::string> failed;
  absl::Status first;
  for (auto it = held.rbegin(); it != held.rend(); ++it) {
    if (absl::Status s = ReleaseOne(*it); !s.ok()) {
      failed.push_back(
          absl::StrCat(it->key, " -> ", it->host_name(), ": ", s.message()));
      if (first.ok()) first = s;
      continue;
    }
    released.push_back(*it);
  }
  if (!failed.empty()) {
    std::vector<std::string> done;
    for (const Allocation& a : released) done.push_back(a.host_name());
    return absl::Status(
        first.code(),
        absl::StrCat(
            "release for ", owner, ": ", failed.size(), " of ", held.size(),
            " device(s) not released (", absl::StrJoin(failed, "; "),
            "); they stay allocated, a later release retries",
            done.empty()
                ? ""
                : absl::StrCat("; released: ", absl::StrJoin(done, ", "))));
  }
  return released;
}

}  // namespace migd::host
