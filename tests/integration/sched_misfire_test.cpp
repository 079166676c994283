// What a node does with recurring tasks whose fire times passed while no node ran (misfire
// policies), and that a restarted node neither loses nor repeats work: the cycle log and the
// cumulative stats agree with the run history, and pruning history leaves the stats alone.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/sched/schedule.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "support/sched_test_env.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;
using sched::task_state;
using std::chrono::system_clock;

namespace {

class SchedMisfire : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

struct outage_result {
  sched::time_point scheduled_at;        // the stored next_run_at found after the outage
  std::vector<sched::time_point> fires;  // fire times the handler ran for
  sched::task task;
  std::int64_t cycles_skipped = 0;
  std::uint64_t status_skipped = 0;
  std::int64_t run_rows = 0;
};

// An every:1m task whose next_run_at is 10 min 30 s in the past, as after an outage: eleven
// fire times are due and the most recent is 30 s old, beyond the 10 s grace. A node starts and
// handles it until it is scheduled in the future again with `expected_runs` runs done.
outage_result run_after_outage(sched::misfire_policy policy, int catch_up_limit,
                               int expected_runs) {
  test::sched_env env;
  std::mutex mutex;
  std::vector<sched::time_point> fires;  // guarded by mutex
  sched::scheduler node(env.settings(), env.lane());
  node.handle("hourly.report", [&](sched::task_context& ctx) {
    const std::scoped_lock lock(mutex);
    fires.push_back(ctx.fire_time());
    return sched::handler_result::success();
  });

  sched::task_spec spec = test::due_now("hourly.report");
  spec.when = sched::schedule::every(1min);
  spec.misfire = policy;
  spec.misfire_grace = 10s;
  spec.catch_up_limit = catch_up_limit;
  const std::int64_t id = env.store().create(spec);
  outage_result r;
  r.scheduled_at = env.sql()
                       .query("UPDATE " + env.q("tasks") +
                                  " SET next_run_at = now() - interval '10 minutes 30 seconds'"
                                  " WHERE id = $1 RETURNING next_run_at",
                              id)
                       .one<sched::time_point>();

  node.start();
  const bool settled = test::eventually(
      [&] {
        const sched::task t = *env.store().get(id);
        std::size_t n = 0;
        {
          const std::scoped_lock lock(mutex);
          n = fires.size();
        }
        return t.state == task_state::scheduled && t.next_run_at &&
               *t.next_run_at > system_clock::now() && n >= static_cast<std::size_t>(expected_runs);
      },
      10s);
  EXPECT_TRUE(settled) << "the task did not settle with " << expected_runs << " runs";
  EXPECT_TRUE(test::wait_for_cycles(node, 3));
  node.stop();

  {
    const std::scoped_lock lock(mutex);
    r.fires = fires;
  }
  r.task = *env.store().get(id);
  r.cycles_skipped = env.scalar("SELECT coalesce(sum(skipped), 0)::bigint FROM " + env.q("cycles"));
  r.status_skipped = node.status().skipped;
  r.run_rows = env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE task_id = $1", id);
  return r;
}

TEST_F(SchedMisfire, CoalesceRunsOnceForTheMostRecentFireThenResumes) {
  const outage_result r = run_after_outage(sched::misfire_policy::coalesce, 10, 1);
  ASSERT_EQ(r.fires.size(), 1U);
  EXPECT_EQ(r.fires[0], r.scheduled_at + 10min);
  EXPECT_EQ(r.run_rows, 1);
  ASSERT_TRUE(r.task.next_run_at.has_value());
  EXPECT_EQ(*r.task.next_run_at, r.scheduled_at + 11min);
  EXPECT_EQ(r.cycles_skipped, 10);
  EXPECT_EQ(r.status_skipped, 10U);
}

TEST_F(SchedMisfire, CatchUpRunsTheMostRecentMissedFiresUpToItsLimit) {
  const outage_result r = run_after_outage(sched::misfire_policy::catch_up, 3, 3);
  ASSERT_EQ(r.fires.size(), 3U);
  EXPECT_EQ(r.fires[0], r.scheduled_at + 8min);
  EXPECT_EQ(r.fires[1], r.scheduled_at + 9min);
  EXPECT_EQ(r.fires[2], r.scheduled_at + 10min);
  EXPECT_EQ(r.run_rows, 3);
  ASSERT_TRUE(r.task.next_run_at.has_value());
  EXPECT_EQ(*r.task.next_run_at, r.scheduled_at + 11min);
  EXPECT_EQ(r.cycles_skipped, 8);
}

TEST_F(SchedMisfire, SkipRunsNothingWhenTheMostRecentFireIsPastItsGrace) {
  const outage_result r = run_after_outage(sched::misfire_policy::skip, 10, 0);
  EXPECT_TRUE(r.fires.empty());
  EXPECT_EQ(r.run_rows, 0);
  ASSERT_TRUE(r.task.next_run_at.has_value());
  EXPECT_EQ(*r.task.next_run_at, r.scheduled_at + 11min);
  EXPECT_GT(r.cycles_skipped, 0);
  EXPECT_EQ(r.cycles_skipped, 11);
  EXPECT_EQ(r.status_skipped, 11U);
}

// The handlers of the restart test: "ok" succeeds, "bad" fails, "tx" completes in its own
// transaction. Counts calls.
struct restart_handlers {
  std::atomic<int> calls{0};
  void install(sched::scheduler& node) {
    node.handle("ok", [this](sched::task_context&) {
      ++calls;
      return sched::handler_result::success();
    });
    node.handle("bad", [this](sched::task_context&) {
      ++calls;
      return sched::handler_result::failure("always fails");
    });
    node.handle("tx", [this](sched::task_context& ctx) {
      ++calls;
      pool::lease l = ctx.pools().get("work").acquire();
      pg::transaction tx(*l);
      if (!ctx.complete_in(*l)) return sched::handler_result::failure("claim is stale");
      tx.commit();
      return sched::handler_result::success();
    });
  }
};

std::map<std::string, std::int64_t> count_by(test::sched_env& env, const std::string& sql) {
  std::map<std::string, std::int64_t> out;
  for (const auto row : env.sql().exec(sql)) {
    out[row.get<std::string>(0)] = row.get<std::int64_t>(1);
  }
  return out;
}

// "type/state: n, ..." for failure messages.
std::string breakdown(test::sched_env& env) {
  std::string out;
  for (const auto row : env.sql().exec("SELECT type || '/' || state, count(*) FROM " +
                                       env.q("tasks") + " GROUP BY 1 ORDER BY 1")) {
    out += std::string(row.text(0)) + ": " + std::string(row.text(1)) + ", ";
  }
  return out;
}

// Run a mixed batch with one node, stop it, start another on the same schema: nothing runs
// again. The cycle log's succeeded column adds up to the runs the cycles recorded; the stats
// equal the run history per outcome and type; deleting history (as pruning does) leaves the
// stats as they were.
TEST_F(SchedMisfire, RestartRepeatsNothingAndStatsMatchHistoryAfterPruning) {
  test::sched_env env;
  auto pools = std::make_unique<pool::pool_manager>();
  pools->add(test::test_pool_settings("work", env.app_prefix() + "-work", 2, 0));

  constexpr int ok_tasks = 120, bad_tasks = 10, tx_tasks = 20;
  {
    restart_handlers h;
    sched::scheduler first(env.settings(), env.lane(), pools.get());
    h.install(first);
    first.start();
    for (int i = 0; i < ok_tasks; ++i)
      (void)env.store().create(test::due_now("ok"));
    for (int i = 0; i < tx_tasks; ++i)
      (void)env.store().create(test::due_now("tx"));
    for (int i = 0; i < bad_tasks; ++i) {
      sched::task_spec spec = test::due_now("bad");
      spec.max_attempts = 2;
      spec.backoff_base = 50ms;
      (void)env.store().create(spec);
    }
    const std::string final_count =
        "SELECT count(*) FROM " + env.q("tasks") + " WHERE state IN ('succeeded', 'failed')";
    ASSERT_TRUE(test::eventually(
        [&] { return env.scalar(final_count) == ok_tasks + bad_tasks + tx_tasks; }, 30s))
        << env.scalar(final_count) << " tasks final: " << breakdown(env);
    first.stop();
    EXPECT_EQ(h.calls.load(), ok_tasks + tx_tasks + 2 * bad_tasks);
  }
  const std::int64_t runs_before = env.scalar("SELECT count(*) FROM " + env.q("task_runs"));
  EXPECT_EQ(runs_before, ok_tasks + tx_tasks + 2 * bad_tasks);

  {
    restart_handlers h;
    sched::scheduler second(env.settings(), env.lane(), pools.get());
    h.install(second);
    second.start();
    ASSERT_TRUE(test::wait_for_cycles(second, 5));
    second.stop();
    EXPECT_EQ(h.calls.load(), 0);
  }
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("task_runs")), runs_before);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'"),
            ok_tasks + tx_tasks);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'failed'"),
            bad_tasks);

  // The cycle log agrees with the runs the cycles recorded.
  EXPECT_EQ(env.scalar("SELECT coalesce(sum(succeeded), 0)::bigint FROM " + env.q("cycles")),
            env.scalar("SELECT count(*) FROM " + env.q("task_runs") +
                       " WHERE recorded_by = 'cycle' AND outcome = 'succeeded'"));
  EXPECT_EQ(env.scalar("SELECT coalesce(sum(failed), 0)::bigint FROM " + env.q("cycles")),
            env.scalar("SELECT count(*) FROM " + env.q("task_runs") +
                       " WHERE recorded_by = 'cycle' AND outcome = 'failed'"));
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE recorded_by = 'handler'"),
      tx_tasks);

  // The stats agree with the run history, per outcome and per type.
  const sched::cumulative_stats stats = env.store().stats();
  const auto by_outcome =
      count_by(env, "SELECT outcome, count(*) FROM " + env.q("task_runs") + " GROUP BY outcome");
  for (const char* outcome : {"succeeded", "failed", "timed_out", "rescued", "fenced"}) {
    const auto it = by_outcome.find(outcome);
    EXPECT_EQ(stats.total(std::string("runs_") + outcome), it == by_outcome.end() ? 0 : it->second)
        << outcome;
  }
  const auto succeeded_by_type = count_by(env, "SELECT type, count(*) FROM " + env.q("task_runs") +
                                                   " WHERE outcome = 'succeeded' GROUP BY type");
  const auto stat_types = stats.by_type.find("runs_succeeded");
  ASSERT_NE(stat_types, stats.by_type.end());
  EXPECT_EQ(stat_types->second, succeeded_by_type);
  EXPECT_EQ(stats.total("claimed"),
            env.scalar("SELECT coalesce(sum(claimed), 0)::bigint FROM " + env.q("cycles")));
  EXPECT_EQ(stats.total("claimed"), ok_tasks + tx_tasks + 2 * bad_tasks);

  // Pruning history leaves the cumulative counters alone.
  env.sql().exec("DELETE FROM " + env.q("task_runs"));
  env.sql().exec("DELETE FROM " + env.q("cycles"));
  const sched::cumulative_stats after = env.store().stats();
  EXPECT_EQ(after.totals, stats.totals);
  EXPECT_EQ(after.by_type, stats.by_type);
}

}  // namespace
