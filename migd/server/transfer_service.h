// migd/server/transfer_service.h
//
// migd.v1.TransferService: the destination end of a transfer session. Finds
// the prepared job the session header names, lets the job check the token and
// devices, then feeds it chunks and markers in order and answers with the
// completion. A session that breaks, stalls or is cancelled aborts the job
// (its devices are reset). When the destination ends the session itself (a
// stream failed, the source went silent), it tells the source its cause on
// the control stream (TransferResponse.aborted) before it cancels the call,
// whose status would otherwise reach the source as a bare CANCELLED.
//
// The control stream (Transfer) is a gRPC call with a sync handler, served
// raw (requests arrive as gRPC's own buffers, chunk_codec.h). The data
// streams, which carry the bulk, are not gRPC: each is a connection of the
// data channel (transfer/data_listener.h), whose thread this service lends
// the job (ServeDataConnection): it finds the session, attaches the stream
// and runs transfer/data_receiver.h's receive path to the end. The port of
// that channel goes to the source in SessionAccepted.

#ifndef MIGD_SERVER_TRANSFER_SERVICE_H_
#define MIGD_SERVER_TRANSFER_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/impl/service_type.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/sync_stream.h"
#include "migd/migration/job_table.h"
#include "migd/server/compatibility.h"
#include "migd/transfer/chunk_codec.h"
#include "migd/transfer/data_connection.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::server {

// Fault injection for tests of the end of a migration: the agent process
// _exit()s (as a crash would end it) when its Nth incoming job (counted from
// 1)...
struct TransferFaults {
  // ...received COMMIT, before it loads or resumes a device.
  std::optional<uint64_t> exit_on_commit;
  // ...resumed its devices, before its Completion goes out.
  std::optional<uint64_t> exit_after_resume;
};

class TransferServiceImpl final : public grpc::Service {
 public:
  // A session silent for `idle_timeout` is aborted; a stream whose header has
  // not come within it is ended (DEADLINE_EXCEEDED on a data stream,
  // CANCELLED on the control stream, whose sync API cannot end a call while
  // it reads).
  // `compatibility` answers CheckCompatibility (null: every device is
  // reported as not found).
  TransferServiceImpl(migration::JobTable* jobs, absl::Duration idle_timeout,
                      TransferFaults faults = {},
                      const Compatibility* compatibility = nullptr);

  // CheckCompatibility: the destination's half of a dry run (see
  // Compatibility::CheckHere). Changes nothing.
  grpc::Status CheckCompatibility(grpc::ServerContext* context,
                                  const v1::CheckCompatibilityRequest* request,
                                  v1::CheckCompatibilityResponse* response);

  // GetOutcome: what became of an incoming job, for its source (the
  // identity its token is bound to; PERMISSION_DENIED for anyone else). A
  // job this agent runs answers through DestinationJob::AnswerOutcome; one
  // restored from the journal from its phase; an unknown id is UNKNOWN
  // (known = false).
  grpc::Status GetOutcome(grpc::ServerContext* context,
                          const v1::GetOutcomeRequest* request,
                          v1::GetOutcomeResponse* response);

  using ControlStream =
      grpc::ServerReaderWriter<v1::TransferResponse, grpc::ByteBuffer>;

  // The control stream (Transfer), on the sync API: the header, the attach,
  // then markers until COMMIT, then the completion.
  grpc::Status Transfer(grpc::ServerContext* context, ControlStream* stream);

  // One data channel connection, on its own thread: its header (within
  // the idle timeout), the job it names, then every chunk to STREAM_END and
  // the verdict. A refused header is answered with why and closed; so is
  // every header when `admission` is not OK (the listener's limit).
  void ServeDataConnection(transfer::DataConnection& conn,
                           const absl::Status& admission);

  // The data channel's port, which SessionAccepted tells each source. Set
  // once the listener is up, before the server starts.
  void set_data_port(uint16_t port) { data_port_ = port; }

 private:
  // The writes on a control stream: the handler's answers, and the word a
  // session's end leaves the source (from the handler, the job's canceller
  // or the idle watchdog), one at a time, since a sync stream takes one
  // writer at a time.
  class SessionWriter {
   public:
    SessionWriter(grpc::ServerContext* context, ControlStream* stream);
    // False when the stream is broken.
    bool Write(const v1::TransferResponse& response);
    // Tells the source why the session ends (TransferResponse.aborted),
    // once: the source may see a data stream close first, and must not take
    // that for a lost peer (an operator's cancel included). Bounded: a
    // write that cannot go out within a second cancels the call.
    void TellSource(const absl::Status& why);
    // Ends the session from another thread (the job's canceller, the idle
    // watchdog): tells the source `why`, then cancels the call, which wakes
    // the handler's Read. Once cancelled, the status the handler returns
    // never reaches the source: the word told is what it reads.
    void EndSession(const absl::Status& why);

   private:
    grpc::ServerContext* const context_;
    ControlStream* const stream_;
    absl::Mutex mu_;
    bool abort_sent_ ABSL_GUARDED_BY(mu_) = false;
  };

  // The control stream's first message, within the idle timeout (CANCELLED
  // otherwise, and for a stream closed before it).
  grpc::Status ReadHeader(grpc::ServerContext* context, ControlStream* stream,
                          grpc::ByteBuffer* raw);
  // An attached session from the accept to the completion: markers until
  // COMMIT, then the job's load and resume. A silence of the idle timeout
  // (data arriving counts) ends it; so does any failure, which aborts the
  // job and is told to the source first.
  grpc::Status ServeAttached(grpc::ServerContext* context,
                             ControlStream* stream, SessionWriter& writer,
                             migration::DestinationJob& job);
  // One message of the control stream after the header, for `job`: a
  // marker (INITIAL_DATA_END is acknowledged once the job took it). True
  // for COMMIT; an error (a chunk here, a message that is no marker, a
  // marker the job refused) fails the session.
  absl::StatusOr<bool> TakeRequest(migration::DestinationJob& job,
                                   SessionWriter& writer,
                                   const grpc::ByteBuffer& raw,
                                   transfer::CopyCounter* copies);
  // The job a control stream's first message (its header) names; `header`
  // gets the header.
  absl::StatusOr<std::shared_ptr<migration::DestinationJob>> FindSession(
      const grpc::ByteBuffer& first, v1::SessionHeader* header);

  // Counts incoming jobs that received COMMIT; _exit()s as faults_ says.
  void FaultPoint(bool resumed, uint64_t job_number);

  migration::JobTable* const jobs_;
  const absl::Duration idle_timeout_;
  const TransferFaults faults_;
  const Compatibility* const compatibility_;
  std::atomic<uint64_t> commits_{0};
  std::atomic<uint16_t> data_port_{0};
};

}  // namespace migd::server

#endif  // MIGD_SERVER_TRANSFER_SERVICE_H_
