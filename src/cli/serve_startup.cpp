// `sluice serve`'s start-up sequence, its wait for signals and its drain (serve.hpp). The order
// of the steps is the one docs/operations.md#start-up-order describes; each step logs one line.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include "cli/common.hpp"
#include "cli/serve.hpp"
#include "http/dashboard.hpp"
#include "http/server.hpp"
#include "sluice/pg/error.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/version.hpp"

namespace sluice::cli::serve_detail {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Every task type this node runs (built-ins and [types] aliases), mapped to the built-in
// handler that runs it.
using type_map = std::map<std::string, std::string, std::less<>>;

// The handlers' payload checks, plus what only the daemon knows: which types it handles and
// which pools exist (an sql task naming the lane or a missing pool is refused when created).
// A task of an alias type is checked by its handler's rules.
void validate_task(std::string_view type, std::string_view payload, const type_map& types,
                   const std::vector<std::string>& pools, const command_settings& commands,
                   const std::map<std::string, std::string>& signing_keys) {
  const auto it = types.find(type);
  if (it == types.end()) {
    std::vector<std::string> names;
    for (const auto& [name, handler] : types)
      names.push_back(name);
    throw sched::schedule_error("type: no handler for task type '" + std::string(type) +
                                "' on this node (handled: " + join(names) + ")");
  }
  const std::string& handler = it->second;
  const auto policy = commands.get();
  sched::validate_payload(handler, payload, policy.get());
  if (handler == "http") {
    // A name this node's [http_tasks.signing_keys] does not define would fail every run.
    const auto j = nlohmann::json::parse(payload, nullptr, false);
    if (!j.is_object() || !j.contains("signing_key") || !j["signing_key"].is_string()) return;
    const auto key = j["signing_key"].get<std::string>();
    if (signing_keys.count(key) != 0) return;
    std::vector<std::string> names;
    for (const auto& [name, variable] : signing_keys)
      names.push_back(name);
    // The value is not echoed: someone may have put a secret there by mistake.
    throw sched::schedule_error(
        "http payload: signing_key: [http_tasks.signing_keys] has no key of that name (" +
        (names.empty() ? std::string("none is defined") : "defined: " + join(names)) + ")");
  }
  if (handler != "sql") return;
  const auto j = nlohmann::json::parse(payload, nullptr, false);
  if (!j.is_object() || !j.contains("pool") || !j["pool"].is_string()) return;
  const auto pool = j["pool"].get<std::string>();
  if (pool == lane_pool_name) {
    throw sched::schedule_error("sql payload: pool '" + pool +
                                "' is the scheduler's own lane and runs no tasks");
  }
  if (std::find(pools.begin(), pools.end(), pool) == pools.end()) {
    throw sched::schedule_error("sql payload: no pool named '" + pool + "' (pools: " + join(pools) +
                                ")");
  }
}

// The sql handler, refusing the lane at run time too (a task created before the pool existed,
// or through another path than the API).
sched::handler make_daemon_sql_handler() {
  return [inner = sched::make_sql_handler()](sched::task_context& ctx) {
    const auto j = nlohmann::json::parse(ctx.payload(), nullptr, false);
    if (j.is_object() && j.contains("pool") && j["pool"] == std::string(lane_pool_name)) {
      return sched::handler_result::failure("sql payload: pool '" + std::string(lane_pool_name) +
                                            "' is the scheduler's own lane and runs no tasks");
    }
    return inner(ctx);
  };
}

// Shares `commands` rather than referring to it: a worker stuck in a command that ignores
// cancellation is detached by the scheduler's stop() and may outlive serve().
sched::handler make_daemon_command_handler(std::shared_ptr<const command_settings> commands) {
  return [commands = std::move(commands)](sched::task_context& ctx) {
    // The handler is a stateless copy of the policy; building it per run is what lets SIGHUP
    // change the allow-list for the next run.
    return sched::make_command_handler(*commands->get())(ctx);
  };
}

void write_port_file(const std::string& path, int port) {
  // Written whole and renamed into place, so a reader never sees a partial number.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << '\n';
    if (!out) throw std::runtime_error("--port-file: cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("--port-file: cannot rename " + tmp + ": " + ec.message());
}

// Everything the running daemon owns, destroyed in reverse order: server, scheduler, store,
// pools.
struct daemon_parts {
  std::unique_ptr<pool::pool_manager> pools;
  std::unique_ptr<sched::store> store;
  std::unique_ptr<sched::scheduler> scheduler;
  std::unique_ptr<http::app> app;
  std::unique_ptr<http::server> server;
};

// Step 3: the pools, under the one budget. Nothing connects yet.
void open_pools(daemon_parts& d, const daemon_config& cfg, daemon_log& log) {
  d.pools = std::make_unique<pool::pool_manager>(cfg.manager_settings());
  for (const auto& s : cfg.pool_settings())
    d.pools->add(s);
  log.info("pools: " + describe_pools(cfg));
}

// Step 4: one probe connection first (the pools hold none yet), so that an unreachable server
// is reported at once with libpq's reason rather than after the lane's acquire timeout.
void probe_database(const daemon_config& cfg, daemon_log& log) {
  const pg::connection probe = open_connection(cfg, "sluice/serve");
  const int v = probe.server_version();
  log.info("database: PostgreSQL " + std::to_string(v / 10000) + "." + std::to_string(v % 10000) +
           " at " + probe.describe());
}

// Step 5 with --migrate: the schema brought up to date.
void migrate_schema(sched::store& store, const std::string& schema, daemon_log& log) {
  const auto st = store.migrate();
  if (st.applied_now.empty()) {
    log.info("schema " + schema + ": up to date (version " + std::to_string(st.current) + ")");
    return;
  }
  std::vector<std::string> versions;
  for (const int v : st.applied_now)
    versions.push_back(std::to_string(v));
  log.info("schema " + schema + ": applied version" + (versions.size() > 1 ? "s " : " ") +
           join(versions) + "; now at version " + std::to_string(st.current));
}

// Step 6: the built-in handlers, then each alias of [types] with the very handler of its
// built-in type, under its own name (so its own concurrency limit and counters). Returns every
// type this node runs.
type_map register_handlers(sched::scheduler& scheduler, const daemon_config& cfg,
                           const std::shared_ptr<const command_settings>& commands,
                           daemon_log& log) {
  const std::map<std::string, sched::handler, std::less<>> handlers = {
      {"sql", make_daemon_sql_handler()},
      {"http", sched::make_http_handler(cfg.http_tasks.policy())},
      {"command", make_daemon_command_handler(commands)},
      {"noop", sched::make_noop_handler()}};
  type_map types;
  for (const auto& [name, fn] : handlers) {
    scheduler.handle(name, fn);
    types.emplace(name, name);
  }
  std::vector<std::string> aliases;
  for (const auto& t : cfg.types) {
    scheduler.handle(t.name, handlers.at(t.handler));
    types.emplace(t.name, t.handler);
    aliases.push_back(t.name + " -> " + t.handler);
  }
  if (!aliases.empty()) log.info("task types run by built-in handlers: " + join(aliases));
  for (const auto& [type, limit] : cfg.scheduler.concurrency) {
    if (types.find(type) == types.end()) {
      log.warn("scheduler.concurrency." + type + ": no handler for task type '" + type +
               "' on this node, so the limit has no effect (add [types." + type +
               "] with a handler)");
    }
  }
  return types;
}

// Step 7: the budget against the server, next to the other live nodes.
void check_server_budget(daemon_parts& d, pool::pool& lane, daemon_log& log) {
  const int others = d.store->budget_of_other_nodes(d.scheduler->node_id());
  auto lease = lane.acquire();
  const auto report = d.pools->check_budget(*lease, others);
  log.info("budget: " + pool::describe(report));
}

http::server_settings server_settings(const http_config& h) {
  http::server_settings hs;
  hs.address = h.address;
  hs.port = h.port;
  hs.token = h.token;
  hs.max_body_bytes = h.max_body_bytes;
  hs.max_connections = h.max_connections;
  hs.max_header_bytes = h.max_header_bytes;
  hs.max_header_count = h.max_header_count;
  hs.max_buffered_body_bytes = h.max_buffered_body_bytes;
  hs.header_timeout = h.header_timeout;
  hs.body_timeout = h.body_timeout;
  hs.idle_timeout = h.idle_timeout;
  hs.write_timeout = h.write_timeout;
  hs.history = h.history;
  hs.sample_interval = h.sample_interval;
  hs.allowed_hosts = h.allowed_hosts;
  return hs;
}

// Step 10: the API and the dashboard, once the scheduler runs.
void start_http(daemon_parts& d, pool::pool& lane, const daemon_config& cfg, type_map types,
                const std::shared_ptr<const command_settings>& commands,
                steady_clock::time_point started) {
  std::vector<std::string> task_pools;
  for (const auto& p : cfg.pools)
    task_pools.push_back(p.name);
  d.app = std::make_unique<http::app>(
      http::app{*d.pools, lane, *d.scheduler, *d.store,
                [types = std::move(types), task_pools, commands,
                 signing_keys = cfg.http_tasks.signing_keys_env](std::string_view type,
                                                                 std::string_view payload) {
                  validate_task(type, payload, types, task_pools, *commands, signing_keys);
                },
                [aliases = cfg.types](sched::task_spec& spec) {
                  daemon_config::apply_alias_defaults(aliases, spec);
                },
                std::string(version_string), started});
  d.server = std::make_unique<http::server>(server_settings(cfg.http), *d.app);
  d.server->set_static_handler(http::make_dashboard_handler());
  d.server->start();
}

// The drain: the scheduler first (no new claims, running tasks finish or are handed back), while
// HTTP still answers (/ready says 503 during the drain); then HTTP; then the pools.
void drain(daemon_parts& d, const serve_options& opt, daemon_log& log) {
  const auto drain_start = steady_clock::now();
  d.scheduler->stop();
  d.server->stop();
  const int leases_out = d.pools->shutdown(std::chrono::seconds(5));
  if (leases_out > 0) {
    log.warn(std::to_string(leases_out) +
             " connection lease(s) were still out when the pools closed");
  }
  if (!opt.port_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(opt.port_file, ec);
  }
  const auto drain_ms =
      std::chrono::duration_cast<milliseconds>(steady_clock::now() - drain_start).count();
  log.info("stopped after draining for " + std::to_string(drain_ms) + " ms");
}

}  // namespace

int serve(const serve_options& opt) {
  // Step 1, before any thread exists (spdlog's sink starts none; the pools and the scheduler
  // do), so that every thread inherits the blocked signals.
  std::optional<log_format> forced_format;
  if (opt.log_format == "json") forced_format = log_format::json;
  if (opt.log_format == "text") forced_format = log_format::text;
  daemon_log log(forced_format.value_or(log_format::text), log_level::info);
  signal_watcher signals(log);
  // A reader that went away (stderr piped into a pager that quit, a client that hung up) is an
  // error on that one write, not the end of the daemon. Command tasks get the default back.
  std::signal(SIGPIPE, SIG_IGN);

  // Step 2: the configuration, checked as a whole before anything connects; then the log as
  // it says, and the signal thread.
  daemon_config cfg;
  try {
    cfg = load_config(opt.config_file, process_environment());
  } catch (const config_error& e) {
    log.error(e.what());
    return exit_bad_config;
  }
  if (opt.print_config) {
    std::cout << cfg.to_json_redacted() << '\n';
    return 0;
  }
  if (!forced_format) log.set_format(cfg.log.format);
  log.set_level(cfg.log.level);
  const library_log_route route(log);
  signals.start(opt.config_file, "no new tasks are claimed and running tasks get up to " +
                                     format_duration(cfg.scheduler.stop_grace) + " to finish");
  const auto started = steady_clock::now();
  log_starting(log, opt, cfg);

  const auto commands = std::make_shared<command_settings>(cfg.commands);
  std::atomic<bool> superseded{false};
  daemon_parts d;
  const auto failed = [&](const std::string& what) {
    log.error("could not start: " + what);
    d.server.reset();
    d.scheduler.reset();
    d.store.reset();
    if (d.pools) d.pools->shutdown(std::chrono::seconds(1));
    return exit_start_failed;
  };
  const auto stopped_early = [&] {
    log.info("stopped during start-up");
    d.scheduler.reset();
    if (d.pools) d.pools->shutdown(std::chrono::seconds(1));
    return 0;
  };

  try {
    open_pools(d, cfg, log);
    pool::pool& lane = d.pools->get(lane_pool_name);
    probe_database(cfg, log);
    d.store = std::make_unique<sched::store>(lane, cfg.scheduler.schema);
    if (signals.stop_requested()) return stopped_early();
    if (opt.migrate) {
      migrate_schema(*d.store, cfg.scheduler.schema, log);
    } else {
      try {
        d.store->check_schema(true);  // Step 5: a schema that is behind stops the start
      } catch (const sched::schema_error& e) {
        return failed(std::string(e.what()) + " (or start with --migrate)");
      }
    }

    // The fleet's flow limits, when this file has a [flow] table (docs/flow-control.md).
    if (cfg.flow) {
      d.store->set_flow_limits(cfg.flow_limits());
      log.info("flow limits written: " + std::to_string(cfg.flow->size()) + " limited types");
    }

    // Step 6: the scheduler and its handlers; the node id is known from here on.
    sched::scheduler_settings ss = cfg.scheduler_settings();
    // Another process took this node id over: its claims are gone, so this one drains and exits
    // with an error (through the signal path, so the drain is the usual one).
    ss.on_superseded = [&superseded](const std::string&) {
      superseded = true;
      ::kill(::getpid(), SIGTERM);
    };
    d.scheduler = std::make_unique<sched::scheduler>(std::move(ss), lane, d.pools.get());
    type_map types = register_handlers(*d.scheduler, cfg, commands, log);
    check_server_budget(d, lane, log);
    log_policies(log, cfg);  // step 8
    if (signals.stop_requested()) return stopped_early();

    // Step 9: claiming starts; step 10: HTTP; step 11: the port file.
    d.scheduler->start();
    start_http(d, lane, cfg, std::move(types), commands, started);
    if (!opt.port_file.empty()) write_port_file(opt.port_file, d.server->port());
  } catch (const std::exception& e) {
    return failed(e.what());
  }

  log_serving(log, cfg, d.server->port(), d.scheduler->node_id(),
              std::chrono::duration_cast<milliseconds>(steady_clock::now() - started).count());

  // Only this thread reads `cfg` from here on; the API's payload check has its own copies and
  // reads the command policy through `commands`.
  while (signals.wait() == signal_watcher::event::reload)
    reload(opt, cfg, log, *commands, *d.store);

  drain(d, opt, log);
  if (superseded) {
    log.error("exiting: another process runs as node " + d.scheduler->node_id());
    return exit_start_failed;
  }
  return 0;
}

}  // namespace sluice::cli::serve_detail
