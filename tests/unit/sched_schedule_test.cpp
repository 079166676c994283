// Schedules (once / interval / cron), their text forms, and misfire plans.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/sched/schedule.hpp"

namespace {

using namespace std::chrono_literals;
using sluice::sched::fire_plan;
using sluice::sched::misfire_policy;
using sluice::sched::plan_misfire;
using sluice::sched::schedule;
using sluice::sched::schedule_error;
using sluice::sched::schedule_kind;
using sluice::sched::time_point;

time_point utc(int y, unsigned mo, unsigned d, int h = 0, int mi = 0, int s = 0) {
  using namespace std::chrono;
  return sys_days{year{y} / month{mo} / day{d}} + hours{h} + minutes{mi} + seconds{s};
}

template <typename F>
void expect_error(F&& f, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing: " << fragment;
  } catch (const schedule_error& e) {
    EXPECT_NE(std::string{e.what()}.find(fragment), std::string::npos) << e.what();
  }
}

TEST(Schedule, OnceFiresOnlyBeforeItsTime) {
  const auto at = utc(2026, 11, 26, 15, 49, 20);
  const auto s = schedule::once(at);
  EXPECT_EQ(s.kind(), schedule_kind::once);
  EXPECT_FALSE(s.recurring());
  EXPECT_EQ(s.next_after(at - 1s), at);
  EXPECT_EQ(s.next_after(at), std::nullopt);
  EXPECT_EQ(s.next_after(at + 1s), std::nullopt);
}

TEST(Schedule, UnanchoredIntervalFollowsTheGivenTime) {
  const auto s = schedule::every(30s);
  const auto t = utc(2026, 1, 1, 12, 0, 7) + 250ms;
  EXPECT_EQ(s.next_after(t), t + 30s);
  EXPECT_EQ(s.next_after(time_point::max() - 10s), std::nullopt);
}

TEST(Schedule, AnchoredIntervalFiresOnItsGrid) {
  const auto anchor = utc(2026, 1, 1);
  const auto s = schedule::every(1h, anchor);
  EXPECT_EQ(s.next_after(utc(2025, 12, 31)), anchor);
  EXPECT_EQ(s.next_after(anchor), anchor + 1h);
  EXPECT_EQ(s.next_after(utc(2026, 1, 1, 5, 30)), utc(2026, 1, 1, 6));
  EXPECT_EQ(s.next_after(utc(2026, 1, 1, 6)), utc(2026, 1, 1, 7));
  EXPECT_EQ(s.next_after(utc(2026, 1, 1, 6) - 1ns), utc(2026, 1, 1, 6));

  const auto half = anchor + 500ms;
  const auto every_second = schedule::every(1s, half);
  EXPECT_EQ(every_second.next_after(anchor + 10s), half + 10s);
  EXPECT_EQ(every_second.next_after(half + 10s), half + 11s);
  EXPECT_EQ(every_second.next_after(anchor + 10s + 700ms), half + 11s);
}

TEST(Schedule, AnchorCenturiesBackDoesNotOverflow) {
  // 1700 to 2200 is more nanoseconds than an int64 holds.
  const auto s = schedule::every(24h, utc(1700, 1, 1));
  EXPECT_EQ(s.next_after(utc(2200, 6, 15, 12)), utc(2200, 6, 16));
}

TEST(Schedule, IntervalBounds) {
  expect_error([] { (void)schedule::every(0s); }, "must be positive");
  expect_error([] { (void)schedule::every(-5s); }, "must be positive");
  expect_error([] { (void)schedule::every(schedule::max_interval + 1s); }, "maximum");
  EXPECT_EQ(schedule::every(schedule::max_interval).period(), schedule::max_interval);
}

TEST(Schedule, CronDelegates) {
  const auto s = schedule::cron("0 9 * * *", "Europe/Berlin");
  EXPECT_EQ(s.kind(), schedule_kind::cron);
  EXPECT_EQ(s.next_after(utc(2026, 7, 1)), utc(2026, 7, 1, 7));
  EXPECT_EQ(s.expression().timezone(), "Europe/Berlin");
}

TEST(Duration, ParseAndFormat) {
  EXPECT_EQ(sluice::sched::parse_duration("90s"), 90s);
  EXPECT_EQ(sluice::sched::parse_duration("90"), 90s);
  EXPECT_EQ(sluice::sched::parse_duration("5m"), 300s);
  EXPECT_EQ(sluice::sched::parse_duration("2h"), 7200s);
  EXPECT_EQ(sluice::sched::parse_duration("1d"), 86400s);
  EXPECT_EQ(sluice::sched::parse_duration("1h30m"), 5400s);
  EXPECT_EQ(sluice::sched::parse_duration("1H30M"), 5400s);
  EXPECT_EQ(sluice::sched::parse_duration("1d2h3m4s"), 93784s);
  EXPECT_EQ(sluice::sched::parse_duration("0s"), 0s);

  EXPECT_EQ(sluice::sched::format_duration(90s), "1m30s");
  EXPECT_EQ(sluice::sched::format_duration(5400s), "1h30m");
  EXPECT_EQ(sluice::sched::format_duration(86400s), "1d");
  EXPECT_EQ(sluice::sched::format_duration(93784s), "1d2h3m4s");
  EXPECT_EQ(sluice::sched::format_duration(0s), "0s");

  for (const char* bad :
       {"", "5x", "m", "30m1h", "5m5m", "1h30", "-5s", "1.5h", "99999999999999d"}) {
    expect_error([&] { (void)sluice::sched::parse_duration(bad); }, "duration");
  }
  expect_error([] { (void)sluice::sched::parse_duration("30m1h"); }, "out of order");
  expect_error([] { (void)sluice::sched::parse_duration("5x"); }, "unknown unit");
}

TEST(Timestamp, ParseAndFormat) {
  const auto t = utc(2026, 11, 26, 15, 49, 20);
  EXPECT_EQ(sluice::sched::parse_timestamp("2026-11-26T15:49:20Z"), t);
  EXPECT_EQ(sluice::sched::parse_timestamp("2026-11-26t15:49:20z"), t);
  EXPECT_EQ(sluice::sched::parse_timestamp("2026-11-26 15:49:20Z"), t);
  EXPECT_EQ(sluice::sched::parse_timestamp("2026-11-26T16:49:20+01:00"), t);
  EXPECT_EQ(sluice::sched::parse_timestamp("2026-11-26T10:19:20-05:30"), t);
  EXPECT_EQ(sluice::sched::parse_timestamp("2026-11-26T15:49:20.25Z"), t + 250ms);
  EXPECT_EQ(sluice::sched::parse_timestamp("2026-11-26T15:49:20.000000001Z"), t + 1ns);

  EXPECT_EQ(sluice::sched::format_timestamp(t), "2026-11-26T15:49:20Z");
  EXPECT_EQ(sluice::sched::format_timestamp(t + 250ms), "2026-11-26T15:49:20.25Z");
  EXPECT_EQ(sluice::sched::format_timestamp(t + 1ns), "2026-11-26T15:49:20.000000001Z");
  EXPECT_EQ(sluice::sched::format_timestamp(utc(1969, 12, 31, 23, 59, 59) + 500ms),
            "1969-12-31T23:59:59.5Z");

  expect_error([] { (void)sluice::sched::parse_timestamp("2026-02-30T00:00:00Z"); },
               "does not exist");
  expect_error([] { (void)sluice::sched::parse_timestamp("2026-11-26T15:49:20"); },
               "no UTC offset");
  expect_error([] { (void)sluice::sched::parse_timestamp("2026-11-26T24:00:00Z"); },
               "out of range");
  expect_error([] { (void)sluice::sched::parse_timestamp("tomorrow"); }, "malformed");
  expect_error([] { (void)sluice::sched::parse_timestamp("2026-11-26T15:49:20Zx"); }, "trailing");
  expect_error([] { (void)sluice::sched::parse_timestamp("2026-11-26T15:49:20."); }, "fraction");
  expect_error([] { (void)sluice::sched::parse_timestamp("2300-01-01T00:00:00Z"); },
               "outside the years");
}

TEST(ScheduleText, RoundTrips) {
  for (const char* text :
       {"once:2026-11-26T15:49:20Z", "once:2026-11-26T15:49:20.5Z", "every:1h30m", "every:30s",
        "every:5m@2026-01-01T00:00:00Z", "cron:*/5 * * * *", "cron:0 9 * * MON-FRI@Europe/Berlin",
        "cron:@daily@America/New_York", "cron:@hourly"}) {
    const auto s = schedule::parse(text);
    EXPECT_EQ(s.to_string(), text);
    EXPECT_EQ(schedule::parse(s.to_string()), s) << text;
    EXPECT_EQ(schedule::from_fields(s.kind_name(), s.spec(), s.tz()), s) << text;
  }
}

TEST(ScheduleText, NormalizesEquivalentSpellings) {
  EXPECT_EQ(schedule::parse("every:90s").to_string(), "every:1m30s");
  EXPECT_EQ(schedule::parse("interval:5m").to_string(), "every:5m");
  EXPECT_EQ(schedule::parse("EVERY:5m"), schedule::every(300s));
  EXPECT_EQ(schedule::parse("once:2026-11-26T16:49:20+01:00").to_string(),
            "once:2026-11-26T15:49:20Z");
  EXPECT_EQ(schedule::parse("cron:0 9 * * mon@UTC").to_string(), "cron:0 9 * * MON");
  EXPECT_EQ(schedule::parse("cron:@annually").to_string(), "cron:@yearly");
}

TEST(ScheduleText, Fields) {
  const auto c = schedule::from_fields("cron", "0 9 * * *", "Europe/Berlin");
  EXPECT_EQ(c.kind_name(), "cron");
  EXPECT_EQ(c.spec(), "0 9 * * *");
  EXPECT_EQ(c.tz(), "Europe/Berlin");

  const auto i = schedule::from_fields("interval", "1h30m", "");
  EXPECT_EQ(i.kind_name(), "interval");
  EXPECT_EQ(i.spec(), "1h30m");
  EXPECT_EQ(i.tz(), "UTC");
  EXPECT_EQ(i.period(), 5400s);
  EXPECT_EQ(i.anchor(), std::nullopt);

  const auto a = schedule::from_fields("every", "1h@2026-01-01T00:00:00Z", "UTC");
  EXPECT_EQ(a.anchor(), utc(2026, 1, 1));
  EXPECT_EQ(a.spec(), "1h@2026-01-01T00:00:00Z");

  const auto o = schedule::from_fields("once", "2026-11-26T15:49:20Z", "UTC");
  EXPECT_EQ(o.at(), utc(2026, 11, 26, 15, 49, 20));
  EXPECT_EQ(o.spec(), "2026-11-26T15:49:20Z");

  EXPECT_EQ(schedule::from_fields("cron", "@daily", "").tz(), "UTC");
}

TEST(ScheduleText, Errors) {
  expect_error([] { (void)schedule::parse("hourly:5"); },
               "does not start with once:, every: or cron:");
  expect_error([] { (void)schedule::parse("every:0s"); }, "must be positive");
  expect_error([] { (void)schedule::parse("every:5m@yesterday"); }, "'yesterday' is malformed");
  expect_error([] { (void)schedule::parse("cron:* * * *"); }, "expected 5 fields");
  expect_error([] { (void)schedule::parse("cron:* * * * *@Mars/Base"); },
               "unknown time zone 'Mars/Base'");
  expect_error([] { (void)schedule::parse("once:2026-11-26"); }, "malformed");
  expect_error([] { (void)schedule::from_fields("interval", "5m", "Europe/Berlin"); },
               "applies only to cron schedules");
  expect_error([] { (void)schedule::from_fields("weekly", "x", ""); },
               "kind 'weekly' is not one of once, interval, cron");
  expect_error([] { (void)schedule::from_fields("cron", "61 * * * *", "UTC"); },
               "minute field '61'");
  EXPECT_THROW((void)schedule::every(5s).at(), std::logic_error);
  EXPECT_THROW((void)schedule::once(utc(2026, 1, 1)).expression(), std::logic_error);
  EXPECT_THROW((void)schedule::cron("@daily").period(), std::logic_error);
}

TEST(MisfirePolicy, Names) {
  for (const auto p : {misfire_policy::coalesce, misfire_policy::catch_up, misfire_policy::skip}) {
    EXPECT_EQ(sluice::sched::parse_misfire_policy(sluice::sched::to_string(p)), p);
  }
  EXPECT_EQ(sluice::sched::parse_misfire_policy("Catch-Up"), misfire_policy::catch_up);
  expect_error([] { (void)sluice::sched::parse_misfire_policy("later"); },
               "misfire policy 'later' is not one of coalesce, catch_up, skip");
}

std::vector<time_point> times(std::initializer_list<time_point> list) {
  return list;
}

// The worked example of docs/schedules.md: an hourly job due at 10:00, nodes down until 13:20.
TEST(Misfire, HourlyJobAfterAnOutage) {
  const auto hourly = schedule::cron("0 * * * *");
  const auto due = utc(2026, 5, 4, 10);
  const auto now = utc(2026, 5, 4, 13, 20);

  auto p = plan_misfire(hourly, due, now, misfire_policy::coalesce, 5min, 2);
  EXPECT_EQ(p.runs, times({utc(2026, 5, 4, 13)}));
  EXPECT_EQ(p.next_run_at, utc(2026, 5, 4, 14));
  EXPECT_EQ(p.skipped, 3U);
  EXPECT_TRUE(p.misfired);

  p = plan_misfire(hourly, due, now, misfire_policy::catch_up, 5min, 2);
  EXPECT_EQ(p.runs, times({utc(2026, 5, 4, 12), utc(2026, 5, 4, 13)}));
  EXPECT_EQ(p.next_run_at, utc(2026, 5, 4, 14));
  EXPECT_EQ(p.skipped, 2U);

  p = plan_misfire(hourly, due, now, misfire_policy::catch_up, 5min, 10);
  EXPECT_EQ(p.runs, times({utc(2026, 5, 4, 10), utc(2026, 5, 4, 11), utc(2026, 5, 4, 12),
                           utc(2026, 5, 4, 13)}));
  EXPECT_EQ(p.skipped, 0U);

  p = plan_misfire(hourly, due, now, misfire_policy::skip, 5min, 2);
  EXPECT_TRUE(p.runs.empty());
  EXPECT_EQ(p.next_run_at, utc(2026, 5, 4, 14));
  EXPECT_EQ(p.skipped, 4U);

  // Back at 13:03, the 13:00 fire is inside the grace period and still runs.
  p = plan_misfire(hourly, due, utc(2026, 5, 4, 13, 3), misfire_policy::skip, 5min, 2);
  EXPECT_EQ(p.runs, times({utc(2026, 5, 4, 13)}));
  EXPECT_EQ(p.skipped, 3U);
}

TEST(Misfire, OnTimeIsNotAMisfire) {
  const auto hourly = schedule::cron("0 * * * *");
  const auto due = utc(2026, 5, 4, 10);
  for (const auto policy :
       {misfire_policy::coalesce, misfire_policy::catch_up, misfire_policy::skip}) {
    for (const auto now : {due, due + 2min, due + 5min}) {  // grace is inclusive
      const auto p = plan_misfire(hourly, due, now, policy, 5min, 3);
      EXPECT_EQ(p.runs, times({due})) << sluice::sched::to_string(policy);
      EXPECT_EQ(p.next_run_at, utc(2026, 5, 4, 11));
      EXPECT_EQ(p.skipped, 0U);
      EXPECT_FALSE(p.misfired);
    }
  }
}

TEST(Misfire, LateSingleFire) {
  const auto hourly = schedule::cron("0 * * * *");
  const auto due = utc(2026, 5, 4, 10);
  const auto now = due + 30min;
  auto p = plan_misfire(hourly, due, now, misfire_policy::coalesce, 5min, 3);
  EXPECT_EQ(p.runs, times({due}));
  EXPECT_TRUE(p.misfired);
  p = plan_misfire(hourly, due, now, misfire_policy::catch_up, 5min, 3);
  EXPECT_EQ(p.runs, times({due}));
  p = plan_misfire(hourly, due, now, misfire_policy::skip, 5min, 3);
  EXPECT_TRUE(p.runs.empty());
  EXPECT_EQ(p.skipped, 1U);
  EXPECT_EQ(p.next_run_at, utc(2026, 5, 4, 11));
}

TEST(Misfire, NotYetDue) {
  const auto p = plan_misfire(schedule::cron("0 * * * *"), utc(2026, 5, 4, 14), utc(2026, 5, 4, 13),
                              misfire_policy::catch_up, 5min, 3);
  EXPECT_TRUE(p.runs.empty());
  EXPECT_EQ(p.next_run_at, utc(2026, 5, 4, 14));
  EXPECT_EQ(p.skipped, 0U);
  EXPECT_FALSE(p.misfired);
}

TEST(Misfire, SeveralFiresWithinGrace) {
  const auto s = schedule::every(10s);
  const auto due = utc(2026, 5, 4, 12);
  const auto now = due + 35s;  // due: 12:00:00, :10, :20, :30
  auto p = plan_misfire(s, due, now, misfire_policy::coalesce, 60s, 3);
  EXPECT_EQ(p.runs, times({due + 30s}));
  EXPECT_EQ(p.next_run_at, due + 40s);
  EXPECT_EQ(p.skipped, 3U);
  EXPECT_TRUE(p.misfired);
  p = plan_misfire(s, due, now, misfire_policy::catch_up, 60s, 3);
  EXPECT_EQ(p.runs, times({due + 10s, due + 20s, due + 30s}));
  EXPECT_EQ(p.skipped, 1U);
  p = plan_misfire(s, due, now, misfire_policy::skip, 60s, 3);
  EXPECT_EQ(p.runs, times({due + 30s}));
  EXPECT_EQ(p.skipped, 3U);
}

TEST(Misfire, AnchoredIntervalAndOffGridScheduledTime) {
  // Stored next_run_at 12:07 (say, after a run-now), grid every 15 min from midnight.
  const auto s = schedule::every(15min, utc(2026, 5, 4));
  const auto p = plan_misfire(s, utc(2026, 5, 4, 12, 7), utc(2026, 5, 4, 12, 50),
                              misfire_policy::catch_up, 0s, 10);
  EXPECT_EQ(p.runs, times({utc(2026, 5, 4, 12, 7), utc(2026, 5, 4, 12, 15), utc(2026, 5, 4, 12, 30),
                           utc(2026, 5, 4, 12, 45)}));
  EXPECT_EQ(p.next_run_at, utc(2026, 5, 4, 13));
}

TEST(Misfire, OnceSchedule) {
  const auto at = utc(2026, 5, 4, 9);
  const auto s = schedule::once(at);
  auto p = plan_misfire(s, at, at + 1h, misfire_policy::coalesce, 5min, 3);
  EXPECT_EQ(p.runs, times({at}));
  EXPECT_EQ(p.next_run_at, std::nullopt);
  EXPECT_TRUE(p.misfired);
  p = plan_misfire(s, at, at + 1h, misfire_policy::skip, 5min, 3);
  EXPECT_TRUE(p.runs.empty());
  EXPECT_EQ(p.skipped, 1U);
  EXPECT_EQ(p.next_run_at, std::nullopt);
}

TEST(Misfire, OddArgumentsAreClamped) {
  const auto hourly = schedule::cron("0 * * * *");
  const auto due = utc(2026, 5, 4, 10);
  // Negative grace counts as zero: one second late is late.
  auto p = plan_misfire(hourly, due, due + 1s, misfire_policy::skip, -10s, 3);
  EXPECT_TRUE(p.runs.empty());
  EXPECT_TRUE(p.misfired);
  // A catch-up limit below 1 counts as 1.
  p = plan_misfire(hourly, due, due + 150min, misfire_policy::catch_up, 0s, 0);
  EXPECT_EQ(p.runs, times({utc(2026, 5, 4, 12)}));
}

TEST(Misfire, DstGapInsideTheOutage) {
  // 02:30 New York: Mar 7 02:30 EST, Mar 8 at the gap's end (03:00 EDT), Mar 9 02:30 EDT.
  const auto s = schedule::cron("30 2 * * *", "America/New_York");
  const auto p = plan_misfire(s, utc(2026, 3, 7, 7, 30), utc(2026, 3, 9, 12),
                              misfire_policy::catch_up, 5min, 5);
  EXPECT_EQ(p.runs, times({utc(2026, 3, 7, 7, 30), utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)}));
  EXPECT_EQ(p.next_run_at, utc(2026, 3, 10, 6, 30));
}

TEST(Misfire, LongOutageOfAFrequentInterval) {
  // Every second for a year: counted arithmetically, the count saturates.
  const auto s = schedule::every(1s);
  const auto due = utc(2026, 1, 1);
  const auto now = utc(2027, 1, 1);
  auto p = plan_misfire(s, due, now, misfire_policy::coalesce, 60s, 3);
  EXPECT_EQ(p.runs, times({now}));
  EXPECT_EQ(p.next_run_at, now + 1s);
  EXPECT_EQ(p.skipped, fire_plan::count_limit);
  p = plan_misfire(s, due, now, misfire_policy::catch_up, 60s, 3);
  EXPECT_EQ(p.runs, times({now - 2s, now - 1s, now}));
}

TEST(Misfire, LongOutageOfAFrequentCron) {
  // Every minute for 90 days is more fires than are counted one by one.
  const auto s = schedule::cron("* * * * *");
  const auto due = utc(2026, 1, 1);
  const auto now = utc(2026, 4, 1) + 30s;
  auto p = plan_misfire(s, due, now, misfire_policy::coalesce, 60s, 3);
  EXPECT_EQ(p.runs, times({utc(2026, 4, 1)}));
  EXPECT_EQ(p.next_run_at, utc(2026, 4, 1, 0, 1));
  EXPECT_EQ(p.skipped, fire_plan::count_limit);
  // More than an hour's worth: the backwards search widens its window.
  p = plan_misfire(s, due, now, misfire_policy::catch_up, 60s, 200);
  ASSERT_EQ(p.runs.size(), 200U);
  EXPECT_EQ(p.runs.front(), utc(2026, 4, 1) - 199min);
  EXPECT_EQ(p.runs.back(), utc(2026, 4, 1));
  for (std::size_t i = 1; i < p.runs.size(); ++i)
    EXPECT_EQ(p.runs[i] - p.runs[i - 1], 1min);
}

TEST(Misfire, SparseFiresAfterALongDenseStretch) {
  // Every minute of 09:xx on weekdays; due long ago, now on a Sunday afternoon: the most recent
  // fire is Friday 09:59 and the backwards search has to look past the quiet weekend.
  const auto s = schedule::cron("* 9 * * MON-FRI");
  const auto due = utc(2015, 1, 5, 9);    // about 150000 fires before now
  const auto now = utc(2026, 5, 10, 15);  // Sunday
  const auto p = plan_misfire(s, due, now, misfire_policy::catch_up, 60s, 2);
  EXPECT_EQ(p.runs, times({utc(2026, 5, 8, 9, 58), utc(2026, 5, 8, 9, 59)}));
  EXPECT_EQ(p.next_run_at, utc(2026, 5, 11, 9));
}

}  // namespace
