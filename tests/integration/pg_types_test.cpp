// Typed values through the server and back: what we send is what we read.

#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace test = sluice::test;
using namespace std::chrono;

namespace {

class PgTypes : public ::testing::Test {
 protected:
  void SetUp() override {
    conn_ = test::test_connect("sluice-test-types");
    schema_.use(conn_);
  }

  test::scoped_schema schema_;
  pg::connection conn_;
};

system_clock::time_point utc(int y, unsigned mo, unsigned d, int h, int mi, int s,
                             microseconds us = microseconds(0)) {
  return sys_days(year{y} / month{mo} / day{d}) + hours(h) + minutes(mi) + seconds(s) + us;
}

}  // namespace

TEST_F(PgTypes, EveryTypeThroughATable) {
  conn_.exec(
      "CREATE TABLE v (b bool, i int4, n int8, d float8, t text, by bytea, ts timestamptz, "
      "j jsonb, js json, jt text, big numeric)");
  const std::vector<std::byte> bytes{std::byte{0}, std::byte{0x5c}, std::byte{0xff}};
  const auto ts = utc(2026, 11, 26, 15, 49, 20, microseconds(123456));
  conn_.query("INSERT INTO v VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", true, -42,
              std::int64_t{9'000'000'000}, 0.1, "text 'with' \"quotes\" \\ ż", bytes, ts,
              pg::json_text{R"({"a": [1, 2], "b": null})"},
              pg::json_text{R"({"keep":  "spacing"})"}, pg::json_text{R"([1,2])"},
              18446744073709551615ULL);
  const pg::result res = conn_.exec("SELECT * FROM v");
  ASSERT_EQ(res.rows(), 1);
  const pg::row r = res[0];
  EXPECT_EQ(r.get<bool>("b"), true);
  EXPECT_EQ(r.get<int>("i"), -42);
  EXPECT_EQ(r.get<std::int64_t>("n"), 9'000'000'000);
  EXPECT_EQ(r.get<double>("d"), 0.1);
  EXPECT_EQ(r.get<std::string>("t"), "text 'with' \"quotes\" \\ ż");
  EXPECT_EQ(r.get<std::vector<std::byte>>("by"), bytes);
  EXPECT_EQ(r.get<system_clock::time_point>("ts"), ts);
  EXPECT_EQ(r.get<std::string>("j"), R"({"a": [1, 2], "b": null})");  // jsonb's own layout
  EXPECT_EQ(r.get<std::string>("js"), R"({"keep":  "spacing"})");     // json keeps the text
  EXPECT_EQ(r.get<std::string>("jt"), "[1,2]");
  EXPECT_EQ(r.get<std::string>("big"), "18446744073709551615");
}

TEST_F(PgTypes, NullsAndOptionals) {
  conn_.exec("CREATE TABLE o (i int, t text, ts timestamptz, by bytea)");
  conn_.query("INSERT INTO o VALUES ($1, $2, $3, $4)", std::optional<int>(), nullptr,
              std::optional<system_clock::time_point>(), std::nullopt);
  conn_.query("INSERT INTO o VALUES ($1, $2, $3, $4)", std::optional<int>(7),
              std::optional<std::string>("x"), std::optional(utc(2000, 1, 1, 0, 0, 0)),
              std::optional(std::vector<std::byte>{std::byte{1}}));
  const pg::result res = conn_.exec("SELECT * FROM o ORDER BY i NULLS FIRST");
  ASSERT_EQ(res.rows(), 2);
  EXPECT_EQ(res[0].get<std::optional<int>>("i"), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<std::string>>("t"), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<system_clock::time_point>>("ts"), std::nullopt);
  EXPECT_EQ(res[0].get<std::optional<std::vector<std::byte>>>("by"), std::nullopt);
  EXPECT_THROW((void)res[0].get<int>("i"), pg::conversion_error);
  EXPECT_EQ(res[1].get<std::optional<int>>("i"), 7);
  EXPECT_EQ(res[1].get<std::optional<std::string>>("t"), "x");
  EXPECT_EQ(res[1].get<std::optional<system_clock::time_point>>("ts"), utc(2000, 1, 1, 0, 0, 0));
  // Empty text is not NULL.
  EXPECT_EQ(conn_.query("SELECT $1::text IS NULL", "").one<bool>(), false);
  EXPECT_EQ(conn_.query("SELECT $1::text IS NULL", nullptr).one<bool>(), true);
}

TEST_F(PgTypes, IntegerLimits) {
  EXPECT_EQ(conn_.query("SELECT $1", std::numeric_limits<int>::min()).one<int>(),
            std::numeric_limits<int>::min());
  EXPECT_EQ(conn_.query("SELECT $1", std::numeric_limits<std::int64_t>::max()).one<std::int64_t>(),
            std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(conn_.query("SELECT $1", std::numeric_limits<std::int64_t>::min()).one<std::int64_t>(),
            std::numeric_limits<std::int64_t>::min());
  EXPECT_EQ(conn_.query("SELECT $1 + 1", 4294967295U).one<std::int64_t>(), 4294967296);
  EXPECT_EQ(conn_.query("SELECT count(*) FROM generate_series(1, $1)", 3).one<std::int64_t>(), 3);
  // An int4 column read as int64 and an int8 too large for int.
  EXPECT_EQ(conn_.query("SELECT $1", 5).one<std::int64_t>(), 5);
  EXPECT_THROW((void)conn_.query("SELECT $1", std::int64_t{1} << 40).one<int>(),
               pg::conversion_error);
}

TEST_F(PgTypes, DoublesRoundTripExactly) {
  conn_.exec("CREATE TABLE d (k int, v float8)");
  const double values[] = {0.1,
                           1.0 / 3.0,
                           -2.5e-8,
                           123456789.123456789,
                           std::numeric_limits<double>::max(),
                           std::numeric_limits<double>::lowest(),
                           std::numeric_limits<double>::min(),
                           std::numeric_limits<double>::denorm_min(),
                           std::numeric_limits<double>::epsilon(),
                           9007199254740993.0,
                           0.0,
                           -0.0,
                           std::numeric_limits<double>::infinity(),
                           -std::numeric_limits<double>::infinity()};
  int k = 0;
  for (double v : values)
    conn_.query("INSERT INTO d VALUES ($1, $2)", k++, v);
  conn_.query("INSERT INTO d VALUES ($1, $2)", k, std::numeric_limits<double>::quiet_NaN());
  const pg::result res = conn_.exec("SELECT k, v FROM d ORDER BY k");
  ASSERT_EQ(res.rows(), k + 1);
  for (int i = 0; i < k; ++i) {
    const double back = res[i].get<double>("v");
    EXPECT_EQ(back, values[i]) << res[i].text("v");
    EXPECT_EQ(std::signbit(back), std::signbit(values[i])) << res[i].text("v");
  }
  EXPECT_TRUE(std::isnan(res[k].get<double>("v")));
  // numeric columns read as double too.
  EXPECT_EQ(conn_.exec("SELECT 12.5::numeric").one<double>(), 12.5);
}

TEST_F(PgTypes, Booleans) {
  EXPECT_TRUE(conn_.query("SELECT $1", true).one<bool>());
  EXPECT_FALSE(conn_.query("SELECT $1", false).one<bool>());
  EXPECT_TRUE(conn_.query("SELECT NOT $1", false).one<bool>());
  conn_.exec("CREATE TABLE b (v boolean, t text)");
  conn_.query("INSERT INTO b VALUES ($1, $2)", true, false);  // bool into a text column
  EXPECT_EQ(conn_.exec("SELECT t FROM b").one<std::string>(), "false");
}

TEST_F(PgTypes, StringsAndViews) {
  const std::string long_text(100'000, 'x');
  EXPECT_EQ(conn_.query("SELECT $1::text", long_text).one<std::string>(), long_text);
  const std::string backing = "abcdef";
  EXPECT_EQ(
      conn_.query("SELECT $1::text", std::string_view(backing).substr(2, 2)).one<std::string>(),
      "cd");
  // Bound, never spliced: SQL in a value stays a value.
  const std::string hostile = "'); DROP TABLE x; --";
  EXPECT_EQ(conn_.query("SELECT $1::text", hostile).one<std::string>(), hostile);
  EXPECT_EQ(conn_.query("SELECT length($1::text)", "żółć").one<int>(), 4);
}

TEST_F(PgTypes, AllByteValues) {
  std::vector<std::byte> all;
  for (int i = 0; i < 256; ++i)
    all.push_back(static_cast<std::byte>(i));
  conn_.exec("CREATE TABLE by (v bytea)");
  conn_.query("INSERT INTO by VALUES ($1)", all);
  EXPECT_EQ(conn_.exec("SELECT v FROM by").one<std::vector<std::byte>>(), all);
  EXPECT_EQ(conn_.exec("SELECT length(v) FROM by").one<int>(), 256);
  EXPECT_TRUE(conn_.query("SELECT $1::bytea", std::vector<std::byte>{})
                  .one<std::vector<std::byte>>()
                  .empty());
  // The same value read in escape format.
  conn_.exec("SET bytea_output = 'escape'");
  EXPECT_EQ(conn_.exec("SELECT v FROM by").one<std::vector<std::byte>>(), all);
}

TEST_F(PgTypes, TimestampsInAnyTimeZone) {
  const system_clock::time_point points[] = {
      utc(2026, 11, 26, 15, 49, 20, microseconds(123456)),
      utc(1969, 12, 31, 23, 59, 59, microseconds(999999)),
      utc(1900, 6, 15, 12, 0, 0, microseconds(1)),
      utc(1700, 1, 1, 0, 0, 0),
      utc(1970, 1, 1, 0, 0, 0),
      utc(2024, 2, 29, 23, 59, 59),
  };
  // UTC, a half-hour offset east, a half-hour offset west with daylight saving, and a zone
  // whose old dates use local mean time with seconds (+00:19:32).
  for (const char* zone : {"UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Amsterdam"}) {
    conn_.query("SELECT set_config('TimeZone', $1, false)", zone);
    for (const auto tp : points) {
      const pg::result res = conn_.query("SELECT $1::timestamptz, $1::timestamptz::text", tp);
      EXPECT_EQ(res[0].get<system_clock::time_point>(0), tp)
          << zone << ": " << res[0].text(1) << " vs " << pg::format_timestamp(tp);
    }
  }
  // Microseconds are what PostgreSQL keeps; finer parts are dropped.
  const auto fine = utc(2020, 1, 1, 0, 0, 0) + nanoseconds(1500);
  EXPECT_EQ(conn_.query("SELECT $1::timestamptz", fine).one<system_clock::time_point>(),
            utc(2020, 1, 1, 0, 0, 0) + microseconds(1));
  // The microsecond timestamp type binds too.
  const pg::timestamp micro = time_point_cast<microseconds>(utc(2030, 5, 5, 5, 5, 5));
  EXPECT_EQ(conn_.query("SELECT $1", micro).one<system_clock::time_point>(), micro);
  // now() reads back as a plausible time.
  const auto server_now = conn_.exec("SELECT now()").one<system_clock::time_point>();
  EXPECT_LT(std::chrono::abs(server_now - system_clock::now()), minutes(5));
}

TEST_F(PgTypes, JsonTextFitsJsonJsonbAndText) {
  const pg::json_text doc{R"({"n": 1})"};
  EXPECT_EQ(conn_.query("SELECT $1::jsonb ->> 'n'", doc).one<std::string>(), "1");
  EXPECT_EQ(conn_.query("SELECT $1::json ->> 'n'", doc).one<std::string>(), "1");
  conn_.exec("CREATE TABLE j (a jsonb, b json, c text)");
  conn_.query("INSERT INTO j VALUES ($1, $2, $3)", doc, doc, doc);
  EXPECT_EQ(conn_.exec("SELECT a::text FROM j").one<std::string>(), R"({"n": 1})");
  EXPECT_THROW(conn_.query("SELECT $1::jsonb", pg::json_text{"{not json"}), pg::sql_error);
}
