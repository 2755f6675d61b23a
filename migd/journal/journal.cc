#include "migd/journal/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "migd/base/log.h"

namespace migd::journal {
namespace {

// The first 16 bytes of every SQLite 3 database file.
constexpr char kSqliteMagic[] = "SQLite format 3";  // and its NUL: 16 bytes
constexpr size_t kSqliteHeaderBytes = 100;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      if (fd_ >= 0) close(fd_);
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

std::string JoinPath(const std::string& dir, absl::string_view name) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

std::string Errno(int err) { return strerror(err); }

absl::Status CorruptError(const std::string& path, absl::string_view detail) {
  return absl::DataLossError(
      absl::StrCat("journal ", path, " is corrupt (", detail,
                   "); move it aside to start with an empty journal"));
}

// The status for a SQLite error `rc` while doing `what` on the journal at
// `path`: the code a caller can act on, the file, and SQLite's message.
absl::Status SqliteError(const std::string& path, sqlite3* db, int rc,
                         absl::string_view what) {
  std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  const int primary = rc & 0xff;
  const int sys = db != nullptr ? sqlite3_system_errno(db) : 0;
  if ((primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN) && sys != 0) {
    absl::StrAppend(&detail, ": ", Errno(sys));
  }
  switch (primary) {
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return CorruptError(path, absl::StrCat(what, ": ", detail));
    default:
      break;
  }
  std::string msg = absl::StrCat("journal ", path, ": ", what, ": ", detail);
  switch (primary) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(msg);
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return absl::PermissionDeniedError(msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::StatusOr<StmtPtr> Prepare(const std::string& path, sqlite3* db,
                                absl::string_view sql, absl::string_view what) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v2(
      db, sql.data(), static_cast<int>(sql.size()), &raw, nullptr);
  StmtPtr stmt(raw);
  if (rc != SQLITE_OK) return SqliteError(path, db, rc, what);
  return stmt;
}

// Runs `sql` (one or more statements without results).
absl::Status Exec(const std::string& path, sqlite3* db, const char* sql,
                  absl::string_view what) {
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(path, db, rc, what);
  return absl::OkStatus();
}

// Steps a statement that returns no rows (or whose rows are not wanted).
absl::Status StepToDone(const std::string& path, sqlite3* db,
                        sqlite3_stmt* stmt, absl::string_view what) {
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
  }
  if (rc != SQLITE_DONE) return SqliteError(path, db, rc, what);
  return absl::OkStatus();
}

// The text of the first column of the first row `sql` returns, or nullopt
// when it returns no row.
absl::StatusOr<std::optional<std::string>> QueryText(const std::string& path,
                                                     sqlite3* db,
                                                     absl::string_view sql,
                                                     absl::string_view what) {
  absl::StatusOr<StmtPtr> stmt = Prepare(path, db, sql, what);
  if (!stmt.ok()) return stmt.status();
  const int rc = sqlite3_step(stmt->get());
  if (rc == SQLITE_DONE) return std::nullopt;
  if (rc != SQLITE_ROW) return SqliteError(path, db, rc, what);
  const unsigned char* text = sqlite3_column_text(stmt->get(), 0);
  return std::optional<std::string>(
      text == nullptr ? "" : reinterpret_cast<const char*>(text));
}

// Rolls back an open transaction unless Commit() succeeded.
class Transaction {
 public:
  static absl::StatusOr<Transaction> Begin(const std::string& path,
                                           sqlite3* db) {
    absl::Status begun = Exec(path, db, "BEGIN IMMEDIATE", "begin");
    if (!begun.ok()) return begun;
    return Transaction(path, db);
  }
  Transaction(Transaction&& other) noexcept
      : path_(other.path_), db_(std::exchange(other.db_, nullptr)) {}
  Transaction& operator=(Transaction&&) = delete;
  ~Transaction() {
    if (db_ != nullptr && !sqlite3_get_autocommit(db_)) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
  }
  absl::Status Commit() {
    absl::Status committed = Exec(*path_, db_, "COMMIT", "commit");
    if (committed.ok()) db_ = nullptr;
    return committed;
  }

 private:
  Transaction(const std::string& path, sqlite3* db) : path_(&path), db_(db) {}
  const std::string* path_;
  sqlite3* db_;
};

int64_t ToUnixMicros(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1000000 + t.nanos() / 1000;
}

// Makes sure `dir` is a directory, creating it (mode 0700) if missing.
absl::Status EnsureStateDir(const std::string& dir) {
  if (dir.empty()) return absl::InvalidArgumentError("state dir is not set");
  struct stat st;
  if (stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return absl::FailedPreconditionError(
          absl::StrCat("state dir ", dir, " exists and is not a directory"));
    }
    return absl::OkStatus();
  }
  if (errno != ENOENT) {
    return absl::FailedPreconditionError(
        absl::StrCat("state dir ", dir, ": ", Errno(errno)));
  }
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create state dir ", dir, ": ", Errno(errno)));
  }
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("state dir ", dir, " exists and is not a directory"));
  }
  return absl::OkStatus();
}

// Makes the directory entries in `dir` (new files) durable.
absl::Status SyncDir(const std::string& dir) {
  Fd fd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid() || fsync(fd.get()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot sync state dir ", dir, ": ", Errno(errno)));
  }
  return absl::OkStatus();
}

// Extends the file at `path` with zeros to `bytes` (nothing when it is that
// long already) and syncs it.
absl::Status ZeroFillTo(const std::string& path, off_t bytes) {
  Fd fd(open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
  struct stat st;
  if (!fd.valid() || fstat(fd.get(), &st) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot open ", path, ": ", Errno(errno)));
  }
  if (st.st_size >= bytes) return absl::OkStatus();
  static constexpr size_t kBlock = 1 << 20;
  const std::string zeros(kBlock, '\0');
  for (off_t at = st.st_size; at < bytes;) {
    const size_t n = static_cast<size_t>(std::min<off_t>(bytes - at, kBlock));
    const ssize_t written = pwrite(fd.get(), zeros.data(), n, at);
    if (written <= 0) {
      return absl::InternalError(
          absl::StrCat("cannot write ", path, ": ", Errno(errno)));
    }
    at += written;
  }
  if (fdatasync(fd.get()) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot sync ", path, ": ", Errno(errno)));
  }
  return absl::OkStatus();
}

// Takes the exclusive lock on <dir>/journal.lock and writes our pid into it.
absl::StatusOr<Fd> LockStateDir(const std::string& dir) {
  const std::string lock_path = JoinPath(dir, Journal::kLockFileName);
  Fd fd(
      open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open lock file ", lock_path, ": ", Errno(errno)));
  }
  if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot lock ", lock_path, ": ", Errno(errno)));
    }
    // The holder writes its pid once it has the lock; it may not have yet.
    char buf[32] = {};
    const ssize_t n = pread(fd.get(), buf, sizeof(buf) - 1, 0);
    int pid = 0;
    std::string who = absl::StrCat("it holds ", lock_path);
    if (n > 0 &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::string_view(buf, n)),
                         &pid) &&
        pid > 0) {
      who = absl::StrCat("pid ", pid);
    }
    return absl::FailedPreconditionError(
        absl::StrCat("another migd uses ", dir, " (", who, ")"));
  }
  // For the message above, in the next one to try; the lock is what counts,
  // so a failure to write the pid is not an error.
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd.get(), 0) == 0) {
    (void)!pwrite(fd.get(), pid.data(), pid.size(), 0);
  }
  return fd;
}

// Refuses, without writing to it, a file that is not a SQLite database. An
// empty file is an empty database to SQLite (and holds no job).
absl::Status CheckHeader(const std::string& path) {
  Fd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open journal ", path, ": ", Errno(errno)));
  }
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot stat journal ", path, ": ", Errno(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("journal ", path, " is not a regular file"));
  }
  if (st.st_size == 0) return absl::OkStatus();
  char header[kSqliteHeaderBytes];
  const ssize_t n = pread(fd.get(), header, sizeof(header), 0);
  if (n < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read journal ", path, ": ", Errno(errno)));
  }
  if (static_cast<size_t>(n) < sizeof(header) ||
      memcmp(header, kSqliteMagic, sizeof(kSqliteMagic)) != 0) {
    return CorruptError(path, "not a SQLite database");
  }
  return absl::OkStatus();
}

// PRAGMA quick_check: "ok", or what it found.
absl::Status QuickCheck(const std::string& path, sqlite3* db) {
  absl::StatusOr<StmtPtr> stmt =
      Prepare(path, db, "PRAGMA quick_check(5)", "quick_check");
  if (!stmt.ok()) return stmt.status();
  std::vector<std::string> problems;
  int rc;
  while ((rc = sqlite3_step(stmt->get())) == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt->get(), 0);
    std::string line =
        text == nullptr ? "" : reinterpret_cast<const char*>(text);
    if (line != "ok") problems.push_back(std::move(line));
  }
  if (rc != SQLITE_DONE) return SqliteError(path, db, rc, "quick_check");
  if (!problems.empty()) {
    return CorruptError(
        path, absl::StrCat("quick_check: ", absl::StrJoin(problems, "; ")));
  }
  return absl::OkStatus();
}

constexpr char kCreateSchema[] = R"sql(
BEGIN IMMEDIATE;
CREATE TABLE meta (
  key TEXT PRIMARY KEY NOT NULL,
  value ANY
);
INSERT INTO meta (key, value) VALUES ('schema_version', 1);
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of first Record
  job_id TEXT NOT NULL UNIQUE,
  role INTEGER NOT NULL,                  -- migd.v1.Role
  phase INTEGER NOT NULL,                 -- migd.v1.Phase
  terminal INTEGER NOT NULL,              -- 1 for SUCCEEDED, FAILED, CANCELLED
  created_us INTEGER NOT NULL,            -- Unix microseconds
  updated_us INTEGER NOT NULL,
  finished_us INTEGER,                    -- NULL unless terminal
  record BLOB NOT NULL,                   -- serialized migd.v1.Migration
  boot_id TEXT                            -- the host's boot it was recorded in
);
CREATE INDEX jobs_newest_first ON jobs (created_us DESC, seq DESC);
CREATE INDEX jobs_finished ON jobs (terminal, finished_us);
COMMIT;
)sql";

// This boot's id (a UUID the kernel makes at boot), or "" with a warning
// when it cannot be read: every record then counts as from another boot,
// which recovery takes the careful way.
std::string ReadBootId() {
  static constexpr char kPath[] = "/proc/sys/kernel/random/boot_id";
  Fd fd(open(kPath, O_RDONLY | O_CLOEXEC));
  char buf[64];
  const ssize_t n = fd.valid() ? read(fd.get(), buf, sizeof(buf)) : -1;
  if (n <= 0) {
    base::LogWarning("journal: cannot read ", kPath, " (",
                     n < 0 ? Errno(errno) : "empty",
                     "): recovery will take every record as written before "
                     "the host last started");
    return "";
  }
  return std::string(absl::StripAsciiWhitespace(
      absl::string_view(buf, static_cast<size_t>(n))));
}

// Adds the boot column to a journal made before it (the same schema
// version: a migd that does not know the column leaves it alone, and its
// rows keep NULL, which JournaledJob reads as "every record was synced").
absl::Status AddBootColumn(const std::string& path, sqlite3* db) {
  absl::StatusOr<std::optional<std::string>> has = QueryText(
      path, db,
      "SELECT count(*) FROM pragma_table_info('jobs') WHERE name = 'boot_id'",
      "read the jobs table's columns");
  if (!has.ok()) return has.status();
  if (has->value_or("0") != "0") return absl::OkStatus();
  return Exec(path, db, "ALTER TABLE jobs ADD COLUMN boot_id TEXT",
              "add the boot column");
}

// Checks the schema version, creating the schema in an empty database.
absl::Status CheckOrCreateSchema(const std::string& path, sqlite3* db) {
  absl::StatusOr<std::optional<std::string>> objects = QueryText(
      path, db, "SELECT count(*) FROM sqlite_schema", "read the schema");
  if (!objects.ok()) return objects.status();
  absl::StatusOr<std::optional<std::string>> meta = QueryText(
      path, db,
      "SELECT name FROM sqlite_schema WHERE type = 'table' AND name = 'meta'",
      "read the schema");
  if (!meta.ok()) return meta.status();
  if (!meta->has_value()) {
    if (objects->value_or("0") != "0") {
      return absl::DataLossError(absl::StrCat(
          "journal ", path,
          " is not a migd journal (a SQLite database without its meta "
          "table); move it aside to start with an empty journal"));
    }
    absl::Status created = Exec(path, db, kCreateSchema, "create the schema");
    if (!created.ok()) {
      if (!sqlite3_get_autocommit(db)) {
        sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      }
      return created;
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<std::string>> version =
      QueryText(path, db, "SELECT value FROM meta WHERE key = 'schema_version'",
                "read the schema version");
  if (!version.ok()) return version.status();
  int v = 0;
  if (!version->has_value() || !absl::SimpleAtoi(**version, &v) || v < 1) {
    return CorruptError(path, "no valid schema version in its meta table");
  }
  if (v > Journal::kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "journal ", path, " has schema version ", v,
        ", newer than this migd reads (", Journal::kSchemaVersion,
        "): it was written by a newer migd; run that one, or move the file "
        "aside to start with an empty journal"));
  }
  return AddBootColumn(path, db);
}

}  // namespace

bool IsTerminal(v1::Phase phase) {
  return phase == v1::PHASE_SUCCEEDED || phase == v1::PHASE_FAILED ||
         phase == v1::PHASE_CANCELLED;
}

struct Journal::Connection {
  Fd lock;  // Declared first: released after the database is closed.
  DbPtr db;
  // Record's statement, compiled once (by its first call) and kept reset,
  // its parameters cleared, between calls: compiling it is as much work as
  // running it, and a job's write-ahead records are in its downtime.
  StmtPtr upsert;  // Declared after db: finalized before it closes.
  // Record's switches to synchronous=NORMAL and back, for a Sync::kLater
  // record (a job's end, in the destination's downtime), kept the same way.
  StmtPtr sync_normal;
  StmtPtr sync_full;
};

Journal::Journal(std::string path, JournalOptions options, std::string boot_id,
                 std::unique_ptr<Connection> connection)
    : path_(std::move(path)),
      options_(std::move(options)),
      boot_id_(std::move(boot_id)),
      connection_(std::move(connection)) {}

Journal::~Journal() = default;

absl::StatusOr<std::unique_ptr<Journal>> Journal::Open(
    const std::string& state_dir, JournalOptions options) {
  if (absl::Status dir = EnsureStateDir(state_dir); !dir.ok()) return dir;
  auto connection = std::make_unique<Connection>();
  absl::StatusOr<Fd> lock = LockStateDir(state_dir);
  if (!lock.ok()) return lock.status();
  connection->lock = *std::move(lock);

  const std::string path = JoinPath(state_dir, kFileName);
  if (absl::Status header = CheckHeader(path); !header.ok()) return header;

  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(
      path.c_str(), &raw,
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
      nullptr);
  connection->db.reset(raw);
  sqlite3* db = raw;
  if (rc != SQLITE_OK) return SqliteError(path, db, rc, "open");
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(std::clamp<int64_t>(
                               absl::ToInt64Milliseconds(options.busy_timeout),
                               0, std::numeric_limits<int>::max())));

  // Read-only checks first: a file Open refuses is left as it was.
  if (absl::Status ok = QuickCheck(path, db); !ok.ok()) return ok;
  // Settings of this connection (journal_mode=WAL also sticks to the file).
  absl::StatusOr<std::optional<std::string>> mode =
      QueryText(path, db, "PRAGMA journal_mode = WAL", "set WAL mode");
  if (!mode.ok()) return mode.status();
  if (mode->value_or("") != "wal") {
    return absl::FailedPreconditionError(absl::StrCat(
        "journal ", path, ": cannot use WAL mode (journal_mode is ",
        mode->value_or("unknown"), ")"));
  }
  if (absl::Status s =
          Exec(path, db, "PRAGMA synchronous = FULL", "set synchronous=FULL");
      !s.ok()) {
    return s;
  }
  if (options.max_page_count > 0) {
    const std::string pragma =
        absl::StrCat("PRAGMA max_page_count = ", options.max_page_count);
    if (absl::Status s = Exec(path, db, pragma.c_str(), "set max_page_count");
        !s.ok()) {
      return s;
    }
  }
  if (absl::Status s = CheckOrCreateSchema(path, db); !s.ok()) return s;

  std::string boot_id =
      options.boot_id.empty() ? ReadBootId() : options.boot_id;
  std::unique_ptr<Journal> journal(
      new Journal(path, options, std::move(boot_id), std::move(connection)));
  if (absl::Status pruned = journal->Prune(absl::Now()); !pruned.ok()) {
    return pruned;
  }
  // The journal file and its -wal exist now; make their names durable too.
  if (absl::Status synced = SyncDir(state_dir); !synced.ok()) return synced;
  // The write-ahead log's blocks, written once now (journal.h). Without them
  // the journal works, each sync slower: a warning, not a failure.
  if (absl::Status s = ZeroFillTo(path + "-wal", kWalReserveBytes); !s.ok()) {
    base::LogWarning("journal ", path,
                     ": cannot reserve the write-ahead log's space (",
                     s.message(), "); each record's sync will cost more");
  }
  return journal;
}

absl::Status Journal::Record(const v1::Migration& record, Sync sync) {
  if (record.job_id().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("journal ", path_, ": a record needs a job id"));
  }
  std::string bytes;
  if (!record.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("journal ", path_, ": job ",
                                            record.job_id(),
                                            ": cannot serialize its record"));
  }
  static constexpr char kUpsert[] = R"sql(
INSERT INTO jobs (job_id, role, phase, terminal, created_us, updated_us,
                  finished_us, record, boot_id)
VALUES (:job_id, :role, :phase, :terminal, COALESCE(:created, :now), :now,
        CASE WHEN :terminal THEN COALESCE(:finished, :now) END, :record,
        :boot_id)
ON CONFLICT (job_id) DO UPDATE SET
  role = excluded.role,
  phase = excluded.phase,
  terminal = excluded.terminal,
  created_us = COALESCE(:created, jobs.created_us),
  updated_us = excluded.updated_us,
  finished_us = CASE WHEN excluded.terminal
                     THEN COALESCE(:finished, jobs.finished_us, :now) END,
  record = excluded.record,
  boot_id = excluded.boot_id
)sql";
  const std::string what = absl::StrCat("record job ", record.job_id());
  const bool terminal = IsTerminal(record.phase());

  absl::MutexLock lock(&mu_);
  ++records_;
  if (options_.fail_after_records > 0 &&
      records_ >= options_.fail_after_records) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "journal ", path_, ": ", what, ": database or disk is full (injected: ",
        "fail_after_records=", options_.fail_after_records, ", this is record ",
        records_, ")"));
  }
  sqlite3* db = connection_->db.get();
  if (connection_->upsert == nullptr) {
    absl::StatusOr<StmtPtr> stmt = Prepare(path_, db, kUpsert, what);
    if (!stmt.ok()) return stmt.status();
    connection_->upsert = *std::move(stmt);
  }
  sqlite3_stmt* s = connection_->upsert.get();
  auto index = [s](const char* name) {
    return sqlite3_bind_parameter_index(s, name);
  };
  sqlite3_bind_text(s, index(":job_id"), record.job_id().data(),
                    static_cast<int>(record.job_id().size()), SQLITE_STATIC);
  sqlite3_bind_int(s, index(":role"), record.role());
  sqlite3_bind_int(s, index(":phase"), record.phase());
  sqlite3_bind_int(s, index(":terminal"), terminal ? 1 : 0);
  if (record.has_created()) {
    sqlite3_bind_int64(s, index(":created"), ToUnixMicros(record.created()));
  }
  sqlite3_bind_int64(s, index(":now"), absl::ToUnixMicros(absl::Now()));
  if (record.has_finished()) {
    sqlite3_bind_int64(s, index(":finished"), ToUnixMicros(record.finished()));
  }
  sqlite3_bind_blob64(s, index(":record"), bytes.data(), bytes.size(),
                      SQLITE_STATIC);
  sqlite3_bind_text(s, index(":boot_id"), boot_id_.data(),
                    static_cast<int>(boot_id_.size()), SQLITE_STATIC);
  // With synchronous=NORMAL a WAL commit writes its frames and does not
  // sync them; the connection's setting is FULL again right after.
  auto pragma = [&](StmtPtr& stmt, const char* sql, const char* what) {
    if (stmt == nullptr) {
      absl::StatusOr<StmtPtr> made = Prepare(path_, db, sql, what);
      if (!made.ok()) return made.status();
      stmt = *std::move(made);
    }
    absl::Status done = StepToDone(path_, db, stmt.get(), what);
    sqlite3_reset(stmt.get());
    return done;
  };
  if (sync == Sync::kLater) {
    if (absl::Status n =
            pragma(connection_->sync_normal, "PRAGMA synchronous = NORMAL",
                   "set synchronous=NORMAL");
        !n.ok()) {
      sqlite3_clear_bindings(s);
      return n;
    }
  }
  // One statement: its own transaction, committed (and, with
  // synchronous=FULL, synced) when it returns SQLITE_DONE.
  absl::Status done = StepToDone(path_, db, s, what);
  // Ready for the next call, and holding no pointer into `bytes`.
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  if (sync == Sync::kLater) {
    absl::Status full =
        pragma(connection_->sync_full, "PRAGMA synchronous = FULL",
               "set synchronous=FULL");
    if (done.ok()) done = full;
  }
  // A synced commit syncs the whole log, the frames before it included.
  if (done.ok()) unsynced_ = sync == Sync::kLater;
  return done;
}

absl::Status Journal::SyncNow() {
  absl::MutexLock lock(&mu_);
  if (!unsynced_) return absl::OkStatus();
  sqlite3* db = connection_->db.get();
  // The log's file, synced through SQLite's own file layer: one sync, as a
  // synchronous=FULL commit would have made.
  sqlite3_file* log = nullptr;
  const int rc =
      sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &log);
  if (rc == SQLITE_OK && log != nullptr && log->pMethods != nullptr) {
    if (const int sync = log->pMethods->xSync(log, SQLITE_SYNC_NORMAL);
        sync != SQLITE_OK) {
      return SqliteError(path_, nullptr, sync, "sync the log");
    }
  } else if (absl::Status s = Exec(path_, db, "PRAGMA wal_checkpoint(PASSIVE)",
                                   "checkpoint (sync the log)");
             !s.ok()) {
    // No log file at hand: a checkpoint syncs the log before it copies its
    // pages into the main file.
    return s;
  }
  unsynced_ = false;
  return absl::OkStatus();
}

bool Journal::unsynced() const {
  absl::MutexLock lock(&mu_);
  return unsynced_;
}

absl::StatusOr<std::vector<JournaledJob>> Journal::LoadJobs() {
  absl::MutexLock lock(&mu_);
  sqlite3* db = connection_->db.get();
  absl::StatusOr<StmtPtr> stmt =
      Prepare(path_, db,
              "SELECT job_id, record, boot_id FROM jobs "
              "ORDER BY created_us DESC, seq DESC",
              "load the jobs");
  if (!stmt.ok()) return stmt.status();
  std::vector<JournaledJob> jobs;
  int rc;
  while ((rc = sqlite3_step(stmt->get())) == SQLITE_ROW) {
    const unsigned char* id = sqlite3_column_text(stmt->get(), 0);
    const std::string job_id =
        id == nullptr ? "" : reinterpret_cast<const char*>(id);
    const void* blob = sqlite3_column_blob(stmt->get(), 1);
    const int size = sqlite3_column_bytes(stmt->get(), 1);
    JournaledJob& journaled = jobs.emplace_back();
    if (sqlite3_column_type(stmt->get(), 2) != SQLITE_NULL) {
      const unsigned char* boot = sqlite3_column_text(stmt->get(), 2);
      const absl::string_view stamped =
          boot == nullptr ? "" : reinterpret_cast<const char*>(boot);
      journaled.from_earlier_boot =
          boot_id_.empty() || stamped.empty() || stamped != boot_id_;
    }
    v1::Migration& job = journaled.record;
    if (!job.ParseFromArray(blob, size)) {
      return CorruptError(path_, absl::StrCat("the record of job \"", job_id,
                                              "\" does not parse"));
    }
    if (job.job_id() != job_id) {
      return CorruptError(
          path_, absl::StrCat("the record of job \"", job_id, "\" names job \"",
                              job.job_id(), "\""));
    }
  }
  if (rc != SQLITE_DONE) return SqliteError(path_, db, rc, "load the jobs");
  return jobs;
}

absl::StatusOr<std::vector<v1::Migration>> Journal::LoadAll() {
  absl::StatusOr<std::vector<JournaledJob>> jobs = LoadJobs();
  if (!jobs.ok()) return jobs.status();
  std::vector<v1::Migration> records;
  records.reserve(jobs->size());
  for (JournaledJob& job : *jobs) records.push_back(std::move(job.record));
  return records;
}

absl::Status Journal::Prune(absl::Time now) {
  absl::MutexLock lock(&mu_);
  sqlite3* db = connection_->db.get();
  absl::StatusOr<Transaction> txn = Transaction::Begin(path_, db);
  if (!txn.ok()) return txn.status();

  absl::StatusOr<StmtPtr> by_age = Prepare(
      path_, db, "DELETE FROM jobs WHERE terminal = 1 AND finished_us < ?1",
      "prune old finished jobs");
  if (!by_age.ok()) return by_age.status();
  sqlite3_bind_int64(by_age->get(), 1,
                     absl::ToUnixMicros(now - options_.max_finished_age));
  if (absl::Status s =
          StepToDone(path_, db, by_age->get(), "prune old finished jobs");
      !s.ok()) {
    return s;
  }

  absl::StatusOr<StmtPtr> by_count = Prepare(
      path_, db,
      "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs WHERE terminal = 1 "
      "ORDER BY finished_us DESC, seq DESC LIMIT -1 OFFSET ?1)",
      "prune finished jobs beyond the count");
  if (!by_count.ok()) return by_count.status();
  sqlite3_bind_int64(
      by_count->get(), 1,
      static_cast<int64_t>(std::min<uint64_t>(
          options_.max_finished_jobs, std::numeric_limits<int64_t>::max())));
  if (absl::Status s = StepToDone(path_, db, by_count->get(),
                                  "prune finished jobs beyond the count");
      !s.ok()) {
    return s;
  }
  return txn->Commit();
}

}  // namespace migd::journal
