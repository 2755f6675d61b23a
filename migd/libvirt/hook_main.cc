// migd-libvirt-hook: libvirt's qemu hook for migd, installed as
// /etc/libvirt/hooks/qemu.d/migd. libvirt runs it as
//   migd-libvirt-hook DOMAIN OPERATION SUB-OP EXTRA   (definition on stdin)
// and reads its stdout on `migrate begin` (hook.h says what each operation
// does). How it reaches the local agent comes from a flag file,
// /etc/migd/libvirt-hook.conf ($MIGD_HOOK_CONFIG overrides the path), one
// --flag=value per line:
//   --agent=127.0.0.1:7070  --agent_identity=spiffe://.../agent/host5
//   --tls_cert=/etc/migd/tls/hook.pem --tls_key=... --tls_ca=...
// (a certificate whose identity the agent's policy gives the operator
// role), or --insecure for an agent that runs without TLS. Every action is
// logged to syslog (and to --log_file when set) with the domain's name.
// main only wires.

#include <syslog.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "migd/libvirt/agent_client.h"
#include "migd/libvirt/hook.h"
#include "migd/security/credentials.h"

ABSL_FLAG(std::string, agent, "127.0.0.1:7070", "The local agent (HOST:PORT)");
ABSL_FLAG(std::string, agent_identity, "",
          "The identity the agent's certificate must carry (empty: its "
          "address's host must match a name in it)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate the hook presents");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM bundle of the CAs the agent's "
          "certificate chains to");
ABSL_FLAG(bool, insecure, false,
          "Plaintext, for an agent that runs --insecure");
ABSL_FLAG(int, timeout_seconds, 60,
          "Deadline of each call to the agent (a bind may load a module)");
ABSL_FLAG(std::string, log_file, "", "Also append every log line to this file");

int main(int argc, char** argv) {
  std::vector<char*> args(argv, argv + argc);
  const char* env = std::getenv("MIGD_HOOK_CONFIG");
  std::string config = absl::StrCat(
      "--flagfile=", env != nullptr ? env : "/etc/migd/libvirt-hook.conf");
  if (access(config.c_str() + 11, R_OK) == 0) {
    args.insert(args.begin() + 1, config.data());
  }
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  openlog("migd-libvirt-hook", LOG_PID, LOG_DAEMON);
  const std::string log_file = absl::GetFlag(FLAGS_log_file);
  auto log = [&log_file](const std::string& line) {
    syslog(LOG_INFO, "%s", line.c_str());
    if (!log_file.empty())
      std::ofstream(log_file, std::ios::app) << line << "\n";
  };
  if (positional.size() < 4) {
    std::cerr << "usage: migd-libvirt-hook DOMAIN OPERATION SUB-OP EXTRA "
                 "(as libvirt runs /etc/libvirt/hooks/qemu.d/*), the domain's "
                 "definition on stdin\n";
    return 2;
  }
  migd::libvirt::HookCall call;
  call.domain = positional[1];
  call.operation = positional[2];
  call.sub_operation = positional[3];
  call.extra = positional.size() > 4 ? positional[4] : "-";
  call.definition.assign(std::istreambuf_iterator<char>(std::cin),
                         std::istreambuf_iterator<char>());

  std::shared_ptr<migd::security::Credentials> credentials;
  if (absl::GetFlag(FLAGS_insecure)) {
    credentials = migd::security::Credentials::Insecure();
  } else {
    auto tls = migd::security::Credentials::Tls(
        {absl::GetFlag(FLAGS_tls_cert), absl::GetFlag(FLAGS_tls_key),
         absl::GetFlag(FLAGS_tls_ca)},
        absl::Hours(1));  // a hook lives for seconds
    if (!tls.ok()) {
      const std::string line = absl::StrCat(
          "domain ", call.domain, ": ", call.operation, " ", call.sub_operation,
          ": TLS to the agent: ", tls.status().message(), " (see ",
          config.substr(11), ")");
      log(line);
      std::cerr << "migd: " << line << "\n";
      return 1;
    }
    credentials = *std::move(tls);
  }
  const std::string agent = absl::GetFlag(FLAGS_agent);
  migd::libvirt::GrpcAgent client(
      credentials->Dial(agent, absl::GetFlag(FLAGS_agent_identity),
                        migd::security::ChannelUse::kControl),
      agent, absl::Seconds(absl::GetFlag(FLAGS_timeout_seconds)));
  migd::libvirt::HookResult result = migd::libvirt::RunHook(call, client, log);
  std::cout << result.output;
  std::cerr << result.error;
  return result.exit_code;
}
