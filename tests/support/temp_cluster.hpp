#pragma once

// A private, throwaway PostgreSQL 15 cluster for tests that must stop, restart or reconfigure
// the server (the shared cluster from scripts/test must never be touched that way, since other
// tests use it at the same time).
//
// The cluster lives in a fresh folder (under /dev/shm when that is a roomy tmpfs, else under
// the temp directory), listens on 127.0.0.1 at a port that was free when it started (kept
// across stop()/start(), so conninfo() stays valid for a pool that outlives a restart) and on a
// Unix socket inside that folder. It runs as the `postgres` OS user with trust authentication
// and fsync off: built for speed, not durability. A test process killed before its destructors
// run leaves sluice-cluster.* folders (and possibly a running server) behind.
//
// Thread-safety: start(), stop(), restart() and the destructor must not race with each other;
// the accessors and connect() may be called from any thread.
// Throws: std::runtime_error (with the server's log tail) when initdb, start or stop fails.

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sluice/pg/connection.hpp"

namespace sluice::test {

class temp_cluster;

struct temp_cluster_options {
  int max_connections = 20;
  int superuser_reserved_connections = 3;
  // Extra postgresql.conf settings, written as `name = value` (value verbatim, so quote strings).
  std::vector<std::pair<std::string, std::string>> settings;
  // Bound on each start and stop.
  std::chrono::seconds timeout{30};
  // Not null: this cluster is a streaming standby of that running one, made with pg_basebackup
  // (through a physical replication slot named `standby_name`) instead of copied from the initdb
  // template, and connecting to it as application_name `standby_name`, the name the primary's
  // synchronous_standby_names uses (see require_standby()). The primary must be running during
  // the constructor. A standby gets at least the primary's max_connections (hot standby
  // refuses to start with fewer).
  const temp_cluster* standby_of = nullptr;
  std::string standby_name = "sluice_standby";
};

// What require_standby() waits for.
enum class replication_mode {
  asynchronous,  // the standby streams; commits do not wait for it
  synchronous,   // commits wait until the standby has flushed their WAL (synchronous_commit on)
};

// The ways pg_ctl can stop a server.
enum class shutdown_mode {
  smart,      // wait for every client to disconnect
  fast,       // terminate sessions (clients see 57P01), then a clean shutdown
  immediate,  // kill everything; the next start runs crash recovery
};

// What run_as_postgres() saw of a command.
struct command_result {
  int exit_code = -1;  // -1: killed by a signal or not run
  std::string output;  // stdout and stderr, interleaved
};

// Runs `command` as the postgres OS user (through runuser when we are root; directly when we
// are postgres), in `cwd`, without the PG* and DATABASE_URL variables, and waits for it.
// Also used for the private PgBouncer (temp_pgbouncer.hpp).
command_result run_as_postgres(const std::vector<std::string>& command, const std::string& cwd);

// A new folder (under /dev/shm when that is a roomy tmpfs, else the temp directory) named
// "<prefix>.XXXXXX" and owned by the postgres user.
[[nodiscard]] std::string make_postgres_dir(const std::string& prefix);

// Why a temp_cluster cannot run here (no postgres OS user, no PostgreSQL 15 binaries, or a
// user that is neither root nor postgres); empty when it can.
[[nodiscard]] std::string temp_cluster_unavailable_reason();
[[nodiscard]] inline bool can_run_temp_cluster() {
  return temp_cluster_unavailable_reason().empty();
}

class temp_cluster {
 public:
  // Copies a fresh data directory into a new folder, then start(). The data directory comes
  // from one initdb per machine and user, kept for later runs as sluice-pg15-template-v1-u<uid>
  // next to the clusters (delete it to force a new initdb).
  explicit temp_cluster(temp_cluster_options options = {});
  temp_cluster(const temp_cluster&) = delete;
  temp_cluster& operator=(const temp_cluster&) = delete;
  temp_cluster(temp_cluster&&) = delete;
  temp_cluster& operator=(temp_cluster&&) = delete;
  // Stops the server (immediate mode) and removes the folder. Never throws.
  ~temp_cluster();

  // "host=127.0.0.1 port=N user=<user> dbname=postgres".
  [[nodiscard]] std::string conninfo(std::string_view user = "postgres") const;
  [[nodiscard]] int port() const noexcept { return port_; }
  [[nodiscard]] const std::string& directory() const noexcept { return dir_; }
  [[nodiscard]] bool running() const noexcept { return running_; }

  // Opens a connection to the cluster (as the superuser unless told otherwise).
  [[nodiscard]] pg::connection connect(std::string application_name = "sluice-test-admin",
                                       std::string_view user = "postgres") const;

  // Starts the server and returns once it accepts connections. The first start picks a free
  // port (retrying with another if someone took it meanwhile); later starts reuse it.
  void start();
  // Stops the server and returns once it has exited. Does nothing when it is not running.
  void stop(shutdown_mode mode = shutdown_mode::fast);
  // stop(mode) then start(), on the same port.
  void restart(shutdown_mode mode = shutdown_mode::fast);

  // On a primary: makes `standby_name` (a standby connected to this cluster) the synchronous
  // standby, or none (asynchronous), with synchronous_commit on in both cases (the server's
  // default, which the test settings turn off; with it off, WAL reaches a standby only after
  // the WAL writer's next flush), through ALTER SYSTEM and a reload. Returns once
  // pg_stat_replication shows that standby streaming in that mode. Throws std::runtime_error
  // when it does not within the options' timeout.
  void require_standby(const std::string& standby_name, replication_mode mode);
  // On a standby: pg_ctl promote, returning once the server accepts writes.
  void promote();
  // pg_is_in_recovery(): true on a standby that has not been promoted.
  [[nodiscard]] bool in_recovery() const;

 private:
  void write_port_settings() const;
  bool try_start(std::string& failure);
  void make_standby_data(const temp_cluster& primary);
  [[nodiscard]] std::string log_tail() const;

  temp_cluster_options options_;
  std::string dir_;       // the temporary folder (owned by postgres)
  std::string data_dir_;  // dir_/data
  std::string log_file_;  // dir_/postgresql.log
  int port_ = 0;
  std::string primary_conninfo_;  // standbys: where they stream from
  std::atomic<bool> running_{false};
};

}  // namespace sluice::test
