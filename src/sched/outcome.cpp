#include "sched/outcome.hpp"

#include <chrono>
#include <exception>
#include <utility>

#include "sluice/log.hpp"
#include "sluice/sched/backoff.hpp"

namespace sluice::sched::detail {
namespace {

using std::chrono::milliseconds;

// The next fire time of a recurring task after it ran for `fire`, applying its misfire policy
// when fire times were missed meanwhile.
std::optional<time_point> next_recurring(const task& t, const schedule& s, time_point fire,
                                         time_point now, std::uint64_t& skipped) {
  const auto next = s.next_after(fire);
  if (!next || *next > now) return next;
  const auto plan = plan_misfire(s, *next, now, parse_misfire_policy(t.misfire_policy),
                                 std::chrono::seconds(t.misfire_grace_s), t.catch_up_limit);
  skipped += plan.skipped;
  if (!plan.runs.empty()) return plan.runs.front();
  return plan.next_run_at;
}

// The fields every outcome of a claim of `t` carries: which task, which claim, which attempt.
outcome_row outcome_of_claim(const task& t, time_point fire_time) {
  outcome_row o;
  o.id = t.id;
  o.token = t.claim_token;
  o.type = t.type;
  o.attempt = t.attempt;
  o.fire_time = fire_time;
  return o;
}

}  // namespace

outcome_row decide_outcome(const task& t, time_point fire_time, time_point started_at, bool ok,
                           bool timed_out, std::string error, std::string detail) {
  outcome_row o = outcome_of_claim(t, fire_time);
  o.started_at = started_at;
  o.finished_at = std::chrono::system_clock::now();
  o.detail = std::move(detail);
  const time_point now = o.finished_at;
  schedule s = schedule::every(std::chrono::seconds(1));
  bool recurring = false;
  try {
    s = t.parsed_schedule();
    recurring = s.recurring();
  } catch (const std::exception& e) {
    ok = false;
    error = std::string("the task's schedule cannot be read: ") + e.what();
  }
  if (ok) {
    o.outcome = "succeeded";
    o.consecutive_failures = 0;
    if (recurring) {
      o.new_state = "scheduled";
      o.next_run_at = next_recurring(t, s, fire_time, now, o.skipped);
      o.reset_attempt = true;
    } else {
      o.new_state = "succeeded";
    }
    return o;
  }
  o.outcome = timed_out ? "timed_out" : "failed";
  o.error = std::move(error);
  o.consecutive_failures = t.consecutive_failures;
  if (t.attempt < t.max_attempts) {
    o.new_state = "retryable";
    o.next_run_at = now + retry_delay(t.attempt, milliseconds(t.backoff_base_ms),
                                      milliseconds(t.backoff_cap_ms), 0.2);
    return o;
  }
  o.consecutive_failures = t.consecutive_failures + 1;
  if (!recurring) {
    o.new_state = "failed";
    return o;
  }
  o.reset_attempt = true;
  o.next_run_at = next_recurring(t, s, fire_time, now, o.skipped);
  o.new_state = t.pause_after_failures > 0 && o.consecutive_failures >= t.pause_after_failures
                    ? "paused"
                    : "scheduled";
  if (o.new_state == "paused") {
    log(log_level::warn, "scheduler",
        "task " + std::to_string(t.id) + " (" + t.type + ") paused after " +
            std::to_string(o.consecutive_failures) + " consecutive failed runs");
  }
  return o;
}

misfire_on_claim decide_misfire_on_claim(const task& t, time_point& fire_time, time_point now) {
  misfire_on_claim out;
  if (t.schedule_kind == "once" || t.attempt > 1) return out;  // retries are not misfires
  try {
    const schedule s = t.parsed_schedule();
    const auto plan = plan_misfire(s, fire_time, now, parse_misfire_policy(t.misfire_policy),
                                   std::chrono::seconds(t.misfire_grace_s), t.catch_up_limit);
    if (!plan.misfired) return out;
    out.skipped = plan.skipped;
    if (!plan.runs.empty()) {
      fire_time = plan.runs.front();
      return out;
    }
    outcome_row o = outcome_of_claim(t, fire_time);
    o.outcome = "skipped";
    o.new_state = "scheduled";
    o.next_run_at = plan.next_run_at;
    o.reset_attempt = true;
    o.consecutive_failures = t.consecutive_failures;
    o.started_at = now;
    o.finished_at = now;
    o.counts_run = false;
    o.skipped = plan.skipped;
    out.skip = std::move(o);
    out.skipped = 0;  // carried by the outcome itself
    return out;
  } catch (const std::exception&) {
    return {};  // the run itself will report the broken schedule
  }
}

}  // namespace sluice::sched::detail
