#include "sluice/sched/cron.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <span>
#include <vector>

#include <date/date.h>

#include "sched/util.hpp"
#include "sched/zone.hpp"

namespace sluice::sched {
namespace {

using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using local_minutes = date::local_time<minutes>;
using local_seconds = date::local_seconds;
using detail::sys_seconds;

struct field_def {
  std::string_view name;
  int min;
  int max;
  std::span<const std::string_view> names;  // names[i] spells value names_base + i
  int names_base;
  std::string_view names_hint;
};

constexpr std::array<std::string_view, 12> month_names{"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                                       "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::array<std::string_view, 7> day_names{"SUN", "MON", "TUE", "WED",
                                                    "THU", "FRI", "SAT"};

constexpr std::array<field_def, 5> field_defs{{
    {"minute", 0, 59, {}, 0, ""},
    {"hour", 0, 23, {}, 0, ""},
    {"day-of-month", 1, 31, {}, 0, ""},
    {"month", 1, 12, month_names, 1, " or a month name (JAN-DEC)"},
    {"day-of-week", 0, 7, day_names, 0, " or a day name (SUN-SAT)"},
}};

struct macro {
  std::string_view name;
  std::string_view canonical;
  std::string_view expansion;
};

constexpr std::array<macro, 7> macros{{
    {"@yearly", "@yearly", "0 0 1 1 *"},
    {"@annually", "@yearly", "0 0 1 1 *"},
    {"@monthly", "@monthly", "0 0 1 * *"},
    {"@weekly", "@weekly", "0 0 * * 0"},
    {"@daily", "@daily", "0 0 * * *"},
    {"@midnight", "@daily", "0 0 * * *"},
    {"@hourly", "@hourly", "0 * * * *"},
}};

std::string upper(std::string_view s) {
  std::string out{s};
  for (auto& c : out)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

using detail::lower;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

std::vector<std::string_view> split_fields(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(text[i]))
      ++i;
    const auto start = i;
    while (i < text.size() && !is_space(text[i]))
      ++i;
    if (i > start) out.push_back(text.substr(start, i - start));
  }
  return out;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Parses the text of one field into a bit set.
class field_parser {
 public:
  field_parser(const field_def& def, std::string_view field) : def_(def), field_(field) {}

  std::uint64_t parse() {
    std::uint64_t bits = 0;
    std::size_t start = 0;
    for (;;) {
      const auto comma = field_.find(',', start);
      const auto item =
          field_.substr(start, comma == std::string_view::npos ? field_.npos : comma - start);
      if (item.empty()) fail(field_, "has an empty list item");
      bits |= parse_item(item);
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
    return bits;
  }

 private:
  [[noreturn]] void fail(std::string_view part, std::string_view problem) const {
    std::string msg = "cron: ";
    msg += def_.name;
    msg += " field '";
    msg += field_;
    if (part == field_) {
      msg += "' ";
    } else {
      msg += "': '";
      msg += part;
      msg += "' ";
    }
    msg += problem;
    throw schedule_error(msg);
  }

  int value(std::string_view token) const {
    if (token.empty()) fail(field_, "has a missing value");
    if (all_digits(token)) {
      const bool too_long = token.size() > 4;
      const int v = too_long ? def_.max + 1 : std::stoi(std::string{token});
      if (v < def_.min || v > def_.max) {
        fail(token, "is out of range " + std::to_string(def_.min) + "-" + std::to_string(def_.max));
      }
      return v;
    }
    const auto name = upper(token);
    for (std::size_t i = 0; i < def_.names.size(); ++i) {
      if (def_.names[i] == name) return def_.names_base + static_cast<int>(i);
    }
    fail(token, "is not a number" + std::string{def_.names_hint});
  }

  std::uint64_t parse_item(std::string_view item) const {
    const auto slash = item.find('/');
    const auto base = item.substr(0, slash);
    int step = 1;
    if (slash != std::string_view::npos) {
      const auto step_text = item.substr(slash + 1);
      if (!all_digits(step_text)) fail(item, "has a step that is not a positive number");
      const int width = def_.max - def_.min + 1;
      step = step_text.size() > 4 ? width + 1 : std::stoi(std::string{step_text});
      if (step == 0) fail(item, "has a step of 0 (steps start at 1)");
      if (step > width) fail(item, "has a step larger than the range of the field");
    }

    int lo = 0;
    int hi = 0;
    if (base == "*") {
      lo = def_.min;
      hi = def_.max;
    } else if (const auto dash = base.find('-'); dash != std::string_view::npos) {
      lo = value(base.substr(0, dash));
      hi = value(base.substr(dash + 1));
      // "FRI-SUN": Sunday closes a weekday range as 7.
      if (def_.name == "day-of-week" && hi == 0 && lo > 0) hi = 7;
      if (lo > hi) {
        fail(item, "is a range that runs backwards; split it, e.g. 22-23,0-2");
      }
    } else {
      lo = value(base);
      hi = slash == std::string_view::npos ? lo : def_.max;  // "a/n" runs from a to the end
    }

    std::uint64_t bits = 0;
    for (int v = lo; v <= hi; v += step)
      bits |= std::uint64_t{1} << v;
    return bits;
  }

  const field_def& def_;
  std::string_view field_;
};

constexpr std::array<unsigned, 13> max_days_in_month{0,  31, 29, 31, 30, 31, 30,
                                                     31, 31, 30, 31, 30, 31};

}  // namespace

// The search, a friend of cron_expression so the bit sets can stay private.
struct cron_matcher {
  const cron_expression& e;

  static std::optional<unsigned> next_bit(std::uint64_t mask, unsigned from, unsigned last) {
    if (from > last || from >= 64) return std::nullopt;
    const auto rest = mask >> from;
    if (rest == 0) return std::nullopt;
    const unsigned b = from + static_cast<unsigned>(std::countr_zero(rest));
    if (b > last) return std::nullopt;
    return b;
  }

  [[nodiscard]] bool day_matches(const date::year_month_day& ymd) const {
    const bool dom = ((e.days_ >> static_cast<unsigned>(ymd.day())) & 1U) != 0;
    const bool dow = ((e.weekdays_ >> date::weekday{date::sys_days{ymd}}.c_encoding()) & 1U) != 0;
    // Vixie cron: when both day fields are restricted, either may match.
    return (e.dom_star_ || e.dow_star_) ? (dom && dow) : (dom || dow);
  }

  // The first local minute in [from, limit) that matches every field, skipping whole months,
  // days and hours that cannot match.
  [[nodiscard]] std::optional<local_minutes> first_match(local_minutes from,
                                                         local_minutes limit) const {
    const auto first_day = date::floor<date::days>(from);
    date::year_month_day ymd{first_day};
    auto h = static_cast<unsigned>((from - first_day) / hours{1});
    auto mi = static_cast<unsigned>((from - first_day - hours{h}) / minutes{1});
    auto next_day = [&] {
      ymd = date::year_month_day{date::local_days{ymd} + date::days{1}};
      h = 0;
      mi = 0;
    };
    for (;;) {
      const date::local_days day{ymd};
      if (day + hours{h} + minutes{mi} >= limit) return std::nullopt;
      const auto m = static_cast<unsigned>(ymd.month());
      if (((e.months_ >> m) & 1U) == 0) {
        if (const auto nm = next_bit(e.months_, m + 1, 12)) {
          ymd = ymd.year() / date::month{*nm} / 1;
        } else {
          ymd = (ymd.year() + date::years{1}) / date::month{*next_bit(e.months_, 1, 12)} / 1;
        }
        h = 0;
        mi = 0;
        continue;
      }
      if (!day_matches(ymd)) {
        next_day();
        continue;
      }
      const auto nh = next_bit(e.hours_, h, 23);
      if (!nh) {
        next_day();
        continue;
      }
      if (*nh != h) {
        h = *nh;
        mi = 0;
      }
      const auto nmi = next_bit(e.minutes_, mi, 59);
      if (!nmi) {
        if (h == 23) {
          next_day();
        } else {
          ++h;
          mi = 0;
        }
        continue;
      }
      const auto found = day + hours{h} + minutes{*nmi};
      if (found >= limit) return std::nullopt;
      return found;
    }
  }
};

cron_expression cron_expression::parse(std::string_view text, std::string_view tz) {
  cron_expression e;
  auto fields = split_fields(text);
  std::string expanded;
  if (!fields.empty() && fields.front().front() == '@') {
    const auto name = lower(fields.front());
    const auto it =
        std::find_if(macros.begin(), macros.end(), [&](const macro& m) { return m.name == name; });
    if (it == macros.end()) {
      throw schedule_error("cron: unknown macro '" + std::string{fields.front()} +
                           "' (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight "
                           "or @hourly)");
    }
    if (fields.size() != 1) {
      throw schedule_error("cron: macro '" + std::string{fields.front()} +
                           "' cannot be followed by other fields");
    }
    e.text_ = it->canonical;
    fields = split_fields(it->expansion);
  } else {
    if (fields.empty()) throw schedule_error("cron: the expression is empty");
    if (fields.size() != 5) {
      throw schedule_error(
          "cron: expected 5 fields (minute hour day-of-month month day-of-week), got " +
          std::to_string(fields.size()));
    }
    for (const auto f : fields) {
      if (!e.text_.empty()) e.text_ += ' ';
      e.text_ += upper(f);
    }
  }

  const auto minute_bits = field_parser{field_defs[0], fields[0]}.parse();
  const auto hour_bits = field_parser{field_defs[1], fields[1]}.parse();
  const auto day_bits = field_parser{field_defs[2], fields[2]}.parse();
  const auto month_bits = field_parser{field_defs[3], fields[3]}.parse();
  auto weekday_bits = field_parser{field_defs[4], fields[4]}.parse();
  if ((weekday_bits >> 7) & 1U) weekday_bits = (weekday_bits | 1U) & 0x7FU;  // 7 is Sunday too

  e.minutes_ = minute_bits;
  e.hours_ = static_cast<std::uint32_t>(hour_bits);
  e.days_ = static_cast<std::uint32_t>(day_bits);
  e.months_ = static_cast<std::uint32_t>(month_bits);
  e.weekdays_ = static_cast<std::uint32_t>(weekday_bits);
  e.dom_star_ = fields[2].front() == '*';
  e.dow_star_ = fields[4].front() == '*';
  e.periodic_ = fields[0].front() == '*' || fields[1].front() == '*';

  // With the day fields ANDed, a day-of-month that no chosen month has can never match.
  // (ORed, the weekday alone matches every month; and every valid date falls on every weekday
  // in some year, so the weekday cannot make a valid date unreachable.)
  if (e.dom_star_ || e.dow_star_) {
    bool possible = false;
    for (unsigned m = 1; m <= 12 && !possible; ++m) {
      if (((e.months_ >> m) & 1U) == 0) continue;
      possible = (e.days_ & ((std::uint32_t{2} << max_days_in_month[m]) - 2)) != 0;
    }
    if (!possible) {
      throw schedule_error("cron: day-of-month '" + std::string{fields[2]} +
                           "' never occurs in month '" + std::string{fields[3]} +
                           "', so the expression would never fire");
    }
  }

  try {
    e.zone_ = detail::zone::locate(tz.empty() ? std::string_view{"UTC"} : tz);
  } catch (const schedule_error& err) {
    throw schedule_error(std::string{"cron: "} + err.what());
  }
  return e;
}

const std::string& cron_expression::timezone() const noexcept {
  return zone_->name();
}

bool operator==(const cron_expression& a, const cron_expression& b) noexcept {
  return a.text_ == b.text_ && a.timezone() == b.timezone();
}

std::optional<cron_expression::time_point> cron_expression::next_after(time_point t) const {
  const cron_matcher matcher{*this};
  const auto ts = date::floor<seconds>(t);
  const auto latest = date::floor<seconds>(time_point::max());
  const auto horizon = std::min(ts + date::floor<seconds>(date::years{400}), latest);

  auto to_local = [](sys_seconds s, seconds offset) {
    return local_seconds{s.time_since_epoch() + offset};
  };
  // Candidates are whole local minutes; an instant u is after ts exactly when its local time
  // is after ts's local time in the same span.
  auto span = zone_->span_at(ts);
  auto prev = zone_->span_at(span.begin - seconds{1});
  bool first = true;
  for (;;) {
    const auto offset = span.offset;
    local_minutes lo = first ? date::floor<minutes>(to_local(ts, offset)) + minutes{1}
                             : date::ceil<minutes>(to_local(span.begin, offset));
    if (!first && !periodic_ && offset > prev.offset) {
      // Spring forward: local times in the gap do not exist. A fixed-time job scheduled in the
      // gap fires once, at the first instant after it.
      const auto gap_lo = date::ceil<minutes>(to_local(span.begin, prev.offset));
      const auto gap_hi = date::ceil<minutes>(to_local(span.begin, offset));
      if (matcher.first_match(gap_lo, gap_hi)) return time_point{span.begin.time_since_epoch()};
    }
    if (!periodic_ && prev.offset > offset) {
      // Fall back: local times in the overlap occur twice. A fixed-time job fired on the first
      // occurrence (in the previous span), so skip the repeat.
      lo = std::max(lo, date::ceil<minutes>(to_local(span.begin, prev.offset)));
    }
    const auto span_end = std::min(span.end, horizon);
    const auto hi = date::ceil<minutes>(to_local(span_end, offset));
    if (const auto found = matcher.first_match(lo, hi)) {
      const sys_seconds at{found->time_since_epoch() - offset};
      if (at > latest) return std::nullopt;
      return time_point{at.time_since_epoch()};
    }
    if (span.end >= horizon) return std::nullopt;
    prev = span;
    span = zone_->span_at(span.end);
    first = false;
  }
}

}  // namespace sluice::sched
