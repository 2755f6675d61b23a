#include "migd/server/migration_service.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <tuple>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/dirty/tracker.h"
#include "migd/host/allocator.h"
#include "migd/host/names.h"
#include "migd/migration/destination_job.h"
#include "migd/migration/source_job.h"
#include "migd/security/identity.h"
#include "migd/security/tls_context.h"
#include "migd/server/validate.h"
#include "migd/transfer/data_connection.h"
#include "migd/transfer/framing.h"
#include "migd/transfer/grpc_status.h"

namespace migd::server {
namespace {

using ::google::protobuf::util::TimeUtil;
using transfer::ToGrpcStatus;

using transfer::kMaxChunkBytes;
using transfer::kMinChunkBytes;

using base::InvalidRequest;

// A positive policy duration, or `fallback` when unset.
absl::Status PolicyDuration(bool has, const google::protobuf::Duration& value,
                            absl::string_view name, absl::Duration fallback,
                            absl::Duration* out) {
  if (!has) {
    *out = fallback;
    return absl::OkStatus();
  }
  int64_t ns = TimeUtil::DurationToNanoseconds(value);
  if (ns <= 0) {
    return InvalidRequest(absl::StrCat("policy.", name, " must be positive"));
  }
  *out = absl::Nanoseconds(ns);
  return absl::OkStatus();
}

// The keepalive of a source job's connections to the destination
// (security::Keepalive). A source that queued everything it has and waits
// for an acknowledgement or the completion sends nothing, so without pings
// a partition goes unnoticed until a much longer wait ends (the switchover
// acknowledgement's, 60 s by default). With them its calls fail within
// about 5/6 of the phase timeout of the last thing read, sooner than a
// destination that hears nothing gives up; and a destination may take half
// the phase timeout to answer a ping (one queued behind the data on a slow
// link, say) before it is taken for gone. Pings no more often than the
// server side allows, no less often than every 20 s.
security::Keepalive TransferKeepalive(absl::Duration phase_timeout) {
  return {
      .interval = std::clamp(phase_timeout / 3, security::kMinKeepaliveInterval,
                             absl::Seconds(20)),
      .timeout =
          std::clamp(phase_timeout / 2, absl::Seconds(1), absl::Seconds(30))};
}

// "pci_ids=1ac3:0101 agent_kind=emulated": a class as a request gave it.
std::string DescribeDestinationClass(const v1::DeviceClass& c) {
  std::vector<std::string> parts;
  if (!c.pci_ids().empty()) parts.push_back("pci_ids=" + c.pci_ids());
  if (!c.agent_kind().empty()) parts.push_back("agent_kind=" + c.agent_kind());
  if (!c.mdev_type().empty()) parts.push_back("mdev_type=" + c.mdev_type());
  if (!c.mdev_parent().empty()) {
    parts.push_back("mdev_parent=" + c.mdev_parent());
  }
  return parts.empty() ? "(empty)" : absl::StrJoin(parts, " ");
}

// Whether a device whose ids are `have` ("vvvv:dddd:svvv:sddd") is of
// class `want`.
bool IdsMatch(const std::string& have, const host::PciIds& want) {
  absl::StatusOr<host::PciIds> ids = host::ParsePciIds(have);
  if (!ids.ok() || ids->vendor != want.vendor || ids->device != want.device) {
    return false;
  }
  return !want.subsystem_vendor.has_value() ||
         (ids->subsystem_vendor == want.subsystem_vendor &&
          ids->subsystem_device == want.subsystem_device);
}

// Closes and removes the devices `added` (a PrepareIncoming allocated them
// for `job`), then releases the job's allocations; logs what fails.
// Idempotent: a device already gone is skipped.
// FAILED_PRECONDITION (DEVICE_ERROR) naming the first of `names` that can
// take part in no migration (a kernel device whose driver offers no VFIO
// migration), before a job claims it; devices not found are the claim's to
// name. DEVICE_ERROR, not INCOMPATIBLE: the device itself cannot migrate,
// whatever the other side has; the remedy is on this host (another driver).
absl::Status RefuseUnmigratable(migration::DeviceRegistry& devices,
                                const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    device::Device* d = devices.Find(name);
    if (d == nullptr) continue;
    if (absl::Status s = d->CheckMigratable(); !s.ok()) {
      return base::Error(absl::StatusCode::kFailedPrecondition,
                         v1::ERROR_REASON_DEVICE_ERROR, s.message());
    }
  }
  return absl::OkStatus();
}

void DropAllocated(
    migration::DeviceRegistry* devices,
    const std::function<absl::Status(const std::string&)>& release,
    const std::string& job, const std::map<std::string, std::string>& added) {
  if (added.empty()) return;
  for (const auto& [name, address] : added) {
    // Closes the device (once a ListDevices holding it lets go).
    if (absl::Status s = devices->Remove(name);
        !s.ok() && !absl::IsNotFound(s)) {
      base::LogError("job ", job, ": allocated device ", name, " (", address,
                     ") not removed: ", s.message());
    }
  }
  if (release) {
    if (absl::Status s = release(job); !s.ok()) {
      base::LogError("job ", job,
                     ": releasing its allocated devices failed: ", s.message(),
                     " (migctl host release ", job, ")");
    } else {
      base::LogInfo("job ", job, ": released ", added.size(),
                    " allocated device(s)");
    }
  }
}

}  // namespace

namespace {

MigrationServiceOptions WithCredentials(MigrationServiceOptions options) {
  if (options.credentials == nullptr) {
    options.credentials = security::Credentials::Insecure();
  }
  return options;
}

}  // namespace

std::string AllocatedDeviceName(absl::string_view job, int n) {
  return absl::StrCat("alloc-", job, "-", n);
}

absl::Status CloseAllocatedDevices(migration::DeviceRegistry& devices,
                                   absl::string_view job) {
  // "alloc-<job>-<digits>": a job id has no digits-only tail after a '-'
  // of its own that could make one job's name another's (job "a" owns
  // "alloc-a-1", job "a-1" owns "alloc-a-1-0").
  const std::string prefix = absl::StrCat("alloc-", job, "-");
  std::vector<std::string> names;
  for (const std::string& name : devices.Names()) {
    absl::string_view rest = name;
    if (!absl::ConsumePrefix(&rest, prefix) || rest.empty() ||
        !std::all_of(rest.begin(), rest.end(), absl::ascii_isdigit)) {
      continue;
    }
    if (std::string holder = devices.Owner(name); !holder.empty()) {
      return base::Error(
          absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_BUSY,
          absl::StrCat("device ", name, " is held by job ", holder,
                       ": it ends first (or is cancelled)"));
    }
    names.push_back(name);
  }
  for (const std::string& name : names) {
    if (absl::Status s = devices.Remove(name);
        !s.ok() && !absl::IsNotFound(s)) {
      return s;
    }
    base::LogInfo("job ", job, ": closed its allocated device ", name,
                  " for the release");
  }
  return absl::OkStatus();
}

MigrationServiceImpl::MigrationServiceImpl(migration::DeviceRegistry* devices,
                                           migration::JobTable* jobs,
                                           MigrationServiceOptions options)
    : devices_(devices),
      jobs_(jobs),
      options_(WithCredentials(std::move(options))),
      gate_(options_.max_concurrent_migrations) {}

absl::StatusOr<std::vector<device::Device*>>
MigrationServiceImpl::ReserveAndClaim(
    const std::string& id, const std::vector<migration::DevicePair>& pairs) {
  if (absl::Status s = jobs_->Reserve(id); !s.ok()) return s;
  std::vector<std::string> names;
  for (const auto& p : pairs) names.push_back(p.local);
  auto claimed = devices_->Claim(names, id);
  if (!claimed.ok()) jobs_->Unreserve(id);
  return claimed;
}

grpc::Status MigrationServiceImpl::ListDevices(
    grpc::ServerContext* context, const v1::ListDevicesRequest* request,
    v1::ListDevicesResponse* response) {
  for (const std::string& name : devices_->Names()) {
    // Held: an allocated device removed meanwhile stays open until done.
    std::shared_ptr<device::Device> d = devices_->Hold(name);
    if (d == nullptr) continue;
    v1::Device* out = response->add_devices();
    out->set_name(name);
    out->set_kind(d->kind());
    out->set_job_id(devices_->Owner(name));
    if (auto flags = d->GetFlags(); flags.ok())
      out->set_migration_flags(*flags);
    if (auto state = d->GetState(); state.ok()) {
      out->set_state(static_cast<v1::DeviceState>(*state));
    }
    if (auto size = d->GetStopCopySize(); size.ok()) {
      out->set_state_size_bytes(*size);
    }
    if (auto digest = d->StateDigest(); digest.ok()) {
      out->set_state_digest(*digest);
    }
  }
  return grpc::Status::OK;
}

void MigrationServiceImpl::FillHostAddresses(
    std::vector<migration::DevicePair>& pairs,
    const std::map<std::string, std::string>& extra) const {
  for (migration::DevicePair& p : pairs) {
    if (auto it = extra.find(p.local); it != extra.end()) {
      p.host_address = it->second;
    } else if (auto f = options_.host_facts.find(p.local);
               f != options_.host_facts.end()) {
      p.host_address = f->second.host_address;
    }
  }
}

absl::Status MigrationServiceImpl::PickByClass(
    const std::string& job,
    google::protobuf::RepeatedPtrField<v1::DevicePair>* pairs,
    std::map<std::string, std::string>* added) {
  std::set<std::string> taken;  // named by this request, or picked
  for (const v1::DevicePair& p : *pairs) {
    if (!p.destination_device().empty()) taken.insert(p.destination_device());
  }
  int n = 0;
  for (int i = 0; i < pairs->size(); ++i) {
    v1::DevicePair& p = (*pairs)[i];
    if (!p.has_destination_class()) continue;
    const v1::DeviceClass& c = p.destination_class();
    const std::string what =
        absl::StrCat("devices[", i, "] (source ", p.source_device(),
                     "): destination_class ", DescribeDestinationClass(c));
    if (p.source_device().empty()) {
      return InvalidRequest(absl::StrCat(what, ": source_device is empty"));
    }
    const bool mdev = !c.mdev_type().empty();
    if (!mdev && !c.mdev_parent().empty()) {
      return InvalidRequest(
          absl::StrCat(what, ": mdev_parent is for an mdev_type class"));
    }
    if (mdev && !c.pci_ids().empty()) {
      return InvalidRequest(
          absl::StrCat(what, ": name pci_ids or mdev_type, not both"));
    }
    if (mdev && !c.agent_kind().empty() && c.agent_kind() != "vfio") {
      return InvalidRequest(absl::StrCat(
          what, ": an mdev instance is a vfio device, not ", c.agent_kind()));
    }
    if (c.pci_ids().empty() && c.agent_kind().empty() && !mdev) {
      return InvalidRequest(
          absl::StrCat(what, ": name pci_ids, mdev_type or agent_kind"));
    }
    if (mdev) {
      // Always a new instance: the configured devices' mdev types are not
      // known here, and an instance of the job's own is removed with it.
      if (absl::Status s = AllocateForPair(job, what, "", n++, p, added);
          !s.ok()) {
        return s;
      }
      taken.insert(p.destination_device());
      continue;
    }
    std::optional<host::PciIds> ids;
    if (!c.pci_ids().empty()) {
      absl::StatusOr<host::PciIds> parsed = host::ParsePciIds(c.pci_ids());
      if (!parsed.ok()) {
        return InvalidRequest(
            absl::StrCat(what, ": ", parsed.status().message()));
      }
      ids = *parsed;
    }
    // (a) one of the agent's configured devices, free.
    std::vector<std::string> held;
    std::string pick;
    for (const std::string& name : devices_->Names()) {
      device::Device* d = devices_->Find(name);
      if (d == nullptr) continue;
      if (!c.agent_kind().empty() && d->kind() != c.agent_kind()) continue;
      if (ids.has_value()) {
        auto f = options_.host_facts.find(name);
        if (f == options_.host_facts.end() ||
            !IdsMatch(f->second.pci_ids, *ids)) {
          continue;
        }
      }
      if (taken.count(name) > 0) {
        held.push_back(absl::StrCat(name, " (named by this request)"));
        continue;
      }
      if (std::string owner = devices_->Owner(name); !owner.empty()) {
        held.push_back(absl::StrCat(name, " by job ", owner));
        continue;
      }
      if (!d->CheckMigratable().ok()) {
        held.push_back(absl::StrCat(name, " (its driver offers no migration)"));
        continue;
      }
      pick = name;
      break;
    }
    if (!pick.empty()) {
      p.set_destination_device(pick);
      taken.insert(pick);
      continue;
    }
    // (b) a PCI device of the class the host allocator picks.
    if (ids.has_value() &&
        (c.agent_kind().empty() || c.agent_kind() == "vfio") &&
        options_.allocate && options_.open_vfio) {
      const std::string why =
          held.empty()
              ? std::string("none of this agent's devices matches")
              : absl::StrCat("this agent's matching devices are all held (",
                             absl::StrJoin(held, ", "), ")");
      if (absl::Status s = AllocateForPair(job, what, why, n++, p, added);
          !s.ok()) {
        return s;
      }
      taken.insert(p.destination_device());
      continue;
    }
    if (held.empty()) {
      return base::Error(
          absl::StatusCode::kNotFound, v1::ERROR_REASON_DEVICE_NOT_FOUND,
          absl::StrCat(what, ": no device of this agent is of the class"));
    }
    return base::Error(
        absl::StatusCode::kFailedPrecondition, v1::ERROR_REASON_DEVICE_BUSY,
        absl::StrCat(what, ": no free device of the class: ", held.size(),
                     " candidate", held.size() == 1 ? "" : "s", ", all held (",
                     absl::StrJoin(held, ", "), ")"));
  }
  return absl::OkStatus();
}

absl::Status MigrationServiceImpl::AllocateForPair(
    const std::string& job, const std::string& what, const std::string& why,
    int n, v1::DevicePair& pair, std::map<std::string, std::string>* added) {
  const v1::DeviceClass& c = pair.destination_class();
  const bool mdev = !c.mdev_type().empty();
  if (!options_.allocate || !options_.open_vfio) {
    return base::Error(absl::StatusCode::kFailedPrecondition,
                       v1::ERROR_REASON_HOST_PRECONDITION,
                       absl::StrCat(what,
                                    ": this agent allocates no devices (it "
                                    "serves no HostService allocator)"));
  }
  v1::DeviceClass wanted;
  if (mdev) {
    wanted.set_mdev_type(c.mdev_type());
    wanted.set_mdev_parent(c.mdev_parent());
  } else {
    wanted.set_pci_ids(c.pci_ids());
  }
  absl::StatusOr<v1::AllocatedDevice> a =
      options_.allocate(job, pair.source_device(), wanted);
  if (!a.ok()) {
    return base::Annotate(
        a.status(),
        absl::StrCat(what, ": ", why.empty() ? "" : absl::StrCat(why, "; "),
                     mdev ? "creating an instance" : "allocating one",
                     " failed"));
  }
  // The host address: a PCI address, or the new instance's UUID.
  const std::string address = mdev ? a->mdev_uuid() : a->address();
  const std::string name = AllocatedDeviceName(job, n);
  // From here on the prepare's failure (or the job's end) releases it.
  (*added)[name] = address;
  const std::string made =
      mdev ? absl::StrCat("created mdev ", address, " of type ", a->mdev_type(),
                          " on ", a->mdev_parent())
           : absl::StrCat("allocated ", address);
  absl::StatusOr<std::unique_ptr<device::Device>> opened =
      options_.open_vfio(name, absl::StrCat(mdev ? "mdev=" : "bdf=", address));
  if (!opened.ok()) {
    return base::Annotate(
        opened.status(),
        absl::StrCat(what, ": ", made, ", but opening it failed"));
  }
  if (absl::Status s = devices_->Add(*std::move(opened)); !s.ok()) {
    return base::Annotate(s, what);
  }
  base::LogInfo("job ", job, ": ", what, ": ", made, " as device ", name,
                why.empty() ? "" : absl::StrCat(" (", why, ")"));
  pair.set_destination_device(name);
  return absl::OkStatus();
}

grpc::Status MigrationServiceImpl::PrepareIncoming(
    grpc::ServerContext* context, const v1::PrepareIncomingRequest* request,
    v1::PrepareIncomingResponse* response) {
  const std::string& id = request->job_id();
  if (absl::Status s = ValidateJobId(id); !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  if (request->devices().empty()) {
    return ToGrpcStatus(InvalidRequest("devices is empty"), context);
  }
  bool by_class = false;
  for (int i = 0; i < request->devices_size(); ++i) {
    const v1::DevicePair& p = request->devices(i);
    if (!p.has_destination_class()) continue;
    if (!p.destination_device().empty()) {
      return ToGrpcStatus(
          InvalidRequest(absl::StrCat(
              "devices[", i,
              "]: destination_device and destination_class are both set; "
              "give one")),
          context);
    }
    by_class = true;
  }
  // The token is bound to the source's identity; without TLS there is none
  // to bind to, and naming one would promise a check that cannot happen.
  if (absl::Status s = ValidateIdentity("source_identity",
                                        request->source_identity(), secure());
      !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  if (!secure() && !request->source_identity().empty()) {
    return ToGrpcStatus(
        InvalidRequest("source_identity cannot be checked: this agent runs "
                       "with --insecure (no certificates, no identities)"),
        context);
  }
  // Devices picked by class are allocated, opened and added for this job:
  // closed, removed and released when it ends or the prepare fails.
  std::map<std::string, std::string> added;
  const auto drop = [devices = devices_, release = options_.release_allocations,
                     id](const std::map<std::string, std::string>& names) {
    DropAllocated(devices, release, id, names);
  };
  std::vector<migration::DevicePair> pairs;
  absl::StatusOr<std::vector<device::Device*>> claimed;
  {
    // Picking by class and claiming are one step: two prepares never pick
    // the same free device.
    absl::MutexLock lock(&pick_mu_);
    if (absl::Status s = jobs_->Reserve(id); !s.ok()) {
      return ToGrpcStatus(s, context);
    }
    const auto fail = [&](const absl::Status& s) {
      drop(added);
      jobs_->Unreserve(id);
      if (by_class) {
        base::LogWarning("job ", id,
                         ": prepare by class failed: ", base::StatusText(s));
      }
      return ToGrpcStatus(s, context);
    };
    google::protobuf::RepeatedPtrField<v1::DevicePair> resolved =
        request->devices();
    if (by_class) {
      if (absl::Status s = PickByClass(id, &resolved, &added); !s.ok()) {
        return fail(s);
      }
    }
    absl::StatusOr<std::vector<migration::DevicePair>> validated =
        ValidateDevicePairs(resolved, false);
    if (!validated.ok()) return fail(validated.status());
    pairs = *std::move(validated);
    FillHostAddresses(pairs, added);
    std::vector<std::string> names;
    for (const migration::DevicePair& p : pairs) names.push_back(p.local);
    if (absl::Status s = RefuseUnmigratable(*devices_, names); !s.ok()) {
      return fail(s);
    }
    claimed = devices_->Claim(names, id);
    if (!claimed.ok()) return fail(claimed.status());
  }
  auto job = std::make_shared<migration::Job>(
      id, v1::ROLE_DESTINATION, request->source(), pairs, options_.observers);
  migration::DeviceRegistry* devices = devices_;
  // Set once the job exists: its end callback asks it whether a device
  // loaded the VM's state.
  auto self = std::make_shared<std::weak_ptr<migration::DestinationJob>>();
  auto prepared = migration::DestinationJob::Prepare(
      job, *claimed,
      [devices, id, drop, added, self] {
        devices->Release(id);
        // A device that loaded the VM's state runs the VM (the job
        // succeeded), or holds the only copy of it until someone decides:
        // it stays open and allocated until the owner releases it.
        if (std::shared_ptr<migration::DestinationJob> dj = self->lock();
            dj != nullptr && dj->loaded_any() && !added.empty()) {
          base::LogInfo("job ", id, ": keeping its ", added.size(),
                        " allocated device(s), which hold the VM's state "
                        "(migctl host release ",
                        id, " gives them back)");
          return;
        }
        drop(added);
      },
      options_.transfer_memory_cap, options_.default_phase_timeout,
      request->source_identity(), options_.token_ttl);
  if (!prepared.ok()) {
    // The job ends for its observers (metrics count the refusal; the
    // journal records an end only of a job it has seen), then is dropped.
    job->Finish(prepared.status());
    devices_->Release(id);
    drop(added);
    jobs_->Unreserve(id);
    base::LogWarning("job ", id,
                     ": prepare failed: ", base::StatusText(prepared.status()));
    return ToGrpcStatus(prepared.status(), context);
  }
  if (const Compatibility* compat = options_.compatibility; compat != nullptr) {
    (*prepared)->SetSessionCheck([compat](const v1::SessionHeader& header) {
      return compat->CheckSession(header);
    });
  }
  *self = *prepared;
  response->set_transfer_token((*prepared)->token());
  *response->mutable_token_expires() = TimeUtil::NanosecondsToTimestamp(
      absl::ToUnixNanos((*prepared)->token_expires()));
  jobs_->AddDestination(*std::move(prepared));
  *response->mutable_migration() = job->Snapshot();
  base::LogInfo(
      "job ", id, ": prepared ", pairs.size(), " incoming device(s) from ",
      request->source().empty() ? "(unnamed source)" : request->source(),
      secure() ? absl::StrCat(", token bound to ", request->source_identity())
               : "");
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::StartMigration(
    grpc::ServerContext* context, const v1::StartMigrationRequest* request,
    v1::Migration* response) {
  const std::string& id = request->job_id();
  if (absl::Status s = ValidateJobId(id); !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  auto pairs = ValidateDevicePairs(request->devices(), true);
  if (!pairs.ok()) return ToGrpcStatus(pairs.status(), context);
  if (absl::Status s = ValidateAddress("destination", request->destination());
      !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  if (request->transfer_token().empty()) {
    return ToGrpcStatus(
        InvalidRequest(
            "transfer_token is empty (PrepareIncoming on the destination "
            "returns it)"),
        context);
  }
  if (absl::Status s = ValidateIdentity("destination_identity",
                                        request->destination_identity(), false);
      !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  if (!secure() && !request->destination_identity().empty()) {
    return ToGrpcStatus(
        InvalidRequest("destination_identity cannot be checked: this agent "
                       "runs with --insecure (no certificates, no "
                       "identities)"),
        context);
  }
  migration::SourceJobOptions opts;
  opts.destination = request->destination();
  opts.token = request->transfer_token();
  // The outcome question, if it comes to that, goes to the same agent: the
  // identity the handshake verified (which the job records) is the one the
  // request named, or the one the address's host has.
  opts.dial_control = [credentials = options_.credentials,
                       address = request->destination(),
                       identity = request->destination_identity()] {
    return credentials->Dial(address, identity, security::ChannelUse::kControl);
  };
  opts.outcome = options_.outcome;
  opts.corrupt_chunk_sequence = options_.corrupt_chunk_sequence;
  opts.drop_stream_after = options_.drop_stream_after;
  opts.gate = &gate_;
  opts.streams =
      request->policy().streams() == 0 ? 1 : request->policy().streams();
  if (opts.streams > transfer::kMaxStreams) {
    return ToGrpcStatus(
        InvalidRequest(absl::StrCat("policy.streams ", opts.streams,
                                    " is outside 1..", transfer::kMaxStreams)),
        context);
  }
  const v1::MigrationPolicy& policy = request->policy();
  opts.chunk_bytes = policy.chunk_bytes() == 0 ? options_.default_chunk_bytes
                                               : policy.chunk_bytes();
  if (opts.chunk_bytes < kMinChunkBytes || opts.chunk_bytes > kMaxChunkBytes) {
    return ToGrpcStatus(
        InvalidRequest(absl::StrCat("policy.chunk_bytes ", opts.chunk_bytes,
                                    " is outside ", kMinChunkBytes, "..",
                                    kMaxChunkBytes)),
        context);
  }
  if (absl::Status s = PolicyDuration(
          policy.has_phase_timeout(), policy.phase_timeout(), "phase_timeout",
          options_.default_phase_timeout, &opts.phase_timeout);
      !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  // The destination accepting the session is a phase like any other.
  opts.handshake_timeout = opts.phase_timeout;
  opts.dial = [credentials = options_.credentials,
               address = request->destination(),
               identity = request->destination_identity(),
               keepalive = TransferKeepalive(opts.phase_timeout)] {
    return credentials->Dial(address, identity, security::ChannelUse::kBulk,
                             keepalive);
  };
  // The data streams: the destination's data channel, with the same files
  // (read again for each job, so a rotated certificate is used) and the
  // identity its control stream verified.
  {
    std::string host;
    uint16_t port = 0;
    if (absl::Status s =
            transfer::SplitHostPort(request->destination(), &host, &port);
        !s.ok()) {
      return ToGrpcStatus(
          InvalidRequest(absl::StrCat("destination: ", s.message())), context);
    }
    // A destination that stops answering fails the stream as the control
    // stream's keepalive would fail it: unacknowledged data older than the
    // keepalive's timeout ends the connection (PEER_UNAVAILABLE) before the
    // phase timeout does.
    opts.open_data = [credentials = options_.credentials, host,
                      timeout = opts.handshake_timeout,
                      dead = TransferKeepalive(opts.phase_timeout).timeout](
                         uint16_t data_port, const std::string& identity)
        -> absl::StatusOr<std::unique_ptr<transfer::DataConnection>> {
      security::SslCtxPtr ctx;
      if (!credentials->insecure()) {
        absl::StatusOr<security::SslCtxPtr> made = security::NewTlsContext(
            credentials->files(), security::TlsSide::kClient);
        if (!made.ok()) return made.status();
        ctx = *std::move(made);
      }
      return transfer::DataConnection::Dial(host, data_port, ctx.get(),
                                            identity, timeout, dead);
    };
  }
  migration::ConvergencePolicy& conv = opts.convergence;
  for (auto [has, value, name, out] :
       {std::tuple{policy.has_downtime_limit(), &policy.downtime_limit(),
                   "downtime_limit", &conv.downtime_limit},
        std::tuple{policy.has_max_precopy_time(), &policy.max_precopy_time(),
                   "max_precopy_time", &conv.max_precopy_time},
        std::tuple{policy.has_switchover_ack_timeout(),
                   &policy.switchover_ack_timeout(), "switchover_ack_timeout",
                   &conv.switchover_ack_timeout}}) {
    if (absl::Status s = PolicyDuration(has, *value, name, *out, out);
        !s.ok()) {
      return ToGrpcStatus(s, context);
    }
  }
  conv.bandwidth_override = policy.bandwidth_bytes_per_second();
  if (policy.max_iterations() != 0)
    conv.max_iterations = policy.max_iterations();
  conv.fail_if_not_converged =
      policy.on_no_convergence() == v1::MigrationPolicy::ON_NO_CONVERGENCE_FAIL;
  conv.allow_mixed_p2p = policy.allow_mixed_p2p();
  conv.disable_precopy = policy.disable_precopy();
  if (request->has_dirty_tracking()) {
    const v1::DirtyTracking& dt = request->dirty_tracking();
    opts.dirty_page_size = dt.page_size() == 0 ? 4096 : dt.page_size();
    for (const v1::IovaRange& r : dt.ranges()) {
      opts.dirty_ranges.push_back({r.iova(), r.length()});
    }
    if (absl::Status s =
            dirty::ValidateTracking(opts.dirty_page_size, opts.dirty_ranges);
        !s.ok()) {
      return ToGrpcStatus(s, context);
    }
  }

  {
    std::vector<std::string> names;
    for (const migration::DevicePair& p : *pairs) names.push_back(p.local);
    if (absl::Status s = RefuseUnmigratable(*devices_, names); !s.ok()) {
      return ToGrpcStatus(s, context);
    }
  }
  if (options_.compatibility != nullptr) {
    // What each device's plugin says of it, for the destination's check.
    std::vector<std::string> names;
    for (const migration::DevicePair& p : *pairs) names.push_back(p.local);
    absl::StatusOr<std::vector<v1::CompatDescriptor>> compat =
        options_.compatibility->Describe(names);
    if (!compat.ok()) return ToGrpcStatus(compat.status(), context);
    opts.compat = *std::move(compat);
  }
  FillHostAddresses(*pairs);
  auto claimed = ReserveAndClaim(id, *pairs);
  if (!claimed.ok()) return ToGrpcStatus(claimed.status(), context);
  auto job = std::make_shared<migration::Job>(
      id, v1::ROLE_SOURCE, request->destination(), *pairs, options_.observers);
  job->SetPeerIdentity(request->destination_identity());
  migration::DeviceRegistry* devices = devices_;
  base::LogInfo("job ", id, ": connecting to ", request->destination());
  auto started = migration::SourceJob::Start(
      job, *claimed, std::move(opts), [devices, id] { devices->Release(id); });
  if (!started.ok()) {
    job->Finish(started.status());  // for its observers, as above
    devices_->Release(id);
    jobs_->Unreserve(id);
    base::LogWarning("job ", id,
                     ": not started: ", base::StatusText(started.status()));
    return ToGrpcStatus(started.status(), context);
  }
  jobs_->AddSource(*std::move(started));
  *response = job->Snapshot();
  if (response->queue().waiting()) {
    base::LogInfo("job ", id, ": waiting for a transfer slot (",
                  response->queue().ahead(),
                  " ahead, --max_concurrent_migrations=",
                  options_.max_concurrent_migrations, ")");
  } else {
    base::LogInfo("job ", id, ": migrating ", pairs->size(), " device(s) to ",
                  request->destination());
  }
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::GetMigration(
    grpc::ServerContext* context, const v1::GetMigrationRequest* request,
    v1::Migration* response) {
  auto job = jobs_->Find(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status(), context);
  *response = (*job)->Snapshot();
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::WatchMigration(
    grpc::ServerContext* context, const v1::WatchMigrationRequest* request,
    grpc::ServerWriter<v1::MigrationEvent>* writer) {
  auto job = jobs_->Find(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status(), context);
  uint64_t seen = migration::Job::kNoVersion;
  while (!context->IsCancelled()) {
    v1::MigrationEvent event;
    if (!(*job)->WaitForChange(&seen, absl::Milliseconds(500), &event)) {
      continue;
    }
    if (!writer->Write(event)) break;
    if (migration::IsTerminal(event.migration().phase())) break;
    // Byte progress changes with every chunk; ten snapshots a second are
    // plenty for a person or a control plane, and phase changes still arrive
    // within that interval.
    absl::SleepFor(absl::Milliseconds(100));
  }
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::CancelMigration(
    grpc::ServerContext* context, const v1::CancelMigrationRequest* request,
    v1::Migration* response) {
  auto job = jobs_->Cancel(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status(), context);
  base::LogInfo("job ", request->job_id(), ": cancel requested");
  *response = (*job)->Snapshot();
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::ResolveMigration(
    grpc::ServerContext* context, const v1::ResolveMigrationRequest* request,
    v1::Migration* response) {
  const std::string& id = request->job_id();
  if (absl::Status s = ValidateJobId(id); !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  if (request->resolution() != v1::RESOLUTION_SOURCE &&
      request->resolution() != v1::RESOLUTION_DESTINATION) {
    return ToGrpcStatus(
        InvalidRequest("resolution must be RESOLUTION_SOURCE (the devices run "
                       "on the source) or RESOLUTION_DESTINATION (they run on "
                       "the destination)"),
        context);
  }
  // Who decided, for the log and the record: the operator's identity, or
  // where the call came from without TLS.
  std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
  std::string who = auth == nullptr ? "" : security::PeerIdentity(*auth);
  if (who.empty()) who = absl::StrCat("(no identity) at ", context->peer());
  base::LogWarning("job ", id, ": ", who,
                   " resolves it: the devices run on "
                   "the ",
                   request->resolution() == v1::RESOLUTION_SOURCE
                       ? "source"
                       : "destination");
  auto job = jobs_->Resolve(id, request->resolution(), who);
  if (!job.ok()) {
    base::LogWarning("job ", id,
                     ": not resolved: ", base::StatusText(job.status()));
    return ToGrpcStatus(job.status(), context);
  }
  *response = (*job)->Snapshot();
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::ListMigrations(
    grpc::ServerContext* context, const v1::ListMigrationsRequest* request,
    v1::ListMigrationsResponse* response) {
  for (const auto& job : jobs_->List()) {
    *response->add_migrations() = job->Snapshot();
  }
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::WatchDirtyPages(
    grpc::ServerContext* context, const v1::WatchDirtyPagesRequest* request,
    grpc::ServerWriter<v1::DirtyPages>* writer) {
  auto job = jobs_->Find(request->job_id());
  if (!job.ok()) return ToGrpcStatus(job.status(), context);
  migration::SourceJob* source = jobs_->FindSource(request->job_id());
  if (source == nullptr || source->tracker() == nullptr) {
    return ToGrpcStatus(
        base::Error(absl::StatusCode::kFailedPrecondition,
                    v1::ERROR_REASON_INVALID_REQUEST,
                    absl::StrCat("job ", request->job_id(),
                                 " is not a source job with dirty_tracking")),
        context);
  }
  dirty::Tracker* tracker = source->tracker();
  std::vector<v1::DirtyPages> pages;
  while (!context->IsCancelled()) {
    pages.clear();
    bool open = tracker->Take(absl::Milliseconds(500), &pages);
    for (const v1::DirtyPages& p : pages) {
      if (!writer->Write(p)) return grpc::Status::OK;
    }
    if (!open) break;
  }
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::CheckMigration(
    grpc::ServerContext* context, const v1::CheckMigrationRequest* request,
    v1::CheckMigrationResponse* response) {
  auto pairs = ValidateDevicePairs(request->devices(), true);
  if (!pairs.ok()) return ToGrpcStatus(pairs.status(), context);
  if (absl::Status s = ValidateAddress("destination", request->destination());
      !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  if (absl::Status s = ValidateIdentity("destination_identity",
                                        request->destination_identity(), false);
      !s.ok()) {
    return ToGrpcStatus(s, context);
  }
  if (!secure() && !request->destination_identity().empty()) {
    return ToGrpcStatus(
        InvalidRequest("destination_identity cannot be checked: this agent "
                       "runs with --insecure (no certificates, no "
                       "identities)"),
        context);
  }
  if (options_.compatibility == nullptr) {
    return ToGrpcStatus(
        base::Error(absl::StatusCode::kUnimplemented,
                    v1::ERROR_REASON_INVALID_REQUEST,
                    "this agent was started without device checks"),
        context);
  }
  std::vector<v1::DevicePair> v1_pairs;
  for (const migration::DevicePair& p : *pairs) {
    v1::DevicePair& out = v1_pairs.emplace_back();
    out.set_source_device(p.local);
    out.set_destination_device(p.peer);
  }
  *response = options_.compatibility->CheckMigration(
      v1_pairs,
      [credentials = options_.credentials, address = request->destination(),
       identity = request->destination_identity()] {
        return credentials->Dial(address, identity,
                                 security::ChannelUse::kBulk);
      });
  base::LogInfo("checked ", v1_pairs.size(), " device(s) against ",
                request->destination(), ": ",
                response->migratable() ? "migratable" : "blocked");
  return grpc::Status::OK;
}

grpc::Status MigrationServiceImpl::ListPlugins(
    grpc::ServerContext* context, const v1::ListPluginsRequest* request,
    v1::ListPluginsResponse* response) {
  if (options_.compatibility != nullptr) {
    *response = options_.compatibility->List();
  }
  return grpc::Status::OK;
}

}  // namespace migd::server
