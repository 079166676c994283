#include "http/readiness.hpp"

#include <algorithm>
#include <exception>

#include "sluice/pg/connection.hpp"

namespace sluice::http {

using std::chrono::duration;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

check_result check_database(pool::pool& lane, milliseconds acquire_timeout) {
  check_result r;
  const auto started = steady_clock::now();
  try {
    auto lease = lane.acquire_for(acquire_timeout);
    lease->exec("SELECT 1");
    r.detail["latency_ms"] = duration<double, std::milli>(steady_clock::now() - started).count();
  } catch (const pool::pool_timeout& e) {
    r.ok = false;
    r.reason = "no connection from pool '" + lane.name() + "' within " +
               std::to_string(acquire_timeout.count()) + " ms: " + e.what();
  } catch (const pool::pool_closed&) {
    r.ok = false;
    r.reason = "pool '" + lane.name() + "' is closed";
  } catch (const std::exception& e) {
    r.ok = false;
    r.reason = std::string("SELECT 1 failed: ") + e.what();
  }
  return r;
}

pool_pressure::pool_pressure(milliseconds sustain, milliseconds timeout_memory)
    : sustain_(sustain), timeout_memory_(timeout_memory) {}

check_result pool_pressure::check(const std::vector<pool::pool_stats>& pools,
                                  steady_clock::time_point now) {
  const std::scoped_lock lock(mutex_);
  check_result r;
  json per_pool = json::object();
  for (const auto& p : pools) {
    auto [it, first] = seen_.try_emplace(p.name);
    seen& s = it->second;
    // Timeouts before the first look cannot be dated: only growth seen since counts.
    if (!first && p.timeouts > s.timeouts) s.last_timeout = now;
    s.timeouts = p.timeouts;
    const bool short_now = p.checked_out >= p.max && p.waiting > 0;
    if (!short_now) {
      s.short_since.reset();
    } else if (!s.short_since) {
      s.short_since = now;
    }

    std::string problem;
    if (p.closed) {
      problem = "closed";
    } else if (short_now && now - *s.short_since >= sustain_) {
      problem =
          "exhausted: " + std::to_string(p.checked_out) + " of " + std::to_string(p.max) +
          " connections checked out, " + std::to_string(p.waiting) + " waiting, for " +
          std::to_string(std::chrono::duration_cast<milliseconds>(now - *s.short_since).count()) +
          " ms";
    } else if (s.last_timeout && now - *s.last_timeout <= timeout_memory_ &&
               p.checked_out >= p.max) {
      // Only while every connection is still lent: timeouts of a pool that could not connect
      // (the database was down) are the database check's business, and once it connects again
      // the pool is fine.
      problem =
          "exhausted: a borrower timed out waiting for a connection " +
          std::to_string(std::chrono::duration_cast<milliseconds>(now - *s.last_timeout).count()) +
          " ms ago (" + std::to_string(p.timeouts) + " timeouts in all)";
    } else if (p.saturated) {
      problem = "saturated: the server refused new connections; backing off";
      if (!p.last_connect_error.empty()) problem += " (" + p.last_connect_error + ")";
    }
    per_pool[p.name] = problem.empty() ? json("ok") : json(problem);
    if (!problem.empty()) {
      r.ok = false;
      r.reason += (r.reason.empty() ? "" : "; ") + ("pool '" + p.name + "' is " + problem);
    }
  }
  r.detail["pools"] = std::move(per_pool);
  return r;
}

milliseconds scheduler_stall_limit(milliseconds idle_poll_max) noexcept {
  return std::max<milliseconds>(idle_poll_max * 3, std::chrono::seconds(10));
}

check_result check_scheduler(const sched::scheduler_status& status, milliseconds idle_poll_max,
                             steady_clock::time_point now) {
  check_result r;
  r.detail["state"] = sched::to_string(status.state);
  const auto limit = scheduler_stall_limit(idle_poll_max);
  if (status.state != sched::scheduler_state::running) {
    r.ok = false;
    r.reason = "scheduler is " + std::string(sched::to_string(status.state));
    return r;
  }
  if (status.superseded) {
    r.ok = false;
    r.reason = status.last_error;
    return r;
  }
  if (status.last_cycle_at == steady_clock::time_point{}) {
    // Started, first cycle not finished yet: alive as long as it started recently.
    const auto since_start = now - status.started_at;
    r.detail["last_cycle_age_s"] = nullptr;
    if (since_start > limit) {
      r.ok = false;
      r.reason =
          "scheduler has not completed a check cycle in " +
          std::to_string(std::chrono::duration_cast<std::chrono::seconds>(since_start).count()) +
          " s since it started";
    }
    return r;
  }
  const auto age = now - status.last_cycle_at;
  r.detail["last_cycle_age_s"] = duration<double>(age).count();
  r.detail["limit_s"] = duration<double>(limit).count();
  if (age > limit) {
    r.ok = false;
    r.reason = "scheduler's last check cycle ended " +
               std::to_string(std::chrono::duration_cast<std::chrono::seconds>(age).count()) +
               " s ago (limit " +
               std::to_string(std::chrono::duration_cast<std::chrono::seconds>(limit).count()) +
               " s)";
  }
  if (!status.last_error.empty()) r.detail["last_error"] = status.last_error;
  // Not a readiness failure (polling still finds the work), but said where operators look.
  if (!status.listen_problem.empty()) r.detail["listen_problem"] = status.listen_problem;
  return r;
}

json readiness_json(const std::vector<std::pair<std::string, check_result>>& checks, bool& ready) {
  ready = true;
  json out = json::object();
  for (const auto& [name, c] : checks) {
    json entry = c.detail.is_object() ? c.detail : json::object();
    entry["ok"] = c.ok;
    if (!c.ok) entry["reason"] = c.reason;
    out[name] = std::move(entry);
    ready = ready && c.ok;
  }
  return {{"status", ready ? "ready" : "not_ready"}, {"checks", std::move(out)}};
}

}  // namespace sluice::http
