#pragma once

// Private to libsluice: UTC offsets of an IANA time zone over time, built on Howard Hinnant's
// date library reading the system tz database, plus the zone's POSIX TZ rule for instants after
// the last transition the database file lists.
//
// Why the extra rule: date 3.0.1 in USE_OS_TZDB mode reads only the explicit transitions of a
// TZif file and ignores its footer (RFC 8536 section 3.3). Debian's files list transitions up to
// 2037, so without the footer every zone would keep its last offset forever after that
// (New York on EST all year from 2037-11-01).

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace date {
class time_zone;
}

namespace sluice::sched::detail {

using sys_seconds = std::chrono::time_point<std::chrono::system_clock, std::chrono::seconds>;

// Instants [begin, end) during which a zone's UTC offset is constant: local = utc + offset.
struct offset_span {
  sys_seconds begin;
  sys_seconds end;
  std::chrono::seconds offset;
};

// A date rule of a POSIX TZ string: "Jn", "n" or "Mm.w.d", with its local time of day.
struct posix_date {
  enum class form { julian_no_leap, zero_based, month_week_day };
  form kind = form::month_week_day;
  int a = 0;                        // Jn: n (1-365); n: n (0-365); Mm.w.d: m (1-12)
  int w = 0;                        // Mm.w.d: week 1-5 (5 = last)
  int d = 0;                        // Mm.w.d: weekday 0-6 (0 = Sunday)
  std::chrono::seconds time{7200};  // local time of day; may be negative or past 24h (RFC 8536)
};

// The footer rule of a TZif file, e.g. "EST5EDT,M3.2.0,M11.1.0". Offsets are stored with the
// usual sign (east of UTC positive), the opposite of the POSIX string.
struct posix_tz {
  std::chrono::seconds std_offset{0};
  bool has_dst = false;
  std::chrono::seconds dst_offset{0};
  posix_date start;  // into DST, in local standard time
  posix_date end;    // out of DST, in local daylight time
};

// Parses a POSIX TZ string as found in TZif footers. nullopt when it is malformed or names a
// DST zone without transition rules (never the case in the tz database).
[[nodiscard]] std::optional<posix_tz> parse_posix_tz(std::string_view text);

// Reads the footer TZ string of a TZif (version 2+) file. nullopt when unreadable or version 1.
[[nodiscard]] std::optional<std::string> read_tzif_footer(const std::string& path);

// A located time zone. Immutable; thread-safe.
class zone {
 public:
  // The zone named `name` ("UTC" is served without touching the database). Results are cached
  // for the life of the process. Throws schedule_error for an unknown name.
  [[nodiscard]] static std::shared_ptr<const zone> locate(std::string_view name);

  [[nodiscard]] const std::string& name() const noexcept { return name_; }

  // The span of constant offset that contains `t`.
  [[nodiscard]] offset_span span_at(sys_seconds t) const;

  // Public only for make_shared; use locate().
  zone(std::string name, const date::time_zone* tz, std::optional<posix_tz> tail);

 private:
  std::string name_;
  const date::time_zone* tz_;      // null: UTC
  std::optional<posix_tz> tail_;   // set only when it has DST rules
  sys_seconds last_transition_{};  // the file's last transition; tail_ rules from there on
};

}  // namespace sluice::sched::detail
