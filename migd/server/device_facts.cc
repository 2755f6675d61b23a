#include "migd/server/device_facts.h"

#include <limits.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace migd::server {
namespace {

// The first line of a small sysfs file, trimmed; empty when unreadable.
std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  return std::string(absl::StripAsciiWhitespace(line));
}

// A sysfs id file ("0x15b3"); 0 when unreadable.
uint16_t ReadId(const std::string& path) {
  uint32_t v = 0;
  std::string text = ReadLine(path);
  if (!absl::SimpleHexAtoi(text, &v) || v > 0xffff) return 0;
  return static_cast<uint16_t>(v);
}

// The last component of a symlink's target ("../../bus/pci/drivers/vfio-pci"
// -> "vfio-pci"); empty when not a link.
std::string LinkName(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = readlink(path.c_str(), buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string target(buf, static_cast<size_t>(n));
  size_t slash = target.rfind('/');
  return slash == std::string::npos ? target : target.substr(slash + 1);
}

void AddPci(const std::string& dir, plugins::DeviceFacts& f) {
  f.sysfs_path = dir;
  f.vendor_id = ReadId(dir + "/vendor");
  f.device_id = ReadId(dir + "/device");
  f.subsystem_vendor_id = ReadId(dir + "/subsystem_vendor");
  f.subsystem_device_id = ReadId(dir + "/subsystem_device");
  f.modalias = ReadLine(dir + "/modalias");
  f.driver = LinkName(dir + "/driver");
}

}  // namespace

plugins::DeviceFacts BasicFacts(device::Device& device) {
  plugins::DeviceFacts f;
  f.name = device.name();
  f.backend = device.kind();
  absl::StatusOr<vfio::MigFlags> flags = device.GetFlags();
  if (flags.ok()) f.migration_flags = *flags;
  return f;
}

std::vector<plugins::DeviceFacts> FactsOf(
    const std::vector<DeviceConfig>& configs,
    const migration::DeviceRegistry& devices, const device::VfioPaths& paths) {
  std::vector<plugins::DeviceFacts> out;
  for (const DeviceConfig& config : configs) {
    device::Device* d = devices.Find(DeviceConfigName(config));
    if (d == nullptr) continue;
    plugins::DeviceFacts f = BasicFacts(*d);
    if (const auto* e = std::get_if<device::EmulatedDeviceConfig>(&config)) {
      f.parameters =
          absl::StrCat("format=", e->state_format, " size=", e->state_size);
    } else {
      const auto& v = std::get<device::VfioDeviceConfig>(config);
      using Source = device::VfioDeviceConfig::Source;
      if (v.source == Source::kPci) {
        f.pci_address = v.address;
        AddPci(absl::StrCat(paths.sys, "/bus/pci/devices/", v.address), f);
      } else if (v.source == Source::kMdev) {
        const std::string dir =
            absl::StrCat(paths.sys, "/bus/mdev/devices/", v.address);
        f.sysfs_path = dir;
        f.mdev_type = LinkName(dir + "/mdev_type");
        f.driver = LinkName(dir + "/driver");
      }
    }
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace migd::server
