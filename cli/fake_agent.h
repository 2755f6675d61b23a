// cli/fake_agent.h
//
// A migd.v1.MigrationService (FakeAgent) and a migd.v1.HostService
// (FakeHostAgent) for migctl's tests: a test sets up their answers (and
// errors, by RPC name) and looks at the requests they got. Serve them
// in-process, or on a port with real credentials.

#ifndef MIGD_CLI_FAKE_AGENT_H_
#define MIGD_CLI_FAKE_AGENT_H_

#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cli/commands.h"
#include "grpcpp/grpcpp.h"
#include "migd/security/identity.h"
#include "proto/migd/v1/host.grpc.pb.h"
#include "proto/migd/v1/migration.grpc.pb.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {

// An agent whose answers a test sets up and whose requests it can inspect.
class FakeAgent final : public migd::v1::MigrationService::Service {
 public:
  // An error that an RPC returns, with its migd-error-reason.
  struct Error {
    grpc::StatusCode code;
    std::string message;
    std::string reason;
  };

  migd::v1::ListDevicesResponse devices;
  std::vector<migd::v1::MigrationEvent> events;  // WatchMigration's stream
  migd::v1::Migration job;                       // Get/Cancel/List answer
  std::map<std::string, Error> errors;           // by RPC name

  std::vector<migd::v1::DirtyPages> dirty;  // WatchDirtyPages's stream
  // WatchDirtyPages answers NOT_FOUND this many times first (a job not
  // started yet).
  int dirty_not_found = 0;

  // PrepareIncoming's answer: the token is "tok-" + the job id.
  google::protobuf::Timestamp token_expires;

  migd::v1::CheckMigrationResponse check;  // CheckMigration's answer
  migd::v1::ListPluginsResponse plugins;   // ListPlugins's answer

  int list_devices_calls = 0;
  int list_plugins_calls = 0;
  std::vector<migd::v1::CheckMigrationRequest> checks;
  std::vector<migd::v1::PrepareIncomingRequest> prepares;
  // The identity each PrepareIncoming caller proved ("" without TLS).
  std::vector<std::string> prepare_callers;
  std::vector<std::string> dirty_watches;  // job ids, one per call
  std::vector<migd::v1::StartMigrationRequest> starts;
  std::vector<std::string> cancels;
  std::vector<migd::v1::ResolveMigrationRequest> resolves;

  grpc::Status ListDevices(grpc::ServerContext* ctx,
                           const migd::v1::ListDevicesRequest*,
                           migd::v1::ListDevicesResponse* resp) override {
    absl::MutexLock lock(&mu_);
    ++list_devices_calls;
    if (auto e = Fail(ctx, "ListDevices"); !e.ok()) return e;
    *resp = devices;
    return grpc::Status::OK;
  }

  grpc::Status PrepareIncoming(
      grpc::ServerContext* ctx, const migd::v1::PrepareIncomingRequest* req,
      migd::v1::PrepareIncomingResponse* resp) override {
    absl::MutexLock lock(&mu_);
    prepares.push_back(*req);
    std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
    prepare_callers.push_back(auth ? security::PeerIdentity(*auth) : "");
    if (auto e = Fail(ctx, "PrepareIncoming"); !e.ok()) return e;
    resp->set_transfer_token("tok-" + req->job_id());
    if (token_expires.seconds() != 0) {
      *resp->mutable_token_expires() = token_expires;
    }
    resp->mutable_migration()->set_job_id(req->job_id());
    resp->mutable_migration()->set_phase(migd::v1::PHASE_PREPARED);
    // A pair by class gets "picked-<i>" at 0000:00:0<i>.0, as an agent
    // names what it picked.
    for (int i = 0; i < req->devices_size(); ++i) {
      const migd::v1::DevicePair& p = req->devices(i);
      migd::v1::DeviceProgress* d = resp->mutable_migration()->add_devices();
      d->set_peer_device(p.source_device());
      if (p.has_destination_class()) {
        d->set_device(absl::StrCat("picked-", i));
        d->set_host_address(absl::StrCat("0000:00:0", i, ".0"));
      } else {
        d->set_device(p.destination_device());
      }
    }
    return grpc::Status::OK;
  }

  grpc::Status StartMigration(grpc::ServerContext* ctx,
                              const migd::v1::StartMigrationRequest* req,
                              migd::v1::Migration* resp) override {
    absl::MutexLock lock(&mu_);
    starts.push_back(*req);
    if (auto e = Fail(ctx, "StartMigration"); !e.ok()) return e;
    resp->set_job_id(req->job_id());
    resp->set_phase(migd::v1::PHASE_CONNECTING);
    return grpc::Status::OK;
  }

  grpc::Status GetMigration(grpc::ServerContext* ctx,
                            const migd::v1::GetMigrationRequest*,
                            migd::v1::Migration* resp) override {
    if (auto e = Fail(ctx, "GetMigration"); !e.ok()) return e;
    *resp = job;
    return grpc::Status::OK;
  }

  grpc::Status WatchMigration(
      grpc::ServerContext* ctx, const migd::v1::WatchMigrationRequest*,
      grpc::ServerWriter<migd::v1::MigrationEvent>* writer) override {
    for (const auto& e : events) writer->Write(e);
    return Fail(ctx, "WatchMigration");
  }

  grpc::Status WatchDirtyPages(
      grpc::ServerContext* ctx, const migd::v1::WatchDirtyPagesRequest* req,
      grpc::ServerWriter<migd::v1::DirtyPages>* writer) override {
    {
      absl::MutexLock lock(&mu_);
      dirty_watches.push_back(req->job_id());
      if (dirty_not_found > 0) {
        --dirty_not_found;
        return grpc::Status(grpc::StatusCode::NOT_FOUND,
                            "no job " + req->job_id());
      }
    }
    for (const auto& p : dirty) writer->Write(p);
    return Fail(ctx, "WatchDirtyPages");
  }

  grpc::Status CancelMigration(grpc::ServerContext* ctx,
                               const migd::v1::CancelMigrationRequest* req,
                               migd::v1::Migration* resp) override {
    absl::MutexLock lock(&mu_);
    cancels.push_back(req->job_id());
    if (auto e = Fail(ctx, "CancelMigration"); !e.ok()) return e;
    *resp = job;
    return grpc::Status::OK;
  }

  grpc::Status ResolveMigration(grpc::ServerContext* ctx,
                                const migd::v1::ResolveMigrationRequest* req,
                                migd::v1::Migration* resp) override {
    absl::MutexLock lock(&mu_);
    resolves.push_back(*req);
    if (auto e = Fail(ctx, "ResolveMigration"); !e.ok()) return e;
    *resp = job;
    return grpc::Status::OK;
  }

  grpc::Status ListMigrations(grpc::ServerContext* ctx,
                              const migd::v1::ListMigrationsRequest*,
                              migd::v1::ListMigrationsResponse* resp) override {
    if (auto e = Fail(ctx, "ListMigrations"); !e.ok()) return e;
    *resp->add_migrations() = job;
    return grpc::Status::OK;
  }

  grpc::Status CheckMigration(grpc::ServerContext* ctx,
                              const migd::v1::CheckMigrationRequest* req,
                              migd::v1::CheckMigrationResponse* resp) override {
    absl::MutexLock lock(&mu_);
    checks.push_back(*req);
    if (auto e = Fail(ctx, "CheckMigration"); !e.ok()) return e;
    *resp = check;
    return grpc::Status::OK;
  }

  grpc::Status ListPlugins(grpc::ServerContext* ctx,
                           const migd::v1::ListPluginsRequest*,
                           migd::v1::ListPluginsResponse* resp) override {
    absl::MutexLock lock(&mu_);
    ++list_plugins_calls;
    if (auto e = Fail(ctx, "ListPlugins"); !e.ok()) return e;
    *resp = plugins;
    return grpc::Status::OK;
  }

 private:
  grpc::Status Fail(grpc::ServerContext* ctx, const std::string& rpc) {
    auto it = errors.find(rpc);
    if (it == errors.end()) return grpc::Status::OK;
    if (!it->second.reason.empty()) {
      ctx->AddTrailingMetadata(kErrorReasonKey, it->second.reason);
    }
    return grpc::Status(it->second.code, it->second.message);
  }

  absl::Mutex mu_;
};

// A HostService whose answers a test sets up: every device call answers
// `device` (its address set from the request), with `outcome` for the
// changes; the requests are kept.
class FakeHostAgent final : public migd::v1::HostService::Service {
 public:
  struct Error {
    grpc::StatusCode code;
    std::string message;
    std::string reason;
  };

  migd::v1::HostDevice device;
  std::string outcome;  // BindDevice, UnbindDevice, SetVfCount
  migd::v1::ListMdevTypesResponse mdev_types;
  std::string mdev_uuid = "0b2a4d1e-1111-4222-8333-444455556666";
  std::map<std::string, Error> errors;  // by RPC name

  std::vector<migd::v1::GetHostDeviceRequest> gets;
  std::vector<migd::v1::BindDeviceRequest> binds;
  std::vector<migd::v1::UnbindDeviceRequest> unbinds;
  std::vector<migd::v1::SetVfCountRequest> vf_counts;
  std::vector<migd::v1::SetVfTokenRequest> vf_tokens;
  std::vector<migd::v1::ListMdevTypesRequest> type_lists;
  std::vector<migd::v1::CreateMdevRequest> creates;
  std::vector<migd::v1::RemoveMdevRequest> removes;
  std::vector<migd::v1::AllocateDevicesRequest> allocates;
  std::vector<migd::v1::ReleaseDevicesRequest> releases;
  std::vector<migd::v1::ListAllocationsRequest> allocation_lists;
  // What ListAllocations and ReleaseDevices answer.
  std::vector<migd::v1::AllocatedDevice> allocations;

  grpc::Status GetHostDevice(grpc::ServerContext* ctx,
                             const migd::v1::GetHostDeviceRequest* req,
                             migd::v1::HostDevice* resp) override {
    absl::MutexLock lock(&mu_);
    gets.push_back(*req);
    return Answer(ctx, "GetHostDevice", req->address(), "", resp);
  }
  grpc::Status BindDevice(grpc::ServerContext* ctx,
                          const migd::v1::BindDeviceRequest* req,
                          migd::v1::HostDevice* resp) override {
    absl::MutexLock lock(&mu_);
    binds.push_back(*req);
    return Answer(ctx, "BindDevice", req->address(), outcome, resp);
  }
  grpc::Status UnbindDevice(grpc::ServerContext* ctx,
                            const migd::v1::UnbindDeviceRequest* req,
                            migd::v1::HostDevice* resp) override {
    absl::MutexLock lock(&mu_);
    unbinds.push_back(*req);
    return Answer(ctx, "UnbindDevice", req->address(), outcome, resp);
  }
  grpc::Status SetVfCount(grpc::ServerContext* ctx,
                          const migd::v1::SetVfCountRequest* req,
                          migd::v1::HostDevice* resp) override {
    absl::MutexLock lock(&mu_);
    vf_counts.push_back(*req);
    return Answer(ctx, "SetVfCount", req->pf_address(), outcome, resp);
  }
  grpc::Status SetVfToken(grpc::ServerContext* ctx,
                          const migd::v1::SetVfTokenRequest* req,
                          migd::v1::VfTokenResponse* resp) override {
    absl::MutexLock lock(&mu_);
    vf_tokens.push_back(*req);
    if (auto e = Fail(ctx, "SetVfToken"); !e.ok()) return e;
    resp->set_pf_address(req->pf_address());
    resp->set_token_id("1a2b3c4d");
    resp->set_outcome(outcome);
    return grpc::Status::OK;
  }
  grpc::Status ListMdevTypes(grpc::ServerContext* ctx,
                             const migd::v1::ListMdevTypesRequest* req,
                             migd::v1::ListMdevTypesResponse* resp) override {
    absl::MutexLock lock(&mu_);
    type_lists.push_back(*req);
    if (auto e = Fail(ctx, "ListMdevTypes"); !e.ok()) return e;
    *resp = mdev_types;
    resp->set_parent(req->parent());
    return grpc::Status::OK;
  }
  grpc::Status CreateMdev(grpc::ServerContext* ctx,
                          const migd::v1::CreateMdevRequest* req,
                          migd::v1::Mdev* resp) override {
    absl::MutexLock lock(&mu_);
    creates.push_back(*req);
    if (auto e = Fail(ctx, "CreateMdev"); !e.ok()) return e;
    resp->set_uuid(req->uuid().empty() ? mdev_uuid : req->uuid());
    resp->set_parent(req->parent());
    resp->set_type(req->type());
    return grpc::Status::OK;
  }
  grpc::Status RemoveMdev(grpc::ServerContext* ctx,
                          const migd::v1::RemoveMdevRequest* req,
                          migd::v1::Mdev* resp) override {
    absl::MutexLock lock(&mu_);
    removes.push_back(*req);
    if (auto e = Fail(ctx, "RemoveMdev"); !e.ok()) return e;
    resp->set_uuid(req->uuid());
    resp->set_parent("mbochs");
    resp->set_type("mbochs-small");
    return grpc::Status::OK;
  }

  // Answers each request in order: a PCI class with 0000:5e:01.<i> on
  // vfio-pci, an mdev class with UUID <i>0000000-0000-4000-8000-000000000000.
  grpc::Status AllocateDevices(
      grpc::ServerContext* ctx, const migd::v1::AllocateDevicesRequest* req,
      migd::v1::AllocateDevicesResponse* resp) override {
    absl::MutexLock lock(&mu_);
    allocates.push_back(*req);
    if (auto e = Fail(ctx, "AllocateDevices"); !e.ok()) return e;
    for (int i = 0; i < req->devices_size(); ++i) {
      const migd::v1::DeviceRequest& d = req->devices(i);
      migd::v1::AllocatedDevice* a = resp->add_devices();
      a->set_key(d.key());
      a->set_owner(req->owner());
      if (!d.device_class().pci_ids().empty()) {
        a->set_address(absl::StrCat("0000:5e:01.", i + 1));
        a->set_driver(d.driver().empty() ? "vfio-pci" : d.driver());
      } else {
        a->set_mdev_uuid(
            absl::StrCat(i + 1, "0000000-0000-4000-8000-000000000000"));
        a->set_mdev_parent(d.device_class().mdev_parent().empty()
                               ? "mbochs"
                               : d.device_class().mdev_parent());
        a->set_mdev_type(d.device_class().mdev_type());
      }
    }
    return grpc::Status::OK;
  }
  grpc::Status ReleaseDevices(grpc::ServerContext* ctx,
                              const migd::v1::ReleaseDevicesRequest* req,
                              migd::v1::ReleaseDevicesResponse* resp) override {
    absl::MutexLock lock(&mu_);
    releases.push_back(*req);
    if (auto e = Fail(ctx, "ReleaseDevices"); !e.ok()) return e;
    for (const migd::v1::AllocatedDevice& a : allocations) {
      if (a.owner() == req->owner()) *resp->add_released() = a;
    }
    return grpc::Status::OK;
  }
  grpc::Status ListAllocations(
      grpc::ServerContext* ctx, const migd::v1::ListAllocationsRequest* req,
      migd::v1::ListAllocationsResponse* resp) override {
    absl::MutexLock lock(&mu_);
    allocation_lists.push_back(*req);
    if (auto e = Fail(ctx, "ListAllocations"); !e.ok()) return e;
    for (const migd::v1::AllocatedDevice& a : allocations) {
      if (req->owner().empty() || a.owner() == req->owner()) {
        *resp->add_devices() = a;
      }
    }
    return grpc::Status::OK;
  }

 private:
  grpc::Status Answer(grpc::ServerContext* ctx, const std::string& rpc,
                      const std::string& address, const std::string& what,
                      migd::v1::HostDevice* resp) {
    if (auto e = Fail(ctx, rpc); !e.ok()) return e;
    *resp = device;
    resp->set_address(address);
    resp->set_outcome(what);
    return grpc::Status::OK;
  }

  grpc::Status Fail(grpc::ServerContext* ctx, const std::string& rpc) {
    auto it = errors.find(rpc);
    if (it == errors.end()) return grpc::Status::OK;
    if (!it->second.reason.empty()) {
      ctx->AddTrailingMetadata(kErrorReasonKey, it->second.reason);
    }
    return grpc::Status(it->second.code, it->second.message);
  }

  absl::Mutex mu_;
};

}  // namespace migd::cli

#endif  // MIGD_CLI_FAKE_AGENT_H_
