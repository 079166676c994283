#include "sluice/pg/params.hpp"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "sluice/pg/error.hpp"

namespace sluice::pg {
namespace {

template <class Int>
std::string integer_text(Int v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;  // 32 characters hold any 64-bit integer
  return std::string(buf, end);
}

// Text-format parameters travel as C strings: libpq stops at the first NUL byte, so a string
// holding one would be cut short without a word. PostgreSQL text cannot hold NUL anyway.
std::string checked_text(std::string v) {
  // std::find rather than find('\0'): g++ 12 -O3 warns falsely on the memchr that inlines.
  if (std::find(v.begin(), v.end(), '\0') != v.end()) {
    throw conversion_error(
        "text parameter contains a NUL byte; PostgreSQL text cannot hold one (send binary data "
        "as bytes)");
  }
  return v;
}

}  // namespace

param::param(bool v) : value(v ? "true" : "false"), type(oids::boolean) {}
param::param(int v) : value(integer_text(v)), type(oids::int4) {}
param::param(long v) : value(integer_text(v)), type(oids::int8) {}
param::param(long long v) : value(integer_text(v)), type(oids::int8) {}
param::param(unsigned v) : value(integer_text(v)), type(oids::int8) {}
param::param(unsigned long v)
    : value(integer_text(v)),
      type(v <= static_cast<unsigned long>(std::numeric_limits<std::int64_t>::max())
               ? oids::int8
               : oids::numeric) {}
param::param(unsigned long long v)
    : value(integer_text(v)),
      type(v <= static_cast<unsigned long long>(std::numeric_limits<std::int64_t>::max())
               ? oids::int8
               : oids::numeric) {}

param::param(double v) : type(oids::float8) {
  // float8in does not read to_chars' "inf"/"nan" spellings on every version; use its own.
  if (std::isnan(v)) {
    value = "NaN";
  } else if (std::isinf(v)) {
    value = v > 0 ? "Infinity" : "-Infinity";
  } else {
    // Shortest text that reads back as exactly the same double.
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    (void)ec;  // 64 characters hold any double in shortest form
    value = std::string(buf, end);
  }
}

param::param(const char* v) {
  if (v != nullptr) value = checked_text(v);
}
param::param(std::string v) : value(checked_text(std::move(v))) {}
param::param(std::string_view v) : value(checked_text(std::string(v))) {}

param::param(std::span<const std::byte> v)
    : value(std::string(reinterpret_cast<const char*>(v.data()), v.size())),
      type(oids::bytea),
      binary(true) {}
param::param(const std::vector<std::byte>& v) : param(std::span<const std::byte>(v)) {}

// Unspecified type: the server takes the column's type, so the same value fits json, jsonb
// and text columns alike.
param::param(json_text v) : value(checked_text(std::move(v.text))), type(oids::unspecified) {}
param::param(const array_literal& v) : value(v.text()), type(oids::unspecified) {}

void array_literal::separator() {
  if (size_++ > 0) body_ += ',';
}

array_literal& array_literal::null() {
  separator();
  body_ += "NULL";
  return *this;
}

array_literal& array_literal::add(std::int64_t v) {
  separator();
  body_ += integer_text(v);
  return *this;
}

array_literal& array_literal::add(bool v) {
  separator();
  body_ += v ? 't' : 'f';
  return *this;
}

array_literal& array_literal::add(std::string_view v) {
  if (std::find(v.begin(), v.end(), '\0') != v.end()) (void)checked_text(std::string(v));  // throws
  separator();
  body_ += '"';
  for (const char ch : v) {
    if (ch == '"' || ch == '\\') body_ += '\\';
    body_ += ch;
  }
  body_ += '"';
  return *this;
}

array_literal& array_literal::add(std::chrono::system_clock::time_point v) {
  separator();
  body_ += '"' + format_timestamp(v) + '"';
  return *this;
}

param::param(std::chrono::system_clock::time_point v)
    : value(format_timestamp(v)), type(oids::timestamptz) {}

std::string format_timestamp(std::chrono::system_clock::time_point tp) {
  using namespace std::chrono;
  // floor, not truncation toward zero: 1969-12-31 23:59:59.9999995 stays in 1969.
  const auto us = floor<microseconds>(tp);
  const auto day = floor<days>(us);
  const year_month_day ymd{day};
  const hh_mm_ss<microseconds> tod{us - day};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%06lldZ",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<int>(tod.hours().count()),
                static_cast<int>(tod.minutes().count()), static_cast<int>(tod.seconds().count()),
                static_cast<long long>(tod.subseconds().count()));
  return buf;
}

namespace {

class timestamp_parser {
 public:
  explicit timestamp_parser(std::string_view text) : text_(text) {}

  std::chrono::system_clock::time_point parse() {
    using namespace std::chrono;
    const int y = number(4, 9, "year");
    expect('-');
    const int mo = number(2, 2, "month");
    expect('-');
    const int d = number(2, 2, "day");
    if (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == 'T')) {
      ++pos_;
    } else {
      fail("expected ' ' or 'T' after the date");
    }
    const int h = number(2, 2, "hour");
    expect(':');
    const int mi = number(2, 2, "minute");
    expect(':');
    const int s = number(2, 2, "second");
    std::int64_t frac_ns = 0;
    if (pos_ < text_.size() && text_[pos_] == '.') {
      ++pos_;
      int digits = 0;
      while (pos_ < text_.size() && is_digit(text_[pos_])) {
        if (digits < 9) {
          frac_ns = frac_ns * 10 + (text_[pos_] - '0');
          ++digits;
        }
        ++pos_;
      }
      if (digits == 0) fail("expected digits after '.'");
      for (; digits < 9; ++digits)
        frac_ns *= 10;
    }
    const std::int64_t offset_s = offset();
    if (pos_ != text_.size()) fail("unexpected text after the time zone offset");

    const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                             day{static_cast<unsigned>(d)}};
    if (!ymd.ok()) fail("no such date");
    if (h > 23 || mi > 59 || s > 59) fail("no such time of day");

    // Compute in seconds (64-bit, years up to 999'999'999 fit) and check the range of
    // system_clock before converting, so nothing overflows.
    const std::int64_t secs = std::int64_t{sys_days(ymd).time_since_epoch().count()} * 86400 +
                              std::int64_t{h} * 3600 + std::int64_t{mi} * 60 + s - offset_s;
    using clock_duration = std::chrono::system_clock::duration;
    const auto max_secs = duration_cast<seconds>(clock_duration::max()).count() - 1;
    const auto min_secs = duration_cast<seconds>(clock_duration::min()).count() + 1;
    if (secs > max_secs || secs < min_secs) fail("out of the range of system_clock");
    return system_clock::time_point(
        duration_cast<clock_duration>(seconds(secs) + nanoseconds(frac_ns)));
  }

 private:
  static bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

  [[noreturn]] void fail(std::string_view why) const {
    throw conversion_error("malformed timestamp '" + std::string(text_) + "': " + std::string(why));
  }

  void expect(char c) {
    if (pos_ >= text_.size() || text_[pos_] != c) {
      fail(std::string("expected '") + c + "'");
    }
    ++pos_;
  }

  int number(int min_digits, int max_digits, std::string_view what) {
    int v = 0;
    int digits = 0;
    while (pos_ < text_.size() && is_digit(text_[pos_]) && digits < max_digits) {
      v = v * 10 + (text_[pos_] - '0');
      ++digits;
      ++pos_;
    }
    if (digits < min_digits) fail("bad " + std::string(what));
    return v;
  }

  // "Z", "+HH", "+HH:MM", "+HH:MM:SS" (PostgreSQL prints seconds for historical local mean
  // times such as +00:19:32), or the same without colons.
  std::int64_t offset() {
    if (pos_ < text_.size() && text_[pos_] == 'Z') {
      ++pos_;
      return 0;
    }
    if (pos_ >= text_.size() || (text_[pos_] != '+' && text_[pos_] != '-')) {
      fail("expected a time zone offset");
    }
    const int sign = text_[pos_] == '-' ? -1 : 1;
    ++pos_;
    const int oh = number(2, 2, "offset hours");
    int om = 0;
    int os = 0;
    if (pos_ < text_.size() && text_[pos_] == ':') {
      ++pos_;
      om = number(2, 2, "offset minutes");
      if (pos_ < text_.size() && text_[pos_] == ':') {
        ++pos_;
        os = number(2, 2, "offset seconds");
      }
    } else if (pos_ < text_.size() && is_digit(text_[pos_])) {
      om = number(2, 2, "offset minutes");
    }
    if (om > 59 || os > 59) fail("bad offset");
    return sign * (std::int64_t{oh} * 3600 + std::int64_t{om} * 60 + os);
  }

  std::string_view text_;
  std::size_t pos_ = 0;
};

}  // namespace

std::chrono::system_clock::time_point parse_timestamp(std::string_view text) {
  if (text == "infinity" || text == "-infinity") {
    throw conversion_error("timestamp '" + std::string(text) +
                           "' cannot be represented as a time point");
  }
  return timestamp_parser(text).parse();
}

param_list::param_list(std::vector<param> params) : params_(std::move(params)) {
  types_.reserve(params_.size());
  values_.reserve(params_.size());
  lengths_.reserve(params_.size());
  formats_.reserve(params_.size());
  for (const param& p : params_) {
    if (p.value && p.value->size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) {
      throw conversion_error("parameter of " + std::to_string(p.value->size()) +
                             " bytes is larger than libpq can send");
    }
    types_.push_back(p.type);
    values_.push_back(p.value ? p.value->c_str() : nullptr);
    lengths_.push_back(p.value ? static_cast<int>(p.value->size()) : 0);
    formats_.push_back(p.binary ? 1 : 0);
  }
}

}  // namespace sluice::pg
