// The scheduler engine in one process against the real server: one-shot, interval and cron
// tasks run when due and as often as due; failures are retried with backoff and end as the
// policy says; recurring tasks keep their schedule and pause after repeated failures; timeouts
// cancel the handler and are retried.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/sched/schedule.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "support/sched_test_env.hpp"

namespace sched = sluice::sched;
namespace test = sluice::test;
namespace pg = sluice::pg;
using namespace std::chrono_literals;
using sched::task_state;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

namespace {

class SchedEngine : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

// What a handler saw, one entry per call.
struct call {
  std::int64_t id = 0;
  int attempt = 0;
  sched::time_point fire_time;
  steady_clock::time_point started;
  steady_clock::time_point finished;
  steady_clock::time_point deadline;
  bool cancelled = false;
  std::string payload;
};

class recorder {
 public:
  void add(const call& c) {
    const std::scoped_lock lock(mutex_);
    calls_.push_back(c);
  }
  [[nodiscard]] std::vector<call> calls() const {
    const std::scoped_lock lock(mutex_);
    return calls_;
  }
  [[nodiscard]] int count() const {
    const std::scoped_lock lock(mutex_);
    return static_cast<int>(calls_.size());
  }

 private:
  mutable std::mutex mutex_;
  std::vector<call> calls_;  // guarded by mutex_
};

call begin_call(const sched::task_context& ctx) {
  call c;
  c.id = ctx.info().id;
  c.attempt = ctx.info().attempt;
  c.fire_time = ctx.fire_time();
  c.started = steady_clock::now();
  c.deadline = ctx.cancel().deadline();
  c.payload = ctx.payload();
  return c;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

double ms_between(steady_clock::time_point a, steady_clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// The engine's jitter fraction: a retry delay lies in (d * (1 - jitter), d] (docs/schedules.md).
constexpr double retry_jitter = 0.2;

TEST_F(SchedEngine, OneShotTaskRunsOnceAndSucceeds) {
  test::sched_env env;
  recorder rec;
  sched::scheduler node(env.settings(), env.lane());
  node.handle("once", [&](sched::task_context& ctx) {
    call c = begin_call(ctx);
    ctx.set_detail(R"({"answer": 42})");
    c.finished = steady_clock::now();
    rec.add(c);
    return sched::handler_result::success();
  });
  node.start();

  sched::task_spec spec = test::due_now("once");
  spec.payload = R"({"n": 5})";
  const auto created = steady_clock::now();
  const std::int64_t id = env.store().create(spec);
  ASSERT_TRUE(test::wait_for_state(env.store(), id, task_state::succeeded, 10s))
      << "state " << sched::to_string(env.store().get(id)->state);
  // Nothing runs it again however many cycles pass.
  ASSERT_TRUE(test::wait_for_cycles(node, 3));

  const std::vector<call> calls = rec.calls();
  ASSERT_EQ(calls.size(), 1U);
  EXPECT_EQ(calls[0].id, id);
  EXPECT_EQ(calls[0].attempt, 1);
  EXPECT_EQ(calls[0].payload, R"({"n": 5})");
  // LISTEN/NOTIFY wakes the node: a due task does not wait for the idle poll.
  EXPECT_LT(ms_between(created, calls[0].started), 1500.0);

  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
  ASSERT_EQ(runs.size(), 1U);
  EXPECT_EQ(runs[0].outcome, "succeeded");
  EXPECT_EQ(runs[0].attempt, 1);
  EXPECT_EQ(runs[0].node, node.node_id());
  EXPECT_EQ(runs[0].type, "once");
  EXPECT_FALSE(runs[0].error.has_value());
  ASSERT_TRUE(runs[0].detail.has_value());
  EXPECT_TRUE(contains(*runs[0].detail, "42")) << *runs[0].detail;
  EXPECT_GE(runs[0].finished_at, runs[0].started_at);

  const sched::task t = *env.store().get(id);
  EXPECT_EQ(t.runs, 1);
  EXPECT_FALSE(t.claimed_by.has_value());
  EXPECT_TRUE(t.last_success_at.has_value());
  EXPECT_FALSE(t.last_error.has_value());

  const sched::scheduler_status st = node.status();
  EXPECT_EQ(st.succeeded, 1U);
  EXPECT_EQ(st.claimed, 1U);
  EXPECT_EQ(st.failed, 0U);
  EXPECT_EQ(st.running, 0);
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), 1);
}

// every:1s runs again and again at one-second spacing: three runs within about four seconds,
// fire times exactly one period apart, and the task stays scheduled between runs.
TEST_F(SchedEngine, IntervalTaskRunsEverySecond) {
  test::sched_env env;
  recorder rec;
  sched::scheduler node(env.settings(), env.lane());
  node.handle("tick", [&](sched::task_context& ctx) {
    call c = begin_call(ctx);
    c.finished = steady_clock::now();
    rec.add(c);
    return sched::handler_result::success();
  });
  node.start();

  sched::task_spec spec = test::due_now("tick");
  spec.when = sched::schedule::every(1s);
  const std::int64_t id = env.store().create(spec);
  ASSERT_TRUE(test::eventually([&] { return rec.count() >= 3; }, 4500ms))
      << "only " << rec.count() << " runs in 4.5 s";
  node.stop();

  const std::vector<call> calls = rec.calls();
  for (std::size_t i = 1; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].fire_time - calls[i - 1].fire_time, 1s) << "run " << i;
    const double gap = ms_between(calls[i - 1].started, calls[i].started);
    EXPECT_GT(gap, 700.0) << "run " << i;
    EXPECT_LT(gap, 1600.0) << "run " << i;
  }
  const sched::task t = *env.store().get(id);
  EXPECT_EQ(t.state, task_state::scheduled);
  EXPECT_EQ(t.attempt, 0);
  ASSERT_TRUE(t.next_run_at.has_value());
  EXPECT_EQ(*t.next_run_at, calls.back().fire_time + 1s);
  EXPECT_EQ(t.runs, static_cast<std::int64_t>(calls.size()));
  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
  ASSERT_EQ(runs.size(), calls.size());
  for (std::size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i].outcome, "succeeded");
    EXPECT_EQ(runs[i].fire_time, std::optional<sched::time_point>(calls[i].fire_time));
  }
}

// "* * * * *" is due at the next minute boundary after creation (checked without waiting for
// it), and is not run before.
TEST_F(SchedEngine, CronTaskIsScheduledAtTheNextMinuteBoundary) {
  test::sched_env env;
  std::atomic<int> calls{0};
  sched::scheduler node(env.settings(), env.lane());
  node.handle("minutely", [&](sched::task_context&) {
    ++calls;
    return sched::handler_result::success();
  });
  node.start();

  sched::task_spec spec = test::due_now("minutely");
  spec.when = sched::schedule::cron("* * * * *");
  const sched::time_point before = system_clock::now();
  const std::int64_t id = env.store().create(spec);
  const sched::time_point after = system_clock::now();
  const auto boundary = [](sched::time_point t) {
    return std::chrono::floor<std::chrono::minutes>(t) + std::chrono::minutes(1);
  };
  const sched::task t = *env.store().get(id);
  ASSERT_TRUE(t.next_run_at.has_value());
  EXPECT_TRUE(*t.next_run_at == boundary(before) || *t.next_run_at == boundary(after))
      << sched::format_timestamp(*t.next_run_at) << " for a task created at "
      << sched::format_timestamp(before);
  EXPECT_EQ(t.state, task_state::scheduled);

  if (*t.next_run_at - system_clock::now() > 3s) {
    ASSERT_TRUE(test::wait_for_cycles(node, 3));
    EXPECT_EQ(calls.load(), 0);
    EXPECT_EQ(env.store().get(id)->state, task_state::scheduled);
  }
}

// A failing one-shot task with max_attempts 3 and a 100 ms backoff base: three attempts, each
// at least the backoff's lower bound after the previous one failed, then failed for good with
// the last error kept and one run row per attempt.
TEST_F(SchedEngine, FailingTaskIsRetriedWithBackoffThenFails) {
  static const std::string tricky_tail = ": \"quoted\", back\\slash, {braces}, NULL, \u00fc";
  test::sched_env env;
  recorder rec;
  sched::scheduler node(env.settings(), env.lane());
  node.handle("flaky", [&](sched::task_context& ctx) {
    call c = begin_call(ctx);
    c.finished = steady_clock::now();
    rec.add(c);
    // Characters that mean something in an array literal or JSON travel through the batched
    // completion as they are.
    return sched::handler_result::failure("boom on attempt " + std::to_string(c.attempt) +
                                          tricky_tail);
  });
  node.start();

  sched::task_spec spec = test::due_now("flaky");
  spec.max_attempts = 3;
  spec.backoff_base = 100ms;
  spec.backoff_cap = 10s;
  const std::int64_t id = env.store().create(spec);
  ASSERT_TRUE(test::wait_for_state(env.store(), id, task_state::failed, 15s))
      << "state " << sched::to_string(env.store().get(id)->state) << " after " << rec.count()
      << " calls";
  ASSERT_TRUE(test::wait_for_cycles(node, 3));

  const std::vector<call> calls = rec.calls();
  ASSERT_EQ(calls.size(), 3U);
  for (std::size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(calls[i].attempt, static_cast<int>(i) + 1);
  }
  for (std::size_t i = 1; i < calls.size(); ++i) {
    const double d = 100.0 * static_cast<double>(1U << (i - 1));  // retry i: base * 2^(i-1)
    const double gap = ms_between(calls[i - 1].finished, calls[i].started);
    EXPECT_GE(gap, d * (1.0 - retry_jitter) - 2.0) << "retry " << i;
  }

  const sched::task t = *env.store().get(id);
  ASSERT_TRUE(t.last_error.has_value());
  EXPECT_TRUE(contains(*t.last_error, "boom on attempt 3")) << *t.last_error;
  EXPECT_EQ(t.attempt, 3);
  EXPECT_FALSE(t.claimed_by.has_value());
  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
  ASSERT_EQ(runs.size(), 3U);
  for (std::size_t i = 0; i < runs.size(); ++i) {
    EXPECT_EQ(runs[i].outcome, "failed");
    EXPECT_EQ(runs[i].attempt, static_cast<int>(i) + 1);
    ASSERT_TRUE(runs[i].error.has_value());
    EXPECT_EQ(*runs[i].error, "boom on attempt " + std::to_string(i + 1) + tricky_tail);
  }
  EXPECT_EQ(node.status().failed, 3U);
  EXPECT_EQ(env.store().stats().total("runs_failed"), 3);
}

// every:1s failing every time, two attempts per occurrence, pause_after_failures 2: after the
// first failed occurrence the task is scheduled for its next fire time (not failed), after the
// second it is paused and no longer runs.
TEST_F(SchedEngine, RecurringTaskKeepsItsScheduleAndPausesAfterConsecutiveFailures) {
  test::sched_env env;
  recorder rec;
  sched::scheduler node(env.settings(), env.lane());
  node.handle("nightly", [&](sched::task_context& ctx) {
    call c = begin_call(ctx);
    c.finished = steady_clock::now();
    rec.add(c);
    return sched::handler_result::failure("upstream down");
  });
  node.start();

  sched::task_spec spec = test::due_now("nightly");
  spec.when = sched::schedule::every(1s);
  spec.max_attempts = 2;
  spec.backoff_base = 100ms;
  spec.pause_after_failures = 2;
  const std::int64_t id = env.store().create(spec);

  std::optional<sched::task> between;  // the task seen after one failed occurrence
  ASSERT_TRUE(test::eventually(
      [&] {
        const sched::task t = *env.store().get(id);
        if (t.consecutive_failures == 1 && t.state == task_state::scheduled) between = t;
        return t.state == task_state::paused;
      },
      10s))
      << "state " << sched::to_string(env.store().get(id)->state);
  ASSERT_TRUE(test::wait_for_cycles(node, 3));

  ASSERT_TRUE(between.has_value()) << "never saw the task scheduled after its first failure";
  EXPECT_EQ(between->attempt, 0);
  const std::vector<call> calls = rec.calls();
  ASSERT_EQ(calls.size(), 4U);
  // Two attempts for the first fire time, two for the next one, one period later.
  EXPECT_EQ(calls[0].fire_time, calls[1].fire_time);
  EXPECT_EQ(calls[2].fire_time, calls[3].fire_time);
  EXPECT_EQ(calls[2].fire_time - calls[0].fire_time, 1s);
  EXPECT_EQ(calls[0].attempt, 1);
  EXPECT_EQ(calls[1].attempt, 2);
  EXPECT_EQ(calls[2].attempt, 1);
  EXPECT_EQ(calls[3].attempt, 2);
  ASSERT_TRUE(between->next_run_at.has_value());
  EXPECT_EQ(*between->next_run_at, calls[0].fire_time + 1s);

  const sched::task t = *env.store().get(id);
  EXPECT_EQ(t.state, task_state::paused);
  EXPECT_EQ(t.consecutive_failures, 2);
  EXPECT_FALSE(t.claimed_by.has_value());
  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
  ASSERT_EQ(runs.size(), 4U);
  for (const auto& r : runs)
    EXPECT_EQ(r.outcome, "failed");

  // Resuming clears the failure count.
  node.stop();
  EXPECT_EQ(env.store().resume(id), sched::change_result::done);
  const sched::task resumed = *env.store().get(id);
  EXPECT_EQ(resumed.state, task_state::scheduled);
  EXPECT_EQ(resumed.consecutive_failures, 0);
}

// A handler that honours its cancel token stops at the task's timeout; the run is recorded as
// timed_out and retried per policy.
TEST_F(SchedEngine, TimeoutCancelsTheHandlerAndIsRetried) {
  test::sched_env env;
  recorder rec;
  sched::scheduler node(env.settings(), env.lane());
  node.handle("slow", [&](sched::task_context& ctx) {
    call c = begin_call(ctx);
    const bool finished = ctx.cancel().sleep_for(10s);
    c.finished = steady_clock::now();
    c.cancelled = !finished;
    rec.add(c);
    return finished ? sched::handler_result::success()
                    : sched::handler_result::failure("cancelled");
  });
  node.start();

  sched::task_spec spec = test::due_now("slow");
  spec.timeout = 300ms;
  spec.max_attempts = 2;
  spec.backoff_base = 100ms;
  const std::int64_t id = env.store().create(spec);
  ASSERT_TRUE(test::wait_for_state(env.store(), id, task_state::failed, 10s))
      << "state " << sched::to_string(env.store().get(id)->state) << " after " << rec.count()
      << " calls";

  const std::vector<call> calls = rec.calls();
  ASSERT_EQ(calls.size(), 2U);
  for (const call& c : calls) {
    EXPECT_TRUE(c.cancelled);
    const double ran = ms_between(c.started, c.finished);
    EXPECT_GE(ran, 290.0);
    EXPECT_LT(ran, 1300.0) << "the timeout did not cancel the handler promptly";
    const double deadline = ms_between(c.started, c.deadline);
    EXPECT_GT(deadline, 250.0);
    EXPECT_LT(deadline, 350.0);
  }
  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
  ASSERT_EQ(runs.size(), 2U);
  for (const auto& r : runs)
    EXPECT_EQ(r.outcome, "timed_out");
  EXPECT_EQ(node.status().timed_out, 2U);
  EXPECT_EQ(env.store().stats().total("runs_timed_out"), 2);
}

// The leader prunes on its own: a finished one-shot task past task_retention disappears, a
// recent one and its history stay.
TEST_F(SchedEngine, TheLeaderPrunesFinishedTasksPastTheirRetention) {
  test::sched_env env;
  sched::scheduler_settings settings = env.settings();
  settings.prune_interval = 200ms;
  settings.task_retention = 24h;
  sched::scheduler node(settings, env.lane());
  node.handle("once", [](sched::task_context&) { return sched::handler_result::success(); });

  const std::int64_t old_id = env.store().create(test::due_now("once"));
  env.sql().exec("UPDATE " + env.q("tasks") +
                 " SET state = 'succeeded', next_run_at = NULL,"
                 " updated_at = now() - interval '2 days' WHERE id = " +
                 std::to_string(old_id));
  node.start();
  const std::int64_t new_id = env.store().create(test::due_now("once"));
  ASSERT_TRUE(test::wait_for_state(env.store(), new_id, task_state::succeeded, 10s));
  ASSERT_TRUE(test::eventually([&] { return !env.store().get(old_id).has_value(); }, 10s))
      << "the finished task past its retention is still there";
  EXPECT_TRUE(env.store().get(new_id).has_value());
  EXPECT_EQ(test::runs_oldest_first(env.store(), new_id).size(), 1U);
}

}  // namespace

namespace {

// The largest claim of one cycle, from the cycle log.
std::int64_t largest_claim(test::sched_env& env) {
  return env.scalar("SELECT coalesce(max(claimed), 0)::bigint FROM " + env.q("cycles"));
}

void insert_due(test::sched_env& env, const std::string& type, int n) {
  env.sql().query("INSERT INTO " + env.q("tasks") +
                      " (type, schedule_kind, schedule_spec, next_run_at)"
                      " SELECT $1, 'once', to_char(now() AT TIME ZONE 'UTC',"
                      "   'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), now() FROM generate_series(1, $2)",
                  type, n);
}

// A backlog is claimed in batches that grow while claims come back full (up to max_prefetch),
// not in the handful that prefetch alone allows; with max_prefetch = prefetch no cycle claims
// more than the free workers plus prefetch.
TEST(SchedEnginePrefetch, ClaimsGrowWithTheBacklogUpToMaxPrefetch) {
  ASSERT_TRUE(test::database_available());
  for (const int max_prefetch : {2, 256}) {
    test::sched_env env;
    constexpr int tasks = 3000;
    insert_due(env, "job", tasks);
    sched::scheduler_settings s = env.settings(2);
    s.prefetch = 2;
    s.max_prefetch = max_prefetch;
    sched::scheduler node(s, env.lane());
    node.handle("job", [](sched::task_context&) { return sched::handler_result::success(); });
    node.start();
    const std::string succeeded =
        "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
    ASSERT_TRUE(test::eventually([&] { return env.scalar(succeeded) == tasks; }, 60s, 50ms))
        << env.scalar(succeeded) << " of " << tasks << " with max_prefetch " << max_prefetch;
    node.stop();
    const std::int64_t largest = largest_claim(env);
    if (max_prefetch == 2) {
      EXPECT_LE(largest, 2 + 2) << "claimed more than workers + prefetch in one cycle";
    } else {
      EXPECT_GT(largest, 100) << "the claims did not grow with the backlog";
      EXPECT_LE(largest, 2 + 256);
    }
    EXPECT_EQ(env.store().stats().total("runs_succeeded"), tasks);
  }
}

}  // namespace

namespace {

// stop() returns within its grace even when a handler ignores cancellation: the stuck worker is
// let go (detached) and its task handed back, not waited for.
TEST(SchedEngineStop, StopDoesNotWaitForAHandlerThatIgnoresCancellation) {
  ASSERT_TRUE(test::database_available());
  test::sched_env env;
  sched::scheduler_settings s = env.settings(2);
  s.stop_grace = 300ms;
  s.stuck_grace = 200ms;
  auto release = std::make_shared<std::atomic<bool>>(false);
  auto started = std::make_shared<std::atomic<bool>>(false);
  sched::scheduler node(s, env.lane());
  node.handle("stubborn", [release, started](sched::task_context&) {
    *started = true;
    const auto until = steady_clock::now() + 30s;
    while (!release->load() && steady_clock::now() < until)
      std::this_thread::sleep_for(5ms);  // never looks at the cancel token
    return sched::handler_result::success();
  });
  node.start();
  const std::int64_t id = env.store().create(test::due_now("stubborn"));
  ASSERT_TRUE(test::eventually([&] { return started->load(); }, 10s));
  const auto before = steady_clock::now();
  node.stop();
  const double took = std::chrono::duration<double>(steady_clock::now() - before).count();
  release->store(true);
  EXPECT_LT(took, 10.0) << "stop() waited for a stuck handler";
  const sched::task t = *env.store().get(id);
  EXPECT_NE(t.state, sched::task_state::running) << "the stuck task's claim was not handed back";
  std::this_thread::sleep_for(50ms);  // the detached worker finishes and lets go of the engine
}

}  // namespace

namespace {

// Claims start where the previous claim of their type ended (a watermark, so that they do not
// walk the index entries earlier claims left behind), and a sweep from the head of the queue
// finds what lies before it. During the drain of a large backlog, a task of a higher priority,
// and one due earlier than every task of the backlog, still run long before the backlog ends.
TEST_F(SchedEngine, TasksBeforeTheClaimWatermarkRunDuringABacklog) {
  test::sched_env env;
  constexpr int backlog = 6000;
  // The backlog: due a minute from now, then made due (one statement, one due time).
  sched::task_spec spec = test::due_now("bulk");
  spec.name = "template";
  spec.when = sched::schedule::once(system_clock::now() + 1h);
  const std::int64_t template_id = env.store().create(spec);
  const std::string columns =
      "type, payload, schedule_kind, schedule_spec, timezone, misfire_policy, misfire_grace_s,"
      " catch_up_limit, priority, max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms,"
      " pause_after_failures";
  env.sql().query("INSERT INTO " + env.q("tasks") + " (" + columns +
                      ", state, next_run_at) SELECT " + columns + ", 'scheduled', now() FROM " +
                      env.q("tasks") + " CROSS JOIN generate_series(1, $2) WHERE id = $1",
                  template_id, backlog);
  sched::scheduler_settings s = env.settings(4);
  s.prefetch = 16;
  s.max_prefetch = 16;
  s.claim_batch = 16;
  sched::scheduler node(s, env.lane());
  node.handle("bulk", [](sched::task_context&) {
    std::this_thread::sleep_for(2ms);
    return sched::handler_result::success();
  });
  node.start();
  const std::string done =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE type = 'bulk' AND state = 'succeeded'";
  ASSERT_TRUE(test::eventually([&] { return env.scalar(done) >= 200; }, 30s));

  // Both sort before the watermark: one by priority, one by due time (an hour ago).
  sched::task_spec urgent = test::due_now("bulk");
  urgent.priority = 10;
  const std::int64_t urgent_id = env.store().create(urgent);
  const std::int64_t early_id = env.store().create(test::due_now("bulk"));
  env.sql().query("UPDATE " + env.q("tasks") +
                      " SET next_run_at = now() - interval '1 hour'"
                      " WHERE id = $1",
                  early_id);
  EXPECT_TRUE(test::wait_for_state(env.store(), urgent_id, task_state::succeeded, 30s));
  EXPECT_TRUE(test::wait_for_state(env.store(), early_id, task_state::succeeded, 30s));
  const std::int64_t finished = env.scalar(done);
  EXPECT_LT(finished, backlog / 2) << "the tasks before the watermark waited for the backlog";
  node.stop();
}

}  // namespace

namespace {

// Outcomes not yet written hold their claims: while the completer cannot write (here its counter
// rows are locked by another transaction, as a slow or stuck database would hold it), the node
// stops claiming at workers + prefetch instead of claiming on as workers free up, and everything
// completes once the completer can write again.
TEST_F(SchedEngine, AStalledCompleterHoldsBackTheClaims) {
  test::sched_env env;
  sched::scheduler_settings s = env.settings(4);
  s.prefetch = 4;
  s.max_prefetch = 4;
  sched::scheduler node(s, env.lane());
  node.handle("job", [](sched::task_context&) { return sched::handler_result::success(); });
  node.start();
  // A first batch creates the completer's counter rows (its own stats shard, 16 and up).
  const std::int64_t first = env.store().create(test::due_now("job"));
  ASSERT_TRUE(test::wait_for_state(env.store(), first, task_state::succeeded, 10s));
  ASSERT_TRUE(test::eventually(
      [&] {
        return env.scalar("SELECT count(*) FROM " + env.q("stats") + " WHERE shard >= 16") > 0;
      },
      10s));

  pg::connection blocker = test::test_connect("sluice-test-stall-completer");
  blocker.exec("BEGIN");
  blocker.exec("SELECT * FROM " + env.q("stats") + " WHERE shard >= 16 FOR UPDATE");
  constexpr int total = 500;
  for (int i = 0; i < total; ++i)
    env.store().create(test::due_now("job"));
  const std::string running = "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'running'";
  std::int64_t most = 0;
  const auto until = steady_clock::now() + 2s;
  while (steady_clock::now() < until) {
    most = std::max(most, env.scalar(running));
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_GT(most, 0) << "the node claimed nothing";
  EXPECT_LE(most, s.workers + s.max_prefetch)
      << "claims ran ahead of outcomes that could not be written";
  blocker.exec("COMMIT");
  const std::string done = "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  EXPECT_TRUE(test::eventually([&] { return env.scalar(done) == total + 1; }, 30s))
      << env.scalar(done) << " of " << total + 1 << " succeeded";
  node.stop();
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), total + 1);
}

}  // namespace
