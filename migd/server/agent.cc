#include "migd/server/agent.h"

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/ext/health_check_service_server_builder_option.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/host/allocator.h"
#include "migd/host/names.h"
#include "migd/journal/journal_observer.h"
#include "migd/journal/recovery.h"
#include "migd/metrics/device_states.h"
#include "migd/metrics/job_metrics.h"
#include "migd/migration/in_doubt.h"
#include "migd/security/tls_context.h"
#include "migd/security/tls_files.h"
#include "migd/server/allocation_recovery.h"
#include "migd/server/driver_preference.h"
#include "migd/server/vfio_backend.h"
#include "migd/transfer/data_listener.h"

namespace migd::server {

absl::StatusOr<std::unique_ptr<Agent>> Agent::Start(
    AgentOptions options, std::unique_ptr<migration::DeviceRegistry> devices) {
  if (options.credentials == nullptr) {
    return absl::FailedPreconditionError(
        "no credentials: configure TLS (--tls_cert, --tls_key, --tls_ca, "
        "--tls_policy) or pass --insecure to serve without transport "
        "security or authentication (only on a trusted network)");
  }
  const bool insecure = options.credentials->insecure();
  if (!insecure && options.authorizer == nullptr) {
    return absl::FailedPreconditionError(
        "TLS without an authorization policy would let any certificate the "
        "CA signed do anything: set --tls_policy");
  }
  options.service.credentials = options.credentials;
  std::unique_ptr<Agent> agent(new Agent());
  agent->devices_ = std::move(devices);
  agent->jobs_ = std::make_unique<migration::JobTable>();
  if (!options.metrics_listen.empty()) {
    // First among the observers: recovery's changes below are counted too.
    agent->metrics_registry_ = std::make_shared<prometheus::Registry>();
    options.service.observers.insert(
        options.service.observers.begin(),
        std::make_shared<metrics::JobMetrics>(*agent->metrics_registry_));
  }
  // Opens an allocated device: for a PrepareIncoming by class, and at start
  // again for the jobs a previous run left unfinished (below).
  VfTokens* const vf_tokens = options.vf_tokens;
  options.service.open_vfio = [vf_tokens](const std::string& name,
                                          const std::string& source)
      -> absl::StatusOr<std::unique_ptr<device::Device>> {
    // As the config line "vfio NAME bdf=ADDR" (or "mdev=UUID") is opened.
    VfioBackend backend;
    absl::StatusOr<std::unique_ptr<DeviceSpec>> spec =
        backend.Parse(absl::StrCat("vfio ", name, " ", source));
    if (!spec.ok()) return spec.status();
    BuildOptions build;
    if (vf_tokens != nullptr) {
      build.vf_token_for = [vf_tokens](const std::string& pf) {
        return vf_tokens->TokenFor(pf);
      };
    }
    return backend.NewOpener(build)->Open(**spec);
  };
  // The devices jobs were allocated (PrepareIncoming by class), as recovery
  // needs them opened and as their allocations are settled after it.
  std::optional<AllocationRecovery> allocated;
  if (!options.state_dir.empty()) {
    // Before serving: the jobs a previous run left unfinished hold devices
    // that must be put back first.
    absl::StatusOr<std::unique_ptr<journal::Journal>> opened =
        journal::Journal::Open(options.state_dir, options.journal);
    if (!opened.ok()) return opened.status();
    agent->journal_ = *std::move(opened);
    options.service.observers.push_back(
        std::make_shared<journal::JournalObserver>(agent->journal_.get()));
    // What migd bound, so that it can return devices to their drivers; a
    // file that does not read back stops the agent, naming its line.
    absl::StatusOr<std::unique_ptr<host::BindingStore>> bindings =
        host::BindingStore::Open(options.state_dir);
    if (!bindings.ok()) return bindings.status();
    agent->host_bindings_ = *std::move(bindings);
    if (size_t n = agent->host_bindings_->List().size(); n > 0) {
      base::LogInfo("host bindings ", agent->host_bindings_->path(), ": ", n,
                    " device(s) bound by migd");
    }
    // What migd allocated, so that ReleaseDevices still returns it; a file
    // that does not read back stops the agent, naming its line.
    absl::StatusOr<std::unique_ptr<host::AllocationStore>> allocations =
        host::AllocationStore::Open(options.state_dir);
    if (!allocations.ok()) return allocations.status();
    agent->host_allocations_ = *std::move(allocations);
    std::map<std::string, std::string> unavailable;
    if (std::vector<host::Allocation> held = agent->host_allocations_->List();
        !held.empty()) {
      base::LogInfo("host allocations ", agent->host_allocations_->path(), ": ",
                    held.size(), " device(s) allocated");
      // A job's allocated device is not in the configuration: opened again
      // as at run time, so that recovery examines it like any device.
      absl::StatusOr<std::vector<v1::Migration>> records =
          agent->journal_->LoadAll();
      if (!records.ok()) return records.status();
      allocated.emplace(*records, held);
      unavailable =
          allocated->Reopen(options.service.open_vfio, *agent->devices_);
    }
    absl::StatusOr<journal::RecoveryReport> report =
        journal::Recover(*agent->journal_, *agent->devices_, *agent->jobs_,
                         options.service.observers, unavailable);
    if (!report.ok()) return report.status();
    base::LogInfo("journal ", agent->journal_->path(), ": ", report->restored,
                  " job(s), ", report->recovered, " recovered at start, ",
                  report->in_doubt, " in doubt");
    // Before anything else sees them: the allocated devices of jobs that
    // hold nothing of the VM's any more are closed (released below, once
    // HostService is up).
    if (allocated.has_value()) {
      allocated->Decide(*agent->jobs_, *agent->devices_);
    }
  }
  // Plugins: one that does not load is logged and skipped; the agent serves
  // its devices with the others (or the generic behaviour).
  auto registry = std::make_unique<plugins::Registry>(
      [](const std::string& plugin, int level, const std::string& message) {
        const std::string line = absl::StrCat("plugin ", plugin, ": ", message);
        if (level >= 2) {
          base::LogError(line);
        } else if (level == 1) {
          base::LogWarning(line);
        } else {
          base::LogInfo(line);
        }
      });
  std::vector<plugins::LoadFailure> failures;
  if (!options.plugin_dir.empty()) {
    absl::StatusOr<std::vector<plugins::LoadFailure>> loaded =
        registry->LoadDirectory(options.plugin_dir);
    if (loaded.ok()) {
      failures = *std::move(loaded);
    } else {
      base::LogError(loaded.status().message(), "; no plugins loaded");
      failures.push_back(
          {options.plugin_dir, std::string(loaded.status().message())});
    }
  }
  agent->compatibility_ = std::make_unique<Compatibility>(
      std::move(registry), std::move(failures), options.plugin_dir,
      options.device_facts, agent->devices_.get());
  options.service.compatibility = agent->compatibility_.get();
  // PrepareIncoming by class: the configured devices' ids and host
  // addresses, and the host allocator for a PCI class none of them
  // satisfies or an mdev type (HostService, created below; without a state
  // directory it refuses).
  for (const plugins::DeviceFacts& f : options.device_facts) {
    MigrationServiceOptions::HostFacts h;
    if (!f.pci_address.empty()) {
      h.host_address = f.pci_address;
      h.pci_ids =
          host::FormatPciIds({f.vendor_id, f.device_id, f.subsystem_vendor_id,
                              f.subsystem_device_id});
    } else if (absl::StrContains(f.sysfs_path, "/bus/mdev/devices/")) {
      h.host_address = f.sysfs_path.substr(f.sysfs_path.rfind('/') + 1);
    }
    options.service.host_facts[f.name] = h;
  }
  Agent* self = agent.get();
  options.service.allocate = [self](const std::string& job,
                                    const std::string& key,
                                    const v1::DeviceClass& device_class)
      -> absl::StatusOr<v1::AllocatedDevice> {
    v1::AllocateDevicesRequest req;
    req.set_owner(job);
    v1::DeviceRequest* d = req.add_devices();
    d->set_key(key);
    *d->mutable_device_class() = device_class;
    absl::StatusOr<v1::AllocateDevicesResponse> r =
        self->host_service_->Allocate(req);
    if (!r.ok()) return r.status();
    return r->devices(0);
  };
  options.service.release_allocations =
      [self](const std::string& job) -> absl::Status {
    return self->host_service_->Release(job).status();
  };
  agent->migration_service_ = std::make_unique<MigrationServiceImpl>(
      agent->devices_.get(), agent->jobs_.get(), options.service);
  agent->transfer_service_ = std::make_unique<TransferServiceImpl>(
      agent->jobs_.get(), options.transfer_idle_timeout,
      options.transfer_faults, agent->compatibility_.get());
  agent->TakeUpInDoubt(options);
  {
    HostServiceOptions host_options;
    host_options.sysfs_root = options.sysfs_root;
    agent->modules_ = std::make_unique<host::ModprobeLoader>();
    agent->group_usage_ =
        std::make_unique<host::DevVfioGroupUsage>(options.sysfs_root);
    host_options.modules = agent->modules_.get();
    host_options.usage = agent->group_usage_.get();
    host_options.bindings = agent->host_bindings_.get();
    host_options.allocations = agent->host_allocations_.get();
    host_options.devices = agent->devices_.get();
    host_options.vf_tokens = options.vf_tokens;
    // The agent's devices by their host names, to refuse changing one a
    // job holds.
    for (const plugins::DeviceFacts& f : options.device_facts) {
      if (!f.pci_address.empty()) {
        host_options.device_names[f.pci_address] = f.name;
      } else if (absl::StrContains(f.sysfs_path, "/bus/mdev/devices/")) {
        const std::string uuid =
            f.sysfs_path.substr(f.sysfs_path.rfind('/') + 1);
        if (absl::StatusOr<std::string> u = host::NormalizeUuid(uuid); u.ok()) {
          host_options.device_names[*u] = f.name;
        }
      }
    }
    // The driver choice takes the claiming plugin's preference.
    host_options.module_preference =
        PluginDriverPreference(&agent->compatibility_->registry(),
                               options.sysfs_root, host_options.device_names);
    // A bind to a VFIO driver has that plugin prepare the host before the
    // probe (a devlink attribute the variant driver reads as it probes).
    // A release first closes what the agent holds open of the owner's
    // devices: a job's allocated device that loaded the VM's state.
    migration::DeviceRegistry* const registry = agent->devices_.get();
    host_options.before_release = [registry](const std::string& owner) {
      return CloseAllocatedDevices(*registry, owner);
    };
    host_options.prepare_host =
        PluginPrepareHost(&agent->compatibility_->registry(),
                          options.sysfs_root, host_options.device_names);
    agent->host_service_ =
        std::make_unique<HostServiceImpl>(std::move(host_options));
  }
  // The allocations Decide chose to give back, released as the jobs' ends
  // would have released them, before anyone is served.
  if (allocated.has_value()) {
    allocated->Release(options.service.release_allocations);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  // Every call on this port, data streams and health checks included,
  // passes the authorizer before a handler sees it.
  builder.AddListeningPort(
      options.listen,
      options.credentials->ServerCredentials(options.authorizer),
      &agent->port_);
  builder.RegisterService(agent->migration_service_.get());
  builder.RegisterService(agent->transfer_service_.get());
  builder.RegisterService(agent->host_service_.get());
  // Transfers' large messages and fixed window, and a ping policy that takes
  // the keepalive pings of a source waiting on this agent (a long load, say)
  // without ending its connection for too many pings.
  security::ApplyBulkServerArguments(builder);
  // The data channel listens on the same host as the server, on its own
  // port (data_listen's, or one the kernel picks), before the server
  // answers a session that names it.
  {
    transfer::DataListenerOptions data;
    data.address =
        options.data_listen.empty()
            ? absl::StrCat(options.listen.substr(0, options.listen.rfind(':')),
                           ":0")
            : options.data_listen;
    if (!insecure) {
      const security::TlsFiles files = options.credentials->files();
      data.tls = [files] {
        return security::NewTlsContext(files, security::TlsSide::kServer);
      };
    }
    data.handshake_timeout = options.transfer_idle_timeout;
    data.dead_peer_timeout = options.transfer_idle_timeout;
    data.max_connections = options.max_data_streams;
    TransferServiceImpl* transfer = agent->transfer_service_.get();
    absl::StatusOr<std::unique_ptr<transfer::DataListener>> listener =
        transfer::DataListener::Start(
            std::move(data), [transfer](transfer::DataConnection& conn,
                                        const absl::Status& admission) {
              transfer->ServeDataConnection(conn, admission);
            });
    if (!listener.ok()) return listener.status();
    agent->data_listener_ = *std::move(listener);
    transfer->set_data_port(agent->data_listener_->port());
  }
  agent->server_ = builder.BuildAndStart();
  if (agent->server_ == nullptr || agent->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options.listen,
                     " (address in use or not local?)"));
  }
  if (agent->metrics_registry_ != nullptr) {
    migration::DeviceRegistry* registry = agent->devices_.get();
    auto device_states = std::make_shared<metrics::DeviceStates>([registry] {
      std::vector<metrics::DeviceSample> samples;
      for (const std::string& name : registry->Names()) {
        metrics::DeviceSample sample;
        if (device::Device* d = registry->Find(name); d != nullptr) {
          if (auto state = d->GetState(); state.ok()) {
            sample.state_known = true;
            sample.state = static_cast<v1::DeviceState>(*state);
          }
        }
        sample.claimed = !registry->Owner(name).empty();
        samples.push_back(sample);
      }
      return samples;
    });
    absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> metrics =
        metrics::MetricsServer::Start(
            options.metrics_listen,
            {agent->metrics_registry_, std::move(device_states)});
    if (!metrics.ok()) return metrics.status();
    agent->metrics_server_ = *std::move(metrics);
    base::LogInfo(
        "serving Prometheus metrics at http://",
        options.metrics_listen.substr(0, options.metrics_listen.rfind(':')),
        ":", agent->metrics_server_->port(), "/metrics");
  }
  const std::string where = absl::StrCat(
      options.listen.substr(0, options.listen.rfind(':')), ":", agent->port_);
  if (insecure) {
    base::LogWarning(
        "serving WITHOUT TLS or authentication (--insecure) on ", where,
        ": anyone who can reach this port can read and replace device state");
  } else {
    const std::string& cert = options.credentials->files().cert;
    absl::StatusOr<std::string> pem =
        security::ReadSmallFile("--tls_cert", cert);
    absl::StatusOr<security::CertificateInfo> info =
        pem.ok() ? security::DescribeCertificate(*pem) : pem.status();
    base::LogInfo(
        "serving with mutual TLS on ", where, " as ",
        info.ok()
            ? absl::StrCat(
                  info->identity.empty() ? "(no identity)" : info->identity,
                  " (certificate ", cert, ", serial ", info->serial,
                  ", valid until ",
                  absl::FormatTime(absl::RFC3339_sec, info->not_after,
                                   absl::UTCTimeZone()),
                  ")")
            : absl::StrCat("certificate ", cert));
  }
  return agent;
}

void Agent::TakeUpInDoubt(const AgentOptions& options) {
  for (const std::shared_ptr<migration::Job>& job : jobs_->List()) {
    if (job->phase() != v1::PHASE_IN_DOUBT) continue;
    const v1::Migration record = job->Snapshot();
    std::vector<device::Device*> devices;
    for (const v1::DeviceProgress& d : record.devices()) {
      devices.push_back(devices_->Find(d.device()));
    }
    migration::InDoubtOptions o = options.service.outcome;
    if (record.role() == v1::ROLE_SOURCE) {
      // The destination the job migrated to, as the handshake verified it.
      o.dial = [credentials = options.credentials, address = record.peer(),
                identity = record.peer_identity()] {
        return credentials->Dial(address, identity,
                                 security::ChannelUse::kControl);
      };
    }
    const std::string id = job->id();
    migration::DeviceRegistry* registry = devices_.get();
    const std::string reason = record.in_doubt().reason().empty()
                                   ? "the agent restarted after the job "
                                     "decided to commit"
                                   : absl::StrCat(record.in_doubt().reason(),
                                                  "; then the agent restarted");
    auto in_doubt = std::make_shared<migration::InDoubt>(
        job, std::move(devices),
        base::Error(absl::StatusCode::kAborted,
                    v1::ERROR_REASON_AGENT_RESTARTED,
                    absl::StrCat("the agent restarted with the job in doubt (",
                                 reason, ")")),
        reason, std::move(o), [registry, id] { registry->Release(id); });
    base::LogWarning("job ", id, ": in doubt since before the restart; ",
                     in_doubt->asks()
                         ? absl::StrCat("asking the destination ",
                                        record.peer(), " for the outcome")
                         : "waiting for an operator's decision");
    jobs_->AddInDoubt(std::move(in_doubt));
  }
}

Agent::~Agent() { Shutdown(); }

int Agent::metrics_port() const {
  return metrics_server_ == nullptr ? 0 : metrics_server_->port();
}

void Agent::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  base::LogInfo("shutting down: cancelling running jobs");
  jobs_->CancelAll();
  // A job IN_DOUBT keeps its devices stopped: it stops asking and stays so,
  // for the next start.
  jobs_->StopResolvers();
  // Rollbacks and resets run on job and session threads; let them finish
  // before the server stops, so no device is left half-way.
  if (!jobs_->AwaitAllEnded(absl::Seconds(30))) {
    base::LogError("shutting down with jobs still rolling back");
  }
  // Every job ended: what remains are watchers and idle connections, which
  // gRPC would otherwise wait for until the deadline.
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
  // Shuts the data connections still open down; their threads end.
  data_listener_.reset();
  jobs_.reset();  // joins source jobs after their rollback
  metrics_server_.reset();
  base::LogInfo("shut down");
}

}  // namespace migd::server
