// migd/host/state_file.h
//
// The two things every small state file of migd/host (host-bindings,
// host-allocations) does with the disk: read the whole file, and replace it
// atomically and durably (a temporary file written, fsync'ed, renamed over
// the file, and the directory fsync'ed), owner-only (0600). A reader after a
// crash sees the old content or the new, never a mix.

#ifndef MIGD_HOST_STATE_FILE_H_
#define MIGD_HOST_STATE_FILE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::host {

// `name` inside `dir`.
std::string StatePath(const std::string& dir, absl::string_view name);

// The content of `path`; nullopt when it does not exist and `dir` (its
// directory) does. kFailedPrecondition when `dir` is not a directory, or
// `path` is a symlink or not a regular file; the errno status otherwise.
// `what` ("host bindings") starts every message.
absl::StatusOr<std::optional<std::string>> ReadStateFile(
    absl::string_view what, const std::string& dir, const std::string& path);

// Replaces `path` (in `dir`) with `text`: `path`.tmp (mode 0600) written and
// fsync'ed, renamed over `path`, then `dir` fsync'ed. The errno status
// naming the file and the step on failure; the file then holds the old
// content (or, when only the directory's fsync failed, perhaps the new).
absl::Status WriteStateFile(absl::string_view what, const std::string& dir,
                            const std::string& path, absl::string_view text);

}  // namespace migd::host

#endif  // MIGD_HOST_STATE_FILE_H_
