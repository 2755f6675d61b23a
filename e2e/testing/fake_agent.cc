// e2e/testing/fake_agent.cc
//
// A stand-in for migd with the same startup contract (--listen, --port_file,
// --name, and --insecure or --tls_cert/--tls_key/--tls_ca), for testing the
// agent_process harness without the real agent. With TLS it serves with the
// certificate and key it is given and asks for a client certificate, which
// it does not check (no --tls_policy: the fake authorizes nothing).
// --fake_mode: "serve" (default) serves a MigrationService with one device and
// one job "job-1" that goes CONNECTING -> STOP_COPY -> SUCCEEDED as it is
// watched, whose peer_identity is the caller's certificate identity;
// "exit_early" prints to stderr and exits 3 before serving; "never_serve"
// runs without ever writing the port file.

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "grpcpp/grpcpp.h"
#include "migd/security/identity.h"
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
    // Who called: what the harness's client presented.
    if (std::shared_ptr<const grpc::AuthContext> auth =
            context->auth_context();
        auth != nullptr) {
      response->set_peer_identity(migd::security::PeerIdentity(*auth));
    }
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

// A whole file; "" when it cannot be read.
std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen, port_file, mode = "serve", cert, key, ca;
  bool insecure = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--listen=")) listen = std::string(arg);
    if (absl::ConsumePrefix(&arg, "--port_file=")) port_file = std::string(arg);
    if (absl::ConsumePrefix(&arg, "--fake_mode=")) mode = std::string(arg);
    if (absl::ConsumePrefix(&arg, "--tls_cert=")) cert = std::string(arg);
    if (absl::ConsumePrefix(&arg, "--tls_key=")) key = std::string(arg);
    if (absl::ConsumePrefix(&arg, "--tls_ca=")) ca = std::string(arg);
    if (arg == "--insecure") insecure = true;
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
  std::shared_ptr<grpc::ServerCredentials> credentials =
      grpc::InsecureServerCredentials();
  if (!insecure) {
    grpc::SslServerCredentialsOptions options(
        GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_BUT_DONT_VERIFY);
    options.pem_root_certs = ReadFile(ca);
    options.pem_key_cert_pairs.push_back({ReadFile(key), ReadFile(cert)});
    if (options.pem_key_cert_pairs[0].private_key.empty() ||
        options.pem_key_cert_pairs[0].cert_chain.empty()) {
      std::cerr << "fake_agent: no --insecure, and cannot read --tls_cert "
                << cert << " or --tls_key " << key << std::endl;
      return 1;
    }
    credentials = grpc::SslServerCredentials(options);
  }
  builder.AddListeningPort(listen, credentials, &port);
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
