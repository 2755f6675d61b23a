// migd/server/agent.h
//
// One migd agent: the devices it manages, its jobs, and the gRPC server that
// serves MigrationService, TransferService, HostService and health checking
// on one address (the authorizer decides per call who may call what).
// At start, the jobs its journal left IN_DOUBT are taken up again: a source
// asks its destination for the outcome until it answers (or an operator
// decides), a destination waits for an operator. Shutdown cancels every
// running job first, so a source's devices go back to RUNNING and a
// destination's are reset before the process exits; a job IN_DOUBT stays so,
// its devices stopped, for the next start.

#ifndef MIGD_SERVER_AGENT_H_
#define MIGD_SERVER_AGENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "migd/host/allocation_store.h"
#include "migd/host/binding_store.h"
#include "migd/host/iommu_group.h"
#include "migd/host/modules.h"
#include "migd/journal/journal.h"
#include "migd/metrics/server.h"
#include "migd/migration/device_registry.h"
#include "migd/migration/job_table.h"
#include "migd/plugins/plugin.h"
#include "migd/security/authorizer.h"
#include "migd/security/credentials.h"
#include "migd/server/compatibility.h"
#include "migd/server/host_service.h"
#include "migd/server/migration_service.h"
#include "migd/server/transfer_service.h"
#include "migd/server/vf_tokens.h"
#include "migd/transfer/data_listener.h"
#include "prometheus/registry.h"

namespace migd::server {

struct AgentOptions {
  // "host:port"; port 0 picks a free port (see Agent::port()).
  std::string listen = "127.0.0.1:7070";
  // How the agent serves and dials: mutual TLS (with `authorizer` deciding
  // every call), or plaintext, which must be asked for: Start refuses to
  // run without credentials, and refuses TLS credentials without an
  // authorizer. The same credentials go to service.credentials.
  std::shared_ptr<security::Credentials> credentials;
  std::shared_ptr<security::Authorizer> authorizer;
  MigrationServiceOptions service;
  // Where the journal lives (<state_dir>/journal.sqlite3); the agent refuses
  // to start when it cannot open it. Empty: no journal (tests of parts that
  // do not need one), and jobs live in memory only.
  std::string state_dir;
  journal::JournalOptions journal;
  absl::Duration transfer_idle_timeout = absl::Seconds(60);
  // Data streams (data channel connections) served at once, each on a
  // thread of its own; one more is closed unserved. The default covers four
  // jobs at the most streams a job may use (transfer::kMaxStreams).
  size_t max_data_streams = 64;
  // Where the data channel listens ("host:port"); empty: the host of
  // `listen` and a port the kernel picks. Sources learn the port in
  // SessionAccepted and dial the host they reached this agent at.
  std::string data_listen;
  // Fault injection for tests (see TransferFaults).
  TransferFaults transfer_faults;
  // Where vendor plugins are loaded from (every *.so; a missing directory
  // loads none), and what the plugins are told of each device (a device
  // without facts gets its name, backend and flags).
  std::string plugin_dir;
  std::vector<plugins::DeviceFacts> device_facts;
  // Where Prometheus scrapes /metrics ("127.0.0.1:9464"; port 0 picks a free
  // port, see Agent::metrics_port()); empty: no metrics endpoint. Checked
  // with metrics::ValidateMetricsListen by the caller.
  std::string metrics_listen;
  // The root HostService reads and writes sysfs (and /lib/modules, /dev)
  // under: "" for the host's own; a fake tree in tests, where writes are
  // plain file writes that no kernel answers, so binds cannot succeed there.
  // What it bound is recorded in <state_dir>/host-bindings (none without a
  // state_dir: then it refuses to bind).
  std::string sysfs_root;
  // The VF tokens this agent owns (server/vf_tokens.h; not owned, outlives
  // the agent); null: none (SetVfToken refused).
  VfTokens* vf_tokens = nullptr;
};

class Agent {
 public:
  static absl::StatusOr<std::unique_ptr<Agent>> Start(
      AgentOptions options, std::unique_ptr<migration::DeviceRegistry> devices);

  // Shuts down if still running.
  ~Agent();

  // The port the server listens on.
  int port() const { return port_; }
  // The port /metrics is served on; 0 without metrics_listen.
  int metrics_port() const;

  // Cancels every running job, waits for their rollbacks, stops serving.
  void Shutdown();

 private:
  Agent() = default;
  // Gives every job left IN_DOUBT (by recovery) an InDoubt in the job table.
  void TakeUpInDoubt(const AgentOptions& options);

  std::unique_ptr<journal::Journal> journal_;
  std::unique_ptr<migration::DeviceRegistry> devices_;
  // Jobs' metrics (fed as an observer) and the endpoint; the endpoint stops
  // first (it reads devices_).
  std::shared_ptr<prometheus::Registry> metrics_registry_;
  std::unique_ptr<migration::JobTable> jobs_;
  std::unique_ptr<Compatibility> compatibility_;
  std::unique_ptr<MigrationServiceImpl> migration_service_;
  std::unique_ptr<TransferServiceImpl> transfer_service_;
  // The host as HostService sees and changes it.
  std::unique_ptr<host::ModprobeLoader> modules_;
  std::unique_ptr<host::DevVfioGroupUsage> group_usage_;
  std::unique_ptr<host::BindingStore> host_bindings_;
  std::unique_ptr<host::AllocationStore> host_allocations_;
  std::unique_ptr<HostServiceImpl> host_service_;
  // The data channel (a thread per connection).
  std::unique_ptr<transfer::DataListener> data_listener_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<metrics::MetricsServer> metrics_server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace migd::server

#endif  // MIGD_SERVER_AGENT_H_
