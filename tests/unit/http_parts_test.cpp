// The HTTP layer's small parts, without a server or database: bearer-token checks, the
// readiness verdicts, the pool-history ring and sampler thread, and the JSON helpers.

#include <atomic>
#include <chrono>
#include <cmath>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "http/auth.hpp"
#include "http/errors.hpp"
#include "http/history.hpp"
#include "http/json.hpp"
#include "http/readiness.hpp"

namespace http = sluice::http;
namespace pool = sluice::pool;
namespace sched = sluice::sched;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

// ---- auth ----------------------------------------------------------------------------------

TEST(HttpAuth, ConstantTimeEqualIsEquality) {
  EXPECT_TRUE(http::constant_time_equal("secret-token", "secret-token"));
  EXPECT_FALSE(http::constant_time_equal("secret-tokeN", "secret-token"));
  EXPECT_FALSE(http::constant_time_equal("Secret-token", "secret-token"));
  EXPECT_FALSE(http::constant_time_equal("secret", "secret-token"));
  EXPECT_FALSE(http::constant_time_equal("secret-token-and-more", "secret-token"));
  EXPECT_FALSE(http::constant_time_equal("", "secret-token"));
  // A presented value that repeats the token's prefix cyclically must not pass either.
  EXPECT_FALSE(http::constant_time_equal("ab", "abab"));
  EXPECT_TRUE(http::constant_time_equal("", ""));
  EXPECT_FALSE(http::constant_time_equal("x", ""));
  const std::string with_nul("a\0b", 3);
  EXPECT_FALSE(http::constant_time_equal("a", with_nul));
  EXPECT_TRUE(http::constant_time_equal(with_nul, with_nul));
}

TEST(HttpAuth, BearerTokenParsing) {
  EXPECT_EQ(http::bearer_token("Bearer abc"), "abc");
  EXPECT_EQ(http::bearer_token("bearer abc"), "abc");
  EXPECT_EQ(http::bearer_token("BEARER   abc  "), "abc");
  EXPECT_EQ(http::bearer_token("  Bearer\tabc"), "abc");
  EXPECT_FALSE(http::bearer_token(""));
  EXPECT_FALSE(http::bearer_token("Bearer"));
  EXPECT_FALSE(http::bearer_token("Bearer   "));
  EXPECT_FALSE(http::bearer_token("Bearerabc"));
  EXPECT_FALSE(http::bearer_token("Basic YWJjOmRlZg=="));
  EXPECT_FALSE(http::bearer_token("abc"));
}

// ---- errors ----------------------------------------------------------------------------------

TEST(HttpAuth, HostAllowedAcceptsOnlyThisServersNames) {
  const std::vector<std::string> none;
  for (const char* ok : {"", "127.0.0.1", "127.0.0.1:8080", "10.1.2.3:80", "[::1]", "[::1]:8080",
                         "[fe80::1]", "localhost", "localhost:8080", "LocalHost", "localhost.",
                         "localhost.:9", "dash.localhost", "a.b.localhost:1"}) {
    EXPECT_TRUE(http::host_allowed(ok, none)) << ok;
  }
  for (const char* bad : {"evil.example", "evil.example:8080", "localhost.evil.example",
                          "evillocalhost", "127.0.0.1.evil.example", "[::1", "[::1]x", "[nonsense]",
                          ":8080", "1.2.3", "0x7f000001", "sched.internal"}) {
    EXPECT_FALSE(http::host_allowed(bad, none)) << bad;
  }
  const std::vector<std::string> list = {"Sched.Internal", "dash.example.com."};
  EXPECT_TRUE(http::host_allowed("sched.internal:8080", list));
  EXPECT_TRUE(http::host_allowed("SCHED.INTERNAL", list));
  EXPECT_TRUE(http::host_allowed("dash.example.com", list));
  EXPECT_FALSE(http::host_allowed("other.internal", list));
  EXPECT_FALSE(http::host_allowed("internal", list));
  EXPECT_TRUE(http::host_allowed("anything.at.all:1", {"*"}));
}

TEST(HttpErrors, CodesAndStatuses) {
  EXPECT_EQ(http::to_string(http::error_code::payload_too_large), "payload_too_large");
  EXPECT_EQ(http::http_status(http::error_code::unavailable), 503);
  EXPECT_EQ(http::http_status(http::error_code::conflict), 409);
  EXPECT_EQ(http::code_for_status(413), http::error_code::payload_too_large);
  EXPECT_EQ(http::code_for_status(414), http::error_code::bad_request);
  EXPECT_EQ(http::code_for_status(500), http::error_code::internal);
  for (const auto c :
       {http::error_code::bad_request, http::error_code::unauthorized, http::error_code::forbidden,
        http::error_code::not_found, http::error_code::method_not_allowed,
        http::error_code::conflict, http::error_code::payload_too_large,
        http::error_code::unavailable, http::error_code::internal}) {
    EXPECT_EQ(http::code_for_status(http::http_status(c)), c) << http::to_string(c);
  }
}

// ---- readiness -------------------------------------------------------------------------------

namespace {

pool::pool_stats healthy_pool(const std::string& name) {
  pool::pool_stats p;
  p.name = name;
  p.size = 2;
  p.max_overflow = 1;
  p.max = 3;
  p.open = 2;
  p.checked_in = 1;
  p.checked_out = 1;
  return p;
}

sched::scheduler_status running_scheduler(steady_clock::time_point now, std::chrono::seconds age) {
  sched::scheduler_status s;
  s.state = sched::scheduler_state::running;
  s.started_at = now - 1h;
  s.last_cycle_at = now - age;
  return s;
}

}  // namespace

TEST(HttpReadiness, PoolsVerdicts) {
  const auto t0 = steady_clock::now();
  http::pool_pressure pressure(2s, 30s);
  EXPECT_TRUE(pressure.check({healthy_pool("a"), healthy_pool("b")}, t0).ok);

  auto busy = healthy_pool("busy");  // every connection out but nobody waiting: fine
  busy.checked_out = 3;
  busy.checked_in = 0;
  EXPECT_TRUE(pressure.check({busy}, t0).ok);

  auto saturated = healthy_pool("sat");
  saturated.saturated = true;
  saturated.last_connect_error = "FATAL: sorry, too many clients already";
  const auto s = pressure.check({saturated}, t0);
  EXPECT_FALSE(s.ok);
  EXPECT_NE(s.reason.find("saturated"), std::string::npos);
  EXPECT_NE(s.reason.find("too many clients"), std::string::npos);

  auto closed = healthy_pool("gone");
  closed.closed = true;
  EXPECT_NE(pressure.check({closed}, t0).reason.find("pool 'gone' is closed"), std::string::npos);
}

// A queue that forms and drains is normal; one that lasts past `sustain` is not.
TEST(HttpReadiness, PoolIsExhaustedOnlyWhenTheShortageLasts) {
  const auto t0 = steady_clock::now();
  http::pool_pressure pressure(2s, 30s);
  auto exhausted = healthy_pool("exhausted");
  exhausted.checked_out = 3;
  exhausted.checked_in = 0;
  exhausted.waiting = 2;
  EXPECT_TRUE(pressure.check({healthy_pool("a"), exhausted}, t0).ok);
  EXPECT_TRUE(pressure.check({healthy_pool("a"), exhausted}, t0 + 1s).ok);
  const auto r = pressure.check({healthy_pool("a"), exhausted}, t0 + 2s);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("pool 'exhausted' is exhausted: 3 of 3"), std::string::npos) << r.reason;
  EXPECT_EQ(r.detail["pools"]["a"], "ok");

  // The queue drained: ready again, and a new shortage starts its own clock.
  auto drained = healthy_pool("exhausted");
  EXPECT_TRUE(pressure.check({drained}, t0 + 3s).ok);
  EXPECT_TRUE(pressure.check({exhausted}, t0 + 4s).ok);
  EXPECT_FALSE(pressure.check({exhausted}, t0 + 6s).ok);
}

// A borrower that timed out is exhaustion for `timeout_memory`, whatever the pool looks like now;
// timeouts that happened before the first look are not dated and do not count.
TEST(HttpReadiness, AcquireTimeoutMakesThePoolExhaustedForAWhile) {
  const auto t0 = steady_clock::now();
  http::pool_pressure pressure(2s, 30s);
  auto p = healthy_pool("platform");
  p.checked_out = 3;
  p.checked_in = 0;
  p.timeouts = 5;
  EXPECT_TRUE(pressure.check({p}, t0).ok);
  p.timeouts = 6;
  const auto r = pressure.check({p}, t0 + 1s);
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.reason.find("timed out"), std::string::npos) << r.reason;
  EXPECT_FALSE(pressure.check({p}, t0 + 31s).ok);
  EXPECT_TRUE(pressure.check({p}, t0 + 32s).ok);
}

// Timeouts while the pool could not connect at all (database down) leave nothing lent: once the
// database is back the pool is ready at once, not 30 s later.
TEST(HttpReadiness, TimeoutsOfAPoolThatCouldNotConnectDoNotOutliveTheOutage) {
  const auto t0 = steady_clock::now();
  http::pool_pressure pressure(2s, 30s);
  auto p = healthy_pool("scheduler");
  p.open = 0;
  p.checked_in = 0;
  p.checked_out = 0;
  EXPECT_TRUE(pressure.check({p}, t0).ok);
  p.timeouts = 40;
  EXPECT_TRUE(pressure.check({p}, t0 + 1s).ok);
  p = healthy_pool("scheduler");
  p.timeouts = 40;
  EXPECT_TRUE(pressure.check({p}, t0 + 2s).ok);
}

TEST(HttpReadiness, SchedulerVerdicts) {
  const auto now = steady_clock::now();
  EXPECT_EQ(http::scheduler_stall_limit(30s), 90s);
  EXPECT_EQ(http::scheduler_stall_limit(300ms), 10s);

  EXPECT_TRUE(http::check_scheduler(running_scheduler(now, 5s), 30s, now).ok);
  EXPECT_TRUE(http::check_scheduler(running_scheduler(now, 89s), 30s, now).ok);
  const auto stale = http::check_scheduler(running_scheduler(now, 91s), 30s, now);
  EXPECT_FALSE(stale.ok);
  EXPECT_NE(stale.reason.find("91 s ago"), std::string::npos) << stale.reason;
  EXPECT_FALSE(http::check_scheduler(running_scheduler(now, 11s), 300ms, now).ok);

  auto stopped = running_scheduler(now, 1s);
  stopped.state = sched::scheduler_state::stopped;
  const auto st = http::check_scheduler(stopped, 30s, now);
  EXPECT_FALSE(st.ok);
  EXPECT_EQ(st.reason, "scheduler is stopped");

  // Started a moment ago, no cycle finished yet: alive; started long ago without one: stuck.
  auto fresh = running_scheduler(now, 0s);
  fresh.last_cycle_at = {};
  fresh.started_at = now - 1s;
  EXPECT_TRUE(http::check_scheduler(fresh, 30s, now).ok);
  fresh.started_at = now - 2min;
  EXPECT_FALSE(http::check_scheduler(fresh, 30s, now).ok);
}

TEST(HttpReadiness, JsonVerdict) {
  http::check_result good;
  http::check_result bad;
  bad.ok = false;
  bad.reason = "broken";
  bad.detail["n"] = 3;
  bool ready = false;
  auto j = http::readiness_json({{"a", good}, {"b", good}}, ready);
  EXPECT_TRUE(ready);
  EXPECT_EQ(j["status"], "ready");
  EXPECT_EQ(j["checks"]["a"]["ok"], true);
  EXPECT_FALSE(j["checks"]["a"].contains("reason"));

  j = http::readiness_json({{"a", good}, {"b", bad}}, ready);
  EXPECT_FALSE(ready);
  EXPECT_EQ(j["status"], "not_ready");
  EXPECT_EQ(j["checks"]["b"]["ok"], false);
  EXPECT_EQ(j["checks"]["b"]["reason"], "broken");
  EXPECT_EQ(j["checks"]["b"]["n"], 3);
}

// ---- pool history ---------------------------------------------------------------------------

namespace {

http::history_sample numbered(int n) {
  http::history_sample s;
  s.at = sched::time_point{} + std::chrono::seconds(n);
  s.pools.push_back({"p", n, n, 10, 0});
  return s;
}

}  // namespace

TEST(HttpHistory, RingKeepsTheNewestSamples) {
  int next = 0;
  http::pool_history h(1s, 3, [&] { return numbered(++next); });
  EXPECT_FALSE(h.latest());
  for (int i = 0; i < 5; ++i)
    h.sample_now();
  const auto all = h.samples();
  ASSERT_EQ(all.size(), 3U);
  EXPECT_EQ(all[0].pools[0].checked_out, 3);
  EXPECT_EQ(all[2].pools[0].checked_out, 5);
  EXPECT_EQ(h.latest()->pools[0].checked_out, 5);
  // Only samples strictly after `since`.
  const auto newer = h.samples(sched::time_point{} + 4s);
  ASSERT_EQ(newer.size(), 1U);
  EXPECT_EQ(newer[0].pools[0].checked_out, 5);
}

TEST(HttpHistory, ThreadSamplesAndStops) {
  std::atomic<int> taken{0};
  http::pool_history h(5ms, 100, [&] { return numbered(++taken); });
  h.stop();  // safe before start
  h.start();
  h.start();  // a second start is a no-op
  const auto deadline = steady_clock::now() + 10s;
  while (taken.load() < 3 && steady_clock::now() < deadline)
    std::this_thread::sleep_for(1ms);
  h.stop();
  h.stop();  // idempotent
  const int after_stop = taken.load();
  EXPECT_GE(after_stop, 3);
  EXPECT_EQ(static_cast<int>(h.samples().size()), std::min(after_stop, 100));
  // Stopped means stopped: nothing more is taken.
  std::this_thread::sleep_for(30ms);
  EXPECT_EQ(taken.load(), after_stop);
}

TEST(HttpHistory, SampleJson) {
  auto s = numbered(7);
  auto j = http::json_of(s);
  EXPECT_EQ(j["pools"][0]["name"], "p");
  EXPECT_EQ(j["pools"][0]["max"], 10);
  EXPECT_TRUE(j["server"].is_null());
  EXPECT_FALSE(j.contains("error"));
  s.max_connections = 100;
  s.connections["sluice/p"] = 3;
  s.error.clear();
  j = http::json_of(s);
  EXPECT_EQ(j["server"]["max_connections"], 100);
  EXPECT_EQ(j["server"]["connections"]["sluice/p"], 3);
  EXPECT_EQ(j["at"], "1970-01-01T00:00:07Z");
}

// ---- JSON helpers -----------------------------------------------------------------------------

TEST(HttpJson, ParseBodyLimits) {
  EXPECT_EQ(http::parse_json_body(R"({"a":[1,2]})")["a"][1], 2);
  const auto message = [](const std::string& text) {
    try {
      (void)http::parse_json_body(text);
      return std::string();
    } catch (const http::api_error& e) {
      EXPECT_EQ(e.code(), http::error_code::bad_request);
      return std::string(e.what());
    }
  };
  EXPECT_NE(message("").find("empty"), std::string::npos);
  EXPECT_NE(message("{\"a\":").find("malformed JSON"), std::string::npos);
  EXPECT_NE(message("{\"a\":\"\xff\"}").find("malformed JSON"), std::string::npos);
  // The outermost value is depth 1: max_json_depth levels pass, one more does not.
  const int d = http::max_json_depth;
  EXPECT_EQ(message(std::string(d, '[') + std::string(d, ']')), "");
  EXPECT_NE(message(std::string(d + 1, '[') + std::string(d + 1, ']')).find("nested deeper"),
            std::string::npos);
}

TEST(HttpJson, NestingExceeds) {
  EXPECT_FALSE(http::nesting_exceeds(http::json(5), 0));
  EXPECT_FALSE(http::nesting_exceeds(http::json::parse("[[1]]"), 2));
  EXPECT_TRUE(http::nesting_exceeds(http::json::parse("[[1]]"), 1));
  EXPECT_TRUE(http::nesting_exceeds(http::json::parse(R"({"a":{"b":{}}})"), 2));
}

TEST(HttpJson, DumpReplacesInvalidUtf8) {
  const http::json j = {{"error", std::string("bad \xff byte")}};
  const std::string out = http::dump(j);
  EXPECT_NE(out.find("bad \xEF\xBF\xBD byte"), std::string::npos) << out;
}

TEST(HttpJson, ErrorBodyShape) {
  const auto j = http::error_json(http::error_code::not_found, "no task with id 5");
  EXPECT_EQ(j["error"]["code"], "not_found");
  EXPECT_EQ(j["error"]["message"], "no task with id 5");
}

TEST(HttpJson, TimesAndEmbeddedJson) {
  EXPECT_TRUE(http::timestamp_json(std::nullopt).is_null());
  EXPECT_EQ(http::timestamp_json(sched::parse_timestamp("2026-11-26T15:49:20.25Z")),
            "2026-11-26T15:49:20.25Z");
  EXPECT_EQ(http::embedded_json(R"({"a":1})")["a"], 1);
  EXPECT_EQ(http::embedded_json("not json"), "not json");

  const auto steady_now = steady_clock::now();
  const auto wall_now = sched::parse_timestamp("2026-01-01T00:00:10Z");
  EXPECT_FALSE(http::wall_time_of({}, steady_now, wall_now));
  EXPECT_EQ(http::wall_time_of(steady_now - 4s, steady_now, wall_now),
            sched::parse_timestamp("2026-01-01T00:00:06Z"));
}

TEST(HttpJson, PoolStatsHaveEveryFieldAndTheHistogram) {
  pool::pool_stats s;
  s.name = "p";
  s.checked_out = 2;
  s.wait_bucket_counts[0] = 7;
  s.wait_bucket_counts[15] = 1;
  const auto j = http::json_of(s);
  for (const char* key : {"name",
                          "size",
                          "max_overflow",
                          "max",
                          "open",
                          "checked_in",
                          "checked_out",
                          "overflow",
                          "waiting",
                          "peak_checked_out",
                          "saturated",
                          "closed",
                          "connects",
                          "connect_failures",
                          "server_refusals",
                          "checkouts",
                          "timeouts",
                          "invalidations",
                          "recycles",
                          "idle_closes",
                          "pings_failed",
                          "leaks",
                          "wait_p50_ms",
                          "wait_p99_ms",
                          "wait_max_ms",
                          "wait_sum_ms",
                          "wait_histogram",
                          "last_connect_error"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  ASSERT_EQ(j["wait_histogram"].size(), 16U);
  EXPECT_EQ(j["wait_histogram"][0]["le_ms"], 0.05);
  EXPECT_EQ(j["wait_histogram"][0]["count"], 7);
  EXPECT_TRUE(j["wait_histogram"][15]["le_ms"].is_null());
  EXPECT_EQ(j["wait_histogram"][15]["count"], 1);
  EXPECT_TRUE(j["last_connect_error"].is_null());
}
