// e2e/testing/shell.h
//
// Running a command line through /bin/sh from a test, for tests that drive a
// command-line tool (migctl) the way an operator would.

#ifndef E2E_TESTING_SHELL_H_
#define E2E_TESTING_SHELL_H_

#include <string>

#include "absl/strings/string_view.h"

namespace migd::e2e {

// `s` in single quotes, each ' in it written '\'', so that /bin/sh reads it
// back as one word, unchanged.
std::string ShellQuote(absl::string_view s);

// What a command printed and how it ended.
struct CommandResult {
  int exit_code = -1;  // -1 when it could not run or did not exit normally
  std::string output;  // stdout and stderr
};

// Runs `command` through /bin/sh with stderr joined to stdout.
CommandResult RunShell(const std::string& command);

}  // namespace migd::e2e

#endif  // E2E_TESTING_SHELL_H_
