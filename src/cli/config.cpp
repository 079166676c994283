#include "cli/config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>
#include <unistd.h>

#include "cli/config_keys.hpp"
#include "sluice/pg/conninfo.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/sched/schedule.hpp"

static_assert(TOML_EXCEPTIONS, "config.cpp expects toml::parse to throw toml::parse_error");

namespace sluice::cli {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using namespace config_detail;

namespace {

// The pool settings each DB_POOL_* variable can make invalid, for saying when the environment
// made a pool invalid: the key it sets and the keys the table names with it.
bool env_var_affects(std::string_view variable, std::string_view field) {
  for (const auto& k : pool_keys()) {
    if (k.env != variable) continue;
    if (k.name == field) return true;
    return std::find(k.env_also.begin(), k.env_also.end(), field) != k.env_also.end();
  }
  return false;
}

// pool::validate's verdict as a config_error on the key it names. `env` lists the environment
// variables (name, value) that changed the pool.
void validate_pool(const section& t, const pool::settings& s,
                   const std::vector<std::pair<std::string, std::string>>& env) {
  try {
    pool::validate(s);
  } catch (const pool::settings_error& e) {
    std::string reason = e.what();
    const std::string prefix = "pool '" + s.name + "': ";
    if (reason.rfind(prefix, 0) == 0) reason.erase(0, prefix.size());
    const std::string field = reason.substr(0, reason.find(' '));
    std::string note;
    for (const auto& [variable, value] : env) {
      if (!env_var_affects(variable, field)) continue;
      note += (note.empty() ? " (after " : ", ") + variable + "=" + value;
    }
    if (!note.empty()) reason += note + " from the environment)";
    const auto& keys = pool_keys();
    const bool known =
        std::any_of(keys.begin(), keys.end(), [&](const auto& k) { return k.name == field; });
    if (known) t.fail(field, reason);
    t.fail("", reason);
  }
}

bool valid_pool_name(std::string_view name) {
  return !name.empty() && name.size() <= 63 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// Applies the DB_POOL_* variables the pool table names to every named pool (the pool layer
// parses them), then checks each pool as a whole.
void apply_pool_environment(const loader& ctx,
                            std::vector<std::pair<pool::settings, section>>& named,
                            daemon_config& cfg) {
  std::set<std::string> names;
  for (const auto& k : pool_keys()) {
    if (!k.env.empty()) names.emplace(k.env);
  }
  std::set<std::string> used;
  for (auto& [s, t] : named) {
    try {
      s = pool::apply_env_overrides(std::move(s), [&](std::string_view var) {
        if (names.count(std::string(var)) == 0) return std::optional<std::string>();
        auto value = ctx.env(var);
        if (value) used.emplace(var);
        return value;
      });
    } catch (const pool::settings_error& e) {
      std::string reason = e.what();
      const std::string variable = reason.substr(0, reason.find(':'));
      if (reason.rfind(variable + ": ", 0) == 0) reason.erase(0, variable.size() + 2);
      ctx.fail_env(variable, reason);
    }
    std::vector<std::pair<std::string, std::string>> applied;
    for (const auto& var : used)
      applied.emplace_back(var, *ctx.env(var));
    validate_pool(t, s, applied);
    cfg.pools.push_back(std::move(s));
  }
  cfg.environment_applied.insert(cfg.environment_applied.end(), used.begin(), used.end());
}

void check_scheduler(const section& sch, const sched::scheduler_settings& ss) {
  if (ss.max_prefetch < ss.prefetch) {
    sch.fail(sch.has("max_prefetch") ? "max_prefetch" : "prefetch",
             "max_prefetch (" + std::to_string(ss.max_prefetch) + ") must be at least prefetch (" +
                 std::to_string(ss.prefetch) + ")");
  }
  if (ss.idle_poll_max < ss.poll_interval) {
    sch.fail("idle_poll_max", "must be at least poll_interval (" +
                                  format_duration(ss.poll_interval) + "), got " +
                                  format_duration(ss.idle_poll_max));
  }
  if (ss.node_expiry < ss.heartbeat_interval * 3 / 2) {
    sch.fail("node_expiry", "must be at least 1.5 times heartbeat_interval (" +
                                format_duration(ss.heartbeat_interval * 3 / 2) + "), got " +
                                format_duration(ss.node_expiry) +
                                ": a node whose heartbeat is late by half an interval is not "
                                "dead yet");
  }
}

void check_http(const section& http, const http_config& hc) {
  if (hc.max_buffered_body_bytes < hc.max_body_bytes) {
    http.fail("max_buffered_body_bytes",
              "must be at least max_body_bytes (" + std::to_string(hc.max_body_bytes) +
                  "), or no body of the largest size could ever be read");
  }
  if (hc.history < hc.sample_interval) {
    http.fail("history",
              "must be at least sample_interval (" + format_duration(hc.sample_interval) + ")");
  }
  if (hc.history / hc.sample_interval > max_history_samples) {
    http.fail("history", "keeps " + std::to_string(hc.history / hc.sample_interval) +
                             " samples per pool (history / sample_interval); at most " +
                             std::to_string(max_history_samples) +
                             " are allowed: shorten history or lengthen sample_interval");
  }
}

void read_flow(const loader& ctx, section& root, daemon_config& cfg) {
  if (root.node("flow") == nullptr) return;
  section flow = root.table("flow");
  flow.accept_all();
  std::vector<flow_config> out;
  for (const auto& [type, node] : flow.entries()) {
    if (!node->is_table()) {
      flow.fail(type, "expected a table ([flow." + type + "]) with max_running and/or rate, got " +
                          std::string(type_name(*node)));
    }
    if (!valid_task_type(type)) flow.fail(type, task_type_rule);
    section t(ctx, node->as_table(), "flow." + type);
    flow_config f;
    f.type = type;
    read_keys(t, flow_keys(), f);
    if (!f.max_running && !f.rate) t.fail("max_running", "set max_running, rate, or both");
    if (f.rate && f.rate_period.count() == 0) t.fail("rate", "needs rate_period");
    if (!f.rate && f.rate_period.count() != 0) t.fail("rate_period", "is set without a rate");
    t.finish();
    out.push_back(std::move(f));
  }
  flow.finish();
  std::sort(out.begin(), out.end(),
            [](const flow_config& a, const flow_config& b) { return a.type < b.type; });
  cfg.flow = std::move(out);
}

void read_types(const loader& ctx, section& root, daemon_config& cfg) {
  section types = root.table("types");
  types.accept_all();
  const std::vector<std::string> handlers(std::begin(builtin_handlers), std::end(builtin_handlers));
  for (const auto& [name, node] : types.entries()) {
    if (!node->is_table()) {
      types.fail(name, "expected a table ([types." + name + "]) with handler = \"sql\" or " +
                           "another built-in handler, got " + std::string(type_name(*node)));
    }
    if (!valid_task_type(name)) {
      types.fail(name, task_type_rule);
    }
    if (std::find(handlers.begin(), handlers.end(), name) != handlers.end()) {
      types.fail(name, "'" + name +
                           "' is a built-in task type and cannot be redefined; give the alias a "
                           "name of its own");
    }
    section t(ctx, node->as_table(), "types." + name);
    task_type_alias alias;
    alias.name = name;
    read_keys(t, type_keys(), alias);
    const task_defaults& d = alias.defaults;
    const sched::task_spec general;
    if (d.backoff_cap.value_or(general.backoff_cap) <
        d.backoff_base.value_or(general.backoff_base)) {
      t.fail(d.backoff_cap ? "backoff_cap" : "backoff_base",
             "backoff_cap (" + format_duration(d.backoff_cap.value_or(general.backoff_cap)) +
                 ") must be at least backoff_base (" +
                 format_duration(d.backoff_base.value_or(general.backoff_base)) + ")");
    }
    t.finish();
    cfg.types.push_back(std::move(alias));
  }
  types.finish();
  std::sort(cfg.types.begin(), cfg.types.end(),
            [](const task_type_alias& a, const task_type_alias& b) { return a.name < b.name; });
}

// The budget: every connection the process can hold, counted before anything connects.
void check_budget(const loader& ctx, const section& db, daemon_config& cfg) {
  // Summed as long long: the pools' sizes are each bounded, their sum is not.
  long long needed = cfg.lane.max_connections() + cfg.dedicated_connections();
  for (const auto& p : cfg.pools)
    needed += p.max_connections();
  const std::string breakdown =
      std::to_string(needed) + " server connections (" + join(cfg.connection_terms(), ", ") + ")";
  if (needed > max_server_connections) {
    ctx.fail("pools", "the pools need " + breakdown +
                          ", more than any PostgreSQL server accepts (" +
                          std::to_string(max_server_connections) + ")");
  }
  if (cfg.database.connection_budget && needed > *cfg.database.connection_budget) {
    db.fail("connection_budget",
            "this process may hold up to " + breakdown + ", more than the budget of " +
                std::to_string(*cfg.database.connection_budget) +
                ": lower size or max_overflow of some pools, or raise connection_budget");
  }
  cfg.scheduler.connection_budget = static_cast<int>(needed);
}

template <class S>
void append_applied(daemon_config& cfg, const loader& ctx, const std::vector<key<S>>& keys, S& s) {
  auto applied = apply_environment(ctx, keys, s);
  cfg.environment_applied.insert(cfg.environment_applied.end(), applied.begin(), applied.end());
}

daemon_config parse_text(std::string_view text, std::string source,
                         const std::filesystem::path& base_dir, const env_lookup& env) {
  const loader ctx(source, env, base_dir);
  toml::table doc;
  try {
    doc = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const position at = where(e.source());
    std::string reason = "TOML syntax error: ";
    if (line_holds_secret(text, at.line)) {
      reason += "the line sets a url or token, so the details are not shown";
    } else {
      reason += std::string(e.description());
    }
    ctx.fail("", reason, at);
  }

  daemon_config cfg;
  cfg.source = source;
  section root(ctx, &doc, "");

  section db = root.table("database");
  read_keys(db, database_keys(), cfg.database);
  append_applied(cfg, ctx, database_keys(), cfg.database);
  db.finish();

  // [pools.<name>]
  section pools = root.table("pools");
  pools.accept_all();
  std::vector<std::pair<pool::settings, section>> named;
  for (const auto& [name, node] : pools.entries()) {
    if (!node->is_table()) {
      pools.fail(name, "expected a table ([pools." + name + "]) of pool settings, got " +
                           std::string(type_name(*node)));
    }
    if (name == lane_pool_name) {
      pools.fail(name, "the name '" + name +
                           "' is reserved for the scheduler's lane; configure it under "
                           "[scheduler.lane]");
    }
    if (!valid_pool_name(name)) {
      pools.fail(name, "pool names are 1 to 63 characters of a-z, 0-9, '_' and '-'");
    }
    section t(ctx, node->as_table(), "pools." + name);
    pool::settings s = pool_defaults(cfg.database, name);
    read_keys(t, pool_keys(), s);
    t.finish();
    named.emplace_back(std::move(s), std::move(t));
  }
  if (named.empty()) {
    named.emplace_back(pool_defaults(cfg.database, "default"),
                       section(ctx, nullptr, "pools.default"));
  }
  apply_pool_environment(ctx, named, cfg);

  // [scheduler], [scheduler.concurrency], [scheduler.lane]
  section sch = root.table("scheduler");
  read_keys(sch, scheduler_keys(), cfg.scheduler);
  check_scheduler(sch, cfg.scheduler);
  section lane = sch.table("lane");
  cfg.lane = lane_defaults(cfg.database);
  read_keys(lane, pool_keys(), cfg.lane);
  lane.finish();
  validate_pool(lane, cfg.lane, {});
  sch.finish();

  read_types(ctx, root, cfg);
  read_flow(ctx, root, cfg);

  section http = root.table("http");
  read_keys(http, http_keys(), cfg.http);
  check_http(http, cfg.http);
  http.finish();
  append_applied(cfg, ctx, http_keys(), cfg.http);

  section cmds = root.table("commands");
  read_keys(cmds, commands_keys(), cfg.commands);
  cmds.finish();

  section ht = root.table("http_tasks");
  read_keys(ht, http_tasks_keys(), cfg.http_tasks);
  ht.finish();

  section lg = root.table("log");
  read_keys(lg, log_keys(), cfg.log);
  lg.finish();

  root.finish();
  check_budget(ctx, db, cfg);
  std::sort(cfg.environment_applied.begin(), cfg.environment_applied.end());
  return cfg;
}

}  // namespace

config_error::config_error(std::string source, std::string key, std::string reason, int line,
                           int column)
    : std::runtime_error([&] {
        std::string what = source;
        if (line > 0) {
          what += ":" + std::to_string(line);
          if (column > 0) what += ":" + std::to_string(column);
        }
        what += ": ";
        if (!key.empty()) what += key + ": ";
        return what + reason;
      }()),
      source_(std::move(source)),
      key_(std::move(key)),
      reason_(std::move(reason)),
      line_(line),
      column_(column) {}

config_error config_error::environment(std::string source, std::string variable,
                                       std::string reason) {
  config_error e(source + ": environment variable " + variable, "", reason);
  e.source_ = std::move(source);
  e.key_ = std::move(variable);
  e.from_environment_ = true;
  return e;
}

env_lookup process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

std::string_view to_string(log_format f) noexcept {
  return f == log_format::json ? "json" : "text";
}

milliseconds parse_duration(std::string_view text) {
  const auto bad = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument("'" + std::string(text) + "' is not a duration: " + why);
  };
  if (text.empty()) throw bad("it is empty");
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    throw bad("a unit is missing (ms, s, m, h or d), e.g. \"" + std::string(text) +
              "s\"; a bare number without quotes means seconds");
  }
  struct unit {
    std::string_view name;
    milliseconds length;
  };
  static constexpr unit units[] = {{"d", std::chrono::hours(24)},
                                   {"h", std::chrono::hours(1)},
                                   {"m", std::chrono::minutes(1)},
                                   {"s", std::chrono::seconds(1)},
                                   {"ms", milliseconds(1)}};
  constexpr std::size_t unit_count = std::size(units);
  std::size_t next_unit = 0;  // units must come largest first, each at most once
  milliseconds total{0};
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t digits_start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])))
      ++i;
    if (i == digits_start) {
      throw bad("expected a number at '" + std::string(text.substr(digits_start)) + "'");
    }
    if (i - digits_start > 12) throw bad("the number is too large");
    const long long number = std::stoll(std::string(text.substr(digits_start, i - digits_start)));
    const std::size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i])))
      ++i;
    const std::string_view name = text.substr(unit_start, i - unit_start);
    if (name.empty()) throw bad("a unit is missing after " + std::to_string(number));
    std::size_t u = 0;
    while (u < unit_count && units[u].name != name)
      ++u;
    if (u == unit_count) {
      throw bad("unknown unit '" + std::string(name) + "' (use ms, s, m, h or d)");
    }
    if (u < next_unit) throw bad("units must go from largest to smallest, each once (\"1m30s\")");
    next_unit = u + 1;
    if (number > max_duration / units[u].length) throw bad("longer than 365 days");
    total += number * units[u].length;
    if (total > max_duration) throw bad("longer than 365 days");
  }
  return total;
}

std::string format_duration(milliseconds d) {
  // Whole seconds as a schedule writes them (sched::format_duration), then the milliseconds.
  if (d < 0ms) return "-" + format_duration(-d);
  const milliseconds ms = d % std::chrono::seconds(1);
  const auto whole = std::chrono::duration_cast<std::chrono::seconds>(d - ms);
  std::string out = whole.count() > 0 || ms == 0ms ? sched::format_duration(whole) : "";
  if (ms > 0ms) out += std::to_string(ms.count()) + "ms";
  return out;
}

int daemon_config::connections_needed() const noexcept {
  int needed = lane.max_connections() + dedicated_connections();
  for (const auto& p : pools)
    needed += p.max_connections();
  return needed;
}

std::vector<std::string> daemon_config::connection_terms() const {
  std::vector<std::string> parts;
  for (const auto& p : pools)
    parts.push_back(p.name + " " + std::to_string(p.size) + "+" + std::to_string(p.max_overflow));
  parts.push_back("scheduler lane " + std::to_string(lane.size) + "+" +
                  std::to_string(lane.max_overflow));
  if (scheduler.listen) parts.emplace_back("LISTEN 1");
  return parts;
}

pool::manager_settings daemon_config::manager_settings() const {
  pool::manager_settings m;
  m.connection_budget = database.connection_budget;
  m.dedicated_connections = dedicated_connections();
  return m;
}

std::vector<pool::settings> daemon_config::pool_settings() const {
  std::vector<pool::settings> all = pools;
  all.push_back(lane);
  return all;
}

const pool::settings* daemon_config::find_pool(std::string_view name) const noexcept {
  for (const auto& p : pools) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::optional<std::string> daemon_config::handler_of(std::string_view type) const {
  for (const std::string_view h : builtin_handlers) {
    if (h == type) return std::string(h);
  }
  for (const auto& t : types) {
    if (t.name == type) return t.handler;
  }
  return std::nullopt;
}

void daemon_config::apply_alias_defaults(const std::vector<task_type_alias>& aliases,
                                         sched::task_spec& spec) {
  for (const auto& t : aliases) {
    if (t.name != spec.type) continue;
    const task_defaults& d = t.defaults;
    if (d.priority) spec.priority = *d.priority;
    if (d.max_attempts) spec.max_attempts = *d.max_attempts;
    if (d.timeout) spec.timeout = *d.timeout;
    if (d.backoff_base) spec.backoff_base = *d.backoff_base;
    if (d.backoff_cap) spec.backoff_cap = *d.backoff_cap;
    return;
  }
}

std::string daemon_config::to_json_redacted() const {
  json j;
  j["source"] = source;
  j["environment_applied"] = environment_applied;
  j["database"] = show_keys(config_detail::database_keys(), database);
  json pools_json = json::object();
  for (const auto& p : pools)
    pools_json[p.name] = show_keys(config_detail::pool_keys(), p);
  j["pools"] = std::move(pools_json);
  json sch = show_keys(config_detail::scheduler_keys(), scheduler);
  sch["lane"] = show_keys(config_detail::pool_keys(), lane);
  j["scheduler"] = std::move(sch);
  j["http"] = show_keys(config_detail::http_keys(), http);
  j["commands"] = show_keys(config_detail::commands_keys(), commands);
  j["http_tasks"] = show_keys(config_detail::http_tasks_keys(), http_tasks);
  json types_json = json::object();
  for (const auto& t : types)
    types_json[t.name] = show_keys(config_detail::type_keys(), t, true);
  j["types"] = std::move(types_json);
  if (flow) {
    json flow_json = json::object();
    for (const auto& f : *flow)
      flow_json[f.type] = show_keys(config_detail::flow_keys(), f);
    j["flow"] = std::move(flow_json);
  }
  j["log"] = show_keys(config_detail::log_keys(), log);

  int pool_connections = 0;
  for (const auto& p : pools)
    pool_connections += p.max_connections();
  j["budget"] = {
      {"pools", pool_connections},
      {"lane", lane.max_connections()},
      {"dedicated", dedicated_connections()},
      {"needed", connections_needed()},
      {"connection_budget",
       database.connection_budget ? json(*database.connection_budget) : json(nullptr)},
  };
  return j.dump(2);
}

sched::flow_limit flow_config::limit() const {
  sched::flow_limit l;
  l.max_running = max_running;
  l.rate = rate;
  l.rate_period = rate_period;
  l.key = key;
  return l;
}

std::map<std::string, sched::flow_limit> daemon_config::flow_limits() const {
  std::map<std::string, sched::flow_limit> out;
  if (flow) {
    for (const auto& f : *flow)
      out.emplace(f.type, f.limit());
  }
  return out;
}

bool reloadable(std::string_view key) {
  const auto* k = config_detail::find_key(key);
  return k != nullptr && k->reload;
}

std::string config_reference() {
  return config_detail::reference_markdown();
}

sched::http_policy http_tasks_config::policy() const {
  sched::http_policy p;
  for (const auto& n : allow_networks) {
    if (auto net = sched::parse_ip_network(n)) p.allow_networks.push_back(*net);
  }
  p.signing_secret = signing_secret;
  p.signing_keys.insert(signing_keys.begin(), signing_keys.end());
  return p;
}

daemon_config load_config(const std::filesystem::path& file, const env_lookup& env) {
  const std::string source = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw config_error(source, "", std::string("cannot read: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw config_error(source, "", "cannot read: I/O error");
  std::filesystem::path base = file.parent_path();
  if (base.empty()) base = ".";
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(base, ec);
  return parse_text(text.str(), source, ec ? base : absolute, env);
}

daemon_config parse_config(std::string_view toml_text, std::string_view source_name,
                           const env_lookup& env) {
  std::error_code ec;
  auto base = std::filesystem::current_path(ec);
  if (ec) base = ".";
  return parse_text(toml_text, std::string(source_name), base, env);
}

}  // namespace sluice::cli
