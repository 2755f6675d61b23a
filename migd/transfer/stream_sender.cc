#include "migd/transfer/stream_sender.h"

#include "absl/strings/str_cat.h"
#include "migd/base/reason.h"
#include "migd/base/watchdog.h"
#include "migd/transfer/data_frame.h"

namespace migd::transfer {
namespace {

// A read of the destination's answer that failed: kOutOfRange (the
// connection closed) is the peer gone, "closed <when>"; anything else as is.
absl::Status AnswerReadFailed(const DataConnection& conn, const absl::Status& s,
                              absl::string_view when) {
  if (s.code() != absl::StatusCode::kOutOfRange) return s;
  return base::Error(
      absl::StatusCode::kUnavailable, v1::ERROR_REASON_PEER_UNAVAILABLE,
      absl::StrCat("data channel ", conn.peer(), ": closed ", when));
}

}  // namespace

absl::StatusOr<std::unique_ptr<StreamSender>> StreamSender::Open(
    std::unique_ptr<DataConnection> conn, const v1::SessionHeader& header,
    absl::Duration timeout) {
  bool expired = false;
  absl::Status s;
  v1::TransferResponse answer;
  {
    DataConnection* raw = conn.get();
    base::Watchdog watch(timeout, [&expired, raw] {
      expired = true;
      raw->Shutdown();
    });
    s = WriteMessage(*conn, header);
    if (s.ok()) s = ReadMessage(*conn, &answer);
  }
  if (expired) {
    return base::Error(absl::StatusCode::kDeadlineExceeded,
                       v1::ERROR_REASON_TIMEOUT,
                       absl::StrCat("data channel ", conn->peer(),
                                    ": the destination did not accept the "
                                    "stream within ",
                                    absl::FormatDuration(timeout)));
  }
  if (!s.ok()) return AnswerReadFailed(*conn, s, "before it answered");
  if (answer.has_aborted()) {
    absl::Status refused = StatusFromMessage(answer.aborted());
    if (refused.ok()) refused = absl::UnknownError("refused without a cause");
    return base::Annotate(refused, "the destination refused the stream");
  }
  if (!answer.has_accepted()) {
    return base::Error(absl::StatusCode::kInternal,
                       v1::ERROR_REASON_PROTOCOL_ERROR,
                       "the destination answered a data stream's header with "
                       "something other than SessionAccepted");
  }
  return std::make_unique<StreamSender>(std::move(conn));
}

StreamSender::StreamSender(std::unique_ptr<DataConnection> conn)
    : conn_(std::move(conn)) {}

StreamSender::~StreamSender() { conn_->Shutdown(); }

absl::Status StreamSender::Send(ChunkHeader header, PooledBuffer payload) {
  if (!error_.ok()) return error_;
  if (finished_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "data stream to ", conn_->peer(), " is closed: no more chunks"));
  }
  header.sequence = sequence_++;
  bytes_ += payload.size();
  const FrameBytes frame =
      EncodeChunkFrame(header, static_cast<uint32_t>(payload.size()));
  const iovec parts[2] = {
      {const_cast<uint8_t*>(frame.data()), frame.size()},
      {payload.data(), payload.size()},
  };
  error_ = conn_->WriteAll(parts);
  // `payload` goes back to its pool as this returns: the kernel (or TLS)
  // has its bytes, so the job's next read may reuse the buffer.
  return error_;
}

absl::Status StreamSender::Close() {
  finished_ = true;
  if (!error_.ok()) return error_;
  // Every chunk is written: the counts are final. Without this frame the
  // destination takes the stream's end for a drop.
  const FrameBytes end = EncodeStreamEndFrame(sequence_, bytes_);
  const iovec part = {const_cast<uint8_t*>(end.data()), end.size()};
  if (absl::Status s = conn_->WriteAll(absl::MakeConstSpan(&part, 1));
      !s.ok()) {
    error_ = s;
    return s;
  }
  // No bound here: the job's watchdog shuts a silent stream down.
  return ReadVerdict(absl::InfiniteDuration());
}

void StreamSender::Cancel() { conn_->Shutdown(); }

absl::Status StreamSender::ReadVerdict(absl::Duration timeout) {
  std::unique_ptr<base::Watchdog> watch;
  bool expired = false;
  if (timeout != absl::InfiniteDuration()) {
    watch = std::make_unique<base::Watchdog>(timeout, [&] {
      expired = true;
      conn_->Shutdown();
    });
  }
  v1::SessionAborted verdict;
  absl::Status s = ReadMessage(*conn_, &verdict);
  watch.reset();
  if (expired) return absl::OkStatus();  // no word: nothing of its own
  if (!s.ok()) return AnswerReadFailed(*conn_, s, "without a verdict");
  return StatusFromMessage(verdict);
}

absl::Status StreamSender::Outcome(absl::Duration timeout) {
  // The caller's thread is the one that sends, so no write is under way.
  finished_ = true;
  if (!error_.ok()) return error_;
  return ReadVerdict(timeout);
}

}  // namespace migd::transfer
