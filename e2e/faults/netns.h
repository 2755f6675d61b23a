// e2e/faults/netns.h
//
// Network namespaces for fault tests, made and undone by the test itself:
// nothing named, nothing outside the test's own processes. The test process
// first moves itself into a private namespace (EnterPrivateNetns, from main()
// before any thread starts), so every veth end and rule it makes lives and
// dies with it. A Netns is a further namespace held by a child process that
// does nothing but hold it (PR_SET_PDEATHSIG: it dies with the test); agents
// run in it through nsenter (EnterCommand()) and outlive nothing.
//
// A Topology is the fault matrix's network: the test's namespace T, the
// source agent's S and the destination agent's D, joined by three veth
// pairs: T-S and T-D carry the control plane (the test's calls), S-D carries
// the transfer. Faults act on the S-D link only, from inside D (nft rules on
// D's end) or S (a tbf qdisc on S's end), with the link up.
//
// clang-format off
//   T 10.77.1.1 "t-s" <-> "s-t" 10.77.1.2 S 10.77.3.1 "s-d" <-> "d-s" 10.77.3.2 D
//   T 10.77.2.1 "t-d" <---------------------------------------> "d-t" 10.77.2.2 D
// clang-format on
//
// Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), iproute2 (ip, tc), nftables
// (nft) and util-linux (nsenter); errors say which command failed and what
// it printed.

#ifndef MIGD_E2E_FAULTS_NETNS_H_
#define MIGD_E2E_FAULTS_NETNS_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::e2e {

// Moves the calling process into a new network namespace with its loopback
// up. Must be called while the process has one thread (first thing in
// main()): unshare(CLONE_NEWNET) moves only the calling thread.
absl::Status EnterPrivateNetns();

// Runs `argv` (argv[0] a tool name looked up in /usr/sbin, /sbin, /usr/bin,
// /bin, or an absolute path) and waits for it. kInternal with the command
// and its output when it fails; its output in `*output` (stdout and stderr)
// when it succeeds and `output` is not null.
absl::Status RunCommand(const std::vector<std::string>& argv,
                        std::string* output = nullptr);

// A network namespace held by a child process.
class Netns {
 public:
  // A new namespace with its loopback up. `name` is for messages.
  static absl::StatusOr<std::unique_ptr<Netns>> Create(std::string name);
  // Kills the holder; the namespace goes when nothing else is in it.
  ~Netns();

  Netns(const Netns&) = delete;
  Netns& operator=(const Netns&) = delete;

  const std::string& name() const { return name_; }
  // "/proc/PID/ns/net".
  const std::string& path() const { return path_; }
  // The words that run a command in this namespace:
  // {"/usr/bin/nsenter", "--net=<path>", "--"} (nsenter execs the command).
  std::vector<std::string> EnterCommand() const;
  // RunCommand inside this namespace.
  absl::Status Run(const std::vector<std::string>& argv,
                   std::string* output = nullptr) const;

 private:
  Netns(std::string name, pid_t holder);

  std::string name_;
  pid_t holder_;
  std::string path_;
};

class Topology {
 public:
  // Addresses (see the file comment).
  static constexpr char kSourceControl[] = "10.77.1.2";
  static constexpr char kDestinationControl[] = "10.77.2.2";
  static constexpr char kDestinationTransfer[] = "10.77.3.2";
  // The test's own address on the T-S link: where a proxy in the test's
  // namespace listens for the source.
  static constexpr char kTestOnSourceLink[] = "10.77.1.1";

  static absl::StatusOr<std::unique_ptr<Topology>> Create();
  // Deletes the links (the kernel frees a namespace's devices lazily, after
  // its last process is gone; the next topology reuses the names).
  ~Topology();

  const Netns& source() const { return *source_; }
  const Netns& destination() const { return *destination_; }

  // Drops every packet of the S-D link, both ways, with the link up (a
  // partition: nothing is refused, nothing arrives).
  absl::Status Partition();
  // Drops `percent` of the packets the S-D link carries from S to D, at
  // random; nothing the other way.
  absl::Status LossTowardsDestination(int percent);
  // How many packets LossTowardsDestination() has dropped so far: proof
  // that the loss met the transfer. Fails when no loss is in place.
  absl::StatusOr<int64_t> LossDropped();
  // Removes Partition() or LossTowardsDestination().
  absl::Status Heal();
  // Limits S -> D to `rate` (tc's syntax, e.g. "16mbit") with a tbf qdisc
  // on S's end: slow transfers without loss.
  absl::Status Shape(absl::string_view rate);

 private:
  Topology() = default;
  // nft rules on D's end of the S-D link: `in` for what arrives, `out` for
  // what leaves ("" for none).
  absl::Status Rules(absl::string_view in, absl::string_view out);

  std::unique_ptr<Netns> source_;
  std::unique_ptr<Netns> destination_;
};

}  // namespace migd::e2e

#endif  // MIGD_E2E_FAULTS_NETNS_H_
