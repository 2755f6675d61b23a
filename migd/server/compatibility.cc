#include "migd/server/compatibility.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/client_context.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/migration/device_states.h"
#include "migd/security/identity.h"
#include "migd/server/device_facts.h"
#include "migd/vfio/uapi.h"
#include "proto/migd/v1/transfer.grpc.pb.h"

namespace migd::server {
namespace {

using google::protobuf::util::TimeUtil;
using Kind = v1::MigrationBlocker::Kind;

// The dry run's probe: big enough that its transfer time dwarfs a round
// trip on a LAN, small enough to be cheap (three of them per check).
constexpr size_t kProbeBytes = size_t{4} << 20;
constexpr int kProbes = 3;
constexpr absl::Duration kCallTimeout = absl::Seconds(10);

void Block(v1::DeviceMigratability& d, Kind kind, const std::string& side,
           const std::string& message) {
  v1::MigrationBlocker* b = d.add_blockers();
  b->set_kind(kind);
  b->set_side(side);
  b->set_message(message);
}

// "" for a device no plugin speaks for.
std::string PluginName(const plugins::Binding* b) {
  return b == nullptr || b->plugin == nullptr ? "" : b->plugin->name();
}

}  // namespace

Compatibility::Compatibility(std::unique_ptr<plugins::Registry> registry,
                             std::vector<plugins::LoadFailure> failures,
                             std::string plugin_dir,
                             const std::vector<plugins::DeviceFacts>& facts,
                             migration::DeviceRegistry* devices)
    : registry_(std::move(registry)),
      failures_(std::move(failures)),
      plugin_dir_(std::move(plugin_dir)),
      devices_(devices) {
  std::vector<plugins::DeviceFacts> all;
  for (const std::string& name : devices_->Names()) {
    auto it = std::find_if(
        facts.begin(), facts.end(),
        [&](const plugins::DeviceFacts& f) { return f.name == name; });
    all.push_back(it != facts.end() ? *it : BasicFacts(*devices_->Find(name)));
  }
  bindings_ = plugins::BindDevices(*registry_, all);
  for (const auto& [name, b] : bindings_) {
    if (!b.claim.ok()) {
      base::LogError(b.claim.message());
    } else if (b.plugin != nullptr) {
      base::LogInfo("device ", name, ": plugin ", b.plugin->name(),
                    " speaks for it");
    }
  }
}

const plugins::Binding* Compatibility::Find(const std::string& device) const {
  auto it = bindings_.find(device);
  return it == bindings_.end() ? nullptr : &it->second;
}

v1::ListPluginsResponse Compatibility::List() const {
  v1::ListPluginsResponse out;
  out.set_plugin_dir(plugin_dir_);
  for (const plugins::Plugin* p : registry_->List()) {
    v1::PluginInfo* info = out.add_plugins();
    info->set_name(p->name());
    info->set_version(p->version());
    info->set_description(p->description());
    info->set_path(p->path());
    info->set_abi_version(p->abi_version());
    for (const auto& [name, b] : bindings_) {
      if (b.plugin == p) info->add_devices(name);
    }
  }
  for (const plugins::LoadFailure& f : failures_) {
    v1::PluginLoadFailure* out_f = out.add_failures();
    out_f->set_path(f.path);
    out_f->set_reason(f.reason);
  }
  for (const auto& [name, b] : bindings_) {
    if (!b.claim.ok()) out.add_conflicts(std::string(b.claim.message()));
  }
  return out;
}

absl::StatusOr<std::vector<v1::CompatDescriptor>> Compatibility::Describe(
    const std::vector<std::string>& names) const {
  std::vector<v1::CompatDescriptor> out;
  for (const std::string& name : names) {
    const plugins::Binding* b = Find(name);
    if (b == nullptr) {
      out.emplace_back();
      continue;
    }
    absl::StatusOr<v1::CompatDescriptor> d = plugins::DescribeSource(*b);
    if (!d.ok()) {
      return base::Error(
          absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_INCOMPATIBLE,
          absl::StrCat("device ", name, ": no compatibility descriptor: ",
                       d.status().message()));
    }
    out.push_back(*std::move(d));
  }
  return out;
}

absl::Status Compatibility::CheckSession(
    const v1::SessionHeader& header) const {
  for (const v1::DeviceDescriptor& d : header.devices()) {
    const plugins::Binding* b = Find(d.destination_device());
    device::Device* device = devices_->Find(d.destination_device());
    if (b == nullptr || device == nullptr) continue;  // Attach names it
    absl::StatusOr<vfio::MigFlags> flags = device->GetFlags();
    absl::StatusOr<std::optional<plugins::Incompatibility>> why =
        plugins::CheckDestination(*b, flags.ok() ? *flags : 0, d);
    if (!why.ok()) {
      return base::Error(
          absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_INCOMPATIBLE,
          absl::StrCat(
              "device ", d.destination_device(),
              ": cannot check the source's state: ", why.status().message()));
    }
    if (why->has_value()) {
      return plugins::IncompatibleError(d.destination_device(),
                                        d.source_device(), **why);
    }
  }
  return absl::OkStatus();
}

v1::CheckCompatibilityResponse Compatibility::CheckHere(
    const v1::CheckCompatibilityRequest& request) const {
  v1::CheckCompatibilityResponse out;
  for (const v1::DeviceDescriptor& d : request.devices()) {
    v1::DeviceCompatibility* r = out.add_devices();
    const std::string& name = d.destination_device();
    r->set_destination_device(name);
    r->set_compatible(false);
    device::Device* device = devices_->Find(name);
    const plugins::Binding* b = Find(name);
    if (device == nullptr || b == nullptr) {
      r->set_blocker("device_not_found");
      r->set_message(absl::StrCat("no device ", name, " on this agent"));
      continue;
    }
    r->set_plugin(PluginName(b));
    if (b->plugin != nullptr) {
      absl::StatusOr<plugins::Descriptor> mine = b->plugin->Describe(b->facts);
      if (mine.ok()) r->set_summary(mine->summary);
    }
    if (std::string owner = devices_->Owner(name); !owner.empty()) {
      r->set_blocker("device_busy");
      r->set_message(absl::StrCat("device ", name, " belongs to job ", owner));
      continue;
    }
    if (absl::Status why = device->CheckMigratable(); !why.ok()) {
      r->set_blocker("no_migration_support");
      r->set_message(std::string(why.message()));
      continue;
    }
    absl::StatusOr<vfio::MigState> state = device->GetState();
    if (state.ok()) {
      migration::FoundStateRule rule = migration::RuleForFoundState(
          migration::DeviceRole::kDestination, *state);
      if (rule.action == migration::FoundStateAction::kRefuse) {
        r->set_blocker("device_busy");
        r->set_message(absl::StrCat("device ", name, " is ",
                                    vfio::MigStateName(*state), "; ",
                                    rule.why));
        continue;
      }
    }
    absl::StatusOr<vfio::MigFlags> flags = device->GetFlags();
    absl::StatusOr<std::optional<plugins::Incompatibility>> why =
        plugins::CheckDestination(*b, flags.ok() ? *flags : 0, d);
    if (!why.ok()) {
      r->set_blocker(b->claim.ok() ? "incompatible" : "plugin_conflict");
      r->set_message(std::string(why.status().message()));
      continue;
    }
    if (why->has_value()) {
      const plugins::Incompatibility& i = **why;
      r->set_blocker("incompatible");
      r->set_field(i.field);
      r->set_source_value(i.source_value);
      r->set_destination_value(i.destination_value);
      r->set_message(std::string(
          plugins::IncompatibleError(name, d.source_device(), i).message()));
      continue;
    }
    r->set_compatible(true);
  }
  return out;
}

v1::CheckMigrationResponse Compatibility::CheckMigration(
    const std::vector<v1::DevicePair>& pairs,
    const std::function<std::shared_ptr<grpc::Channel>()>& dial) const {
  v1::CheckMigrationResponse out;
  v1::CheckCompatibilityRequest ask;
  std::vector<std::string> without_p2p;
  uint64_t stop_copy_total = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const v1::DevicePair& p = pairs[i];
    v1::DeviceMigratability* d = out.add_devices();
    d->set_source_device(p.source_device());
    d->set_destination_device(p.destination_device());
    device::Device* device = devices_->Find(p.source_device());
    const plugins::Binding* b = Find(p.source_device());
    if (device == nullptr || b == nullptr) {
      Block(*d, v1::MigrationBlocker::KIND_DEVICE_NOT_FOUND, "source",
            absl::StrCat("no device ", p.source_device(), " on this agent"));
      continue;
    }
    d->set_source_plugin(PluginName(b));
    if (std::string owner = devices_->Owner(p.source_device());
        !owner.empty()) {
      Block(*d, v1::MigrationBlocker::KIND_DEVICE_BUSY, "source",
            absl::StrCat("device ", p.source_device(), " belongs to job ",
                         owner));
    }
    absl::StatusOr<vfio::MigState> state = device->GetState();
    if (state.ok()) {
      migration::FoundStateRule rule =
          migration::RuleForFoundState(migration::DeviceRole::kSource, *state);
      if (rule.action != migration::FoundStateAction::kUse) {
        Block(*d, v1::MigrationBlocker::KIND_DEVICE_BUSY, "source",
              absl::StrCat("device ", p.source_device(), " is ",
                           vfio::MigStateName(*state), "; ", rule.why));
      }
    }
    absl::StatusOr<vfio::MigFlags> flags = device->GetFlags();
    const uint64_t f = flags.ok() ? *flags : 0;
    if (absl::Status why = device->CheckMigratable(); !why.ok()) {
      Block(*d, v1::MigrationBlocker::KIND_NO_MIGRATION_SUPPORT, "source",
            std::string(why.message()));
    } else if ((f & vfio::kMigStopCopy) == 0) {
      Block(*d, v1::MigrationBlocker::KIND_NO_MIGRATION_SUPPORT, "source",
            absl::StrCat("the driver of device ", p.source_device(),
                         b->facts.driver.empty()
                             ? ""
                             : absl::StrCat(" (", b->facts.driver, ")"),
                         " cannot save its state: no VFIO migration "
                         "support (STOP_COPY)"));
    }
    if ((f & vfio::kMigP2P) == 0) without_p2p.push_back(p.source_device());
    if (!b->claim.ok()) {
      Block(*d, v1::MigrationBlocker::KIND_PLUGIN_CONFLICT, "source",
            std::string(b->claim.message()));
    } else if (b->plugin != nullptr) {
      absl::StatusOr<plugins::Capabilities> caps =
          b->plugin->GetCapabilities(b->facts);
      if (caps.ok() && !caps->migratable) {
        Block(*d, v1::MigrationBlocker::KIND_NO_MIGRATION_SUPPORT, "source",
              caps->reason.empty()
                  ? absl::StrCat("plugin ", b->plugin->name(),
                                 " says the device cannot migrate")
                  : caps->reason);
        d->mutable_blockers(d->blockers_size() - 1)->set_remedy(caps->remedy);
      }
    }
    absl::StatusOr<uint64_t> size = device->GetStopCopySize();
    if (size.ok()) {
      d->set_stop_copy_bytes(*size);
      stop_copy_total += *size;
    }
    absl::StatusOr<v1::CompatDescriptor> compat = plugins::DescribeSource(*b);
    if (b->claim.ok() && !compat.ok()) {
      Block(*d, v1::MigrationBlocker::KIND_INCOMPATIBLE, "source",
            absl::StrCat("no compatibility descriptor: ",
                         compat.status().message()));
    }
    v1::DeviceDescriptor* desc = ask.add_devices();
    desc->set_index(i);
    desc->set_source_device(p.source_device());
    desc->set_destination_device(p.destination_device());
    desc->set_kind(device->kind());
    desc->set_migration_flags(f);
    desc->set_state_size_bytes(size.ok() ? *size : 0);
    if (compat.ok()) {
      d->set_source_summary(compat->summary());
      *desc->mutable_compat() = *compat;
    }
  }
  if (pairs.size() > 1 && !without_p2p.empty()) {
    for (v1::DeviceMigratability& d : *out.mutable_devices()) {
      if (std::find(without_p2p.begin(), without_p2p.end(),
                    d.source_device()) == without_p2p.end()) {
        continue;
      }
      Block(d, v1::MigrationBlocker::KIND_P2P_MIX, "source",
            absl::StrCat("device ", d.source_device(),
                         " has no P2P states, and the job has several "
                         "devices: one could be stopped while a peer still "
                         "DMAs into it (StartMigration refuses unless "
                         "policy.allow_mixed_p2p)"));
    }
  }

  // The destination's view, and the bandwidth to it.
  std::shared_ptr<grpc::Channel> channel = dial();
  std::unique_ptr<v1::TransferService::Stub> stub =
      v1::TransferService::NewStub(channel);
  auto call = [&](const v1::CheckCompatibilityRequest& request,
                  v1::CheckCompatibilityResponse* response,
                  absl::Duration* took) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         absl::ToChronoMilliseconds(kCallTimeout));
    const absl::Time t0 = absl::Now();
    grpc::Status s = stub->CheckCompatibility(&context, request, response);
    *took = absl::Now() - t0;
    if (s.ok() && out.destination_identity().empty()) {
      std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
      if (auth != nullptr) {
        out.set_destination_identity(security::PeerIdentity(*auth));
      }
    }
    return s;
  };
  v1::CheckCompatibilityResponse there;
  absl::Duration rtt;
  grpc::Status s = call(ask, &there, &rtt);
  if (!s.ok()) {
    for (v1::DeviceMigratability& d : *out.mutable_devices()) {
      Block(d, v1::MigrationBlocker::KIND_DESTINATION_UNREACHABLE,
            "destination",
            absl::StrCat("the destination did not answer the check: ",
                         s.error_message(), " (",
                         absl::StatusCodeToString(
                             static_cast<absl::StatusCode>(s.error_code())),
                         ")"));
    }
  } else {
    for (int i = 0; i < there.devices_size() && i < out.devices_size(); ++i) {
      const v1::DeviceCompatibility& c = there.devices(i);
      v1::DeviceMigratability& d = *out.mutable_devices(i);
      d.set_destination_plugin(c.plugin());
      d.set_destination_summary(c.summary());
      if (c.compatible()) continue;
      Kind kind = v1::MigrationBlocker::KIND_INCOMPATIBLE;
      if (c.blocker() == "device_not_found") {
        kind = v1::MigrationBlocker::KIND_DEVICE_NOT_FOUND;
      } else if (c.blocker() == "device_busy") {
        kind = v1::MigrationBlocker::KIND_DEVICE_BUSY;
      } else if (c.blocker() == "plugin_conflict") {
        kind = v1::MigrationBlocker::KIND_PLUGIN_CONFLICT;
      } else if (c.blocker() == "no_migration_support") {
        kind = v1::MigrationBlocker::KIND_NO_MIGRATION_SUPPORT;
      }
      Block(d, kind, "destination", c.message());
      v1::MigrationBlocker& b = *d.mutable_blockers(d.blockers_size() - 1);
      b.set_field(c.field());
      b.set_source_value(c.source_value());
      b.set_destination_value(c.destination_value());
    }
    // Bandwidth: the same question with a probe, the fastest of a few (a
    // round trip without the probe taken off).
    v1::CheckCompatibilityRequest probe;
    probe.set_probe(std::string(kProbeBytes, '\0'));
    double best = 0;
    for (int k = 0; k < kProbes; ++k) {
      v1::CheckCompatibilityResponse ignored;
      absl::Duration took;
      if (!call(probe, &ignored, &took).ok()) break;
      const double secs = absl::ToDoubleSeconds(took - rtt);
      if (secs > 0) best = std::max(best, kProbeBytes / secs);
    }
    out.set_bandwidth_bytes_per_second(static_cast<uint64_t>(best));
    if (best > 0) {
      *out.mutable_predicted_downtime() = TimeUtil::NanosecondsToDuration(
          static_cast<int64_t>(stop_copy_total / best * 1e9));
    }
  }
  bool all = true;
  for (v1::DeviceMigratability& d : *out.mutable_devices()) {
    d.set_migratable(d.blockers_size() == 0);
    all = all && d.migratable();
  }
  out.set_migratable(all && out.devices_size() > 0);
  return out;
}

}  // namespace migd::server
