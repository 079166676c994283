#pragma once

// The daemon's configuration: a TOML file read once at start (and again on SIGHUP), with
// environment variables applied on top, checked as a whole before anything connects.
// docs/configuration.md lists every setting with its unit, default and advice.
//
// Everything here is a value type: parse once, then read from any thread. Loading throws
// config_error and nothing else (apart from std::bad_alloc); its message names the file, the
// key path, the line when known, and what to change. Messages and to_json_redacted() never
// contain a password or the API token.

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/log.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/settings.hpp"
#include "sluice/sched/flow.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/sched/scheduler.hpp"

namespace sluice::cli {

// The configuration is unusable. what() reads
//   "<source>:<line>:<column>: <key.path>: <reason>"
// with the position left out when there is none, and the key left out for errors of the file
// as a whole (unreadable, TOML syntax). A bad environment variable reads
//   "<source>: environment variable <NAME>: <reason>".
class config_error : public std::runtime_error {
 public:
  config_error(std::string source, std::string key, std::string reason, int line = 0,
               int column = 0);
  // An error in environment variable `variable`; key() is then the variable's name.
  [[nodiscard]] static config_error environment(std::string source, std::string variable,
                                                std::string reason);

  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  // Dotted path such as "pools.platform.size", or the environment variable's name.
  [[nodiscard]] const std::string& key() const noexcept { return key_; }
  [[nodiscard]] const std::string& reason() const noexcept { return reason_; }
  [[nodiscard]] int line() const noexcept { return line_; }  // 1-based; 0: unknown
  [[nodiscard]] int column() const noexcept { return column_; }
  [[nodiscard]] bool from_environment() const noexcept { return from_environment_; }

 private:
  std::string source_;
  std::string key_;
  std::string reason_;
  int line_ = 0;
  int column_ = 0;
  bool from_environment_ = false;
};

// Reads one environment variable; nullopt when it is unset. Tests pass a fake.
using env_lookup = std::function<std::optional<std::string>(std::string_view)>;

// The process environment (getenv). Empty values count as unset everywhere in this file.
[[nodiscard]] env_lookup process_environment();

// The scheduler's lane (its own small pool) is configured under [scheduler.lane] and is named
// this in the pool manager; [pools.scheduler] is therefore refused.
inline constexpr std::string_view lane_pool_name = "scheduler";

enum class log_format { text, json };
// The library's levels (sluice/log.hpp), whose to_string() names them.
using log_level = sluice::log_level;
[[nodiscard]] std::string_view to_string(log_format f) noexcept;

struct database_config {
  // conninfo string or URI shared by every pool without a url of its own. Empty: libpq reads
  // PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSERVICE, ... itself.
  std::string url;
  std::chrono::milliseconds connect_timeout = std::chrono::seconds(10);
  std::optional<std::chrono::milliseconds> statement_timeout;  // nullopt: the server's setting
  std::string application_name_prefix = "sluice";              // pools connect as "<prefix>/<pool>"
  std::optional<int> connection_budget;  // most server connections this process may hold
};

struct http_config {
  std::string address = "127.0.0.1";
  int port = 8080;                   // 0: the operating system picks a free port
  std::string token;                 // bearer token for mutating calls; empty: they are refused
  std::filesystem::path token_file;  // where token came from, if from a file (absolute)
  std::size_t max_body_bytes = 1024 * 1024;
  // Limits on clients (docs/api.md#limits); the defaults are http::transport_limits'.
  std::size_t max_connections = 1024;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_header_count = 100;
  std::size_t max_buffered_body_bytes = std::size_t{64} * 1024 * 1024;
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);
  std::chrono::milliseconds body_timeout = std::chrono::seconds(30);
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::milliseconds write_timeout = std::chrono::seconds(30);
  std::chrono::milliseconds history = std::chrono::hours(1);  // in-memory pool history kept
  std::chrono::milliseconds sample_interval = std::chrono::seconds(5);
  // Host names the Host header may carry besides IP literals and localhost; "*": any.
  std::vector<std::string> allowed_hosts;
};

struct commands_config {
  // Absolute paths of the executables command tasks may run, as written (not resolved), in
  // file order without duplicates. Each existed and was executable when the file was loaded.
  std::vector<std::string> allow;
  std::chrono::milliseconds default_timeout = std::chrono::seconds(60);
  std::size_t max_output_bytes = 64 * 1024;  // stdout and stderr each, kept per run
  // Environment variables a task's env may set; empty: any name sched::never_allowed_env()
  // does not refuse. None of those may be listed.
  std::vector<std::string> allowed_env;
  std::string path = "/usr/bin:/bin";  // the PATH commands get; absolute directories
};

struct http_tasks_config {
  // Networks HTTP tasks may connect to besides public addresses, as written ("127.0.0.1/32"),
  // in file order without duplicates; every entry parsed with sched::parse_ip_network.
  std::vector<std::string> allow_networks;
  // The secret that signs every request (Sluice-Signature); empty: requests are not signed.
  std::string signing_secret;
  std::string signing_secret_env;  // the variable signing_secret came from, if from one
  // [http_tasks.signing_keys]: name -> the environment variable holding that key's secret.
  std::map<std::string, std::string> signing_keys_env;
  std::map<std::string, std::string> signing_keys;  // name -> secret, read from those variables

  [[nodiscard]] sched::http_policy policy() const;
};

// The handlers `sluice serve` has built in; every task type it runs is one of these or an alias
// of one ([types.NAME]).
inline constexpr std::string_view builtin_handlers[] = {"command", "http", "noop", "sql"};

// [types.NAME]: a task type of the user's own (the seed's "oauth_token_check", say) that one of
// the built-in handlers runs. Tasks of that type are claimed, limited by
// [scheduler.concurrency] and counted under their own name, and their payload has the handler's
// format and is checked by the handler's rules.
// Defaults of a [types.NAME] alias for the task settings a new task does not give itself
// (through the API's POST /api/v1/tasks or `sluice task add`). Unset: the general defaults.
struct task_defaults {
  std::optional<int> priority;
  std::optional<int> max_attempts;
  std::optional<std::chrono::milliseconds> timeout;
  std::optional<std::chrono::milliseconds> backoff_base;
  std::optional<std::chrono::milliseconds> backoff_cap;
};

struct task_type_alias {
  std::string name;     // the task type, 1 to 100 of A-Z a-z 0-9 _ . : - and not a built-in
  std::string handler;  // one of builtin_handlers
  task_defaults defaults;
};

// [flow.TYPE]: a fleet-wide limit of a task type, enforced in the database for every node
// (docs/flow-control.md).
struct flow_config {
  std::string type;  // set before the keys are read
  std::optional<int> max_running;
  std::optional<int> rate;
  std::chrono::milliseconds rate_period{0};
  std::string key;
  [[nodiscard]] sched::flow_limit limit() const;
};

struct log_config {
  log_format format = log_format::text;
  log_level level = log_level::info;
};

// The whole configuration, every default filled in and every override applied.
struct daemon_config {
  std::string source;  // file name (or the name given to parse_config), for messages
  database_config database;
  // Named pools sorted by name, each complete: conninfo, application_name and timeouts already
  // inherited from [database], environment overrides applied. Never empty: a file without
  // [pools] gets one pool named "default".
  std::vector<pool::settings> pools;
  pool::settings lane;                  // the scheduler's lane, named lane_pool_name
  sched::scheduler_settings scheduler;  // connection_budget is connections_needed()
  http_config http;
  commands_config commands;
  http_tasks_config http_tasks;
  std::vector<task_type_alias> types;  // [types.NAME], sorted by name
  // [flow.TYPE], sorted by type. Unset when the file has no [flow] table: the limits in the
  // database are then left as they are (a node without the section does not lift the fleet's
  // limits); an empty [flow] table removes them all.
  std::optional<std::vector<flow_config>> flow;
  [[nodiscard]] std::map<std::string, sched::flow_limit> flow_limits() const;
  log_config log;
  std::vector<std::string> environment_applied;  // the variables that changed something, sorted

  // Most server connections the process can hold: size + max_overflow over the pools and the
  // lane, plus one for LISTEN when scheduler.listen is on.
  [[nodiscard]] int connections_needed() const noexcept;
  [[nodiscard]] int dedicated_connections() const noexcept { return scheduler.listen ? 1 : 0; }
  // The terms of connections_needed() as the messages and the log name them:
  // "platform 5+10", ..., "scheduler lane 2+1", "LISTEN 1".
  [[nodiscard]] std::vector<std::string> connection_terms() const;

  [[nodiscard]] pool::manager_settings manager_settings() const;
  // The named pools followed by the lane: everything to add() to the pool manager.
  [[nodiscard]] std::vector<pool::settings> pool_settings() const;
  [[nodiscard]] sched::scheduler_settings scheduler_settings() const { return scheduler; }
  // The named pool, or nullptr.
  [[nodiscard]] const pool::settings* find_pool(std::string_view name) const noexcept;
  // The built-in handler that runs tasks of `type`: the type itself when it is a built-in, its
  // alias's handler, or nullopt when this configuration runs no such type.
  [[nodiscard]] std::optional<std::string> handler_of(std::string_view type) const;
  // Sets in `spec` the defaults that [types.<spec.type>] gives (nothing for other types). Call
  // it on a new spec whose type is set, before the settings the task gives itself.
  void apply_type_defaults(sched::task_spec& spec) const { apply_alias_defaults(types, spec); }
  static void apply_alias_defaults(const std::vector<task_type_alias>& aliases,
                                   sched::task_spec& spec);

  // Everything above as JSON, for `sluice serve --print-config`: passwords removed from every
  // conninfo, the token replaced by whether one is set, durations as strings ("30s", "1m30s").
  [[nodiscard]] std::string to_json_redacted() const;
};

// Reads and checks `file`, then applies the environment. Throws config_error.
[[nodiscard]] daemon_config load_config(const std::filesystem::path& file, const env_lookup& env);
// The same for text already in memory; `source_name` appears in messages, and a relative
// token_file is read relative to the current directory. Throws config_error.
[[nodiscard]] daemon_config parse_config(std::string_view toml_text, std::string_view source_name,
                                         const env_lookup& env);

// Whether SIGHUP applies a change of `key` at once, a dotted path as in to_json_redacted()
// ("log.level", "commands.allow", "pools.platform.size"); every other key needs a restart.
[[nodiscard]] bool reloadable(std::string_view key);

// The reference table of every key (Markdown), as docs/configuration.md holds it.
[[nodiscard]] std::string config_reference();

// Durations as the file writes them: groups of a whole number and a unit, units d, h, m, s, ms
// largest first and each at most once ("500ms", "30s", "1m30s", "2h", "1d12h"). A bare number
// is refused (in the file a bare TOML integer means seconds). Throws std::invalid_argument.
[[nodiscard]] std::chrono::milliseconds parse_duration(std::string_view text);
// The inverse: largest units first, zero units left out, "0s" for zero.
[[nodiscard]] std::string format_duration(std::chrono::milliseconds d);

}  // namespace sluice::cli
