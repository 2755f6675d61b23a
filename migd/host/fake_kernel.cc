// migd/host/fake_kernel.cc

#include "migd/host/fake_kernel.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gtest/gtest.h"
#include "migd/host/names.h"

namespace migd::host::testing {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> Parts(absl::string_view path) {
  return absl::StrSplit(path, '/', absl::SkipEmpty());
}

std::string Dirname(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return std::string(slash == absl::string_view::npos ? ""
                                                      : path.substr(0, slash));
}

std::string Basename(absl::string_view path) {
  const size_t slash = path.rfind('/');
  return std::string(slash == absl::string_view::npos ? path
                                                      : path.substr(slash + 1));
}

// absl::ConsumePrefix for a std::string.
bool Strip(std::string* s, absl::string_view prefix) {
  if (!absl::StartsWith(*s, prefix)) return false;
  s->erase(0, prefix.size());
  return true;
}

// A value as the kernel's sysfs_streq sees it: up to a trailing newline.
std::string Value(absl::string_view value) {
  absl::ConsumeSuffix(&value, "\n");
  return std::string(value);
}

}  // namespace

FakeKernel::FakeKernel() {
  const char* base = getenv("TEST_TMPDIR");
  std::string pattern =
      absl::StrCat(base != nullptr ? base : "/tmp", "/hostXXXXXX");
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << pattern << ": " << strerror(errno);
  }
  char real[PATH_MAX];
  root_ = realpath(buf.data(), real) != nullptr ? real : buf.data();
  for (absl::string_view bus : {"pci", "platform"}) {
    Mkdirs(absl::StrCat("/sys/bus/", bus, "/devices"));
    Mkdirs(absl::StrCat("/sys/bus/", bus, "/drivers"));
    WriteFile(absl::StrCat("/sys/bus/", bus, "/drivers_probe"), "");
  }
  Mkdirs("/sys/kernel/iommu_groups");
  Mkdirs("/sys/module");
  Mkdirs("/dev/vfio");
}

FakeKernel::~FakeKernel() {
  std::error_code ec;
  fs::remove_all(root_, ec);
}

std::string FakeKernel::P(absl::string_view kernel_path) const {
  return absl::StrCat(root_, kernel_path);
}

void FakeKernel::Mkdirs(const std::string& kernel_path) {
  std::error_code ec;
  fs::create_directories(P(kernel_path), ec);
  if (ec) ADD_FAILURE() << "mkdir " << P(kernel_path) << ": " << ec.message();
}

void FakeKernel::WriteFile(const std::string& kernel_path,
                           absl::string_view content) {
  Mkdirs(Dirname(kernel_path));
  std::ofstream out(P(kernel_path), std::ios::trunc);
  out << content;
  if (!out) ADD_FAILURE() << "write " << P(kernel_path);
}

std::string FakeKernel::ReadFile(const std::string& kernel_path) const {
  std::ifstream in(P(kernel_path));
  std::stringstream s;
  s << in.rdbuf();
  return std::string(absl::StripAsciiWhitespace(s.str()));
}

// A relative link, as sysfs makes them: from the link's directory up to the
// common ancestor, then down to the target.
void FakeKernel::Link(const std::string& link, const std::string& target) {
  Mkdirs(Dirname(link));
  const std::vector<std::string> from = Parts(Dirname(link));
  const std::vector<std::string> to = Parts(target);
  size_t common = 0;
  while (common < from.size() && common < to.size() &&
         from[common] == to[common]) {
    ++common;
  }
  std::string rel;
  for (size_t i = common; i < from.size(); ++i) rel += "../";
  for (size_t i = common; i < to.size(); ++i) {
    absl::StrAppend(&rel, to[i], i + 1 < to.size() ? "/" : "");
  }
  if (symlink(rel.c_str(), P(link).c_str()) != 0) {
    ADD_FAILURE() << "symlink " << P(link) << " -> " << rel << ": "
                  << strerror(errno);
  }
}

void FakeKernel::Remove(const std::string& kernel_path) {
  std::error_code ec;
  fs::remove_all(P(kernel_path), ec);
}

void FakeKernel::JoinGroup(const std::string& device_dir,
                           const std::string& name, int group) {
  if (group < 0) return;
  const std::string g = absl::StrCat("/sys/kernel/iommu_groups/", group);
  Mkdirs(g + "/devices");
  Link(device_dir + "/iommu_group", g);
  Link(absl::StrCat(g, "/devices/", name), device_dir);
}

void FakeKernel::AddDriver(const FakeDriver& d) {
  const std::string dir = absl::StrCat("/sys/bus/", d.bus, "/drivers/", d.name);
  Mkdirs(dir);
  for (absl::string_view f : {"bind", "unbind", "new_id"}) {
    WriteFile(absl::StrCat(dir, "/", f), "");
  }
  const std::string module = absl::StrCat("/sys/module/", d.module);
  Mkdirs(module + "/drivers");
  Link(dir + "/module", module);
  Link(absl::StrCat(module, "/drivers/", d.bus, ":", d.name), dir);
  if (!d.core.empty()) {
    Mkdirs(absl::StrCat("/sys/module/", d.core, "/holders"));
    Link(absl::StrCat("/sys/module/", d.core, "/holders/", d.module), module);
  }
  drivers_[d.bus].push_back(d);
  std::sort(
      drivers_[d.bus].begin(), drivers_[d.bus].end(),
      [](const FakeDriver& a, const FakeDriver& b) { return a.name < b.name; });
}

void FakeKernel::AddLoadableModule(const FakeDriver& d) {
  loadable_[d.module] = d;
}

void FakeKernel::AddPciDevice(const FakePciDevice& d) {
  const std::string dir = "/sys/bus/pci/devices/" + d.bdf;
  Mkdirs(dir);
  WriteFile(dir + "/vendor", absl::StrFormat("0x%04x\n", d.vendor));
  WriteFile(dir + "/device", absl::StrFormat("0x%04x\n", d.device));
  WriteFile(dir + "/subsystem_vendor",
            absl::StrFormat("0x%04x\n", d.subsystem_vendor));
  WriteFile(dir + "/subsystem_device",
            absl::StrFormat("0x%04x\n", d.subsystem_device));
  WriteFile(dir + "/class", absl::StrFormat("0x%06x\n", d.pci_class));
  WriteFile(dir + "/modalias",
            absl::StrFormat("pci:v%08Xd%08Xsv%08Xsd%08Xbc%02Xsc%02Xi%02X\n",
                            d.vendor, d.device, d.subsystem_vendor,
                            d.subsystem_device, (d.pci_class >> 16) & 0xff,
                            (d.pci_class >> 8) & 0xff, d.pci_class & 0xff));
  WriteFile(dir + "/driver_override", "(null)\n");
  JoinGroup(dir, d.bdf, d.group);
  if (d.driver.has_value()) BindNow("pci", d.bdf, *d.driver);
}

void FakeKernel::AddPlatformDevice(const std::string& name,
                                   const std::string& id, int group,
                                   std::optional<std::string> driver) {
  const std::string dir = "/sys/bus/platform/devices/" + name;
  Mkdirs(dir);
  WriteFile(dir + "/modalias", id + "\n");
  WriteFile(dir + "/driver_override", "(null)\n");
  JoinGroup(dir, name, group);
  if (driver.has_value()) BindNow("platform", name, *driver);
}

void FakeKernel::BindNow(const std::string& bus, const std::string& device,
                         const std::string& driver) {
  const std::string dev = absl::StrCat("/sys/bus/", bus, "/devices/", device);
  const std::string drv = absl::StrCat("/sys/bus/", bus, "/drivers/", driver);
  Link(dev + "/driver", drv);
  Link(absl::StrCat(drv, "/", device), dev);
}

void FakeKernel::UnbindNow(const std::string& bus, const std::string& device) {
  std::optional<std::string> driver = DriverOf(bus, device);
  if (!driver.has_value()) return;
  Remove(absl::StrCat("/sys/bus/", bus, "/devices/", device, "/driver"));
  Remove(absl::StrCat("/sys/bus/", bus, "/drivers/", *driver, "/", device));
}

std::optional<std::string> FakeKernel::DriverOf(
    const std::string& bus, const std::string& device) const {
  char buf[PATH_MAX];
  const std::string link =
      P(absl::StrCat("/sys/bus/", bus, "/devices/", device, "/driver"));
  const ssize_t n = readlink(link.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return std::nullopt;
  return Basename(absl::string_view(buf, static_cast<size_t>(n)));
}

void FakeKernel::AddSriov(const std::string& pf, std::vector<std::string> vfs,
                          uint16_t vf_device, int first_group) {
  const std::string dir = "/sys/bus/pci/devices/" + pf;
  WriteFile(dir + "/sriov_totalvfs", absl::StrCat(vfs.size(), "\n"));
  WriteFile(dir + "/sriov_numvfs", "0\n");
  sriov_[pf] = Sriov{std::move(vfs), vf_device, first_group};
}

void FakeKernel::AddMdevParent(const std::string& dir, const std::string& name,
                               const std::vector<MdevType>& types) {
  Mkdirs(dir);
  for (const MdevType& t : types) {
    const std::string td = absl::StrCat(dir, "/mdev_supported_types/", t.id);
    Mkdirs(td + "/devices");
    WriteFile(td + "/name", t.name + "\n");
    WriteFile(td + "/available_instances",
              absl::StrCat(t.available_instances, "\n"));
    WriteFile(td + "/device_api", t.device_api + "\n");
    WriteFile(td + "/create", "");
  }
  Link("/sys/class/mdev_bus/" + name, dir);
  Mkdirs("/sys/bus/mdev/devices");
}

void FakeKernel::FailWrite(const std::string& suffix, int err,
                           std::optional<std::string> value) {
  fail_writes_.push_back({suffix, err, std::move(value)});
}

void FakeKernel::FailProbe(const std::string& driver, int err) {
  fail_probes_[driver] = err;
}

void FakeKernel::OnBind(
    std::function<void(const std::string&, const std::string&,
                       const std::string&)>
        hook) {
  on_bind_ = std::move(hook);
}

std::map<std::string, std::string> FakeKernel::Snapshot() const {
  std::map<std::string, std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root_, ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string rel = it->path().string().substr(root_.size());
    if (it->is_symlink()) {
      out[rel] = "-> " + fs::read_symlink(it->path(), ec).string();
    } else if (it->is_directory()) {
      out[rel] = "dir";
    } else {
      out[rel] = "= " + ReadFile(rel);
    }
  }
  if (ec) ADD_FAILURE() << "snapshot of " << root_ << ": " << ec.message();
  return out;
}

absl::Status FakeKernel::Write(const std::string& path,
                               absl::string_view value) {
  std::string as_written = path;
  if (!Strip(&as_written, root_)) {
    ADD_FAILURE() << "write outside the fake tree: " << path;
    return SysfsWriteError(path, value, EACCES);
  }
  writes_.push_back(absl::StrCat(as_written, " := ", absl::CHexEscape(value)));
  for (const WriteFault& f : fail_writes_) {
    if (absl::EndsWith(as_written, f.suffix) &&
        (!f.value.has_value() || *f.value == value)) {
      return SysfsWriteError(path, value, f.err);
    }
  }
  // What the kernel would find: the attribute, through every link.
  char real_dir[PATH_MAX];
  if (realpath(Dirname(path).c_str(), real_dir) == nullptr ||
      access(path.c_str(), F_OK) != 0) {
    return SysfsWriteError(path, value, ENOENT);
  }
  std::string dir = real_dir;
  if (!Strip(&dir, root_)) {
    return SysfsWriteError(path, value, EACCES);
  }
  const std::string attribute = Basename(path);
  const std::vector<std::string> p = Parts(dir);

  // /sys/bus/<bus>/devices/<dev>/driver_override
  if (attribute == "driver_override" && p.size() == 5 && p[1] == "bus" &&
      p[3] == "devices") {
    const std::string v = Value(value);
    WriteFile(dir + "/driver_override", (v.empty() ? "(null)" : v) + "\n");
    return absl::OkStatus();
  }
  // /sys/bus/<bus>/drivers/<driver>/unbind
  if (attribute == "unbind" && p.size() == 5 && p[1] == "bus" &&
      p[3] == "drivers") {
    const std::string device = Value(value);
    if (DriverOf(p[2], device) != p[4]) {
      return SysfsWriteError(path, value, ENODEV);
    }
    UnbindNow(p[2], device);
    return absl::OkStatus();
  }
  // /sys/bus/<bus>/drivers_probe
  if (attribute == "drivers_probe" && p.size() == 3 && p[1] == "bus") {
    return Probe(path, p[2], value);
  }
  // /sys/bus/pci/devices/<pf>/sriov_numvfs
  if (attribute == "sriov_numvfs" && p.size() == 5 && p[2] == "pci" &&
      p[3] == "devices") {
    return SetNumVfs(path, p[4], value);
  }
  // <parent>/mdev_supported_types/<type>/create
  if (attribute == "create" && p.size() >= 2 &&
      p[p.size() - 2] == "mdev_supported_types") {
    return CreateMdev(path, dir, value);
  }
  // <parent>/<uuid>/remove
  struct stat st;
  if (attribute == "remove" && lstat(P(dir + "/mdev_type").c_str(), &st) == 0) {
    return RemoveMdev(path, dir, value);
  }
  // new_id, bind and everything else: not modelled.
  return SysfsWriteError(path, value, EACCES);
}

absl::Status FakeKernel::Probe(const std::string& path, const std::string& bus,
                               absl::string_view value) {
  const std::string device = Value(value);
  const std::string dev = absl::StrCat("/sys/bus/", bus, "/devices/", device);
  struct stat st;
  if (device.empty() || stat(P(dev).c_str(), &st) != 0) {
    return SysfsWriteError(path, value, ENODEV);
  }
  if (DriverOf(bus, device).has_value()) return absl::OkStatus();
  std::optional<std::string> chosen;
  const std::string override = ReadFile(dev + "/driver_override");
  if (override != "(null)") {
    for (const FakeDriver& d : drivers_[bus]) {
      if (d.name == override) chosen = d.name;
    }
  } else {
    std::string id = ReadFile(dev + "/modalias");
    if (bus == "pci") {
      std::string vendor = ReadFile(dev + "/vendor");
      std::string device_id = ReadFile(dev + "/device");
      Strip(&vendor, "0x");
      Strip(&device_id, "0x");
      id = absl::StrCat(vendor, ":", device_id);
    }
    for (const FakeDriver& d : drivers_[bus]) {
      if (std::find(d.ids.begin(), d.ids.end(), id) != d.ids.end()) {
        chosen = d.name;
        break;
      }
    }
  }
  if (!chosen.has_value()) return absl::OkStatus();  // nothing binds
  if (auto it = fail_probes_.find(*chosen); it != fail_probes_.end()) {
    if (it->second != 0) return SysfsWriteError(path, value, it->second);
    return absl::OkStatus();
  }
  BindNow(bus, device, *chosen);
  if (on_bind_) on_bind_(bus, device, *chosen);
  return absl::OkStatus();
}

absl::Status FakeKernel::SetNumVfs(const std::string& path,
                                   const std::string& pf,
                                   absl::string_view value) {
  auto it = sriov_.find(pf);
  if (it == sriov_.end()) return SysfsWriteError(path, value, EACCES);
  const Sriov& s = it->second;
  int n = -1, current = -1;
  if (!absl::SimpleAtoi(Value(value), &n) || n < 0) {
    return SysfsWriteError(path, value, EINVAL);
  }
  const std::string dir = "/sys/bus/pci/devices/" + pf;
  (void)absl::SimpleAtoi(ReadFile(dir + "/sriov_numvfs"), &current);
  if (n == current) return absl::OkStatus();
  if (!DriverOf("pci", pf).has_value()) {
    return SysfsWriteError(path, value, ENOENT);
  }
  if (n > static_cast<int>(s.vfs.size())) {
    return SysfsWriteError(path, value, ERANGE);
  }
  if (current != 0 && n != 0) return SysfsWriteError(path, value, EBUSY);
  if (n == 0) {
    for (int i = 0; i < current; ++i) {
      const std::string& vf = s.vfs[i];
      UnbindNow("pci", vf);
      if (s.first_group >= 0) {
        Remove(absl::StrCat("/sys/kernel/iommu_groups/", s.first_group + i));
      }
      Remove("/sys/bus/pci/devices/" + vf);
      Remove(absl::StrCat(dir, "/virtfn", i));
    }
  } else {
    uint32_t vendor = 0;
    std::string text = ReadFile(dir + "/vendor");
    Strip(&text, "0x");
    (void)absl::SimpleHexAtoi(text, &vendor);
    const std::optional<std::string> pf_driver = DriverOf("pci", pf);
    for (int i = 0; i < n; ++i) {
      FakePciDevice vf;
      vf.bdf = s.vfs[i];
      vf.vendor = static_cast<uint16_t>(vendor);
      vf.device = s.vf_device;
      vf.group = s.first_group < 0 ? -1 : s.first_group + i;
      AddPciDevice(vf);
      const std::string vf_dir = "/sys/bus/pci/devices/" + vf.bdf;
      Link(vf_dir + "/physfn", dir);
      Link(absl::StrCat(dir, "/virtfn", i), vf_dir);
      // vfio-pci with enable_sriov=1 keeps its VFs for VFIO.
      if (pf_driver == "vfio-pci") {
        WriteFile(vf_dir + "/driver_override", "vfio-pci\n");
      }
    }
  }
  WriteFile(dir + "/sriov_numvfs", absl::StrCat(n, "\n"));
  return absl::OkStatus();
}

absl::Status FakeKernel::CreateMdev(const std::string& path,
                                    const std::string& type_dir,
                                    absl::string_view value) {
  absl::StatusOr<std::string> uuid = NormalizeUuid(Value(value));
  if (!uuid.ok()) return SysfsWriteError(path, value, EINVAL);
  int available = 0;
  (void)absl::SimpleAtoi(ReadFile(type_dir + "/available_instances"),
                         &available);
  if (available <= 0) return SysfsWriteError(path, value, ENOSPC);
  const std::string link = "/sys/bus/mdev/devices/" + *uuid;
  struct stat st;
  if (lstat(P(link).c_str(), &st) == 0) {
    return SysfsWriteError(path, value, EEXIST);
  }
  // The parent's directory holds mdev_supported_types/<type>.
  const std::string parent = Dirname(Dirname(type_dir));
  const std::string instance = absl::StrCat(parent, "/", *uuid);
  Mkdirs(instance);
  WriteFile(instance + "/remove", "");
  Link(instance + "/mdev_type", type_dir);
  Link(link, instance);
  Link(absl::StrCat(type_dir, "/devices/", *uuid), instance);
  WriteFile(type_dir + "/available_instances",
            absl::StrCat(available - 1, "\n"));
  return absl::OkStatus();
}

absl::Status FakeKernel::RemoveMdev(const std::string& path,
                                    const std::string& instance_dir,
                                    absl::string_view value) {
  if (Value(value) != "1") return SysfsWriteError(path, value, EINVAL);
  char buf[PATH_MAX];
  const std::string type_link = P(instance_dir + "/mdev_type");
  const ssize_t n = readlink(type_link.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return SysfsWriteError(path, value, ENODEV);
  // The type directory, resolved from the instance's directory.
  char real_type[PATH_MAX];
  if (realpath(type_link.c_str(), real_type) == nullptr) {
    return SysfsWriteError(path, value, ENODEV);
  }
  std::string type_dir = real_type;
  Strip(&type_dir, root_);
  const std::string uuid = Basename(instance_dir);
  Remove(absl::StrCat(type_dir, "/devices/", uuid));
  Remove("/sys/bus/mdev/devices/" + uuid);
  Remove(instance_dir);
  int available = 0;
  (void)absl::SimpleAtoi(ReadFile(type_dir + "/available_instances"),
                         &available);
  WriteFile(type_dir + "/available_instances",
            absl::StrCat(available + 1, "\n"));
  return absl::OkStatus();
}

absl::Status FakeKernel::Load(const std::string& module) {
  loads_.push_back(module);
  struct stat st;
  if (stat(P("/sys/module/" + module).c_str(), &st) == 0) {
    return absl::OkStatus();
  }
  auto it = loadable_.find(module);
  if (it == loadable_.end()) {
    return absl::NotFoundError(
        absl::StrCat("/sbin/modprobe ", module,
                     " failed (exit status 1): modprobe: FATAL: "
                     "Module ",
                     module, " not found in directory /lib/modules/fake"));
  }
  AddDriver(it->second);
  return absl::OkStatus();
}

}  // namespace migd::host::testing
