// Fenced completion and shutdown against the real server: a completion whose claim went stale
// (rescued, timed out, or its token bumped) is refused and recorded as 'fenced' without touching
// the task; transactional completion commits the handler's writes and the completion together
// exactly once; stop() lets handlers finish within its grace and hands the others' claims back.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "support/sched_test_env.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;
using sched::task_state;
using std::chrono::steady_clock;

namespace {

class SchedFencing : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

double ms_since(steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(steady_clock::now() - t).count();
}

std::vector<std::string> outcomes_of(const std::vector<sched::task_run>& runs) {
  std::vector<std::string> out;
  for (const auto& r : runs)
    out.push_back(r.outcome);
  return out;
}

// A pool manager with one pool "work" for handlers, named so its connections are this test's.
std::unique_ptr<pool::pool_manager> work_pools(const test::sched_env& env, int size,
                                               int overflow = 0) {
  auto pools = std::make_unique<pool::pool_manager>();
  pools->add(test::test_pool_settings("work", env.app_prefix() + "-work", size, overflow));
  return pools;
}

void create_ledger(test::sched_env& env) {
  env.sql().exec("CREATE TABLE " + env.q("ledger") +
                 " (task_id bigint NOT NULL, node text NOT NULL, at timestamptz DEFAULT now())");
}

// Blocks a handler until the test lets it go (bounded, so a failing test cannot hang).
class gate {
 public:
  void wait_open(const sched::task_context& ctx) {
    entered_ = true;
    const auto until = steady_clock::now() + 20s;
    while (!open_ && steady_clock::now() < until)
      (void)ctx.cancel().sleep_for(5ms);
  }
  void open() { open_ = true; }
  [[nodiscard]] bool entered() const { return entered_; }

 private:
  std::atomic<bool> entered_{false};
  std::atomic<bool> open_{false};
};

// A handler that ignores its cancel token: after timeout + stuck_grace the engine reports it
// stuck, records the run as timed out and retries the task on another worker; when the hung
// handler finally returns, its completion is refused ('fenced') and the task keeps the outcome
// of the retry.
TEST_F(SchedFencing, HandlerIgnoringCancelIsStuckAndItsLateCompletionIsFenced) {
  test::sched_env env;
  std::atomic<bool> hung_returned{false};
  std::atomic<bool> retry_ran_while_hung{false};
  std::atomic<int> calls{0};
  sched::scheduler_settings s = env.settings(/*workers=*/2);
  s.stuck_grace = 500ms;
  sched::scheduler node(s, env.lane());
  node.handle("deaf", [&](sched::task_context& ctx) {
    ++calls;
    if (ctx.info().attempt == 1) {
      std::this_thread::sleep_for(3s);  // deliberately deaf to ctx.cancel()
      hung_returned = true;
    } else if (!hung_returned) {
      retry_ran_while_hung = true;
    }
    return sched::handler_result::success();
  });
  node.start();

  sched::task_spec spec = test::due_now("deaf");
  spec.timeout = 300ms;
  spec.max_attempts = 3;
  spec.backoff_base = 100ms;
  const std::int64_t id = env.store().create(spec);

  ASSERT_TRUE(test::eventually([&] { return node.status().stuck == 1; }, 3s))
      << "stuck = " << node.status().stuck;
  EXPECT_FALSE(hung_returned.load()) << "stuck must be reported while the handler hangs";

  ASSERT_TRUE(test::wait_for_state(env.store(), id, task_state::succeeded, 6s))
      << "state " << sched::to_string(env.store().get(id)->state);
  EXPECT_TRUE(retry_ran_while_hung.load()) << "the retry waited for the stuck handler";

  ASSERT_TRUE(test::eventually(
      [&] {
        return env.scalar("SELECT count(*) FROM " + env.q("task_runs") +
                              " WHERE task_id = $1 AND outcome = 'fenced'",
                          id) == 1;
      },
      8s))
      << "the hung handler's late completion was not recorded as fenced";
  EXPECT_TRUE(test::eventually([&] { return node.status().stuck == 0; }, 2s));

  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
  EXPECT_EQ(outcomes_of(runs), (std::vector<std::string>{"timed_out", "succeeded", "fenced"}));
  if (runs.size() == 3) {
    EXPECT_EQ(runs[0].attempt, 1);
    EXPECT_EQ(runs[1].attempt, 2);
    EXPECT_EQ(runs[2].attempt, 1);
    EXPECT_LT(runs[2].claim_token, runs[1].claim_token);
  }
  const sched::task t = *env.store().get(id);
  EXPECT_EQ(t.state, task_state::succeeded);
  EXPECT_EQ(t.attempt, 2);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(node.status().fenced, 1U);
  const sched::cumulative_stats stats = env.store().stats();
  EXPECT_EQ(stats.total("runs_fenced"), 1);
  EXPECT_EQ(stats.total("runs_timed_out"), 1);
  EXPECT_EQ(stats.total("runs_succeeded"), 1);
}

// The scenario fencing exists for, made deterministic: while the handler runs, the task's
// claim token moves on (as a rescue does). The handler's success is refused and recorded as
// 'fenced', and the task row is left as the rescuer left it.
TEST_F(SchedFencing, StaleCompletionIsRefusedAndRecordedAsFenced) {
  test::sched_env env;
  gate g;
  sched::scheduler node(env.settings(), env.lane());
  node.handle("fenced", [&](sched::task_context& ctx) {
    g.wait_open(ctx);
    return sched::handler_result::success();
  });
  node.start();

  const std::int64_t id = env.store().create(test::due_now("fenced"));
  ASSERT_TRUE(test::eventually([&] { return g.entered(); }, 10s));
  const sched::task claimed = *env.store().get(id);
  ASSERT_EQ(claimed.state, task_state::running);
  EXPECT_EQ(claimed.claimed_by, std::optional<std::string>(node.node_id()));
  const auto bumped =
      env.sql().query("UPDATE " + env.q("tasks") +
                          " SET claim_token = claim_token + 1"
                          " WHERE id = $1 AND state = 'running' RETURNING claim_token",
                      id);
  ASSERT_EQ(bumped.rows(), 1);
  const std::int64_t token = bumped[0].get<std::int64_t>(0);
  g.open();

  ASSERT_TRUE(test::eventually([&] { return node.status().fenced == 1; }, 5s))
      << "fenced = " << node.status().fenced;
  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
  ASSERT_EQ(outcomes_of(runs), std::vector<std::string>{"fenced"});
  EXPECT_EQ(runs[0].claim_token, claimed.claim_token);
  EXPECT_EQ(runs[0].node, node.node_id());
  const sched::task t = *env.store().get(id);
  EXPECT_EQ(t.state, task_state::running);
  EXPECT_EQ(t.claim_token, token);
  EXPECT_EQ(t.runs, 0);
  EXPECT_FALSE(t.last_success_at.has_value());
  EXPECT_EQ(node.status().succeeded, 0U);
  const sched::cumulative_stats stats = env.store().stats();
  EXPECT_EQ(stats.total("runs_fenced"), 1);
  EXPECT_EQ(stats.total("runs_succeeded"), 0);
  EXPECT_EQ(env.scalar("SELECT coalesce(sum(fenced), 0)::bigint FROM " + env.q("cycles")), 1);
}

// The same with transactional completion: complete_in() says the claim is stale, the handler
// rolls its writes back, and nothing of the run reaches the ledger.
TEST_F(SchedFencing, StaleTransactionalCompletionIsRefused) {
  test::sched_env env;
  create_ledger(env);
  auto pools = work_pools(env, 2);
  gate g;
  std::atomic<int> complete_in_answer{-1};
  sched::scheduler node(env.settings(), env.lane(), pools.get());
  const std::string insert = "INSERT INTO " + env.q("ledger") + " (task_id, node) VALUES ($1, $2)";
  node.handle("ledger", [&](sched::task_context& ctx) {
    g.wait_open(ctx);
    pool::lease l = ctx.pools().get("work").acquire();
    pg::transaction tx(*l);
    l->query(insert, ctx.info().id, "in-process");
    const bool ok = ctx.complete_in(*l);
    complete_in_answer = ok ? 1 : 0;
    if (!ok) {
      tx.rollback();
      return sched::handler_result::failure("claim is stale");
    }
    tx.commit();
    return sched::handler_result::success();
  });
  node.start();

  const std::int64_t id = env.store().create(test::due_now("ledger"));
  ASSERT_TRUE(test::eventually([&] { return g.entered(); }, 10s));
  ASSERT_EQ(env.sql()
                .query("UPDATE " + env.q("tasks") +
                           " SET claim_token = claim_token + 1 WHERE id = $1 AND state = 'running'",
                       id)
                .affected_rows(),
            1);
  g.open();

  ASSERT_TRUE(test::eventually([&] { return node.status().fenced == 1; }, 5s));
  EXPECT_EQ(complete_in_answer.load(), 0);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("ledger")), 0);
  EXPECT_EQ(outcomes_of(test::runs_oldest_first(env.store(), id)),
            std::vector<std::string>{"fenced"});
  EXPECT_EQ(env.store().get(id)->state, task_state::running);
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), 0);
}

// Handlers that write a ledger row and complete in the same transaction: exactly one row per
// task, each task succeeded with one run recorded by the handler.
TEST_F(SchedFencing, TransactionalCompletionWritesExactlyOneLedgerRowPerTask) {
  test::sched_env env;
  create_ledger(env);
  auto pools = work_pools(env, 4);
  sched::scheduler node(env.settings(/*workers=*/4), env.lane(), pools.get());
  const std::string insert = "INSERT INTO " + env.q("ledger") + " (task_id, node) VALUES ($1, $2)";
  std::atomic<int> stale{0};
  node.handle("ledger", [&](sched::task_context& ctx) {
    pool::lease l = ctx.pools().get("work").acquire();
    pg::transaction tx(*l);
    l->query(insert, ctx.info().id, "in-process");
    if (!ctx.complete_in(*l)) {
      ++stale;
      tx.rollback();
      return sched::handler_result::failure("claim is stale");
    }
    tx.commit();
    return sched::handler_result::success();
  });
  node.start();

  constexpr int tasks = 50;
  for (int i = 0; i < tasks; ++i)
    (void)env.store().create(test::due_now("ledger"));
  const std::string succeeded =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  ASSERT_TRUE(test::eventually([&] { return env.scalar(succeeded) == tasks; }, 20s))
      << env.scalar(succeeded) << " of " << tasks << " succeeded";
  ASSERT_TRUE(test::wait_for_cycles(node, 2));

  EXPECT_EQ(stale.load(), 0);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("ledger")), tasks);
  EXPECT_EQ(env.scalar("SELECT count(DISTINCT task_id) FROM " + env.q("ledger")), tasks);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("task_runs")), tasks);
  EXPECT_EQ(env.scalar("SELECT count(DISTINCT task_id) FROM " + env.q("task_runs") +
                       " WHERE outcome = 'succeeded' AND recorded_by = 'handler'"),
            tasks);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE runs <> 1"), 0);
  EXPECT_EQ(node.status().succeeded, static_cast<std::uint64_t>(tasks));
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), tasks);
}

// complete_in() succeeded but the handler rolled its transaction back and reported failure: the
// completion never happened, so the failure counts and the task is retried; the retry commits.
TEST_F(SchedFencing, RolledBackTransactionalCompletionCountsAsAFailure) {
  test::sched_env env;
  create_ledger(env);
  auto pools = work_pools(env, 2);
  sched::scheduler node(env.settings(), env.lane(), pools.get());
  const std::string insert = "INSERT INTO " + env.q("ledger") + " (task_id, node) VALUES ($1, $2)";
  node.handle("ledger", [&](sched::task_context& ctx) {
    pool::lease l = ctx.pools().get("work").acquire();
    pg::transaction tx(*l);
    l->query(insert, ctx.info().id, "in-process");
    if (!ctx.complete_in(*l)) return sched::handler_result::failure("claim is stale");
    if (ctx.info().attempt == 1) {
      tx.rollback();
      return sched::handler_result::failure("rolled back on purpose");
    }
    tx.commit();
    return sched::handler_result::success();
  });
  node.start();

  sched::task_spec spec = test::due_now("ledger");
  spec.backoff_base = 100ms;
  const std::int64_t id = env.store().create(spec);
  ASSERT_TRUE(test::wait_for_state(env.store(), id, task_state::succeeded, 10s))
      << "state " << sched::to_string(env.store().get(id)->state);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("ledger")), 1);
  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
  ASSERT_EQ(outcomes_of(runs), (std::vector<std::string>{"failed", "succeeded"}));
  EXPECT_EQ(runs[0].recorded_by, "cycle");
  EXPECT_EQ(runs[1].recorded_by, "handler");
  EXPECT_EQ(env.store().get(id)->attempt, 2);
}

// stop() with a handler that needs 500 ms and a 5 s grace: the handler finishes undisturbed,
// its success is recorded, and the node deregisters.
TEST_F(SchedFencing, GracefulStopLetsARunningHandlerFinish) {
  test::sched_env env;
  std::atomic<bool> started{false};
  std::atomic<bool> cancelled{false};
  sched::scheduler_settings s = env.settings();
  s.stop_grace = 5s;
  sched::scheduler node(s, env.lane());
  node.handle("short", [&](sched::task_context& ctx) {
    started = true;
    if (!ctx.cancel().sleep_for(500ms)) {
      cancelled = true;
      return sched::handler_result::failure("cancelled");
    }
    return sched::handler_result::success();
  });
  node.start();
  const std::int64_t id = env.store().create(test::due_now("short"));
  ASSERT_TRUE(test::eventually([&] { return started.load(); }, 10s));

  const auto t0 = steady_clock::now();
  node.stop();
  const double took = ms_since(t0);
  EXPECT_LT(took, 3000.0);
  EXPECT_FALSE(cancelled.load());
  EXPECT_EQ(node.status().state, sched::scheduler_state::stopped);

  const sched::task t = *env.store().get(id);
  EXPECT_EQ(t.state, task_state::succeeded);
  EXPECT_EQ(outcomes_of(test::runs_oldest_first(env.store(), id)),
            std::vector<std::string>{"succeeded"});
  bool found = false;
  for (const sched::node_info& n : env.store().nodes()) {
    if (n.id != node.node_id()) continue;
    found = true;
    EXPECT_EQ(n.state, "stopped");
    EXPECT_FALSE(n.alive);
  }
  EXPECT_TRUE(found);
  EXPECT_NE(env.store().leader(), std::optional<std::string>(node.node_id()));
  node.stop();  // idempotent
}

// stop() with a 200 ms grace and a handler that would run 10 s but honours cancellation:
// stop() returns within about a second and the task is claimable again at once (not left
// running, not charged a failed attempt: a stop is not the task's fault), so another node
// runs it.
TEST_F(SchedFencing, GracefulStopCancelsAndHandsTheClaimBack) {
  test::sched_env env;
  std::atomic<bool> started{false};
  sched::scheduler_settings s = env.settings();
  s.stop_grace = 200ms;
  auto node = std::make_unique<sched::scheduler>(s, env.lane());
  node->handle("long", [&](sched::task_context& ctx) {
    started = true;
    if (!ctx.cancel().sleep_for(10s)) return sched::handler_result::failure("cancelled");
    return sched::handler_result::success();
  });
  node->start();
  sched::task_spec spec = test::due_now("long");
  spec.max_attempts = 1;  // a stop must not use up the task's only attempt
  const std::int64_t id = env.store().create(spec);
  ASSERT_TRUE(test::eventually([&] { return started.load(); }, 10s));

  const auto t0 = steady_clock::now();
  node->stop();
  const double took = ms_since(t0);
  EXPECT_LT(took, 1500.0);
  const auto stopped_at = std::chrono::system_clock::now();

  const sched::task t = *env.store().get(id);
  EXPECT_TRUE(t.state == task_state::available || t.state == task_state::retryable)
      << "state " << sched::to_string(t.state);
  EXPECT_FALSE(t.claimed_by.has_value());
  ASSERT_TRUE(t.next_run_at.has_value());
  EXPECT_LE(*t.next_run_at, stopped_at + 100ms) << "the claim was not handed back for at once";
  node.reset();

  // Another node takes it.
  std::atomic<int> second_calls{0};
  sched::scheduler other(env.settings(), env.lane());
  other.handle("long", [&](sched::task_context&) {
    ++second_calls;
    return sched::handler_result::success();
  });
  other.start();
  EXPECT_TRUE(test::wait_for_state(env.store(), id, task_state::succeeded, 5s))
      << "state " << sched::to_string(env.store().get(id)->state);
  EXPECT_EQ(second_calls.load(), 1);
}

}  // namespace

namespace {

// A claim whose COMMIT outcome the node never learned (the connection died during COMMIT)
// leaves a task 'running' under a node that is alive and heartbeating, so no rescue would ever
// take it. After a failed cycle the node compares the claims it holds in the database with the
// tasks it knows and hands the orphans back; the task then runs once. The orphan is made by
// hand (the state a lost COMMIT leaves) and the failed cycle by a constraint that refuses the
// cycle's log row.
TEST_F(SchedFencing, OrphanedClaimOfALiveNodeIsHandedBackAfterAFailedCycle) {
  test::sched_env env;
  sched::scheduler node(env.settings(), env.lane());
  std::atomic<int> calls{0};
  node.handle("job", [&](sched::task_context&) {
    ++calls;
    return sched::handler_result::success();
  });
  node.start();
  ASSERT_TRUE(test::wait_for_cycles(node, 1));

  sched::task_spec spec = test::due_now("job");
  spec.when = sched::schedule::once(std::chrono::system_clock::now() + 1h);
  const std::int64_t id = env.store().create(spec);
  env.sql().query("UPDATE " + env.q("tasks") +
                      " SET state = 'running', claimed_by = $2, claimed_at = now(), attempt = 1,"
                      " claimed_incarnation = (SELECT incarnation FROM " +
                      env.q("nodes") +
                      " WHERE id = $2),"
                      " claim_token = claim_token + 1, lease_until = now() + interval '1 hour',"
                      " next_run_at = now() WHERE id = $1",
                  id, node.node_id());

  // Nothing frees it while cycles succeed: its node is alive.
  const auto errors_before = node.status().cycle_errors;
  node.wake();
  ASSERT_TRUE(test::wait_for_cycles(node, 2));
  EXPECT_EQ(env.store().get(id)->state, task_state::running);
  EXPECT_EQ(calls.load(), 0);

  env.sql().exec("ALTER TABLE " + env.q("cycles") +
                 " ADD CONSTRAINT refuse_cycles CHECK (false) NOT VALID");
  node.wake();
  ASSERT_TRUE(test::eventually([&] { return node.status().cycle_errors > errors_before; }, 10s));
  env.sql().exec("ALTER TABLE " + env.q("cycles") + " DROP CONSTRAINT refuse_cycles");
  node.wake();

  ASSERT_TRUE(test::wait_for_state(env.store(), id, task_state::succeeded, 10s))
      << "state " << sched::to_string(env.store().get(id)->state);
  EXPECT_EQ(calls.load(), 1);
  const sched::task t = *env.store().get(id);
  EXPECT_FALSE(t.claimed_by.has_value());
  EXPECT_EQ(outcomes_of(test::runs_oldest_first(env.store(), id)),
            std::vector<std::string>{"succeeded"});
  node.stop();
}

}  // namespace
