// migd/device/fd_handoff_helper.cc
//
// A stand-in for a VMM in fd_handoff_test: a separate program (so the fd
// really crosses a process boundary) that opens a file itself, serves it over
// a UNIX socket with SendFd, then answers questions about its own copy.
//
//   fd_handoff_helper SOCKET_PATH FILE NAME OFFSET [stream|seqpacket]
//
// Opens FILE read-write, seeks to OFFSET, listens on SOCKET_PATH (bound under
// a temporary name and renamed into place, so the path only appears once it
// is listening), prints "ready\n" on stdout, accepts one connection and sends
// the fd named NAME. Then, per byte received: 'o' -> replies with its own
// offset of the file as "<decimal>\n". Exits 0 at EOF; non-zero on any error.

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <string>

#include "migd/device/fd_handoff.h"

namespace {

int Die(const char* what) {
  fprintf(stderr, "fd_handoff_helper: %s: %s\n", what, strerror(errno));
  return 2;
}

bool WriteAll(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    fprintf(stderr,
            "usage: %s SOCKET_PATH FILE NAME OFFSET [stream|seqpacket]\n",
            argv[0]);
    return 2;
  }
  const std::string socket_path = argv[1];
  const int type = (argc == 6 && std::string(argv[5]) == "seqpacket")
                       ? SOCK_SEQPACKET
                       : SOCK_STREAM;
  const int file = open(argv[2], O_RDWR | O_CLOEXEC);
  if (file < 0) return Die("open file");
  if (lseek(file, atol(argv[4]), SEEK_SET) < 0) return Die("lseek");

  const int listener = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (listener < 0) return Die("socket");
  const std::string tmp_path = socket_path + ".tmp";
  struct sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (tmp_path.size() >= sizeof(addr.sun_path)) {
    fprintf(stderr, "fd_handoff_helper: socket path too long\n");
    return 2;
  }
  memcpy(addr.sun_path, tmp_path.c_str(), tmp_path.size() + 1);
  unlink(tmp_path.c_str());
  if (bind(listener, reinterpret_cast<struct sockaddr*>(&addr), sizeof(addr)) !=
      0) {
    return Die("bind");
  }
  if (listen(listener, 1) != 0) return Die("listen");
  if (rename(tmp_path.c_str(), socket_path.c_str()) != 0) return Die("rename");
  if (!WriteAll(STDOUT_FILENO, "ready\n")) return Die("write ready");

  int conn;
  do {
    conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  } while (conn < 0 && errno == EINTR);
  if (conn < 0) return Die("accept");
  absl::Status sent = migd::device::SendFd(conn, argv[3], file);
  if (!sent.ok()) {
    fprintf(stderr, "fd_handoff_helper: %s\n", sent.ToString().c_str());
    return 3;
  }
  for (;;) {
    char cmd;
    const ssize_t n = read(conn, &cmd, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Die("read");
    if (n == 0) return 0;
    if (cmd == 'o') {
      const off_t off = lseek(file, 0, SEEK_CUR);
      if (!WriteAll(conn, std::to_string(off) + "\n")) return Die("reply");
    }
  }
}
