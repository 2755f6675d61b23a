#include "migd/transfer/grpc_status.h"

#include <string>

#include "migd/base/reason.h"

namespace migd::transfer {

grpc::Status ToGrpcStatus(const absl::Status& status,
                          grpc::ServerContext* context) {
  if (status.ok()) return grpc::Status::OK;
  context->AddTrailingMetadata(base::kReasonMetadataKey,
                               base::ReasonName(base::ReasonOf(status)));
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status,
                            const grpc::ClientContext& context) {
  if (status.ok()) return absl::OkStatus();
  absl::Status out(static_cast<absl::StatusCode>(status.error_code()),
                   status.error_message());
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(base::kReasonMetadataKey);
  if (it != trailers.end()) {
    v1::ErrorReason reason = base::ReasonFromName(
        absl::string_view(it->second.data(), it->second.size()));
    if (reason != v1::ERROR_REASON_UNSPECIFIED) {
      return base::WithReason(out, reason);
    }
  }
  return out;
}

}  // namespace migd::transfer
