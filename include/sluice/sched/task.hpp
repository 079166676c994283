#pragma once

// The task model: what a user schedules (task_spec), what the database holds (task), and one
// execution of it (task_run).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "sluice/sched/schedule.hpp"

namespace sluice::sched {

using namespace std::chrono_literals;

// scheduled: waiting for next_run_at.   available: due now (run-now).   running: claimed by a node.
// retryable: failed, waiting for its backoff.   succeeded / failed / cancelled: final (one-shot).
// paused: not run until resumed (by hand, or after pause_after_failures consecutive failures).
// blocked: waits for the tasks it runs after (task_spec::after) to succeed.
enum class task_state {
  scheduled,
  available,
  running,
  retryable,
  succeeded,
  failed,
  cancelled,
  paused,
  blocked
};

[[nodiscard]] std::string_view to_string(task_state s) noexcept;
// Throws std::invalid_argument naming the bad value.
[[nodiscard]] task_state parse_task_state(std::string_view text);

// What add_task() does when a live task (scheduled, available, running, retryable or paused)
// already holds the new task's unique_key: the semantics of the SQL API's add_task
// (docs/producers.md).
enum class conflict_mode {
  keep,     // add nothing; the existing task is the answer
  replace,  // replace the existing task's payload and schedule (refused while it is running)
};

// "keep", "replace".
[[nodiscard]] std::string_view to_string(conflict_mode mode) noexcept;
// Accepts those names. Throws schedule_error naming the bad value.
[[nodiscard]] conflict_mode parse_conflict_mode(std::string_view text);

// What to schedule. validate() throws schedule_error naming the bad field.
struct task_spec {
  std::string type;                 // selects the handler: [A-Za-z0-9_.:-]{1,100}
  std::optional<std::string> name;  // unique across tasks when set
  std::string payload = "{}";       // JSON object text, handed to the handler
  schedule when = schedule::once(std::chrono::system_clock::time_point{});  // epoch: run now
  int priority = 0;      // -1000..1000, higher first among due tasks
  int max_attempts = 3;  // per occurrence
  std::chrono::milliseconds backoff_base = 1s;
  std::chrono::milliseconds backoff_cap = 1h;
  std::chrono::milliseconds timeout = 60s;
  misfire_policy misfire = misfire_policy::coalesce;
  std::chrono::seconds misfire_grace = 60s;
  int catch_up_limit = 10;
  int pause_after_failures =
      0;  // recurring tasks: pause after N consecutive failed occurrences; 0 = never
  // At most one live task holds a key at a time (1-200 bytes, no NUL); keys are global across
  // types. nullopt: no deduplication.
  std::optional<std::string> unique_key;
  conflict_mode on_conflict = conflict_mode::keep;  // what a taken unique_key does

  void validate() const;
};

struct task {
  std::int64_t id = 0;
  std::string type;
  std::optional<std::string> name;
  std::string payload;
  task_state state = task_state::scheduled;
  std::string schedule_kind;
  std::string schedule_spec;
  std::string timezone;
  std::string misfire_policy;
  int misfire_grace_s = 0;
  int catch_up_limit = 0;
  std::optional<time_point> next_run_at;
  int priority = 0;
  int attempt = 0;
  int max_attempts = 0;
  std::int64_t backoff_base_ms = 0;
  std::int64_t backoff_cap_ms = 0;
  std::int64_t timeout_ms = 0;
  int pause_after_failures = 0;
  std::int64_t claim_token = 0;
  std::optional<std::string> claimed_by;
  std::optional<time_point> claimed_at;
  std::optional<time_point> lease_until;
  std::optional<time_point> fire_time;
  std::optional<std::string> last_error;
  std::optional<time_point> last_run_at;
  std::optional<time_point> last_success_at;
  int consecutive_failures = 0;
  std::int64_t runs = 0;
  time_point created_at;
  time_point updated_at;
  std::optional<std::string> unique_key;

  // The parsed schedule (throws schedule_error if the row was edited into nonsense).
  [[nodiscard]] schedule parsed_schedule() const;
};

struct task_run {
  std::int64_t id = 0;
  std::int64_t task_id = 0;
  std::string type;
  int attempt = 0;
  std::int64_t claim_token = 0;
  std::string node;
  std::optional<time_point> fire_time;
  time_point started_at;
  time_point finished_at;
  std::string outcome;  // succeeded, failed, timed_out, rescued, fenced, cancelled
  std::optional<std::string> error;
  std::optional<std::string> detail;  // JSON
  std::string recorded_by;
  [[nodiscard]] double duration_ms() const;
};

}  // namespace sluice::sched
