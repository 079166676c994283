// The daemon's configuration file: defaults, every section, every kind of error, environment
// overrides, and that no password or token ever leaves through a message or --print-config.

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/config.hpp"

namespace {

using namespace std::chrono_literals;
using sluice::cli::config_error;
using sluice::cli::daemon_config;
using sluice::cli::env_lookup;
using sluice::cli::format_duration;
using sluice::cli::load_config;
using sluice::cli::parse_config;
using sluice::cli::parse_duration;

env_lookup fake_env(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    const auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

daemon_config parse(std::string_view text, std::map<std::string, std::string> env = {}) {
  return parse_config(text, "test.toml", fake_env(std::move(env)));
}

// Parses `text`, expecting a config_error whose message contains `fragment`; returns it.
config_error parse_error(std::string_view text, const std::string& fragment,
                         std::map<std::string, std::string> env = {}) {
  try {
    (void)parse(text, std::move(env));
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << fragment;
    return e;
  }
  ADD_FAILURE() << "no config_error; expected one containing: " << fragment;
  return config_error("", "", "");
}

bool contains(const std::string& haystack, std::string_view needle) {
  return haystack.find(needle) != std::string::npos;
}

// A scratch directory removed at the end of the test.
class scratch_dir {
 public:
  scratch_dir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "sluice-config-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  std::filesystem::path write(const std::string& name, const std::string& content,
                              mode_t mode = 0644) const {
    const auto file = path_ / name;
    std::ofstream(file) << content;
    ::chmod(file.c_str(), mode);
    return file;
  }

 private:
  std::filesystem::path path_;
};

TEST(ConfigDuration, ParsesUnitsLargestFirst) {
  EXPECT_EQ(parse_duration("500ms"), 500ms);
  EXPECT_EQ(parse_duration("30s"), 30s);
  EXPECT_EQ(parse_duration("30m"), 30min);
  EXPECT_EQ(parse_duration("1h"), 1h);
  EXPECT_EQ(parse_duration("2d"), 48h);
  EXPECT_EQ(parse_duration("1m30s"), 90s);
  EXPECT_EQ(parse_duration("1d2h3m4s5ms"), 24h + 2h + 3min + 4s + 5ms);
  EXPECT_EQ(parse_duration("0s"), 0ms);
  EXPECT_EQ(parse_duration("1s500ms"), 1500ms);
}

TEST(ConfigDuration, RefusesMalformedText) {
  for (const char* bad : {"", "30", "30 s", "s", "1s1m", "1m1m", "5y", "1.5s", "-1s", "1h ",
                          "9999999999999s", "400d"}) {
    EXPECT_THROW((void)parse_duration(bad), std::invalid_argument) << bad;
  }
  try {
    (void)parse_duration("30");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_TRUE(contains(e.what(), "unit is missing")) << e.what();
  }
}

TEST(ConfigDuration, FormatsLargestUnitsFirst) {
  EXPECT_EQ(format_duration(0ms), "0s");
  EXPECT_EQ(format_duration(500ms), "500ms");
  EXPECT_EQ(format_duration(90s), "1m30s");
  EXPECT_EQ(format_duration(30min), "30m");
  EXPECT_EQ(format_duration(25h + 1ms), "1d1h1ms");
  for (const std::chrono::milliseconds d : {1ms, 1500ms, 90000ms, 10800000ms, 176407000ms})
    EXPECT_EQ(parse_duration(format_duration(d)), d);
}

TEST(Config, EmptyFileGivesDefaults) {
  const auto c = parse("");
  ASSERT_EQ(c.pools.size(), 1u);
  const auto& p = c.pools[0];
  EXPECT_EQ(p.name, "default");
  EXPECT_EQ(p.size, 5);
  EXPECT_EQ(p.max_overflow, 10);
  EXPECT_EQ(p.recycle, 30min);
  EXPECT_EQ(p.timeout, 30s);
  EXPECT_EQ(p.conninfo, "");
  EXPECT_EQ(p.effective_application_name(), "sluice/default");
  EXPECT_FALSE(p.statement_timeout.has_value());

  EXPECT_EQ(c.lane.name, "scheduler");
  EXPECT_EQ(c.lane.size, 2);
  EXPECT_EQ(c.lane.max_overflow, 1);

  EXPECT_EQ(c.scheduler.schema, "sluice");
  EXPECT_EQ(c.scheduler.workers, 8);
  EXPECT_TRUE(c.scheduler.listen);
  EXPECT_TRUE(c.scheduler.concurrency.empty());

  EXPECT_EQ(c.http.address, "127.0.0.1");
  EXPECT_EQ(c.http.port, 8080);
  EXPECT_EQ(c.http.token, "");
  EXPECT_EQ(c.http.max_body_bytes, 1024u * 1024u);
  EXPECT_EQ(c.http.max_connections, 1024u);
  EXPECT_EQ(c.http.max_header_bytes, 16u * 1024u);
  EXPECT_EQ(c.http.max_header_count, 100u);
  EXPECT_EQ(c.http.max_buffered_body_bytes, 64u * 1024u * 1024u);
  EXPECT_EQ(c.http.header_timeout, 10s);
  EXPECT_EQ(c.http.body_timeout, 30s);
  EXPECT_EQ(c.http.idle_timeout, 60s);
  EXPECT_EQ(c.http.write_timeout, 30s);
  EXPECT_EQ(c.http.history, 1h);
  EXPECT_EQ(c.http.sample_interval, 5s);
  EXPECT_TRUE(c.http.allowed_hosts.empty());

  EXPECT_TRUE(c.commands.allow.empty());
  EXPECT_EQ(c.log.format, sluice::cli::log_format::text);
  EXPECT_EQ(c.log.level, sluice::cli::log_level::info);
  EXPECT_TRUE(c.environment_applied.empty());

  // 5 + 10 (default pool) + 2 + 1 (lane) + 1 (LISTEN).
  EXPECT_EQ(c.connections_needed(), 19);
  EXPECT_EQ(c.scheduler_settings().connection_budget, 19);
  const auto m = c.manager_settings();
  EXPECT_FALSE(m.connection_budget.has_value());
  EXPECT_EQ(m.dedicated_connections, 1);
  const auto all = c.pool_settings();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all.back().name, "scheduler");
}

constexpr std::string_view full_config = R"toml(
[database]
url = "host=db.internal dbname=app user=sluice"
connect_timeout = "3s"
statement_timeout = "15s"
application_name_prefix = "acme"
connection_budget = 50

[pools.platform]
size = 4
max_overflow = 6
timeout = 20
recycle = "1h"
recycle_jitter = 0.1
idle_timeout = "5m"
min_idle = 2
pre_ping = false
pre_ping_window = "250ms"
reset_on_return = "discard_all"
leak_threshold = "1m30s"
lifo = false
connect_timeout = "2s"
statement_timeout = "0s"
application_name = "platform-app"
statement_cache = 0
connect_backoff_initial = "50ms"
connect_backoff_max = "2s"
housekeeping_interval = "500ms"

[pools.user_data]
url = "postgresql://reader@replica:5433/users"

[scheduler]
schema = "jobs"
node_id = "node-a"
workers = 6
claim_batch = 50
poll_interval = "250ms"
idle_poll_max = "10s"
heartbeat_interval = "1s"
node_expiry = "5s"
stop_grace = "20s"
stuck_grace = "3s"
run_retention = "14d"
cycle_retention = "36h"
task_retention = "30d"
listen = true
listen_url = "host=db.direct dbname=app"

[scheduler.concurrency]
website_analysis = 4
"oauth.token:check" = 1

[scheduler.lane]
size = 3
max_overflow = 0
timeout = "5s"

[http]
address = "0.0.0.0"
port = 9090
token = "0123456789abcdef0123"
max_body_bytes = "2MiB"
max_connections = 200
max_header_bytes = "32KiB"
max_header_count = 50
max_buffered_body_bytes = "16MiB"
header_timeout = "5s"
body_timeout = "20s"
idle_timeout = "2m"
write_timeout = 15
history = "30m"
sample_interval = "10s"
allowed_hosts = ["sched.internal", "*"]

[commands]
allow = ["/usr/bin/true", "/usr/bin/false", "/usr/bin/true"]
default_timeout = "2m"
max_output_bytes = 4096

[log]
format = "json"
level = "debug"
)toml";

TEST(Config, EverySectionIsRead) {
  const auto c = parse(full_config);
  EXPECT_EQ(c.database.url, "host=db.internal dbname=app user=sluice");
  EXPECT_EQ(c.database.connect_timeout, 3s);
  EXPECT_EQ(c.database.statement_timeout, 15s);
  EXPECT_EQ(c.database.application_name_prefix, "acme");
  EXPECT_EQ(c.database.connection_budget, 50);

  ASSERT_EQ(c.pools.size(), 2u);
  const auto* platform = c.find_pool("platform");
  ASSERT_NE(platform, nullptr);
  EXPECT_EQ(platform->conninfo, "host=db.internal dbname=app user=sluice");
  EXPECT_EQ(platform->size, 4);
  EXPECT_EQ(platform->max_overflow, 6);
  EXPECT_EQ(platform->timeout, 20s);
  EXPECT_EQ(platform->recycle, 1h);
  EXPECT_DOUBLE_EQ(platform->recycle_jitter, 0.1);
  EXPECT_EQ(platform->idle_timeout, 5min);
  EXPECT_EQ(platform->min_idle, 2);
  EXPECT_FALSE(platform->pre_ping);
  EXPECT_EQ(platform->pre_ping_window, 250ms);
  EXPECT_EQ(platform->reset_on_return, sluice::pool::reset_mode::discard_all);
  EXPECT_EQ(platform->leak_threshold, 90s);
  EXPECT_FALSE(platform->lifo);
  EXPECT_EQ(platform->connect_timeout, 2s);
  EXPECT_EQ(platform->statement_timeout, 0ms);
  EXPECT_EQ(platform->application_name, "platform-app");
  EXPECT_EQ(platform->statement_cache, 0u);
  EXPECT_EQ(platform->connect_backoff_initial, 50ms);
  EXPECT_EQ(platform->connect_backoff_max, 2s);
  EXPECT_EQ(platform->housekeeping_interval, 500ms);

  // [database] passes url, timeouts and the name prefix on to pools that do not set their own.
  const auto* user_data = c.find_pool("user_data");
  ASSERT_NE(user_data, nullptr);
  EXPECT_EQ(user_data->conninfo, "postgresql://reader@replica:5433/users");
  EXPECT_EQ(user_data->connect_timeout, 3s);
  EXPECT_EQ(user_data->statement_timeout, 15s);
  EXPECT_EQ(user_data->effective_application_name(), "acme/user_data");
  EXPECT_EQ(user_data->size, 5);

  const auto s = c.scheduler_settings();
  EXPECT_EQ(s.schema, "jobs");
  EXPECT_EQ(s.node_id, "node-a");
  EXPECT_EQ(s.workers, 6);
  EXPECT_EQ(s.claim_batch, 50);
  EXPECT_EQ(s.poll_interval, 250ms);
  EXPECT_EQ(s.idle_poll_max, 10s);
  EXPECT_EQ(s.heartbeat_interval, 1s);
  EXPECT_EQ(s.node_expiry, 5s);
  EXPECT_EQ(s.stop_grace, 20s);
  EXPECT_EQ(s.stuck_grace, 3s);
  EXPECT_EQ(s.run_retention, std::chrono::hours(24 * 14));
  EXPECT_EQ(s.cycle_retention, 36h);
  EXPECT_EQ(s.task_retention, std::chrono::hours(24 * 30));
  EXPECT_TRUE(s.listen);
  EXPECT_EQ(s.listen_conninfo, "host=db.direct dbname=app");
  EXPECT_EQ(s.concurrency,
            (std::map<std::string, int>{{"oauth.token:check", 1}, {"website_analysis", 4}}));
  // 4 + 6 + 5 + 10 + 3 + 0 + 1.
  EXPECT_EQ(s.connection_budget, 29);

  EXPECT_EQ(c.lane.size, 3);
  EXPECT_EQ(c.lane.max_overflow, 0);
  EXPECT_EQ(c.lane.timeout, 5s);
  EXPECT_EQ(c.lane.conninfo, "host=db.internal dbname=app user=sluice");
  EXPECT_EQ(c.lane.effective_application_name(), "acme/scheduler");

  EXPECT_EQ(c.http.address, "0.0.0.0");
  EXPECT_EQ(c.http.port, 9090);
  EXPECT_EQ(c.http.token, "0123456789abcdef0123");
  EXPECT_EQ(c.http.max_body_bytes, 2u * 1024u * 1024u);
  EXPECT_EQ(c.http.max_connections, 200u);
  EXPECT_EQ(c.http.max_header_bytes, 32u * 1024u);
  EXPECT_EQ(c.http.max_header_count, 50u);
  EXPECT_EQ(c.http.max_buffered_body_bytes, 16u * 1024u * 1024u);
  EXPECT_EQ(c.http.header_timeout, 5s);
  EXPECT_EQ(c.http.body_timeout, 20s);
  EXPECT_EQ(c.http.idle_timeout, 2min);
  EXPECT_EQ(c.http.write_timeout, 15s);
  EXPECT_EQ(c.http.history, 30min);
  EXPECT_EQ(c.http.sample_interval, 10s);
  EXPECT_EQ(c.http.allowed_hosts, (std::vector<std::string>{"sched.internal", "*"}));

  EXPECT_EQ(c.commands.allow, (std::vector<std::string>{"/usr/bin/true", "/usr/bin/false"}));
  EXPECT_EQ(c.commands.default_timeout, 2min);
  EXPECT_EQ(c.commands.max_output_bytes, 4096u);

  EXPECT_EQ(c.log.format, sluice::cli::log_format::json);
  EXPECT_EQ(c.log.level, sluice::cli::log_level::debug);

  EXPECT_EQ(c.manager_settings().connection_budget, 50);
}

TEST(Config, UnknownKeyNamesPathAndLineAndSuggests) {
  const auto e = parse_error("[pools.platform]\nsize = 5\nsise = 6\n", "did you mean 'size'?");
  EXPECT_EQ(e.key(), "pools.platform.sise");
  EXPECT_EQ(e.line(), 3);
  EXPECT_EQ(e.source(), "test.toml");
  EXPECT_TRUE(contains(e.what(), "test.toml:3:")) << e.what();
  EXPECT_TRUE(contains(e.what(), "unknown key")) << e.what();
}

TEST(Config, UnknownKeysAreFoundInEverySection) {
  EXPECT_EQ(parse_error("[pool.platform]\nsize = 5\n", "did you mean 'pools'?").key(), "pool");
  EXPECT_EQ(parse_error("[database]\nulr = \"\"\n", "did you mean 'url'?").key(), "database.ulr");
  EXPECT_EQ(parse_error("[scheduler]\nworkres = 3\n", "did you mean 'workers'?").key(),
            "scheduler.workres");
  EXPECT_EQ(
      parse_error("[scheduler.lane]\nmax_overflo = 3\n", "did you mean 'max_overflow'?").key(),
      "scheduler.lane.max_overflo");
  EXPECT_EQ(parse_error("[http]\nprot = 1\n", "did you mean 'port'?").key(), "http.prot");
  EXPECT_EQ(parse_error("[commands]\nallowed = []\n", "did you mean 'allow'?").key(),
            "commands.allowed");
  EXPECT_EQ(parse_error("[log]\nlevle = \"info\"\n", "did you mean 'level'?").key(), "log.levle");
  // Nothing close: the known keys are listed instead.
  const auto e = parse_error("[log]\ncolour = true\n", "known keys in [log]: format, level");
  EXPECT_EQ(e.key(), "log.colour");
}

TEST(Config, WrongTypeNamesBothTypes) {
  auto e = parse_error("[pools.platform]\nsize = \"5\"\n", "expected a whole number, got a string");
  EXPECT_EQ(e.key(), "pools.platform.size");
  EXPECT_EQ(e.line(), 2);
  parse_error("[pools.platform]\npre_ping = 1\n", "expected true or false, got a whole number");
  parse_error("[pools.platform]\ntimeout = 1.5\n", "expected a duration");
  parse_error("[database]\nurl = 5\n", "expected a string, got a whole number");
  parse_error("[commands]\nallow = \"/usr/bin/true\"\n", "expected an array");
  parse_error("[commands]\nallow = [1]\n", "commands.allow[0]: expected a string");
  parse_error("pools = 3\n", "expected a table");
  parse_error("[pools]\nplatform = 3\n", "expected a table ([pools.platform])");
  parse_error("[scheduler.concurrency]\nsql = \"2\"\n", "expected a whole number of handlers");
}

TEST(Config, OutOfRangeValuesAreRefused) {
  auto e = parse_error("[pools.platform]\nsize = 0\n", "must be between 1 and 10000 (got 0)");
  EXPECT_EQ(e.key(), "pools.platform.size");
  parse_error("[pools.platform]\nrecycle_jitter = 0.9\n", "must be between 0 and 0.5");
  parse_error("[pools.platform]\ntimeout = -1\n", "must not be negative");
  parse_error("[pools.platform]\nstatement_cache = 100001\n", "must be between 0 and 100000");
  parse_error("[http]\nport = 70000\n", "http.port: must be between 0 and 65535");
  parse_error("[http]\nmax_body_bytes = 10\n", "must be between 1024 and");
  parse_error("[http]\nmax_connections = 0\n", "http.max_connections: must be between 16 and");
  parse_error("[http]\nmax_header_count = 2\n", "http.max_header_count: must be between 8");
  parse_error("[http]\nmax_header_bytes = \"2MiB\"\n", "http.max_header_bytes");
  parse_error("[http]\nheader_timeout = \"10ms\"\n", "http.header_timeout: must be between");
  parse_error("[http]\nidle_timeout = \"2h\"\n", "http.idle_timeout: must be between");
  parse_error("[http]\nmax_body_bytes = \"2MiB\"\nmax_buffered_body_bytes = \"1MiB\"\n",
              "must be at least max_body_bytes");
  parse_error("[http]\nhistory = \"7d\"\nsample_interval = \"100ms\"\n", "samples per pool");
  parse_error("[scheduler]\nworkers = 0\n", "scheduler.workers: must be between 1 and 1024");
  parse_error("[scheduler]\nheartbeat_interval = \"5s\"\nnode_expiry = \"7s\"\n",
              "at least 1.5 times heartbeat_interval (7s500ms), got 7s");
  parse_error("[scheduler]\nrun_retention = \"90m\"\n", "whole number of hours");
  parse_error("[scheduler]\ntask_retention = \"400d\"\n", "task_retention");
  parse_error("[http]\nallowed_hosts = \"sched.internal\"\n", "expected an array of host names");
  EXPECT_EQ(parse_error("[http]\nallowed_hosts = [\"ok\", 7]\n", "expected a string").key(),
            "http.allowed_hosts[1]");
  parse_error("[http]\nallowed_hosts = [\"http://sched.internal:8080\"]\n",
              "without scheme or port");
  e = parse_error("[scheduler]\nworkers = 4\n[scheduler.concurrency]\nsql = 5\n",
                  "between 1 and scheduler.workers (4), got 5");
  EXPECT_EQ(e.key(), "scheduler.concurrency.sql");
  parse_error("[log]\nlevel = \"verbose\"\n", "'verbose' is not one of debug, info, warn, error");
  parse_error("[pools.platform]\nreset_on_return = \"reset\"\n", "is not one of none, rollback");
}

TEST(Config, TypesMapCustomTaskTypesToBuiltInHandlers) {
  const auto c = parse(
      "[types.oauth_token_check]\nhandler = \"sql\"\n"
      "[types.\"site.analysis:v2\"]\nhandler = \"http\"\n"
      "[types.cleanup]\nhandler = \"command\"\n"
      "[scheduler.concurrency]\noauth_token_check = 2\n");
  ASSERT_EQ(c.types.size(), 3u);
  // Sorted by name.
  EXPECT_EQ(c.types[0].name, "cleanup");
  EXPECT_EQ(c.types[0].handler, "command");
  EXPECT_EQ(c.types[1].name, "oauth_token_check");
  EXPECT_EQ(c.types[1].handler, "sql");
  EXPECT_EQ(c.types[2].name, "site.analysis:v2");
  EXPECT_EQ(c.types[2].handler, "http");
  EXPECT_EQ(c.scheduler.concurrency.at("oauth_token_check"), 2);

  EXPECT_EQ(c.handler_of("oauth_token_check"), "sql");
  EXPECT_EQ(c.handler_of("site.analysis:v2"), "http");
  EXPECT_EQ(c.handler_of("noop"), "noop");  // the built-ins are their own handlers
  EXPECT_EQ(c.handler_of("sql"), "sql");
  EXPECT_EQ(c.handler_of("monitoring_task"), std::nullopt);

  const auto j = nlohmann::json::parse(c.to_json_redacted());
  EXPECT_EQ(j["types"]["oauth_token_check"]["handler"], "sql");
  EXPECT_EQ(j["types"]["cleanup"]["handler"], "command");

  // No [types]: no aliases, only the built-ins.
  const auto empty = parse("");
  EXPECT_TRUE(empty.types.empty());
  EXPECT_EQ(empty.handler_of("oauth_token_check"), std::nullopt);
  EXPECT_TRUE(nlohmann::json::parse(empty.to_json_redacted())["types"].empty());
}

TEST(Config, TypesCarryDefaultsForNewTasks) {
  const auto c = parse(
      "[types.oauth_token_check]\nhandler = \"sql\"\ntimeout = \"5s\"\nmax_attempts = 7\n"
      "priority = -3\nbackoff_base = \"250ms\"\nbackoff_cap = \"10s\"\n"
      "[types.site_analysis]\nhandler = \"http\"\n");
  sluice::sched::task_spec spec;
  spec.type = "oauth_token_check";
  c.apply_type_defaults(spec);
  EXPECT_EQ(spec.timeout, 5s);
  EXPECT_EQ(spec.max_attempts, 7);
  EXPECT_EQ(spec.priority, -3);
  EXPECT_EQ(spec.backoff_base, 250ms);
  EXPECT_EQ(spec.backoff_cap, 10s);
  // An alias without defaults, a built-in type and an unknown type keep the general defaults.
  const sluice::sched::task_spec general;
  for (const char* type : {"site_analysis", "sql", "nobody"}) {
    sluice::sched::task_spec s;
    s.type = type;
    c.apply_type_defaults(s);
    EXPECT_EQ(s.timeout, general.timeout) << type;
    EXPECT_EQ(s.max_attempts, general.max_attempts) << type;
    EXPECT_EQ(s.priority, general.priority) << type;
  }
  const auto j = nlohmann::json::parse(c.to_json_redacted());
  EXPECT_EQ(j["types"]["oauth_token_check"]["timeout"], "5s");
  EXPECT_EQ(j["types"]["oauth_token_check"]["max_attempts"], 7);
  EXPECT_FALSE(j["types"]["site_analysis"].contains("timeout"));

  auto e = parse_error("[types.t]\nhandler = \"sql\"\nmax_attempts = 0\n", "max_attempts");
  EXPECT_EQ(e.key(), "types.t.max_attempts");
  e = parse_error("[types.t]\nhandler = \"sql\"\ntimeout = \"0s\"\n", "timeout");
  EXPECT_EQ(e.key(), "types.t.timeout");
  e = parse_error("[types.t]\nhandler = \"sql\"\nbackoff_base = \"2h\"\n",
                  "backoff_cap (1h) must be at least backoff_base (2h)");
  EXPECT_EQ(e.key(), "types.t.backoff_base");
  e = parse_error("[types.t]\nhandler = \"sql\"\nbackoff_base = \"5s\"\nbackoff_cap = \"1s\"\n",
                  "must be at least backoff_base");
  EXPECT_EQ(e.key(), "types.t.backoff_cap");
}

TEST(Config, BadTypesNameTheKeyAndReason) {
  auto e = parse_error("[types.oauth_token_check]\nhandler = \"python\"\n",
                       "'python' is not a built-in handler (command, http, noop, sql)");
  EXPECT_EQ(e.key(), "types.oauth_token_check.handler");
  EXPECT_EQ(e.source(), "test.toml");
  EXPECT_EQ(e.line(), 2);

  e = parse_error("[types.a]\nhandler = \"sql\"\n[types.b]\nhandler = \"a\"\n",
                  "an alias cannot name another alias");
  EXPECT_EQ(e.key(), "types.b.handler");

  e = parse_error("[types.monitoring_task]\n", "missing: name the built-in handler");
  EXPECT_EQ(e.key(), "types.monitoring_task.handler");

  e = parse_error("[types.monitoring_task]\nhandler = 3\n", "expected a string, got a whole");
  EXPECT_EQ(e.key(), "types.monitoring_task.handler");

  e = parse_error("[types.monitoring_task]\nhandler = \"sql\"\ntimout = 5\n", "unknown key");
  EXPECT_EQ(e.key(), "types.monitoring_task.timout");

  e = parse_error("[types.sql]\nhandler = \"http\"\n", "is a built-in task type");
  EXPECT_EQ(e.key(), "types.sql");

  e = parse_error("[types]\n\"bad type\" = { handler = \"sql\" }\n",
                  "task types are 1 to 100 characters");
  EXPECT_EQ(e.key(), "types.bad type");
  parse_error("[types]\n\"" + std::string(101, 'a') + "\" = { handler = \"sql\" }\n",
              "task types are 1 to 100 characters");
  // 100 characters is still a valid type.
  EXPECT_EQ(
      parse("[types]\n\"" + std::string(100, 'a') + "\" = { handler = \"sql\" }\n").types.size(),
      1u);

  e = parse_error("types = 3\n", "expected a table");
  EXPECT_EQ(e.key(), "types");
  e = parse_error("[types]\noauth_token_check = \"sql\"\n",
                  "expected a table ([types.oauth_token_check])");
  EXPECT_EQ(e.key(), "types.oauth_token_check");
}

TEST(Config, CrossFieldPoolChecksNameTheKey) {
  // pool::validate's own rule (min_idle <= size), reported on the key it concerns.
  const auto e = parse_error("[pools.platform]\nsize = 2\n\nmin_idle = 3\n",
                             "min_idle must be between 0 and size (2)");
  EXPECT_EQ(e.key(), "pools.platform.min_idle");
  EXPECT_EQ(e.line(), 4);
  parse_error("[pools.platform]\nrecycle = \"500ms\"\n", "pools.platform.recycle: recycle must be");
  parse_error("[pools.p]\nconnect_backoff_initial = \"2s\"\nconnect_backoff_max = \"1s\"\n",
              "pools.p.connect_backoff_max:");
}

TEST(Config, MalformedDurationsAreRefused) {
  auto e = parse_error("[pools.platform]\ntimeout = \"30 s\"\n", "'30 s' is not a duration");
  EXPECT_EQ(e.key(), "pools.platform.timeout");
  EXPECT_EQ(e.line(), 2);
  parse_error("[pools.platform]\nrecycle = \"1800\"\n", "a unit is missing");
  parse_error("[scheduler]\npoll_interval = \"1s1m\"\n", "largest to smallest");
  parse_error("[http]\nhistory = \"1w\"\n", "unknown unit 'w'");
  parse_error("[pools.platform]\ntimeout = \"2d\"\n", "must be between 0s and 1d (got 2d)");
}

TEST(Config, TomlSyntaxErrorGivesLineAndColumn) {
  const auto e = parse_error("[http]\nport = 8080\naddress = \n", "TOML syntax error");
  EXPECT_EQ(e.line(), 3);
  EXPECT_GT(e.column(), 0);
  EXPECT_TRUE(e.key().empty());
  EXPECT_TRUE(contains(e.what(), "test.toml:3:")) << e.what();
  parse_error("[pools.platform\nsize = 5\n", "TOML syntax error");
  parse_error("[http]\nport = 1\nport = 2\n", "TOML syntax error");
}

TEST(Config, PoolNamesAreChecked) {
  parse_error("[pools.Platform]\n", "pool names are 1 to 63 characters");
  parse_error("[pools.\"a b\"]\n", "pool names are 1 to 63 characters");
  const auto e = parse_error("[pools.scheduler]\nsize = 1\n", "reserved for the scheduler's lane");
  EXPECT_EQ(e.key(), "pools.scheduler");
  const auto c = parse("[pools.web-1_a]\n");
  EXPECT_EQ(c.pools.at(0).name, "web-1_a");
}

TEST(Config, CommandsMustBeAbsoluteExistingExecutables) {
  const scratch_dir dir;
  const auto script = dir.write("not-executable.sh", "#!/bin/sh\n", 0644);
  auto e = parse_error("[commands]\nallow = [\"/usr/bin/true\", \"" + script.string() + "\"]\n",
                       "is not executable");
  EXPECT_EQ(e.key(), "commands.allow[1]");
  EXPECT_EQ(e.line(), 2);
  parse_error("[commands]\nallow = [\"" + (dir.path() / "missing").string() + "\"]\n",
              "does not exist");
  parse_error("[commands]\nallow = [\"" + dir.path().string() + "\"]\n", "not a regular file");
  parse_error("[commands]\nallow = [\"echo\"]\n", "not an absolute path");

  const auto runnable = dir.write("ok.sh", "#!/bin/sh\n", 0755);
  const auto c = parse("[commands]\nallow = [\"" + runnable.string() + "\"]\n");
  EXPECT_EQ(c.commands.allow, std::vector<std::string>{runnable.string()});
}

TEST(Config, CommandsEnvironmentRules) {
  auto c = parse(
      "[commands]\nallowed_env = [\"LOG_DIR\", \"TZ\", \"LOG_DIR\"]\n"
      "path = \"/opt/tools/bin:/usr/bin\"\n");
  EXPECT_EQ(c.commands.allowed_env, (std::vector<std::string>{"LOG_DIR", "TZ"}));
  EXPECT_EQ(c.commands.path, "/opt/tools/bin:/usr/bin");
  const auto j = nlohmann::json::parse(c.to_json_redacted());
  EXPECT_EQ(j["commands"]["allowed_env"], (nlohmann::json{"LOG_DIR", "TZ"}));
  EXPECT_EQ(j["commands"]["path"], "/opt/tools/bin:/usr/bin");

  c = parse("");
  EXPECT_TRUE(c.commands.allowed_env.empty());
  EXPECT_EQ(c.commands.path, "/usr/bin:/bin");

  // A variable no task may set cannot be allowed either: the file says why.
  auto e = parse_error("[commands]\nallowed_env = [\"TZ\", \"LD_PRELOAD\"]\n",
                       "'LD_PRELOAD' is not allowed: the dynamic loader reads it");
  EXPECT_EQ(e.key(), "commands.allowed_env[1]");
  EXPECT_EQ(e.line(), 2);
  parse_error("[commands]\nallowed_env = [\"PATH\"]\n", "commands.path");
  parse_error("[commands]\nallowed_env = [\"PYTHONPATH\"]\n", "an interpreter loads code");
  parse_error("[commands]\nallowed_env = [\"A=B\"]\n", "is not a valid variable name");
  parse_error("[commands]\nallowed_env = [3]\n", "commands.allowed_env[0]: expected a string");
  parse_error("[commands]\nallowed_env = \"TZ\"\n", "expected an array of environment variable");
  parse_error("[commands]\nallowed_env = []\n", "is empty");
  parse_error("[commands]\npath = \"\"\n", "must not be empty");
  parse_error("[commands]\npath = \"bin:/usr/bin\"\n", "must be absolute directories");
  parse_error("[commands]\npath = \"/usr/bin::/bin\"\n", "no empty entries");
  parse_error("[commands]\npath = \"/usr/bin:\"\n", "no empty entries");
}

constexpr std::string_view two_pools_only = R"toml(
[pools.platform]
size = 5
max_overflow = 10

[pools.user_data]
size = 5
max_overflow = 10
)toml";

TEST(Config, BudgetExceededGivesTheNumbers) {
  const std::string two_pools =
      "[database]\nconnection_budget = 20\n" + std::string(two_pools_only);
  const auto e = parse_error(two_pools, "more than the budget of 20");
  EXPECT_EQ(e.key(), "database.connection_budget");
  EXPECT_EQ(e.line(), 2);
  // 15 + 15 + 3 (lane) + 1 (LISTEN).
  EXPECT_TRUE(contains(e.what(), "34 server connections")) << e.what();
  EXPECT_TRUE(contains(e.what(), "platform 5+10")) << e.what();
  EXPECT_TRUE(contains(e.what(), "user_data 5+10")) << e.what();
  EXPECT_TRUE(contains(e.what(), "scheduler lane 2+1")) << e.what();
  EXPECT_TRUE(contains(e.what(), "LISTEN 1")) << e.what();

  // Exactly at the budget is fine; without LISTEN one connection less is needed.
  const auto c = parse("[database]\nconnection_budget = 34\n" + std::string(two_pools_only));
  EXPECT_EQ(c.connections_needed(), 34);
  const auto no_listen = parse("[database]\nconnection_budget = 33\n[scheduler]\nlisten = false\n" +
                               std::string(two_pools_only));
  EXPECT_EQ(no_listen.connections_needed(), 33);
  EXPECT_EQ(no_listen.manager_settings().dedicated_connections, 0);
}

TEST(Config, EnvironmentOverridesTheFile) {
  const std::string text =
      "[database]\nurl = \"dbname=fromfile\"\n"
      "[pools.platform]\nsize = 5\n"
      "[pools.user_data]\nurl = \"dbname=users\"\n"
      "[http]\nport = 8080\ntoken = \"file-token-0123456789\"\n";
  const auto c = parse(text, {{"DATABASE_URL", "postgresql://app@db/prod"},
                              {"DB_POOL_SIZE", "3"},
                              {"DB_MAX_OVERFLOW", "4"},
                              {"DB_POOL_RECYCLE", "1800"},
                              {"DB_POOL_TIMEOUT", "12"},
                              {"SLUICE_API_TOKEN", "env-token-abcdefghijkl"},
                              {"SLUICE_HTTP_PORT", "9999"},
                              {"PGHOST", "ignored-by-sluice"}});
  EXPECT_EQ(c.database.url, "postgresql://app@db/prod");
  const auto* platform = c.find_pool("platform");
  ASSERT_NE(platform, nullptr);
  EXPECT_EQ(platform->conninfo, "postgresql://app@db/prod");
  EXPECT_EQ(platform->size, 3);
  EXPECT_EQ(platform->max_overflow, 4);
  EXPECT_EQ(platform->recycle, 30min);
  EXPECT_EQ(platform->timeout, 12s);
  // A pool's own url wins over DATABASE_URL; the DB_POOL_* variables apply to every pool...
  const auto* user_data = c.find_pool("user_data");
  ASSERT_NE(user_data, nullptr);
  EXPECT_EQ(user_data->conninfo, "dbname=users");
  EXPECT_EQ(user_data->size, 3);
  // ...but not to the scheduler's lane.
  EXPECT_EQ(c.lane.size, 2);
  EXPECT_EQ(c.lane.max_overflow, 1);
  EXPECT_EQ(c.lane.conninfo, "postgresql://app@db/prod");
  EXPECT_EQ(c.http.token, "env-token-abcdefghijkl");
  EXPECT_EQ(c.http.port, 9999);
  EXPECT_EQ(c.connections_needed(), 7 + 7 + 3 + 1);
  EXPECT_EQ(c.environment_applied,
            (std::vector<std::string>{"DATABASE_URL", "DB_MAX_OVERFLOW", "DB_POOL_RECYCLE",
                                      "DB_POOL_SIZE", "DB_POOL_TIMEOUT", "SLUICE_API_TOKEN",
                                      "SLUICE_HTTP_PORT"}));

  // Empty variables count as unset.
  const auto unset = parse(text, {{"DB_POOL_SIZE", ""}, {"SLUICE_HTTP_PORT", ""}});
  EXPECT_EQ(unset.find_pool("platform")->size, 5);
  EXPECT_EQ(unset.http.port, 8080);
  EXPECT_TRUE(unset.environment_applied.empty());
}

TEST(Config, BadEnvironmentVariablesAreNamed) {
  auto e = parse_error("", "environment variable DB_POOL_SIZE: 'abc' is not a whole number",
                       {{"DB_POOL_SIZE", "abc"}});
  EXPECT_TRUE(e.from_environment());
  EXPECT_EQ(e.key(), "DB_POOL_SIZE");
  parse_error("", "environment variable DB_MAX_OVERFLOW", {{"DB_MAX_OVERFLOW", "-1"}});
  parse_error("", "environment variable SLUICE_HTTP_PORT: '99999' is not a port number",
              {{"SLUICE_HTTP_PORT", "99999"}});
  parse_error("", "environment variable SLUICE_API_TOKEN: the token is 5 characters long",
              {{"SLUICE_API_TOKEN", "short"}});
  parse_error("", "environment variable DATABASE_URL: not a valid connection string",
              {{"DATABASE_URL", "host=x bogus_option=1"}});
  // Valid on its own, but the result is not: the message says the environment did it.
  e = parse_error("[pools.platform]\nmin_idle = 3\n", "(after DB_POOL_SIZE=2 from the environment)",
                  {{"DB_POOL_SIZE", "2"}});
  EXPECT_EQ(e.key(), "pools.platform.min_idle");
  // ...and only when it had a hand in it.
  e = parse_error("[pools.platform]\nrecycle = \"500ms\"\n", "recycle must be at least 1 s",
                  {{"DB_POOL_SIZE", "2"}});
  EXPECT_FALSE(contains(e.what(), "DB_POOL_SIZE")) << e.what();
  // The budget counts what the environment asked for.
  parse_error("[database]\nconnection_budget = 40\n[pools.a]\n[pools.b]\n",
              "104 server connections", {{"DB_POOL_SIZE", "20"}, {"DB_MAX_OVERFLOW", "30"}});
}

TEST(Config, TokenFileIsReadRelativeToTheConfigFile) {
  const scratch_dir dir;
  dir.write("token", "file-token-abcdefghij\n", 0600);
  const auto file = dir.write("sluice.toml", "[http]\ntoken_file = \"token\"\n");
  const auto c = load_config(file, fake_env({}));
  EXPECT_EQ(c.http.token, "file-token-abcdefghij");
  EXPECT_EQ(c.http.token_file, dir.path() / "token");
  EXPECT_EQ(c.source, file.string());

  const auto both =
      dir.write("both.toml", "[http]\ntoken = \"abcdefghijklmnopq\"\ntoken_file = \"token\"\n");
  EXPECT_THROW((void)load_config(both, fake_env({})), config_error);
  const auto missing = dir.write("missing.toml", "[http]\ntoken_file = \"nope\"\n");
  try {
    (void)load_config(missing, fake_env({}));
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.key(), "http.token_file");
    EXPECT_TRUE(contains(e.what(), "cannot read")) << e.what();
  }
}

TEST(Config, UnreadableFileIsNamed) {
  try {
    (void)load_config("/nonexistent/sluice.toml", fake_env({}));
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.source(), "/nonexistent/sluice.toml");
    EXPECT_TRUE(contains(e.what(), "/nonexistent/sluice.toml: cannot read")) << e.what();
  }
}

TEST(Config, ShortOrOddTokensAreRefusedWithoutEchoingThem) {
  auto e = parse_error("[http]\ntoken = \"hunter2\"\n", "at least 16");
  EXPECT_FALSE(contains(e.what(), "hunter2")) << e.what();
  e = parse_error("[http]\ntoken = \"hunter2 hunter2 hunter2\"\n", "without spaces");
  EXPECT_FALSE(contains(e.what(), "hunter2")) << e.what();
}

TEST(Config, PasswordsNeverAppearInErrorsOrJson) {
  const std::string secret = "s3cr3t-hunter2";
  const std::string uri = "postgresql://app:" + secret + "@db.internal:5432/prod";
  const std::string kv = "host=db.internal user=app password=" + secret + " dbname=prod";
  const std::string token = "tok-" + secret + "-0123456789";

  // --print-config.
  const auto c =
      parse("[database]\nurl = \"" + uri + "\"\n[pools.platform]\nurl = \"" + kv +
            "\"\n[scheduler]\nlisten_url = \"" + kv + "\"\n[http]\ntoken = \"" + token + "\"\n");
  const std::string json = c.to_json_redacted();
  EXPECT_FALSE(contains(json, secret)) << json;
  const auto parsed = nlohmann::json::parse(json);
  EXPECT_TRUE(parsed["http"]["token_set"].get<bool>());
  EXPECT_FALSE(parsed["http"].contains("token"));
  EXPECT_TRUE(contains(parsed["database"]["url"].get<std::string>(), "db.internal"));
  EXPECT_EQ(parsed["pools"]["platform"]["size"], 5);
  EXPECT_EQ(parsed["pools"]["platform"]["recycle"], "30m");
  EXPECT_EQ(parsed["scheduler"]["lane"]["size"], 2);
  EXPECT_EQ(parsed["budget"]["needed"], 19);

  // Through the environment too.
  const auto from_env = parse("", {{"DATABASE_URL", uri}, {"SLUICE_API_TOKEN", token}});
  EXPECT_FALSE(contains(from_env.to_json_redacted(), secret));

  // Errors, whatever they are about.
  const auto no_secret = [&](const config_error& e) {
    EXPECT_FALSE(contains(e.what(), secret)) << e.what();
  };
  no_secret(parse_error("[database]\nurl = \"host=db password=" + secret + " bogus=1\"\n",
                        "database.url: not a valid connection string"));
  no_secret(parse_error("[database]\nurl = \"host=db passwrd=" + secret + "\"\n",
                        "not a valid connection string"));
  no_secret(parse_error("[database]\nurl = \"host=db password=" + secret + " x\"\n",
                        "not a valid connection string"));
  no_secret(parse_error("[pools.p]\nurl = \"postgresql://u:" + secret + "@h/db?bogus=1\"\n",
                        "pools.p.url: not a valid connection string"));
  no_secret(parse_error("[scheduler]\nlisten_url = \"host=db password=" + secret + " junk\"\n",
                        "scheduler.listen_url"));
  no_secret(
      parse_error("[database]\nurl = \"" + uri + "\nconnection_budget = 2\n", "TOML syntax error"));
  no_secret(parse_error("[database]\nurl = \"" + uri + "\"\"x\n", "the details are not shown"));
  no_secret(parse_error("[database]\nurl = \"" + uri + "\"\nconnection_budget = 2\n",
                        "more than the budget of 2"));
  no_secret(parse_error("[database]\nurl = \"" + uri + "\"\nurl2 = 1\n", "did you mean 'url'"));
  no_secret(parse_error("", "DATABASE_URL", {{"DATABASE_URL", kv + " bogus"}}));
  no_secret(parse_error("[http]\ntoken = \"" + token + " x\"\n", "without spaces"));
}

TEST(Config, ExamplesLoad) {
  const std::filesystem::path examples = std::filesystem::path(SLUICE_SOURCE_DIR) / "examples";
  const auto demo = load_config(examples / "demo.toml", fake_env({}));
  ASSERT_EQ(demo.pools.size(), 2u);
  for (const auto& p : demo.pools) {
    EXPECT_EQ(p.size, 5) << p.name;
    EXPECT_EQ(p.max_overflow, 10) << p.name;
    EXPECT_EQ(p.recycle, 30min) << p.name;
    EXPECT_EQ(p.timeout, 30s) << p.name;
  }
  EXPECT_EQ(demo.pools[0].name, "platform");
  EXPECT_EQ(demo.pools[1].name, "user_data");
  EXPECT_EQ(demo.scheduler.workers, 8);
  EXPECT_FALSE(demo.http.token.empty());
  EXPECT_EQ(demo.commands.allow.size(), 4u);
  EXPECT_EQ(demo.connections_needed(), 34);
  // The seed's three types, which scripts/demo-seed gives tasks, each with its own limit.
  EXPECT_EQ(demo.handler_of("oauth_token_check"), "sql");
  EXPECT_EQ(demo.handler_of("website_analysis"), "http");
  EXPECT_EQ(demo.handler_of("monitoring_task"), "sql");
  for (const auto& [type, limit] : demo.scheduler.concurrency) {
    EXPECT_TRUE(demo.handler_of(type).has_value()) << type;
  }

  const auto incident = load_config(examples / "incident.toml", fake_env({}));
  ASSERT_EQ(incident.pools.size(), 2u);
  EXPECT_EQ(incident.scheduler.concurrency.at("oauth_token_check"), 16);
  EXPECT_EQ(incident.scheduler.concurrency.at("website_analysis"), 8);
  EXPECT_EQ(incident.scheduler.concurrency.at("monitoring_task"), 8);
  // Every type the incident limits is one the daemon can run.
  for (const auto& [type, limit] : incident.scheduler.concurrency) {
    EXPECT_TRUE(incident.handler_of(type).has_value()) << type;
  }
  EXPECT_EQ(incident.handler_of("oauth_token_check"), "sql");
  EXPECT_EQ(incident.handler_of("website_analysis"), "http");
  EXPECT_EQ(incident.handler_of("monitoring_task"), "sql");
  EXPECT_FALSE(incident.http.token.empty());
  EXPECT_EQ(incident.connections_needed(), 34);
  // The seed's original settings do not fit the incident file's budget.
  try {
    (void)load_config(examples / "incident.toml",
                      fake_env({{"DB_POOL_SIZE", "20"}, {"DB_MAX_OVERFLOW", "30"}}));
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.key(), "database.connection_budget");
    EXPECT_TRUE(contains(e.what(), "104 server connections")) << e.what();
  }
}

}  // namespace

TEST(Config, PrefetchAndItsCeiling) {
  const auto cfg = parse("[scheduler]\nprefetch = 4\nmax_prefetch = 64\n");
  EXPECT_EQ(cfg.scheduler.prefetch, 4);
  EXPECT_EQ(cfg.scheduler.max_prefetch, 64);
  const auto defaults = parse("");
  EXPECT_EQ(defaults.scheduler.prefetch, 8);
  EXPECT_EQ(defaults.scheduler.max_prefetch, 500);
  const config_error e = parse_error("[scheduler]\nprefetch = 50\nmax_prefetch = 10\n",
                                     "max_prefetch (10) must be at least prefetch (50)");
  EXPECT_NE(std::string(e.what()).find("test.toml:3"), std::string::npos) << e.what();
}

TEST(Config, HttpTasksAllowNetworksAndSigningSecret) {
  auto c = parse("");
  EXPECT_TRUE(c.http_tasks.allow_networks.empty());
  EXPECT_TRUE(c.http_tasks.signing_secret.empty());
  EXPECT_TRUE(c.http_tasks.policy().allow_networks.empty());

  c = parse(
      "[http_tasks]\nallow_networks = [\"127.0.0.1/32\", \"10.0.0.0/8\", \"fd00::/8\", "
      "\"127.0.0.1/32\"]\nsigning_secret = \"0123456789abcdef0123\"\n");
  EXPECT_EQ(c.http_tasks.allow_networks,
            (std::vector<std::string>{"127.0.0.1/32", "10.0.0.0/8", "fd00::/8"}));
  EXPECT_EQ(c.http_tasks.policy().allow_networks.size(), 3U);
  EXPECT_EQ(c.http_tasks.policy().signing_secret, "0123456789abcdef0123");
  auto j = nlohmann::json::parse(c.to_json_redacted());
  EXPECT_EQ(j["http_tasks"]["allow_networks"],
            (nlohmann::json{"127.0.0.1/32", "10.0.0.0/8", "fd00::/8"}));
  EXPECT_EQ(j["http_tasks"]["signing_secret_set"], true);
  EXPECT_FALSE(contains(c.to_json_redacted(), "0123456789abcdef0123"));

  c = parse("[http_tasks]\nsigning_secret_env = \"HOOK_SECRET\"\n",
            {{"HOOK_SECRET", "from-the-environment-secret"}});
  EXPECT_EQ(c.http_tasks.signing_secret, "from-the-environment-secret");
  j = nlohmann::json::parse(c.to_json_redacted());
  EXPECT_EQ(j["http_tasks"]["signing_secret_env"], "HOOK_SECRET");
  EXPECT_FALSE(contains(c.to_json_redacted(), "from-the-environment-secret"));

  auto e = parse_error("[http_tasks]\nallow_networks = [\"10.0.0.0/8\", \"10.0.0.1/8\"]\n",
                       "http_tasks.allow_networks[1]: '10.0.0.1/8' is not a network");
  EXPECT_EQ(e.line(), 2);
  parse_error("[http_tasks]\nallow_networks = [\"localhost\"]\n", "is not a network");
  parse_error("[http_tasks]\nallow_networks = \"10.0.0.0/8\"\n", "expected an array of networks");
  parse_error("[http_tasks]\nallow_networks = [8]\n", "expected a string");
  parse_error("[http_tasks]\nsigning_secret = \"short\"\n", "use at least 16");
  parse_error("[http_tasks]\nsigning_secret_env = \"HOOK_SECRET\"\n",
              "http_tasks.signing_secret_env: the environment variable HOOK_SECRET is not set");
  parse_error(
      "[http_tasks]\nsigning_secret = \"0123456789abcdef0123\"\nsigning_secret_env = \"X\"\n",
      "not both");
  parse_error("[http_tasks]\nallow_hosts = []\n", "allow_hosts");

  // Named keys: each names the variable holding its secret.
  c = parse("[http_tasks.signing_keys]\npartner_a = \"PARTNER_A_SECRET\"\n",
            {{"PARTNER_A_SECRET", "partner-a-secret-0123456789"}});
  EXPECT_EQ(c.http_tasks.policy().signing_keys.at("partner_a"), "partner-a-secret-0123456789");
  EXPECT_TRUE(c.http_tasks.policy().signing_secret.empty());
  j = nlohmann::json::parse(c.to_json_redacted());
  EXPECT_EQ(j["http_tasks"]["signing_keys"]["partner_a"], "PARTNER_A_SECRET");
  EXPECT_FALSE(contains(c.to_json_redacted(), "partner-a-secret-0123456789"));
  e = parse_error("[http_tasks.signing_keys]\npartner_a = \"PARTNER_A_SECRET\"\n",
                  "http_tasks.signing_keys.partner_a: the environment variable PARTNER_A_SECRET "
                  "is not set");
  EXPECT_EQ(e.line(), 2);
  parse_error("[http_tasks.signing_keys]\npartner_a = 3\n", "expected the name of the environment");
  parse_error("[http_tasks.signing_keys]\npartner_a = \"S\"\n", "use at least 16",
              {{"S", "short"}});
  parse_error("[http_tasks.signing_keys]\n\"a b\" = \"S\"\n", "key names are 1 to 64");
}

TEST(Config, FlowTablesAreReadAndChecked) {
  const auto cfg = parse(
      "[flow.website_analysis]\nmax_running = 3\nkey = \"customer\"\n"
      "[flow.oauth_token_check]\nrate = 30\nrate_period = \"1m\"\n");
  ASSERT_TRUE(cfg.flow);
  const auto limits = cfg.flow_limits();
  ASSERT_EQ(limits.size(), 2U);
  EXPECT_EQ(limits.at("website_analysis"), sluice::sched::flow_limit::running(3, "customer"));
  EXPECT_EQ(limits.at("oauth_token_check"), sluice::sched::flow_limit::starts(30, 1min));
  EXPECT_FALSE(parse("[scheduler]\nworkers = 4\n").flow)
      << "no [flow] table: the database's limits are left alone";
  ASSERT_TRUE(parse("[flow]\n").flow);
  EXPECT_TRUE(parse("[flow]\n").flow->empty());
  parse_error("[flow.x]\nkey = \"customer\"\n", "set max_running, rate, or both");
  parse_error("[flow.x]\nrate = 5\n", "needs rate_period");
  parse_error("[flow.x]\nmax_running = 2\nrate_period = \"1m\"\n", "without a rate");
  parse_error("[flow.x]\nmax_running = 0\n", "flow.x.max_running");
  parse_error("[flow.x]\nrate = 5\nrate_period = \"100ms\"\n", "flow.x.rate_period");
  parse_error("[flow.x]\nmax_running = 2\nmax_runing = 2\n", "max_runing");
  parse_error("[flow.\"bad type\"]\nmax_running = 2\n", "flow.bad type");
  parse_error("[flow]\nx = 3\n", "expected a table ([flow.x])");
}
