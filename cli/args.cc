#include "cli/args.h"

#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace migd::cli {
namespace {

struct CommandSpec {
  const char* name;
  std::vector<std::string> required;  // flags, without "--"
  std::vector<std::string> optional;
  bool takes_job_arg;  // exactly one positional JOB
  const char* synopsis;
  const char* summary;
};

const std::vector<CommandSpec>& Commands() {
  static const auto* commands = new std::vector<CommandSpec>{
      {"devices", {}, {}, false, "devices", "list the agent's devices"},
      {"prepare",
       {"job", "devices"},
       {"source"},
       false,
       "prepare --job=J --devices=SRC:DST[,SRC:DST...] [--source=ID]",
       "prepare this (destination) agent for job J and print the transfer\n"
       "      token"},
      {"migrate",
       {"job", "devices", "destination"},
       {"token"},
       false,
       "migrate --job=J --devices=SRC:DST[,SRC:DST...] "
       "--destination=HOST:PORT [--token=T]",
       "migrate devices from this (source) agent to the destination agent\n"
       "      and follow the job to its end; without --token, first prepares\n"
       "      the destination (its address is also its control address)"},
      {"status", {}, {}, true, "status JOB", "show one job"},
      {"watch", {}, {}, true, "watch JOB", "follow a job until it ends"},
      {"cancel", {}, {}, true, "cancel JOB", "cancel a job in any phase"},
      {"list", {}, {}, false, "list", "list the agent's jobs, newest first"},
  };
  return *commands;
}

const CommandSpec* FindCommand(absl::string_view name) {
  for (const auto& c : Commands()) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

bool IsGlobalFlag(absl::string_view name) {
  return name == "agent" || name == "output" || name == "timeout";
}

bool IsCommandFlag(absl::string_view name) {
  for (const auto& c : Commands()) {
    for (const auto& f : c.required) {
      if (f == name) return true;
    }
    for (const auto& f : c.optional) {
      if (f == name) return true;
    }
  }
  return false;
}

bool Contains(const std::vector<std::string>& v, absl::string_view s) {
  for (const auto& e : v) {
    if (e == s) return true;
  }
  return false;
}

bool IsHex(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// A device name that cannot be mistaken for part of a pair.
bool IsPlainName(absl::string_view s) {
  return !s.empty() && !absl::StrContains(s, ':') && !absl::StrContains(s, ',');
}

bool IsValidJobId(absl::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' &&
        c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::Status UsageError(absl::string_view command, absl::string_view what) {
  if (command.empty()) return absl::InvalidArgumentError(what);
  return absl::InvalidArgumentError(absl::StrCat(command, ": ", what));
}

}  // namespace

bool IsPciAddress(absl::string_view s) {
  // BB:DD.F
  auto short_form = [](absl::string_view t) {
    return t.size() == 7 && IsHex(t.substr(0, 2)) && t[2] == ':' &&
           IsHex(t.substr(3, 2)) && t[5] == '.' && t[6] >= '0' && t[6] <= '7';
  };
  if (short_form(s)) return true;
  return s.size() == 12 && IsHex(s.substr(0, 4)) && s[4] == ':' &&
         short_form(s.substr(5));
}

absl::StatusOr<std::vector<DevicePairArg>> ParseDevicePairs(
    absl::string_view text) {
  if (text.empty()) {
    return absl::InvalidArgumentError("--devices: empty (want SRC:DST,...)");
  }
  std::vector<DevicePairArg> pairs;
  std::set<std::string> sources, destinations;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    if (item.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: empty element in '", text, "'"));
    }
    std::vector<DevicePairArg> candidates;
    for (size_t p = item.find(':'); p != absl::string_view::npos;
         p = item.find(':', p + 1)) {
      absl::string_view src = item.substr(0, p);
      absl::string_view dst = item.substr(p + 1);
      auto ok = [](absl::string_view s) {
        return IsPlainName(s) || IsPciAddress(s);
      };
      if (ok(src) && ok(dst)) {
        candidates.push_back({std::string(src), std::string(dst)});
      }
    }
    if (candidates.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--devices: '", item, "' is not SRC:DST (source device:destination ",
          "device)"));
    }
    if (candidates.size() > 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: '", item,
                       "' can be split into SRC:DST more than one way"));
    }
    DevicePairArg& pair = candidates.front();
    if (!sources.insert(pair.source).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--devices: source device '", pair.source, "' listed twice"));
    }
    if (!destinations.insert(pair.destination).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--devices: destination device '", pair.destination,
                       "' listed twice"));
    }
    pairs.push_back(std::move(pair));
  }
  return pairs;
}

absl::StatusOr<Options> ParseArgs(const std::vector<std::string>& args,
                                  std::string* command_out) {
  Options o;
  const CommandSpec* spec = nullptr;
  std::vector<std::string> positional;
  std::set<std::string> seen_flags;
  std::string devices_text;
  bool only_positional = false;

  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (only_positional || arg.size() < 2 || arg[0] != '-') {
      if (spec == nullptr && !o.help && o.command.empty()) {
        if (arg == "help") {
          o.help = true;
          continue;
        }
        spec = FindCommand(arg);
        if (spec == nullptr) {
          return UsageError("", absl::StrCat("unknown command '", arg, "'"));
        }
        o.command = spec->name;
        if (command_out != nullptr) *command_out = o.command;
        continue;
      }
      positional.emplace_back(arg);
      continue;
    }
    if (arg == "--") {
      only_positional = true;
      continue;
    }
    if (arg == "-h" || arg == "--help" || arg == "-help") {
      o.help = true;
      continue;
    }
    absl::string_view name = arg;
    name.remove_prefix(absl::StartsWith(name, "--") ? 2 : 1);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != absl::string_view::npos) {
      value = std::string(name.substr(eq + 1));
      name = name.substr(0, eq);
      has_value = true;
    }
    const std::string cmd = o.command;
    bool global = IsGlobalFlag(name);
    if (!global) {
      if (spec == nullptr) {
        if (IsCommandFlag(name)) {
          return UsageError(
              "", absl::StrCat("--", name, " must come after the command"));
        }
        return UsageError("", absl::StrCat("unknown flag --", name));
      }
      if (!Contains(spec->required, name) && !Contains(spec->optional, name)) {
        return UsageError(cmd, absl::StrCat("unknown flag --", name));
      }
    }
    if (!has_value) {
      if (i + 1 >= args.size()) {
        return UsageError(global ? "" : cmd,
                          absl::StrCat("--", name, " needs a value"));
      }
      value = args[++i];
    }
    if (!seen_flags.insert(std::string(name)).second) {
      return UsageError(global ? "" : cmd,
                        absl::StrCat("--", name, " given twice"));
    }
    if (value.empty()) {
      return UsageError(global ? "" : cmd,
                        absl::StrCat("--", name, " needs a value"));
    }
    if (name == "agent") {
      o.agent = value;
    } else if (name == "output") {
      if (value == "text") {
        o.output = OutputFormat::kText;
      } else if (value == "json") {
        o.output = OutputFormat::kJson;
      } else {
        return UsageError(
            "",
            absl::StrCat("--output must be text or json, not '", value, "'"));
      }
    } else if (name == "timeout") {
      absl::Duration d;
      int64_t seconds;
      if (absl::SimpleAtoi(value, &seconds)) {
        d = absl::Seconds(seconds);
      } else if (!absl::ParseDuration(value, &d)) {
        return UsageError("", absl::StrCat("--timeout: '", value,
                                           "' is not a duration (e.g. 30s, "
                                           "500ms, 2m)"));
      }
      if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
        return UsageError("", absl::StrCat("--timeout must be positive and "
                                           "finite, not '",
                                           value, "'"));
      }
      o.timeout = d;
      o.timeout_given = true;
    } else if (name == "job") {
      o.job = value;
    } else if (name == "devices") {
      devices_text = value;
    } else if (name == "source") {
      o.source = value;
    } else if (name == "destination") {
      o.destination = value;
    } else if (name == "token") {
      o.token = value;
    }
  }

  if (o.help) return o;
  if (spec == nullptr) return UsageError("", "missing command");
  const std::string cmd = o.command;
  for (const auto& f : spec->required) {
    if (!seen_flags.count(f)) {
      return UsageError(cmd, absl::StrCat("missing --", f));
    }
  }
  if (spec->takes_job_arg) {
    if (positional.empty()) return UsageError(cmd, "missing JOB");
    o.job = positional.front();
    positional.erase(positional.begin());
  }
  if (!positional.empty()) {
    return UsageError(
        cmd, absl::StrCat("unexpected argument '", positional[0], "'"));
  }
  if ((spec->takes_job_arg || seen_flags.count("job")) &&
      !IsValidJobId(o.job)) {
    return UsageError(
        cmd, absl::StrCat("'", o.job,
                          "' is not a valid job id ([A-Za-z0-9._-], 1..64 "
                          "characters)"));
  }
  if (seen_flags.count("devices")) {
    auto pairs = ParseDevicePairs(devices_text);
    if (!pairs.ok()) return UsageError(cmd, pairs.status().message());
    o.devices = *std::move(pairs);
  }
  return o;
}

std::string UsageLine(absl::string_view command) {
  static constexpr char kGlobal[] =
      "usage: migctl [--agent=HOST:PORT] [--output=text|json] "
      "[--timeout=DURATION] ";
  const CommandSpec* spec = FindCommand(command);
  if (spec == nullptr) return absl::StrCat(kGlobal, "COMMAND [ARGS]");
  return absl::StrCat(kGlobal, spec->synopsis);
}

std::string HelpText() {
  std::string out = absl::StrCat(UsageLine(""), "\n\n",
                                 "Talks to a migd agent's control API "
                                 "(migd.v1.MigrationService) over gRPC.\n"
                                 "The connection is INSECURE (plaintext, no "
                                 "TLS, no authentication): migd has no TLS\n"
                                 "configuration yet. Use it only on a trusted "
                                 "network.\n\nCommands:\n");
  for (const auto& c : Commands()) {
    absl::StrAppend(&out, "  ", c.synopsis, "\n      ", c.summary, "\n");
  }
  absl::StrAppend(
      &out,
      "\nGlobal flags (anywhere on the line; --name=value or --name value):\n"
      "  --agent=HOST:PORT    agent to talk to (default ",
      kDefaultAgent,
      ")\n"
      "  --output=text|json   text for people (default); json for programs:\n"
      "                       one object per command, one line per event for\n"
      "                       migrate and watch\n"
      "  --timeout=DURATION   deadline of each request, e.g. 30s, 2m (default "
      "30s);\n"
      "                       migrate and watch follow a job with no deadline\n"
      "                       unless --timeout is given\n"
      "  --help, -h           this text\n"
      "\nDevice names may be PCI addresses: "
      "--devices=0000:3b:00.1:0000:5e:00.1\n"
      "Interrupting migrate or watch does not stop the job; use `migctl "
      "cancel JOB`.\n"
      "\nExit status: 0 success; 1 a request failed or the job did not "
      "succeed;\n"
      "2 a usage error.\n");
  return out;
}

}  // namespace migd::cli
