#pragma once

// A private, throwaway PgBouncer for tests of sluice behind a connection pooler: started by the
// constructor in front of the server an open connection reaches, stopped by the destructor.
//
// It runs as the `postgres` OS user (PgBouncer refuses root), from a fresh folder like
// temp_cluster's, listening on 127.0.0.1 only, at a port that was free when it started, with
// auth_type trust for the backend connection's user (the test cluster trusts local
// connections) and `ignore_startup_parameters = extra_float_digits,options`. The admin console
// is the database "pgbouncer".
//
// Thread-safety: the accessors may be called from any thread; construction and destruction
// must not race with anything.
// Throws: std::runtime_error when PgBouncer is not installed (the message names the Debian
// package) or does not start (with its log tail).

#include <chrono>
#include <string>
#include <string_view>

#include "sluice/pg/connection.hpp"

namespace sluice::test {

struct temp_pgbouncer_options {
  std::string pool_mode = "transaction";  // session, transaction or statement
  int default_pool_size = 1;              // server connections per database and user
  std::chrono::seconds timeout{30};       // bound on start and stop
};

// Why a temp_pgbouncer cannot run here (no /usr/sbin/pgbouncer, no postgres user, ...); empty
// when it can.
[[nodiscard]] std::string temp_pgbouncer_unavailable_reason();

class temp_pgbouncer {
 public:
  // Starts PgBouncer in front of the server `backend` is connected to (its host or socket
  // directory, port and user; every database name is passed on).
  explicit temp_pgbouncer(const pg::connection& backend, temp_pgbouncer_options options = {});
  temp_pgbouncer(const temp_pgbouncer&) = delete;
  temp_pgbouncer& operator=(const temp_pgbouncer&) = delete;
  temp_pgbouncer(temp_pgbouncer&&) = delete;
  temp_pgbouncer& operator=(temp_pgbouncer&&) = delete;
  // Stops PgBouncer (SIGTERM, then SIGKILL if it lingers) and removes the folder. Never throws.
  ~temp_pgbouncer();

  [[nodiscard]] int port() const noexcept { return port_; }
  // "host=127.0.0.1 port=N user=<backend user> dbname=<dbname>"; by default the backend's.
  [[nodiscard]] std::string conninfo(std::string_view dbname = {}) const;
  // The admin console (SHOW POOLS, RECONNECT, ...): the "pgbouncer" database.
  [[nodiscard]] std::string admin_conninfo() const { return conninfo("pgbouncer"); }

 private:
  bool try_start(std::string& failure);
  void stop() noexcept;
  [[nodiscard]] std::string log_tail() const;

  temp_pgbouncer_options options_;
  std::string backend_host_;
  std::string backend_port_;
  std::string user_;
  std::string dbname_;
  std::string dir_;
  int port_ = 0;
  int pid_ = 0;
};

}  // namespace sluice::test
