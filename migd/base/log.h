// migd/base/log.h
//
// Minimal line logging to stderr: "I1121 15:42:07.123456 migd] message".
// Debian 12's Abseil predates absl/log; this keeps call sites short and the
// format greppable. Never pass secrets (transfer tokens, VF tokens, keys).

#ifndef MIGD_BASE_LOG_H_
#define MIGD_BASE_LOG_H_

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace migd::base {

enum class LogSeverity { kInfo, kWarning, kError };

// Writes one line (thread-safe: a single write(2) per line).
void LogLine(LogSeverity severity, absl::string_view message);

template <typename... Args>
void LogInfo(const Args&... args) {
  LogLine(LogSeverity::kInfo, absl::StrCat(args...));
}
template <typename... Args>
void LogWarning(const Args&... args) {
  LogLine(LogSeverity::kWarning, absl::StrCat(args...));
}
template <typename... Args>
void LogError(const Args&... args) {
  LogLine(LogSeverity::kError, absl::StrCat(args...));
}

}  // namespace migd::base

#endif  // MIGD_BASE_LOG_H_
