// migd/server/transfer_service.h
//
// migd.v1.TransferService: the destination end of a transfer session. Finds
// the prepared job the session header names, lets the job check the token and
// devices, then feeds it chunks and markers in order and answers with the
// completion. A session that breaks, stalls or is cancelled aborts the job
// (its devices are reset).
//
// The method is served raw: requests arrive as gRPC's own buffers and a
// chunk's payload is written to the device from them without being gathered
// or parsed into a message (chunk_codec.h). Responses are ordinary messages.

#ifndef MIGD_SERVER_TRANSFER_SERVICE_H_
#define MIGD_SERVER_TRANSFER_SERVICE_H_

#include "absl/time/time.h"
#include "grpcpp/impl/service_type.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/sync_stream.h"
#include "migd/migration/job_table.h"
#include "proto/migd/v1/transfer.pb.h"

namespace migd::server {

class TransferServiceImpl final : public grpc::Service {
 public:
  // A session silent for `idle_timeout` is aborted.
  TransferServiceImpl(migration::JobTable* jobs, absl::Duration idle_timeout);

  grpc::Status Transfer(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::TransferResponse, grpc::ByteBuffer>* stream);

 private:
  // A data stream (stream_index >= 1) of an attached session: chunks only.
  grpc::Status DataStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::TransferResponse, grpc::ByteBuffer>* stream,
      migration::DestinationJob* job, const v1::SessionHeader& header);

  migration::JobTable* const jobs_;
  const absl::Duration idle_timeout_;
};

}  // namespace migd::server

#endif  // MIGD_SERVER_TRANSFER_SERVICE_H_
