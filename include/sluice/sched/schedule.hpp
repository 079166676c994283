#pragma once

// When a task runs: once at a time, every fixed interval, or on a cron expression in a time
// zone; and what to do when a recurring task is found due late (misfire policies).
// Text forms, DST rules and worked examples: docs/schedules.md.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "sluice/sched/cron.hpp"

namespace sluice::sched {

using time_point = std::chrono::system_clock::time_point;

enum class schedule_kind { once, interval, cron };

// "once", "interval", "cron": the values of the tasks.schedule_kind column.
[[nodiscard]] std::string_view to_string(schedule_kind kind) noexcept;
// Accepts the names above, case-insensitively, and "every" for interval. Throws schedule_error.
[[nodiscard]] schedule_kind parse_schedule_kind(std::string_view text);

// A schedule value. Immutable; copyable; all members are thread-safe. Factories and parsers
// throw schedule_error naming what is wrong.
//
// Two equivalent text forms:
//   - one string, for APIs and the CLI: "once:2026-11-26T15:49:20Z", "every:1h30m",
//     "every:5m@2026-01-01T00:00:00Z" (anchored), "cron:*/5 * * * *",
//     "cron:0 9 * * MON-FRI@Europe/Berlin";
//   - three fields, for the database columns (schedule_kind, schedule_spec, timezone):
//     ("once", "2026-11-26T15:49:20Z", "UTC"), ("interval", "1h30m", "UTC"),
//     ("cron", "0 9 * * MON-FRI", "Europe/Berlin").
// Formatting then parsing yields an equal schedule.
class schedule {
 public:
  // Longest accepted interval: 100 years, so that time arithmetic cannot overflow.
  static constexpr std::chrono::seconds max_interval{std::chrono::hours{24} * 36500};

  [[nodiscard]] static schedule once(time_point at);
  // Fires every `period` (1 s to max_interval). Unanchored, each fire is `period` after the
  // previous one (next_after(t) == t + period). Anchored, fires are anchor + k * period, k >= 0.
  [[nodiscard]] static schedule every(std::chrono::seconds period,
                                      std::optional<time_point> anchor = std::nullopt);
  [[nodiscard]] static schedule cron(std::string_view expression, std::string_view tz = "UTC");
  [[nodiscard]] static schedule cron(cron_expression expression);

  // The one-string form (see above). "interval:" is accepted for "every:".
  [[nodiscard]] static schedule parse(std::string_view text);
  // The three-field form. `tz` applies to cron schedules; once and interval schedules accept
  // only "" or "UTC" there, so that a zone is never silently ignored.
  [[nodiscard]] static schedule from_fields(std::string_view kind, std::string_view spec,
                                            std::string_view tz);

  [[nodiscard]] schedule_kind kind() const noexcept;
  [[nodiscard]] std::string_view kind_name() const noexcept { return sched::to_string(kind()); }
  // "2026-11-26T15:49:20Z" | "1h30m" or "1h30m@2026-01-01T00:00:00Z" | "*/5 * * * *".
  [[nodiscard]] std::string spec() const;
  // The cron expression's zone; "UTC" for once and interval.
  [[nodiscard]] std::string tz() const;
  // The one-string form.
  [[nodiscard]] std::string to_string() const;

  [[nodiscard]] bool recurring() const noexcept { return kind() != schedule_kind::once; }

  // The first fire time strictly after `t`; nullopt when there is none (a once schedule whose
  // time is not after t, or a time beyond what time_point can hold).
  [[nodiscard]] std::optional<time_point> next_after(time_point t) const;

  // Accessors for one kind; calling one for another kind throws std::logic_error.
  [[nodiscard]] time_point at() const;
  [[nodiscard]] std::chrono::seconds period() const;
  [[nodiscard]] std::optional<time_point> anchor() const;
  [[nodiscard]] const cron_expression& expression() const;

  friend bool operator==(const schedule& a, const schedule& b) noexcept;

 private:
  struct once_spec {
    time_point at;
    friend bool operator==(const once_spec&, const once_spec&) = default;
  };
  struct interval_spec {
    std::chrono::seconds period;
    std::optional<time_point> anchor;
    friend bool operator==(const interval_spec&, const interval_spec&) = default;
  };
  using value_type = std::variant<once_spec, interval_spec, cron_expression>;

  explicit schedule(value_type v) : value_(std::move(v)) {}

  value_type value_;
};

// RFC 3339 in UTC with as many fractional digits as needed: "2026-11-26T15:49:20Z",
// "2026-11-26T15:49:20.25Z".
[[nodiscard]] std::string format_timestamp(time_point t);
// Accepts "YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)" ('T' may be 't' or a space, 'Z' may
// be 'z'). Throws schedule_error.
[[nodiscard]] time_point parse_timestamp(std::string_view text);

// "1d2h3m4s" style, largest units first, zero units left out ("90s" formats as "1m30s").
[[nodiscard]] std::string format_duration(std::chrono::seconds d);
// Accepts a plain number of seconds ("90") or number+unit groups with units d, h, m, s in
// decreasing order, each at most once ("1h30m", "90s", "2d", "0s"). Throws schedule_error.
[[nodiscard]] std::chrono::seconds parse_duration(std::string_view text);

// What to do with a recurring task that is found due later than its grace period, or with
// several of its fire times already past.
enum class misfire_policy {
  coalesce,  // run once, for the most recent missed fire time, then resume
  catch_up,  // run each missed fire time, oldest first, at most catch_up_limit of them
  skip,      // run only if the most recent fire time is within the grace period
};

// "coalesce", "catch_up", "skip".
[[nodiscard]] std::string_view to_string(misfire_policy policy) noexcept;
// Accepts those names case-insensitively ("catch-up" too). Throws schedule_error.
[[nodiscard]] misfire_policy parse_misfire_policy(std::string_view text);

// The decision for a task found due at `now`.
struct fire_plan {
  // Fire counting stops here; `skipped` saturates at this value.
  static constexpr std::uint64_t count_limit = 100'000;

  std::vector<time_point> runs;           // fire times to execute now, oldest first
  std::optional<time_point> next_run_at;  // first fire time after now; nullopt: none (once)
  std::uint64_t skipped = 0;              // due fire times that will not run
  bool misfired = false;                  // late beyond grace, or more than one fire was due
};

// Decides which due fire times of `s` to run at `now`, for a task whose stored next_run_at is
// `scheduled_at`. The due fire times are scheduled_at and every later fire time of `s` up to and
// including `now`. When exactly one is due and it is at most `grace` old, it runs and nothing
// has misfired. Otherwise the policy decides:
//   coalesce: runs the most recent due fire time;
//   catch_up: runs the most recent min(due, catch_up_limit) fire times, oldest first;
//   skip:     runs the most recent due fire time if it is at most `grace` old, else nothing.
// If scheduled_at is after now nothing is due: no runs, next_run_at = scheduled_at.
// A negative grace counts as zero and a catch_up_limit below 1 as 1. Pure; never throws except
// std::bad_alloc.
[[nodiscard]] fire_plan plan_misfire(const schedule& s, time_point scheduled_at, time_point now,
                                     misfire_policy policy, std::chrono::seconds grace,
                                     int catch_up_limit);

}  // namespace sluice::sched
