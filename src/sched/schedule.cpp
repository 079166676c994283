#include "sluice/sched/schedule.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <deque>
#include <limits>
#include <stdexcept>

#include <date/date.h>

#include "sched/util.hpp"
#include "sluice/enum_names.hpp"

namespace sluice::sched {
namespace {

using std::chrono::nanoseconds;
using std::chrono::seconds;

using detail::lower;

std::string quoted(std::string_view s) {
  return "'" + std::string{s} + "'";
}

// Time arithmetic in whole seconds plus a sub-second part, so that instants centuries apart
// (anchors in 1700, say) never overflow system_clock's 64-bit nanosecond count.
struct split_time {
  std::int64_t secs;  // floor
  nanoseconds sub;    // [0, 1 s)
};

constexpr split_time split(time_point t) {
  const auto s = std::chrono::floor<seconds>(t);
  return {s.time_since_epoch().count(), t - s};
}

constexpr std::int64_t max_secs = split(time_point::max()).secs;

// floor((b - a) / p) for a <= b.
std::int64_t whole_periods(time_point a, time_point b, seconds p) {
  const auto sa = split(a);
  const auto sb = split(b);
  std::int64_t diff = sb.secs - sa.secs;
  if (sb.sub < sa.sub) --diff;  // b - a is diff plus a fraction of a second
  return diff / p.count();
}

// a + k * p, or nullopt when that is past time_point::max().
std::optional<time_point> add_periods(time_point a, std::int64_t k, seconds p) {
  const auto sa = split(a);
  if (k > (max_secs - sa.secs) / p.count()) return std::nullopt;
  const std::int64_t secs = sa.secs + k * p.count();
  if (secs == max_secs && sa.sub > split(time_point::max()).sub) return std::nullopt;
  return time_point{seconds{secs}} + sa.sub;
}

// True when `fire` is more than `grace` before `now`.
bool older_than(time_point fire, time_point now, seconds grace) {
  if (now < time_point::min() + grace) return false;
  return fire < now - grace;
}

int parse_fixed(std::string_view text, std::size_t at, std::size_t digits, bool& ok) {
  int v = 0;
  for (std::size_t i = at; i < at + digits; ++i) {
    if (i >= text.size() || text[i] < '0' || text[i] > '9') {
      ok = false;
      return 0;
    }
    v = v * 10 + (text[i] - '0');
  }
  return v;
}

[[noreturn]] void bad_timestamp(std::string_view text, std::string_view why) {
  throw schedule_error("schedule: time " + quoted(text) + " " + std::string{why} +
                       " (expected RFC 3339, like 2026-11-26T15:49:20Z)");
}

constexpr std::string_view once_prefix = "once:";
constexpr std::string_view every_prefix = "every:";
constexpr std::string_view interval_prefix = "interval:";
constexpr std::string_view cron_prefix = "cron:";

bool starts_with_ci(std::string_view text, std::string_view prefix) {
  return text.size() >= prefix.size() && lower(text.substr(0, prefix.size())) == prefix;
}

// "<duration>" or "<duration>@<timestamp>".
schedule parse_interval_spec(std::string_view spec) {
  const auto at = spec.find('@');
  const auto period = parse_duration(spec.substr(0, at));
  std::optional<time_point> anchor;
  if (at != std::string_view::npos) anchor = parse_timestamp(spec.substr(at + 1));
  return schedule::every(period, anchor);
}

}  // namespace

namespace {

constexpr std::array<std::string_view, 3> kind_names{"once", "interval", "cron"};
constexpr std::array<std::string_view, 3> policy_names{"coalesce", "catch_up", "skip"};

// The enumerator `names` spells as `text`, case-insensitively, or `alias_of` for `alias`;
// otherwise schedule_error "<what> '<text>' is not one of <names>".
template <class Enum, std::size_t N>
Enum parse_name(std::string_view what, std::string_view text,
                const std::array<std::string_view, N>& names, std::string_view alias,
                Enum alias_of) {
  const auto folded = lower(text);
  if (folded == alias) return alias_of;
  if (const auto e = enum_from_name<Enum>(names, folded)) return *e;
  std::string list;
  for (const auto name : names)
    list += (list.empty() ? "" : ", ") + std::string{name};
  throw schedule_error(std::string{what} + " " + quoted(text) + " is not one of " + list);
}

}  // namespace

std::string_view to_string(schedule_kind kind) noexcept {
  return enum_name<schedule_kind::cron>(kind, kind_names);
}

schedule_kind parse_schedule_kind(std::string_view text) {
  return parse_name("schedule: kind", text, kind_names, "every", schedule_kind::interval);
}

std::string format_timestamp(time_point t) {
  const auto day = std::chrono::floor<date::days>(t);
  const date::year_month_day ymd{day};
  const date::hh_mm_ss<nanoseconds> tod{t - day};
  std::array<char, 64> buf{};
  auto n = std::snprintf(buf.data(), buf.size(), "%04d-%02u-%02uT%02d:%02d:%02d",
                         static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                         static_cast<unsigned>(ymd.day()), static_cast<int>(tod.hours().count()),
                         static_cast<int>(tod.minutes().count()),
                         static_cast<int>(tod.seconds().count()));
  std::string out{buf.data(), static_cast<std::size_t>(n)};
  if (auto ns = tod.subseconds().count(); ns != 0) {
    n = std::snprintf(buf.data(), buf.size(), ".%09lld", static_cast<long long>(ns));
    std::string frac{buf.data(), static_cast<std::size_t>(n)};
    while (frac.back() == '0')
      frac.pop_back();
    out += frac;
  }
  out += 'Z';
  return out;
}

time_point parse_timestamp(std::string_view text) {
  bool ok = true;
  const int y = parse_fixed(text, 0, 4, ok);
  const int mo = parse_fixed(text, 5, 2, ok);
  const int d = parse_fixed(text, 8, 2, ok);
  const int h = parse_fixed(text, 11, 2, ok);
  const int mi = parse_fixed(text, 14, 2, ok);
  const int s = parse_fixed(text, 17, 2, ok);
  if (!ok || text.size() < 19 || text[4] != '-' || text[7] != '-' || text[13] != ':' ||
      text[16] != ':' || (text[10] != 'T' && text[10] != 't' && text[10] != ' ')) {
    bad_timestamp(text, "is malformed");
  }
  const date::year_month_day ymd{date::year{y}, date::month{static_cast<unsigned>(mo)},
                                 date::day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) bad_timestamp(text, "names a date that does not exist");
  if (h > 23 || mi > 59 || s > 59) bad_timestamp(text, "has a time of day out of range");
  if (y < 1678 || y > 2261) bad_timestamp(text, "is outside the years 1678-2261");

  std::size_t i = 19;
  nanoseconds frac{0};
  if (i < text.size() && text[i] == '.') {
    ++i;
    const auto start = i;
    std::int64_t scale = 100'000'000;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      frac += nanoseconds{(text[i] - '0') * scale};
      scale /= 10;
      ++i;
    }
    if (i == start || i - start > 9) bad_timestamp(text, "has a bad fraction of a second");
  }
  seconds offset{0};
  if (i < text.size() && (text[i] == 'Z' || text[i] == 'z')) {
    ++i;
  } else if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
    const int sign = text[i] == '-' ? -1 : 1;
    const int oh = parse_fixed(text, i + 1, 2, ok);
    const int om = parse_fixed(text, i + 4, 2, ok);
    if (!ok || i + 3 >= text.size() || text[i + 3] != ':' || oh > 23 || om > 59) {
      bad_timestamp(text, "has a malformed UTC offset");
    }
    offset = sign * (std::chrono::hours{oh} + std::chrono::minutes{om});
    i += 6;
  } else {
    bad_timestamp(text, "has no UTC offset (add Z or +HH:MM)");
  }
  if (i != text.size()) bad_timestamp(text, "has trailing characters");

  const auto local =
      date::sys_days{ymd} + std::chrono::hours{h} + std::chrono::minutes{mi} + seconds{s} - offset;
  return time_point{local.time_since_epoch()} + frac;
}

std::string format_duration(seconds d) {
  if (d < seconds{0}) return "-" + format_duration(-d);
  if (d == seconds{0}) return "0s";
  std::string out;
  std::int64_t rest = d.count();
  constexpr std::array<std::pair<std::int64_t, char>, 4> units{
      {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}}};
  for (const auto& [size, unit] : units) {
    if (rest >= size) {
      out += std::to_string(rest / size);
      out += unit;
      rest %= size;
    }
  }
  return out;
}

seconds parse_duration(std::string_view text) {
  auto fail = [&](std::string_view why) -> seconds {
    throw schedule_error("schedule: duration " + quoted(text) + " " + std::string{why} +
                         " (expected e.g. 90s, 5m, 1h30m, 2d)");
  };
  if (text.empty()) return fail("is empty");
  // Generous enough for any unit, small enough that the sums below cannot overflow.
  constexpr std::int64_t max_number = 1'000'000'000'000;
  constexpr std::string_view unit_order = "dhms";
  constexpr std::array<std::int64_t, 4> unit_seconds{86400, 3600, 60, 1};
  std::int64_t total = 0;
  std::size_t next_unit = 0;  // units must appear in unit_order, each at most once
  std::size_t i = 0;
  while (i < text.size()) {
    std::int64_t n = 0;
    const auto start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      n = n * 10 + (text[i] - '0');
      if (n > max_number) return fail("is too long");
      ++i;
    }
    if (i == start) return fail("needs a number before each unit");
    if (i == text.size()) {
      if (start == 0) return seconds{n};  // a bare number of seconds
      return fail("ends in a number without a unit");
    }
    const char unit = static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
    const auto pos = unit_order.find(unit);
    if (pos == std::string_view::npos) return fail("has an unknown unit (use d, h, m, s)");
    if (pos < next_unit) return fail("repeats a unit or lists units out of order");
    next_unit = pos + 1;
    total += n * unit_seconds[pos];
    ++i;
  }
  return seconds{total};
}

schedule schedule::once(time_point at) {
  return schedule{once_spec{at}};
}

schedule schedule::every(seconds period, std::optional<time_point> anchor) {
  if (period <= seconds{0}) {
    throw schedule_error("schedule: interval " + format_duration(period) + " must be positive");
  }
  if (period > max_interval) {
    throw schedule_error("schedule: interval " + format_duration(period) +
                         " is longer than the maximum of 36500d");
  }
  return schedule{interval_spec{period, anchor}};
}

schedule schedule::cron(std::string_view expression, std::string_view tz) {
  return schedule{cron_expression::parse(expression, tz)};
}

schedule schedule::cron(cron_expression expression) {
  return schedule{std::move(expression)};
}

schedule schedule::parse(std::string_view text) {
  if (starts_with_ci(text, once_prefix))
    return once(parse_timestamp(text.substr(once_prefix.size())));
  if (starts_with_ci(text, every_prefix))
    return parse_interval_spec(text.substr(every_prefix.size()));
  if (starts_with_ci(text, interval_prefix)) {
    return parse_interval_spec(text.substr(interval_prefix.size()));
  }
  if (starts_with_ci(text, cron_prefix)) {
    const auto body = text.substr(cron_prefix.size());
    // The zone follows the last '@', unless that '@' starts the expression (a macro).
    const auto at = body.rfind('@');
    if (at == std::string_view::npos || at == 0) return cron(body, "UTC");
    return cron(body.substr(0, at), body.substr(at + 1));
  }
  throw schedule_error("schedule: " + quoted(text) + " does not start with once:, every: or cron:");
}

schedule schedule::from_fields(std::string_view kind, std::string_view spec, std::string_view tz) {
  const auto k = parse_schedule_kind(kind);
  if (k == schedule_kind::cron) return cron(spec, tz.empty() ? std::string_view{"UTC"} : tz);
  if (!tz.empty() && tz != "UTC") {
    throw schedule_error("schedule: time zone " + quoted(tz) + " applies only to cron schedules; " +
                         "leave it empty or UTC for " + std::string{sched::to_string(k)} +
                         " schedules");
  }
  if (k == schedule_kind::once) return once(parse_timestamp(spec));
  return parse_interval_spec(spec);
}

schedule_kind schedule::kind() const noexcept {
  switch (value_.index()) {
    case 0:
      return schedule_kind::once;
    case 1:
      return schedule_kind::interval;
    default:
      return schedule_kind::cron;
  }
}

std::string schedule::spec() const {
  if (const auto* o = std::get_if<once_spec>(&value_)) return format_timestamp(o->at);
  if (const auto* i = std::get_if<interval_spec>(&value_)) {
    auto out = format_duration(i->period);
    if (i->anchor) out += "@" + format_timestamp(*i->anchor);
    return out;
  }
  return std::get<cron_expression>(value_).to_string();
}

std::string schedule::tz() const {
  if (const auto* c = std::get_if<cron_expression>(&value_)) return c->timezone();
  return "UTC";
}

std::string schedule::to_string() const {
  switch (kind()) {
    case schedule_kind::once:
      return std::string{once_prefix} + spec();
    case schedule_kind::interval:
      return std::string{every_prefix} + spec();
    case schedule_kind::cron:
      break;
  }
  auto out = std::string{cron_prefix} + spec();
  if (tz() != "UTC") out += "@" + tz();
  return out;
}

std::optional<time_point> schedule::next_after(time_point t) const {
  if (const auto* o = std::get_if<once_spec>(&value_)) {
    if (o->at > t) return o->at;
    return std::nullopt;
  }
  if (const auto* i = std::get_if<interval_spec>(&value_)) {
    if (!i->anchor) return add_periods(t, 1, i->period);
    if (t < *i->anchor) return *i->anchor;
    return add_periods(*i->anchor, whole_periods(*i->anchor, t, i->period) + 1, i->period);
  }
  return std::get<cron_expression>(value_).next_after(t);
}

time_point schedule::at() const {
  if (const auto* o = std::get_if<once_spec>(&value_)) return o->at;
  throw std::logic_error("schedule::at() called on a " + std::string{kind_name()} + " schedule");
}

seconds schedule::period() const {
  if (const auto* i = std::get_if<interval_spec>(&value_)) return i->period;
  throw std::logic_error("schedule::period() called on a " + std::string{kind_name()} +
                         " schedule");
}

std::optional<time_point> schedule::anchor() const {
  if (const auto* i = std::get_if<interval_spec>(&value_)) return i->anchor;
  throw std::logic_error("schedule::anchor() called on a " + std::string{kind_name()} +
                         " schedule");
}

const cron_expression& schedule::expression() const {
  if (const auto* c = std::get_if<cron_expression>(&value_)) return *c;
  throw std::logic_error("schedule::expression() called on a " + std::string{kind_name()} +
                         " schedule");
}

bool operator==(const schedule& a, const schedule& b) noexcept {
  return a.value_ == b.value_;
}

std::string_view to_string(misfire_policy policy) noexcept {
  return enum_name<misfire_policy::skip>(policy, policy_names);
}

misfire_policy parse_misfire_policy(std::string_view text) {
  return parse_name("misfire policy", text, policy_names, "catch-up", misfire_policy::catch_up);
}

namespace {

// The due fire times of a schedule: how many, the most recent `keep` of them, and the next one.
struct due_fires {
  std::uint64_t count = 0;  // saturates at fire_plan::count_limit
  std::deque<time_point> recent;
  std::optional<time_point> next;

  void push(time_point t, std::size_t keep) {
    recent.push_back(t);
    if (recent.size() > keep) recent.pop_front();
  }
};

due_fires interval_due(const schedule& s, time_point scheduled_at, time_point now,
                       std::size_t keep) {
  due_fires d;
  d.count = 1;
  d.recent.push_back(scheduled_at);
  // After scheduled_at the fire times form a grid: first, first + p, first + 2p, ...
  const auto first = s.next_after(scheduled_at);
  if (!first || *first > now) {
    d.next = first;
    return d;
  }
  const auto p = s.period();
  const std::int64_t last_index = whole_periods(*first, now, p);  // grid indexes 0..last_index
  const auto grid_count = static_cast<std::uint64_t>(last_index) + 1;
  d.count = std::min<std::uint64_t>(1 + grid_count, fire_plan::count_limit);
  const std::int64_t from =
      std::max<std::int64_t>(0, last_index + 1 - static_cast<std::int64_t>(keep));
  for (std::int64_t k = from; k <= last_index; ++k)
    d.push(*add_periods(*first, k, p), keep);
  d.next = add_periods(*first, last_index + 1, p);
  return d;
}

due_fires enumerated_due(const schedule& s, time_point scheduled_at, time_point now,
                         std::size_t keep) {
  due_fires d;
  d.count = 1;
  d.recent.push_back(scheduled_at);
  auto cur = scheduled_at;
  while (d.count < fire_plan::count_limit) {
    const auto next = s.next_after(cur);
    if (!next || *next > now) {
      d.next = next;
      return d;
    }
    d.push(*next, keep);
    ++d.count;
    cur = *next;
  }

  // Too many to count: find the most recent ones by searching back from now in growing windows.
  d.next = s.next_after(now);
  auto window = std::chrono::duration_cast<time_point::duration>(std::chrono::hours{1});
  for (;;) {
    const bool reaches_cur = now < time_point::min() + window || cur >= now - window;
    const auto from = reaches_cur ? cur : now - window;
    std::deque<time_point> found;
    for (auto f = s.next_after(from); f && *f <= now; f = s.next_after(*f)) {
      found.push_back(*f);
      if (found.size() > keep) found.pop_front();
    }
    if (found.size() >= keep || reaches_cur) {
      for (const auto f : found)
        d.push(f, keep);
      return d;
    }
    window = window > time_point::duration::max() / 2 ? time_point::duration::max() : window * 2;
  }
}

}  // namespace

fire_plan plan_misfire(const schedule& s, time_point scheduled_at, time_point now,
                       misfire_policy policy, seconds grace, int catch_up_limit) {
  fire_plan plan;
  grace = std::max(grace, seconds{0});
  if (scheduled_at > now) {
    plan.next_run_at = scheduled_at;
    return plan;
  }
  const std::size_t keep = policy == misfire_policy::catch_up
                               ? static_cast<std::size_t>(std::max(catch_up_limit, 1))
                               : 1;
  const auto due = s.kind() == schedule_kind::interval ? interval_due(s, scheduled_at, now, keep)
                                                       : enumerated_due(s, scheduled_at, now, keep);
  plan.next_run_at = due.next;
  plan.misfired = due.count > 1 || older_than(scheduled_at, now, grace);

  switch (policy) {
    case misfire_policy::coalesce:
      plan.runs.push_back(due.recent.back());
      break;
    case misfire_policy::catch_up:
      plan.runs.assign(due.recent.begin(), due.recent.end());
      break;
    case misfire_policy::skip:
      if (!older_than(due.recent.back(), now, grace)) plan.runs.push_back(due.recent.back());
      break;
  }
  plan.skipped =
      due.count == fire_plan::count_limit ? fire_plan::count_limit : due.count - plan.runs.size();
  return plan;
}

}  // namespace sluice::sched
