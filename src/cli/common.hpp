#pragma once

// What the operator subcommands (migrate, task, pools, cycles, doctor, bench scheduler) share:
// the common options, turning them into a configuration and a database connection, a small
// pool for the command's own statements, and plain-text tables.
//
// Exit codes: 0 success; 1 the command failed (the reason is printed on one line to stderr by
// run(), from the exception the command threw) or `doctor` found problems; CLI11's own codes
// (104-109) for a malformed command line.
//
// Thread-safety: the functions are thread-safe; a database_session belongs to one thread.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/config.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/store.hpp"

namespace sluice::cli {

// A command failed for a reason the operator can act on; what() is the one-line reason.
class command_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// --config, --database-url, --schema and --json as the command line gave them.
struct common_options {
  std::string config_file;   // empty: the defaults of an empty file
  std::string database_url;  // empty: the config's url, DATABASE_URL, then the PG* variables
  std::string schema;        // empty: the config's scheduler.schema, else "sluice"
  bool json = false;
};

// Adds the common options to `cmd`, writing into `opt` (which must outlive parsing). `json`:
// whether the command has a --json output; `schema`: whether it works in a chosen schema.
void add_common_options(CLI::App& cmd, common_options& opt, bool json = true, bool schema = true);

// The configuration the options resolve to: the file given (or the defaults of an empty file),
// with the environment applied, then --database-url and --schema on top. Throws config_error
// or command_error.
[[nodiscard]] daemon_config resolve_config(const common_options& opt);

// The conninfo every pool of `cfg` uses, for the command's own connections.
[[nodiscard]] std::string conninfo_of(const daemon_config& cfg);

// Opens one connection to the configured server, named `application_name` in
// pg_stat_activity. Throws pg::connection_error naming the server (never a password).
[[nodiscard]] pg::connection open_connection(const daemon_config& cfg,
                                             const std::string& application_name);

// A one-connection pool and a store over it, for a command's own statements. Connecting
// fails fast: the constructor opens a probe connection first, so an unreachable server is
// reported at once with libpq's reason instead of after the pool's acquire timeout.
class database_session {
 public:
  explicit database_session(const daemon_config& cfg, std::string application_name = "sluice/cli");
  database_session(const database_session&) = delete;
  database_session& operator=(const database_session&) = delete;
  database_session(database_session&&) = delete;
  database_session& operator=(database_session&&) = delete;
  ~database_session();

  [[nodiscard]] pool::pool& lane() noexcept { return *lane_; }
  [[nodiscard]] sched::store& store() noexcept { return *store_; }

 private:
  std::unique_ptr<pool::pool> lane_;
  std::unique_ptr<sched::store> store_;
};

// A plain-text table: a header row and left-aligned columns separated by two spaces. Cells
// longer than `max_cell` characters are cut with "...".
class text_table {
 public:
  explicit text_table(std::vector<std::string> headers, std::size_t max_cell = 60);
  void add(std::vector<std::string> cells);
  [[nodiscard]] bool empty() const noexcept { return rows_.empty(); }
  void print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
  std::size_t max_cell_;
};

// "2026-05-01 12:00:03Z" style (UTC, seconds), "-" for nullopt.
[[nodiscard]] std::string format_time(std::optional<std::chrono::system_clock::time_point> t);
// "250ms", "1.5s", "2m30s", "1h".
[[nodiscard]] std::string format_ms(std::chrono::milliseconds d);
// A duration for an option: a bare number is seconds ("90"), else the config file's syntax
// ("500ms", "30s", "1m30s"). Throws command_error naming `option`.
[[nodiscard]] std::chrono::milliseconds parse_duration_option(std::string_view text,
                                                              std::string_view option);
// Parses a positive task id; throws command_error ("task id: 'x' is not a number").
[[nodiscard]] std::int64_t parse_task_id(std::string_view text);

}  // namespace sluice::cli
