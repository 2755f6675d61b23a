#include "migd/base/log.h"

#include <unistd.h>

#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace migd::base {

void LogLine(LogSeverity severity, absl::string_view message) {
  char tag = severity == LogSeverity::kInfo      ? 'I'
             : severity == LogSeverity::kWarning ? 'W'
                                                 : 'E';
  std::string line = absl::StrCat(
      std::string(1, tag),
      absl::FormatTime("%m%d %H:%M:%E6S", absl::Now(), absl::LocalTimeZone()),
      " migd] ", message, "\n");
  // One write per line so concurrent threads do not interleave mid-line.
  (void)!write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace migd::base
