#pragma once

// Helpers for tests that run against a real PostgreSQL. The server comes from DATABASE_URL when
// set, else from libpq's defaults and the standard PG* variables (scripts/test sets them).
// Each helper opens its own short-lived connection, so none of them shows up in the counts of
// another test's connections. Thread-safety: every function may be called from any thread.

#include <chrono>
#include <string>
#include <string_view>

#include "sluice/pg/connection.hpp"

namespace sluice::test {

// DATABASE_URL if set, else empty (libpq then reads PGHOST, PGPORT, PGDATABASE, PGUSER, ...).
[[nodiscard]] std::string test_conninfo();

// Opens a connection to the test database. Throws pg::connection_error when none is reachable:
// integration tests fail, they never skip.
[[nodiscard]] pg::connection test_connect(std::string app_name = "sluice-test");

// True when a connection can be opened and answers SELECT 1.
[[nodiscard]] bool database_available();

// Number of pg_stat_activity rows whose application_name is LIKE the pattern, not counting
// the connection that asks.
[[nodiscard]] int count_backends(std::string_view application_name_like);

// Polls count_backends() until it equals `expected` or `timeout` passes (backends exit a
// moment after their client disconnects, and no signal says when). Returns the last count.
int wait_for_backends(std::string_view application_name_like, int expected,
                      std::chrono::milliseconds timeout = std::chrono::seconds(10));

// A TCP port on 127.0.0.1 that nothing listens on (the kernel just handed it out and it was
// released again), for tests of refused connections.
[[nodiscard]] int unused_local_port();

// A short string unique to this process and call, for names shared across the cluster
// (roles, channels): "<pid>_<counter>_<random>".
[[nodiscard]] std::string unique_suffix();

// A uniquely named schema (e.g. "sluice_t_12345_1_9f3a"), created by the constructor and
// dropped with CASCADE by the destructor, so tests can run in parallel without seeing each
// other's tables. Not copyable or movable.
class scoped_schema {
 public:
  // `prefix`: lower-case letters, digits and '_' (the name is used unquoted).
  explicit scoped_schema(std::string_view prefix = "sluice_t");
  scoped_schema(const scoped_schema&) = delete;
  scoped_schema& operator=(const scoped_schema&) = delete;
  ~scoped_schema();

  // A plain lower-case identifier; needs no quoting.
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  // "<schema>.<object>", for use in SQL text.
  [[nodiscard]] std::string qualified(std::string_view object) const;
  // Puts the schema first on the connection's search_path (session setting).
  void use(pg::connection& conn) const;

 private:
  std::string name_;
};

}  // namespace sluice::test
