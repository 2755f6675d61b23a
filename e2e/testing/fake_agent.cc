// e2e/testing/fake_agent.cc
//
// A stand-in for migd with the same startup contract (--listen, --port_file,
// --name), for testing the agent_process harness without the real agent.
// --fake_mode: "serve" (default) serves a MigrationService with one device and
// one job "job-1" that goes CONNECTING -> STOP_COPY -> SUCCEEDED as it is
// watched; "exit_early" prints to stderr and exits 3 before serving;
// "never_serve" runs without ever writing the port file.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "grpcpp/grpcpp.h"
#include "proto/migd/v1/migration.grpc.pb.h"

namespace {

class FakeService final : public migd::v1::MigrationService::Service {
 public:
  grpc::Status ListDevices(grpc::ServerContext*,
                           const migd::v1::ListDevicesRequest*,
                           migd::v1::ListDevicesResponse* response) override {
    migd::v1::Device* device = response->add_devices();
    device->set_name("fake0");
    device->set_kind("emulated");
    device->set_state(migd::v1::DEVICE_STATE_RUNNING);
    device->set_state_digest("crc32c:00000000");
    return grpc::Status::OK;
  }

  grpc::Status GetMigration(grpc::ServerContext* context,
                            const migd::v1::GetMigrationRequest* request,
                            migd::v1::Migration* response) override {
    if (request->job_id() != "job-1") {
      context->AddTrailingMetadata("migd-error-reason",
                                   "ERROR_REASON_JOB_NOT_FOUND");
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "job " + request->job_id() + " not found");
    }
    response->set_job_id("job-1");
    response->set_phase(migd::v1::PHASE_SUCCEEDED);
    return grpc::Status::OK;
  }

  grpc::Status WatchMigration(
      grpc::ServerContext*, const migd::v1::WatchMigrationRequest* request,
      grpc::ServerWriter<migd::v1::MigrationEvent>* writer) override {
    if (request->job_id() != "job-1") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no such job");
    }
    for (auto phase : {migd::v1::PHASE_CONNECTING, migd::v1::PHASE_STOP_COPY,
                       migd::v1::PHASE_SUCCEEDED}) {
      migd::v1::MigrationEvent event;
      event.mutable_migration()->set_job_id("job-1");
      event.mutable_migration()->set_phase(phase);
      event.mutable_migration()->set_bytes_done(
          phase == migd::v1::PHASE_CONNECTING ? 0 : 100);
      if (!writer->Write(event)) break;
    }
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string listen, port_file, mode = "serve";
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--listen=")) listen = std::string(arg);
    if (absl::ConsumePrefix(&arg, "--port_file=")) port_file = std::string(arg);
    if (absl::ConsumePrefix(&arg, "--fake_mode=")) mode = std::string(arg);
  }
  if (mode == "exit_early") {
    std::cerr << "fake_agent: refusing to start (exit_early)" << std::endl;
    return 3;
  }
  if (mode == "never_serve") {
    pause();
    return 0;
  }
  FakeService service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::cerr << "fake_agent: cannot listen on " << listen << std::endl;
    return 1;
  }
  {
    // Written in two steps, like a careless agent would: the harness must not
    // take the half-written file.
    std::string tmp = port_file + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::rename(tmp.c_str(), port_file.c_str());
  }
  std::cerr << "fake_agent: serving on port " << port << std::endl;
  server->Wait();
  return 0;
}
