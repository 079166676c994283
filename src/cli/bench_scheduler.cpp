// `sluice bench scheduler`: what the engine costs and delivers, measured in a throwaway schema
// of the real server with a handler that does nothing.
//
//   drain    N due tasks inserted up front; a scheduler drains them. Tasks per second from
//            start() until every completion is committed, and the peak number of server
//            connections the node held (sampled from pg_stat_activity).
//   latency  tasks inserted one at a time (store::create) at a steady rate into the running,
//            idle-between-inserts scheduler; for each, the time from create() returning to its
//            handler starting.
//   idle     the scheduler with nothing to do: transactions per second it causes, from
//            pg_stat_database (xact_commit + xact_rollback of the database), less the reads of
//            the sampling connection itself.
//
// The schema is created and migrated at the start and dropped at the end (unless --keep).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/counting_connector.hpp"
#include "sluice/sched/scheduler.hpp"

namespace sluice::cli {
namespace {

using json = nlohmann::ordered_json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr const char* task_type = "bench.noop";

// The rows store::create() writes for a one-shot task due now, N at a time. $16: how many.
constexpr const char* insert_many_sql =
    "INSERT INTO {s}.tasks (type, name, payload, state, schedule_kind, schedule_spec, timezone,"
    " misfire_policy, misfire_grace_s, catch_up_limit, next_run_at, priority, max_attempts,"
    " backoff_base_ms, backoff_cap_ms, timeout_ms, pause_after_failures)"
    " SELECT $1, NULL, $2::jsonb, 'scheduled', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,"
    " $14, $15 FROM generate_series(1, $16)";
constexpr const char* count_succeeded_sql =
    "SELECT count(*) FROM {s}.tasks WHERE type = $1 AND state = 'succeeded'";
// The node's connections: its lane pool (by application_name) and its LISTEN connection, which
// the engine names after the lane ("<lane's name>/listen"; $2, the channel, is in its last
// statement).
constexpr const char* node_connections_sql =
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND (application_name = $1 OR (application_name = $1 || '/listen'"
    " AND position($2 in query) > 0))";
// The meter's reading: the database's transactions so far, the autovacuum / autoanalyze runs on
// its tables (their transactions count too) and the autovacuum workers busy in it now.
// pg_stat_force_next_flush() (15+) makes the reading's own transaction reach the statistics at once
// instead of up to 10 s later, so it is counted exactly once in a window that starts with it.
constexpr const char* meter_sql =
    "SELECT (SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database"
    "         WHERE datname = current_database()),"
    " (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint"
    "    FROM pg_stat_all_tables),"
    " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    "    AND backend_type = 'autovacuum worker')";
constexpr const char* meter_sql_15 =
    "SELECT (SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database"
    "         WHERE datname = current_database()),"
    " (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint"
    "    FROM pg_stat_all_tables),"
    " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    "    AND backend_type = 'autovacuum worker'),"
    " pg_stat_force_next_flush()";
// The catalogs that creating and dropping a schema of sluice's tables changes.
constexpr const char* catalog_vacuum_sql =
    "VACUUM (ANALYZE) pg_catalog.pg_class, pg_catalog.pg_attribute, pg_catalog.pg_attrdef,"
    " pg_catalog.pg_type, pg_catalog.pg_depend, pg_catalog.pg_constraint, pg_catalog.pg_index,"
    " pg_catalog.pg_sequence, pg_catalog.pg_namespace, pg_catalog.pg_trigger, pg_catalog.pg_proc,"
    " pg_catalog.pg_statistic";
// Client connections to the database that are not this benchmark's: their transactions would
// be counted in the idle figure.
constexpr const char* other_clients_sql =
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND backend_type = 'client backend' AND application_name NOT LIKE $1"
    " AND NOT (application_name = 'sluice/listen' AND position($2 in query) > 0)";

struct bench_options {
  common_options common;
  int tasks = 100000;
  int workers = 8;
  int prefetch = 500;
  int claim_batch = 500;
  double latency_rate = 100;
  double latency_seconds = 10;
  double idle_seconds = 30;
  double idle_settle_seconds = 12;
  std::string heartbeat_interval;  // empty: the configuration's
  int flow_max_running = 0;        // > 0: a fleet-wide limit on the bench type (its cost)
  int flow_rate = 0;               // > 0: a rate limit per flow_rate_period
  std::string flow_rate_period = "1h";
  bool keep = false;
};

std::string with_schema(std::string_view sql, const std::string& schema) {
  std::string out;
  const std::string quoted = "\"" + schema + "\"";
  for (std::size_t i = 0; i < sql.size(); ++i) {
    if (sql.compare(i, 3, "{s}") == 0) {
      out += quoted;
      i += 2;
    } else {
      out += sql[i];
    }
  }
  return out;
}

double seconds_between(steady_clock::time_point a, steady_clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Nearest-rank quantile of sorted values.
double quantile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

// Drops the benchmark's schema when the run ends, however it ends (unless asked to keep it).
class schema_guard {
 public:
  schema_guard(pg::connection& admin, std::string schema, bool keep)
      : admin_(admin), schema_(std::move(schema)), keep_(keep) {}
  schema_guard(const schema_guard&) = delete;
  schema_guard& operator=(const schema_guard&) = delete;
  ~schema_guard() {
    if (keep_) return;
    try {
      admin_.exec("DROP SCHEMA IF EXISTS \"" + schema_ + "\" CASCADE");
    } catch (const std::exception& e) {
      std::cerr << "sluice: could not drop schema " << schema_ << ": " << e.what() << '\n';
    }
  }

 private:
  pg::connection& admin_;
  std::string schema_;
  bool keep_;
};

// Handler start times of the latency phase, by task id.
class start_log {
 public:
  void enable() { on_.store(true, std::memory_order_release); }
  void record(std::int64_t id) {
    if (!on_.load(std::memory_order_acquire)) return;
    const auto now = steady_clock::now();
    const std::scoped_lock lock(mutex_);
    starts_.emplace(id, now);
  }
  std::optional<steady_clock::time_point> find(std::int64_t id) const {
    const std::scoped_lock lock(mutex_);
    const auto it = starts_.find(id);
    if (it == starts_.end()) return std::nullopt;
    return it->second;
  }

 private:
  std::atomic<bool> on_{false};
  mutable std::mutex mutex_;
  std::unordered_map<std::int64_t, steady_clock::time_point> starts_;  // guarded by mutex_
};

struct server_info {
  std::string version, database, fsync, synchronous_commit, full_page_writes;
  int max_connections = 0;
};

server_info read_server(pg::connection& c) {
  server_info s;
  const auto r = c.exec(
      "SELECT current_setting('server_version'), current_database(), current_setting('fsync'),"
      " current_setting('synchronous_commit'), current_setting('full_page_writes'),"
      " current_setting('max_connections')::int");
  s.version = r[0].get<std::string>(0);
  s.database = r[0].get<std::string>(1);
  s.fsync = r[0].get<std::string>(2);
  s.synchronous_commit = r[0].get<std::string>(3);
  s.full_page_writes = r[0].get<std::string>(4);
  s.max_connections = r[0].get<int>(5);
  return s;
}

// Waits until the scheduler has committed `target` successes. Fails when no progress was made
// for `stall` (with the engine's last error), so a broken run ends instead of hanging.
template <class Sample>
void wait_for_successes(const sched::scheduler& node, std::uint64_t target, milliseconds stall,
                        Sample&& sample) {
  std::uint64_t last = node.status().succeeded;
  auto last_progress = steady_clock::now();
  for (;;) {
    const auto st = node.status();
    if (st.succeeded >= target) return;
    const auto now = steady_clock::now();
    if (st.succeeded != last) {
      last = st.succeeded;
      last_progress = now;
    } else if (now - last_progress > stall) {
      throw command_error("the scheduler made no progress for " + format_ms(stall) + " (" +
                          std::to_string(st.succeeded) + " of " + std::to_string(target) +
                          " tasks done" +
                          (st.last_error.empty() ? "" : "; last error: " + st.last_error) + ")");
    }
    sample();
    // No signal announces a committed completion outside the engine: poll its counters.
    std::this_thread::sleep_for(milliseconds(5));
  }
}

void run_bench_scheduler(const bench_options& opt) {
  const daemon_config cfg = resolve_config(opt.common);
  const std::string conninfo = conninfo_of(cfg);

  char tag[32];
  std::snprintf(tag, sizeof tag, "%d_%04x", static_cast<int>(getpid()),
                static_cast<unsigned>(std::random_device{}() & 0xffff));
  const std::string schema = std::string("sluice_bench_") + tag;
  const std::string app = std::string("sluice-bench-") + tag;
  const std::string channel = schema + ".tasks";

  pg::connection admin = open_connection(cfg, app + "-admin");
  const server_info server = read_server(admin);
  schema_guard guard(admin, schema, opt.keep);

  auto connector = std::make_shared<counting_connector>();
  pool::settings lane_settings = cfg.lane;
  lane_settings.conninfo = conninfo;
  lane_settings.application_name = app + "-lane";
  lane_settings.pre_ping_window = std::chrono::seconds(30);  // as the daemon's lane default
  pool::pool lane(lane_settings, connector);
  sched::store store(lane, schema);
  store.migrate();
  if (opt.flow_max_running > 0 || opt.flow_rate > 0) {
    sched::flow_limit limit;
    if (opt.flow_max_running > 0) limit.max_running = opt.flow_max_running;
    if (opt.flow_rate > 0) {
      limit.rate = opt.flow_rate;
      limit.rate_period = parse_duration_option(opt.flow_rate_period, "--flow-rate-period");
    }
    store.set_flow_limits({{task_type, limit}});
  }

  sched::scheduler_settings ss = cfg.scheduler_settings();
  ss.schema = schema;
  ss.node_id = app;
  ss.workers = opt.workers;
  ss.prefetch = opt.prefetch;
  ss.max_prefetch = std::max(ss.max_prefetch, opt.prefetch);
  ss.claim_batch = opt.claim_batch;
  if (!opt.heartbeat_interval.empty()) {
    ss.heartbeat_interval = parse_duration_option(opt.heartbeat_interval, "--heartbeat-interval");
    ss.node_expiry = std::max(ss.node_expiry, 4 * ss.heartbeat_interval);
  }
  ss.connection_budget = lane_settings.max_connections() + (ss.listen ? 1 : 0);
  if (!ss.listen_conninfo.empty()) ss.listen_conninfo = conninfo;

  auto starts = std::make_shared<start_log>();
  sched::scheduler node(ss, lane);
  node.handle(task_type, [starts](sched::task_context& ctx) {
    starts->record(ctx.info().id);
    return sched::handler_result::success();
  });

  sched::task_spec spec;
  spec.type = task_type;
  spec.validate();
  const sched::schedule& when = spec.when;
  json out;
  out["server"] = {{"version", server.version},
                   {"database", server.database},
                   {"max_connections", server.max_connections},
                   {"fsync", server.fsync},
                   {"synchronous_commit", server.synchronous_commit},
                   {"full_page_writes", server.full_page_writes}};
  out["schema"] = schema;
  out["kept"] = opt.keep;
  out["settings"] = {{"flow_max_running", opt.flow_max_running},
                     {"flow_rate", opt.flow_rate},
                     {"workers", ss.workers},
                     {"prefetch", ss.prefetch},
                     {"claim_batch", ss.claim_batch},
                     {"lane_size", lane_settings.size},
                     {"lane_max_overflow", lane_settings.max_overflow},
                     {"listen", ss.listen},
                     {"poll_interval_ms", ss.poll_interval.count()},
                     {"idle_poll_max_ms", ss.idle_poll_max.count()},
                     {"heartbeat_interval_ms", ss.heartbeat_interval.count()}};

  // ---- drain ----
  const auto insert_start = steady_clock::now();
  admin.query(
      with_schema(insert_many_sql, schema), spec.type, pg::json_text{spec.payload},
      std::string(when.kind_name()), when.spec(), when.tz(),
      std::string(sched::to_string(spec.misfire)), static_cast<int>(spec.misfire_grace.count()),
      spec.catch_up_limit, when.at(), spec.priority, spec.max_attempts,
      static_cast<std::int64_t>(spec.backoff_base.count()),
      static_cast<std::int64_t>(spec.backoff_cap.count()),
      static_cast<std::int64_t>(spec.timeout.count()), spec.pause_after_failures, opt.tasks);
  const double insert_s = seconds_between(insert_start, steady_clock::now());

  int peak_connections = 0;
  int samples = 0;
  auto next_sample = steady_clock::now();
  auto sample_connections = [&] {
    if (steady_clock::now() < next_sample) return;
    next_sample = steady_clock::now() + milliseconds(50);
    peak_connections = std::max(
        peak_connections,
        static_cast<int>(admin.query(node_connections_sql, lane_settings.application_name, channel)
                             .one<std::int64_t>()));
    ++samples;
  };

  const auto drain_start = steady_clock::now();
  node.start();
  wait_for_successes(node, static_cast<std::uint64_t>(opt.tasks), std::chrono::seconds(30),
                     sample_connections);
  const auto drain_end = steady_clock::now();
  const auto after_drain = node.status();
  const double drain_s = seconds_between(drain_start, drain_end);
  const auto succeeded_rows =
      admin.query(with_schema(count_succeeded_sql, schema), std::string(task_type))
          .one<std::int64_t>();
  if (succeeded_rows != opt.tasks) {
    throw command_error("drain: the scheduler reported " + std::to_string(after_drain.succeeded) +
                        " successes but the table holds " + std::to_string(succeeded_rows) +
                        " succeeded tasks of " + std::to_string(opt.tasks));
  }
  out["drain"] = {{"tasks", opt.tasks},
                  {"insert_s", insert_s},
                  {"seconds", drain_s},
                  {"tasks_per_s", drain_s > 0 ? opt.tasks / drain_s : 0.0},
                  {"connections_peak", peak_connections},
                  {"connection_samples", samples},
                  {"connections_budget", ss.connection_budget},
                  {"cycles", after_drain.cycles},
                  {"tasks_per_cycle",
                   after_drain.cycles > 0
                       ? static_cast<double>(opt.tasks) / static_cast<double>(after_drain.cycles)
                       : 0.0},
                  {"cycle_errors", after_drain.cycle_errors}};

  // ---- latency ----
  std::uint64_t done_so_far = after_drain.succeeded;
  if (opt.latency_seconds > 0 && opt.latency_rate > 0) {
    pool::settings insert_settings = lane_settings;
    insert_settings.name = "insert";
    insert_settings.size = 1;
    insert_settings.max_overflow = 0;
    insert_settings.application_name = app + "-insert";
    pool::pool insert_pool(insert_settings);
    sched::store inserter(insert_pool, schema);
    // Warm-up: the connection and its prepared INSERT exist before the first measured task.
    inserter.create(spec);
    ++done_so_far;
    wait_for_successes(node, done_so_far, std::chrono::seconds(30), [] {});

    starts->enable();
    const auto count =
        static_cast<std::size_t>(std::llround(opt.latency_rate * opt.latency_seconds));
    struct sent {
      std::int64_t id;
      steady_clock::time_point called, returned;
    };
    std::vector<sent> sent_tasks;
    sent_tasks.reserve(count);
    const auto period = std::chrono::duration_cast<steady_clock::duration>(
        std::chrono::duration<double>(1.0 / opt.latency_rate));
    const auto phase_start = steady_clock::now();
    for (std::size_t i = 0; i < count; ++i) {
      // Pacing: the arrival rate is what is being set, so the loop sleeps to its next slot.
      std::this_thread::sleep_until(phase_start + period * static_cast<long>(i));
      const auto called = steady_clock::now();
      const std::int64_t id = inserter.create(spec);
      sent_tasks.push_back({id, called, steady_clock::now()});
    }
    const double sending_s = seconds_between(phase_start, steady_clock::now());
    done_so_far += count;
    wait_for_successes(node, done_so_far, std::chrono::seconds(30), [] {});
    insert_pool.close(std::chrono::seconds(1));

    std::vector<double> latency_ms, from_call_ms, insert_ms;
    std::size_t missing = 0, before_return = 0;
    for (const auto& s : sent_tasks) {
      insert_ms.push_back(seconds_between(s.called, s.returned) * 1000);
      const auto started = starts->find(s.id);
      if (!started) {
        ++missing;
        continue;
      }
      // The NOTIFY goes out at commit, before create() has read its answer: a handler may start
      // first. Such tasks count as 0 here; from_call_* includes the insert's round trip.
      if (*started < s.returned) ++before_return;
      latency_ms.push_back(std::max(0.0, seconds_between(s.returned, *started) * 1000));
      from_call_ms.push_back(seconds_between(s.called, *started) * 1000);
    }
    std::sort(latency_ms.begin(), latency_ms.end());
    std::sort(insert_ms.begin(), insert_ms.end());
    std::sort(from_call_ms.begin(), from_call_ms.end());
    double sum = 0;
    for (const double v : latency_ms)
      sum += v;
    out["latency"] = {
        {"rate_per_s", opt.latency_rate},
        {"seconds", sending_s},
        {"tasks", count},
        {"p50_ms", quantile(latency_ms, 0.50)},
        {"p99_ms", quantile(latency_ms, 0.99)},
        {"max_ms", latency_ms.empty() ? 0.0 : latency_ms.back()},
        {"mean_ms", latency_ms.empty() ? 0.0 : sum / static_cast<double>(latency_ms.size())},
        {"started_before_insert_returned", before_return},
        {"missing", missing},
        {"from_call_p50_ms", quantile(from_call_ms, 0.50)},
        {"from_call_p99_ms", quantile(from_call_ms, 0.99)},
        {"insert_p50_ms", quantile(insert_ms, 0.50)},
        {"insert_p99_ms", quantile(insert_ms, 0.99)}};
  } else {
    out["latency"] = nullptr;
  }

  // ---- idle ----
  if (opt.idle_seconds > 0) {
    // The meter: a connection of its own, opened before the window, whose only transaction
    // inside the window is its first reading.
    pg::connection meter = open_connection(cfg, app + "-meter");
    const char* reading_sql = meter.server_version() >= 150000 ? meter_sql_15 : meter_sql;
    struct reading {
      std::int64_t transactions, autovacuums, autovacuum_workers;
    };
    auto read_meter = [&] {
      const auto r = meter.exec(reading_sql);
      return reading{r[0].get<std::int64_t>(0), r[0].get<std::int64_t>(1),
                     r[0].get<std::int64_t>(2)};
    };
    // Vacuumed now, the drain's dead rows cannot bring autovacuum into the window (what the idle
    // node itself writes still may, and is counted). The catalogs too: creating and dropping
    // benchmark schemas leaves dead rows there. Without the privilege to vacuum a catalog the
    // server skips it with a warning; that only makes the figure noisier.
    meter.exec(with_schema(
        "VACUUM (ANALYZE) {s}.tasks, {s}.task_runs, {s}.cycles, {s}.stats, {s}.nodes, {s}.leader",
        schema));
    try {
      meter.exec(catalog_vacuum_sql);
    } catch (const pg::sql_error& e) {
      std::cerr << "sluice: could not vacuum the catalogs (" << e.message()
                << "): autovacuum may add to the idle figure\n";
    }
    // Transactions of the phases above reach pg_stat_database up to 10 s late (backends flush
    // their statistics when idle, at most once a second, else after 10 s), and the node backs
    // off its polling meanwhile: let both settle.
    std::this_thread::sleep_for(std::chrono::duration<double>(opt.idle_settle_seconds));
    // Autovacuum cleaning up after the drain would be counted: wait for it to finish (no
    // signal announces that; poll, within a bound).
    const auto vacuum_wait_start = steady_clock::now();
    while (read_meter().autovacuum_workers > 0 &&
           steady_clock::now() - vacuum_wait_start < std::chrono::seconds(120)) {
      std::this_thread::sleep_for(milliseconds(250));
    }
    const double vacuum_wait_s = seconds_between(vacuum_wait_start, steady_clock::now());
    const auto before = node.status();
    const auto pings_before = connector->pings();
    const auto window_start = steady_clock::now();
    const reading first = read_meter();
    std::this_thread::sleep_for(std::chrono::duration<double>(opt.idle_seconds));
    const reading last = read_meter();
    const double window_s = seconds_between(window_start, steady_clock::now());
    const auto after = node.status();
    const auto pings_after = connector->pings();
    const auto others = meter.query(other_clients_sql, app + "-%", channel).one<std::int64_t>();
    const std::int64_t transactions =
        std::max<std::int64_t>(0, last.transactions - first.transactions - 1);
    out["idle"] = {{"seconds", window_s},
                   {"settle_seconds", opt.idle_settle_seconds},
                   {"autovacuum_wait_s", vacuum_wait_s},
                   {"transactions", transactions},
                   {"tx_per_s", window_s > 0 ? static_cast<double>(transactions) / window_s : 0.0},
                   {"cycles", after.cycles - before.cycles},
                   {"heartbeats_expected",
                    window_s / std::chrono::duration<double>(ss.heartbeat_interval).count()},
                   {"pre_pings", pings_after - pings_before},
                   // What the node itself caused: each cycle, heartbeat and pre-ping is one
                   // transaction (an empty query counts as one too).
                   {"node_transactions_estimate",
                    static_cast<double>(after.cycles - before.cycles + pings_after - pings_before) +
                        window_s / std::chrono::duration<double>(ss.heartbeat_interval).count()},
                   {"autovacuum_runs", last.autovacuums - first.autovacuums},
                   {"poll_ms_at_end", after.current_poll.count()},
                   {"other_clients", others}};
  } else {
    out["idle"] = nullptr;
  }

  node.stop();
  lane.close(std::chrono::seconds(1));

  if (opt.common.json) {
    std::cout << out.dump() << '\n';
    return;
  }
  const auto& d = out["drain"];
  std::printf("server: PostgreSQL %s, database %s, fsync %s, synchronous_commit %s\n",
              server.version.c_str(), server.database.c_str(), server.fsync.c_str(),
              server.synchronous_commit.c_str());
  if (opt.keep) std::printf("schema kept: %s\n", schema.c_str());
  std::printf("node: %d workers, prefetch %d, claim batch %d, lane %d+%d, listen %s\n", ss.workers,
              ss.prefetch, ss.claim_batch, lane_settings.size, lane_settings.max_overflow,
              ss.listen ? "on" : "off");
  std::printf(
      "drain: %d tasks in %.3f s = %.0f tasks/s; %llu cycles (%.1f tasks each); peak %d server "
      "connections (budget %d); insert took %.3f s\n",
      opt.tasks, d["seconds"].get<double>(), d["tasks_per_s"].get<double>(),
      static_cast<unsigned long long>(after_drain.cycles), d["tasks_per_cycle"].get<double>(),
      peak_connections, ss.connection_budget, insert_s);
  if (!out["latency"].is_null()) {
    const auto& l = out["latency"];
    std::printf(
        "latency: %zu tasks at %.0f/s, create() returned -> handler started: p50 %.3f ms, p99 "
        "%.3f ms, max %.3f ms (create() itself: p50 %.3f ms)\n",
        l["tasks"].get<std::size_t>(), opt.latency_rate, l["p50_ms"].get<double>(),
        l["p99_ms"].get<double>(), l["max_ms"].get<double>(), l["insert_p50_ms"].get<double>());
  }
  if (!out["idle"].is_null()) {
    const auto& i = out["idle"];
    std::printf(
        "idle: %lld transactions in %.1f s = %.2f tx/s; the node's own about %.0f (%llu cycles, "
        "%.1f heartbeats, %llu pre-pings), %lld autovacuum/analyze runs\n",
        static_cast<long long>(i["transactions"].get<std::int64_t>()), i["seconds"].get<double>(),
        i["tx_per_s"].get<double>(), i["node_transactions_estimate"].get<double>(),
        static_cast<unsigned long long>(i["cycles"].get<std::uint64_t>()),
        i["heartbeats_expected"].get<double>(),
        static_cast<unsigned long long>(i["pre_pings"].get<std::uint64_t>()),
        static_cast<long long>(i["autovacuum_runs"].get<std::int64_t>()));
    if (i["other_clients"].get<std::int64_t>() > 0) {
      std::printf(
          "warning: %lld other clients were connected to the database; their transactions are "
          "counted in the idle figure (use a database of its own)\n",
          static_cast<long long>(i["other_clients"].get<std::int64_t>()));
    }
  }
}

}  // namespace

void register_bench_scheduler(CLI::App& bench) {
  auto opt = std::make_shared<bench_options>();
  auto* cmd = bench.add_subcommand(
      "scheduler", "Drain rate, pick-up latency and idle load of the scheduler (throwaway schema)");
  add_common_options(*cmd, opt->common, /*json=*/true, /*schema=*/false);
  cmd->add_option("--tasks", opt->tasks, "Tasks drained")
      ->check(CLI::Range(1, 100'000'000))
      ->capture_default_str();
  cmd->add_option("--workers", opt->workers, "Handler threads")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--prefetch", opt->prefetch, "Tasks claimed beyond the free workers")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  cmd->add_option("--claim-batch", opt->claim_batch, "Most tasks claimed per type per cycle")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  cmd->add_option("--flow-max-running", opt->flow_max_running,
                  "A fleet-wide limit on running bench tasks (flow control), to measure its cost")
      ->check(CLI::Range(0, 1'000'000'000));
  cmd->add_option("--flow-rate", opt->flow_rate,
                  "A rate limit on the bench tasks per --flow-rate-period, to measure its cost")
      ->check(CLI::Range(0, 2'000'000'000));
  cmd->add_option("--flow-rate-period", opt->flow_rate_period, "The rate limit's period")
      ->capture_default_str();
  cmd->add_option("--latency-rate", opt->latency_rate, "Tasks created per second (latency phase)")
      ->check(CLI::Range(0.1, 100000.0))
      ->capture_default_str();
  cmd->add_option("--latency-seconds", opt->latency_seconds, "Length of the latency phase; 0: skip")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--idle-seconds", opt->idle_seconds, "Length of the idle window; 0: skip")
      ->check(CLI::Range(0.0, 86400.0))
      ->capture_default_str();
  cmd->add_option("--idle-settle-seconds", opt->idle_settle_seconds,
                  "Wait before the idle window, so the busy phases' statistics have landed and "
                  "the node has backed off")
      ->check(CLI::Range(0.0, 3600.0))
      ->capture_default_str();
  cmd->add_option("--heartbeat-interval", opt->heartbeat_interval,
                  "Override scheduler.heartbeat_interval (e.g. 10s) to see its share of the idle "
                  "load");
  cmd->add_flag("--keep", opt->keep,
                "Keep the schema (its name is printed) instead of dropping it");
  cmd->callback([opt] { run_bench_scheduler(*opt); });
}

}  // namespace sluice::cli
