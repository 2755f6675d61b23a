// migd/host/binder.cc

#include "migd/host/binder.h"

#include <functional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "migd/host/names.h"

namespace migd::host {
namespace {

// A device as the steps below address it.
struct Device {
  Bus bus;
  std::string name;  // normalized
  std::string dir;   // "/sys/bus/pci/devices/<name>"
  std::string who;   // "pci device <name>", for messages
};

constexpr absl::string_view kNoOverride = "(null)";

absl::Status Prefixed(absl::string_view prefix, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

absl::StatusOr<Device> Resolve(const Sysfs& sysfs, Bus bus,
                               absl::string_view device) {
  std::string name;
  if (bus == Bus::kPci) {
    absl::StatusOr<std::string> bdf = NormalizePciAddress(device);
    if (!bdf.ok()) return bdf.status();
    name = *std::move(bdf);
  } else {
    if (absl::Status s = ValidateDeviceName(device); !s.ok()) {
      return Prefixed("platform ", s);
    }
    name = std::string(device);
  }
  Device d{bus, name,
           absl::StrCat("/sys/bus/", BusName(bus), "/devices/", name),
           absl::StrCat(BusName(bus), " device ", name)};
  if (!sysfs.Exists(d.dir)) {
    return absl::NotFoundError(
        absl::StrCat(d.who, " does not exist (no ", sysfs.Path(d.dir), ")"));
  }
  return d;
}

absl::StatusOr<Binding> ReadBinding(const Sysfs& sysfs, const Device& d) {
  Binding b;
  absl::StatusOr<std::optional<std::string>> driver = BoundDriver(sysfs, d.dir);
  if (!driver.ok()) return Prefixed(d.who + ": ", driver.status());
  b.driver = *std::move(driver);
  absl::StatusOr<std::string> override =
      sysfs.Read(absl::StrCat(d.dir, "/driver_override"));
  if (!override.ok()) {
    if (absl::IsNotFound(override.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat(d.who, " has no driver_override (",
                       override.status().message(), ")"));
    }
    return Prefixed(d.who + ": ", override.status());
  }
  if (*override != kNoOverride) b.override = *std::move(override);
  return b;
}

std::string Describe(const Binding& b) {
  return absl::StrCat("on ", b.driver.value_or("no driver"),
                      " with driver_override ",
                      b.override.value_or(std::string(kNoOverride)));
}

// What a write to driver_override sets `override` to: "\n" clears.
std::string OverrideValue(const std::optional<std::string>& override) {
  return override.has_value() ? *override : "\n";
}

absl::Status Unbound(const Sysfs& sysfs, const Device& d,
                     absl::string_view driver) {
  return Prefixed(absl::StrCat("unbind from ", driver, ": "),
                  sysfs.Write(absl::StrCat(d.dir, "/driver/unbind"), d.name));
}

absl::Status Probed(const Sysfs& sysfs, const Device& d) {
  return Prefixed(
      "probe: ",
      sysfs.Write(absl::StrCat("/sys/bus/", BusName(d.bus), "/drivers_probe"),
                  d.name));
}

// Returns the device to `from` in the rollback order (unbind, restore
// driver_override, re-probe), doing only what is needed from where it is
// now. Appends what it did and where the device is to `account`. True when
// the device is back at `from`.
bool RollBack(const Sysfs& sysfs, const Device& d, const Binding& from,
              std::string* account) {
  std::vector<std::string> done;
  absl::StatusOr<Binding> now = ReadBinding(sysfs, d);
  if (!now.ok()) {
    absl::StrAppend(
        account, "cannot tell where the device is: ", now.status().message());
    return false;
  }
  const auto step = [&](absl::string_view what, const absl::Status& s) {
    done.push_back(s.ok() ? std::string(what) : std::string(s.message()));
  };
  if (now->driver.has_value() && now->driver != from.driver) {
    step(absl::StrCat("unbound from ", *now->driver),
         Unbound(sysfs, d, *now->driver));
  }
  if (now->override != from.override) {
    step(absl::StrCat("driver_override restored to ",
                      from.override.value_or(std::string(kNoOverride))),
         Prefixed("restore driver_override: ",
                  sysfs.Write(absl::StrCat(d.dir, "/driver_override"),
                              OverrideValue(from.override))));
  }
  if (from.driver.has_value()) {
    absl::StatusOr<std::optional<std::string>> driver =
        BoundDriver(sysfs, d.dir);
    if (!driver.ok() || *driver != from.driver) {
      step("re-probed", Probed(sysfs, d));
    }
  }
  absl::StatusOr<Binding> end = ReadBinding(sysfs, d);
  if (done.empty()) done.push_back("nothing had changed");
  absl::StrAppend(account, absl::StrJoin(done, ", "), "; the device is ",
                  end.ok() ? Describe(*end)
                           : absl::StrCat("in an unknown state (",
                                          end.status().message(), ")"));
  return end.ok() && *end == from;
}

// Moves the device from `from` (where it is) to `to` in the forward order
// (driver_override, unbind, `before_probe`, probe, verify, `after`), rolling
// back to `from` on any failure. `what` names the move in errors ("bind to
// vfio-pci"). `before_probe` runs only when there is a probe (`to` names a
// driver).
absl::Status Move(const Sysfs& sysfs, const Device& d, const Binding& from,
                  const Binding& to, absl::string_view what,
                  const std::function<absl::Status()>& after = nullptr,
                  const std::function<absl::Status()>& before_probe = nullptr) {
  const auto fail = [&](const absl::Status& s) {
    std::string account;
    const bool back = RollBack(sysfs, d, from, &account);
    return absl::Status(
        back ? s.code() : absl::StatusCode::kInternal,
        absl::StrCat(
            d.who, ": ", what, " failed: ", s.message(),
            back ? "; rolled back: " : "; ROLLBACK FAILED: ", account));
  };
  if (from.override != to.override) {
    absl::Status s = sysfs.Write(absl::StrCat(d.dir, "/driver_override"),
                                 OverrideValue(to.override));
    if (!s.ok()) return fail(Prefixed("set driver_override: ", s));
  }
  if (from.driver.has_value() && from.driver != to.driver) {
    absl::Status s = Unbound(sysfs, d, *from.driver);
    if (!s.ok()) return fail(s);
  }
  if (to.driver.has_value()) {
    if (before_probe) {
      if (absl::Status s = before_probe(); !s.ok()) {
        return fail(Prefixed("before the probe: ", s));
      }
    }
    absl::Status s = Probed(sysfs, d);
    if (!s.ok()) return fail(s);
  }
  absl::StatusOr<Binding> now = ReadBinding(sysfs, d);
  if (!now.ok()) return fail(Prefixed("verify: ", now.status()));
  if (*now != to) {
    return fail(absl::FailedPreconditionError(absl::StrCat(
        "verify: the device is ", Describe(*now), ", not ", Describe(to))));
  }
  if (after) {
    if (absl::Status s = after(); !s.ok()) {
      return fail(Prefixed("check after the move: ", s));
    }
  }
  return absl::OkStatus();
}

// kFailedPrecondition when the device is on a VFIO driver whose IOMMU group
// another process holds; `what` names the refused operation.
absl::Status RefuseInUse(const Sysfs& sysfs, GroupUsage& usage, const Device& d,
                         const Binding& now, absl::string_view what) {
  if (!now.driver.has_value() || !OnVfioDriver(sysfs, d.dir)) {
    return absl::OkStatus();
  }
  absl::StatusOr<int> group = IommuGroupOf(sysfs, d.dir, d.name);
  if (!group.ok()) return Prefixed(absl::StrCat(what, ": "), group.status());
  absl::StatusOr<bool> busy = usage.InUse(*group);
  if (!busy.ok()) {
    return Prefixed(absl::StrCat(d.who, ": ", what, ": "), busy.status());
  }
  if (*busy) {
    return absl::FailedPreconditionError(absl::StrCat(
        d.who, ": ", what, " refused: the device is in use (on ", *now.driver,
        ", and IOMMU group ", *group,
        " is held by another process, e.g. a VMM; unbinding it would block "
        "until that process lets go); nothing was changed"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view BusName(Bus bus) {
  return bus == Bus::kPci ? "pci" : "platform";
}

Binder::Binder(Sysfs sysfs, ModuleLoader& modules, GroupUsage& usage,
               PrepareHostFn prepare_host)
    : sysfs_(std::move(sysfs)),
      modules_(modules),
      usage_(usage),
      prepare_host_(std::move(prepare_host)) {}

absl::StatusOr<Binding> Binder::Current(Bus bus,
                                        absl::string_view device) const {
  absl::StatusOr<Device> d = Resolve(sysfs_, bus, device);
  if (!d.ok()) return d.status();
  return ReadBinding(sysfs_, *d);
}

absl::StatusOr<BindRecord> Binder::Bind(Bus bus, absl::string_view device,
                                        absl::string_view module) {
  absl::StatusOr<Device> d = Resolve(sysfs_, bus, device);
  if (!d.ok()) return d.status();
  absl::StatusOr<std::string> mod = CanonicalModuleName(module);
  if (!mod.ok()) return Prefixed(d->who + ": bind: ", mod.status());
  // Until the module is loaded only its name is known.
  const std::string what = absl::StrCat("bind to module ", *mod);
  const std::string refused = absl::StrCat(d->who, ": ", what, " refused: ");

  absl::StatusOr<Binding> before = ReadBinding(sysfs_, *d);
  if (!before.ok()) return before.status();
  absl::StatusOr<std::string> driver =
      DriverOfModule(sysfs_, *mod, BusName(bus));
  if (!driver.ok() && !absl::IsNotFound(driver.status())) {
    return Prefixed(refused, driver.status());
  }
  if (driver.ok() && before->driver == *driver) {
    return BindRecord{bus, d->name, *driver, *before, false};
  }
  if (absl::Status s = RefuseInUse(sysfs_, usage_, *d, *before, what);
      !s.ok()) {
    return s;
  }
  absl::StatusOr<int> group = IommuGroupOf(sysfs_, d->dir, d->name);
  if (!group.ok()) return Prefixed(refused, group.status());
  if (absl::Status s = CheckGroupViable(sysfs_, *group, d->name); !s.ok()) {
    return Prefixed(refused, s);
  }

  if (!driver.ok()) {
    if (absl::Status s = modules_.Load(*mod); !s.ok()) {
      return absl::Status(
          s.code(), absl::StrCat(d->who, ": ", what, ": loading it failed: ",
                                 s.message(), "; the device was not touched"));
    }
    driver = DriverOfModule(sysfs_, *mod, BusName(bus));
    if (!driver.ok()) {
      return absl::Status(absl::StatusCode::kFailedPrecondition,
                          absl::StrCat(d->who, ": ", what, ": it loaded, but ",
                                       driver.status().message(),
                                       "; the device was not touched"));
    }
  }

  // A module with an ordinary ID table binds the unbound devices it matches
  // as it loads: start from where the device is now.
  absl::StatusOr<Binding> from = ReadBinding(sysfs_, *d);
  if (!from.ok()) return from.status();
  if (from->driver == *driver) {
    return BindRecord{bus, d->name, *driver, *before, *from != *before};
  }
  const Binding to{*driver, *driver};
  const int g = *group;
  // Step 3 (binder.h): between the unbind and the probe.
  std::function<absl::Status()> prepare;
  if (prepare_host_) {
    prepare = [&] { return prepare_host_(bus, d->name); };
  }
  if (absl::Status s = Move(
          sysfs_, *d, *from, to, absl::StrCat("bind to ", *driver),
          [&] { return CheckGroupViable(sysfs_, g); }, prepare);
      !s.ok()) {
    return s;
  }
  return BindRecord{bus, d->name, *driver, *from, true};
}

absl::Status Binder::Unbind(const BindRecord& record) {
  absl::StatusOr<Device> d = Resolve(sysfs_, record.bus, record.device);
  if (!d.ok()) return d.status();
  absl::StatusOr<Binding> now = ReadBinding(sysfs_, *d);
  if (!now.ok()) return now.status();
  if (*now == record.original) return absl::OkStatus();
  const std::string what =
      absl::StrCat("return to ", Describe(record.original));
  // Where migd's own bind or unbind leaves the device when cut short (a
  // crash between steps): on record.driver, on no driver, or still on its
  // original driver with driver_override naming record.driver.
  const bool left_by_migd =
      now->driver == record.driver || !now->driver.has_value() ||
      (now->driver == record.original.driver && now->override == record.driver);
  if (!left_by_migd) {
    return absl::FailedPreconditionError(absl::StrCat(
        d->who, ": ", what, " refused: it is ", Describe(*now), ", not on ",
        record.driver,
        " where migd bound it (someone else moved it); nothing was changed"));
  }
  if (absl::Status s = RefuseInUse(sysfs_, usage_, *d, *now, what); !s.ok()) {
    return s;
  }
  return Move(sysfs_, *d, *now, record.original, what);
}

absl::Status Binder::UnbindToNoDriver(Bus bus, absl::string_view device) {
  absl::StatusOr<Device> d = Resolve(sysfs_, bus, device);
  if (!d.ok()) return d.status();
  absl::StatusOr<Binding> now = ReadBinding(sysfs_, *d);
  if (!now.ok()) return now.status();
  const Binding none;
  if (*now == none) return absl::OkStatus();
  const std::string what = "release to no driver";
  if (absl::Status s = RefuseInUse(sysfs_, usage_, *d, *now, what); !s.ok()) {
    return s;
  }
  return Move(sysfs_, *d, *now, none, what);
}

}  // namespace migd::host
