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
#include "migd/base/bounded_queue.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/base/thread_name.h"
#include "migd/base/watchdog.h"
#include "migd/migration/commit.h"
#include "migd/security/identity.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/framing.h"
#include "migd/transfer/grpc_status.h"
#include "migd/transfer/threaded_calls.h"

namespace migd::server {

using transfer::ToGrpcStatus;

namespace {
// Chunks checked and waiting for the loader, per data stream.
constexpr size_t kLoadQueueDepth = 2;

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
  // Data streams: an async method (no handler), served by ThreadedCalls.
  AddMethod(new grpc::internal::RpcServiceMethod(
      transfer::kTransferDataMethod, grpc::internal::RpcMethod::BIDI_STREAMING,
      nullptr));
  MarkMethodRaw(kDataMethodIndex);
  // The outcome question, a plain unary call (index 2).
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
  // The destination's half of a dry run (index 3).
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

void TransferServiceImpl::RequestData(transfer::ServerStream* stream,
                                      grpc::ServerCompletionQueue* queue,
                                      void* tag) {
  RequestAsyncBidiStreaming(kDataMethodIndex, stream->context(), stream->raw(),
                            stream->queue(), queue, tag);
}

absl::StatusOr<std::shared_ptr<migration::DestinationJob>>
TransferServiceImpl::FindSession(const grpc::ByteBuffer& first, bool data,
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
  if (data != (header->stream_index() > 0)) {
    return base::Error(
        absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
        data ? "TransferData carries data streams (stream_index 1 and up)"
             : "data streams (stream_index 1 and up) attach through "
               "TransferData, not Transfer");
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

grpc::Status TransferServiceImpl::Transfer(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::TransferResponse, grpc::ByteBuffer>* stream) {
  grpc::ByteBuffer raw;
  bool read;
  std::atomic<bool> header_late{false};
  {
    // A peer that opens the stream and says nothing would hold this thread.
    base::Watchdog header_due(idle_timeout_, [&header_late, context] {
      header_late = true;
      context->TryCancel();
    });
    read = stream->Read(&raw);
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
  v1::SessionHeader header;
  absl::StatusOr<std::shared_ptr<migration::DestinationJob>> found =
      FindSession(raw, /*data=*/false, &header);
  if (!found.ok()) {
    base::LogWarning("refused a session from ", context->peer(), ": ",
                     base::StatusText(found.status()));
    return ToGrpcStatus(found.status(), context);
  }
  std::shared_ptr<migration::DestinationJob> job = *std::move(found);
  const std::string& job_id = header.job_id();
  transfer::CopyCounter copies;
  // Who is calling: the Authorizer let only an agent identity through; the
  // job checks it is the one its token is bound to.
  const std::string identity = PeerIdentityOf(*context);
  // COMMIT arrived: the job is the destination's to finish (Complete), and
  // a silence from here on is no abort of it.
  std::atomic<bool> committed{false};
  // Writes on this stream come from this thread (the answers) and from the
  // job's canceller or the idle watchdog (the abort), one at a time: a sync
  // stream takes one writer at a time.
  absl::Mutex write_mu;
  bool abort_sent = false;  // under write_mu
  auto write = [&](const v1::TransferResponse& response) {
    absl::MutexLock lock(&write_mu);
    return stream->Write(response);
  };
  // Ends the session from another thread (the job's canceller, the idle
  // watchdog): tells the source `why` unless an operator cancelled (the
  // source then reads CANCELLED, which is the truth), then cancels the call,
  // which wakes this thread's Read. Once cancelled, the status this handler
  // returns never reaches the source: the SessionAborted is what it reads.
  auto end_session = [&](const absl::Status& why) {
    if (base::ReasonOf(why) != v1::ERROR_REASON_CANCELLED) {
      // A write to a dead connection blocks, and so does waiting for this
      // thread's to end: the cancel ends both, so that an abort, which runs
      // with the job's locks held, never hangs.
      base::Watchdog bound(kAbortWriteTimeout,
                           [context] { context->TryCancel(); });
      absl::MutexLock lock(&write_mu);
      if (!abort_sent) {
        abort_sent = true;
        v1::TransferResponse aborted;
        aborted.mutable_aborted()->set_reason(
            base::ReasonName(base::ReasonOf(why)));
        aborted.mutable_aborted()->set_code(static_cast<int32_t>(why.code()));
        aborted.mutable_aborted()->set_message(std::string(why.message()));
        stream->Write(aborted);
      }
    }
    context->TryCancel();
  };
  if (absl::Status s = job->Attach(
          header, identity,
          [&end_session](const absl::Status& why) { end_session(why); });
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

  const absl::Status idle_timeout =
      base::Error(absl::StatusCode::kDeadlineExceeded, v1::ERROR_REASON_TIMEOUT,
                  absl::StrCat("source sent nothing for ",
                               absl::FormatDuration(idle_timeout_)));
  std::atomic<bool> idle{false};
  base::Watchdog watch(idle_timeout_, [&] {
    idle = true;
    if (committed) {
      // Complete runs: the job is not aborted, only its answer is lost.
      context->TryCancel();
    } else {
      end_session(idle_timeout);
    }
  });
  // Data arriving on the data streams keeps the session alive too.
  job->SetActivityCallback([&watch] { watch.Kick(); });
  struct Unhook {
    migration::DestinationJob* job;
    ~Unhook() { job->SetActivityCallback(nullptr); }
  } unhook{job.get()};
  auto fail = [&](absl::Status s) {
    if (idle) s = idle_timeout;  // what the watchdog told the source
    job->Abort(s, /*from_stream=*/0);
    return ToGrpcStatus(s, context);
  };

  v1::TransferResponse resp;
  resp.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_1);
  if (!write(resp)) {
    return fail(base::Error(absl::StatusCode::kUnavailable,
                            v1::ERROR_REASON_PEER_UNAVAILABLE,
                            "source went away during the handshake"));
  }
  while (!committed) {
    if (!stream->Read(&raw)) {
      return fail(base::Error(
          absl::StatusCode::kUnavailable, v1::ERROR_REASON_PEER_UNAVAILABLE,
          context->IsCancelled()
              ? "session cancelled before the source committed"
              : "source ended the session before committing"));
    }
    watch.Kick();
    absl::StatusOr<transfer::DecodedRequest> decoded =
        transfer::DecodeRequest(raw, &copies);
    raw.Clear();  // the decoded request holds what it needs
    if (!decoded.ok()) return fail(decoded.status());
    const v1::TransferRequest& req = decoded->message();
    absl::Status s;
    switch (decoded->is_chunk() ? v1::TransferRequest::kChunk
                                : req.kind_case()) {
      case v1::TransferRequest::kChunk:
        s = base::Error(
            absl::StatusCode::kInvalidArgument, v1::ERROR_REASON_PROTOCOL_ERROR,
            "chunks travel on data streams, not the control stream");
        break;
      case v1::TransferRequest::kMarker:
        s = job->OnMarker(req.marker());
        committed = s.ok() && req.marker().kind() == v1::PhaseMarker::COMMIT;
        if (s.ok() &&
            req.marker().kind() == v1::PhaseMarker::INITIAL_DATA_END) {
          // The device holds every byte before the marker: acknowledge, so
          // the source may switch over.
          resp.Clear();
          resp.mutable_switchover_ack()->set_device(req.marker().device());
          if (!write(resp)) {
            s = base::Error(absl::StatusCode::kUnavailable,
                            v1::ERROR_REASON_PEER_UNAVAILABLE,
                            "source went away before the acknowledgement");
          }
        }
        break;
      default:
        s = base::Error(absl::StatusCode::kInvalidArgument,
                        v1::ERROR_REASON_PROTOCOL_ERROR,
                        "unexpected message in the middle of a session");
    }
    if (!s.ok()) return fail(s);
  }

  const uint64_t job_number = ++commits_;
  FaultPoint(/*resumed=*/false, job_number);
  absl::StatusOr<v1::Completion> completion = job->Complete();
  if (!completion.ok()) {
    return fail(completion.status());
  }
  FaultPoint(/*resumed=*/true, job_number);
  job->job()->AddPayloadCopies(copies.copies());
  resp.Clear();
  *resp.mutable_completion() = *completion;
  write(resp);
  base::LogInfo("job ", job_id, ": incoming migration complete");
  return grpc::Status::OK;
}

void TransferServiceImpl::ServeData(transfer::ServerStream& stream) {
  // A thread of its own per call (ThreadedCalls): it reads and checks the
  // chunks; "dst-load" below writes them to the device.
  base::NameThisThread("dst-data");
  grpc::ServerContext* context = stream.context();
  grpc::ByteBuffer raw;
  bool timed_out = false;
  if (!stream.Read(&raw, absl::Now() + idle_timeout_, &timed_out)) {
    if (timed_out) {
      const std::string why = absl::StrCat("no session header within ",
                                           absl::FormatDuration(idle_timeout_));
      base::LogWarning("dropped a data stream from ", context->peer(), ": ",
                       why);
      stream.Finish(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, why));
    } else {
      stream.Finish(grpc::Status(grpc::StatusCode::CANCELLED,
                                 "data stream closed before its header"));
    }
    return;
  }
  v1::SessionHeader header;
  absl::StatusOr<std::shared_ptr<migration::DestinationJob>> job =
      FindSession(raw, /*data=*/true, &header);
  if (!job.ok()) {
    base::LogWarning("refused a data stream from ", context->peer(), ": ",
                     base::StatusText(job.status()));
    stream.Finish(ToGrpcStatus(job.status(), context));
    return;
  }
  stream.Finish(DataStream(stream, job->get(), header));
}

grpc::Status TransferServiceImpl::DataStream(transfer::ServerStream& stream,
                                             migration::DestinationJob* job,
                                             const v1::SessionHeader& header) {
  grpc::ServerContext* context = stream.context();
  const uint32_t index = header.stream_index();
  // Cancelled without a word: the control stream tells the source why, and
  // a failing data stream answers with its own cause.
  if (absl::Status s = job->AttachData(
          header, PeerIdentityOf(*context),
          [context](const absl::Status&) { context->TryCancel(); });
      !s.ok()) {
    base::LogWarning("job ", header.job_id(), ": refused data stream ", index,
                     ": ", base::StatusText(s));
    return ToGrpcStatus(s, context);
  }
  // The canceller handed to AttachData points into this call.
  struct Gone {
    migration::DestinationJob* job;
    uint32_t index;
    ~Gone() { job->StreamGone(index); }
  } gone{job, index};
  auto fail = [&](absl::Status s) {
    s = base::Annotate(s, absl::StrCat("data stream ", index));
    job->Abort(s, /*from_stream=*/index);
    return ToGrpcStatus(s, context);
  };
  v1::TransferResponse resp;
  resp.mutable_accepted()->set_protocol_version(v1::PROTOCOL_VERSION_1);
  if (!stream.Write(resp)) {
    return fail(base::Error(absl::StatusCode::kUnavailable,
                            v1::ERROR_REASON_PEER_UNAVAILABLE,
                            "source went away during the handshake"));
  }
  transfer::CopyCounter copies;
  transfer::StreamChecker checker(job->job()->num_devices());

  // This thread reads and checks; a loader thread hands the chunks to the job
  // (the device writes), so that receiving a chunk overlaps loading the one
  // before. A queued chunk holds its gRPC buffers: the depth bounds that
  // memory.
  base::BoundedQueue<transfer::DecodedRequest> loads(kLoadQueueDepth);
  absl::Status load_error;  // the loader's; read after it is joined
  std::thread loader([&] {
    base::NameThisThread("dst-load");
    while (std::optional<transfer::DecodedRequest> chunk = loads.Pop()) {
      if (absl::Status s = job->OnChunk(*std::move(chunk)); !s.ok()) {
        load_error = s;
        loads.Cancel();
        // The job ends with this cause (a no-op when this stream's reader
        // failed first) and cancels the other streams. This one stays open:
        // the source, seeing the session fail, closes it to ask for its
        // verdict, and the handler answers with `load_error`. Cancelling
        // this call here would turn that answer into CANCELLED.
        job->Abort(base::Annotate(s, absl::StrCat("data stream ", index)),
                   /*from_stream=*/index);
        return;
      }
    }
  });
  // On every return: after a failure the job is aborted first (fail), which
  // wakes a loader waiting for room in the reorder buffer.
  struct JoinLoader {
    base::BoundedQueue<transfer::DecodedRequest>* loads;
    std::thread* loader;
    ~JoinLoader() {
      loads->Cancel();
      if (loader->joinable()) loader->join();
    }
  } join_loader{&loads, &loader};

  grpc::ByteBuffer raw;
  bool ended = false;  // STREAM_END arrived
  while (stream.Read(&raw)) {
    absl::StatusOr<transfer::DecodedRequest> decoded =
        transfer::DecodeRequest(raw, &copies);
    raw.Clear();
    if (!decoded.ok()) return fail(decoded.status());
    if (ended) {
      return fail(base::Error(absl::StatusCode::kInvalidArgument,
                              v1::ERROR_REASON_PROTOCOL_ERROR,
                              "a message after STREAM_END"));
    }
    if (!decoded->is_chunk()) {
      const v1::TransferRequest& req = decoded->message();
      absl::Status s =
          req.has_marker()
              ? checker.CheckStreamEnd(req.marker())
              : base::Error(absl::StatusCode::kInvalidArgument,
                            v1::ERROR_REASON_PROTOCOL_ERROR,
                            "a data stream carries only chunks and its "
                            "STREAM_END");
      if (!s.ok()) return fail(s);
      ended = true;
      continue;
    }
    if (absl::Status s =
            checker.CheckChunk(decoded->header(), decoded->payload_size(),
                               decoded->PayloadCrc32c());
        !s.ok()) {
      return fail(s);
    }
    if (!loads.Push(*std::move(decoded))) break;  // the loader failed
  }
  loads.Close();
  loader.join();
  if (!load_error.ok()) return fail(load_error);
  job->job()->AddPayloadCopies(copies.copies());
  if (!ended) {
    // With the async API a read that fails does not say whether the source
    // closed the stream or the call broke: only its end marker tells.
    return fail(base::Error(
        absl::StatusCode::kUnavailable, v1::ERROR_REASON_PEER_UNAVAILABLE,
        absl::StrCat("ended after ", checker.next_sequence(),
                     " chunks without its STREAM_END (dropped, or the source "
                     "gave up)")));
  }
  job->DataStreamEnded(index);
  return grpc::Status::OK;
}

}  // namespace migd::server
