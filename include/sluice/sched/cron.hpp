#pragma once

// Cron expressions evaluated in an IANA time zone, and the error every schedule parser throws.
// Syntax, DST rules and examples: docs/schedules.md.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "sluice/error.hpp"

namespace sluice::sched {

// Thrown for any malformed schedule text: a cron expression, a time zone name, an interval, a
// timestamp, a misfire policy. The message names the offending part, e.g.
// "cron: minute field '61' is out of range 0-59".
class schedule_error : public sluice::error {
 public:
  using sluice::error::error;
};

namespace detail {
class zone;  // a located time zone (src/sched/zone.hpp); opaque here
}  // namespace detail

// A parsed five-field cron expression plus the time zone its wall-clock times are read in.
//
// Immutable once parsed; copies share the time-zone data. All const members are thread-safe.
// The time-zone database is the operating system's (/usr/share/zoneinfo), read once per zone.
class cron_expression {
 public:
  using time_point = std::chrono::system_clock::time_point;

  // Parses "minute hour day-of-month month day-of-week" or a macro (@hourly, @daily, ...).
  // `tz` is an IANA zone name such as "Europe/Berlin"; empty means "UTC".
  // Throws schedule_error for bad syntax, an unknown zone, or an expression that can never fire
  // (such as "0 0 30 2 *").
  [[nodiscard]] static cron_expression parse(std::string_view text, std::string_view tz = "UTC");

  // The first fire time strictly after `t`. Fire times are whole minutes of local time mapped to
  // UTC by the DST rules in docs/schedules.md. nullopt only when the next fire lies beyond what
  // system_clock::time_point can represent (after 2262) or more than 400 years ahead.
  [[nodiscard]] std::optional<time_point> next_after(time_point t) const;

  // Normalized text: fields separated by one space, names upper-case ("0 9 * * MON-FRI"),
  // macros lower-case with aliases folded (@annually -> @yearly, @midnight -> @daily).
  // parse(to_string(), timezone()) yields an equal expression.
  [[nodiscard]] const std::string& to_string() const noexcept { return text_; }
  [[nodiscard]] const std::string& timezone() const noexcept;

  // True when the minute or hour field starts with '*' ("*/15 * * * *", "0 * * * *"): such
  // expressions follow elapsed time across DST changes, the others follow the calendar.
  [[nodiscard]] bool periodic() const noexcept { return periodic_; }

  friend bool operator==(const cron_expression& a, const cron_expression& b) noexcept;

 private:
  cron_expression() = default;

  std::string text_;
  std::shared_ptr<const detail::zone> zone_;
  std::uint64_t minutes_ = 0;   // bit n: minute n (0-59)
  std::uint32_t hours_ = 0;     // bit n: hour n (0-23)
  std::uint32_t days_ = 0;      // bit n: day of month n (1-31)
  std::uint32_t months_ = 0;    // bit n: month n (1-12)
  std::uint32_t weekdays_ = 0;  // bit n: weekday n (0 = Sunday ... 6 = Saturday)
  bool dom_star_ = false;       // day-of-month field starts with '*'
  bool dow_star_ = false;       // day-of-week field starts with '*'
  bool periodic_ = false;

  friend struct cron_matcher;
};

}  // namespace sluice::sched
