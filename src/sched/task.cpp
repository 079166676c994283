#include "sluice/sched/task.hpp"

#include <array>
#include <chrono>
#include <regex>
#include <stdexcept>
#include <string>

#include "sluice/enum_names.hpp"

namespace sluice::sched {

namespace {
constexpr std::array<std::string_view, 9> state_names{"scheduled", "available", "running",
                                                      "retryable", "succeeded", "failed",
                                                      "cancelled", "paused",    "blocked"};
}  // namespace

std::string_view to_string(task_state s) noexcept {
  return enum_name<task_state::blocked>(s, state_names);
}

task_state parse_task_state(std::string_view text) {
  if (const auto s = enum_from_name<task_state>(state_names, text)) return *s;
  throw std::invalid_argument(
      "unknown task state '" + std::string(text) +
      "' (scheduled, available, running, retryable, succeeded, failed, cancelled, paused, "
      "blocked)");
}

std::string_view to_string(conflict_mode mode) noexcept {
  return mode == conflict_mode::replace ? "replace" : "keep";
}

conflict_mode parse_conflict_mode(std::string_view text) {
  if (text == "keep") return conflict_mode::keep;
  if (text == "replace") return conflict_mode::replace;
  throw schedule_error("on_conflict: '" + std::string(text) + "' is not one of keep, replace");
}

namespace {
bool valid_type(const std::string& t) {
  if (t.empty() || t.size() > 100) return false;
  for (const char c : t) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '_' || c == '.' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}
}  // namespace

void task_spec::validate() const {
  auto fail = [](const std::string& m) { throw schedule_error(m); };
  if (!valid_type(type))
    fail("type: '" + type + "' must be 1-100 characters of A-Z a-z 0-9 _ . : -");
  if (name && (name->empty() || name->size() > 200)) fail("name: must be 1-200 characters");
  if (payload.empty() || payload.front() != '{') fail("payload: must be a JSON object");
  if (priority < -1000 || priority > 1000) fail("priority: must be between -1000 and 1000");
  if (max_attempts < 1 || max_attempts > 1000) fail("max_attempts: must be between 1 and 1000");
  // The HTTP and SQL APIs' bounds (366 days; beyond, the database's time arithmetic on these
  // could overflow), so that every way in accepts the same tasks.
  constexpr std::chrono::milliseconds longest = std::chrono::hours(24 * 366);
  if (backoff_base.count() < 0) fail("backoff_base: must not be negative");
  if (backoff_base > longest) fail("backoff_base: must be at most 366 days");
  if (backoff_cap < backoff_base) fail("backoff_cap: must be at least backoff_base");
  if (backoff_cap > longest) fail("backoff_cap: must be at most 366 days");
  if (timeout.count() <= 0) fail("timeout: must be positive");
  if (timeout > longest) fail("timeout: must be at most 366 days");
  if (misfire_grace.count() < 0) fail("misfire_grace: must not be negative");
  if (misfire_grace > longest) fail("misfire_grace: must be at most 366 days");
  if (catch_up_limit < 1 || catch_up_limit > 10000)
    fail("catch_up_limit: must be between 1 and 10000");
  if (pause_after_failures < 0 || pause_after_failures > 1'000'000)
    fail("pause_after_failures: must be between 0 and 1000000");
  if (unique_key) {
    if (unique_key->empty() || unique_key->size() > 200)
      fail("unique_key: must be 1-200 characters");
    if (unique_key->find('\0') != std::string::npos) {
      fail("unique_key: must not contain NUL characters");
    }
  }
}

schedule task::parsed_schedule() const {
  return schedule::from_fields(schedule_kind, schedule_spec, timezone);
}

double task_run::duration_ms() const {
  return std::chrono::duration<double, std::milli>(finished_at - started_at).count();
}

}  // namespace sluice::sched
