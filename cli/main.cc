// migctl: the operator's CLI over migd.v1.MigrationService. Only wiring here:
// the real streams, the terminal, the process environment, and channels made
// by security::Credentials (mutual TLS unless --insecure; see --help).

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "cli/commands.h"

namespace {

// Columns of the terminal on stdout; $COLUMNS or 80 when it cannot be told.
int TerminalWidth() {
  struct winsize ws = {};
  if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    return ws.ws_col;
  }
  int columns = 0;
  const char* env = std::getenv("COLUMNS");
  if (env != nullptr && absl::SimpleAtoi(env, &columns) && columns > 0) {
    return columns;
  }
  return 80;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  migd::cli::Env env = migd::cli::ProcessEnv(&std::cout, &std::cerr);
  env.out_is_terminal = isatty(STDOUT_FILENO) == 1;
  // One column spare: writing the last column makes some terminals wrap.
  env.terminal_width = TerminalWidth() - 1;
  return migd::cli::Main(args, env);
}
