// Cron parsing and next-fire computation, in UTC and across DST changes. Expected instants were
// worked out by hand from the zones' rules (US 2026: DST from Sun Mar 8 02:00 EST = 07:00 UTC
// to Sun Nov 1 02:00 EDT = 06:00 UTC; EU 2026: Mar 29 and Oct 25 at 01:00 UTC).

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/sched/cron.hpp"

namespace {

using sluice::sched::cron_expression;
using sluice::sched::schedule_error;
using time_point = std::chrono::system_clock::time_point;

// A UTC instant, built with the standard library only (independent of the code under test).
time_point utc(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0) {
  using namespace std::chrono;
  return sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} + seconds{s};
}

std::string show(std::optional<time_point> t) {
  if (!t) return "none";
  using namespace std::chrono;
  const auto day = floor<days>(*t);
  const year_month_day ymd{day};
  const hh_mm_ss tod{floor<seconds>(*t - day)};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02lld:%02lld:%02lld",
                static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                static_cast<unsigned>(ymd.day()), static_cast<long long>(tod.hours().count()),
                static_cast<long long>(tod.minutes().count()),
                static_cast<long long>(tod.seconds().count()));
  return buf;
}

struct next_case {
  const char* expr;
  const char* tz;
  time_point from;
  time_point expected;
};

void check(const std::vector<next_case>& cases) {
  for (const auto& c : cases) {
    const auto e = cron_expression::parse(c.expr, c.tz);
    EXPECT_EQ(show(e.next_after(c.from)), show(c.expected))
        << "'" << c.expr << "' in " << c.tz << " after " << show(c.from);
  }
}

TEST(CronNext, FieldsInUtc) {
  check({
      {"* * * * *", "UTC", utc(2026, 1, 1), utc(2026, 1, 1, 0, 1)},
      {"* * * * *", "UTC", utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 1)},
      {"* * * * *", "UTC", utc(2026, 12, 31, 23, 59), utc(2027, 1, 1)},
      {"*/15 * * * *", "UTC", utc(2026, 1, 1, 10, 7), utc(2026, 1, 1, 10, 15)},
      {"*/15 * * * *", "UTC", utc(2026, 1, 1, 10, 45), utc(2026, 1, 1, 11, 0)},
      {"5 * * * *", "UTC", utc(2026, 1, 1, 10, 5), utc(2026, 1, 1, 11, 5)},
      {"0 9 * * *", "UTC", utc(2026, 3, 10, 9), utc(2026, 3, 11, 9)},
      {"0 9 * * *", "UTC", utc(2026, 3, 10, 8, 59, 59), utc(2026, 3, 10, 9)},
      {"10-20/5 8 * * *", "UTC", utc(2026, 1, 1, 8, 10), utc(2026, 1, 1, 8, 15)},
      {"10-20/5 8 * * *", "UTC", utc(2026, 1, 1, 8, 20), utc(2026, 1, 2, 8, 10)},
      {"5/20 * * * *", "UTC", utc(2026, 1, 1, 10, 46), utc(2026, 1, 1, 11, 5)},
      {"0 22-23,0-2 * * *", "UTC", utc(2026, 1, 1, 2), utc(2026, 1, 1, 22)},
      {"0 0 1 * *", "UTC", utc(2026, 1, 15), utc(2026, 2, 1)},
      {"0 0 * JUN-AUG *", "UTC", utc(2026, 1, 1), utc(2026, 6, 1)},
      {"0 0 1 JAN *", "UTC", utc(2026, 6, 1), utc(2027, 1, 1)},
      {"0 0 1 1 *", "UTC", utc(2026, 12, 31, 23, 59, 59), utc(2027, 1, 1)},
      {"59 23 31 12 *", "UTC", utc(2026, 12, 31, 23, 59), utc(2027, 12, 31, 23, 59)},
  });
}

TEST(CronNext, WeekdaysAndNames) {
  // 2026-01-01 is a Thursday.
  check({
      {"30 14 * * 1-5", "UTC", utc(2026, 1, 2, 15), utc(2026, 1, 5, 14, 30)},
      {"0 0 * * SUN", "UTC", utc(2026, 1, 1), utc(2026, 1, 4)},
      {"0 0 * * 0", "UTC", utc(2026, 1, 4), utc(2026, 1, 11)},
      {"0 0 * * 7", "UTC", utc(2026, 1, 1), utc(2026, 1, 4)},
      {"0 12 * * MON,WED,FRI", "UTC", utc(2026, 1, 5, 12), utc(2026, 1, 7, 12)},
      {"0 0 * * FRI-SUN", "UTC", utc(2026, 1, 1), utc(2026, 1, 2)},
      {"0 0 * * FRI-SUN", "UTC", utc(2026, 1, 3), utc(2026, 1, 4)},
      {"0 0 * * FRI-SUN", "UTC", utc(2026, 1, 4), utc(2026, 1, 9)},
      {"0 0 * * 5-7", "UTC", utc(2026, 1, 4), utc(2026, 1, 9)},
      {"0 0 * jan,feb mon", "UTC", utc(2026, 2, 24), utc(2027, 1, 4)},
  });
}

TEST(CronNext, DayOfMonthOrDayOfWeek) {
  check({
      // Both restricted: the 13th or any Friday.
      {"0 0 13 * FRI", "UTC", utc(2026, 1, 1), utc(2026, 1, 2)},
      {"0 0 13 * FRI", "UTC", utc(2026, 1, 10), utc(2026, 1, 13)},
      // The 1st or any Monday; 2026-02-01 is a Sunday.
      {"0 0 1 * MON", "UTC", utc(2026, 1, 1), utc(2026, 1, 5)},
      {"0 0 1 * MON", "UTC", utc(2026, 1, 27), utc(2026, 2, 1)},
      // A field starting with '*' is unrestricted for this rule, as in Vixie cron: odd days
      // that are also Fridays.
      {"0 0 */2 * FRI", "UTC", utc(2026, 1, 1), utc(2026, 1, 9)},
      {"0 0 * * 1", "UTC", utc(2026, 1, 1), utc(2026, 1, 5)},
  });
}

TEST(CronNext, MonthEndsLeapYearsAndMacros) {
  check({
      {"0 0 31 * *", "UTC", utc(2026, 1, 31), utc(2026, 3, 31)},
      {"0 0 31 * *", "UTC", utc(2026, 3, 31), utc(2026, 5, 31)},
      {"0 0 29 2 *", "UTC", utc(2026, 1, 1), utc(2028, 2, 29)},
      {"0 0 29 2 *", "UTC", utc(2028, 2, 29), utc(2032, 2, 29)},
      {"0 0 29 2 *", "UTC", utc(2096, 3, 1), utc(2104, 2, 29)},  // 2100 is not a leap year
      // February 29th that is a Sunday: 2032, then 2060.
      {"0 0 29 2 */7", "UTC", utc(2026, 1, 1), utc(2032, 2, 29)},
      {"0 0 29 2 */7", "UTC", utc(2033, 1, 1), utc(2060, 2, 29)},
      {"@yearly", "UTC", utc(2026, 6, 1), utc(2027, 1, 1)},
      {"@annually", "UTC", utc(2026, 6, 1), utc(2027, 1, 1)},
      {"@monthly", "UTC", utc(2026, 1, 31, 12), utc(2026, 2, 1)},
      {"@weekly", "UTC", utc(2026, 1, 1), utc(2026, 1, 4)},
      {"@daily", "UTC", utc(2026, 1, 1), utc(2026, 1, 2)},
      {"@midnight", "UTC", utc(2026, 1, 1, 12), utc(2026, 1, 2)},
      {"@hourly", "UTC", utc(2026, 1, 1, 10, 30), utc(2026, 1, 1, 11)},
  });
}

TEST(CronNext, SubSecondInstantsAreStrictlyAfter) {
  const auto e = cron_expression::parse("0 9 * * *");
  const auto nine = utc(2026, 3, 10, 9);
  EXPECT_EQ(e.next_after(nine - std::chrono::nanoseconds{1}), nine);
  EXPECT_EQ(e.next_after(nine + std::chrono::nanoseconds{1}), utc(2026, 3, 11, 9));
}

TEST(CronNext, NoneBeyondTheRepresentableRange) {
  // system_clock::time_point (64-bit nanoseconds) ends on 2262-04-11.
  const auto e = cron_expression::parse("0 0 1 1 *");
  EXPECT_EQ(e.next_after(utc(2261, 6, 1)), utc(2262, 1, 1));
  EXPECT_EQ(e.next_after(utc(2262, 1, 1)), std::nullopt);
  EXPECT_EQ(e.next_after(time_point::max()), std::nullopt);
  EXPECT_EQ(cron_expression::parse("* * * * *").next_after(time_point::min()).has_value(), true);
}

// Spring forward, New York, Sunday 2026-03-08: 02:00 EST (07:00 UTC) becomes 03:00 EDT.
TEST(CronDst, NewYorkGapFixedTimeJobsFireOnceAtTheEndOfTheGap) {
  const char* ny = "America/New_York";
  check({
      {"30 1 * * *", ny, utc(2026, 3, 7, 12), utc(2026, 3, 8, 6, 30)},  // 01:30 EST
      {"30 2 * * *", ny, utc(2026, 3, 7, 12), utc(2026, 3, 8, 7)},      // 02:30 -> 03:00 EDT
      {"30 2 * * *", ny, utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)},   // then 02:30 EDT
      {"0 2 * * *", ny, utc(2026, 3, 7, 12), utc(2026, 3, 8, 7)},
      {"0 3 * * *", ny, utc(2026, 3, 7, 12), utc(2026, 3, 8, 7)},
      // Several fixed times in the gap still fire once.
      {"0,30 2 * * *", ny, utc(2026, 3, 7, 12), utc(2026, 3, 8, 7)},
      {"0,30 2 * * *", ny, utc(2026, 3, 8, 7), utc(2026, 3, 9, 6)},
  });
}

TEST(CronDst, NewYorkGapPeriodicJobsSkipTheMissingHour) {
  const char* ny = "America/New_York";
  check({
      {"30 * * * *", ny, utc(2026, 3, 8, 6), utc(2026, 3, 8, 6, 30)},      // 01:30 EST
      {"30 * * * *", ny, utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 7, 30)},  // 03:30 EDT
      {"*/15 * * * *", ny, utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7)},    // 03:00 EDT
      {"0 * * * *", ny, utc(2026, 3, 8, 6), utc(2026, 3, 8, 7)},
  });
}

// Fall back, New York, Sunday 2026-11-01: 02:00 EDT (06:00 UTC) becomes 01:00 EST, so local
// 01:00-01:59 happens at 05:xx UTC (EDT) and again at 06:xx UTC (EST).
TEST(CronDst, NewYorkOverlapFixedTimeJobsFireOnTheFirstOccurrenceOnly) {
  const char* ny = "America/New_York";
  check({
      {"30 1 * * *", ny, utc(2026, 11, 1), utc(2026, 11, 1, 5, 30)},
      {"30 1 * * *", ny, utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)},
      {"30 1 * * *", ny, utc(2026, 11, 1, 6, 10), utc(2026, 11, 2, 6, 30)},
      {"0 1 * * *", ny, utc(2026, 11, 1, 4), utc(2026, 11, 1, 5)},
      {"0 2 * * *", ny, utc(2026, 11, 1, 4), utc(2026, 11, 1, 7)},
  });
}

TEST(CronDst, NewYorkOverlapPeriodicJobsFireOnEachRealOccurrence) {
  const char* ny = "America/New_York";
  const auto e = cron_expression::parse("30 * * * *", ny);
  std::vector<std::string> fires;
  auto t = utc(2026, 11, 1, 4);
  for (int i = 0; i < 4; ++i) {
    t = *e.next_after(t);
    fires.push_back(show(t));
  }
  EXPECT_EQ(fires, (std::vector<std::string>{"2026-11-01 04:30:00", "2026-11-01 05:30:00",
                                             "2026-11-01 06:30:00", "2026-11-01 07:30:00"}));
  check({
      {"*/15 * * * *", ny, utc(2026, 11, 1, 5, 50), utc(2026, 11, 1, 6)},  // 01:00 EST
      {"0 * * * *", ny, utc(2026, 11, 1, 5), utc(2026, 11, 1, 6)},
      {"*/30 1 * * *", ny, utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6)},
      {"*/30 1 * * *", ny, utc(2026, 11, 1, 6, 30), utc(2026, 11, 2, 6)},
  });
}

// Berlin 2026: 02:00 CET becomes 03:00 CEST on Mar 29 at 01:00 UTC; 03:00 CEST becomes 02:00 CET
// on Oct 25 at 01:00 UTC.
TEST(CronDst, Berlin) {
  const char* berlin = "Europe/Berlin";
  check({
      {"0 9 * * *", berlin, utc(2026, 3, 28), utc(2026, 3, 28, 8)},
      {"0 9 * * *", berlin, utc(2026, 3, 29, 12), utc(2026, 3, 30, 7)},
      {"30 2 * * *", berlin, utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)},
      {"30 2 * * *", berlin, utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)},
      {"15 * * * *", berlin, utc(2026, 3, 29, 0, 20), utc(2026, 3, 29, 1, 15)},
      {"30 2 * * *", berlin, utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30)},
      {"30 2 * * *", berlin, utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)},
      {"*/30 * * * *", berlin, utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 1)},
  });
}

// Half-hour DST: Lord Howe Island goes from +10:30 to +11 at 02:00 local on 2026-10-04
// (15:30 UTC the day before) and back at 02:00 local on 2026-04-05 (15:00 UTC the day before).
TEST(CronDst, HalfHourShifts) {
  const char* lh = "Australia/Lord_Howe";
  check({
      {"15 2 * * *", lh, utc(2026, 10, 3), utc(2026, 10, 3, 15, 30)},
      {"15 2 * * *", lh, utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)},
      {"45 1 * * *", lh, utc(2026, 4, 4, 12), utc(2026, 4, 4, 14, 45)},
      {"45 1 * * *", lh, utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)},
  });
}

// After 2037 the zone files list no transitions; the rules come from the files' POSIX footer.
TEST(CronDst, RulesContinuePast2037) {
  check({
      {"0 12 * * *", "America/New_York", utc(2040, 7, 1), utc(2040, 7, 1, 16)},
      {"0 12 * * *", "America/New_York", utc(2040, 1, 15), utc(2040, 1, 15, 17)},
      {"30 2 * * *", "America/New_York", utc(2040, 3, 10, 12), utc(2040, 3, 11, 7)},
      {"30 1 * * *", "America/New_York", utc(2040, 11, 4, 5, 30), utc(2040, 11, 5, 6, 30)},
      {"0 12 * * *", "Europe/Berlin", utc(2055, 7, 1), utc(2055, 7, 1, 10)},
      // Dublin's "winter time" is the DST of its rules (negative save); same wall clock result.
      {"0 12 * * *", "Europe/Dublin", utc(2026, 7, 1), utc(2026, 7, 1, 11)},
      {"0 12 * * *", "Europe/Dublin", utc(2040, 7, 1), utc(2040, 7, 1, 11)},
      {"0 12 * * *", "Europe/Dublin", utc(2040, 1, 15), utc(2040, 1, 15, 12)},
  });
}

TEST(CronDst, ZoneWithoutDst) {
  check({
      {"0 9 * * *", "Asia/Tokyo", utc(2026, 5, 31, 12), utc(2026, 6, 1, 0)},
      {"0 9 * * *", "Asia/Kolkata", utc(2026, 6, 1), utc(2026, 6, 1, 3, 30)},
  });
}

TEST(CronParse, NormalizedText) {
  EXPECT_EQ(cron_expression::parse("  */5   *\t* *  mon-fri ").to_string(), "*/5 * * * MON-FRI");
  EXPECT_EQ(cron_expression::parse("@ANNUALLY").to_string(), "@yearly");
  EXPECT_EQ(cron_expression::parse("@midnight").to_string(), "@daily");
  EXPECT_EQ(cron_expression::parse("0 0 1 jan *").to_string(), "0 0 1 JAN *");
}

TEST(CronParse, RoundTripAndEquality) {
  for (const char* text : {"*/5 * * * *", "0 9 * * MON-FRI", "@weekly", "0 0 13 * FRI",
                           "5/20 1-3,22 */2 JAN-MAR,DEC 0,6"}) {
    const auto e = cron_expression::parse(text, "Europe/Berlin");
    const auto again = cron_expression::parse(e.to_string(), e.timezone());
    EXPECT_EQ(again, e) << text;
    EXPECT_EQ(again.next_after(utc(2026, 5, 5)), e.next_after(utc(2026, 5, 5))) << text;
  }
  EXPECT_NE(cron_expression::parse("0 9 * * *", "UTC"),
            cron_expression::parse("0 9 * * *", "Europe/Berlin"));
}

TEST(CronParse, TimeZones) {
  EXPECT_EQ(cron_expression::parse("* * * * *").timezone(), "UTC");
  EXPECT_EQ(cron_expression::parse("* * * * *", "").timezone(), "UTC");
  EXPECT_EQ(cron_expression::parse("* * * * *", "Europe/Berlin").timezone(), "Europe/Berlin");
  EXPECT_EQ(cron_expression::parse("0 0 * * *", "Etc/UTC").next_after(utc(2026, 1, 1)),
            utc(2026, 1, 2));
}

TEST(CronParse, Periodic) {
  EXPECT_TRUE(cron_expression::parse("*/15 * * * *").periodic());
  EXPECT_TRUE(cron_expression::parse("0 * * * *").periodic());
  EXPECT_TRUE(cron_expression::parse("@hourly").periodic());
  EXPECT_FALSE(cron_expression::parse("30 2 * * *").periodic());
  EXPECT_FALSE(cron_expression::parse("0 9-17 * * *").periodic());
  EXPECT_FALSE(cron_expression::parse("@daily").periodic());
}

void expect_error(const char* text, const char* tz, const std::string& fragment) {
  try {
    (void)cron_expression::parse(text, tz);
    ADD_FAILURE() << "'" << text << "' was accepted";
  } catch (const schedule_error& e) {
    EXPECT_NE(std::string{e.what()}.find(fragment), std::string::npos)
        << "'" << text << "': " << e.what();
  }
}

TEST(CronParse, Errors) {
  expect_error("61 * * * *", "UTC", "cron: minute field '61' is out of range 0-59");
  expect_error("* * * *", "UTC",
               "cron: expected 5 fields (minute hour day-of-month month day-of-week), got 4");
  expect_error("* * * * * *", "UTC", "got 6");
  expect_error("* * * * *", "Mars/Base", "cron: unknown time zone 'Mars/Base'");
  expect_error("0 0 30 2 *", "UTC", "would never fire");
  expect_error("0 0 31 4,6,9,11 *", "UTC", "would never fire");
  expect_error("0 24 * * *", "UTC", "hour field '24' is out of range 0-23");
  expect_error("0 0 0 * *", "UTC", "day-of-month field '0' is out of range 1-31");
  expect_error("0 0 * 13 *", "UTC", "month field '13' is out of range 1-12");
  expect_error("0 0 * * 8", "UTC", "day-of-week field '8' is out of range 0-7");
  expect_error("1-61 * * * *", "UTC", "minute field '1-61': '61' is out of range 0-59");
  expect_error("99999999999 * * * *", "UTC", "out of range 0-59");
  expect_error("*/0 * * * *", "UTC", "step of 0");
  expect_error("*/61 * * * *", "UTC", "step larger than the range");
  expect_error("*/x * * * *", "UTC", "step that is not a positive number");
  expect_error("1,,2 * * * *", "UTC", "empty list item");
  expect_error("5- * * * *", "UTC", "missing value");
  expect_error("0 22-2 * * *", "UTC", "runs backwards");
  expect_error("a * * * *", "UTC", "minute field 'a' is not a number");
  expect_error("JAN * * * *", "UTC", "minute field 'JAN' is not a number");
  expect_error("0 0 * FOO *", "UTC", "is not a number or a month name (JAN-DEC)");
  expect_error("0 0 * * FUNDAY", "UTC", "is not a number or a day name (SUN-SAT)");
  expect_error("@reboot", "UTC", "unknown macro '@reboot'");
  expect_error("@daily 5", "UTC", "cannot be followed by other fields");
  expect_error("", "UTC", "empty");
  expect_error("   ", "UTC", "empty");
}

}  // namespace
