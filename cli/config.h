// cli/config.h
//
// migctl's config file, in the spirit of a kubeconfig: the credentials an
// operator uses, and the agents they talk to by name, so that a command line
// says `--agent=src` instead of an address, a certificate, a key, a CA bundle
// and the identity the agent must prove. Plain text:
//
//   # credentials used for every agent unless the agent says otherwise
//   tls_cert = /etc/migd/tls/operator.pem
//   tls_key  = /etc/migd/tls/operator.key
//   tls_ca   = ca.pem               # relative: beside this file
//   default_agent = src
//   [agent src]
//   address  = 10.0.0.5:7070
//   identity = spiffe://example.org/agent/host5
//   [agent lab]
//   address  = 192.168.1.9:7070
//   insecure = true
//
// One `key = value` a line; `#` starts a comment at the start of a line or
// after a space. The top level takes tls_cert, tls_key, tls_ca, insecure and
// default_agent; an `[agent NAME]` section takes address (required),
// identity, and its own tls_cert, tls_key, tls_ca and insecure, which
// override the top level's for that agent. insecure is true or false.
// Relative paths are relative to the config file's directory. Which of the
// config, the environment and the flags wins is endpoint.h's business.

#ifndef MIGD_CLI_CONFIG_H_
#define MIGD_CLI_CONFIG_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace migd::cli {

// One `[agent NAME]` section.
struct AgentSection {
  std::string name;
  int line = 0;  // of the section's header, for messages
  std::string address;
  std::string identity;  // "" when the section names none
  // Overrides of the top level's settings; "" / nullopt when not set here.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  std::optional<bool> insecure;
};

struct Config {
  std::string path;     // the config file; "" when there is none to read
  bool exists = false;  // whether `path` was there to be read
  // Top level; paths absolute or as relative as `path` itself.
  std::string tls_cert;
  std::string tls_key;
  std::string tls_ca;
  std::optional<bool> insecure;
  std::string default_agent;  // a section's name or HOST:PORT; "" when unset
  std::map<std::string, AgentSection, std::less<>> agents;

  // The section `[agent name]`, or null.
  const AgentSection* FindAgent(absl::string_view name) const;
};

// Parses the text of the config file at `path` (which errors name, and whose
// directory relative paths are taken from). kInvalidArgument
// "PATH:LINE: what is wrong" for a line that is not `key = value` or a
// section header, an unknown key or section, a key given twice in one
// section, an empty value, an insecure that is not true or false, an agent
// named twice; "PATH:LINE: [agent NAME] has no address" for a section
// without one (LINE of its header).
absl::StatusOr<Config> ParseConfig(absl::string_view text,
                                   const std::string& path);

// Reads and parses the file at `path`. A file that does not exist is an
// empty Config (with `path` set) unless `required`, then kNotFound naming
// it; a file that cannot be read is an error naming it either way.
absl::StatusOr<Config> LoadConfig(const std::string& path, bool required);

}  // namespace migd::cli

#endif  // MIGD_CLI_CONFIG_H_
