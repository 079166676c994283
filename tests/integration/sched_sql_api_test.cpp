// The SQL API of schema version 4 (sql/migrations/004_sql_api.sql) against the real server:
// add_task writes a task the store and the engine read as the HTTP API would have written it,
// inside the caller's transaction; bad fields fail with the API's message and a SQLSTATE; the
// bulk form takes 1,000 tasks in one call; racing producers on one unique_key create one task;
// and the sluice_producer role can add tasks but cannot read or change the table.

#include <chrono>
#include <cstdint>
#include <latch>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/pg/error.hpp"
#include "sluice/sched/schedule.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/sched/task.hpp"
#include "support/sched_test_env.hpp"

namespace pg = sluice::pg;
namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::system_clock;

namespace {

class SqlApi : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

std::int64_t task_count(test::sched_env& env) {
  return env.scalar("SELECT count(*) FROM " + env.q("tasks"));
}

// The SQLSTATE and message of the error `statement` raises; empty when it succeeds.
std::pair<std::string, std::string> error_of(pg::connection& c, const std::string& statement) {
  try {
    c.exec(statement);
  } catch (const pg::sql_error& e) {
    return {e.sqlstate(), e.message()};
  }
  return {};
}

TEST_F(SqlApi, AddTaskReturnsAnIdTheStoreReadsWithTheFieldsGiven) {
  test::sched_env env;
  const auto before = system_clock::now();
  const auto id =
      env.sql()
          .query("SELECT " + env.q("add_task") +
                     "('report.daily', $1::jsonb, name => 'nightly', priority => 7,"
                     " max_attempts => 5, backoff_base_ms => 250, backoff_cap_ms => 30000,"
                     " timeout_ms => 12000, misfire_policy => 'catch_up', misfire_grace_s => 15,"
                     " catch_up_limit => 4)",
                 std::string(R"({"k": 1})"))
          .one<std::int64_t>();
  const std::optional<sched::task> t = env.store().get(id);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->type, "report.daily");
  EXPECT_EQ(t->name, "nightly");
  EXPECT_EQ(t->payload, R"({"k": 1})");
  EXPECT_EQ(t->state, sched::task_state::scheduled);
  EXPECT_EQ(t->priority, 7);
  EXPECT_EQ(t->max_attempts, 5);
  EXPECT_EQ(t->backoff_base_ms, 250);
  EXPECT_EQ(t->backoff_cap_ms, 30000);
  EXPECT_EQ(t->timeout_ms, 12000);
  EXPECT_EQ(t->misfire_policy, "catch_up");
  EXPECT_EQ(t->misfire_grace_s, 15);
  EXPECT_EQ(t->catch_up_limit, 4);
  // Due now, with a schedule the engine parses back to the same time.
  ASSERT_TRUE(t->next_run_at);
  EXPECT_LE(*t->next_run_at, system_clock::now());
  EXPECT_GE(*t->next_run_at, before - 5s);
  const sched::schedule once = t->parsed_schedule();
  EXPECT_EQ(once.kind(), sched::schedule_kind::once);
  EXPECT_EQ(once.at(), *t->next_run_at);

  // The defaults are the API's, and `SELECT add_task('noop', '{}')` is all it takes.
  const auto plain = env.scalar("SELECT " + env.q("add_task") + "('noop', '{}')");
  const std::optional<sched::task> d = env.store().get(plain);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->priority, 0);
  EXPECT_EQ(d->max_attempts, 3);
  EXPECT_EQ(d->timeout_ms, 60000);
  EXPECT_EQ(d->backoff_base_ms, 1000);
  EXPECT_EQ(d->backoff_cap_ms, 3600000);
  EXPECT_EQ(d->misfire_policy, "coalesce");

  // An interval anchored in the past runs next at the first grid point after now.
  const auto every = env.scalar("SELECT " + env.q("add_task") +
                                "('tick', every => '90 minutes', run_at => "
                                "'2026-01-01T00:00:00Z')");
  const std::optional<sched::task> i = env.store().get(every);
  ASSERT_TRUE(i);
  const sched::schedule s = i->parsed_schedule();
  ASSERT_EQ(s.kind(), sched::schedule_kind::interval);
  EXPECT_EQ(s.period(), 90min);
  ASSERT_TRUE(i->next_run_at);
  EXPECT_EQ(s.next_after(*i->next_run_at - 1s), *i->next_run_at);
  EXPECT_LE(*i->next_run_at - system_clock::now(), 90min);
}

TEST_F(SqlApi, NothingIsVisibleBeforeCommitAndARollbackLeavesNothing) {
  test::sched_env env;
  pg::connection producer = test::test_connect("sluice-sql-api-producer");
  {
    pg::transaction tx(producer);
    const auto id =
        producer.exec("SELECT " + env.q("add_task") + "('email.send')").one<std::int64_t>();
    EXPECT_GT(id, 0);
    EXPECT_EQ(task_count(env), 0) << "visible before COMMIT";
    tx.rollback();
  }
  EXPECT_EQ(task_count(env), 0);
  {
    pg::transaction tx(producer);
    (void)producer.exec("SELECT " + env.q("add_tasks") +
                        "('[{\"type\": \"a\"}, {\"type\": \"b\"}]')");
    tx.commit();
  }
  EXPECT_EQ(task_count(env), 2);
}

TEST_F(SqlApi, ValidationErrorsCarryTheApisMessageAndASqlstate) {
  test::sched_env env;
  const std::string add = "SELECT " + env.q("add_task");
  struct bad_call {
    std::string args;
    std::string sqlstate;
    std::string message;
  };
  const std::vector<bad_call> cases = {
      {"('bad type')", "22023", "type: 'bad type' must be 1-100 characters of A-Z a-z 0-9 _ . : -"},
      {"('')", "22023", "type: must be 1-100 characters of A-Z a-z 0-9 _ . : -"},
      {"('x', '[1]')", "22023", "payload: expected a JSON object, got an array"},
      {"('x', priority => 1001)", "22023", "priority: must be between -1000 and 1000"},
      {"('x', max_attempts => 0)", "22023", "max_attempts: must be between 1 and 1000"},
      {"('x', backoff_base_ms => 5000, backoff_cap_ms => 10)", "22023",
       "backoff_cap_ms: must be at least backoff_base_ms (5000)"},
      {"('x', timeout_ms => 0)", "22023", "timeout_ms: must be between 1 and 31622400000"},
      {"('x', misfire_policy => 'later')", "22023",
       "misfire_policy: misfire policy 'later' is not one of coalesce, catch_up, skip"},
      {"('x', catch_up_limit => 0)", "22023", "catch_up_limit: must be between 1 and 10000"},
      {"('x', every => '0s')", "22023", "every: must be positive (at least 1 second)"},
      {"('x', every => '36501 days')", "22023",
       "every: interval 36501d is longer than the maximum of 36500d"},
      {"('x', name => '')", "22023", "name: must be 1-200 characters"},
      {"('x', on_conflict => 'merge', unique_key => 'k')", "22023",
       "on_conflict: 'merge' is not one of keep, replace"},
      {"('x', cron => '*/5 * * * *')", "0A000", "cron: cron schedules cannot be added through SQL"},
  };
  for (const auto& c : cases) {
    const auto [state, message] = error_of(env.sql(), add + c.args);
    EXPECT_EQ(state, c.sqlstate) << c.args << ": " << message;
    EXPECT_EQ(message.substr(0, c.message.size()), c.message) << c.args;
  }
  // The bulk form names the element.
  const auto [state, message] = error_of(
      env.sql(), "SELECT " + env.q("add_tasks") +
                     "('[{\"type\": \"ok\"}, {\"type\": \"ok\", \"priority\": \"high\"}]')");
  EXPECT_EQ(state, "22023");
  EXPECT_EQ(message, "tasks[1]: priority: expected an integer, got a string");
  // A taken name is 23505 with the API's conflict message.
  (void)env.sql().exec(add + "('x', name => 'only-one')");
  const auto [dup_state, dup_message] = error_of(env.sql(), add + "('x', name => 'only-one')");
  EXPECT_EQ(dup_state, "23505");
  EXPECT_EQ(dup_message, "a task named 'only-one' already exists");
  EXPECT_EQ(task_count(env), 1) << "a refused call wrote something";
}

TEST_F(SqlApi, BulkFormAddsAThousandTasksInOneCall) {
  test::sched_env env;
  std::string tasks = "[";
  for (int i = 0; i < 1000; ++i)
    tasks += (i ? "," : "") + std::string(R"({"type": "bulk", "payload": {"n": )") +
             std::to_string(i) + "}}";
  tasks += "]";
  const auto res = env.sql().query("SELECT unnest(" + env.q("add_tasks") + "($1::jsonb))", tasks);
  ASSERT_EQ(res.rows(), 1000);
  EXPECT_EQ(task_count(env), 1000);
  // Ids come back in the array's order.
  const auto in_order = env.scalar("SELECT count(*) FROM " + env.q("tasks") +
                                       " WHERE (payload->>'n')::int = $1 AND id = $2",
                                   0, res[0].get<std::int64_t>(0)) +
                        env.scalar("SELECT count(*) FROM " + env.q("tasks") +
                                       " WHERE (payload->>'n')::int = $1 AND id = $2",
                                   999, res[999].get<std::int64_t>(0));
  EXPECT_EQ(in_order, 2);
}

TEST_F(SqlApi, UniqueKeyKeepsOrReplacesTheLiveTask) {
  test::sched_env env;
  const std::string add = "SELECT " + env.q("add_task");
  const auto first = env.scalar(add + "('mail', '{\"v\": 1}', unique_key => 'user:7')");
  EXPECT_EQ(env.scalar(add + "('mail', '{\"v\": 2}', unique_key => 'user:7')"), first);
  EXPECT_EQ(env.store().get(first)->payload, R"({"v": 1})");
  EXPECT_EQ(env.scalar(add + "('mail', '{\"v\": 3}', unique_key => 'user:7', on_conflict => "
                             "'replace', run_at => now() + interval '1 hour')"),
            first);
  const auto replaced = env.store().get(first);
  EXPECT_EQ(replaced->payload, R"({"v": 3})");
  EXPECT_GT(*replaced->next_run_at, system_clock::now() + 50min);
  EXPECT_EQ(replaced->parsed_schedule().at(), *replaced->next_run_at);
  // Once the task is final the key is free again.
  ASSERT_TRUE(env.sql().query("SELECT " + env.q("cancel_task") + "($1)", first).one<bool>());
  EXPECT_NE(env.scalar(add + "('mail', unique_key => 'user:7')"), first);
  EXPECT_EQ(task_count(env), 2);
}

TEST_F(SqlApi, SixteenProducersRacingOnOneKeyCreateOneTask) {
  test::sched_env env;
  constexpr int producers = 16;
  std::vector<std::int64_t> ids(producers, 0);
  std::vector<std::string> errors(producers);
  std::latch start(producers);
  std::vector<std::thread> threads;
  const std::string add = "SELECT " + env.q("add_task") + "('race', unique_key => 'the-key')";
  for (int i = 0; i < producers; ++i) {
    threads.emplace_back([&, i] {
      try {
        pg::connection c = test::test_connect("sluice-sql-api-race");
        pg::transaction tx(c);
        start.arrive_and_wait();
        ids[static_cast<std::size_t>(i)] = c.exec(add).one<std::int64_t>();
        tx.commit();
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(i)] = e.what();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  for (int i = 0; i < producers; ++i) {
    EXPECT_EQ(errors[static_cast<std::size_t>(i)], "");
    EXPECT_EQ(ids[static_cast<std::size_t>(i)], ids[0]);
  }
  EXPECT_EQ(task_count(env), 1);
}

TEST_F(SqlApi, TheProducerRoleMayAddTasksButNotTouchTheTable) {
  test::sched_env env;
  pg::connection c = test::test_connect("sluice-sql-api-role");
  c.exec("SET ROLE sluice_producer");
  const auto id = c.exec("SELECT " + env.q("add_task") + "('as.producer')").one<std::int64_t>();
  EXPECT_EQ(
      c.exec("SELECT " + env.q("task_state") + "(" + std::to_string(id) + ")").one<std::string>(),
      "scheduled");
  EXPECT_EQ(error_of(c, "SELECT count(*) FROM " + env.q("tasks")).first, "42501");
  EXPECT_EQ(error_of(c, "UPDATE " + env.q("tasks") + " SET priority = 5").first, "42501");
  EXPECT_EQ(error_of(c, "INSERT INTO " + env.q("tasks") +
                            " (type, schedule_kind, schedule_spec) VALUES ('x', 'once', 'x')")
                .first,
            "42501");
  // The helpers behind the API are not the producer's to call.
  EXPECT_EQ(error_of(c, "SELECT " + env.q("insert_tasks") + "('{}')").first, "42501");
  EXPECT_TRUE(
      c.exec("SELECT " + env.q("cancel_task") + "(" + std::to_string(id) + ")").one<bool>());
  c.exec("RESET ROLE");
  EXPECT_EQ(env.store().get(id)->state, sched::task_state::cancelled);
}

}  // namespace
