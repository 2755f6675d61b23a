#include "migd/server/vfio_backend.h"

#include <limits.h>
#include <string.h>
#include <unistd.h>

#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "migd/base/log.h"
#include "migd/device/vfio_group.h"
#include "migd/device/vfio_open.h"
#include "migd/vfio/uapi.h"

namespace migd::server {
namespace {

using Source = device::VfioDeviceConfig::Source;

// The first line of a small sysfs file, trimmed; empty when unreadable.
std::string ReadLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return "";
  return std::string(absl::StripAsciiWhitespace(line));
}

// A sysfs id file ("0x1ac3"); 0 when unreadable.
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

class VfioDeviceOpener final : public DeviceOpener {
 public:
  explicit VfioDeviceOpener(const BuildOptions& options)
      : opener_(options.vfio_paths),
        handoff_timeout_(options.handoff_timeout),
        vf_token_for_(options.vf_token_for) {}

  absl::StatusOr<std::unique_ptr<device::Device>> Open(
      const DeviceSpec& spec) override {
    const auto* v = dynamic_cast<const VfioSpec*>(&spec);
    if (v == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("device ", spec.name(), ": a \"", spec.kind(),
                       "\" device given to the vfio backend"));
    }
    const device::VfioDeviceConfig& c = v->config();
    // A VF of a PF this agent owns presents the PF's stored token unless the
    // line gives one.
    std::optional<device::VfioDeviceConfig> with_token;
    if (c.source == Source::kPci && !c.vf_token.has_value() && vf_token_for_) {
      if (std::optional<std::string> pf =
              device::PfOfVf(c.address, opener_.paths())) {
        if (std::optional<std::string> token = vf_token_for_(*pf)) {
          with_token = c;
          with_token->vf_token = std::move(token);
        }
      }
    }
    struct Wipe {
      std::optional<device::VfioDeviceConfig>* c;
      ~Wipe() {
        if (c->has_value() && (*c)->vf_token.has_value()) {
          explicit_bzero((*c)->vf_token->data(), (*c)->vf_token->size());
        }
      }
    } wipe{&with_token};
    auto opened = device::OpenVfioDevice(
        with_token.has_value() ? *with_token : c, opener_, handoff_timeout_);
    if (!opened.ok()) return opened.status();
    absl::StatusOr<vfio::MigFlags> flags = (*opened)->GetFlags();
    base::LogInfo(
        "device ", c.name, ": kernel VFIO device ", (*opened)->address(), " (",
        device::VfioSourceKey(c.source), "=", c.address,
        c.vf_token.has_value()   ? ", with a VF token"
        : with_token.has_value() ? ", with its PF's stored VF token"
                                 : "",
        "), migration flags ", flags.ok() ? vfio::MigFlagsName(*flags) : "?");
    if (absl::Status why = (*opened)->CheckMigratable(); !why.ok()) {
      // Served all the same (listed; migrations of it are refused).
      base::LogWarning(why.message(), "; it cannot be migrated");
    }
    return std::unique_ptr<device::Device>(*std::move(opened));
  }

 private:
  // Shares groups and containers across the devices this build opens; the
  // devices keep what they use open after it goes.
  device::VfioOpener opener_;
  const absl::Duration handoff_timeout_;
  const std::function<std::optional<std::string>(const std::string&)>
      vf_token_for_;
};

}  // namespace

std::optional<std::string> VfioSpec::AddressKey() const {
  return absl::StrCat(device::VfioSourceKey(config_.source), "=",
                      config_.address);
}

void VfioSpec::AddFacts(plugins::DeviceFacts& facts,
                        const device::VfioPaths& paths) const {
  if (config_.source == Source::kPci) {
    facts.pci_address = config_.address;
    AddPci(absl::StrCat(paths.sys, "/bus/pci/devices/", config_.address),
           facts);
  } else if (config_.source == Source::kMdev) {
    const std::string dir =
        absl::StrCat(paths.sys, "/bus/mdev/devices/", config_.address);
    facts.sysfs_path = dir;
    facts.mdev_type = LinkName(dir + "/mdev_type");
    facts.driver = LinkName(dir + "/driver");
  }
}

absl::StatusOr<std::unique_ptr<DeviceSpec>> VfioBackend::Parse(
    absl::string_view line) const {
  absl::StatusOr<device::VfioDeviceConfig> c =
      device::ParseVfioDeviceLine(line);
  if (!c.ok()) return c.status();
  return std::make_unique<VfioSpec>(*std::move(c));
}

std::unique_ptr<DeviceOpener> VfioBackend::NewOpener(
    const BuildOptions& options) const {
  return std::make_unique<VfioDeviceOpener>(options);
}

}  // namespace migd::server
