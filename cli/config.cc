#include "cli/config.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace migd::cli {
namespace {

// The line without its comment: from a '#' at its start or after a blank.
absl::string_view StripComment(absl::string_view line) {
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '#' &&
        (i == 0 ||
         absl::ascii_isspace(static_cast<unsigned char>(line[i - 1])))) {
      return line.substr(0, i);
    }
  }
  return line;
}

bool IsAgentName(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

// `value` as a path: relative ones are taken from the config's directory.
std::string ResolvePath(const std::string& config_path,
                        absl::string_view value) {
  if (absl::StartsWith(value, "/") || config_path.empty()) {
    return std::string(value);
  }
  size_t slash = config_path.rfind('/');
  std::string dir =
      slash == std::string::npos ? "." : config_path.substr(0, slash);
  if (dir.empty()) dir = "/";  // a config at the root: "/config"
  return absl::StrCat(dir, dir.back() == '/' ? "" : "/", value);
}

// Where one key may be set: the top level or one agent's section.
struct Scope {
  AgentSection* agent = nullptr;  // null: the top level
  std::set<std::string> keys_seen;
};

}  // namespace

const AgentSection* Config::FindAgent(absl::string_view name) const {
  auto it = agents.find(name);
  return it == agents.end() ? nullptr : &it->second;
}

absl::StatusOr<Config> ParseConfig(absl::string_view text,
                                   const std::string& path) {
  Config config;
  config.path = path;
  config.exists = true;
  Scope top;
  std::map<std::string, Scope> sections;
  Scope* scope = &top;
  int number = 0;
  for (absl::string_view raw : absl::StrSplit(text, '\n')) {
    ++number;
    auto bad = [&](absl::string_view what) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": ", what));
    };
    absl::string_view line = absl::StripAsciiWhitespace(StripComment(raw));
    if (line.empty()) continue;

    if (absl::StartsWith(line, "[")) {
      if (!absl::EndsWith(line, "]")) {
        return bad(absl::StrCat("'", line,
                                "' is not a section header (want "
                                "[agent NAME])"));
      }
      std::vector<absl::string_view> words = absl::StrSplit(
          line.substr(1, line.size() - 2), ' ', absl::SkipWhitespace());
      if (words.size() != 2 || words[0] != "agent") {
        return bad(
            absl::StrCat("unknown section '", line, "' (want [agent NAME])"));
      }
      if (!IsAgentName(words[1])) {
        return bad(absl::StrCat("agent name '", words[1],
                                "' may only have letters, digits, '.', '_' "
                                "and '-'"));
      }
      std::string name(words[1]);
      if (const AgentSection* first = config.FindAgent(name)) {
        return bad(absl::StrCat("[agent ", name,
                                "] given twice (first at line ", first->line,
                                ")"));
      }
      AgentSection& section = config.agents[name];
      section.name = name;
      section.line = number;
      scope = &sections[name];
      scope->agent = &section;
      continue;
    }

    size_t eq = line.find('=');
    absl::string_view key =
        eq == absl::string_view::npos
            ? absl::string_view()
            : absl::StripAsciiWhitespace(line.substr(0, eq));
    if (key.empty()) {
      return bad(
          absl::StrCat("want KEY = VALUE or [agent NAME], not '", line, "'"));
    }
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(eq + 1));
    const std::string where =
        scope->agent == nullptr
            ? std::string("at the top level")
            : absl::StrCat("in [agent ", scope->agent->name, "]");
    if (value.empty()) return bad(absl::StrCat(key, " has no value"));
    if (!scope->keys_seen.insert(std::string(key)).second) {
      return bad(absl::StrCat(key, " given twice ", where));
    }

    AgentSection* agent = scope->agent;
    std::string* path_value = nullptr;
    if (key == "tls_cert") {
      path_value = agent ? &agent->tls_cert : &config.tls_cert;
    } else if (key == "tls_key") {
      path_value = agent ? &agent->tls_key : &config.tls_key;
    } else if (key == "tls_ca") {
      path_value = agent ? &agent->tls_ca : &config.tls_ca;
    }
    if (path_value != nullptr) {
      *path_value = ResolvePath(path, value);
    } else if (key == "insecure") {
      if (value != "true" && value != "false") {
        return bad(
            absl::StrCat("insecure must be true or false, not '", value, "'"));
      }
      (agent ? agent->insecure : config.insecure) = value == "true";
    } else if (agent == nullptr && key == "default_agent") {
      config.default_agent = std::string(value);
    } else if (agent != nullptr && key == "address") {
      agent->address = std::string(value);
    } else if (agent != nullptr && key == "identity") {
      agent->identity = std::string(value);
    } else if (agent == nullptr) {
      return bad(absl::StrCat("unknown key '", key,
                              "' at the top level (want tls_cert, tls_key, "
                              "tls_ca, insecure or default_agent)"));
    } else {
      return bad(absl::StrCat("unknown key '", key, "' ", where,
                              " (want address, identity, tls_cert, tls_key, "
                              "tls_ca or insecure)"));
    }
  }
  for (const auto& [name, section] : config.agents) {
    if (section.address.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ":", section.line, ": [agent ", name, "] has no address"));
    }
  }
  return config;
}

absl::StatusOr<Config> LoadConfig(const std::string& path, bool required) {
  std::unique_ptr<FILE, int (*)(FILE*)> file(fopen(path.c_str(), "r"), &fclose);
  if (file == nullptr) {
    int err = errno;
    if (err == ENOENT && !required) {
      Config none;
      none.path = path;
      return none;
    }
    if (err == ENOENT) {
      return absl::NotFoundError(
          absl::StrCat("config file ", path, " does not exist"));
    }
    return absl::PermissionDeniedError(
        absl::StrCat("config file ", path, ": ", strerror(err)));
  }
  std::string text;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), file.get())) > 0) text.append(buf, n);
  if (ferror(file.get())) {
    return absl::InvalidArgumentError(
        absl::StrCat("config file ", path, ": ", strerror(errno)));
  }
  return ParseConfig(text, path);
}

}  // namespace migd::cli
