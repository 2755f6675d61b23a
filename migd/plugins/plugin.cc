#include "migd/plugins/plugin.h"

#include <dlfcn.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "migd/plugin.h"

namespace migd::plugins {
namespace {

// A text buffer for the plugin to fill.
class TextBuffer {
 public:
  explicit TextBuffer(size_t capacity = 1024) : data_(capacity, '\0') {}
  migd_text text() { return migd_text{data_.data(), data_.size()}; }
  // What the plugin wrote, up to the first NUL (a plugin that forgot the NUL
  // is cut at the capacity).
  std::string str() const {
    return std::string(data_.data(), strnlen(data_.data(), data_.size()));
  }

 private:
  std::vector<char> data_;
};

// The agent's view of a device, as the C struct; valid while `facts` lives.
migd_device_info ToC(const DeviceFacts& facts) {
  auto or_null = [](const std::string& s) {
    return s.empty() ? nullptr : s.c_str();
  };
  migd_device_info info{};
  info.struct_size = sizeof(info);
  info.name = facts.name.c_str();
  info.backend = facts.backend.c_str();
  info.pci_address = or_null(facts.pci_address);
  info.vendor_id = facts.vendor_id;
  info.device_id = facts.device_id;
  info.subsystem_vendor_id = facts.subsystem_vendor_id;
  info.subsystem_device_id = facts.subsystem_device_id;
  info.driver = or_null(facts.driver);
  info.modalias = or_null(facts.modalias);
  info.mdev_type = or_null(facts.mdev_type);
  info.sysfs_path = or_null(facts.sysfs_path);
  info.migration_flags = facts.migration_flags;
  info.parameters = or_null(facts.parameters);
  return info;
}

// Every ABI version has the members up to and including claim.
constexpr size_t kMinimumTableSize =
    offsetof(migd_plugin, claim) + sizeof(migd_plugin::claim);

bool ValidName(const char* name) {
  if (name == nullptr || *name == '\0' || strlen(name) > 64) return false;
  for (const char* p = name; *p != '\0'; ++p) {
    const bool ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                    *p == '_' || *p == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

template <typename Member>
bool Plugin::Has(Member migd_plugin::*member) const {
  // Where the member ends in the table, measured on the table itself.
  const char* base = reinterpret_cast<const char*>(table_);
  const char* field = reinterpret_cast<const char*>(&(table_->*member));
  const size_t end = static_cast<size_t>(field - base) + sizeof(Member);
  return end <= table_->struct_size && (table_->*member) != nullptr;
}

absl::StatusOr<std::unique_ptr<Plugin>> Plugin::Adopt(const migd_plugin* table,
                                                      void* handle,
                                                      const std::string& path,
                                                      PluginLog log) {
  auto refuse = [&](const std::string& why) {
    if (handle != nullptr) dlclose(handle);
    return absl::FailedPreconditionError(
        absl::StrCat("plugin ", path, ": ", why));
  };
  if (table == nullptr) return refuse("its entry point returned no table");
  if (table->abi_version > MIGD_PLUGIN_ABI_VERSION) {
    return refuse(absl::StrCat(
        "built for plugin ABI version ", table->abi_version,
        ", newer than this agent's version ", MIGD_PLUGIN_ABI_VERSION,
        " (upgrade migd, or use a plugin built for ABI ",
        MIGD_PLUGIN_ABI_VERSION, ")"));
  }
  if (table->abi_version == 0) {
    return refuse("its table says ABI version 0, which no agent has");
  }
  if (table->struct_size < kMinimumTableSize) {
    return refuse(absl::StrCat("its table is ", table->struct_size,
                               " bytes, smaller than the ", kMinimumTableSize,
                               " every ABI version has"));
  }
  if (!ValidName(table->name)) {
    return refuse(absl::StrCat("its name \"",
                               table->name == nullptr ? "" : table->name,
                               "\" is not 1-64 characters of [a-z0-9_-]"));
  }
  if (table->claim == nullptr) return refuse("it has no claim function");

  std::unique_ptr<Plugin> p(new Plugin());
  p->table_ = table;
  p->log_ = std::move(log);
  p->name_ = table->name;
  p->version_ = table->version == nullptr ? "" : table->version;
  p->description_ = table->description == nullptr ? "" : table->description;
  p->path_ = path;
  p->host_ = std::make_unique<migd_host>();
  p->host_->struct_size = sizeof(migd_host);
  p->host_->host_context = p.get();
  p->host_->log = [](void* context, int level, const char* message) {
    auto* self = static_cast<Plugin*>(context);
    if (self->log_) self->log_(self->name_, level, message ? message : "");
  };
  if (p->Has(&migd_plugin::create)) {
    TextBuffer error;
    const int rc = table->create(p->host_.get(), &p->context_, error.text());
    if (rc != 0) {
      p->table_ = nullptr;  // no destroy for what was not created
      if (handle != nullptr) dlclose(handle);
      return absl::FailedPreconditionError(
          absl::StrCat("plugin ", path, " (", p->name_, "): create failed: ",
                       error.str().empty() ? strerror(-rc) : error.str()));
    }
  }
  // The handle is closed last, after destroy (in the destructor).
  p->handle_ = handle;
  return p;
}

Plugin::~Plugin() {
  if (table_ != nullptr && Has(&migd_plugin::destroy)) {
    table_->destroy(context_);
  }
  if (handle_ != nullptr) dlclose(handle_);
}

uint32_t Plugin::abi_version() const { return table_->abi_version; }

int Plugin::Claim(const DeviceFacts& device) const {
  migd_device_info info = ToC(device);
  const int score = table_->claim(context_, &info);
  return score < 0 ? 0 : score;
}

absl::Status Plugin::Failed(const char* what, const DeviceFacts& device, int rc,
                            const std::string& text) const {
  return absl::InternalError(
      absl::StrCat("plugin ", name_, ": ", what, " for device ", device.name,
                   " failed: ", text.empty() ? strerror(-rc) : text));
}

absl::StatusOr<Capabilities> Plugin::GetCapabilities(
    const DeviceFacts& device) const {
  if (!Has(&migd_plugin::capabilities)) {
    return absl::UnimplementedError(
        absl::StrCat("plugin ", name_, " reports no capabilities"));
  }
  migd_device_info info = ToC(device);
  TextBuffer reason, remedy, error;
  migd_capabilities c{};
  c.struct_size = sizeof(c);
  c.migratable = 1;
  c.reason = reason.text();
  c.remedy = remedy.text();
  const int rc = table_->capabilities(context_, &info, &c, error.text());
  if (rc != 0) return Failed("capabilities", device, rc, error.str());
  Capabilities out;
  out.migratable = c.migratable != 0;
  out.reason = reason.str();
  out.remedy = remedy.str();
  out.migration_flags = c.migration_flags;
  out.dirty_tracking = c.dirty_tracking == nullptr ? "" : c.dirty_tracking;
  out.dirty_page_sizes = c.dirty_page_sizes;
  out.max_concurrent_per_parent = c.max_concurrent_per_parent;
  out.max_state_bytes = c.max_state_bytes;
  return out;
}

absl::StatusOr<Descriptor> Plugin::Describe(const DeviceFacts& device) const {
  if (!Has(&migd_plugin::describe)) {
    return absl::UnimplementedError(
        absl::StrCat("plugin ", name_, " makes no descriptors"));
  }
  migd_device_info info = ToC(device);
  std::vector<uint8_t> bytes(4096);
  for (int attempt = 0; attempt < 2; ++attempt) {
    TextBuffer summary, error;
    migd_bytes out{bytes.data(), bytes.size(), 0};
    const int rc =
        table_->describe(context_, &info, &out, summary.text(), error.text());
    if (rc == -ENOSPC && attempt == 0 && out.length > bytes.size() &&
        out.length <= (size_t{1} << 20)) {
      bytes.resize(out.length);
      continue;
    }
    if (rc != 0) return Failed("describe", device, rc, error.str());
    if (out.length > bytes.size()) {
      return Failed("describe", device, -EPROTO,
                    "it reported more bytes than the buffer holds");
    }
    return Descriptor{
        std::string(reinterpret_cast<const char*>(bytes.data()), out.length),
        summary.str()};
  }
  return Failed("describe", device, -ENOSPC,
                "its descriptor does not fit in 1 MiB");
}

absl::StatusOr<Verdict> Plugin::Check(const DeviceFacts& device,
                                      const std::string& descriptor) const {
  if (!Has(&migd_plugin::check)) {
    return absl::UnimplementedError(
        absl::StrCat("plugin ", name_, " checks no descriptors"));
  }
  migd_device_info info = ToC(device);
  TextBuffer field(256), source(512), destination(512), message, error;
  migd_verdict v{};
  v.struct_size = sizeof(v);
  v.compatible = 1;
  v.field = field.text();
  v.source_value = source.text();
  v.destination_value = destination.text();
  v.message = message.text();
  const int rc = table_->check(
      context_, &info, reinterpret_cast<const uint8_t*>(descriptor.data()),
      descriptor.size(), &v, error.text());
  if (rc != 0) return Failed("check", device, rc, error.str());
  return Verdict{v.compatible != 0, field.str(), source.str(),
                 destination.str(), message.str()};
}

absl::Status Plugin::PrepareHost(const DeviceFacts& device) const {
  if (!Has(&migd_plugin::prepare_host)) return absl::OkStatus();
  migd_device_info info = ToC(device);
  TextBuffer error;
  const int rc = table_->prepare_host(context_, &info, error.text());
  if (rc != 0) return Failed("preparing the host", device, rc, error.str());
  return absl::OkStatus();
}

absl::StatusOr<std::string> Plugin::PreferredDriver(
    const DeviceFacts& device) const {
  if (!Has(&migd_plugin::preferred_driver)) return "";
  migd_device_info info = ToC(device);
  TextBuffer module(128), error;
  const int rc =
      table_->preferred_driver(context_, &info, module.text(), error.text());
  if (rc != 0) return Failed("choosing a driver", device, rc, error.str());
  return module.str();
}

std::string Plugin::ExplainErrno(const DeviceFacts& device,
                                 const std::string& operation, int err) const {
  if (!Has(&migd_plugin::explain_errno)) return "";
  migd_device_info info = ToC(device);
  TextBuffer explanation;
  if (table_->explain_errno(context_, &info, operation.c_str(), err,
                            explanation.text()) != 0) {
    return "";
  }
  return explanation.str();
}

}  // namespace migd::plugins
