#include "sched/zone.hpp"

#include <algorithm>
#include <array>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <map>
#include <mutex>
#include <utility>

#include <date/date.h>
#include <date/tz.h>

#include "sluice/sched/cron.hpp"

// The scheduler must never reach for the network: only the operating system's tz database.
static_assert(USE_OS_TZDB == 1, "sluice needs date built with USE_OS_TZDB=1 (see CMakeLists.txt)");
static_assert(HAS_REMOTE_API == 0, "sluice must not use date's remote tz database API");

namespace sluice::sched::detail {
namespace {

using std::chrono::seconds;

// Where date's OS-tzdb mode finds the database on Debian (it probes the same directory first).
constexpr std::string_view zoneinfo_dir = "/usr/share/zoneinfo/";

constexpr sys_seconds far_past{date::sys_days{date::year{-32767} / 1 / 1}};
constexpr sys_seconds far_future{date::sys_days{date::year{32767} / 12 / 31}};

class posix_cursor {
 public:
  explicit posix_cursor(std::string_view text) : s_(text) {}

  [[nodiscard]] bool done() const { return i_ == s_.size(); }
  [[nodiscard]] char peek() const { return done() ? '\0' : s_[i_]; }
  bool eat(char c) {
    if (peek() != c) return false;
    ++i_;
    return true;
  }

  // A zone abbreviation: "<+1030>" or at least three letters.
  bool name() {
    if (eat('<')) {
      const auto close = s_.find('>', i_);
      if (close == std::string_view::npos || close == i_) return false;
      i_ = close + 1;
      return true;
    }
    const auto start = i_;
    while (!done() && ((peek() >= 'A' && peek() <= 'Z') || (peek() >= 'a' && peek() <= 'z')))
      ++i_;
    return i_ - start >= 3;
  }

  std::optional<int> number(int max_digits) {
    int value = 0;
    int digits = 0;
    while (!done() && peek() >= '0' && peek() <= '9' && digits < max_digits) {
      value = value * 10 + (peek() - '0');
      ++i_;
      ++digits;
    }
    if (digits == 0) return std::nullopt;
    return value;
  }

  // [+-]hh[:mm[:ss]], hours up to max_hours.
  std::optional<seconds> hms(int max_hours) {
    int sign = 1;
    if (eat('-')) {
      sign = -1;
    } else {
      eat('+');
    }
    const auto h = number(3);
    if (!h || *h > max_hours) return std::nullopt;
    int total = *h * 3600;
    if (eat(':')) {
      const auto m = number(2);
      if (!m || *m > 59) return std::nullopt;
      total += *m * 60;
      if (eat(':')) {
        const auto sec = number(2);
        if (!sec || *sec > 59) return std::nullopt;
        total += *sec;
      }
    }
    return seconds{sign * total};
  }

  std::optional<posix_date> rule() {
    posix_date r;
    if (eat('J')) {
      const auto n = number(3);
      if (!n || *n < 1 || *n > 365) return std::nullopt;
      r.kind = posix_date::form::julian_no_leap;
      r.a = *n;
    } else if (eat('M')) {
      const auto m = number(2);
      if (!m || *m < 1 || *m > 12 || !eat('.')) return std::nullopt;
      const auto w = number(1);
      if (!w || *w < 1 || *w > 5 || !eat('.')) return std::nullopt;
      const auto d = number(1);
      if (!d || *d > 6) return std::nullopt;
      r.kind = posix_date::form::month_week_day;
      r.a = *m;
      r.w = *w;
      r.d = *d;
    } else {
      const auto n = number(3);
      if (!n || *n > 365) return std::nullopt;
      r.kind = posix_date::form::zero_based;
      r.a = *n;
    }
    if (eat('/')) {
      const auto t = hms(167);  // RFC 8536 extends POSIX's 0-24 to -167..167
      if (!t) return std::nullopt;
      r.time = *t;
    }
    return r;
  }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
};

date::local_days rule_day(const posix_date& r, date::year y) {
  switch (r.kind) {
    case posix_date::form::julian_no_leap: {
      // Jn counts 1-365 and never names February 29.
      const int shift = (y.is_leap() && r.a >= 60) ? 1 : 0;
      return date::local_days{y / 1 / 1} + date::days{r.a - 1 + shift};
    }
    case posix_date::form::zero_based:
      return date::local_days{y / 1 / 1} + date::days{r.a};
    case posix_date::form::month_week_day:
      break;
  }
  const date::month m{static_cast<unsigned>(r.a)};
  const date::weekday wd{static_cast<unsigned>(r.d)};
  if (r.w == 5) return date::local_days{date::year_month_weekday_last{y, m, wd[date::last]}};
  return date::local_days{date::year_month_weekday{y, m, wd[static_cast<unsigned>(r.w)]}};
}

std::uint32_t be32(const std::string& bytes, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t k = 0; k < 4; ++k)
    v = (v << 8) | static_cast<unsigned char>(bytes[at + k]);
  return v;
}

}  // namespace

std::optional<posix_tz> parse_posix_tz(std::string_view text) {
  posix_cursor c{text};
  posix_tz tz;
  if (!c.name()) return std::nullopt;
  const auto std_off = c.hms(24);
  if (!std_off) return std::nullopt;
  tz.std_offset = -*std_off;  // POSIX counts hours west of Greenwich
  if (c.done()) return tz;
  if (!c.name()) return std::nullopt;
  tz.has_dst = true;
  tz.dst_offset = tz.std_offset + std::chrono::hours{1};
  if (!c.done() && c.peek() != ',') {
    const auto dst_off = c.hms(24);
    if (!dst_off) return std::nullopt;
    tz.dst_offset = -*dst_off;
  }
  if (!c.eat(',')) return std::nullopt;  // DST without rules: the default is implementation's
  const auto start = c.rule();
  if (!start || !c.eat(',')) return std::nullopt;
  const auto end = c.rule();
  if (!end || !c.done()) return std::nullopt;
  tz.start = *start;
  tz.end = *end;
  return tz;
}

std::optional<std::string> read_tzif_footer(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in) return std::nullopt;
  const std::string bytes{std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{}};
  constexpr std::size_t header = 44;
  if (bytes.size() < header || bytes.compare(0, 4, "TZif") != 0 || bytes[4] < '2') {
    return std::nullopt;
  }
  // Skip the version-1 block (4-byte times), then the version-2 header and block (8-byte times).
  auto block_size = [&](std::size_t at, std::size_t time_size) {
    const std::size_t isutcnt = be32(bytes, at + 20);
    const std::size_t isstdcnt = be32(bytes, at + 24);
    const std::size_t leapcnt = be32(bytes, at + 28);
    const std::size_t timecnt = be32(bytes, at + 32);
    const std::size_t typecnt = be32(bytes, at + 36);
    const std::size_t charcnt = be32(bytes, at + 40);
    return timecnt * time_size + timecnt + typecnt * 6 + charcnt + leapcnt * (time_size + 4) +
           isstdcnt + isutcnt;
  };
  const std::size_t v2_header = header + block_size(0, 4);
  if (v2_header + header > bytes.size()) return std::nullopt;
  const std::size_t footer = v2_header + header + block_size(v2_header, 8);
  if (footer >= bytes.size() || bytes[footer] != '\n') return std::nullopt;
  const auto close = bytes.find('\n', footer + 1);
  if (close == std::string::npos) return std::nullopt;
  return bytes.substr(footer + 1, close - footer - 1);
}

zone::zone(std::string name, const date::time_zone* tz, std::optional<posix_tz> tail)
    : name_(std::move(name)), tz_(tz), tail_(tail) {
  if (tail_ && !tail_->has_dst) tail_.reset();
  if (tz_ != nullptr && tail_) last_transition_ = tz_->get_info(far_future - date::days{1}).begin;
}

std::shared_ptr<const zone> zone::locate(std::string_view name) {
  static std::mutex mutex;
  static std::map<std::string, std::shared_ptr<const zone>, std::less<>> cache;  // guarded by mutex
  {
    const std::lock_guard lock{mutex};
    if (const auto it = cache.find(name); it != cache.end()) return it->second;
  }

  // Located outside the lock: the first call loads the database index, which takes a while.
  std::shared_ptr<const zone> found;
  if (name == "UTC") {
    found = std::make_shared<const zone>(std::string{name}, nullptr, std::nullopt);
  } else {
    try {
      (void)date::get_tzdb();
    } catch (const std::exception& e) {
      throw schedule_error("cannot read the time zone database: " + std::string{e.what()});
    }
    const date::time_zone* tz = nullptr;
    try {
      tz = date::locate_zone(name);
    } catch (const std::exception&) {
      throw schedule_error("unknown time zone '" + std::string{name} + "'");
    }
    std::optional<posix_tz> tail;
    if (auto footer = read_tzif_footer(std::string{zoneinfo_dir} + std::string{tz->name()})) {
      tail = parse_posix_tz(*footer);
    }
    found = std::make_shared<const zone>(std::string{name}, tz, tail);
  }

  const std::lock_guard lock{mutex};
  return cache.emplace(std::string{name}, std::move(found)).first->second;
}

offset_span zone::span_at(sys_seconds t) const {
  if (tz_ == nullptr) return {far_past, far_future, seconds{0}};
  if (!tail_ || t < last_transition_) {
    const auto info = tz_->get_info(t);
    return {info.begin, info.end, info.offset};
  }

  // Past the file's last transition: the footer rule gives two transitions a year.
  const auto y = date::year_month_day{date::floor<date::days>(t)}.year();
  std::array<std::pair<sys_seconds, seconds>, 6> transitions{};
  std::size_t n = 0;
  for (auto yy = y - date::years{1}; yy <= y + date::years{1}; yy += date::years{1}) {
    const auto start = rule_day(tail_->start, yy) + tail_->start.time;
    const auto end = rule_day(tail_->end, yy) + tail_->end.time;
    transitions[n++] = {sys_seconds{start.time_since_epoch() - tail_->std_offset},
                        tail_->dst_offset};
    transitions[n++] = {sys_seconds{end.time_since_epoch() - tail_->dst_offset}, tail_->std_offset};
  }
  std::sort(transitions.begin(), transitions.end());
  const auto after = std::upper_bound(transitions.begin(), transitions.end(), t,
                                      [](sys_seconds v, const auto& tr) { return v < tr.first; });
  if (after == transitions.begin()) {  // only with absurd rule times; the previous year's precede t
    return {last_transition_, after->first, tail_->std_offset};
  }
  const auto& current = *std::prev(after);
  const sys_seconds end = after == transitions.end() ? far_future : after->first;
  return {std::max(current.first, last_transition_), end, current.second};
}

}  // namespace sluice::sched::detail
