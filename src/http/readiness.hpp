#pragma once

// The checks behind GET /ready: the database answers, no pool is exhausted or refused by the
// server, and the scheduler's check-cycle loop is alive. Each check says ok or why not.
//
// Thread-safety: every function is thread-safe. check_database() blocks for at most about its
// timeout plus one round trip; the others never block.

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
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

// The pools' verdict for /ready. Not ready when a pool is closed, saturated (the server refused
// new connections and the pool is backing off), or exhausted: every connection lent with
// borrowers waiting for at least `sustain` (as seen by successive calls), or a borrower timed out
// in acquire() within the last `timeout_memory` and every connection is still lent. A queue that
// forms and drains within a moment is what a pool is for and does not make the node unready (a
// dashboard's parallel requests on the lane would otherwise flip /ready to 503 and back).
// Thread-safety: check() is thread-safe.
class pool_pressure {
 public:
  explicit pool_pressure(std::chrono::milliseconds sustain = std::chrono::seconds(2),
                         std::chrono::milliseconds timeout_memory = std::chrono::seconds(30));
  [[nodiscard]] check_result check(const std::vector<pool::pool_stats>& pools,
                                   std::chrono::steady_clock::time_point now);

 private:
  struct seen {
    std::uint64_t timeouts = 0;
    std::optional<std::chrono::steady_clock::time_point> short_since;   // all lent + waiting
    std::optional<std::chrono::steady_clock::time_point> last_timeout;  // timeouts grew
  };
  std::chrono::milliseconds sustain_;
  std::chrono::milliseconds timeout_memory_;
  std::mutex mutex_;
  std::map<std::string, seen> seen_;
};

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
