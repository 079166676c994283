#pragma once

// The checks behind GET /ready: the database answers, no pool is exhausted or refused by the
// server, and the scheduler's check-cycle loop is alive. Each check says ok or why not.
//
// Thread-safety: every function is thread-safe. check_database() blocks for at most about its
// timeout plus one round trip; the others never block.

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "http/json.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/scheduler.hpp"

namespace sluice::http {

struct check_result {
  bool ok = true;
  std::string reason;            // empty when ok
  json detail = json::object();  // numbers behind the verdict
};

// SELECT 1 through `lane`, waiting at most `acquire_timeout` for a connection.
[[nodiscard]] check_result check_database(pool::pool& lane,
                                          std::chrono::milliseconds acquire_timeout);

// Not ready when any pool is closed, exhausted (every connection lent and borrowers waiting), or
// saturated (the server refused new connections and the pool is backing off).
[[nodiscard]] check_result check_pools(const std::vector<pool::pool_stats>& pools);

// How long the scheduler may go without a check cycle before it counts as stuck: three idle
// polls, and never less than 10 s.
[[nodiscard]] std::chrono::milliseconds scheduler_stall_limit(
    std::chrono::milliseconds idle_poll_max) noexcept;

// Not ready unless the scheduler is running and its last cycle ended within
// scheduler_stall_limit(idle_poll_max) of `now`.
[[nodiscard]] check_result check_scheduler(const sched::scheduler_status& status,
                                           std::chrono::milliseconds idle_poll_max,
                                           std::chrono::steady_clock::time_point now);

// {"status": "ready" | "not_ready", "checks": {name: {"ok": .., "reason": .., ...detail}}};
// ready when every check is ok.
[[nodiscard]] json readiness_json(const std::vector<std::pair<std::string, check_result>>& checks,
                                  bool& ready);

}  // namespace sluice::http
