// migd/transfer/grpc_status.h
//
// Conversions between absl::Status (with its migd.v1.ErrorReason payload) and
// grpc::Status (with the reason in the "migd-error-reason" trailer), so a cause
// keeps its code, message and reason across every process boundary.

#ifndef MIGD_TRANSFER_GRPC_STATUS_H_
#define MIGD_TRANSFER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/client_context.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace migd::transfer {

// Server side: returns the grpc::Status for `status` and adds its reason to
// the call's trailing metadata.
grpc::Status ToGrpcStatus(const absl::Status& status,
                          grpc::ServerContext* context);

// Client side, after the call finished: the absl::Status for `status`, with
// the reason read from the server's trailing metadata.
absl::Status FromGrpcStatus(const grpc::Status& status,
                            const grpc::ClientContext& context);

}  // namespace migd::transfer

#endif  // MIGD_TRANSFER_GRPC_STATUS_H_
