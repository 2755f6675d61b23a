#include "migd/server/transfer_service.h"

#include <unistd.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/impl/rpc_service_method.h"
#include "grpcpp/support/method_handler.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"
#include "migd/base/watchdog.h"
#include "migd/migration/commit.h"
#include "migd/security/identity.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/data_frame.h"
#include "migd/transfer/data_receiver.h"
#include "migd/transfer/framing.h"
#include "migd/transfer/grpc_status.h"

namespace migd::server {

using transfer::ToGrpcStatus;

namespace {
constexpr char kGetOutcomeMethod[] = "/migd.v1.TransferService/GetOutcome";
constexpr char kCheckCompatibilityMethod[] =
    "/migd.v1.TransferService/CheckCompatibility";

// How long telling the source why its session ends may take before the call
// is cancelled without it (a dead connection, a source that stopped reading).
constexpr absl::Duration kAbortWriteTimeout = absl::Seconds(1);

// The caller's certificate identity; "" without TLS.
std::string PeerIdentityOf(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  return auth == nullptr ? "" : security::PeerIdentity(*auth);
}
}  // namespace

TransferServiceImpl::SessionWriter::SessionWriter(grpc::ServerContext* context,
                                                  ControlStream* stream)
    : context_(context), stream_(stream) {}

bool TransferServiceImpl::SessionWriter::Write(
    const v1::TransferResponse& response) {
  absl::MutexLock lock(&mu_);
  return stream_->Write(response);
}

void TransferServiceImpl::SessionWriter::TellSource(const absl::Status& why) {
  // A write to a dead connection blocks, and so does waiting for the
  // handler's to end: the cancel ends both, so that an abort, which runs
  // with the job's locks held, never hangs.
  grpc::ServerContext* context = context_;
  base::Watchdog bound(kAbortWriteTimeout, [context] { context->TryCancel(); });
  absl::MutexLock lock(&mu_);
  if (abort_sent_) return;
  abort_sent_ = true;
  v1::TransferResponse aborted;
  *aborted.mutable_aborted() = transfer::StatusMessage(why);
  stream_->Write(aborted);
}

void TransferServiceImpl::SessionWriter::EndSession(const absl::Status& why) {
  TellSource(why);
  context_->TryCancel();
}

TransferServiceImpl::TransferServiceImpl(migration::JobTable* jobs,
                                         absl::Duration idle_timeout,
                                         TransferFaults faults,
                                         const Compatibility* compatibility)
    : jobs_(jobs),
      idle_timeout_(idle_timeout),
      faults_(faults),
      compatibility_(compatibility) {
  // Registered by hand (the generated service is typed): the handler gets
  // the raw buffers of each request.
  AddMethod(new grpc::internal::RpcServiceMethod(
      transfer::kTransferMethod, grpc::internal::RpcMethod::BIDI_STREAMING,
      new grpc::internal::BidiStreamingHandler<
          TransferServiceImpl, grpc::ByteBuffer, v1::TransferResponse>(
          [](TransferServiceImpl* service, grpc::ServerContext* context,
             grpc::ServerReaderWriter<v1::TransferResponse, grpc::ByteBuffer>*
                 stream) { return service->Transfer(context, stream); },
          this)));
  // The outcome question, a plain unary call.
  AddMethod(new grpc::internal::RpcServiceMethod(
      kGetOutcomeMethod, grpc::internal::RpcMethod::NORMAL_RPC,
      new grpc::internal::RpcMethodHandler<
          TransferServiceImpl, v1::GetOutcomeRequest, v1::GetOutcomeResponse,
          grpc::protobuf::MessageLite, grpc::protobuf::MessageLite>(
          [](TransferServiceImpl* service, grpc::ServerContext* context,
             const v1::GetOutcomeRequest* request,
             v1::GetOutcomeResponse* response) {
            return service->GetOutcome(context, request, response);
          },
          this)));
  // The destination's half of a dry run.
  AddMethod(new grpc::internal::RpcServiceMethod(
      kCheckCompatibilityMethod, grpc::internal::RpcMethod::NORMAL_RPC,
      new grpc::internal::RpcMethodHandler<
          TransferServiceImpl, v1::CheckCompatibilityRequest,
          v1::CheckCompatibilityResponse, grpc::protobuf::MessageLite,
          grpc::protobuf::MessageLite>(
          [](TransferServiceImpl* service, grpc::ServerContext* context,
             const v1::CheckCompatibilityRequest* request,
             v1::CheckCompatibilityResponse* response) {
            return service->CheckCompatibility(context, request, response);
          },
          this)));
}

grpc::Status TransferServiceImpl::CheckCompatibility(
    grpc::ServerContext* context, const v1::CheckCompatibilityRequest* request,
    v1::CheckCompatibilityResponse* response) {
  if (request->devices_size() == 0) return grpc::Status::OK;  // a probe
  if (compatibility_ != nullptr) {
    *response = compatibility_->CheckHere(*request);
  } else {
    for (const v1::DeviceDescriptor& d : request->devices()) {
      v1::DeviceCompatibility* r = response->add_devices();
      r->set_destination_device(d.destination_device());
      r->set_blocker("device_not_found");
      r->set_message("this agent checks no devices");
    }
  }
  base::LogInfo("checked ", request->devices_size(),
                " device(s) for a dry run from ", PeerIdentityOf(*context));
  return grpc::Status::OK;
}

grpc::Status TransferServiceImpl::GetOutcome(
    grpc::ServerContext* context, const v1::GetOutcomeRequest* request,
    v1::GetOutcomeResponse* response) {
  const std::string& id = request->job_id();
  const std::string identity = PeerIdentityOf(*context);
  if (std::shared_ptr<migration::DestinationJob> job =
          jobs_->FindDestination(id);
      job != nullptr) {
    absl::StatusOr<v1::GetOutcomeResponse> answer =
        job->AnswerOutcome(identity);
    if (!answer.ok()) {
      base::LogWarning("job ", id, ": refused an outcome question from ",
                       context->peer(), ": ",
                       base::StatusText(answer.status()));
      return ToGrpcStatus(answer.status(), context);
    }
    *response = *std::move(answer);
    return grpc::Status::OK;
  }
  absl::StatusOr<std::shared_ptr<migration::Job>> found = jobs_->Find(id);
  if (!found.ok() || (*found)->role() != v1::ROLE_DESTINATION) {
    // Never prepared here, pruned from the journal, or the journal is gone:
    // no telling whether this agent ever ran the devices.
    response->set_outcome(v1::OUTCOME_UNKNOWN);
    response->set_known(false);
    response->set_message(
        absl::StrCat("no incoming job ", id, " on this agent"));
    base::LogWarning("job ", id,
                     ": the source asked for the outcome of a job "
                     "this agent does not know: UNKNOWN");
    return grpc::Status::OK;
  }
  // A job restored from the journal: ended, or IN_DOUBT.
  const v1::Migration record = (*found)->Snapshot();
  if (record.peer_identity() != identity) {
    return ToGrpcStatus(
        base::Error(
            absl::StatusCode::kPermissionDenied, v1::ERROR_REASON_BAD_TOKEN,
            absl::StrCat(
                "the outcome of job ", id, " is for its source ",
                record.peer_identity().empty() ? "(no identity)"
                                               : record.peer_identity(),
                "; asked by ", identity.empty() ? "(no identity)" : identity)),
        context);
  }
  migration::DestinationAnswer answer = migration::AnswerFor(record.phase());
  // Nothing drives a restored job: one that is not settled cannot be
  // aborted here (recovery leaves none such but IN_DOUBT).
  response->set_outcome(answer.abort_first ? v1::OUTCOME_UNKNOWN
                                           : answer.outcome);
  response->set_known(true);
  response->set_message(absl::StrCat("job ", id, " is ",
                                     migration::PhaseName(record.phase()),
                                     " here (restored from the journal)"));
  base::LogInfo("job ", id, ": the source asked for the outcome: ",
                migration::OutcomeName(response->outcome()), " (",
                response->message(), ")");
  return grpc::Status::OK;
}

void TransferServiceImpl::FaultPoint(bool resumed, uint64_t job_number) {
  const std::optional<uint64_t>& at =
      resumed ? faults_.exit_after_resume : faults_.exit_on_commit;
  if (at != job_number) return;
  base::LogWarning("test fault: exiting ",
                   resumed ? "after resuming the devices of" : "on COMMIT of",
                   " incoming job number ", job_number,
                   resumed ? ", before its Completion" : ", before loading");
  _exit(75);
}

absl::StatusOr<std::shared_ptr<migration::DestinationJob>>
TransferServiceImpl::FindSession(const grpc::ByteBuffer& first,
                                 v1::SessionHeader* header) {
  transfer::CopyCounter copies;
  absl::StatusOr<transfer::DecodedRequest> decoded =
      transfer::DecodeRequest(first, &copies);
  if (!decoded.ok()) return decoded.status();
  const v1::TransferRequest& req = decoded->message();
  if (decoded->is_chunk() || !req.has_header()) {
    return base::Error(absl::StatusCode::kInvalidArgument,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "the first message of a stream must be its header");
  }
  *header = req.header();
  if (header->stream_index() > 0) {
    return base::Error(
        absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
        "data streams (stream_index 1 and up) attach on the data channel "
        "(SessionAccepted.data_port), not on Transfer");
  }
  const std::string& job_id = header->job_id();
  std::shared_ptr<migration::DestinationJob> job =
      jobs_->FindDestination(job_id);
  if (job == nullptr) {
    return base::Error(absl::StatusCode::kFailedPrecondition,
                       v1::ERROR_REASON_NOT_PREPARED,
                       absl::StrCat("no incoming job ", job_id,
                                    " is prepared on this agent (call "
                                    "PrepareIncoming here first)"));
  }
  return job;
}

grpc::Status TransferServiceImpl::ReadHeader(grpc::ServerContext* context,
                                             ControlStream* stream,
                                             grpc::ByteBuffer* raw) {
  bool read;
  std::atomic<bool> header_late{false};
  {
    // A peer that opens the stream and says nothing would hold this thread.
    base::Watchdog header_due(idle_timeout_, [&header_late, context] {
      header_late = true;
      context->TryCancel();
    });
    read = stream->Read(raw);
  }  // the watchdog cannot fire any more
  if (header_late) {
    // Even a header read just before the cancel is useless now: the call is
    // cancelled.
    base::LogWarning("dropped a session from ", context->peer(),
                     ": no header within ",
                     absl::FormatDuration(idle_timeout_));
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        absl::StrCat("no session header within ",
                                     absl::FormatDuration(idle_timeout_)));
  }
  if (!read) {
    return grpc::Status(grpc::StatusCode::CANCELLED,
                        "session closed before its header");
  }
  return grpc::Status::OK;
}

grpc::Status TransferServiceImpl::Transfer(grpc::ServerContext* context,
                                           ControlStream* stream) {
  grpc::ByteBuffer raw;
  if (grpc::Status read = ReadHeader(context, stream, &raw); !read.ok()) {
    return read;
  }
  v1::SessionHeader header;
  absl::StatusOr<std::shared_ptr<migration::DestinationJob>> found =
      FindSession(raw, &header);
  if (!found.ok()) {
    base::LogWarning("refused a session from ", context->peer(), ": ",
                     base::StatusText(found.status()));
    return ToGrpcStatus(found.status(), context);
  }
  std::shared_ptr<migration::DestinationJob> job = *std::move(found);
  const std::string& job_id = header.job_id();
  // Who is calling: the Authorizer let only an agent identity through; the
  // job checks it is the one its token is bound to.
  const std::string identity = PeerIdentityOf(*context);
  SessionWriter writer(context, stream);
  if (absl::Status s = job->Attach(
          header, identity,
          [&writer](const absl::Status& why) { writer.EndSession(why); });
      !s.ok()) {
    base::LogWarning("job ", job_id, ": refused a session from ",
                     context->peer(), ": ", base::StatusText(s));
    return ToGrpcStatus(s, context);
  }
  base::LogInfo("job ", job_id, ": source attached from ", context->peer(),
                identity.empty() ? "" : absl::StrCat(" as ", identity));
  // The canceller handed to Attach points into this call.
  struct Gone {
    migration::DestinationJob* job;
    ~Gone() { job->StreamGone(0); }
  } gone{job.get()};
  grpc::Status status = ServeAttached(context, stream, writer, *job);
  if (status.ok()) {
    base::LogInfo("job ", job_id, ": incoming migration complete");
  }
  return status;
}

grpc::Status TransferServiceImpl::ServeAttached(
    grpc::ServerContext* context, ControlStream* stream, SessionWriter& writer,
    migration::DestinationJob& job) {
  const absl::Status idle_timeout =
      base::Error(absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
                  absl::StrCat("source sent nothing for ",
                               absl::FormatDuration(idle_timeout_)));
  // COMMIT arrived: the job is the destination's to finish (Complete), and
  // a silence from here on is no abort of it.
  std::atomic<bool> committed{false};
  std::atomic<bool> idle{false};
  base::Watchdog watch(idle_timeout_, [&] {
    idle = true;
    if (committed) {
      // Complete runs: the job is not aborted, only its answer is lost.
      context->TryCancel();
    } else {
      writer.EndSession(idle_timeout);
    }
  });
  // Data arriving on the data streams keeps the session alive too.
  job.SetActivityCallback([&watch] { watch.Kick(); });
  struct Unhook {
    migration::DestinationJob* job;
    ~Unhook() { job->SetActivityCallback(nullptr); }
  } unhook{&job};
  // This thread's own failure (a marker refused, a write-ahead point that
  // could not be written, a load rejected): said before the abort closes the
  // data streams, which the source may see end first.
  auto fail = [&](absl::Status s) {
    if (idle) s = idle_timeout;  // what the watchdog told the source
    writer.TellSource(s);
    job.Abort(s, /*from_stream=*/0);
    return ToGrpcStatus(s, context);
  };

  v1::TransferResponse resp;
  resp.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_2);
  resp.mutable_accepted()->set_data_port(data_port_.load());
  if (!writer.Write(resp)) {
    return fail(base::Error(absl::StatusCode::kUnavailable,
                            v1::ERROR_REASON_PEER_UNAVAILABLE,
                            "source went away during the handshake"));
  }
  transfer::CopyCounter copies;
  grpc::ByteBuffer raw;
  while (!committed) {
    if (!stream->Read(&raw)) {
      return fail(base::Error(
          absl::StatusCode::kUnavailable, v1::ERROR_REASON_PEER_UNAVAILABLE,
          context->IsCancelled()
              ? "session cancelled before the source committed"
              : "source ended the session before committing"));
    }
    watch.Kick();
    absl::StatusOr<bool> commit = TakeRequest(job, writer, raw, &copies);
    raw.Clear();  // the decoded request held what it needed
    if (!commit.ok()) return fail(commit.status());
    committed = *commit;
  }

  const uint64_t job_number = ++commits_;
  FaultPoint(/*resumed=*/false, job_number);
  absl::StatusOr<v1::Completion> completion = job.Complete();
  if (!completion.ok()) {
    return fail(completion.status());
  }
  FaultPoint(/*resumed=*/true, job_number);
  job.job()->AddPayloadCopies(copies.copies());
  resp.Clear();
  *resp.mutable_completion() = *completion;
  writer.Write(resp);
  return grpc::Status::OK;
}

absl::StatusOr<bool> TransferServiceImpl::TakeRequest(
    migration::DestinationJob& job, SessionWriter& writer,
    const grpc::ByteBuffer& raw, transfer::CopyCounter* copies) {
  absl::StatusOr<transfer::DecodedRequest> decoded =
      transfer::DecodeRequest(raw, copies);
  if (!decoded.ok()) return decoded.status();
  const v1::TransferRequest& req = decoded->message();
  if (decoded->is_chunk()) {
    return base::Error(absl::StatusCode::kInvalidArgument,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "chunks travel on data streams, not the control stream");
  }
  if (!req.has_marker()) {
    return base::Error(absl::StatusCode::kInvalidArgument,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "unexpected message in the middle of a session");
  }
  if (absl::Status s = job.OnMarker(req.marker()); !s.ok()) return s;
  if (req.marker().kind() == v1::PhaseMarker::INITIAL_DATA_END) {
    // The device holds every byte before the marker: acknowledge, so the
    // source may switch over.
    v1::TransferResponse ack;
    ack.mutable_switchover_ack()->set_device(req.marker().device());
    if (!writer.Write(ack)) {
      return base::Error(absl::StatusCode::kUnavailable,
                         v1::ERROR_REASON_PEER_UNAVAILABLE,
                         "source went away before the acknowledgement");
    }
  }
  return req.marker().kind() == v1::PhaseMarker::COMMIT;
}

void TransferServiceImpl::ServeDataConnection(transfer::DataConnection& conn,
                                              const absl::Status& admission) {
  v1::SessionHeader header;
  absl::Status read;
  bool late = false;
  {
    // A peer that connects and says nothing would hold this thread.
    base::Watchdog due(idle_timeout_, [&] {
      late = true;
      conn.Shutdown();
    });
    read = transfer::ReadMessage(conn, &header);
  }
  if (late || !read.ok()) {
    // A header read just as the watchdog fired is of no use: the
    // connection is shut down.
    base::LogWarning("dropped a data connection from ", conn.peer(), ": ",
                     late ? absl::StrCat("no session header within ",
                                         absl::FormatDuration(idle_timeout_))
                          : base::StatusText(read));
    return;
  }
  auto refuse = [&](const absl::Status& s) {
    base::LogWarning("job ", header.job_id(), ": refused data stream ",
                     header.stream_index(), " from ", conn.peer(), ": ",
                     base::StatusText(s));
    v1::TransferResponse answer;
    *answer.mutable_aborted() = transfer::StatusMessage(s);
    (void)transfer::WriteMessage(conn, answer);
  };
  if (!admission.ok()) {
    refuse(admission);
    return;
  }
  if (header.stream_index() == 0) {
    refuse(base::Error(absl::StatusCode::kInvalidArgument,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "the data channel carries data streams (stream_index "
                       "1 and up); the control stream is the Transfer call"));
    return;
  }
  if (header.max_chunk_bytes() < transfer::kMinChunkBytes ||
      header.max_chunk_bytes() > transfer::kMaxChunkBytes) {
    refuse(base::Error(
        absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
        absl::StrCat("max_chunk_bytes ", header.max_chunk_bytes(),
                     " is outside ", transfer::kMinChunkBytes, "..",
                     transfer::kMaxChunkBytes)));
    return;
  }
  std::shared_ptr<migration::DestinationJob> job =
      jobs_->FindDestination(header.job_id());
  if (job == nullptr) {
    refuse(base::Error(absl::StatusCode::kFailedPrecondition,
                       v1::ERROR_REASON_NOT_PREPARED,
                       absl::StrCat("no incoming job ", header.job_id(),
                                    " is prepared on this agent")));
    return;
  }
  const uint32_t index = header.stream_index();
  // A cancel or a failure elsewhere in the session shuts this connection
  // down, which ends the blocked read below; the control stream tells the
  // source why.
  if (absl::Status s =
          job->AttachData(header, conn.peer_identity(),
                          [&conn](const absl::Status&) { conn.Shutdown(); });
      !s.ok()) {
    refuse(s);
    return;
  }
  // The canceller handed to AttachData points at this connection.
  struct Gone {
    migration::DestinationJob* job;
    uint32_t index;
    ~Gone() { job->StreamGone(index); }
  } gone{job.get(), index};
  v1::TransferResponse resp;
  resp.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_2);
  absl::Status s = transfer::WriteMessage(conn, resp);
  if (s.ok()) {
    transfer::ReceiveOptions options;
    options.num_devices = job->job()->num_devices();
    options.max_chunk_bytes = header.max_chunk_bytes();
    // Each chunk is in the device (or refused) before the stream reads the
    // next one: a chunk whose turn has not come waits on this thread
    // (DestinationJob::OnChunk). Two buffers, as the job's memory cap
    // counts them (DestinationJob::Attach).
    options.max_buffers = 2;
    migration::DestinationJob* raw = job.get();
    s = transfer::ReceiveDataStream(conn, options,
                                    [raw](transfer::DecodedRequest chunk) {
                                      return raw->OnChunk(std::move(chunk));
                                    });
  }
  if (!s.ok()) {
    s = base::Annotate(s, absl::StrCat("data stream ", index));
    job->Abort(s, /*from_stream=*/index);
    // Best effort: the source may be gone, and the control stream says it
    // too.
    (void)transfer::WriteMessage(conn, transfer::StatusMessage(s));
    return;
  }
  job->DataStreamEnded(index);
  (void)transfer::WriteMessage(conn, transfer::StatusMessage(absl::OkStatus()));
}

}  // namespace migd::server
