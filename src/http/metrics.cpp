#include "http/metrics.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>

namespace sluice::http {

std::string format_metric_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  std::array<char, 64> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
  if (ec != std::errc{}) return "NaN";
  return std::string(buf.data(), end);
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

std::string escape_help(std::string_view v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

void exposition_writer::family(std::string_view name, std::string_view type,
                               std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += escape_help(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void exposition_writer::series(std::string_view name, const labels& l) {
  out_ += name;
  if (!l.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& [k, v] : l) {
      if (!first) out_ += ',';
      first = false;
      out_ += k;
      out_ += "=\"";
      out_ += escape_label_value(v);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
}

void exposition_writer::sample(std::string_view name, const labels& l, double value) {
  series(name, l);
  out_ += format_metric_value(value);
  out_ += '\n';
}

void exposition_writer::sample(std::string_view name, const labels& l, std::uint64_t value) {
  series(name, l);
  out_ += std::to_string(value);
  out_ += '\n';
}

void exposition_writer::sample(std::string_view name, const labels& l, std::int64_t value) {
  series(name, l);
  out_ += std::to_string(value);
  out_ += '\n';
}

namespace {

// A family with one sample and no labels.
template <class Value>
void single(exposition_writer& w, std::string_view name, std::string_view type,
            std::string_view help, Value value) {
  w.family(name, type, help);
  w.sample(name, {}, value);
}

using labels = exposition_writer::labels;

constexpr std::array<sched::task_state, 9> all_states{
    sched::task_state::scheduled, sched::task_state::available, sched::task_state::running,
    sched::task_state::retryable, sched::task_state::succeeded, sched::task_state::failed,
    sched::task_state::cancelled, sched::task_state::paused,    sched::task_state::blocked};

// The outcomes task_runs records; the store counts each as "runs_<outcome>".
constexpr std::array<std::string_view, 6> run_outcomes{"succeeded", "failed", "timed_out",
                                                       "rescued",   "fenced", "cancelled"};

void pool_metrics(exposition_writer& w, const std::vector<pool::pool_stats>& pools) {
  w.family("sluice_pool_connections", "gauge",
           "Open connections of the pool by state: idle (checked in) or in_use (checked out).");
  for (const auto& p : pools) {
    w.sample("sluice_pool_connections", {{"pool", p.name}, {"state", "idle"}}, p.checked_in);
    w.sample("sluice_pool_connections", {{"pool", p.name}, {"state", "in_use"}}, p.checked_out);
  }
  const auto gauge = [&](std::string_view name, std::string_view help, auto field) {
    w.family(name, "gauge", help);
    for (const auto& p : pools)
      w.sample(name, {{"pool", p.name}}, field(p));
  };
  const auto counter = [&](std::string_view name, std::string_view help, auto field) {
    w.family(name, "counter", help);
    for (const auto& p : pools)
      w.sample(name, {{"pool", p.name}}, static_cast<std::uint64_t>(field(p)));
  };
  using ps = pool::pool_stats;
  gauge("sluice_pool_open_connections",
        "Connections the pool holds open, including those being checked or reset.",
        [](const ps& p) { return p.open; });
  gauge("sluice_pool_size_connections", "Configured pool size (connections kept open).",
        [](const ps& p) { return p.size; });
  gauge("sluice_pool_max_connections",
        "Most connections the pool may hold: size plus max_overflow.",
        [](const ps& p) { return p.max; });
  gauge("sluice_pool_overflow_connections", "Open connections beyond the configured size.",
        [](const ps& p) { return p.overflow; });
  gauge("sluice_pool_waiting_borrowers", "Borrowers waiting in acquire() for a connection.",
        [](const ps& p) { return p.waiting; });
  gauge("sluice_pool_peak_in_use_connections",
        "Most connections checked out at once since the pool started.",
        [](const ps& p) { return p.peak_checked_out; });
  gauge("sluice_pool_saturated",
        "1 while the server refuses new connections (53300/57P03) and the pool backs off.",
        [](const ps& p) { return p.saturated ? 1 : 0; });
  gauge("sluice_pool_closed", "1 once the pool is closed.",
        [](const ps& p) { return p.closed ? 1 : 0; });

  w.family("sluice_pool_acquire_wait_seconds", "histogram",
           "Time acquire() waited for a connection; immediate checkouts count as zero.");
  for (const auto& p : pools) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < std::size(p.wait_bucket_counts); ++i) {
      cumulative += p.wait_bucket_counts[i];
      const double bound = pool::wait_bucket_bounds_ms[i];
      // The last bucket is +Inf whatever its bound says, so the histogram always closes.
      const std::string le = i + 1 == std::size(p.wait_bucket_counts)
                                 ? std::string("+Inf")
                                 : format_metric_value(bound / 1000.0);
      w.sample("sluice_pool_acquire_wait_seconds_bucket", {{"pool", p.name}, {"le", le}},
               cumulative);
    }
    w.sample("sluice_pool_acquire_wait_seconds_sum", {{"pool", p.name}}, p.wait_sum_ms / 1000.0);
    w.sample("sluice_pool_acquire_wait_seconds_count", {{"pool", p.name}}, cumulative);
  }

  counter("sluice_pool_checkouts_total", "Connections lent by acquire().",
          [](const ps& p) { return p.checkouts; });
  counter("sluice_pool_acquire_timeouts_total",
          "acquire() calls that gave up after the pool's timeout.",
          [](const ps& p) { return p.timeouts; });
  counter("sluice_pool_server_refusals_total",
          "Connection attempts the server refused with 53300 (too many connections) or 57P03.",
          [](const ps& p) { return p.server_refusals; });
  counter("sluice_pool_connects_total", "Connections opened.",
          [](const ps& p) { return p.connects; });
  counter("sluice_pool_connect_failures_total",
          "Connection attempts that failed, refusals included.",
          [](const ps& p) { return p.connect_failures; });
  counter("sluice_pool_invalidations_total",
          "Connections discarded as broken or invalidated by their borrower.",
          [](const ps& p) { return p.invalidations; });
  counter("sluice_pool_recycles_total", "Connections closed because they reached their lifetime.",
          [](const ps& p) { return p.recycles; });
  counter("sluice_pool_idle_closes_total",
          "Connections closed for idleness or as overflow on return.",
          [](const ps& p) { return p.idle_closes; });
  counter("sluice_pool_pre_ping_failures_total",
          "Idle connections found dead by the pre-ping before lending (the borrower never saw "
          "them).",
          [](const ps& p) { return p.pings_failed; });
  counter("sluice_pool_leaks_total", "Leases reported as held longer than leak_threshold.",
          [](const ps& p) { return p.leaks; });
}

void server_metrics(exposition_writer& w, const history_sample& s) {
  if (!s.max_connections) return;
  single(w, "sluice_server_max_connections", "gauge",
         "The PostgreSQL server's max_connections, as last sampled.", *s.max_connections);
  w.family("sluice_server_connections", "gauge",
           "Server connections (pg_stat_activity) by application_name of sluice's pools, as "
           "last sampled; counts every process sharing those names.");
  for (const auto& [app, n] : s.connections)
    w.sample("sluice_server_connections", {{"application", app}}, n);
}

void scheduler_metrics(exposition_writer& w, const metrics_snapshot& m) {
  const auto& s = m.scheduler;
  w.family("sluice_scheduler_state", "gauge", "1 for the scheduler's current state on this node.");
  for (const auto st : {sched::scheduler_state::stopped, sched::scheduler_state::running,
                        sched::scheduler_state::draining}) {
    w.sample("sluice_scheduler_state", {{"state", sched::to_string(st)}}, st == s.state ? 1 : 0);
  }
  single(w, "sluice_scheduler_leader", "gauge", "1 while this node holds the leader lease.",
         s.leader ? 1 : 0);
  single(w, "sluice_scheduler_cycles_total", "counter",
         "Check cycles this node ran since it started.", s.cycles);
  single(w, "sluice_scheduler_cycle_errors_total", "counter",
         "Check cycles of this node that failed (nothing of them committed).", s.cycle_errors);
  if (m.last_cycle_age_s) {
    single(w, "sluice_scheduler_last_cycle_age_seconds", "gauge",
           "Seconds since this node's last check cycle ended.", *m.last_cycle_age_s);
  }
  single(w, "sluice_scheduler_workers", "gauge", "Handler threads of this node.", s.workers);
  single(w, "sluice_scheduler_running_handlers", "gauge", "Handlers running on this node now.",
         s.running);
  single(w, "sluice_scheduler_stuck_handlers", "gauge",
         "Handlers past their timeout plus stuck_grace that have not returned.", s.stuck);
}

void cluster_metrics(exposition_writer& w, const metrics_snapshot& m) {
  if (m.stats) {
    const auto& st = *m.stats;
    std::set<std::string> types;
    for (const auto outcome : run_outcomes) {
      const auto it = st.by_type.find("runs_" + std::string(outcome));
      if (it == st.by_type.end()) continue;
      for (const auto& [type, n] : it->second)
        types.insert(type);
    }
    w.family("sluice_task_runs_total", "counter",
             "Task runs recorded by every node, by type and outcome (cluster-wide, from the "
             "database; take max() across instances, not sum()).");
    for (const auto& type : types) {
      for (const auto outcome : run_outcomes) {
        std::int64_t n = 0;
        if (const auto it = st.by_type.find("runs_" + std::string(outcome));
            it != st.by_type.end()) {
          if (const auto v = it->second.find(type); v != it->second.end()) n = v->second;
        }
        w.sample("sluice_task_runs_total", {{"type", type}, {"outcome", outcome}}, n);
      }
    }
    const auto per_type = [&](std::string_view family, std::string_view metric,
                              std::string_view help) {
      w.family(family, "counter", help);
      if (const auto it = st.by_type.find(std::string(metric)); it != st.by_type.end()) {
        for (const auto& [type, n] : it->second)
          w.sample(family, {{"type", type}}, n);
      }
    };
    per_type("sluice_task_claims_total", "claimed",
             "Tasks claimed by every node, by type (cluster-wide, from the database).");
    per_type("sluice_task_fires_skipped_total", "skipped",
             "Fire times dropped by a misfire policy, by type (cluster-wide, from the database).");
    single(w, "sluice_cluster_cycles_total", "counter",
           "Check cycles recorded by every node (cluster-wide, from the database).",
           st.total("cycles"));
  }
  if (m.queues) {
    w.family("sluice_queue_tasks", "gauge", "Tasks in the database by type and state.");
    for (const auto& q : *m.queues) {
      for (const auto state : all_states) {
        const auto name = std::string(sched::to_string(state));
        const auto it = q.by_state.find(name);
        w.sample("sluice_queue_tasks", {{"type", q.type}, {"state", name}},
                 it == q.by_state.end() ? std::int64_t{0} : it->second);
      }
    }
    w.family("sluice_queue_lag_seconds", "gauge",
             "Age of the oldest due, unclaimed task of the type (0 when none is waiting).");
    for (const auto& q : *m.queues)
      w.sample("sluice_queue_lag_seconds", {{"type", q.type}}, q.lag_s);
  }
  if (m.flow) {
    w.family("sluice_flow_running", "gauge",
             "Running tasks of a flow-limited type, over all nodes.");
    for (const auto& f : *m.flow)
      w.sample("sluice_flow_running", {{"type", f.type}}, f.running);
    w.family("sluice_flow_max_running", "gauge",
             "The fleet-wide limit on running tasks of the type (per key when it has one).");
    for (const auto& f : *m.flow)
      if (f.limit.max_running)
        w.sample("sluice_flow_max_running", {{"type", f.type}}, *f.limit.max_running);
    w.family("sluice_flow_window_starts", "gauge",
             "Starts of a rate-limited type that its current rate window counts.");
    for (const auto& f : *m.flow)
      if (f.limit.rate)
        w.sample("sluice_flow_window_starts", {{"type", f.type}}, f.started_in_window);
    w.family("sluice_flow_rate_limit", "gauge",
             "The fleet-wide rate limit of the type: starts per rate window (per key when it has "
             "one).");
    for (const auto& f : *m.flow)
      if (f.limit.rate) w.sample("sluice_flow_rate_limit", {{"type", f.type}}, *f.limit.rate);
  }
  if (m.nodes) {
    int alive = 0;
    for (const auto& n : *m.nodes)
      alive += n.alive ? 1 : 0;
    single(w, "sluice_cluster_nodes_alive", "gauge",
           "Scheduler nodes whose heartbeat has not expired.", alive);
  }
}

void http_metrics(exposition_writer& w, const transport_stats& s, std::size_t max_connections) {
  single(w, "sluice_http_connections", "gauge", "Client connections open to the HTTP API now.",
         s.open);
  single(w, "sluice_http_max_connections", "gauge",
         "http.max_connections: client connections kept open at most (besides the reserve).",
         static_cast<std::uint64_t>(max_connections));
  single(w, "sluice_http_connections_accepted_total", "counter",
         "Client connections accepted by the HTTP API.", s.accepted);
  w.family("sluice_http_connections_dropped_total", "counter",
           "Client connections the HTTP API ended early, by reason: evicted (the oldest idle or "
           "slow one, closed to make room at max_connections), refused (no room at all), "
           "timed_out (a header, body, idle or write deadline passed).");
  w.sample("sluice_http_connections_dropped_total", {{"reason", "evicted"}}, s.evicted);
  w.sample("sluice_http_connections_dropped_total", {{"reason", "refused"}}, s.refused);
  w.sample("sluice_http_connections_dropped_total", {{"reason", "timed_out"}}, s.timed_out);
  single(w, "sluice_http_connections_reserved_total", "counter",
         "Connections taken on the reserve, which answers only /health and /ready, because "
         "max_connections were open and none could be closed.",
         s.reserved);
  single(w, "sluice_http_requests_total", "counter",
         "Requests whose header the HTTP API parsed: answered by a handler, or refused for "
         "their host, route, method, token, parameters or Content-Type.",
         s.requests);
  single(w, "sluice_http_malformed_requests_total", "counter",
         "Requests the HTTP transport refused itself: broken framing, a header or body over "
         "its limit, a target that is not a valid path.",
         s.bad_requests);
}

}  // namespace

std::string render_metrics(const metrics_snapshot& m) {
  exposition_writer w;
  w.family("sluice_build_info", "gauge", "Always 1; the version label names the running build.");
  w.sample("sluice_build_info", {{"version", m.version}}, 1);
  single(w, "sluice_uptime_seconds", "gauge", "Seconds since the daemon started.", m.uptime_s);
  single(w, "sluice_metrics_database_ok", "gauge",
         "1 when this scrape could read the scheduler's tables; 0 means the cluster-wide "
         "families are missing from it.",
         m.database_ok ? 1 : 0);
  pool_metrics(w, m.pools);
  if (m.server) server_metrics(w, *m.server);
  if (m.http) http_metrics(w, *m.http, m.http_max_connections);
  scheduler_metrics(w, m);
  cluster_metrics(w, m);
  return w.take();
}

}  // namespace sluice::http
