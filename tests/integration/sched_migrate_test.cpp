// The scheduler's schema migrations against the real server: applying is idempotent and safe
// to race, a schema that is missing or newer than the binary is refused with schema_error, the
// tables and indexes of sql/migrations exist, and the claim query is served by tasks_claim.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <latch>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/sched/schedule.hpp"
#include "sluice/sched/store.hpp"
#include "support/sched_test_env.hpp"

namespace sched = sluice::sched;
namespace test = sluice::test;

namespace {

class SchedMigrate : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

std::set<std::string> names_in(sluice::pg::connection& conn, const std::string& sql,
                               const std::string& schema) {
  std::set<std::string> out;
  for (const auto row : conn.query(sql, schema))
    out.insert(row.get<std::string>(0));
  return out;
}

// The first migrate() applies every version in order and the second applies nothing; the state
// it reports then is the same as check_schema()'s.
TEST_F(SchedMigrate, MigrateTwiceIsANoOp) {
  test::sched_env env(/*migrate=*/false);

  const sched::migration_status first = env.store().migrate();
  ASSERT_GE(first.latest, 1);
  EXPECT_EQ(first.current, first.latest);
  std::vector<int> all(static_cast<std::size_t>(first.latest));
  for (int v = 1; v <= first.latest; ++v)
    all[static_cast<std::size_t>(v - 1)] = v;
  EXPECT_EQ(first.applied_now, all);

  const sched::migration_status second = env.store().migrate();
  EXPECT_TRUE(second.applied_now.empty());
  EXPECT_EQ(second.current, first.latest);
  EXPECT_EQ(second.latest, first.latest);

  const sched::migration_status checked = env.store().check_schema();
  EXPECT_EQ(checked.current, first.latest);
  EXPECT_TRUE(checked.applied_now.empty());
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("schema_migrations")), first.latest);
}

// Several processes starting at once all migrate; the advisory lock makes exactly one of them
// apply each version and the others find the work done.
TEST_F(SchedMigrate, ConcurrentMigratorsApplyEachVersionOnce) {
  test::sched_env env(/*migrate=*/false, /*lane_size=*/6);
  constexpr int migrators = 4;
  std::latch go(migrators);
  std::mutex mutex;
  std::vector<sched::migration_status> results;  // guarded by mutex
  std::vector<std::string> errors;               // guarded by mutex
  std::vector<std::thread> threads;
  for (int i = 0; i < migrators; ++i) {
    threads.emplace_back([&] {
      sched::store own(env.lane(), env.schema());
      go.arrive_and_wait();
      try {
        sched::migration_status st = own.migrate();
        const std::scoped_lock lock(mutex);
        results.push_back(std::move(st));
      } catch (const std::exception& e) {
        const std::scoped_lock lock(mutex);
        errors.emplace_back(e.what());
      }
    });
  }
  for (std::thread& t : threads)
    t.join();
  ASSERT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(results.size(), static_cast<std::size_t>(migrators));
  std::size_t applied_total = 0;
  for (const auto& r : results) {
    EXPECT_EQ(r.current, r.latest);
    applied_total += r.applied_now.size();
  }
  EXPECT_EQ(applied_total, static_cast<std::size_t>(results.front().latest));
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("schema_migrations")),
            results.front().latest);
}

// A binary must not run against a schema it has not migrated: check_schema() refuses, while
// check_schema(false) only reports that nothing is applied.
TEST_F(SchedMigrate, CheckSchemaOnAFreshSchemaThrows) {
  test::sched_env env(/*migrate=*/false);
  EXPECT_THROW((void)env.store().check_schema(), sched::schema_error);
  const sched::migration_status st = env.store().check_schema(/*require_current=*/false);
  EXPECT_EQ(st.current, 0);
  EXPECT_GE(st.latest, 1);
  EXPECT_TRUE(st.applied_now.empty());
  // Reading must not have created anything.
  EXPECT_EQ(env.scalar("SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
                       env.schema()),
            0);

  sched::scheduler_settings s = env.settings();
  sched::scheduler node(s, env.lane());
  EXPECT_ANY_THROW(node.start()) << "start() must check the schema";
  node.stop();
}

// An older binary (or a rollback) meeting a database migrated by a newer one must stop with a
// message that says so, not run against tables it does not understand.
TEST_F(SchedMigrate, DatabaseNewerThanTheBinaryIsRefused) {
  test::sched_env env;
  const int latest = env.store().check_schema().latest;
  env.sql().exec("INSERT INTO " + env.q("schema_migrations") +
                 " (version, name) VALUES (999, 'from_the_future')");

  try {
    (void)env.store().migrate();
    ADD_FAILURE() << "migrate() accepted a database at version 999";
  } catch (const sched::schema_error& e) {
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "999")) << what;
    EXPECT_TRUE(contains(what, std::to_string(latest))) << what;
  }
  EXPECT_THROW((void)env.store().check_schema(), sched::schema_error);
  EXPECT_THROW((void)env.store().check_schema(false), sched::schema_error);
  // Nothing was applied or removed.
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("schema_migrations")), latest + 1);
}

TEST_F(SchedMigrate, TablesIndexesAndTriggerExist) {
  test::sched_env env;
  const std::set<std::string> tables = names_in(
      env.sql(), "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
      env.schema());
  for (const char* t :
       {"tasks", "task_runs", "cycles", "stats", "nodes", "leader", "schema_migrations"}) {
    EXPECT_TRUE(tables.count(t)) << "missing table " << t;
  }
  const std::set<std::string> indexes = names_in(
      env.sql(), "SELECT indexname::text FROM pg_indexes WHERE schemaname = $1", env.schema());
  for (const char* i : {"tasks_claim", "tasks_next_due", "tasks_running_by_type", "tasks_finished",
                        "task_runs_task", "task_runs_finished", "cycles_started"}) {
    EXPECT_TRUE(indexes.count(i)) << "missing index " << i;
  }
  const std::set<std::string> triggers = names_in(
      env.sql(),
      "SELECT tgname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
      " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND NOT t.tgisinternal",
      env.schema());
  EXPECT_TRUE(triggers.count("tasks_notify"));
  // The claim index is partial on the claimable states.
  const std::string def = env.sql()
                              .query(
                                  "SELECT indexdef FROM pg_indexes WHERE schemaname = $1"
                                  " AND indexname = 'tasks_claim'",
                                  env.schema())
                              .one<std::string>();
  EXPECT_TRUE(contains(def, "WHERE")) << def;

  // Names are unique through a partial index that holds named tasks only (version 2): unnamed
  // tasks add no entries to it, and the constraint of version 1 that indexed every row is gone.
  const std::string name_def = env.sql()
                                   .query(
                                       "SELECT indexdef FROM pg_indexes WHERE schemaname = $1"
                                       " AND indexname = 'tasks_name_unique'",
                                       env.schema())
                                   .one<std::string>();
  EXPECT_TRUE(contains(name_def, "UNIQUE")) << name_def;
  EXPECT_TRUE(contains(name_def, "WHERE (name IS NOT NULL)")) << name_def;
  EXPECT_FALSE(indexes.count("tasks_name_key"));
  for (int i = 0; i < 3; ++i) {
    sched::task_spec spec;
    spec.type = "unnamed";
    spec.when = sched::schedule::once(std::chrono::system_clock::now() + std::chrono::hours(1));
    env.store().create(spec);
  }
  // A btree without entries is its metapage alone; the first entry adds a leaf page.
  EXPECT_EQ(env.scalar("SELECT pg_relation_size($1::regclass)", env.q("tasks_name_unique")), 8192)
      << "unnamed tasks are in the name index";
}

// The claim must stay an index range scan however many tasks pile up: with 100,000 tasks of ten
// types, a quarter of them finished, the planner serves the claim's SELECT from tasks_claim
// (the engine's UPDATE ... FROM (SELECT ... FOR UPDATE SKIP LOCKED) has this SELECT inside).
TEST_F(SchedMigrate, ClaimQueryUsesTheClaimIndexAtOneHundredThousandTasks) {
  test::sched_env env;
  env.sql().exec("INSERT INTO " + env.q("tasks") +
                 " (type, state, schedule_kind, schedule_spec, next_run_at, priority)"
                 " SELECT 'type_' || (g % 10),"
                 "        CASE WHEN g % 4 = 0 THEN 'succeeded' ELSE 'scheduled' END,"
                 "        'once', '2024-01-01T00:00:00Z',"
                 "        now() + ((g % 2000) - 1000) * interval '1 second', g % 5"
                 " FROM generate_series(1, 100000) AS g");
  env.sql().exec("ANALYZE " + env.q("tasks"));
  ASSERT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks")), 100000);

  const std::string explain =
      "EXPLAIN SELECT id FROM " + env.q("tasks") +
      " WHERE type = 'type_3' AND state IN ('scheduled', 'available', 'retryable')"
      "   AND next_run_at <= now()"
      " ORDER BY priority DESC, next_run_at, id LIMIT 500 FOR UPDATE SKIP LOCKED";
  std::string plan;
  for (const auto row : env.sql().exec(explain))
    plan += std::string(row.text(0)) + "\n";
  EXPECT_TRUE(contains(plan, "tasks_claim")) << plan;
  EXPECT_FALSE(contains(plan, "Seq Scan")) << plan;
}

}  // namespace

namespace {
using namespace std::chrono_literals;

// Drops what version 4 (the SQL API) added, so that a test can stand in an older schema.
void undo_version_four(test::sched_env& env) {
  env.sql().exec("SET search_path TO \"" + env.schema() + "\"");
  env.sql().exec(
      "DROP TYPE task_input CASCADE;"
      " DROP FUNCTION add_task, add_tasks, cancel_task, reschedule_task, task_state, api_fail,"
      " format_time, format_seconds, check_time, check_range, json_kind, json_text, json_int,"
      " json_time, json_interval;"
      " ALTER TABLE tasks DROP COLUMN unique_key;"
      " DELETE FROM schema_migrations WHERE version = 4");
}

// Back to version 4: the cycle log without its kind, b-tree history indexes, default storage.
// Back from version 7 to 6: version 7 only replaces json_task_input() (CREATE OR REPLACE), which
// applying it again restores.
void undo_version_seven(test::sched_env& env) {
  env.sql().exec("DELETE FROM " + env.q("schema_migrations") + " WHERE version = 7");
}

// Back from version 6 (flow control) to 5, as a version-5 database looks, except that
// engine_claim is gone (version 6 replaces it; undo_version_five would drop it).
void undo_version_six(test::sched_env& env) {
  env.sql().exec("SET search_path TO \"" + env.schema() + "\"");
  env.sql().exec(
      "DROP TRIGGER tasks_dependents ON tasks; DROP FUNCTION tasks_dependents;"
      " DROP FUNCTION engine_claim(text, text[], int4[], bigint, integer, int4[], timestamptz[],"
      "   int8[], integer, int4[]);"
      " DROP TABLE task_deps, flow_limits, flow_starts;"
      " ALTER TABLE tasks DROP COLUMN has_dependents, DROP COLUMN on_dependency_failure;"
      " ALTER TABLE tasks DROP CONSTRAINT tasks_state_check, ADD CONSTRAINT tasks_state_check"
      "   CHECK (state IN ('scheduled', 'available', 'running', 'retryable', 'succeeded',"
      "   'failed', 'cancelled', 'paused'));"
      " CREATE INDEX tasks_running ON tasks (claimed_by) WHERE state = 'running';"
      " DROP INDEX tasks_running_by_type;"
      " DELETE FROM schema_migrations WHERE version = 6");
}

void undo_version_five(test::sched_env& env) {
  env.sql().exec("SET search_path TO \"" + env.schema() + "\"");
  env.sql().exec(
      "DROP FUNCTION IF EXISTS engine_claim; ALTER TABLE cycles DROP COLUMN kind;"
      " DROP INDEX tasks_finished; CREATE INDEX tasks_state ON tasks (state, id);"
      " DROP INDEX task_runs_finished; CREATE INDEX task_runs_finished ON task_runs (finished_at);"
      " DROP INDEX cycles_started; CREATE INDEX cycles_started ON cycles (started_at);"
      " ALTER TABLE tasks RESET (fillfactor, autovacuum_vacuum_scale_factor,"
      "   autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay, autovacuum_vacuum_cost_limit,"
      "   autovacuum_analyze_scale_factor);"
      " DELETE FROM schema_migrations WHERE version = 5");
}

// Version 5 (the hot path) on a populated version-4 database: history and cycle rows of the old
// engine are kept (their cycles get kind 'cycle'), the history indexes become BRIN, and the new
// engine drains what was pending, with stats equal to the history.
TEST_F(SchedMigrate, VersionFiveUpgradesAPopulatedDatabase) {
  test::sched_env env;
  undo_version_seven(env);
  undo_version_six(env);
  undo_version_five(env);
  ASSERT_EQ(env.store().check_schema(false).current, 4);
  constexpr int pending = 300;
  for (int i = 0; i < pending; ++i)
    env.store().create(test::due_now("job"));
  // History written by the old engine: a run and a cycle row.
  env.sql().exec("INSERT INTO " + env.q("task_runs") +
                 " (task_id, type, attempt, claim_token, node, started_at, finished_at, outcome)"
                 " VALUES (999999, 'job', 1, 1, 'old-node', now(), now(), 'succeeded')");
  env.sql().exec("INSERT INTO " + env.q("cycles") +
                 " (node, started_at, duration_ms, succeeded) VALUES ('old-node', now(), 1, 1)");

  const sched::migration_status st = env.store().migrate();
  EXPECT_EQ(st.applied_now, (std::vector<int>{5, 6, 7}));
  EXPECT_EQ(st.current, st.latest);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("cycles") + " WHERE kind = 'cycle'"), 1);
  // The access method comes from pg_class and pg_am, not from pg_indexes.indexdef: a filter on
  // that column may call pg_get_indexdef() on other schemas' indexes, and a test running beside
  // this one that drops its schema makes that call fail with "cache lookup failed".
  EXPECT_EQ(env.scalar("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid ="
                       " c.relnamespace JOIN pg_am a ON a.oid = c.relam WHERE n.nspname = '" +
                       env.schema() +
                       "' AND c.relname IN ('task_runs_finished', 'cycles_started')"
                       " AND a.amname = 'brin'"),
            2);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid ="
                       " c.relnamespace WHERE n.nspname = '" +
                       env.schema() +
                       "' AND c.relname = 'tasks' AND 'fillfactor=80' = ANY(c.reloptions)"),
            1);

  sched::scheduler node(env.settings(), env.lane());
  node.handle("job", [](sched::task_context&) { return sched::handler_result::success(); });
  node.start();
  EXPECT_TRUE(test::eventually(
      [&] {
        return env.scalar("SELECT count(*) FROM " + env.q("tasks") +
                          " WHERE state = 'succeeded'") == pending;
      },
      30s));
  node.stop();
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("task_runs") +
                       " WHERE outcome = 'succeeded' AND node <> 'old-node'"),
            pending);
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), pending);
  EXPECT_EQ(env.scalar("SELECT coalesce(sum(succeeded), 0)::bigint FROM " + env.q("cycles") +
                       " WHERE kind = 'complete'"),
            pending);
  EXPECT_EQ(env.scalar("SELECT coalesce(sum(claimed), 0)::bigint FROM " + env.q("cycles") +
                       " WHERE kind = 'claim'"),
            pending);
}

// Version 6 (flow control) on a populated version-5 database: pending tasks drain after it, the
// new state and tables work at once (a graph is blocked, then released in order), and stats
// equal the history.
TEST_F(SchedMigrate, VersionSixUpgradesAPopulatedDatabase) {
  test::sched_env env;
  undo_version_seven(env);
  undo_version_six(env);
  ASSERT_EQ(env.store().check_schema(false).current, 5);
  constexpr int pending = 200;
  for (int i = 0; i < pending; ++i)
    env.store().create(test::due_now("job"));
  const sched::migration_status st = env.store().migrate();
  EXPECT_EQ(st.applied_now, (std::vector<int>{6, 7}));
  EXPECT_EQ(st.current, st.latest);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE has_dependents"), 0);

  sched::graph_task first;
  first.ref = "first";
  first.spec = test::due_now("job");
  sched::graph_task second;
  second.ref = "second";
  second.spec = test::due_now("job");
  second.after = {"first"};
  const auto ids = env.store().add_graph({first, second});
  EXPECT_EQ(env.store().get(ids[1])->state, sched::task_state::blocked);

  sched::scheduler node(env.settings(), env.lane());
  node.handle("job", [](sched::task_context&) { return sched::handler_result::success(); });
  node.start();
  EXPECT_TRUE(test::eventually(
      [&] {
        return env.scalar("SELECT count(*) FROM " + env.q("tasks") +
                          " WHERE state = 'succeeded'") == pending + 2;
      },
      30s));
  node.stop();
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), pending + 2);
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome = 'succeeded'"),
      pending + 2);
  const auto runs_first = test::runs_oldest_first(env.store(), ids[0]);
  const auto runs_second = test::runs_oldest_first(env.store(), ids[1]);
  ASSERT_EQ(runs_first.size(), 1U);
  ASSERT_EQ(runs_second.size(), 1U);
  EXPECT_LE(runs_first[0].finished_at, runs_second[0].started_at);
}

// Version 3 (node incarnations) on a populated version-2 database with a live node of the old
// version holding a claim: the upgrade adds its columns without touching the rows, the old
// node's claim (no incarnation) stays its own while that node is alive, and is rescued by a new
// node once the old one stops heartbeating, as before the upgrade.
TEST_F(SchedMigrate, VersionThreeUpgradesAPopulatedDatabaseAndKeepsOldClaimsLive) {
  test::sched_env env;
  // Back to version 2: what a database of the previous release looks like.
  env.sql().exec("ALTER TABLE " + env.q("tasks") + " DROP COLUMN claimed_incarnation");
  env.sql().exec("ALTER TABLE " + env.q("nodes") + " DROP COLUMN incarnation");
  env.sql().exec("ALTER TABLE " + env.q("nodes") + " DROP COLUMN process_key");
  env.sql().exec("DELETE FROM " + env.q("schema_migrations") + " WHERE version = 3");
  undo_version_seven(env);
  undo_version_six(env);
  undo_version_five(env);
  undo_version_four(env);
  ASSERT_EQ(env.store().check_schema(false).current, 2);

  constexpr int pending = 500;
  for (int i = 0; i < pending; ++i)
    env.store().create(test::due_now("later"));
  const std::int64_t claimed = env.store().create(test::due_now("job"));
  // A node of the old version, alive for another 3 s, runs `claimed`.
  env.sql().exec("INSERT INTO " + env.q("nodes") +
                 " (id, host, pid, version, expires_at, connection_budget)"
                 " VALUES ('old-node', 'h', 1, '0.1.0', now() + interval '3 seconds', 4)");
  env.sql().query("UPDATE " + env.q("tasks") +
                      " SET state = 'running', claimed_by = 'old-node', claimed_at = now(),"
                      " attempt = 1, claim_token = claim_token + 1, lease_until = now() + "
                      "interval '1 hour' WHERE id = $1",
                  claimed);

  const sched::migration_status st = env.store().migrate();
  EXPECT_EQ(st.applied_now, (std::vector<int>{3, 4, 5, 6, 7}));
  EXPECT_EQ(st.current, st.latest);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'scheduled'"),
            pending);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") +
                       " WHERE claimed_incarnation IS NOT NULL"),
            0);
  EXPECT_EQ(env.scalar("SELECT incarnation FROM " + env.q("nodes") + " WHERE id = 'old-node'"), 0);

  sched::scheduler node(env.settings(), env.lane());
  node.handle("job", [](sched::task_context&) { return sched::handler_result::success(); });
  node.start();
  ASSERT_TRUE(test::wait_for_cycles(node, 2));
  ASSERT_TRUE(node.status().leader);
  EXPECT_EQ(env.store().get(claimed)->state, sched::task_state::running)
      << "the claim of a live node of the old version was taken";
  EXPECT_TRUE(test::wait_for_state(env.store(), claimed, sched::task_state::succeeded, 15s))
      << "the old node's claim was not rescued after it expired";
  const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), claimed);
  ASSERT_EQ(runs.size(), 2U);
  EXPECT_EQ(runs[0].outcome, "rescued");
  EXPECT_EQ(runs[0].node, "old-node");
  EXPECT_EQ(runs[1].outcome, "succeeded");
  node.stop();
}

}  // namespace
