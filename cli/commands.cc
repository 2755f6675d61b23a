#include "cli/commands.h"

#include <chrono>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/endpoint.h"
#include "cli/format.h"
#include "cli/progress.h"
#include "grpcpp/grpcpp.h"
#include "migd/security/credentials.h"
#include "migd/security/identity.h"
#include "migd/security/redact.h"
#include "migd/security/tls_files.h"
#include "proto/migd/v1/host.grpc.pb.h"
#include "proto/migd/v1/host.pb.h"
#include "proto/migd/v1/migration.grpc.pb.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {
namespace {

using migd::v1::MigrationService;

// How often the TLS files are read again while a command runs (a long watch
// opens no new connection; this only matters for one that reconnects).
constexpr absl::Duration kCredentialsReload = absl::Minutes(1);

// One agent a command talks to.
struct Agent {
  Endpoint endpoint;
  std::shared_ptr<grpc::ChannelInterface> channel;
  std::unique_ptr<MigrationService::Stub> stub;
};

// Resolves and opens the agents of one command, before any RPC: the
// credentials of each set of TLS files are made (and the files checked)
// once; the first plaintext agent gets a warning on stderr.
class Connector {
 public:
  Connector(const Env& env, EndpointResolver resolver)
      : env_(env), resolver_(std::move(resolver)) {}

  const EndpointResolver& resolver() const { return resolver_; }

  // A stub for `endpoint`; its error, or the one Credentials::Tls gives
  // (naming the file), otherwise.
  absl::StatusOr<Agent> Open(absl::StatusOr<Endpoint> endpoint) {
    if (!endpoint.ok()) return endpoint.status();
    std::shared_ptr<security::Credentials> credentials;
    if (endpoint->insecure) {
      credentials = security::Credentials::Insecure();
      if (!warned_) {
        *env_.err << "migctl: warning: plaintext connection ("
                  << endpoint->insecure_from
                  << "): the agent is not authenticated and nothing is "
                     "encrypted\n";
        warned_ = true;
      }
    } else {
      const security::TlsFiles& f = endpoint->files;
      auto key = std::make_tuple(f.cert, f.key, f.ca);
      auto it = tls_.find(key);
      if (it == tls_.end()) {
        absl::StatusOr<std::shared_ptr<security::Credentials>> made =
            security::Credentials::Tls(f, kCredentialsReload, "--tls_");
        if (!made.ok()) return made.status();
        it = tls_.emplace(key, *std::move(made)).first;
      }
      credentials = it->second;
    }
    Agent agent;
    agent.channel =
        env_.dial(*credentials, endpoint->address, endpoint->identity);
    agent.stub = MigrationService::NewStub(agent.channel);
    agent.endpoint = *std::move(endpoint);
    return agent;
  }

 private:
  const Env& env_;
  const EndpointResolver resolver_;
  std::map<std::tuple<std::string, std::string, std::string>,
           std::shared_ptr<security::Credentials>>
      tls_;
  bool warned_ = false;
};

// Prints what went wrong before any RPC (a config, a TLS file, an agent
// name); the message says it all.
int SetupError(const Env& env, const absl::Status& status) {
  *env.err << "migctl: " << status.message() << "\n";
  return kExitUsage;
}

void SetDeadline(grpc::ClientContext* ctx, absl::Duration timeout) {
  ctx->set_deadline(std::chrono::system_clock::now() +
                    absl::ToChronoMilliseconds(timeout));
}

std::string ErrorReason(const grpc::ClientContext& ctx) {
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find(kErrorReasonKey);
  if (it == md.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

// Whether a failed call on a TLS channel looks like a failed handshake.
bool LooksLikeHandshakeFailure(const Endpoint& e, const grpc::Status& s) {
  if (e.insecure || s.error_code() != grpc::StatusCode::UNAVAILABLE) {
    return false;
  }
  std::string m = absl::AsciiStrToLower(s.error_message());
  for (absl::string_view word :
       {"handshake", "ssl", "tls", "certificate", "verif"}) {
    if (absl::StrContains(m, word)) return true;
  }
  return false;
}

// Prints an RPC failure of a call to `called`; `what` (e.g. "PrepareIncoming
// on 127.0.0.1:7071") goes before the server's message when the command made
// several calls. `secret` (the transfer token) is redacted from the message.
// A failed TLS handshake gets a hint at its likely causes.
int ReportRpcError(const Env& env, const std::string& command,
                   const grpc::Status& status, const grpc::ClientContext& ctx,
                   const Endpoint& called, absl::string_view what = "",
                   absl::string_view secret = "") {
  std::string message = security::RedactFrom(status.error_message(), secret);
  if (!what.empty()) message = absl::StrCat(what, ": ", message);
  *env.err << FormatRpcError(command,
                             grpc::Status(status.error_code(), message),
                             ErrorReason(ctx))
           << "\n";
  if (LooksLikeHandshakeFailure(called, status)) {
    *env.err << "migctl: hint: no TLS session with " << called.Display()
             << ": its certificate may not be signed by a CA of --tls_ca ("
             << called.files.ca << "), or ";
    if (called.identity.empty()) {
      *env.err << "may not name the host of " << called.address
               << " (name the identity to expect instead: --agent_identity, "
                  "--destination_identity or identity = in the config)";
    } else {
      *env.err << "may not carry the expected identity " << called.identity;
    }
    *env.err << "; or the agent serves plaintext (--insecure)\n";
  }
  return kExitFailure;
}

// The identity `ctx`'s call saw the server prove; "" without TLS.
std::string ServerIdentity(const grpc::ClientContext& ctx) {
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  return auth == nullptr ? "" : security::PeerIdentity(*auth);
}

// Learns the identity `agent`'s certificate proves by a cheap call
// (ListDevices), for binding the transfer token to it. `role` ("source",
// "destination") names the agent in messages. With `required`, an agent
// reached in plaintext or without an identity in its certificate is an
// error. Returns an exit status; *identity is set when it is kExitOk.
int LearnIdentity(const Options& o, const Env& env, Agent& agent,
                  absl::string_view role, bool required,
                  std::string* identity) {
  identity->clear();
  const Endpoint& e = agent.endpoint;
  if (e.insecure) {
    if (!required) return kExitOk;
    *env.err << "migctl: " << o.command << ": the " << role << " agent "
             << e.Display() << " is reached in plaintext (" << e.insecure_from
             << "): it proves no identity to bind the transfer token to\n";
    return kExitFailure;
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::ListDevicesResponse ignored;
  grpc::Status s =
      agent.stub->ListDevices(&ctx, migd::v1::ListDevicesRequest(), &ignored);
  if (!s.ok()) {
    return ReportRpcError(
        env, o.command, s, ctx, e,
        absl::StrCat("ListDevices on ", e.Display(), " (to learn the ", role,
                     " agent's identity)"));
  }
  *identity = ServerIdentity(ctx);
  if (identity->empty() && required) {
    *env.err << "migctl: " << o.command << ": the " << role << " agent "
             << e.Display()
             << " has a certificate without an identity (URI or DNS SAN) to "
                "bind the transfer token to\n";
    return kExitFailure;
  }
  return kExitOk;
}

void SetClass(const DeviceClassArg& c, migd::v1::DeviceClass* out) {
  out->set_pci_ids(c.pci_ids);
  out->set_mdev_type(c.mdev_type);
  out->set_mdev_parent(c.mdev_parent);
  out->set_agent_kind(c.agent_kind);
}

void AddPairs(const std::vector<DevicePairArg>& pairs,
              google::protobuf::RepeatedPtrField<migd::v1::DevicePair>* out) {
  for (const auto& p : pairs) {
    migd::v1::DevicePair* d = out->Add();
    d->set_source_device(p.source);
    if (p.destination_class.empty()) {
      d->set_destination_device(p.destination);
    } else {
      SetClass(p.destination_class, d->mutable_destination_class());
    }
  }
}

// What a prepare by class picked: "src0 -> alloc-j-0 (0000:00:05.0)", one
// per pair, comma-separated; only the pairs that named a class.
std::string PickedDevices(const std::vector<DevicePairArg>& pairs,
                          const migd::v1::Migration& prepared) {
  std::vector<std::string> picked;
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].destination_class.empty()) continue;
    if (i >= static_cast<size_t>(prepared.devices_size())) break;
    const migd::v1::DeviceProgress& d = prepared.devices(i);
    picked.push_back(absl::StrCat(
        pairs[i].source, " -> ", d.device(),
        d.host_address().empty() ? ""
                                 : absl::StrCat(" (", d.host_address(), ")")));
  }
  return absl::StrJoin(picked, ", ");
}

void SetDuration(absl::Duration d, google::protobuf::Duration* out) {
  int64_t seconds = absl::IDivDuration(d, absl::Seconds(1), &d);
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(d)));
}

// The request's policy: only what the command line set, so the agent's
// defaults apply to the rest.
migd::v1::MigrationPolicy ToPolicy(const PolicyArgs& p) {
  migd::v1::MigrationPolicy out;
  if (p.downtime_limit) {
    SetDuration(*p.downtime_limit, out.mutable_downtime_limit());
  }
  if (p.bandwidth) out.set_bandwidth_bytes_per_second(*p.bandwidth);
  if (p.max_iterations) out.set_max_iterations(*p.max_iterations);
  if (p.max_precopy_time) {
    SetDuration(*p.max_precopy_time, out.mutable_max_precopy_time());
  }
  if (p.fail_if_not_converged) {
    out.set_on_no_convergence(
        *p.fail_if_not_converged
            ? migd::v1::MigrationPolicy::ON_NO_CONVERGENCE_FAIL
            : migd::v1::MigrationPolicy::ON_NO_CONVERGENCE_SWITCH_OVER);
  }
  if (p.ack_timeout) {
    SetDuration(*p.ack_timeout, out.mutable_switchover_ack_timeout());
  }
  out.set_allow_mixed_p2p(p.allow_mixed_p2p);
  out.set_disable_precopy(p.no_precopy);
  if (p.chunk_bytes) out.set_chunk_bytes(*p.chunk_bytes);
  if (p.streams) out.set_streams(*p.streams);
  if (p.phase_timeout) {
    SetDuration(*p.phase_timeout, out.mutable_phase_timeout());
  }
  return out;
}

bool Json(const Options& o) { return o.output == OutputFormat::kJson; }

int Devices(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::ListDevicesResponse resp;
  grpc::Status s =
      agent->stub->ListDevices(&ctx, migd::v1::ListDevicesRequest(), &resp);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, agent->endpoint);
  if (Json(o)) {
    *env.out << ToJson(resp, /*compact=*/false) << "\n";
  } else {
    *env.out << FormatDevicesTable(resp);
  }
  return kExitOk;
}

int Prepare(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> dst = c.Open(c.resolver().Agent());
  if (!dst.ok()) return SetupError(env, dst.status());
  // For the record, where the source is: a config name means nothing to
  // the agent.
  std::string source = o.source;
  if (const AgentSection* named = c.resolver().config().FindAgent(o.source)) {
    source = named->address;
  }
  std::string source_identity;
  // Over TLS the token is bound to the source's identity: given, or learned
  // from the source agent itself. A plaintext agent takes none.
  if (!dst->endpoint.insecure) {
    std::string flag, ref;
    if (!o.source_agent.empty()) {
      flag = "--source_agent";
      ref = o.source_agent;
    } else if (o.source_identity.empty() &&
               c.resolver().IsConfigAgent(o.source)) {
      flag = "--source";
      ref = o.source;
    }
    if (!o.source_identity.empty()) {
      source_identity = o.source_identity;
    } else if (ref.empty()) {
      return SetupError(
          env, absl::FailedPreconditionError(
                   "prepare: the transfer token is bound to the source "
                   "agent's identity: give --source_identity=ID, or "
                   "--source_agent=NAME|HOST:PORT to ask the source agent "
                   "(or --source=NAME of an agent in the config file)"));
    } else {
      absl::StatusOr<Agent> src = c.Open(c.resolver().Resolve(flag, ref, ""));
      if (!src.ok()) return SetupError(env, src.status());
      if (int rc = LearnIdentity(o, env, *src, "source", /*required=*/true,
                                 &source_identity);
          rc != kExitOk) {
        return rc;
      }
      if (source.empty()) source = src->endpoint.address;
    }
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::PrepareIncomingRequest req;
  req.set_job_id(o.job);
  AddPairs(o.devices, req.mutable_devices());
  req.set_source(source);
  req.set_source_identity(source_identity);
  migd::v1::PrepareIncomingResponse resp;
  grpc::Status s = dst->stub->PrepareIncoming(&ctx, req, &resp);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, dst->endpoint);
  // This is where the token is handed out: stdout is the token (or the
  // response as JSON), and nothing else.
  if (Json(o)) {
    *env.out << ToJson(resp, /*compact=*/false) << "\n";
  } else {
    *env.out << resp.transfer_token() << "\n";
    if (std::string picked = PickedDevices(o.devices, resp.migration());
        !picked.empty()) {
      // The names StartMigration (migrate --token) must give.
      *env.err << "migctl: prepare: job " << o.job
               << ": the destination picked " << picked << "\n";
    }
    if (resp.has_token_expires()) {
      absl::Time expires = ToAbslTime(resp.token_expires());
      *env.err << "migctl: prepare: the token of job " << o.job
               << " expires at " << FormatUtcTime(expires) << " (in "
               << HumanDuration(expires - env.now()) << ")\n";
    }
  }
  return kExitOk;
}

// Prints the outcome of an ended job; exit 0 only when it succeeded.
int Conclude(const Options& o, const Env& env, const migd::v1::Migration& m) {
  if (!Json(o)) *env.out << FormatSummary(m) << std::flush;
  if (m.phase() == migd::v1::PHASE_SUCCEEDED) return kExitOk;
  std::string reason = "no reason given";
  std::string message;
  if (m.has_failure()) {
    reason = migd::v1::ErrorReason_Name(m.failure().reason());
    if (reason.empty()) reason = absl::StrCat(m.failure().reason());
    message = m.failure().message();
  }
  *env.err << "migctl: " << o.command << ": job " << m.job_id() << " "
           << PhaseName(m.phase()) << ": " << reason;
  if (!message.empty()) *env.err << ": " << message;
  *env.err << "\n";
  return kExitFailure;
}

// Follows `job` on `agent` until it ends, showing progress.
int Follow(const Options& o, const Env& env, Agent& agent,
           const std::string& job) {
  const std::string where = agent.endpoint.Display();
  grpc::ClientContext ctx;
  if (o.timeout_given) SetDeadline(&ctx, o.timeout);
  migd::v1::WatchMigrationRequest req;
  req.set_job_id(job);
  ProgressPrinter::Mode mode = Json(o) ? ProgressPrinter::Mode::kJson
                               : env.out_is_terminal
                                   ? ProgressPrinter::Mode::kTerminal
                                   : ProgressPrinter::Mode::kPlain;
  ProgressPrinter printer(mode, env.out, env.terminal_width, env.now());
  migd::v1::MigrationEvent event;
  migd::v1::Migration last;
  bool ended = false;
  std::unique_ptr<grpc::ClientReader<migd::v1::MigrationEvent>> reader =
      agent.stub->WatchMigration(&ctx, req);
  while (reader->Read(&event)) {
    printer.OnEvent(event, env.now());
    last = event.migration();
    if (IsTerminal(last.phase())) {
      ended = true;
      ctx.TryCancel();  // the agent ends the stream too; do not wait for it
      break;
    }
  }
  grpc::Status s = reader->Finish();
  printer.Finish();
  if (ended) return Conclude(o, env, last);
  if (!s.ok()) {
    return ReportRpcError(env, o.command, s, ctx, agent.endpoint,
                          absl::StrCat("WatchMigration on ", where));
  }
  // The stream closed before the job ended (it should not): ask once more.
  grpc::ClientContext get_ctx;
  SetDeadline(&get_ctx, o.timeout);
  migd::v1::GetMigrationRequest get;
  get.set_job_id(job);
  s = agent.stub->GetMigration(&get_ctx, get, &last);
  if (!s.ok()) {
    return ReportRpcError(env, o.command, s, get_ctx, agent.endpoint,
                          absl::StrCat("GetMigration on ", where));
  }
  if (!IsTerminal(last.phase())) {
    *env.err << "migctl: " << o.command << ": " << where
             << " ended the watch while job " << job << " is in phase "
             << PhaseName(last.phase()) << "; run `migctl watch " << job
             << "` to follow it again\n";
    return kExitFailure;
  }
  if (Json(o)) *env.out << ToJson(last, /*compact=*/true) << "\n";
  return Conclude(o, env, last);
}

int Migrate(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> src = c.Open(c.resolver().Agent());
  if (!src.ok()) return SetupError(env, src.status());
  absl::StatusOr<Agent> dst = c.Open(c.resolver().Resolve(
      "--destination", o.destination, o.destination_identity));
  if (!dst.ok()) return SetupError(env, dst.status());
  const std::string src_name = src->endpoint.Display();
  const std::string dst_name = dst->endpoint.Display();

  std::string token = o.token;
  bool prepared_here = false;
  // The pairs as StartMigration names them; a class becomes the device the
  // destination picked for it.
  std::vector<DevicePairArg> devices = o.devices;
  std::string picked;
  // The identity the source must find in the destination's certificate:
  // the one named (flag or config), else the one the destination proves.
  std::string destination_identity;
  if (!dst->endpoint.insecure) destination_identity = dst->endpoint.identity;
  if (token.empty()) {
    // The destination binds the token to the source's identity, exactly as
    // the source's certificate will present it: ask the source.
    std::string source_identity;
    if (!src->endpoint.insecure) {
      if (int rc = LearnIdentity(o, env, *src, "source", /*required=*/true,
                                 &source_identity);
          rc != kExitOk) {
        return rc;
      }
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, o.timeout);
    migd::v1::PrepareIncomingRequest req;
    req.set_job_id(o.job);
    AddPairs(o.devices, req.mutable_devices());
    req.set_source(src->endpoint.address);
    req.set_source_identity(source_identity);
    migd::v1::PrepareIncomingResponse resp;
    grpc::Status s = dst->stub->PrepareIncoming(&ctx, req, &resp);
    if (!s.ok()) {
      return ReportRpcError(env, o.command, s, ctx, dst->endpoint,
                            absl::StrCat("PrepareIncoming on ", dst_name));
    }
    token = resp.transfer_token();
    prepared_here = true;
    picked = PickedDevices(o.devices, resp.migration());
    // The source names the destination's devices: the ones it picked (a
    // pair the answer does not cover keeps its class, which the source
    // refuses, and the prepared job is cancelled below).
    for (size_t i = 0; i < devices.size() &&
                       i < static_cast<size_t>(resp.migration().devices_size());
         ++i) {
      if (devices[i].destination_class.empty()) continue;
      devices[i].destination = resp.migration().devices(i).device();
      devices[i].destination_class = {};
    }
    if (!dst->endpoint.insecure && destination_identity.empty()) {
      destination_identity = ServerIdentity(ctx);
    }
    if (!Json(o)) {
      *env.out << "Prepared job " << o.job << " on destination " << dst_name
               << (picked.empty() ? "" : absl::StrCat(": picked ", picked))
               << "\n";
    }
  } else if (!dst->endpoint.insecure && destination_identity.empty()) {
    if (int rc = LearnIdentity(o, env, *dst, "destination",
                               /*required=*/false, &destination_identity);
        rc != kExitOk) {
      return rc;
    }
  }

  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::StartMigrationRequest req;
  req.set_job_id(o.job);
  AddPairs(devices, req.mutable_devices());
  req.set_destination(dst->endpoint.address);
  req.set_destination_identity(destination_identity);
  req.set_transfer_token(token);
  *req.mutable_policy() = ToPolicy(o.policy);
  if (!o.dirty_ranges.empty()) {
    migd::v1::DirtyTracking* t = req.mutable_dirty_tracking();
    t->set_page_size(o.dirty_page_size);
    for (const IovaRangeArg& r : o.dirty_ranges) {
      migd::v1::IovaRange* range = t->add_ranges();
      range->set_iova(r.iova);
      range->set_length(r.length);
    }
  }
  migd::v1::Migration started;
  grpc::Status s = src->stub->StartMigration(&ctx, req, &started);
  if (!s.ok()) {
    ReportRpcError(env, o.command, s, ctx, src->endpoint,
                   absl::StrCat("StartMigration on ", src_name), token);
    if (prepared_here) {
      // Release the destination devices this command put in RESUMING.
      grpc::ClientContext cancel_ctx;
      SetDeadline(&cancel_ctx, o.timeout);
      migd::v1::CancelMigrationRequest cancel;
      cancel.set_job_id(o.job);
      migd::v1::Migration cancelled;
      grpc::Status cs =
          dst->stub->CancelMigration(&cancel_ctx, cancel, &cancelled);
      if (cs.ok()) {
        *env.err << "migctl: " << o.command << ": cancelled the prepared job "
                 << o.job << " on " << dst_name << "\n";
      } else {
        ReportRpcError(env, o.command, cs, cancel_ctx, dst->endpoint,
                       absl::StrCat("CancelMigration on ", dst_name));
      }
    }
    return kExitFailure;
  }
  if (!Json(o)) {
    *env.out << "Started job " << o.job << ": " << src_name << " -> "
             << dst_name << "\n";
  }
  return Follow(o, env, *src, o.job);
}

// A dry run of migrate: the source agent checks the devices here and on the
// destination and reports; nothing changes on either side. The destination
// and its identity are named and learned as migrate does with a token.
int Check(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> src = c.Open(c.resolver().Agent());
  if (!src.ok()) return SetupError(env, src.status());
  absl::StatusOr<Agent> dst = c.Open(c.resolver().Resolve(
      "--destination", o.destination, o.destination_identity));
  if (!dst.ok()) return SetupError(env, dst.status());
  // The identity the source must find in the destination's certificate: the
  // one named (flag or config), else the one the destination proves to us.
  std::string destination_identity;
  if (!dst->endpoint.insecure) {
    destination_identity = dst->endpoint.identity;
    if (destination_identity.empty()) {
      if (int rc = LearnIdentity(o, env, *dst, "destination",
                                 /*required=*/false, &destination_identity);
          rc != kExitOk) {
        return rc;
      }
    }
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::CheckMigrationRequest req;
  AddPairs(o.devices, req.mutable_devices());
  req.set_destination(dst->endpoint.address);
  req.set_destination_identity(destination_identity);
  migd::v1::CheckMigrationResponse resp;
  grpc::Status s = src->stub->CheckMigration(&ctx, req, &resp);
  if (!s.ok()) {
    return ReportRpcError(
        env, o.command, s, ctx, src->endpoint,
        absl::StrCat("CheckMigration on ", src->endpoint.Display()));
  }
  if (Json(o)) {
    *env.out << ToJson(resp, /*compact=*/false) << "\n";
  } else {
    *env.out << FormatCheckReport(resp, dst->endpoint.Display());
  }
  return resp.migratable() ? kExitOk : kExitBlocked;
}

int Status(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::GetMigrationRequest req;
  req.set_job_id(o.job);
  migd::v1::Migration m;
  grpc::Status s = agent->stub->GetMigration(&ctx, req, &m);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, agent->endpoint);
  if (Json(o)) {
    *env.out << ToJson(m, /*compact=*/false) << "\n";
  } else {
    *env.out << FormatMigrationDetails(m);
  }
  return kExitOk;
}

int Watch(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  return Follow(o, env, *agent, o.job);
}

// How often dirty-pages --wait asks again for a job the agent does not know.
constexpr absl::Duration kWaitRetry = absl::Milliseconds(100);

int DirtyPages(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  const absl::Time wait_until = env.now() + o.timeout;
  migd::v1::WatchDirtyPagesRequest req;
  req.set_job_id(o.job);
  for (;;) {
    grpc::ClientContext ctx;
    if (o.timeout_given) SetDeadline(&ctx, o.timeout);
    std::unique_ptr<grpc::ClientReader<migd::v1::DirtyPages>> reader =
        agent->stub->WatchDirtyPages(&ctx, req);
    migd::v1::DirtyPages pages;
    bool any = false;
    while (reader->Read(&pages)) {
      any = true;
      if (Json(o)) {
        *env.out << ToJson(pages, /*compact=*/true) << "\n";
      } else {
        *env.out << FormatDirtyPages(pages) << "\n";
      }
      env.out->flush();  // a consumer reads each bitmap as it comes
    }
    grpc::Status s = reader->Finish();
    if (s.ok()) return kExitOk;
    // The source agent knows the job only once StartMigration ran: --wait
    // lets this start first.
    if (o.wait && !any && s.error_code() == grpc::StatusCode::NOT_FOUND &&
        env.now() + kWaitRetry < wait_until) {
      absl::SleepFor(kWaitRetry);
      continue;
    }
    return ReportRpcError(
        env, o.command, s, ctx, agent->endpoint,
        absl::StrCat("WatchDirtyPages on ", agent->endpoint.Display()));
  }
}

int Cancel(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::CancelMigrationRequest req;
  req.set_job_id(o.job);
  migd::v1::Migration m;
  grpc::Status s = agent->stub->CancelMigration(&ctx, req, &m);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, agent->endpoint);
  if (Json(o)) {
    *env.out << ToJson(m, /*compact=*/false) << "\n";
  } else if (m.phase() == migd::v1::PHASE_SUCCEEDED ||
             m.phase() == migd::v1::PHASE_FAILED) {
    *env.out << "Job " << m.job_id() << " had already ended ("
             << PhaseName(m.phase()) << "); nothing to cancel\n";
  } else {
    *env.out << "Job " << m.job_id() << ": " << PhaseName(m.phase()) << "\n";
  }
  return kExitOk;
}

// An operator's decision for a job IN_DOUBT on the agent.
int Resolve(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::ResolveMigrationRequest req;
  req.set_job_id(o.job);
  const bool to_source = o.outcome == "source";
  req.set_resolution(to_source ? migd::v1::RESOLUTION_SOURCE
                               : migd::v1::RESOLUTION_DESTINATION);
  migd::v1::Migration m;
  grpc::Status s = agent->stub->ResolveMigration(&ctx, req, &m);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, agent->endpoint);
  if (Json(o)) {
    *env.out << ToJson(m, /*compact=*/false) << "\n";
  } else {
    *env.out << "Job " << m.job_id() << " resolved: the devices run on the "
             << o.outcome << "; the job is " << PhaseName(m.phase()) << "\n";
  }
  return kExitOk;
}

int List(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::ListMigrationsResponse resp;
  grpc::Status s = agent->stub->ListMigrations(
      &ctx, migd::v1::ListMigrationsRequest(), &resp);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, agent->endpoint);
  if (Json(o)) {
    *env.out << ToJson(resp, /*compact=*/false) << "\n";
  } else {
    *env.out << FormatMigrationsTable(resp);
  }
  return kExitOk;
}

int Plugins(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::ListPluginsResponse resp;
  grpc::Status s =
      agent->stub->ListPlugins(&ctx, migd::v1::ListPluginsRequest(), &resp);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, agent->endpoint);
  if (Json(o)) {
    *env.out << ToJson(resp, /*compact=*/false) << "\n";
  } else {
    *env.out << FormatPlugins(resp);
  }
  return kExitOk;
}

// Shows who answers at the agent's address: the certificate it presented in
// the handshake of a cheap call (ListDevices), and this client's own. When
// the agent refuses the call after the handshake (an identity its policy
// does not know), both are still shown, then the refusal.
int Identity(const Options& o, const Env& env, Connector& c) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  const Endpoint& e = agent->endpoint;
  IdentityReport r;
  r.name = e.name.empty() ? e.address : e.name;
  r.agent = e.Display();
  r.address = e.address;
  r.tls = !e.insecure;
  r.insecure_from = e.insecure_from;
  if (r.tls) {
    r.expected_identity = e.identity;
    r.client_certificate = e.files.cert;
    absl::StatusOr<std::string> pem =
        security::ReadSmallFile("--tls_cert", e.files.cert);
    if (!pem.ok()) return SetupError(env, pem.status());
    absl::StatusOr<security::CertificateInfo> mine =
        security::DescribeCertificate(*pem);
    if (!mine.ok()) return SetupError(env, mine.status());
    r.client = *std::move(mine);
  }

  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::ListDevicesResponse ignored;
  grpc::Status s =
      agent->stub->ListDevices(&ctx, migd::v1::ListDevicesRequest(), &ignored);
  if (r.tls) {
    std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
    std::string pem =
        auth == nullptr ? "" : security::PeerCertificatePem(*auth);
    if (pem.empty()) {
      if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, e);
      *env.err << "migctl: identity: " << e.Display()
               << " answered without presenting a certificate\n";
      return kExitFailure;
    }
    absl::StatusOr<security::CertificateInfo> theirs =
        security::DescribeCertificate(pem);
    if (!theirs.ok()) {
      *env.err << "migctl: identity: the certificate of " << e.Display() << ": "
               << theirs.status().message() << "\n";
      return kExitFailure;
    }
    r.server = *std::move(theirs);
  } else if (!s.ok()) {
    return ReportRpcError(env, o.command, s, ctx, e);
  }
  *env.out << (Json(o) ? IdentityJson(r) + "\n" : FormatIdentity(r));
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, e);
  return kExitOk;
}

// ---- host commands (migd.v1.HostService) ----

// Runs one unary HostService call on the agent and prints its answer:
// JSON of the response, or `text(response)`. Exit 1 on an RPC error.
template <typename Request, typename Response>
int HostCall(const Options& o, const Env& env, Connector& c,
             grpc::Status (migd::v1::HostService::Stub::*method)(
                 grpc::ClientContext*, const Request&, Response*),
             const Request& request,
             const std::function<std::string(const Response&)>& text) {
  absl::StatusOr<Agent> agent = c.Open(c.resolver().Agent());
  if (!agent.ok()) return SetupError(env, agent.status());
  std::unique_ptr<migd::v1::HostService::Stub> stub =
      migd::v1::HostService::NewStub(agent->channel);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  Response response;
  grpc::Status s = ((*stub).*method)(&ctx, request, &response);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx, agent->endpoint);
  if (Json(o)) {
    *env.out << ToJson(response, /*compact=*/false) << "\n";
  } else {
    *env.out << text(response);
  }
  return kExitOk;
}

// What a change did, then the device as it is now.
std::string ChangeText(const migd::v1::HostDevice& d) {
  return absl::StrCat(d.address(), ": ", d.outcome(), "\n",
                      FormatHostDevice(d));
}

int HostStatus(const Options& o, const Env& env, Connector& c) {
  migd::v1::GetHostDeviceRequest req;
  req.set_address(o.args[0]);
  return HostCall<migd::v1::GetHostDeviceRequest, migd::v1::HostDevice>(
      o, env, c, &migd::v1::HostService::Stub::GetHostDevice, req,
      &FormatHostDevice);
}

int HostBind(const Options& o, const Env& env, Connector& c) {
  migd::v1::BindDeviceRequest req;
  req.set_address(o.args[0]);
  req.set_driver(o.driver);
  return HostCall<migd::v1::BindDeviceRequest, migd::v1::HostDevice>(
      o, env, c, &migd::v1::HostService::Stub::BindDevice, req, &ChangeText);
}

int HostUnbind(const Options& o, const Env& env, Connector& c) {
  migd::v1::UnbindDeviceRequest req;
  req.set_address(o.args[0]);
  req.set_to_no_driver(o.to_no_driver);
  return HostCall<migd::v1::UnbindDeviceRequest, migd::v1::HostDevice>(
      o, env, c, &migd::v1::HostService::Stub::UnbindDevice, req, &ChangeText);
}

int HostVfs(const Options& o, const Env& env, Connector& c) {
  migd::v1::SetVfCountRequest req;
  req.set_pf_address(o.args[0]);
  req.set_count(o.vf_count);
  return HostCall<migd::v1::SetVfCountRequest, migd::v1::HostDevice>(
      o, env, c, &migd::v1::HostService::Stub::SetVfCount, req, &ChangeText);
}

int HostVfToken(const Options& o, const Env& env, Connector& c) {
  migd::v1::SetVfTokenRequest req;
  req.set_pf_address(o.args[0]);
  return HostCall<migd::v1::SetVfTokenRequest, migd::v1::VfTokenResponse>(
      o, env, c, &migd::v1::HostService::Stub::SetVfToken, req,
      [](const migd::v1::VfTokenResponse& r) {
        return absl::StrCat(r.pf_address(), ": ", r.outcome(),
                            "\ntoken_id: ", r.token_id(), "\n");
      });
}

int HostMdevTypes(const Options& o, const Env& env, Connector& c) {
  migd::v1::ListMdevTypesRequest req;
  req.set_parent(o.args[0]);
  return HostCall<migd::v1::ListMdevTypesRequest,
                  migd::v1::ListMdevTypesResponse>(
      o, env, c, &migd::v1::HostService::Stub::ListMdevTypes, req,
      &FormatMdevTypes);
}

// Prints only the new UUID on stdout (a script's $(...)), and what was made
// on stderr, as prepare does with its token.
int HostMdevCreate(const Options& o, const Env& env, Connector& c) {
  migd::v1::CreateMdevRequest req;
  req.set_parent(o.args[0]);
  req.set_type(o.args[1]);
  req.set_uuid(o.uuid);
  return HostCall<migd::v1::CreateMdevRequest, migd::v1::Mdev>(
      o, env, c, &migd::v1::HostService::Stub::CreateMdev, req,
      [&](const migd::v1::Mdev& m) {
        *env.err << "migctl: " << o.command << ": created mdev " << m.uuid()
                 << " of type " << m.type() << " on " << m.parent() << "\n";
        return absl::StrCat(m.uuid(), "\n");
      });
}

int HostMdevRemove(const Options& o, const Env& env, Connector& c) {
  migd::v1::RemoveMdevRequest req;
  req.set_uuid(o.args[0]);
  return HostCall<migd::v1::RemoveMdevRequest, migd::v1::Mdev>(
      o, env, c, &migd::v1::HostService::Stub::RemoveMdev, req,
      [](const migd::v1::Mdev& m) {
        return absl::StrCat("Removed mdev ", m.uuid(), " (type ", m.type(),
                            " on ", m.parent(), ")\n");
      });
}

int HostAllocate(const Options& o, const Env& env, Connector& c) {
  migd::v1::AllocateDevicesRequest req;
  req.set_owner(o.args[0]);
  for (const AllocateArg& a : o.allocate) {
    migd::v1::DeviceRequest* d = req.add_devices();
    d->set_key(a.key);
    SetClass(a.device_class, d->mutable_device_class());
    if (!a.device_class.pci_ids.empty()) d->set_driver(o.driver);
  }
  return HostCall<migd::v1::AllocateDevicesRequest,
                  migd::v1::AllocateDevicesResponse>(
      o, env, c, &migd::v1::HostService::Stub::AllocateDevices, req,
      [](const migd::v1::AllocateDevicesResponse& r) {
        return FormatAllocations(r.devices(), "nothing allocated");
      });
}

int HostRelease(const Options& o, const Env& env, Connector& c) {
  migd::v1::ReleaseDevicesRequest req;
  req.set_owner(o.args[0]);
  return HostCall<migd::v1::ReleaseDevicesRequest,
                  migd::v1::ReleaseDevicesResponse>(
      o, env, c, &migd::v1::HostService::Stub::ReleaseDevices, req,
      [&](const migd::v1::ReleaseDevicesResponse& r) {
        return absl::StrCat(
            "Released ", r.released_size(), " device(s) of ", o.args[0], "\n",
            r.released_size() == 0 ? "" : FormatAllocations(r.released(), ""));
      });
}

int HostAllocations(const Options& o, const Env& env, Connector& c) {
  migd::v1::ListAllocationsRequest req;
  if (!o.args.empty()) req.set_owner(o.args[0]);
  return HostCall<migd::v1::ListAllocationsRequest,
                  migd::v1::ListAllocationsResponse>(
      o, env, c, &migd::v1::HostService::Stub::ListAllocations, req,
      [](const migd::v1::ListAllocationsResponse& r) {
        return FormatAllocations(r.devices(), "no allocations");
      });
}

}  // namespace

std::string StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return absl::StrCat("CODE_", static_cast<int>(code));
  }
}

std::string FormatRpcError(const std::string& command,
                           const grpc::Status& status,
                           const std::string& reason) {
  std::string out = absl::StrCat("migctl: ", command, ": ",
                                 StatusCodeName(status.error_code()), ": ",
                                 status.error_message());
  if (!reason.empty()) absl::StrAppend(&out, " (reason: ", reason, ")");
  return out;
}

int RunCommand(const Options& o, const Env& env) {
  using CommandFn = int (*)(const Options&, const Env&, Connector&);
  static const auto* commands = new std::map<std::string, CommandFn>{
      {"devices", &Devices},
      {"prepare", &Prepare},
      {"migrate", &Migrate},
      {"check", &Check},
      {"status", &Status},
      {"watch", &Watch},
      {"dirty-pages", &DirtyPages},
      {"cancel", &Cancel},
      {"resolve", &Resolve},
      {"list", &List},
      {"plugins", &Plugins},
      {"identity", &Identity},
      {"host status", &HostStatus},
      {"host bind", &HostBind},
      {"host unbind", &HostUnbind},
      {"host vfs", &HostVfs},
      {"host vf-token", &HostVfToken},
      {"host mdev-types", &HostMdevTypes},
      {"host mdev-create", &HostMdevCreate},
      {"host mdev-remove", &HostMdevRemove},
      {"host allocate", &HostAllocate},
      {"host release", &HostRelease},
      {"host allocations", &HostAllocations},
  };
  if (auto it = commands->find(o.command); it != commands->end()) {
    absl::StatusOr<EndpointResolver> resolver =
        EndpointResolver::Create(o, env.getenv);
    if (!resolver.ok()) return SetupError(env, resolver.status());
    Connector connector(env, *std::move(resolver));
    return it->second(o, env, connector);
  }
  *env.err << "migctl: unknown command '" << o.command << "'\n"
           << UsageLine("") << "\n";
  return kExitUsage;
}

Env ProcessEnv(std::ostream* out, std::ostream* err) {
  Env env;
  env.out = out;
  env.err = err;
  env.dial = [](const security::Credentials& credentials,
                const std::string& address,
                const std::string& expected_identity)
      -> std::shared_ptr<grpc::ChannelInterface> {
    return credentials.Dial(address, expected_identity,
                            security::ChannelUse::kControl);
  };
  env.getenv = [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
  return env;
}

int Main(const std::vector<std::string>& args, const Env& env) {
  std::string command;
  absl::StatusOr<Options> options = ParseArgs(args, &command);
  if (!options.ok()) {
    *env.err << "migctl: " << options.status().message() << "\n"
             << UsageLine(command) << "\n"
             << "Run 'migctl --help' for the commands and flags.\n";
    return kExitUsage;
  }
  if (options->help) {
    *env.out << HelpText();
    return kExitOk;
  }
  int rc = RunCommand(*options, env);
  env.out->flush();
  env.err->flush();
  return rc;
}

}  // namespace migd::cli
