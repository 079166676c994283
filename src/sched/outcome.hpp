#pragma once

// The outcome policy: what a finished run, or a claim found late, does to its task. Pure
// functions of the task and the clock; the completer writes what they decide.

#include <cstdint>
#include <optional>
#include <string>

#include "sluice/sched/schedule.hpp"
#include "sluice/sched/task.hpp"

namespace sluice::sched::detail {

// One task's change after a run (or after a claim that its misfire policy skipped).
struct outcome_row {
  std::int64_t id = 0;
  std::int64_t token = 0;
  std::string type;
  int attempt = 0;
  std::string outcome;  // succeeded, failed, timed_out; "skipped" (misfire, no run)
  std::string new_state;
  std::optional<time_point> next_run_at;
  bool reset_attempt = false;
  std::optional<std::string> error;
  int consecutive_failures = 0;
  std::optional<time_point> fire_time;
  time_point started_at;
  time_point finished_at;
  std::string detail;  // JSON or empty
  bool counts_run = true;
  std::uint64_t skipped = 0;  // fire times dropped by the misfire policy
};

// The run of `t` for `fire_time`, started at `started_at`, ended now: ok, failed, or timed out.
// Retries with backoff while attempts remain; a recurring task moves to its next fire time
// (applying its misfire policy when fire times were missed) and pauses after
// `pause_after_failures` consecutive failed runs.
[[nodiscard]] outcome_row decide_outcome(const task& t, time_point fire_time, time_point started_at,
                                         bool ok, bool timed_out, std::string error,
                                         std::string detail);

// A claim of a recurring task found long after its fire time. `fire_time` may move to the run
// the policy keeps; `skipped` counts fire times dropped. Returns an outcome when the run is
// skipped altogether (the task is rescheduled without running), nothing when it runs.
struct misfire_on_claim {
  std::optional<outcome_row> skip;  // the task does not run: write this instead
  std::uint64_t skipped = 0;        // fire times dropped (counted in the cycle log)
};
[[nodiscard]] misfire_on_claim decide_misfire_on_claim(const task& t, time_point& fire_time,
                                                       time_point now);

}  // namespace sluice::sched::detail
