#include "cli/endpoint.h"

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "cli/args.h"
#include "cli/config.h"

namespace migd::cli {
namespace {

// The variable's value; "" when unset or empty.
std::string Get(const EnvLookup& env, const std::string& name) {
  if (!env) return "";
  std::optional<std::string> value = env(name);
  return value.value_or("");
}

// "a", "a and b", "a, b and c".
std::string JoinAnd(const std::vector<std::string>& items) {
  if (items.size() <= 1) return absl::StrJoin(items, "");
  return absl::StrCat(absl::StrJoin(items.begin(), items.end() - 1, ", "),
                      " and ", items.back());
}

// The first non-empty value.
std::string First(std::initializer_list<const std::string*> values) {
  for (const std::string* v : values) {
    if (v != nullptr && !v->empty()) return *v;
  }
  return "";
}

}  // namespace

std::string Endpoint::Display() const {
  if (name.empty() || name == address) return address;
  return absl::StrCat(name, " (", address, ")");
}

std::string DefaultConfigPath(const EnvLookup& env) {
  if (std::string xdg = Get(env, "XDG_CONFIG_HOME"); !xdg.empty()) {
    return absl::StrCat(xdg, "/migctl/config");
  }
  if (std::string home = Get(env, "HOME"); !home.empty()) {
    return absl::StrCat(home, "/.config/migctl/config");
  }
  return "";
}

absl::StatusOr<EndpointResolver> EndpointResolver::Create(
    const Options& options, const EnvLookup& env) {
  EndpointResolver r;
  r.options_ = options;
  std::string path = options.config;
  bool required = true;
  if (path.empty()) path = Get(env, "MIGCTL_CONFIG");
  if (path.empty()) {
    path = DefaultConfigPath(env);
    required = false;
  }
  if (!path.empty()) {
    absl::StatusOr<Config> config = LoadConfig(path, required);
    if (!config.ok()) return config.status();
    r.config_ = *std::move(config);
  }
  r.env_cert_ = Get(env, "MIGCTL_TLS_CERT");
  r.env_key_ = Get(env, "MIGCTL_TLS_KEY");
  r.env_ca_ = Get(env, "MIGCTL_TLS_CA");
  std::string insecure = Get(env, "MIGCTL_INSECURE");
  if (insecure == "1" || insecure == "true") {
    r.env_insecure_ = true;
  } else if (insecure == "0" || insecure == "false") {
    r.env_insecure_ = false;
  } else if (!insecure.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("MIGCTL_INSECURE must be 1 or 0 (or true or false), not '",
                     insecure, "'"));
  }
  return r;
}

absl::StatusOr<Endpoint> EndpointResolver::Resolve(
    absl::string_view flag, const std::string& ref,
    const std::string& identity) const {
  const AgentSection* section = config_.FindAgent(ref);
  Endpoint e;
  if (section != nullptr) {
    e.name = ref;
    e.address = section->address;
    e.identity = section->identity;
  } else if (absl::StrContains(ref, ':')) {
    e.address = ref;
  } else if (config_.exists) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", ref, ": not HOST:PORT, and ", config_.path,
                     " has no [agent ", ref, "]"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        flag, "=", ref, ": not HOST:PORT, and there is no config file",
        config_.path.empty() ? "" : absl::StrCat(" (", config_.path, ")"),
        " to name agents"));
  }
  if (!identity.empty()) e.identity = identity;

  if (options_.insecure.has_value()) {
    e.insecure = *options_.insecure;
    e.insecure_from = "--insecure";
  } else if (env_insecure_.has_value()) {
    e.insecure = *env_insecure_;
    e.insecure_from = "MIGCTL_INSECURE=1";
  } else if (section != nullptr && section->insecure.has_value()) {
    e.insecure = *section->insecure;
    e.insecure_from =
        absl::StrCat("insecure = true in [agent ", ref, "] of ", config_.path);
  } else if (config_.insecure.has_value()) {
    e.insecure = *config_.insecure;
    e.insecure_from = absl::StrCat("insecure = true in ", config_.path);
  }
  if (e.insecure) return e;
  e.insecure_from.clear();

  const AgentSection none;
  const AgentSection& s = section != nullptr ? *section : none;
  e.files.cert =
      First({&options_.tls_cert, &env_cert_, &s.tls_cert, &config_.tls_cert});
  e.files.key =
      First({&options_.tls_key, &env_key_, &s.tls_key, &config_.tls_key});
  e.files.ca = First({&options_.tls_ca, &env_ca_, &s.tls_ca, &config_.tls_ca});

  std::vector<std::string> flags, vars, keys;
  for (const auto& [value, key] :
       std::vector<std::pair<const std::string*, std::string>>{
           {&e.files.cert, "cert"},
           {&e.files.key, "key"},
           {&e.files.ca, "ca"}}) {
    if (!value->empty()) continue;
    flags.push_back(absl::StrCat("--tls_", key));
    vars.push_back(absl::StrCat("MIGCTL_TLS_", absl::AsciiStrToUpper(key)));
    keys.push_back(absl::StrCat("tls_", key));
  }
  if (flags.empty()) return e;
  const bool one = flags.size() == 1;
  std::string where = absl::StrCat(one ? "flag, " : "flags, ", JoinAnd(vars));
  if (!config_.path.empty()) {
    absl::StrAppend(&where, ", or ", JoinAnd(keys), " in ", config_.path);
  } else {
    absl::StrAppend(&where, ", or a config file");
  }
  return absl::FailedPreconditionError(
      absl::StrCat(JoinAnd(flags), one ? " is" : " are", " not set (", where,
                   "); use --insecure for an agent that runs without TLS"));
}

absl::StatusOr<Endpoint> EndpointResolver::Agent() const {
  if (!options_.agent.empty()) {
    return Resolve("--agent", options_.agent, options_.agent_identity);
  }
  if (!config_.default_agent.empty()) {
    return Resolve("default_agent", config_.default_agent,
                   options_.agent_identity);
  }
  return Resolve("--agent", kDefaultAgent, options_.agent_identity);
}

}  // namespace migd::cli
