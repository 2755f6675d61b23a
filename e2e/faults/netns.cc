#include "e2e/faults/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"

extern char** environ;

namespace migd::e2e {
namespace {

std::string ErrnoText(absl::string_view what, int err) {
  return absl::StrCat(what, ": ", strerror(err));
}

// argv[0] as an absolute path: itself, or the first of the usual system
// directories holding it.
std::string ToolPath(const std::string& tool) {
  if (!tool.empty() && tool[0] == '/') return tool;
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    std::string path = absl::StrCat(dir, tool);
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return tool;
}

}  // namespace

absl::Status RunCommand(const std::vector<std::string>& argv,
                        std::string* output) {
  if (argv.empty()) return absl::InvalidArgumentError("empty command");
  const std::string command = absl::StrJoin(argv, " ");
  std::vector<std::string> words = argv;
  words[0] = ToolPath(argv[0]);
  if (access(words[0].c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot run `", command, "`: ", argv[0],
        " not found (iproute2, nftables and util-linux are needed)"));
  }
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    return absl::InternalError(ErrnoText("pipe", errno));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], STDERR_FILENO);
  std::vector<char*> cargv;
  for (std::string& w : words) cargv.push_back(w.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int err =
      posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(pipe_fds[1]);
  if (err != 0) {
    close(pipe_fds[0]);
    return absl::InternalError(
        ErrnoText(absl::StrCat("spawn `", command, "`"), err));
  }
  std::string printed;
  char buffer[4096];
  for (;;) {
    ssize_t n = read(pipe_fds[0], buffer, sizeof(buffer));
    if (n > 0) {
      printed.append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(pipe_fds[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(
        "`", command, "` failed (",
        WIFEXITED(status) ? absl::StrCat("exit ", WEXITSTATUS(status))
                          : absl::StrCat("signal ", WTERMSIG(status)),
        "): ", printed));
  }
  if (output != nullptr) *output = std::move(printed);
  return absl::OkStatus();
}

absl::Status EnterPrivateNetns() {
  if (unshare(CLONE_NEWNET) != 0) {
    return absl::FailedPreconditionError(ErrnoText(
        "unshare(CLONE_NEWNET) (a network namespace of the test's own; needs "
        "root)",
        errno));
  }
  return RunCommand({"ip", "link", "set", "lo", "up"});
}

Netns::Netns(std::string name, pid_t holder)
    : name_(std::move(name)),
      holder_(holder),
      path_(absl::StrCat("/proc/", holder, "/ns/net")) {}

absl::StatusOr<std::unique_ptr<Netns>> Netns::Create(std::string name) {
  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    return absl::InternalError(ErrnoText("pipe", errno));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    close(ready[0]);
    close(ready[1]);
    return absl::InternalError(ErrnoText("fork", err));
  }
  if (pid == 0) {
    // Only system calls from here: the parent has threads.
    close(ready[0]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    if (unshare(CLONE_NEWNET) != 0) _exit(2);
    const char ok = 1;
    if (write(ready[1], &ok, 1) != 1) _exit(3);
    for (;;) pause();
  }
  close(ready[1]);
  char ok = 0;
  ssize_t n;
  while ((n = read(ready[0], &ok, 1)) < 0 && errno == EINTR) {
  }
  close(ready[0]);
  std::unique_ptr<Netns> ns(new Netns(std::move(name), pid));
  if (n != 1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "namespace ", ns->name_,
        ": the holder could not unshare(CLONE_NEWNET) (needs root)"));
  }
  if (absl::Status s = ns->Run({"ip", "link", "set", "lo", "up"}); !s.ok()) {
    return s;
  }
  return ns;
}

Netns::~Netns() {
  kill(holder_, SIGKILL);
  while (waitpid(holder_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

std::vector<std::string> Netns::EnterCommand() const {
  return {ToolPath("nsenter"), absl::StrCat("--net=", path_), "--"};
}

absl::Status Netns::Run(const std::vector<std::string>& argv,
                        std::string* output) const {
  std::vector<std::string> words = EnterCommand();
  words.push_back(ToolPath(argv.at(0)));
  words.insert(words.end(), argv.begin() + 1, argv.end());
  absl::Status s = RunCommand(words, output);
  if (s.ok()) return s;
  return absl::Status(s.code(),
                      absl::StrCat("in namespace ", name_, ": ", s.message()));
}

absl::StatusOr<std::unique_ptr<Topology>> Topology::Create() {
  std::unique_ptr<Topology> t(new Topology());
  absl::StatusOr<std::unique_ptr<Netns>> s = Netns::Create("source");
  if (!s.ok()) return s.status();
  t->source_ = *std::move(s);
  absl::StatusOr<std::unique_ptr<Netns>> d = Netns::Create("destination");
  if (!d.ok()) return d.status();
  t->destination_ = *std::move(d);
  const Netns& S = *t->source_;
  const Netns& D = *t->destination_;

  // A veth pair from `in` (nullptr: the test's namespace) to `peer_ns`,
  // addressed and up on both ends.
  auto link = [](const Netns* in, const std::string& end,
                 const std::string& address, const Netns& peer_ns,
                 const std::string& peer_end,
                 const std::string& peer_address) -> absl::Status {
    auto run = [in](const std::vector<std::string>& argv) {
      return in == nullptr ? RunCommand(argv) : in->Run(argv);
    };
    for (const std::vector<std::string>& argv :
         std::vector<std::vector<std::string>>{
             {"ip", "link", "add", end, "type", "veth", "peer", "name",
              peer_end, "netns", peer_ns.path()},
             {"ip", "addr", "add", address + "/24", "dev", end},
             {"ip", "link", "set", end, "up"}}) {
      if (absl::Status s = run(argv); !s.ok()) return s;
    }
    for (const std::vector<std::string>& argv :
         std::vector<std::vector<std::string>>{
             {"ip", "addr", "add", peer_address + "/24", "dev", peer_end},
             {"ip", "link", "set", peer_end, "up"}}) {
      if (absl::Status s = peer_ns.Run(argv); !s.ok()) return s;
    }
    return absl::OkStatus();
  };
  if (absl::Status s =
          link(nullptr, "t-s", kTestOnSourceLink, S, "s-t", kSourceControl);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          link(nullptr, "t-d", "10.77.2.1", D, "d-t", kDestinationControl);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          link(&S, "s-d", "10.77.3.1", D, "d-s", kDestinationTransfer);
      !s.ok()) {
    return s;
  }
  return t;
}

Topology::~Topology() {
  // Deleting one end of a veth pair deletes both. Errors do not matter: a
  // link that was never made is not there to delete.
  (void)RunCommand({"ip", "link", "del", "t-s"});
  (void)RunCommand({"ip", "link", "del", "t-d"});
  if (source_ != nullptr) (void)source_->Run({"ip", "link", "del", "s-d"});
}

absl::Status Topology::Rules(absl::string_view in, absl::string_view out) {
  // One file, applied atomically: the table (created if missing), emptied,
  // and the rules of the fault on D's end of the S-D link.
  const std::string ruleset = absl::StrCat(
      "add table inet migd_fault\n"
      "flush table inet migd_fault\n"
      "table inet migd_fault {\n"
      "  chain in {\n"
      "    type filter hook input priority 0; policy accept;\n",
      in.empty() ? "" : absl::StrCat("    iifname \"d-s\" ", in, "\n"),
      "  }\n"
      "  chain out {\n"
      "    type filter hook output priority 0; policy accept;\n",
      out.empty() ? "" : absl::StrCat("    oifname \"d-s\" ", out, "\n"),
      "  }\n"
      "}\n");
  char path[] = "/tmp/migd-nft.XXXXXX";
  const char* tmp = getenv("TEST_TMPDIR");
  std::string file = tmp != nullptr && *tmp != '\0'
                         ? absl::StrCat(tmp, "/migd-nft.XXXXXX")
                         : std::string(path);
  int fd = mkstemp(file.data());
  if (fd < 0) return absl::InternalError(ErrnoText("mkstemp", errno));
  const bool written = write(fd, ruleset.data(), ruleset.size()) ==
                       static_cast<ssize_t>(ruleset.size());
  close(fd);
  if (!written) return absl::InternalError(absl::StrCat("write ", file));
  absl::Status s = destination_->Run({"nft", "-f", file});
  unlink(file.c_str());
  return s;
}

absl::Status Topology::Partition() { return Rules("drop", "drop"); }

absl::Status Topology::LossTowardsDestination(int percent) {
  return Rules(
      absl::StrCat("numgen random mod 100 < ", percent, " counter drop"), "");
}

absl::StatusOr<int64_t> Topology::LossDropped() {
  std::string listing;
  if (absl::Status s = destination_->Run(
          {"nft", "list", "chain", "inet", "migd_fault", "in"}, &listing);
      !s.ok()) {
    return s;
  }
  // "... counter packets N bytes M drop"
  constexpr absl::string_view kCounter = "counter packets ";
  absl::string_view rest = listing;
  const size_t at = rest.find(kCounter);
  int64_t packets = 0;
  if (at != absl::string_view::npos) {
    rest.remove_prefix(at + kCounter.size());
    rest = rest.substr(0, rest.find(' '));
  }
  if (at == absl::string_view::npos || !absl::SimpleAtoi(rest, &packets)) {
    return absl::FailedPreconditionError(
        absl::StrCat("no loss counter in the fault rules: ", listing));
  }
  return packets;
}

absl::Status Topology::Heal() {
  return destination_->Run({"nft", "delete", "table", "inet", "migd_fault"});
}

absl::Status Topology::Shape(absl::string_view rate) {
  return source_->Run({"tc", "qdisc", "replace", "dev", "s-d", "root", "tbf",
                       "rate", std::string(rate), "burst", "64kb", "latency",
                       "500ms"});
}

}  // namespace migd::e2e
