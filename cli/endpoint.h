// cli/endpoint.h
//
// How migctl reaches an agent: its address, the identity its certificate must
// carry, and the credentials to use (mutual TLS from three files, or
// plaintext when asked for), decided before any RPC from, in this order of
// precedence:
//   1. the command line: --tls_cert, --tls_key, --tls_ca, --insecure,
//      --agent_identity (and the commands' identity flags);
//   2. the environment: MIGCTL_TLS_CERT, MIGCTL_TLS_KEY, MIGCTL_TLS_CA,
//      MIGCTL_INSECURE (1 or 0);
//   3. the config file's section of the agent named (config.h);
//   4. the config file's top level.
// The config file is --config, else $MIGCTL_CONFIG, else
// $XDG_CONFIG_HOME/migctl/config, else $HOME/.config/migctl/config; only the
// last two may be missing.
//
// TLS is the default: an agent reached without --insecure (or its
// equivalents) needs all three files, and the error says which is not set
// and where it could be.

#ifndef MIGD_CLI_ENDPOINT_H_
#define MIGD_CLI_ENDPOINT_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cli/args.h"
#include "cli/config.h"
#include "migd/security/tls_files.h"

namespace migd::cli {

// A variable of the process environment; nullopt when unset.
using EnvLookup =
    std::function<std::optional<std::string>(const std::string& name)>;

// An agent as a command reaches it.
struct Endpoint {
  std::string name;     // the config agent's name; "" for a plain address
  std::string address;  // HOST:PORT
  // The identity (URI or DNS SAN) its certificate must carry; "" when none
  // is expected (then the host of `address` must match a SAN).
  std::string identity;
  bool insecure = false;
  // What asked for plaintext: "--insecure", "MIGCTL_INSECURE=1" or
  // "insecure = true in PATH".
  std::string insecure_from;
  security::TlsFiles files;  // all three set unless `insecure`

  // "src (10.0.0.5:7070)" for a config agent, else the address.
  std::string Display() const;
};

// The config file to read when neither --config nor $MIGCTL_CONFIG names
// one: $XDG_CONFIG_HOME/migctl/config, else $HOME/.config/migctl/config;
// "" when neither variable is set.
std::string DefaultConfigPath(const EnvLookup& env);

class EndpointResolver {
 public:
  // Reads the config file (see the file comment) and the environment.
  // Errors: a config file named by --config or $MIGCTL_CONFIG that does not
  // exist, a malformed one (PATH:LINE), a MIGCTL_INSECURE that is not 1, 0,
  // true or false.
  static absl::StatusOr<EndpointResolver> Create(const Options& options,
                                                 const EnvLookup& env);

  // The agent `ref` names, as the flag `flag` ("--destination") gave it: a
  // config agent's name, or HOST:PORT used as is. `identity` (a flag's, may
  // be empty) overrides the config agent's. kInvalidArgument when `ref` is
  // neither; kFailedPrecondition when TLS is to be used and a file is not
  // set: "--tls_cert is not set (flag, MIGCTL_TLS_CERT, or tls_cert in
  // PATH); use --insecure for an agent that runs without TLS".
  absl::StatusOr<Endpoint> Resolve(absl::string_view flag,
                                   const std::string& ref,
                                   const std::string& identity) const;

  // The agent of --agent (else the config's default_agent, else
  // kDefaultAgent), expected to be --agent_identity when given.
  absl::StatusOr<Endpoint> Agent() const;

  // Whether `ref` is the name of an agent in the config.
  bool IsConfigAgent(absl::string_view ref) const {
    return config_.FindAgent(ref) != nullptr;
  }

  const Config& config() const { return config_; }

 private:
  EndpointResolver() = default;

  Options options_;
  Config config_;
  std::string env_cert_, env_key_, env_ca_;
  std::optional<bool> env_insecure_;
};

}  // namespace migd::cli

#endif  // MIGD_CLI_ENDPOINT_H_
