#include "cli/commands.h"

#include <chrono>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/args.h"
#include "cli/format.h"
#include "cli/progress.h"
#include "grpcpp/grpcpp.h"
#include "proto/migd/v1/migration.grpc.pb.h"
#include "proto/migd/v1/migration.pb.h"

namespace migd::cli {
namespace {

using migd::v1::MigrationService;

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

// Prints an RPC failure; `what` (e.g. "PrepareIncoming on 127.0.0.1:7071")
// goes before the server's message when the command made several calls.
int ReportRpcError(const Env& env, const std::string& command,
                   const grpc::Status& status, const grpc::ClientContext& ctx,
                   absl::string_view what = "") {
  grpc::Status shown = status;
  if (!what.empty()) {
    shown = grpc::Status(status.error_code(),
                         absl::StrCat(what, ": ", status.error_message()));
  }
  *env.err << FormatRpcError(command, shown, ErrorReason(ctx)) << "\n";
  return kExitFailure;
}

std::unique_ptr<MigrationService::Stub> Connect(const Env& env,
                                                const std::string& address) {
  return MigrationService::NewStub(env.dial(address));
}

void AddPairs(const std::vector<DevicePairArg>& pairs,
              google::protobuf::RepeatedPtrField<migd::v1::DevicePair>* out) {
  for (const auto& p : pairs) {
    migd::v1::DevicePair* d = out->Add();
    d->set_source_device(p.source);
    d->set_destination_device(p.destination);
  }
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

int Devices(const Options& o, const Env& env) {
  auto stub = Connect(env, o.agent);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::ListDevicesResponse resp;
  grpc::Status s =
      stub->ListDevices(&ctx, migd::v1::ListDevicesRequest(), &resp);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx);
  if (Json(o)) {
    *env.out << ToJson(resp, /*compact=*/false) << "\n";
  } else {
    *env.out << FormatDevicesTable(resp);
  }
  return kExitOk;
}

int Prepare(const Options& o, const Env& env) {
  auto stub = Connect(env, o.agent);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::PrepareIncomingRequest req;
  req.set_job_id(o.job);
  AddPairs(o.devices, req.mutable_devices());
  req.set_source(o.source);
  migd::v1::PrepareIncomingResponse resp;
  grpc::Status s = stub->PrepareIncoming(&ctx, req, &resp);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx);
  if (Json(o)) {
    *env.out << ToJson(resp, /*compact=*/false) << "\n";
  } else {
    *env.out << resp.transfer_token() << "\n";
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

// Follows `job` on `stub` (at `address`) until it ends, showing progress.
int Follow(const Options& o, const Env& env, MigrationService::Stub* stub,
           const std::string& address, const std::string& job) {
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
      stub->WatchMigration(&ctx, req);
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
    return ReportRpcError(env, o.command, s, ctx,
                          absl::StrCat("WatchMigration on ", address));
  }
  // The stream closed before the job ended (it should not): ask once more.
  grpc::ClientContext get_ctx;
  SetDeadline(&get_ctx, o.timeout);
  migd::v1::GetMigrationRequest get;
  get.set_job_id(job);
  s = stub->GetMigration(&get_ctx, get, &last);
  if (!s.ok()) {
    return ReportRpcError(env, o.command, s, get_ctx,
                          absl::StrCat("GetMigration on ", address));
  }
  if (!IsTerminal(last.phase())) {
    *env.err << "migctl: " << o.command << ": " << address
             << " ended the watch while job " << job << " is in phase "
             << PhaseName(last.phase()) << "; run `migctl watch " << job
             << "` to follow it again\n";
    return kExitFailure;
  }
  if (Json(o)) *env.out << ToJson(last, /*compact=*/true) << "\n";
  return Conclude(o, env, last);
}

int Migrate(const Options& o, const Env& env) {
  std::string token = o.token;
  bool prepared_here = false;
  if (token.empty()) {
    auto dst = Connect(env, o.destination);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, o.timeout);
    migd::v1::PrepareIncomingRequest req;
    req.set_job_id(o.job);
    AddPairs(o.devices, req.mutable_devices());
    req.set_source(o.agent);
    migd::v1::PrepareIncomingResponse resp;
    grpc::Status s = dst->PrepareIncoming(&ctx, req, &resp);
    if (!s.ok()) {
      return ReportRpcError(env, o.command, s, ctx,
                            absl::StrCat("PrepareIncoming on ", o.destination));
    }
    token = resp.transfer_token();
    prepared_here = true;
    if (!Json(o)) {
      *env.out << "Prepared job " << o.job << " on destination "
               << o.destination << "\n";
    }
  }

  auto src = Connect(env, o.agent);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::StartMigrationRequest req;
  req.set_job_id(o.job);
  AddPairs(o.devices, req.mutable_devices());
  req.set_destination(o.destination);
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
  grpc::Status s = src->StartMigration(&ctx, req, &started);
  if (!s.ok()) {
    ReportRpcError(env, o.command, s, ctx,
                   absl::StrCat("StartMigration on ", o.agent));
    if (prepared_here) {
      // Release the destination devices this command put in RESUMING.
      auto dst = Connect(env, o.destination);
      grpc::ClientContext cancel_ctx;
      SetDeadline(&cancel_ctx, o.timeout);
      migd::v1::CancelMigrationRequest cancel;
      cancel.set_job_id(o.job);
      migd::v1::Migration cancelled;
      grpc::Status cs = dst->CancelMigration(&cancel_ctx, cancel, &cancelled);
      if (cs.ok()) {
        *env.err << "migctl: " << o.command << ": cancelled the prepared job "
                 << o.job << " on " << o.destination << "\n";
      } else {
        ReportRpcError(env, o.command, cs, cancel_ctx,
                       absl::StrCat("CancelMigration on ", o.destination));
      }
    }
    return kExitFailure;
  }
  if (!Json(o)) {
    *env.out << "Started job " << o.job << ": " << o.agent << " -> "
             << o.destination << "\n";
  }
  return Follow(o, env, src.get(), o.agent, o.job);
}

int Status(const Options& o, const Env& env) {
  auto stub = Connect(env, o.agent);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::GetMigrationRequest req;
  req.set_job_id(o.job);
  migd::v1::Migration m;
  grpc::Status s = stub->GetMigration(&ctx, req, &m);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx);
  if (Json(o)) {
    *env.out << ToJson(m, /*compact=*/false) << "\n";
  } else {
    *env.out << FormatMigrationDetails(m);
  }
  return kExitOk;
}

int Watch(const Options& o, const Env& env) {
  auto stub = Connect(env, o.agent);
  return Follow(o, env, stub.get(), o.agent, o.job);
}

// How often dirty-pages --wait asks again for a job the agent does not know.
constexpr absl::Duration kWaitRetry = absl::Milliseconds(100);

int DirtyPages(const Options& o, const Env& env) {
  auto stub = Connect(env, o.agent);
  const absl::Time wait_until = env.now() + o.timeout;
  migd::v1::WatchDirtyPagesRequest req;
  req.set_job_id(o.job);
  for (;;) {
    grpc::ClientContext ctx;
    if (o.timeout_given) SetDeadline(&ctx, o.timeout);
    std::unique_ptr<grpc::ClientReader<migd::v1::DirtyPages>> reader =
        stub->WatchDirtyPages(&ctx, req);
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
    return ReportRpcError(env, o.command, s, ctx,
                          absl::StrCat("WatchDirtyPages on ", o.agent));
  }
}

int Cancel(const Options& o, const Env& env) {
  auto stub = Connect(env, o.agent);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::CancelMigrationRequest req;
  req.set_job_id(o.job);
  migd::v1::Migration m;
  grpc::Status s = stub->CancelMigration(&ctx, req, &m);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx);
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

int List(const Options& o, const Env& env) {
  auto stub = Connect(env, o.agent);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, o.timeout);
  migd::v1::ListMigrationsResponse resp;
  grpc::Status s =
      stub->ListMigrations(&ctx, migd::v1::ListMigrationsRequest(), &resp);
  if (!s.ok()) return ReportRpcError(env, o.command, s, ctx);
  if (Json(o)) {
    *env.out << ToJson(resp, /*compact=*/false) << "\n";
  } else {
    *env.out << FormatMigrationsTable(resp);
  }
  return kExitOk;
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
  if (o.command == "devices") return Devices(o, env);
  if (o.command == "prepare") return Prepare(o, env);
  if (o.command == "migrate") return Migrate(o, env);
  if (o.command == "status") return Status(o, env);
  if (o.command == "watch") return Watch(o, env);
  if (o.command == "dirty-pages") return DirtyPages(o, env);
  if (o.command == "cancel") return Cancel(o, env);
  if (o.command == "list") return List(o, env);
  *env.err << "migctl: unknown command '" << o.command << "'\n"
           << UsageLine("") << "\n";
  return kExitUsage;
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
