// migd: the per-host migration agent. Wires flags to an Agent and waits for
// SIGINT/SIGTERM; all behaviour lives in the libraries.

#include <signal.h>
#include <stdio.h>

#include <cstdlib>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpc/grpc.h"
#include "migd/base/alloc_tuning.h"
#include "migd/base/log.h"
#include "migd/base/reason.h"
#include "migd/device/emulated_spec.h"
#include "migd/metrics/server.h"
#include "migd/security/authorizer.h"
#include "migd/security/credentials.h"
#include "migd/server/agent.h"
#include "migd/server/builtin_backends.h"
#include "migd/server/device_config.h"
#include "migd/server/device_facts.h"
#include "migd/server/emulated_backend.h"
#include "migd/server/vf_tokens.h"
#include "migd/transfer/framing.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:7070",
          "Address to serve the control and transfer APIs on (host:port; "
          "port 0 picks one)");
ABSL_FLAG(std::string, port_file, "",
          "Write the port actually listened on to this file once serving");
ABSL_FLAG(std::string, metrics_listen, "",
          "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. "
          "127.0.0.1:9464; port 0 picks one). Plain HTTP without "
          "authentication, so a loopback address unless "
          "--metrics_allow_remote. Empty: no metrics endpoint");
ABSL_FLAG(bool, metrics_allow_remote, false,
          "Let --metrics_listen name a non-loopback address (the endpoint "
          "has no TLS or authentication: keep it behind a firewall)");
ABSL_FLAG(std::string, metrics_port_file, "",
          "Write the metrics port actually listened on to this file once "
          "serving");
ABSL_FLAG(bool, insecure, false,
          "Serve and dial without TLS or authentication: anyone who can reach "
          "the port can read and replace device state. Only on a trusted "
          "network; the --tls_* flags are then ignored");
ABSL_FLAG(std::string, tls_cert, "/etc/migd/tls/agent.pem",
          "PEM certificate (chain) this agent serves with and dials other "
          "agents with; its URI or DNS SAN is the agent's identity");
ABSL_FLAG(std::string, tls_key, "/etc/migd/tls/agent.key",
          "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "/etc/migd/tls/ca.pem",
          "PEM bundle of the CAs that sign clients' and other agents' "
          "certificates");
ABSL_FLAG(std::string, tls_policy, "/etc/migd/policy.conf",
          "Authorization policy: one line per identity, \"IDENTITY "
          "ROLE[,ROLE]\" with roles operator, observer, agent");
ABSL_FLAG(int64_t, tls_reload_seconds, 60,
          "How often the --tls_cert, --tls_key and --tls_ca files are read "
          "again (a rotated certificate is used for new connections)");
ABSL_FLAG(std::string, plugin_dir, "/usr/lib/migd/plugins",
          "Directory of vendor plugins (every *.so is loaded; one that does "
          "not load is logged and skipped). A missing directory loads none: "
          "every device gets the generic behaviour. Empty: load none");
ABSL_FLAG(std::string, state_dir, "/var/lib/migd",
          "Directory of the job journal (journal.sqlite3): every job is "
          "recorded there before each step recovery depends on, and read back "
          "at start to put unfinished jobs' devices back. One agent per "
          "directory");
ABSL_FLAG(std::string, sysfs_root, "",
          "Root under which the host service (HostService, `migctl host`) "
          "reads and writes sysfs, /lib/modules and /dev/vfio. Empty: the "
          "real / (the default, and the only setting for a host). Only tests "
          "set it, to a fake tree: writes there reach no kernel, so binds "
          "cannot succeed");
ABSL_FLAG(int64_t, journal_max_finished_jobs, 1000,
          "Finished jobs the journal keeps (oldest go first)");
ABSL_FLAG(std::string, journal_max_finished_age, "168h",
          "How long the journal keeps a finished job");
ABSL_FLAG(std::string, transfer_token_ttl, "10m",
          "How long a prepared job's transfer token is accepted; a job whose "
          "source has not attached by then ends and resets its devices");
ABSL_FLAG(std::string, name, "", "This agent's identity, for logs");
ABSL_FLAG(std::string, emulated_devices, "",
          "Comma-separated names of emulated devices to create");
ABSL_FLAG(std::string, emulated_state_size, "64MiB",
          "State size of each --emulated_devices device");
ABSL_FLAG(uint64_t, emulated_seed, 1,
          "Content seed for --emulated_devices (mixed with each name)");
ABSL_FLAG(std::string, devices_config, "",
          "File with one device per line: emulated NAME [size=] [seed=] "
          "[flags=] [fail_arc=FROM>TO] [corrupt_stream_at=N] | vfio NAME "
          "bdf=0000:00:04.0 [vf_token=UUID] | vfio NAME mdev=UUID | vfio NAME "
          "cdev=/dev/vfio/devices/vfioN [vf_token=UUID] | vfio NAME "
          "fd_socket=/path (a VMM hands the device fd over)");
ABSL_FLAG(int64_t, phase_timeout_seconds, 60,
          "Default time a migration phase may go without progress");
ABSL_FLAG(std::string, transfer_memory_cap, "64MiB",
          "Memory a destination job may hold for device state in flight: "
          "two chunks per data stream, so a session whose streams and chunk "
          "size could hold more is refused (a source job holds two chunks "
          "whatever its streams)");
ABSL_FLAG(uint32_t, max_data_streams, 64,
          "Data streams (data channel connections) served at once, each on "
          "a thread of its own; more are refused (RESOURCE_EXHAUSTED)");
ABSL_FLAG(uint32_t, max_concurrent_migrations, 2,
          "Source migrations that move device state at once; the others "
          "wait in line (PHASE_CONNECTING, Migration.queue) and start in "
          "the order they were asked for, as slots come free. 0: no limit");
ABSL_FLAG(std::string, data_listen, "",
          "Address of the data channel, which carries device state between "
          "agents (host:port; TLS as --tls_*). Empty: the host of --listen "
          "and a port the kernel picks; sources learn it in the session "
          "handshake");
ABSL_FLAG(std::string, test_fault, "",
          "Fault injection for tests: corrupt_chunk:N flips a payload byte "
          "of the Nth chunk after its CRC32C was computed; drop_stream:N "
          "cancels the last data stream after N chunks; journal_max_pages:N "
          "lets the journal file grow to N pages at most (SQLite's "
          "max_page_count, never below its current size), past which a "
          "record fails as on a full disk; journal_fail_after:N makes the "
          "journal's Nth record (counted from the agent's start, recovery's "
          "included) and every later one fail as on a full disk; "
          "exit_on_commit:N makes the agent "
          "_exit() when its Nth incoming job receives COMMIT, before it "
          "loads; exit_after_resume:N when its Nth incoming job resumed its "
          "devices, before the Completion goes out");

namespace {

using migd::base::LogError;

int Fail(const absl::Status& s) {
  LogError(migd::base::StatusText(s));
  return 1;
}

absl::Status WritePortFile(const std::string& path, int port) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    f << port << "\n";
    if (!f) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  // Rename, so a reader never sees a half-written file.
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

// The devices the flags name: --emulated_devices, then --devices_config's
// lines (each line's first word chooses its backend, the kind the backend is
// registered under).
absl::StatusOr<std::vector<std::unique_ptr<migd::server::DeviceSpec>>>
DeviceSpecsFromFlags(const migd::server::DeviceBackends& backends) {
  std::vector<std::unique_ptr<migd::server::DeviceSpec>> specs;
  if (!absl::GetFlag(FLAGS_emulated_devices).empty()) {
    auto size =
        migd::device::ParseSize(absl::GetFlag(FLAGS_emulated_state_size));
    if (!size.ok()) {
      return migd::base::Annotate(size.status(), "--emulated_state_size");
    }
    auto list = migd::server::EmulatedFromList(
        absl::GetFlag(FLAGS_emulated_devices), *size,
        absl::GetFlag(FLAGS_emulated_seed));
    if (!list.ok()) return list.status();
    specs = *std::move(list);
  }
  if (std::string path = absl::GetFlag(FLAGS_devices_config); !path.empty()) {
    std::ifstream f(path);
    if (!f) {
      return absl::NotFoundError(
          absl::StrCat("cannot read --devices_config ", path));
    }
    std::stringstream text;
    text << f.rdbuf();
    auto more = migd::server::ParseDevicesConfig(text.str(), backends);
    if (!more.ok()) return migd::base::Annotate(more.status(), path);
    for (auto& spec : *more) specs.push_back(std::move(spec));
  }
  return specs;
}

// --test_fault, for the tests' fault injection.
absl::Status TestFaultFromFlag(migd::server::AgentOptions* options) {
  std::string fault = absl::GetFlag(FLAGS_test_fault);
  if (fault.empty()) return absl::OkStatus();
  uint64_t n = 0;
  size_t colon = fault.find(':');
  std::string kind = fault.substr(0, colon);
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(fault.substr(colon + 1), &n) ||
      (kind != "corrupt_chunk" && kind != "drop_stream" &&
       kind != "journal_max_pages" && kind != "journal_fail_after" &&
       kind != "exit_on_commit" && kind != "exit_after_resume") ||
      ((kind == "journal_max_pages" || kind == "journal_fail_after") &&
       (n == 0 || n > uint64_t{std::numeric_limits<int64_t>::max()})) ||
      ((kind == "exit_on_commit" || kind == "exit_after_resume") && n == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--test_fault \"", fault,
        "\": expected corrupt_chunk:N, drop_stream:N, "
        "journal_max_pages:N, journal_fail_after:N, exit_on_commit:N or "
        "exit_after_resume:N "
        "(N > 0)"));
  }
  if (kind == "journal_max_pages") {
    options->journal.max_page_count = static_cast<int64_t>(n);
  } else if (kind == "journal_fail_after") {
    options->journal.fail_after_records = static_cast<int64_t>(n);
  } else if (kind == "exit_on_commit") {
    options->transfer_faults.exit_on_commit = n;
  } else if (kind == "exit_after_resume") {
    options->transfer_faults.exit_after_resume = n;
  } else {
    (kind == "corrupt_chunk" ? options->service.corrupt_chunk_sequence
                             : options->service.drop_stream_after) = n;
  }
  return absl::OkStatus();
}

// Everything else the flags say of the agent: its addresses, credentials,
// journal, limits and test faults. Errors name the flag.
absl::Status OptionsFromFlags(migd::server::AgentOptions* options) {
  options->plugin_dir = absl::GetFlag(FLAGS_plugin_dir);
  options->listen = absl::GetFlag(FLAGS_listen);
  options->metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  if (!options->metrics_listen.empty()) {
    if (absl::Status s = migd::metrics::ValidateMetricsListen(
            options->metrics_listen, absl::GetFlag(FLAGS_metrics_allow_remote));
        !s.ok()) {
      return s;
    }
  }
  if (absl::GetFlag(FLAGS_insecure)) {
    options->credentials = migd::security::Credentials::Insecure();
  } else {
    auto credentials = migd::security::Credentials::Tls(
        {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
         absl::GetFlag(FLAGS_tls_ca)},
        absl::Seconds(absl::GetFlag(FLAGS_tls_reload_seconds)));
    if (!credentials.ok()) {
      return migd::base::Annotate(
          credentials.status(),
          "TLS (pass --insecure to run without it, on a trusted network "
          "only)");
    }
    options->credentials = *std::move(credentials);
    auto authorizer = migd::security::Authorizer::Load(
        absl::GetFlag(FLAGS_tls_ca), absl::GetFlag(FLAGS_tls_policy));
    if (!authorizer.ok()) return authorizer.status();
    options->authorizer = *std::move(authorizer);
  }
  options->sysfs_root = absl::GetFlag(FLAGS_sysfs_root);
  options->state_dir = absl::GetFlag(FLAGS_state_dir);
  if (options->state_dir.empty()) {
    return absl::InvalidArgumentError(
        "--state_dir is empty: the agent keeps its job journal there");
  }
  if (absl::GetFlag(FLAGS_journal_max_finished_jobs) < 0) {
    return absl::InvalidArgumentError(
        "--journal_max_finished_jobs must not be negative");
  }
  options->journal.max_finished_jobs =
      static_cast<size_t>(absl::GetFlag(FLAGS_journal_max_finished_jobs));
  {
    std::string text = absl::GetFlag(FLAGS_journal_max_finished_age);
    if (!absl::ParseDuration(text, &options->journal.max_finished_age) ||
        options->journal.max_finished_age <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--journal_max_finished_age \"", text,
                       "\" is not a positive duration (e.g. 168h)"));
    }
  }
  {
    absl::Duration ttl;
    std::string text = absl::GetFlag(FLAGS_transfer_token_ttl);
    if (!absl::ParseDuration(text, &ttl) || ttl <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--transfer_token_ttl \"", text,
                       "\" is not a positive duration (e.g. 10m, 90s)"));
    }
    options->service.token_ttl = ttl;
  }
  options->service.default_phase_timeout =
      absl::Seconds(absl::GetFlag(FLAGS_phase_timeout_seconds));
  options->transfer_idle_timeout = options->service.default_phase_timeout;
  auto cap = migd::device::ParseSize(absl::GetFlag(FLAGS_transfer_memory_cap));
  if (!cap.ok()) {
    return migd::base::Annotate(cap.status(), "--transfer_memory_cap");
  }
  if (*cap < 2 * uint64_t{migd::transfer::kMaxChunkBytes}) {
    return absl::InvalidArgumentError(
        absl::StrCat("--transfer_memory_cap ", *cap, " is below ",
                     2 * uint64_t{migd::transfer::kMaxChunkBytes},
                     " (two of the largest chunks must fit)"));
  }
  options->service.transfer_memory_cap = *cap;
  options->max_data_streams = absl::GetFlag(FLAGS_max_data_streams);
  options->service.max_concurrent_migrations =
      absl::GetFlag(FLAGS_max_concurrent_migrations);
  options->data_listen = absl::GetFlag(FLAGS_data_listen);
  if (options->max_data_streams < 1) {
    return absl::InvalidArgumentError("--max_data_streams must be at least 1");
  }
  return TestFaultFromFlag(options);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "migd: live-migration agent for VFIO devices.\n"
      "  migd --listen=10.0.0.5:7070 --tls_cert=agent.pem --tls_key=agent.key "
      "--tls_ca=ca.pem --tls_policy=policy.conf --devices_config=devices.conf\n"
      "  migd --insecure --listen=127.0.0.1:7070 --emulated_devices=emu0,emu1\n"
      "Flags may also come from a file: --flagfile=/etc/migd/migd.conf");
  absl::ParseCommandLine(argc, argv);
  // One reference to the gRPC library for the life of the process, never
  // given back: otherwise the last gRPC object destroyed after Shutdown runs
  // grpc_shutdown, which joins gRPC's executor threads, and one may be
  // polling a connection a network partition holds open for up to ~10 s;
  // the agent has finished its jobs and stopped serving by then, and its
  // exit (a systemd stop, a test's SIGTERM) must not wait on that.
  grpc_init();

  migd::base::TuneAllocatorForBulkTransfer();
#ifdef NDEBUG
  // Abseil's lock-order graph costs a lookup on every Mutex::Lock of the
  // data path; tests (debug builds) keep it.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto backends = migd::server::BuiltinDeviceBackends();
  if (!backends.ok()) return Fail(backends.status());
  auto specs = DeviceSpecsFromFlags(*backends);
  if (!specs.ok()) return Fail(specs.status());
  // The VF tokens this agent owns: set again on their PFs before the VFs
  // open (a VF line without vf_token= presents its PF's stored token).
  std::unique_ptr<migd::server::VfTokens> vf_tokens;
  migd::server::BuildOptions build;
  if (std::string dir = absl::GetFlag(FLAGS_state_dir); !dir.empty()) {
    vf_tokens = std::make_unique<migd::server::VfTokens>(dir);
    for (const absl::Status& s : vf_tokens->Restore()) {
      migd::base::LogWarning(s.message());
    }
    migd::server::VfTokens* tokens = vf_tokens.get();
    build.vf_token_for = [tokens](const std::string& pf) {
      return tokens->TokenFor(pf);
    };
  }
  auto devices = migd::server::BuildDevices(*specs, *backends, build);
  if (!devices.ok()) return Fail(devices.status());

  migd::server::AgentOptions options;
  options.device_facts = migd::server::FactsOf(*specs, **devices);
  options.vf_tokens = vf_tokens.get();
  if (absl::Status s = OptionsFromFlags(&options); !s.ok()) return Fail(s);

  auto agent = migd::server::Agent::Start(options, *std::move(devices));
  if (!agent.ok()) return Fail(agent.status());
  migd::base::LogInfo("agent ", absl::GetFlag(FLAGS_name), " serving on port ",
                      (*agent)->port(), " with ", specs->size(), " device(s)");
  if (std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    if (absl::Status s = WritePortFile(path, (*agent)->port()); !s.ok()) {
      return Fail(s);
    }
  }
  if (std::string path = absl::GetFlag(FLAGS_metrics_port_file);
      !path.empty() && (*agent)->metrics_port() != 0) {
    if (absl::Status s = WritePortFile(path, (*agent)->metrics_port());
        !s.ok()) {
      return Fail(s);
    }
  }

  int sig = 0;
  sigwait(&stop, &sig);
  migd::base::LogInfo("signal ", sig, " received");
  (*agent)->Shutdown();
  return 0;
}
