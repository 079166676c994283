// Typed access to results, on PGresults built by hand (libpq can make them without a server).

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include "sluice/pg/error.hpp"
#include "sluice/pg/params.hpp"
#include "sluice/pg/result.hpp"

namespace pg = sluice::pg;
using namespace std::chrono;
using cell = std::optional<std::string>;

namespace {

pg::result make_result(const std::vector<std::string>& names,
                       const std::vector<std::vector<cell>>& rows) {
  PGresult* res = PQmakeEmptyPGresult(nullptr, PGRES_TUPLES_OK);
  if (res == nullptr) throw std::bad_alloc();
  pg::result owned(res, "SELECT made_by_hand");
  std::vector<std::string> name_storage = names;
  std::vector<PGresAttDesc> attrs(names.size());
  for (std::size_t i = 0; i < names.size(); ++i) {
    attrs[i].name = name_storage[i].data();
    attrs[i].tableid = 0;
    attrs[i].columnid = 0;
    attrs[i].format = 0;
    attrs[i].typid = 25;  // text
    attrs[i].typlen = -1;
    attrs[i].atttypmod = -1;
  }
  if (PQsetResultAttrs(res, static_cast<int>(attrs.size()), attrs.data()) == 0) {
    throw std::runtime_error("PQsetResultAttrs failed");
  }
  for (std::size_t r = 0; r < rows.size(); ++r) {
    for (std::size_t c = 0; c < rows[r].size(); ++c) {
      std::string value = rows[r][c].value_or("");
      const int ok = rows[r][c]
                         ? PQsetvalue(res, static_cast<int>(r), static_cast<int>(c), value.data(),
                                      static_cast<int>(value.size()))
                         : PQsetvalue(res, static_cast<int>(r), static_cast<int>(c), nullptr, -1);
      if (ok == 0) throw std::runtime_error("PQsetvalue failed");
    }
  }
  return owned;
}

pg::result single(const std::string& name, const cell& value) {
  return make_result({name}, {{value}});
}

// Runs `f`, expects a conversion_error, returns its message.
template <class F>
std::string conversion_message(F&& f) {
  try {
    f();
  } catch (const pg::conversion_error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no conversion_error";
  return {};
}

system_clock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi, int s,
                             microseconds us = microseconds(0)) {
  return sys_days(year{y} / month{mo} / day{d}) + hours(h) + minutes(mi) + seconds(s) + us;
}

}  // namespace

TEST(PgResult, ShapeAndColumns) {
  const pg::result res =
      make_result({"id", "name", "Total"}, {{"1", "a", "10"}, {"2", "b", cell()}});
  EXPECT_EQ(res.rows(), 2);
  EXPECT_EQ(res.columns(), 3);
  EXPECT_FALSE(res.empty());
  EXPECT_EQ(res.column_name(1), "name");
  EXPECT_EQ(res.column_index("name"), 1);
  EXPECT_EQ(res.column_index("Total"), 2);  // exact match
  EXPECT_EQ(res.query(), "SELECT made_by_hand");
  EXPECT_THROW((void)res.column_name(3), pg::conversion_error);
  const std::string message = conversion_message([&] { (void)res.column_index("nope"); });
  EXPECT_NE(message.find("'nope'"), std::string::npos) << message;
  EXPECT_NE(message.find("id, name, Total"), std::string::npos) << message;
}

TEST(PgResult, ColumnNamesFoldLikeSql) {
  // The server reports "SELECT 1 AS Total" as column "total".
  const pg::result res = single("total", "1");
  EXPECT_EQ(res.column_index("total"), 0);
  EXPECT_EQ(res.column_index("Total"), 0);
  EXPECT_EQ(res[0].get<int>("TOTAL"), 1);
}

TEST(PgResult, EmptyAndDefaultResults) {
  const pg::result none;
  EXPECT_EQ(none.rows(), 0);
  EXPECT_EQ(none.columns(), 0);
  EXPECT_TRUE(none.empty());
  EXPECT_EQ(none.affected_rows(), 0);
  EXPECT_TRUE(none.begin() == none.end());
  EXPECT_THROW((void)none.column_index("x"), pg::conversion_error);

  const pg::result no_rows = make_result({"a"}, {});
  EXPECT_TRUE(no_rows.empty());
  EXPECT_EQ(no_rows.affected_rows(), 0);  // no command tag
}

TEST(PgResult, RowsIterateAndCheckBounds) {
  const pg::result res = make_result({"n"}, {{"1"}, {"2"}, {"3"}});
  int sum = 0;
  int count = 0;
  for (const pg::row& r : res) {
    EXPECT_EQ(r.index(), count);
    sum += r.get<int>(0);
    ++count;
  }
  EXPECT_EQ(count, 3);
  EXPECT_EQ(sum, 6);
  EXPECT_EQ(res[2].get<int>("n"), 3);
  EXPECT_EQ(res.at(1).get<int>(0), 2);
  EXPECT_THROW((void)res.at(3), std::out_of_range);
  EXPECT_THROW((void)res.at(-1), std::out_of_range);
  EXPECT_THROW((void)res[0].get<int>(1), pg::conversion_error);
  EXPECT_THROW((void)res[0].get<int>(-1), pg::conversion_error);
  EXPECT_THROW((void)res[0].text(5), pg::conversion_error);
}

TEST(PgResult, TextAndNull) {
  const pg::result res = make_result({"a", "b", "c"}, {{"x", cell(), ""}});
  const pg::row r = res[0];
  EXPECT_EQ(r.text(0), "x");
  EXPECT_EQ(r.text("a"), "x");
  EXPECT_FALSE(r.is_null(0));
  EXPECT_TRUE(r.is_null(1));
  EXPECT_TRUE(r.is_null("b"));
  EXPECT_EQ(r.text(1), "");
  EXPECT_FALSE(r.is_null("c"));  // empty string is not NULL
  EXPECT_EQ(r.get<std::string>("c"), "");
}

TEST(PgResult, NullNeedsAnOptional) {
  const pg::result res = single("x", cell());
  EXPECT_EQ(conversion_message([&] { (void)res[0].get<int>(0); }), "column 'x' is NULL");
  EXPECT_EQ(conversion_message([&] { (void)res[0].get<std::string>("x"); }), "column 'x' is NULL");
  EXPECT_THROW((void)res[0].get<bool>(0), pg::conversion_error);
  EXPECT_THROW((void)res[0].get<std::int64_t>(0), pg::conversion_error);
  EXPECT_THROW((void)res[0].get<double>(0), pg::conversion_error);
  EXPECT_THROW((void)res[0].get<system_clock::time_point>(0), pg::conversion_error);
  EXPECT_THROW((void)res[0].get<std::vector<std::byte>>(0), pg::conversion_error);

  EXPECT_EQ(res[0].get<std::optional<int>>(0), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<std::string>>("x"), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<bool>>(0), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<std::int64_t>>(0), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<double>>(0), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<system_clock::time_point>>(0), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<std::vector<std::byte>>>(0), std::nullopt);
  EXPECT_EQ(res.one<std::optional<int>>(), std::nullopt);
}

TEST(PgResult, OptionalWithAValue) {
  EXPECT_EQ(single("n", "5")[0].get<std::optional<int>>(0), 5);
  EXPECT_EQ(single("s", "x")[0].get<std::optional<std::string>>("s"), "x");
  // A malformed value is an error even for an optional.
  EXPECT_THROW((void)single("n", "five")[0].get<std::optional<int>>(0), pg::conversion_error);
}

TEST(PgResult, Integers) {
  EXPECT_EQ(single("n", "42").one<int>(), 42);
  EXPECT_EQ(single("n", "-2147483648").one<int>(), std::numeric_limits<int>::min());
  EXPECT_EQ(single("n", "9223372036854775807").one<std::int64_t>(),
            std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(single("n", "-9223372036854775808").one<std::int64_t>(),
            std::numeric_limits<std::int64_t>::min());

  EXPECT_EQ(conversion_message([] { (void)single("n", "abc").one<int>(); }),
            "column 'n': 'abc' is not an integer");
  EXPECT_EQ(conversion_message([] { (void)single("n", "2147483648").one<int>(); }),
            "column 'n': '2147483648' is out of range for int (-2147483648 to 2147483647)");
  EXPECT_EQ(
      conversion_message([] { (void)single("n", "9223372036854775808").one<long long>(); }),
      "column 'n': '9223372036854775808' is out of range for long long (-9223372036854775808 to "
      "9223372036854775807)");
  for (const char* bad : {"", "12.5", " 1", "1 ", "+1", "0x10", "1e3", "--1"}) {
    EXPECT_THROW((void)single("n", bad).one<int>(), pg::conversion_error) << bad;
    EXPECT_THROW((void)single("n", bad).one<std::int64_t>(), pg::conversion_error) << bad;
  }
}

TEST(PgResult, Booleans) {
  EXPECT_TRUE(single("b", "t").one<bool>());
  EXPECT_FALSE(single("b", "f").one<bool>());
  EXPECT_TRUE(single("b", "true").one<bool>());
  EXPECT_FALSE(single("b", "false").one<bool>());
  EXPECT_EQ(conversion_message([] { (void)single("b", "yes").one<bool>(); }),
            "column 'b': 'yes' is not a boolean");
  EXPECT_THROW((void)single("b", "").one<bool>(), pg::conversion_error);
  EXPECT_THROW((void)single("b", "T").one<bool>(), pg::conversion_error);
}

TEST(PgResult, Doubles) {
  EXPECT_EQ(single("d", "0.1").one<double>(), 0.1);
  EXPECT_EQ(single("d", "-2.5e-08").one<double>(), -2.5e-8);
  EXPECT_EQ(single("d", "1.7976931348623157e+308").one<double>(),
            std::numeric_limits<double>::max());
  EXPECT_EQ(single("d", "5e-324").one<double>(), std::numeric_limits<double>::denorm_min());
  EXPECT_EQ(single("d", "12").one<double>(), 12.0);           // an integer column
  EXPECT_EQ(single("d", "12.345").one<double>(), 12.345);     // a numeric column
  EXPECT_TRUE(std::isnan(single("d", "NaN").one<double>()));  // float8out's spellings
  EXPECT_EQ(single("d", "Infinity").one<double>(), std::numeric_limits<double>::infinity());
  EXPECT_EQ(single("d", "-Infinity").one<double>(), -std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::signbit(single("d", "-0").one<double>()));
  EXPECT_EQ(conversion_message([] { (void)single("d", "abc").one<double>(); }),
            "column 'd': 'abc' is not a number");
  EXPECT_EQ(conversion_message([] { (void)single("d", "1e999").one<double>(); }),
            "column 'd': '1e999' is out of range for double");
  EXPECT_THROW((void)single("d", "").one<double>(), pg::conversion_error);
  EXPECT_THROW((void)single("d", "1.5x").one<double>(), pg::conversion_error);
}

TEST(PgResult, Strings) {
  EXPECT_EQ(single("s", "hello world").one<std::string>(), "hello world");
  EXPECT_EQ(single("s", "żółć").one<std::string>(), "żółć");
}

TEST(PgResult, Timestamps) {
  EXPECT_EQ(single("t", "2026-11-26 15:49:20.123456+00").one<system_clock::time_point>(),
            utc(2026, 11, 26, 15, 49, 20, microseconds(123456)));
  EXPECT_EQ(single("t", "1969-12-31 19:00:00-05").one<system_clock::time_point>(),
            system_clock::time_point());
  const std::string message = conversion_message(
      [] { (void)single("created", "yesterday").one<system_clock::time_point>(); });
  EXPECT_NE(message.find("column 'created'"), std::string::npos) << message;
  EXPECT_NE(message.find("'yesterday'"), std::string::npos) << message;
}

TEST(PgResult, ByteaHex) {
  const auto bytes = single("b", "\\x00ff5C27").one<std::vector<std::byte>>();
  EXPECT_EQ(bytes, (std::vector<std::byte>{std::byte{0x00}, std::byte{0xff}, std::byte{0x5c},
                                           std::byte{0x27}}));
  EXPECT_TRUE(single("b", "\\x").one<std::vector<std::byte>>().empty());
  EXPECT_THROW((void)single("b", "\\x0").one<std::vector<std::byte>>(), pg::conversion_error);
  EXPECT_THROW((void)single("b", "\\x0g").one<std::vector<std::byte>>(), pg::conversion_error);
}

TEST(PgResult, ByteaEscapeFormat) {
  // bytea_output = escape: printable bytes as themselves, "\\" and "\ooo" escapes.
  const auto bytes = single("b", "a\\\\b\\000\\377").one<std::vector<std::byte>>();
  EXPECT_EQ(bytes, (std::vector<std::byte>{std::byte{'a'}, std::byte{'\\'}, std::byte{'b'},
                                           std::byte{0x00}, std::byte{0xff}}));
  EXPECT_THROW((void)single("b", "\\9").one<std::vector<std::byte>>(), pg::conversion_error);
  EXPECT_THROW((void)single("b", "abc\\").one<std::vector<std::byte>>(), pg::conversion_error);
}

TEST(PgResult, OneNeedsExactlyOneRow) {
  EXPECT_EQ(single("n", "7").one<int>(), 7);
  const std::string none = conversion_message([] { (void)make_result({"n"}, {}).one<int>(); });
  EXPECT_NE(none.find("exactly one row, got 0"), std::string::npos) << none;
  EXPECT_NE(none.find("SELECT made_by_hand"), std::string::npos) << none;
  EXPECT_THROW((void)make_result({"n"}, {{"1"}, {"2"}}).one<int>(), pg::conversion_error);
  EXPECT_THROW((void)make_result({}, {{}}).one<int>(), pg::conversion_error);
}

TEST(PgResult, GetByNameUsesTheColumnIndex) {
  const pg::result res = make_result({"a", "b"}, {{"1", "two"}});
  EXPECT_EQ(res[0].get<int>("a"), 1);
  EXPECT_EQ(res[0].get<std::string>("b"), "two");
  EXPECT_THROW((void)res[0].get<int>("c"), pg::conversion_error);
  EXPECT_EQ(conversion_message([&] { (void)res[0].get<int>("b"); }),
            "column 'b': 'two' is not an integer");
}

TEST(PgResult, AffectedRowsOfACommandResult) {
  PGresult* res = PQmakeEmptyPGresult(nullptr, PGRES_COMMAND_OK);
  const pg::result r(res, "UPDATE t SET x = 1");
  EXPECT_EQ(r.affected_rows(), 0);  // a made-up result has no command tag
  EXPECT_EQ(r.rows(), 0);
}

TEST(PgResult, LongValuesAreShortenedInMessages) {
  const std::string long_value(1000, 'z');
  const std::string message = conversion_message([&] { (void)single("n", long_value).one<int>(); });
  EXPECT_LT(message.size(), 200U) << message;
}

// ---- every readable type ----

namespace {

// Decimal digits plus one in magnitude ("127" -> "128", "-128" -> "-129"): one past either end
// of a type's range, also for the 64-bit types whose neighbours no integer type holds.
std::string one_past(std::string digits) {
  std::size_t i = digits.size();
  while (i > 0 && digits[i - 1] == '9') {
    digits[i - 1] = '0';
    --i;
  }
  const std::size_t first_digit = digits[0] == '-' ? 1 : 0;
  if (i == first_digit) {
    digits.insert(first_digit, "1");
  } else {
    ++digits[i - 1];
  }
  return digits;
}

template <class Int>
std::string decimal(Int v) {
  using wide = std::conditional_t<std::is_signed_v<Int>, long long, unsigned long long>;
  return std::to_string(static_cast<wide>(v));
}

// Both ends of Int's range read back exactly; one past either end throws, naming the type and
// its range; nothing wraps.
template <class Int>
void check_integer_range(const std::string& type) {
  SCOPED_TRACE(type);
  using limits = std::numeric_limits<Int>;
  const std::string max = decimal(limits::max());
  const std::string min = decimal(limits::min());
  EXPECT_EQ(single("n", max).one<Int>(), limits::max());
  EXPECT_EQ(single("n", min).one<Int>(), limits::min());
  EXPECT_EQ(single("n", "0").one<Int>(), Int{0});
  EXPECT_EQ(single("n", "42").one<Int>(), Int{42});
  const std::string range = " (" + min + " to " + max + ")";
  EXPECT_EQ(conversion_message([&] { (void)single("n", one_past(max)).one<Int>(); }),
            "column 'n': '" + one_past(max) + "' is out of range for " + type + range);
  const std::string below = limits::min() == 0 ? "-1" : one_past(min);
  EXPECT_EQ(conversion_message([&] { (void)single("n", below).one<Int>(); }),
            "column 'n': '" + below + "' is out of range for " + type + range);
  EXPECT_THROW((void)single("n", "99999999999999999999999").one<Int>(), pg::conversion_error);
  EXPECT_THROW((void)single("n", "-99999999999999999999999").one<Int>(), pg::conversion_error);
  for (const char* bad : {"", "-", "--1", "+1", " 1", "1 ", "1.0", "1e2", "0x1", "abc"}) {
    EXPECT_EQ(conversion_message([&] { (void)single("n", bad).one<Int>(); }),
              "column 'n': '" + std::string(bad) + "' is not an integer")
        << bad;
  }
  EXPECT_EQ(single("n", "7")[0].get<std::optional<Int>>("n"), std::optional<Int>(7));
  EXPECT_EQ(single("n", cell())[0].get<std::optional<Int>>(0), std::nullopt);
  EXPECT_THROW((void)single("n", cell()).one<Int>(), pg::conversion_error);
}

}  // namespace

TEST(PgResult, EveryStandardIntegerTypeWithItsRange) {
  EXPECT_EQ(one_past("127"), "128");
  EXPECT_EQ(one_past("-128"), "-129");
  EXPECT_EQ(one_past("99"), "100");
  EXPECT_EQ(one_past("-99"), "-100");
  check_integer_range<signed char>("signed char");
  check_integer_range<unsigned char>("unsigned char");
  check_integer_range<short>("short");
  check_integer_range<unsigned short>("unsigned short");
  check_integer_range<int>("int");
  check_integer_range<unsigned>("unsigned int");
  check_integer_range<long>("long");
  check_integer_range<unsigned long>("unsigned long");
  check_integer_range<long long>("long long");
  check_integer_range<unsigned long long>("unsigned long long");
}

TEST(PgResult, FixedWidthIntegers) {
  EXPECT_EQ(single("n", "-128").one<std::int8_t>(), std::int8_t{-128});
  EXPECT_EQ(single("n", "255").one<std::uint8_t>(), std::uint8_t{255});
  EXPECT_EQ(single("n", "-32768").one<std::int16_t>(), std::int16_t{-32768});
  EXPECT_EQ(single("n", "65535").one<std::uint16_t>(), std::uint16_t{65535});
  EXPECT_EQ(single("n", "-2147483648").one<std::int32_t>(),
            std::numeric_limits<std::int32_t>::min());
  EXPECT_EQ(single("n", "4294967295").one<std::uint32_t>(),
            std::numeric_limits<std::uint32_t>::max());
  EXPECT_EQ(single("n", "-9223372036854775808").one<std::int64_t>(),
            std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(single("n", "18446744073709551615").one<std::uint64_t>(),
            std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(single("n", "9").one<std::size_t>(), std::size_t{9});
  // A smallint of 200 is not an int8_t of -56.
  EXPECT_THROW((void)single("n", "200").one<std::int8_t>(), pg::conversion_error);
  EXPECT_THROW((void)single("n", "256").one<std::uint8_t>(), pg::conversion_error);
  EXPECT_THROW((void)single("n", "65536").one<std::uint16_t>(), pg::conversion_error);
  EXPECT_THROW((void)single("n", "18446744073709551616").one<std::uint64_t>(),
               pg::conversion_error);
}

TEST(PgResult, UnsignedTypesRefuseNegativeValues) {
  EXPECT_EQ(conversion_message([] { (void)single("n", "-1").one<unsigned>(); }),
            "column 'n': '-1' is out of range for unsigned int (0 to 4294967295)");
  EXPECT_EQ(conversion_message([] { (void)single("n", "-1").one<unsigned long long>(); }),
            "column 'n': '-1' is out of range for unsigned long long (0 to 18446744073709551615)");
  EXPECT_THROW((void)single("n", "-9223372036854775809").one<std::uint64_t>(),
               pg::conversion_error);
  EXPECT_EQ(single("n", "-0").one<unsigned>(), 0U);
  EXPECT_EQ(single("n", "-0").one<std::uint8_t>(), 0U);
  EXPECT_THROW((void)single("n", "-x").one<unsigned>(), pg::conversion_error);
  EXPECT_THROW((void)single("n", "-1.5").one<unsigned>(), pg::conversion_error);
}

TEST(PgResult, FloatAndLongDouble) {
  EXPECT_EQ(single("d", "0.5").one<float>(), 0.5F);
  EXPECT_EQ(single("d", "3.4028235e+38").one<float>(), std::numeric_limits<float>::max());
  EXPECT_EQ(single("d", "Infinity").one<float>(), std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(single("d", "NaN").one<float>()));
  EXPECT_EQ(conversion_message([] { (void)single("d", "1e39").one<float>(); }),
            "column 'd': '1e39' is out of range for float");
  EXPECT_EQ(conversion_message([] { (void)single("d", "x").one<float>(); }),
            "column 'd': 'x' is not a number");
  EXPECT_EQ(single("d", "0.25").one<long double>(), 0.25L);
  EXPECT_EQ(single("d", "1e999").one<long double>(), 1e999L);  // beyond double, within long double
  EXPECT_EQ(conversion_message([] { (void)single("d", "1e99999").one<long double>(); }),
            "column 'd': '1e99999' is out of range for long double");
  EXPECT_EQ(single("d", cell())[0].get<std::optional<float>>(0), std::nullopt);
  EXPECT_EQ(single("d", "2")[0].get<std::optional<long double>>(0), 2.0L);
}

TEST(PgResult, StringViewsPointIntoTheResult) {
  const pg::result res = make_result({"s", "n"}, {{"hello", cell()}});
  const auto v = res.one<std::string_view>();
  EXPECT_EQ(v, "hello");
  EXPECT_EQ(v.data(), res[0].text(0).data());  // no copy
  EXPECT_EQ(res[0].get<std::string_view>("s"), "hello");
  EXPECT_EQ(res[0].get<std::optional<std::string_view>>("n"), std::nullopt);
  EXPECT_THROW((void)res[0].get<std::string_view>("n"), pg::conversion_error);
  // On a temporary result one<T>() works for every owning T; one<std::string_view>() does not
  // compile there (tests/compile_fail).
  EXPECT_EQ(single("s", "x").one<std::string>(), "x");
}

TEST(PgResult, MicrosecondTimestamps) {
  const pg::timestamp t = single("t", "2026-11-26 15:49:20.123456+00").one<pg::timestamp>();
  EXPECT_EQ(t, time_point_cast<microseconds>(utc(2026, 11, 26, 15, 49, 20, microseconds(123456))));
  EXPECT_EQ(single("t", "1969-12-31 23:59:59.999999+00").one<pg::timestamp>().time_since_epoch(),
            microseconds(-1));
  EXPECT_EQ(single("t", cell())[0].get<std::optional<pg::timestamp>>(0), std::nullopt);
  EXPECT_THROW((void)single("t", "infinity").one<pg::timestamp>(), pg::conversion_error);
  EXPECT_THROW((void)single("t", "infinity").one<system_clock::time_point>(), pg::conversion_error);
  EXPECT_THROW((void)single("t", "3000-01-01 00:00:00+00").one<system_clock::time_point>(),
               pg::conversion_error);
}

// The supported set, checked at compile time: anything else fails to compile (with a
// static_assert naming the supported types; tests/compile_fail checks the message).
namespace {
struct not_a_column_type {};
}  // namespace
static_assert(pg::readable<bool>);
static_assert(pg::readable<signed char> && pg::readable<unsigned char>);
static_assert(pg::readable<short> && pg::readable<unsigned short>);
static_assert(pg::readable<int> && pg::readable<unsigned>);
static_assert(pg::readable<long> && pg::readable<unsigned long>);
static_assert(pg::readable<long long> && pg::readable<unsigned long long>);
static_assert(pg::readable<std::int8_t> && pg::readable<std::uint8_t>);
static_assert(pg::readable<std::int16_t> && pg::readable<std::uint16_t>);
static_assert(pg::readable<std::int32_t> && pg::readable<std::uint32_t>);
static_assert(pg::readable<std::int64_t> && pg::readable<std::uint64_t>);
static_assert(pg::readable<std::size_t> && pg::readable<std::ptrdiff_t>);
static_assert(pg::readable<float> && pg::readable<double> && pg::readable<long double>);
static_assert(pg::readable<std::string> && pg::readable<std::string_view>);
static_assert(pg::readable<std::vector<std::byte>>);
static_assert(pg::readable<system_clock::time_point> && pg::readable<pg::timestamp>);
static_assert(pg::readable<std::optional<long long>> && pg::readable<std::optional<std::string>>);
static_assert(pg::readable<std::optional<std::vector<std::byte>>>);
static_assert(pg::readable<std::optional<pg::timestamp>>);
// Characters are not numbers here, and nothing else slips through.
static_assert(!pg::readable<char> && !pg::readable<wchar_t> && !pg::readable<char8_t>);
static_assert(!pg::readable<char16_t> && !pg::readable<char32_t>);
static_assert(!pg::readable<std::optional<char>>);
static_assert(!pg::readable<not_a_column_type> && !pg::readable<std::optional<not_a_column_type>>);
static_assert(!pg::readable<const int> && !pg::readable<int&> && !pg::readable<int*>);
static_assert(!pg::readable<const char*>);
static_assert(!pg::readable<std::optional<std::optional<int>>>);
static_assert(!pg::readable<std::vector<unsigned char>> && !pg::readable<std::vector<int>>);
static_assert(!pg::readable<seconds> && !pg::readable<sys_seconds>);
static_assert(!pg::readable<void>);
