// Parameter encoding and timestamp text, without a server.

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/error.hpp"
#include "sluice/pg/params.hpp"

namespace pg = sluice::pg;
using namespace std::chrono;

namespace {

system_clock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi, int s,
                             microseconds us = microseconds(0)) {
  return sys_days(year{y} / month{mo} / day{d}) + hours(h) + minutes(mi) + seconds(s) + us;
}

double read_double(const std::string& text) {
  double v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  EXPECT_EQ(ec, std::errc()) << text;
  EXPECT_EQ(ptr, text.data() + text.size()) << text;
  return v;
}

}  // namespace

TEST(PgParams, NullForms) {
  for (const pg::param& p :
       {pg::param(), pg::param(nullptr), pg::param(std::nullopt),
        pg::param(static_cast<const char*>(nullptr)), pg::param(std::optional<int>()),
        pg::param(std::optional<std::string>())}) {
    EXPECT_TRUE(p.is_null());
    EXPECT_FALSE(p.value.has_value());
    EXPECT_EQ(p.type, pg::oids::unspecified);
    EXPECT_FALSE(p.binary);
  }
}

TEST(PgParams, Booleans) {
  EXPECT_EQ(pg::param(true).value, "true");
  EXPECT_EQ(pg::param(false).value, "false");
  EXPECT_EQ(pg::param(true).type, pg::oids::boolean);
  EXPECT_FALSE(pg::param(true).binary);
}

TEST(PgParams, Integers) {
  EXPECT_EQ(pg::param(42).value, "42");
  EXPECT_EQ(pg::param(42).type, pg::oids::int4);
  EXPECT_EQ(pg::param(std::numeric_limits<int>::min()).value, "-2147483648");
  EXPECT_EQ(pg::param(std::int64_t{-9223372036854775807LL - 1}).value, "-9223372036854775808");
  EXPECT_EQ(pg::param(std::int64_t{1}).type, pg::oids::int8);
  EXPECT_EQ(pg::param(9223372036854775807LL).value, "9223372036854775807");
  EXPECT_EQ(pg::param(9223372036854775807LL).type, pg::oids::int8);
  EXPECT_EQ(pg::param(4294967295U).value, "4294967295");
  EXPECT_EQ(pg::param(4294967295U).type, pg::oids::int8);
  EXPECT_EQ(pg::param(std::size_t{7}).type, pg::oids::int8);
  // Beyond int8: numeric, so that the value still arrives intact.
  EXPECT_EQ(pg::param(18446744073709551615ULL).value, "18446744073709551615");
  EXPECT_EQ(pg::param(18446744073709551615ULL).type, pg::oids::numeric);
  EXPECT_EQ(pg::param(18446744073709551615UL).type, pg::oids::numeric);
  EXPECT_EQ(pg::param(9223372036854775807ULL).type, pg::oids::int8);
}

TEST(PgParams, DoublesRoundTripExactly) {
  const double values[] = {0.0,
                           -0.0,
                           0.1,
                           1.0 / 3.0,
                           -2.5e-8,
                           123456789.123456789,
                           std::numeric_limits<double>::max(),
                           std::numeric_limits<double>::lowest(),
                           std::numeric_limits<double>::min(),
                           std::numeric_limits<double>::denorm_min(),
                           std::numeric_limits<double>::epsilon(),
                           9007199254740993.0};
  for (double v : values) {
    const pg::param p(v);
    ASSERT_TRUE(p.value);
    EXPECT_EQ(p.type, pg::oids::float8);
    const double back = read_double(*p.value);
    EXPECT_EQ(back, v) << *p.value;
    EXPECT_EQ(std::signbit(back), std::signbit(v)) << *p.value;
  }
  EXPECT_EQ(pg::param(0.1).value, "0.1");  // shortest form, not 0.10000000000000001
}

TEST(PgParams, DoubleSpecialValuesUseFloat8Spellings) {
  EXPECT_EQ(pg::param(std::numeric_limits<double>::quiet_NaN()).value, "NaN");
  EXPECT_EQ(pg::param(std::numeric_limits<double>::infinity()).value, "Infinity");
  EXPECT_EQ(pg::param(-std::numeric_limits<double>::infinity()).value, "-Infinity");
}

TEST(PgParams, Strings) {
  EXPECT_EQ(pg::param("hello").value, "hello");
  EXPECT_EQ(pg::param("hello").type, pg::oids::unspecified);
  EXPECT_EQ(pg::param(std::string("it's \"quoted\"; DROP TABLE x")).value,
            "it's \"quoted\"; DROP TABLE x");
  const std::string backing = "abcdef";
  EXPECT_EQ(pg::param(std::string_view(backing).substr(1, 3)).value, "bcd");
  EXPECT_EQ(pg::param(std::string()).value, "");
  EXPECT_FALSE(pg::param(std::string()).is_null());  // empty text is not NULL
  EXPECT_EQ(pg::param("żółć €").value, "żółć €");
}

TEST(PgParams, TextWithNulByteIsRejected) {
  using namespace std::string_literals;
  EXPECT_THROW(pg::param("a\0b"s), pg::conversion_error);
  EXPECT_THROW(pg::param(std::string_view("a\0b", 3)), pg::conversion_error);
  EXPECT_THROW(pg::param(pg::json_text{"{\"a\":\"\0\"}"s}), pg::conversion_error);
}

TEST(PgParams, BytesAreBinaryBytea) {
  const std::vector<std::byte> bytes{std::byte{0x00}, std::byte{0xff}, std::byte{0x5c},
                                     std::byte{0x27}, std::byte{0x00}};
  const pg::param p(bytes);
  ASSERT_TRUE(p.value);
  EXPECT_TRUE(p.binary);
  EXPECT_EQ(p.type, pg::oids::bytea);
  EXPECT_EQ(p.value->size(), 5U);  // embedded NULs kept
  EXPECT_EQ(*p.value, std::string("\x00\xff\x5c\x27\x00", 5));

  const pg::param from_span(std::span<const std::byte>(bytes).subspan(1, 2));
  EXPECT_EQ(*from_span.value, std::string("\xff\x5c", 2));

  const pg::param empty(std::vector<std::byte>{});
  EXPECT_FALSE(empty.is_null());
  EXPECT_EQ(empty.value->size(), 0U);
}

TEST(PgParams, JsonTextLetsTheServerPickTheType) {
  const pg::param p(pg::json_text{R"({"a": [1, 2]})"});
  EXPECT_EQ(p.value, R"({"a": [1, 2]})");
  EXPECT_EQ(p.type, pg::oids::unspecified);
  EXPECT_FALSE(p.binary);
}

TEST(PgParams, Optionals) {
  EXPECT_EQ(pg::param(std::optional<int>(5)).value, "5");
  EXPECT_EQ(pg::param(std::optional<int>(5)).type, pg::oids::int4);
  EXPECT_EQ(pg::param(std::optional<std::string>("x")).value, "x");
  EXPECT_EQ(pg::param(std::optional<bool>(false)).value, "false");
  EXPECT_TRUE(pg::param(std::optional<double>()).is_null());
  const std::optional<std::vector<std::byte>> bytes{std::vector<std::byte>{std::byte{1}}};
  EXPECT_TRUE(pg::param(bytes).binary);
}

TEST(PgParams, Timestamps) {
  const pg::param p(utc(2026, 11, 26, 15, 49, 20, microseconds(123456)));
  EXPECT_EQ(p.value, "2026-11-26T15:49:20.123456Z");
  EXPECT_EQ(p.type, pg::oids::timestamptz);
  EXPECT_EQ(pg::format_timestamp(utc(1970, 1, 1, 0, 0, 0)), "1970-01-01T00:00:00.000000Z");
  EXPECT_EQ(pg::format_timestamp(utc(2000, 2, 29, 23, 59, 59, microseconds(999999))),
            "2000-02-29T23:59:59.999999Z");
  // Microsecond precision: nanoseconds are dropped toward the past.
  EXPECT_EQ(pg::format_timestamp(utc(2020, 1, 1, 0, 0, 0) + nanoseconds(1999)),
            "2020-01-01T00:00:00.000001Z");
  // The microsecond-precision timestamp type converts.
  const pg::timestamp ts = time_point_cast<microseconds>(utc(2021, 6, 1, 12, 0, 0));
  EXPECT_EQ(pg::param_list::of(ts).params()[0].value, "2021-06-01T12:00:00.000000Z");
}

TEST(PgParams, TimestampsBefore1970) {
  EXPECT_EQ(pg::format_timestamp(utc(1969, 12, 31, 23, 59, 59, microseconds(999999))),
            "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(pg::format_timestamp(system_clock::time_point(microseconds(-1))),
            "1969-12-31T23:59:59.999999Z");
  // Half a microsecond before the epoch is still in 1969 (floor, not truncation).
  EXPECT_EQ(pg::format_timestamp(system_clock::time_point(nanoseconds(-500))),
            "1969-12-31T23:59:59.999999Z");
  EXPECT_EQ(pg::format_timestamp(utc(1900, 3, 1, 1, 2, 3, microseconds(4))),
            "1900-03-01T01:02:03.000004Z");
  EXPECT_EQ(pg::format_timestamp(utc(1700, 1, 1, 0, 0, 0)), "1700-01-01T00:00:00.000000Z");
}

TEST(PgParams, ParseTimestampPostgresOutput) {
  EXPECT_EQ(pg::parse_timestamp("2026-11-26 15:49:20.123456+00"),
            utc(2026, 11, 26, 15, 49, 20, microseconds(123456)));
  EXPECT_EQ(pg::parse_timestamp("2026-11-26 15:49:20+00"), utc(2026, 11, 26, 15, 49, 20));
  EXPECT_EQ(pg::parse_timestamp("2026-11-26 15:49:20.5+00"),
            utc(2026, 11, 26, 15, 49, 20, microseconds(500000)));
  // Offsets east and west, with minutes, with seconds (local mean time of old dates).
  EXPECT_EQ(pg::parse_timestamp("2026-11-26 21:19:20+05:30"), utc(2026, 11, 26, 15, 49, 20));
  EXPECT_EQ(pg::parse_timestamp("2026-11-26 07:49:20-08"), utc(2026, 11, 26, 15, 49, 20));
  EXPECT_EQ(pg::parse_timestamp("2026-11-26 12:19:20-03:30"), utc(2026, 11, 26, 15, 49, 20));
  EXPECT_EQ(pg::parse_timestamp("1700-01-01 00:19:32+00:19:32"), utc(1700, 1, 1, 0, 0, 0));
  // ISO 8601 spellings.
  EXPECT_EQ(pg::parse_timestamp("2026-11-26T15:49:20.123456Z"),
            utc(2026, 11, 26, 15, 49, 20, microseconds(123456)));
  EXPECT_EQ(pg::parse_timestamp("2026-11-26T17:49:20+0200"), utc(2026, 11, 26, 15, 49, 20));
  // Before 1970, crossing the date line through the offset.
  EXPECT_EQ(pg::parse_timestamp("1969-12-31 23:59:59.999999+00"),
            system_clock::time_point(microseconds(-1)));
  EXPECT_EQ(pg::parse_timestamp("1970-01-01 01:00:00+01"), system_clock::time_point());
  EXPECT_EQ(pg::parse_timestamp("2000-01-01 00:30:00+01"), utc(1999, 12, 31, 23, 30, 0));
  // More than six fraction digits keep nanoseconds.
  EXPECT_EQ(pg::parse_timestamp("2020-01-01 00:00:00.123456789Z"),
            utc(2020, 1, 1, 0, 0, 0) + nanoseconds(123456789));
}

TEST(PgParams, FormatParseRoundTrip) {
  const system_clock::time_point points[] = {
      utc(2026, 11, 26, 15, 49, 20, microseconds(123456)),
      utc(1969, 7, 20, 20, 17, 40, microseconds(1)),
      utc(1970, 1, 1, 0, 0, 0),
      system_clock::time_point(microseconds(-1)),
      utc(2262, 4, 11, 0, 0, 0),
      utc(1678, 1, 1, 0, 0, 0),
      utc(2024, 2, 29, 12, 0, 0, microseconds(999999)),
  };
  for (const auto tp : points) {
    const std::string text = pg::format_timestamp(tp);
    EXPECT_EQ(pg::parse_timestamp(text), tp) << text;
  }
}

TEST(PgParams, ParseTimestampRejectsMalformedInput) {
  const char* bad[] = {
      "",
      "garbage",
      "2026-11-26",                      // no time
      "2026-11-26 15:49:20",             // no offset
      "2026-13-01 00:00:00+00",          // month 13
      "2026-02-30 00:00:00+00",          // no such day
      "2025-02-29 00:00:00+00",          // not a leap year
      "2026-11-26 24:00:00+00",          // hour 24
      "2026-11-26 15:60:00+00",          // minute 60
      "2026-11-26 15:49:61+00",          // second 61
      "2026-11-26 15:49:20.+00",         // dot without digits
      "2026-11-26 15:49:20+00 BC",       // trailing text
      "2026-11-26 15:49:20+00:99",       // offset minutes
      "2026-11-26 15:49:20+0",           // one-digit offset
      "26-11-26 15:49:20+00",            // two-digit year
      "2026/11/26 15:49:20+00",          // wrong separators
      "2026-11-26 15:49:20.123456+00x",  // trailing junk
      "infinity",
      "-infinity",
      "9999-12-31 23:59:59+00",  // beyond system_clock's range
      "1000-01-01 00:00:00+00",
  };
  for (const char* text : bad) {
    EXPECT_THROW((void)pg::parse_timestamp(text), pg::conversion_error) << text;
  }
  try {
    (void)pg::parse_timestamp("2026-13-01 00:00:00+00");
    FAIL() << "no exception";
  } catch (const pg::conversion_error& e) {
    EXPECT_NE(std::string(e.what()).find("2026-13-01 00:00:00+00"), std::string::npos) << e.what();
  }
}

TEST(PgParams, ParamListArrays) {
  const std::vector<std::byte> bytes{std::byte{0}, std::byte{1}};
  pg::param_list list = pg::param_list::of(1, std::int64_t{2}, "three", nullptr, bytes, true);
  ASSERT_EQ(list.size(), 6);
  EXPECT_EQ(list.types()[0], pg::oids::int4);
  EXPECT_EQ(list.types()[1], pg::oids::int8);
  EXPECT_EQ(list.types()[2], pg::oids::unspecified);
  EXPECT_EQ(list.types()[4], pg::oids::bytea);
  EXPECT_EQ(list.types()[5], pg::oids::boolean);
  EXPECT_STREQ(list.values()[0], "1");
  EXPECT_STREQ(list.values()[2], "three");
  EXPECT_EQ(list.values()[3], nullptr);
  EXPECT_EQ(list.lengths()[4], 2);
  EXPECT_EQ(list.formats()[4], 1);
  EXPECT_EQ(list.formats()[2], 0);
  EXPECT_EQ(std::string(list.values()[4], 2), std::string("\0\1", 2));

  // Moving keeps the pointers valid (short strings live inside the param objects).
  const char* before = list.values()[2];
  pg::param_list moved = std::move(list);
  EXPECT_EQ(moved.values()[2], before);
  EXPECT_STREQ(moved.values()[2], "three");
  EXPECT_EQ(moved.values()[2], moved.params()[2].value->c_str());
}

TEST(PgParams, EmptyParamList) {
  const pg::param_list list = pg::param_list::of();
  EXPECT_EQ(list.size(), 0);
  const pg::param_list dflt;
  EXPECT_EQ(dflt.size(), 0);
}

// Arrays travel as one text literal whose every element is quoted, so commas, braces, quotes,
// backslashes and the word NULL in a value stay values; absent values are SQL NULLs.
TEST(PgParams, ArrayLiteralQuotesEveryElement) {
  pg::array_literal a;
  EXPECT_EQ(a.text(), "{}");
  a.add(std::string_view("plain"))
      .add("a,b")
      .add("{x}")
      .add("say \"hi\"")
      .add("back\\slash")
      .add("NULL")
      .null()
      .add(std::string_view(""));
  EXPECT_EQ(a.size(), 8U);
  EXPECT_EQ(a.text(), R"({"plain","a,b","{x}","say \"hi\"","back\\slash","NULL",NULL,""})");

  pg::array_literal n;
  n.add(std::int64_t{-9223372036854775807LL - 1}).add(42).add(true).add(false);
  n.add(std::optional<std::int64_t>{}).add(std::optional<std::int64_t>{7});
  EXPECT_EQ(n.text(), "{-9223372036854775808,42,t,f,NULL,7}");

  pg::array_literal t;
  t.add(std::chrono::system_clock::time_point{} + std::chrono::microseconds(1));
  EXPECT_EQ(t.text(), "{\"" +
                          pg::format_timestamp(std::chrono::system_clock::time_point{} +
                                               std::chrono::microseconds(1)) +
                          "\"}");
  EXPECT_EQ(pg::param(a).value, a.text());
  EXPECT_EQ(pg::param(a).type, pg::oids::unspecified);
}

TEST(PgParams, ArrayLiteralRefusesNulBytes) {
  pg::array_literal a;
  EXPECT_THROW(a.add(std::string_view("a\0b", 3)), pg::conversion_error);
  EXPECT_EQ(a.size(), 0U) << "a refused element must not be half-added";
}
