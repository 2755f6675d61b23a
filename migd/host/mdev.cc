// migd/host/mdev.cc

#include "migd/host/mdev.h"

#include <errno.h>
#include <sys/random.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "migd/host/names.h"

namespace migd::host {
namespace {

absl::Status Prefixed(absl::string_view prefix, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(prefix, s.message()));
}

// The directory of mdev parent `parent`.
absl::StatusOr<std::string> ParentDir(const Sysfs& sysfs,
                                      absl::string_view parent) {
  if (absl::Status s = ValidateDeviceName(parent); !s.ok()) {
    return Prefixed("mdev parent: ", s);
  }
  std::string dir = absl::StrCat("/sys/class/mdev_bus/", parent);
  if (sysfs.Exists(dir)) return dir;
  // Tell a device that offers nothing from one that is not there.
  for (absl::string_view bus : {"pci", "platform"}) {
    const std::string device =
        absl::StrCat("/sys/bus/", bus, "/devices/", parent);
    if (sysfs.Exists(device)) {
      return absl::FailedPreconditionError(absl::StrCat(
          bus, " device ", parent, " offers no mediated devices (not in ",
          sysfs.Path("/sys/class/mdev_bus"),
          "; is its driver an mdev parent, and loaded?)"));
    }
  }
  return absl::NotFoundError(absl::StrCat(
      "mdev parent ", parent, " does not exist (no ", sysfs.Path(dir), ")"));
}

std::string Last(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return std::string(slash == absl::string_view::npos ? path
                                                      : path.substr(slash + 1));
}

// The name of the directory that holds the one `path` names.
std::string SecondLast(absl::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return "";
  return Last(path.substr(0, slash));
}

}  // namespace

absl::StatusOr<std::vector<MdevType>> ListMdevTypes(const Sysfs& sysfs,
                                                    absl::string_view parent) {
  absl::StatusOr<std::string> dir = ParentDir(sysfs, parent);
  if (!dir.ok()) return dir.status();
  const std::string types_dir = absl::StrCat(*dir, "/mdev_supported_types");
  absl::StatusOr<std::vector<std::string>> ids = sysfs.List(types_dir);
  if (!ids.ok()) {
    if (absl::IsNotFound(ids.status())) {
      return absl::FailedPreconditionError(absl::StrCat(
          "mdev parent ", parent, " has no ", sysfs.Path(types_dir)));
    }
    return ids.status();
  }
  std::vector<MdevType> types;
  for (const std::string& id : *ids) {
    const std::string t = absl::StrCat(types_dir, "/", id);
    MdevType type;
    type.id = id;
    type.name = sysfs.Read(t + "/name").value_or("");
    absl::StatusOr<std::string> available =
        sysfs.Read(t + "/available_instances");
    if (!available.ok()) return available.status();
    if (!absl::SimpleAtoi(*available, &type.available_instances) ||
        type.available_instances < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(sysfs.Path(t + "/available_instances"), " reads \"",
                       *available, "\", not a count"));
    }
    absl::StatusOr<std::string> api = sysfs.Read(t + "/device_api");
    if (!api.ok()) return api.status();
    type.device_api = *std::move(api);
    types.push_back(std::move(type));
  }
  if (types.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("mdev parent ", parent, " offers no types (",
                     sysfs.Path(types_dir), " is empty)"));
  }
  return types;
}

absl::StatusOr<std::vector<MdevInstance>> ListMdevInstances(
    const Sysfs& sysfs, absl::string_view parent) {
  if (!parent.empty()) {
    if (absl::Status s = ValidateDeviceName(parent); !s.ok()) {
      return Prefixed("mdev parent: ", s);
    }
  }
  absl::StatusOr<std::vector<std::string>> uuids =
      sysfs.List("/sys/bus/mdev/devices");
  if (absl::IsNotFound(uuids.status())) {
    return std::vector<MdevInstance>{};  // mdev not loaded: no instances
  }
  if (!uuids.ok()) return uuids.status();
  std::vector<MdevInstance> out;
  for (const std::string& uuid : *uuids) {
    const std::string link = absl::StrCat("/sys/bus/mdev/devices/", uuid);
    // The instance's directory sits in its parent's:
    // .../devices/pci0000:00/0000:00:02.0/<uuid>.
    absl::StatusOr<std::string> target = sysfs.LinkTarget(link);
    if (!target.ok()) return target.status();
    absl::StatusOr<std::string> type =
        sysfs.LinkName(absl::StrCat(link, "/mdev_type"));
    if (!type.ok()) return type.status();
    MdevInstance instance{uuid, SecondLast(*target), *std::move(type)};
    if (parent.empty() || instance.parent == parent) {
      out.push_back(std::move(instance));
    }
  }
  return out;
}

absl::StatusOr<std::string> CreateMdev(const Sysfs& sysfs,
                                       absl::string_view parent,
                                       absl::string_view type,
                                       std::optional<absl::string_view> uuid) {
  std::string id;
  if (uuid.has_value()) {
    absl::StatusOr<std::string> u = NormalizeUuid(*uuid);
    if (!u.ok()) return Prefixed("mdev instance: ", u.status());
    id = *std::move(u);
  } else {
    absl::StatusOr<std::string> u = RandomUuidV4();
    if (!u.ok()) return u.status();
    id = *std::move(u);
  }
  const std::string what =
      absl::StrCat("create mdev ", id, " of type ", type, " on ", parent);
  absl::StatusOr<std::vector<MdevType>> types = ListMdevTypes(sysfs, parent);
  if (!types.ok()) return Prefixed(what + ": ", types.status());
  const auto it = std::find_if(types->begin(), types->end(),
                               [&](const MdevType& t) { return t.id == type; });
  if (it == types->end()) {
    std::vector<std::string> ids;
    for (const MdevType& t : *types) ids.push_back(t.id);
    return absl::NotFoundError(
        absl::StrCat(what, ": mdev parent ", parent, " has no type \"", type,
                     "\" (it has ", absl::StrJoin(ids, ", "), ")"));
  }
  if (it->available_instances == 0) {
    return absl::ResourceExhaustedError(absl::StrCat(
        what, ": type ", type, " has no available instances left"));
  }
  const std::string instance = absl::StrCat("/sys/bus/mdev/devices/", id);
  if (sysfs.Exists(instance)) {
    return absl::AlreadyExistsError(
        absl::StrCat(what, ": an mdev with that UUID exists"));
  }
  absl::StatusOr<std::string> dir = ParentDir(sysfs, parent);
  if (!dir.ok()) return dir.status();
  const std::string create =
      absl::StrCat(*dir, "/mdev_supported_types/", type, "/create");
  if (absl::Status s = sysfs.Write(create, id); !s.ok()) {
    return Prefixed(what + " failed: ", s);
  }
  if (!sysfs.Exists(instance)) {
    return absl::InternalError(absl::StrCat(what, ": the write succeeded but ",
                                            sysfs.Path(instance),
                                            " does not exist"));
  }
  absl::StatusOr<std::string> made = sysfs.LinkName(instance + "/mdev_type");
  if (!made.ok() || *made != type) {
    absl::Status back = sysfs.Write(instance + "/remove", "1");
    return absl::InternalError(absl::StrCat(
        what, ": the new instance is of type ",
        made.ok() ? *made : std::string(made.status().message()), ", not ",
        type,
        back.ok()
            ? "; removed it again"
            : absl::StrCat("; removing it failed too: ", back.message())));
  }
  return id;
}

absl::Status RemoveMdev(const Sysfs& sysfs, absl::string_view uuid) {
  absl::StatusOr<std::string> id = NormalizeUuid(uuid);
  if (!id.ok()) return Prefixed("mdev instance: ", id.status());
  const std::string instance = absl::StrCat("/sys/bus/mdev/devices/", *id);
  const std::string what = absl::StrCat("remove mdev ", *id);
  if (!sysfs.Exists(instance)) {
    return absl::NotFoundError(absl::StrCat(what, ": no such instance (no ",
                                            sysfs.Path(instance), ")"));
  }
  if (absl::Status s = sysfs.Write(instance + "/remove", "1"); !s.ok()) {
    return Prefixed(what + " failed: ", s);
  }
  if (sysfs.Exists(instance)) {
    return absl::InternalError(absl::StrCat(what, ": the write succeeded but ",
                                            sysfs.Path(instance),
                                            " still exists"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RandomUuidV4() {
  std::array<uint8_t, 16> b{};
  size_t got = 0;
  while (got < b.size()) {
    const ssize_t n = ::getrandom(b.data() + got, b.size() - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::ErrnoToStatus(errno, "getrandom for a UUID");
    got += static_cast<size_t>(n);
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  return absl::StrFormat(
      "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
      b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
      b[12], b[13], b[14], b[15]);
}

}  // namespace migd::host
