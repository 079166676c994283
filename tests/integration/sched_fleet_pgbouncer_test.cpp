// A fleet of scheduler nodes (separate processes) whose pools all go through one PgBouncer in
// transaction mode, with fewer server connections than clients, as the deployment docs
// describe: the statement cache is turned off by itself (the proxy is detected), LISTEN goes to
// the server directly (scheduler.listen_url), every task runs exactly once, stats equal the
// history, and a node killed with SIGKILL has its tasks rescued by another one through the same
// PgBouncer.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "support/sched_test_env.hpp"
#include "support/temp_pgbouncer.hpp"

#ifndef SLUICE_TEST_NODE
#error "SLUICE_TEST_NODE (the path of sched_test_node) must be defined by tests/CMakeLists.txt"
#endif

namespace pg = sluice::pg;
namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;

namespace {

class SchedFleetPgBouncer : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    const std::string why = test::temp_pgbouncer_unavailable_reason();
    ASSERT_TRUE(why.empty()) << "this test needs PgBouncer: " << why;
  }
};

std::vector<std::string> node_args(const test::sched_env& env, const test::temp_pgbouncer& b,
                                   const std::string& node_id, const std::string& handler,
                                   const std::string& type) {
  return {"--schema",
          env.schema(),
          "--node-id",
          node_id,
          "--workers",
          "4",
          "--lane-size",
          "3",
          "--types",
          type,
          "--handler",
          handler,
          "--app-name",
          env.app_prefix() + "-" + node_id,
          "--poll-ms",
          "200",
          "--conninfo",
          b.conninfo(),
          "--listen-conninfo",
          test::conninfo_with_application(env.app_prefix() + "-listen-" + node_id)};
}

// Three nodes, 3,000 tasks, 4 server connections for 3 x (3 lane + 4 work) clients.
TEST_F(SchedFleetPgBouncer, ThreeNodesRunEveryTaskExactlyOnceThroughPgBouncer) {
  test::sched_env env;
  env.sql().exec("CREATE TABLE " + env.q("ledger") +
                 " (task_id bigint NOT NULL, node text NOT NULL, at timestamptz DEFAULT now())");
  const pg::connection direct = test::test_connect("sluice-test-fleet-direct");
  test::temp_pgbouncer_options o;
  o.pool_mode = "transaction";
  o.default_pool_size = 4;
  test::temp_pgbouncer bouncer(direct, o);

  constexpr int total = 3000;
  for (int i = 0; i < total; ++i)
    env.store().create(test::due_now("ledger"));

  const std::string suffix = test::unique_suffix();
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<test::node_process>> nodes;
  for (int i = 0; i < 3; ++i) {
    ids.push_back("pgb" + std::to_string(i) + "-" + suffix);
    nodes.push_back(std::make_unique<test::node_process>(
        SLUICE_TEST_NODE, node_args(env, bouncer, ids.back(), "ledger", "ledger")));
  }
  const std::string done = "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  ASSERT_TRUE(test::eventually([&] { return env.scalar(done) == total; }, 120s, 200ms))
      << env.scalar(done) << " of " << total << " succeeded";
  for (std::size_t i = 0; i < nodes.size(); ++i)
    EXPECT_EQ(nodes[i]->terminate(15s), 0) << "node " << ids[i] << " did not stop cleanly";

  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("ledger")), total);
  EXPECT_EQ(env.scalar("SELECT count(DISTINCT task_id) FROM " + env.q("ledger")), total);
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome <> 'succeeded'"), 0)
      << "failed, fenced or rescued runs although no node died";
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), total);
  // Every node registered and stopped cleanly through the pooler, and shared the work.
  for (const std::string& id : ids) {
    EXPECT_GT(env.scalar("SELECT count(*) FROM " + env.q("ledger") + " WHERE node = $1", id), 0)
        << id;
    EXPECT_EQ(
        env.scalar(
            "SELECT count(*) FROM " + env.q("nodes") + " WHERE id = $1 AND state = 'stopped'", id),
        1)
        << id;
  }
}

// A node holding three long tasks is killed; a second node, also behind the PgBouncer, becomes
// the leader, rescues them and runs them: one 'rescued' and one 'succeeded' run each.
TEST_F(SchedFleetPgBouncer, AKilledNodesTasksAreRescuedThroughPgBouncer) {
  test::sched_env env;
  const pg::connection direct = test::test_connect("sluice-test-fleet-direct");
  test::temp_pgbouncer_options o;
  o.pool_mode = "transaction";
  o.default_pool_size = 3;
  test::temp_pgbouncer bouncer(direct, o);

  const std::string suffix = test::unique_suffix();
  const std::string doomed_id = "doomed-" + suffix;
  std::vector<std::string> args = node_args(env, bouncer, doomed_id, "sleep:30000", "slow");
  for (const char* extra : {"--heartbeat-ms", "500", "--node-expiry-ms", "2000"})
    args.emplace_back(extra);
  test::node_process doomed(SLUICE_TEST_NODE, args);

  constexpr int count = 3;
  std::vector<std::int64_t> tasks;
  for (int i = 0; i < count; ++i)
    tasks.push_back(env.store().create(test::due_now("slow")));
  const std::string running =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'running' AND claimed_by = $1";
  ASSERT_TRUE(test::eventually([&] { return env.scalar(running, doomed_id) == count; }, 10s));
  doomed.kill_now();

  // The rescuer runs the same type with a handler that succeeds at once.
  std::vector<std::string> rargs = node_args(env, bouncer, "rescuer-" + suffix, "noop", "slow");
  for (const char* extra : {"--heartbeat-ms", "500", "--node-expiry-ms", "2000"})
    rargs.emplace_back(extra);
  test::node_process rescuer(SLUICE_TEST_NODE, rargs);
  for (const std::int64_t id : tasks) {
    EXPECT_TRUE(test::wait_for_state(env.store(), id, sched::task_state::succeeded, 20s))
        << "task " << id << " was not rescued and run";
    const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
    ASSERT_EQ(runs.size(), 2U) << "task " << id;
    EXPECT_EQ(runs[0].outcome, "rescued");
    EXPECT_EQ(runs[0].node, doomed_id);
    EXPECT_EQ(runs[1].outcome, "succeeded");
  }
  EXPECT_EQ(rescuer.terminate(15s), 0);
  EXPECT_EQ(env.store().stats().total("runs_rescued"), count);
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), count);
}

}  // namespace
