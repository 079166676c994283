// The sql handler against the real server: bound parameters of every JSON kind, rows affected,
// SQLSTATEs of failing statements (also as the engine records them), and a long statement
// stopped by the task's token or deadline within about a second, leaving the pool's connection
// usable.

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "sluice/pool/manager.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "support/pg_test_env.hpp"
#include "support/sched_test_env.hpp"

namespace pool = sluice::pool;
namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using testing::HasSubstr;
using testing::StartsWith;

namespace {

class HandlersSql : public testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    app_ = "sluice-test-sqlh-" + test::unique_suffix();
    // One connection, so "the pool's connection is still usable" is about that very connection.
    platform_ = &pools_.add(test::test_pool_settings("platform", app_, 1, 0));
    conn_ = test::test_connect("sluice-test-sqlh-fixture");
    schema_.use(conn_);
    conn_.exec(
        "CREATE TABLE items (id int PRIMARY KEY, name text, flag boolean, score numeric, "
        "doc jsonb, tags jsonb, big numeric)");
  }

  struct outcome {
    sched::handler_result result;
    nlohmann::json detail;
    milliseconds elapsed{};
  };

  outcome run(const nlohmann::json& payload, milliseconds timeout = 30s,
              const std::function<void(sched::cancel_token&)>& while_running = {}) {
    sched::task t;
    t.id = 1;
    t.type = "sql";
    t.payload = payload.dump();
    sched::cancel_token token;
    const auto started = steady_clock::now();
    token.set_deadline(started + timeout);
    std::thread helper;
    if (while_running) helper = std::thread([&] { while_running(token); });
    sched::task_context ctx(t, std::chrono::system_clock::now(), token, &pools_,
                            [](sluice::pg::connection&) { return false; });
    outcome o;
    o.result = sched::make_sql_handler()(ctx);
    o.elapsed = std::chrono::duration_cast<milliseconds>(steady_clock::now() - started);
    if (helper.joinable()) helper.join();
    o.detail = ctx.detail().empty() ? nlohmann::json() : nlohmann::json::parse(ctx.detail());
    return o;
  }

  // Waits until the pool's connection is running a pg_sleep; pg_stat_activity is the only signal.
  bool sleeping(milliseconds timeout) {
    sluice::pg::connection observer = test::test_connect("sluice-test-sqlh-observer");
    return test::eventually(
        [&] {
          return observer
                     .query(
                         "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                         "AND state = 'active' AND query LIKE '%pg_sleep%'",
                         app_)
                     .one<std::int64_t>() == 1;
        },
        timeout, 10ms);
  }

  std::string q(const std::string& object) const { return schema_.qualified(object); }

  test::scoped_schema schema_{"sluice_sqlh"};
  pool::pool_manager pools_;
  pool::pool* platform_ = nullptr;
  std::string app_;
  sluice::pg::connection conn_;
};

}  // namespace

TEST_F(HandlersSql, BindsParamsAndReportsRowsAffected) {
  auto o = run(
      {{"pool", "platform"},
       {"sql", "INSERT INTO " + q("items") +
                   " (id, name, flag, score, doc, tags, big) VALUES ($1, $2, $3, $4, $5, "
                   "$6, $7)"},
       {"params",
        {1, "it's; DROP TABLE x", true, 2.5, {{"k", "v"}}, {"a", "b"}, 18446744073709551615ULL}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["rows_affected"], 1);
  EXPECT_EQ(o.detail["rows"], 0);
  o = run({{"pool", "platform"},
           {"sql", "INSERT INTO " + q("items") + " (id, flag) VALUES ($1, $2)"},
           {"params", {2, nullptr}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;

  const auto row = conn_.query(
      "SELECT name, flag, score::text, doc->>'k', tags->>1, big::text, "
      "(SELECT flag IS NULL FROM items WHERE id = 2) FROM items WHERE id = 1");
  ASSERT_EQ(row.rows(), 1);
  EXPECT_EQ(row[0].get<std::string>(0), "it's; DROP TABLE x");
  EXPECT_TRUE(row[0].get<bool>(1));
  EXPECT_EQ(row[0].get<std::string>(2), "2.5");
  EXPECT_EQ(row[0].get<std::string>(3), "v");
  EXPECT_EQ(row[0].get<std::string>(4), "b");
  EXPECT_EQ(row[0].get<std::string>(5), "18446744073709551615");
  EXPECT_TRUE(row[0].get<bool>(6));

  o = run({{"pool", "platform"},
           {"sql", "UPDATE " + q("items") + " SET name = $2 WHERE id >= $1"},
           {"params", {1, "renamed"}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["rows_affected"], 2);

  o = run({{"pool", "platform"}, {"sql", "SELECT id FROM " + q("items") + " ORDER BY id"}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["rows"], 2);
  EXPECT_EQ(o.detail["rows_affected"], 2);  // PQcmdTuples counts SELECTed rows too
}

TEST_F(HandlersSql, AFailingStatementReportsItsSqlstate) {
  const std::string insert = "INSERT INTO " + q("items") + " (id) VALUES ($1)";
  ASSERT_TRUE(run({{"pool", "platform"}, {"sql", insert}, {"params", {7}}}).result.ok);
  auto o = run({{"pool", "platform"}, {"sql", insert}, {"params", {7}}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error,
              StartsWith("SQLSTATE 23505: duplicate key value violates unique constraint"));
  EXPECT_EQ(o.detail, nlohmann::json({{"sqlstate", "23505"}}));

  o = run({{"pool", "platform"}, {"sql", "SELECT * FROM no_such_table_here"}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, StartsWith("SQLSTATE 42P01: relation \"no_such_table_here\""));

  // The extended protocol takes one statement: no piggy-backed second one.
  o = run({{"pool", "platform"}, {"sql", "SELECT 1; SELECT 2"}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, StartsWith("SQLSTATE 42601: "));

  // The connection survived every one of them.
  EXPECT_TRUE(run({{"pool", "platform"}, {"sql", "SELECT 1"}}).result.ok);
  EXPECT_EQ(platform_->stats().connects, 1U);
}

TEST_F(HandlersSql, AnUnknownPoolIsAFailure) {
  const auto o = run({{"pool", "reports"}, {"sql", "SELECT 1"}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error, "no pool named 'reports' (pools: platform)");
}

TEST_F(HandlersSql, CancellingTheTokenStopsTheStatementAndTheConnectionStaysUsable) {
  steady_clock::time_point cancelled_at{};
  const auto o = run({{"pool", "platform"}, {"sql", "SELECT pg_sleep(30)"}}, 60s,
                     [&](sched::cancel_token& token) {
                       EXPECT_TRUE(sleeping(10s));
                       cancelled_at = steady_clock::now();
                       token.cancel();
                     });
  const auto finished_at = steady_clock::now();
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error,
            "SQLSTATE 57014: canceling statement due to user request (the task was cancelled)");
  EXPECT_EQ(o.detail["sqlstate"], "57014");
  EXPECT_LT(finished_at - cancelled_at, 1s);

  const auto after = run({{"pool", "platform"}, {"sql", "SELECT 1"}});
  EXPECT_TRUE(after.result.ok) << after.result.error;
  const pool::pool_stats stats = platform_->stats();
  EXPECT_EQ(stats.connects, 1U);  // the same connection, not a replacement
  EXPECT_EQ(stats.invalidations, 0U);
}

TEST_F(HandlersSql, TheDeadlineStopsTheStatementWithoutTheEngine) {
  const milliseconds timeout = 500ms;
  const auto o = run({{"pool", "platform"}, {"sql", "SELECT pg_sleep(30)"}}, timeout);
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, StartsWith("SQLSTATE 57014: "));
  EXPECT_THAT(o.result.error, HasSubstr("(the task timed out)"));
  EXPECT_GE(o.elapsed, timeout);
  EXPECT_LT(o.elapsed, timeout + 1s);
  EXPECT_TRUE(run({{"pool", "platform"}, {"sql", "SELECT 1"}}).result.ok);
  EXPECT_EQ(platform_->stats().connects, 1U);
}

// Through the engine: the run row carries the handler's error and detail, and a timed-out
// statement is stopped by the engine's cancellation.
TEST_F(HandlersSql, TheEngineRecordsSqlstateAndTimesOutLongStatements) {
  test::sched_env env;
  sched::scheduler node(env.settings(), env.lane(), &pools_);
  node.handle("sql", sched::make_sql_handler());
  node.start();

  const std::string insert = "INSERT INTO " + q("items") + " (id) VALUES (1)";
  conn_.exec(insert);
  sched::task_spec dup = test::due_now("sql");
  dup.payload = nlohmann::json({{"pool", "platform"}, {"sql", insert}}).dump();
  dup.max_attempts = 1;
  const std::int64_t dup_id = env.store().create(dup);

  sched::task_spec slow = test::due_now("sql");
  slow.payload = nlohmann::json({{"pool", "platform"}, {"sql", "SELECT pg_sleep(30)"}}).dump();
  slow.max_attempts = 1;
  slow.timeout = 1s;
  const auto slow_created = steady_clock::now();
  const std::int64_t slow_id = env.store().create(slow);
  node.wake();

  ASSERT_TRUE(test::wait_for_state(env.store(), dup_id, sched::task_state::failed, 20s));
  auto runs = test::runs_oldest_first(env.store(), dup_id);
  ASSERT_EQ(runs.size(), 1U);
  EXPECT_EQ(runs[0].outcome, "failed");
  ASSERT_TRUE(runs[0].error);
  EXPECT_THAT(*runs[0].error, StartsWith("SQLSTATE 23505: "));
  ASSERT_TRUE(runs[0].detail);
  EXPECT_EQ(nlohmann::json::parse(*runs[0].detail)["sqlstate"], "23505");

  ASSERT_TRUE(test::wait_for_state(env.store(), slow_id, sched::task_state::failed, 20s));
  // A timeout of 1 s plus the engine's own pace, far from the 30 s the statement asked for.
  EXPECT_LT(steady_clock::now() - slow_created, 10s);
  runs = test::runs_oldest_first(env.store(), slow_id);
  ASSERT_EQ(runs.size(), 1U);
  // The engine cancels the token at the deadline and the handler's watchdog acts at the
  // deadline too; the engine calls the run timed_out only when its cancellation came first.
  EXPECT_THAT(runs[0].outcome, testing::AnyOf("timed_out", "failed"));
  ASSERT_TRUE(runs[0].error);
  EXPECT_THAT(*runs[0].error, StartsWith("SQLSTATE 57014: "));
  node.stop();

  EXPECT_TRUE(run({{"pool", "platform"}, {"sql", "SELECT 1"}}).result.ok);
  EXPECT_EQ(platform_->stats().connects, 1U);
}

// ---- "transactional": true --------------------------------------------------------------------

namespace {

// Runs the handler on a context whose transactional completion answers `claim_valid` and
// records on which backend it was asked (it must be the statement's own connection).
sched::handler_result run_transactional(pool::pool_manager& pools, const nlohmann::json& payload,
                                        std::int64_t task_id, bool claim_valid,
                                        int* completion_backend) {
  sched::task t;
  t.id = task_id;
  t.type = "sql";
  t.payload = payload.dump();
  sched::cancel_token token;
  token.set_deadline(steady_clock::now() + 30s);
  sched::task_context ctx(t, std::chrono::system_clock::now(), token, &pools,
                          [&](sluice::pg::connection& c) {
                            *completion_backend = c.query("SELECT pg_backend_pid()").one<int>();
                            return claim_valid;
                          });
  return sched::make_sql_handler()(ctx);
}

}  // namespace

TEST_F(HandlersSql, TransactionalCommitsTheStatementWithTheCompletion) {
  conn_.exec("CREATE TABLE " + q("ledger") + " (task_id bigint UNIQUE, backend int)");
  const nlohmann::json payload = {
      {"pool", "platform"},
      {"transactional", true},
      {"sql", "INSERT INTO " + q("ledger") +
                  " VALUES (current_setting('sluice.task_id')::bigint, pg_backend_pid())"}};
  int backend = 0;
  const auto ok = run_transactional(pools_, payload, 4242, true, &backend);
  ASSERT_TRUE(ok.ok) << ok.error;
  EXPECT_EQ(conn_.query("SELECT count(*) FROM " + q("ledger") + " WHERE task_id = 4242")
                .one<std::int64_t>(),
            1);
  // The completion ran on the statement's connection (inside its transaction).
  EXPECT_EQ(conn_.query("SELECT backend FROM " + q("ledger")).one<int>(), backend);
  // The setting was local to that transaction.
  EXPECT_EQ(run({{"pool", "platform"},
                 {"sql",
                  "SELECT 1 WHERE coalesce(current_setting('sluice.task_id', true), '') "
                  "= ''"}})
                .detail["rows"],
            1);
}

TEST_F(HandlersSql, TransactionalRollsBackWhenTheClaimIsStale) {
  conn_.exec("CREATE TABLE " + q("ledger") + " (task_id bigint UNIQUE)");
  const nlohmann::json payload = {
      {"pool", "platform"},
      {"transactional", true},
      {"sql",
       "INSERT INTO " + q("ledger") + " VALUES (current_setting('sluice.task_id')::bigint)"}};
  int backend = 0;
  const auto stale = run_transactional(pools_, payload, 7, false, &backend);
  EXPECT_FALSE(stale.ok);
  EXPECT_THAT(stale.error, HasSubstr("stale"));
  EXPECT_EQ(conn_.query("SELECT count(*) FROM " + q("ledger")).one<std::int64_t>(), 0);
  // The connection came back outside any transaction and works.
  EXPECT_TRUE(run({{"pool", "platform"}, {"sql", "SELECT 1"}}).result.ok);
  EXPECT_EQ(platform_->stats().connects, 1U);
}

TEST_F(HandlersSql, TransactionalRejectsANonBooleanFlag) {
  const auto r = run({{"pool", "platform"}, {"transactional", "yes"}, {"sql", "SELECT 1"}});
  EXPECT_FALSE(r.result.ok);
  EXPECT_THAT(r.result.error, HasSubstr("transactional"));
}

// Through the engine: the ledger row and the succeeded run exist together, once per task, and a
// failing statement leaves neither (the retry then succeeds once).
TEST_F(HandlersSql, TheEngineCompletesTransactionalTasksExactlyOnce) {
  conn_.exec("CREATE TABLE " + q("ledger") + " (task_id bigint UNIQUE)");
  test::sched_env env;
  sched::scheduler node(env.settings(), env.lane(), &pools_);
  node.handle("sql", sched::make_sql_handler());
  node.start();

  std::vector<std::int64_t> ids;
  for (int i = 0; i < 20; ++i) {
    sched::task_spec s = test::due_now("sql");
    s.payload = nlohmann::json({{"pool", "platform"},
                                {"transactional", true},
                                {"sql", "INSERT INTO " + q("ledger") +
                                            " VALUES (current_setting('sluice.task_id')::bigint)"}})
                    .dump();
    ids.push_back(env.store().create(s));
  }
  // Fails on its first attempt (the row it needs is missing), succeeds on the retry.
  sched::task_spec flaky = test::due_now("sql");
  flaky.payload = nlohmann::json({{"pool", "platform"},
                                  {"transactional", true},
                                  {"sql", "INSERT INTO " + q("ledger") +
                                              " SELECT current_setting('sluice.task_id')::bigint"
                                              " WHERE 1 / (SELECT count(*) FROM " +
                                              q("items") + ") = 1"}})
                      .dump();
  flaky.max_attempts = 1000;
  flaky.backoff_base = 200ms;
  flaky.backoff_cap = 200ms;
  const std::int64_t flaky_id = env.store().create(flaky);
  node.wake();

  for (const auto id : ids)
    ASSERT_TRUE(test::wait_for_state(env.store(), id, sched::task_state::succeeded, 20s));
  ASSERT_TRUE(test::wait_for_state(env.store(), flaky_id, sched::task_state::retryable, 20s));
  EXPECT_EQ(conn_.query("SELECT count(*) FROM " + q("ledger") + " WHERE task_id = $1", flaky_id)
                .one<std::int64_t>(),
            0);
  conn_.exec("INSERT INTO " + q("items") + " (id) VALUES (1)");
  ASSERT_TRUE(test::wait_for_state(env.store(), flaky_id, sched::task_state::succeeded, 20s));
  node.stop();

  EXPECT_EQ(conn_.query("SELECT count(*) FROM " + q("ledger")).one<std::int64_t>(), 21);
  for (const auto id : ids) {
    const auto runs = test::runs_oldest_first(env.store(), id);
    ASSERT_EQ(runs.size(), 1U);
    EXPECT_EQ(runs[0].outcome, "succeeded");
  }
  const auto flaky_runs = test::runs_oldest_first(env.store(), flaky_id);
  ASSERT_GE(flaky_runs.size(), 2U);
  EXPECT_EQ(flaky_runs.front().outcome, "failed");
  EXPECT_EQ(flaky_runs.back().outcome, "succeeded");
}
