// libFuzzer target: cron expressions, time zones, and the schedule layer's other text forms
// (one-string schedules, RFC 3339 timestamps, durations, POSIX TZ rules).
//
// Input: up to three lines, "<cron expression>\n<time zone>\n<reference time, unix seconds>";
// a missing zone means UTC, a missing time 2026-03-08T06:30:00Z (just before a US DST change).
//
// Beyond "no crash", it checks what the headers promise:
//   - parsing throws schedule_error and nothing else;
//   - parse(to_string(), timezone()) is equal to the expression;
//   - next_after(t) is strictly after t, is a fixed point (next_after of any instant in
//     [t, next) is next), and in UTC falls on a whole minute that matches the expression's
//     fields, checked by an independent field matcher below;
//   - timestamps and durations survive format -> parse unchanged.

#include <algorithm>
#include <array>
#include <bitset>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <date/tz.h>

#include "sched/zone.hpp"
#include "sluice/sched/cron.hpp"
#include "sluice/sched/schedule.hpp"

namespace {

using sluice::sched::cron_expression;
using sluice::sched::schedule;
using sluice::sched::schedule_error;
using time_point = std::chrono::system_clock::time_point;

[[noreturn]] void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "fuzz_cron invariant broken: %s [%.*s]\n", what,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    const auto at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string_view::npos ? s.npos : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

// An independent reading of a normalized cron expression (to_string()), used only to check
// next_after in UTC. Names are upper-case there and fields single-space separated.
struct fields {
  std::bitset<60> minute;
  std::bitset<24> hour;
  std::bitset<32> dom;
  std::bitset<13> month;
  std::bitset<8> dow;
  bool dom_star = false;
  bool dow_star = false;
};

int field_value(std::string_view token, int names_base,
                const std::vector<std::string_view>& names) {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == token) return names_base + static_cast<int>(i);
  int v = 0;
  const auto r = std::from_chars(token.data(), token.data() + token.size(), v);
  if (r.ec != std::errc{} || r.ptr != token.data() + token.size())
    fail("bad normalized token", token);
  return v;
}

template <std::size_t N>
void read_field(std::string_view text, int lo_limit, int hi_limit, std::bitset<N>& out,
                int names_base = 0, const std::vector<std::string_view>& names = {}) {
  for (const auto item : split(text, ',')) {
    const auto slash = item.find('/');
    const auto base = item.substr(0, slash);
    int step = 1;
    if (slash != std::string_view::npos) step = field_value(item.substr(slash + 1), 0, {});
    int lo = 0;
    int hi = 0;
    if (base == "*") {
      lo = lo_limit;
      hi = hi_limit;
    } else if (const auto dash = base.find('-'); dash != std::string_view::npos) {
      lo = field_value(base.substr(0, dash), names_base, names);
      hi = field_value(base.substr(dash + 1), names_base, names);
      if (hi == 0 && lo > 0 && N == 8) hi = 7;  // "FRI-SUN"
    } else {
      lo = field_value(base, names_base, names);
      hi = slash == std::string_view::npos ? lo : hi_limit;
    }
    for (int v = lo; v <= hi; v += step)
      out.set(static_cast<std::size_t>(v));
  }
}

fields read_expression(std::string_view normalized) {
  static const std::array<std::pair<std::string_view, std::string_view>, 5> macros{{
      {"@yearly", "0 0 1 1 *"},
      {"@monthly", "0 0 1 * *"},
      {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},
      {"@hourly", "0 * * * *"},
  }};
  for (const auto& [name, expansion] : macros)
    if (normalized == name) normalized = expansion;
  const auto parts = split(normalized, ' ');
  if (parts.size() != 5) fail("normalized text does not have 5 fields", normalized);
  static const std::vector<std::string_view> months{"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                                    "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
  static const std::vector<std::string_view> days{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};
  fields f;
  read_field(parts[0], 0, 59, f.minute);
  read_field(parts[1], 0, 23, f.hour);
  read_field(parts[2], 1, 31, f.dom);
  read_field(parts[3], 1, 12, f.month, 1, months);
  read_field(parts[4], 0, 7, f.dow, 0, days);
  if (f.dow.test(7)) f.dow.set(0);
  f.dom_star = parts[2].front() == '*';
  f.dow_star = parts[4].front() == '*';
  return f;
}

bool matches_utc(const fields& f, time_point t) {
  using namespace std::chrono;
  const auto day = floor<days>(t);
  const year_month_day ymd{day};
  const hh_mm_ss tod{floor<seconds>(t - day)};
  if (tod.seconds().count() != 0 || t != floor<seconds>(t)) return false;
  const bool dom = f.dom.test(static_cast<unsigned>(ymd.day()));
  const bool dow = f.dow.test(weekday{day}.c_encoding());
  const bool day_ok = (f.dom_star || f.dow_star) ? (dom && dow) : (dom || dow);
  return f.minute.test(static_cast<std::size_t>(tod.minutes().count())) &&
         f.hour.test(static_cast<std::size_t>(tod.hours().count())) &&
         f.month.test(static_cast<unsigned>(ymd.month())) && day_ok;
}

time_point reference_time(std::string_view text) {
  using namespace std::chrono;
  long long s = 1772951400;  // 2026-03-08T06:30:00Z
  if (!text.empty()) {
    const auto r = std::from_chars(text.data(), text.data() + text.size(), s);
    if (r.ec != std::errc{}) s = 0;
  }
  // time_point counts nanoseconds in 64 bits: about +-292 years around 1970.
  constexpr long long limit = 9'000'000'000LL;
  s = s < -limit ? -limit : (s > limit ? limit : s);
  return time_point{seconds{s}};
}

void check_cron(std::string_view expr, std::string_view tz, time_point t) {
  std::optional<cron_expression> e;
  try {
    e = cron_expression::parse(expr, tz);
  } catch (const schedule_error&) {
    return;
  }
  const auto again = cron_expression::parse(e->to_string(), e->timezone());
  if (!(again == *e)) fail("parse(to_string()) differs", e->to_string());

  const auto next = e->next_after(t);
  if (!next) return;
  if (*next <= t) fail("next_after is not after the reference time", e->to_string());
  using std::chrono::seconds;
  if (*next - seconds{1} >= t && e->next_after(*next - seconds{1}) != next)
    fail("next_after(next - 1s) != next", e->to_string());
  if (const auto after = e->next_after(*next); after && *after <= *next)
    fail("next_after(next) is not after next", e->to_string());
  if (e->timezone() == "UTC" && !matches_utc(read_expression(e->to_string()), *next))
    fail("next fire time does not match the expression", e->to_string());
}

void check_schedule(std::string_view text, time_point t) {
  try {
    const auto s = schedule::parse(text);
    if (!(schedule::parse(s.to_string()) == s)) fail("schedule round trip differs", s.to_string());
    if (!(schedule::from_fields(s.kind_name(), s.spec(), s.tz()) == s))
      fail("schedule from_fields differs", s.to_string());
    if (const auto n = s.next_after(t); n && *n <= t) fail("schedule next_after not after t", text);
  } catch (const schedule_error&) {
  }
  try {
    const auto at = sluice::sched::parse_timestamp(text);
    if (sluice::sched::parse_timestamp(sluice::sched::format_timestamp(at)) != at)
      fail("timestamp round trip differs", text);
  } catch (const schedule_error&) {
  }
  try {
    const auto d = sluice::sched::parse_duration(text);
    if (sluice::sched::parse_duration(sluice::sched::format_duration(d)) != d)
      fail("duration round trip differs", text);
  } catch (const schedule_error&) {
  }
}

// A POSIX TZ rule (the footer of a TZif file) grafted onto New York's transitions: the span
// returned for any instant must contain it.
void check_posix_rule(std::string_view text, time_point t) {
  using sluice::sched::detail::sys_seconds;
  const auto rule = sluice::sched::detail::parse_posix_tz(text);
  if (!rule || !rule->has_dst) return;
  static const date::time_zone* const new_york = date::locate_zone("America/New_York");
  const sluice::sched::detail::zone z{"fuzz", new_york, rule};
  // After 2037, where the rule rather than the file's transitions decides.
  const auto at = std::max(std::chrono::floor<std::chrono::seconds>(t),
                           sys_seconds{std::chrono::seconds{2'200'000'000LL}});
  const auto span = z.span_at(at);
  if (!(span.begin <= at && at < span.end)) fail("span_at does not contain its instant", text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4096) return -1;  // long inputs only slow the search down
  const std::string input(reinterpret_cast<const char*>(data), size);
  const auto lines = split(input, '\n');
  const std::string_view expr = lines[0];
  const std::string_view tz = lines.size() > 1 ? lines[1] : std::string_view{"UTC"};
  const auto t = reference_time(lines.size() > 2 ? lines[2] : std::string_view{});

  check_cron(expr, tz, t);
  check_schedule(expr, t);
  check_posix_rule(expr, t);
  return 0;
}
