// migd/host/modules.cc

#include "migd/host/modules.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "migd/base/unique_fd.h"
#include "migd/host/names.h"

namespace migd::host {
namespace {

// What modprobe says is kept up to this many bytes for the message.
constexpr size_t kMaxOutput = 4096;

}  // namespace

ModprobeLoader::ModprobeLoader(std::string modprobe)
    : modprobe_(std::move(modprobe)) {}

absl::Status ModprobeLoader::Load(const std::string& module) {
  absl::StatusOr<std::string> name = CanonicalModuleName(module);
  if (!name.ok()) return name.status();
  const std::string what = absl::StrCat(modprobe_, " ", *name);
  if (::access(modprobe_.c_str(), X_OK) != 0) {
    return absl::InternalError(absl::StrCat("cannot run ", what, ": ",
                                            modprobe_, ": ", strerror(errno)));
  }

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot run ", what, ": pipe2: ", strerror(errno)));
  }
  base::UniqueFd read_end(pipe_fds[0]);
  base::UniqueFd write_end(pipe_fds[1]);

  // Everything the child uses is built before fork: between fork and exec a
  // child of a threaded process may only make async-signal-safe calls.
  std::string arg0 = modprobe_, dashes = "--", arg2 = *name;
  std::array<char*, 4> argv = {arg0.data(), dashes.data(), arg2.data(),
                               nullptr};
  const int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  base::UniqueFd stdin_fd(devnull);

  const pid_t pid = ::fork();
  if (pid < 0) {
    return absl::InternalError(
        absl::StrCat("cannot run ", what, ": fork: ", strerror(errno)));
  }
  if (pid == 0) {
    if (stdin_fd.valid()) ::dup2(stdin_fd.get(), 0);
    ::dup2(write_end.get(), 1);
    ::dup2(write_end.get(), 2);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  write_end.reset();
  stdin_fd.reset();

  std::string output;
  std::array<char, 1024> buf;
  for (;;) {
    const ssize_t n = ::read(read_end.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (output.size() < kMaxOutput) {
      output.append(buf.data(), std::min(static_cast<size_t>(n),
                                         kMaxOutput - output.size()));
    }
  }
  int status = 0;
  pid_t r;
  do {
    r = ::waitpid(pid, &status, 0);
  } while (r < 0 && errno == EINTR);
  if (r < 0) {
    const int err = errno;
    return absl::InternalError(absl::StrCat(
        what, ": waitpid: ", strerror(err),
        err == ECHILD ? " (is SIGCHLD ignored in this process?)" : ""));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();

  const std::string said(absl::StripAsciiWhitespace(output));
  const std::string how =
      WIFEXITED(status) ? absl::StrCat("exit status ", WEXITSTATUS(status))
      : WIFSIGNALED(status)
          ? absl::StrCat("killed by signal ", WTERMSIG(status))
          : "ended abnormally";
  const std::string message =
      absl::StrCat(what, " failed (", how, ")", said.empty() ? "" : ": ", said);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127 && said.empty()) {
    return absl::InternalError(
        absl::StrCat(message, " (could not execute ", modprobe_, ")"));
  }
  if (absl::StrContains(said, "not found")) {
    return absl::NotFoundError(message);
  }
  return absl::FailedPreconditionError(message);
}

absl::StatusOr<std::string> DriverOfModule(const Sysfs& sysfs,
                                           absl::string_view module,
                                           absl::string_view bus) {
  const std::string dir = absl::StrCat("/sys/module/", module, "/drivers");
  if (!sysfs.Exists(absl::StrCat("/sys/module/", module))) {
    return absl::NotFoundError(
        absl::StrCat("module ", module, " is not loaded (no ",
                     sysfs.Path(absl::StrCat("/sys/module/", module)), ")"));
  }
  absl::StatusOr<std::vector<std::string>> entries = sysfs.List(dir);
  if (!entries.ok() && !absl::IsNotFound(entries.status())) {
    return entries.status();
  }
  std::vector<std::string> drivers;
  const std::string prefix = absl::StrCat(bus, ":");
  for (const std::string& e : entries.value_or(std::vector<std::string>{})) {
    absl::string_view name = e;
    if (absl::ConsumePrefix(&name, prefix) && !name.empty()) {
      drivers.emplace_back(name);
    }
  }
  if (drivers.empty()) {
    return absl::NotFoundError(
        absl::StrCat("module ", module, " registers no ", bus, " driver (no ",
                     sysfs.Path(dir), "/", prefix, "*)"));
  }
  if (drivers.size() > 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("module ", module, " registers several ", bus,
                     " drivers (", absl::StrJoin(drivers, ", "),
                     "); migd binds only through a module with one"));
  }
  return drivers[0];
}

}  // namespace migd::host
