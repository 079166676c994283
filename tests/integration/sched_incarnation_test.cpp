// Node incarnations: a node id that stays the same across restarts (systemd, StatefulSets).
// A process killed with SIGKILL and started again at once under the same id gets back the tasks
// its predecessor had claimed at once, not after the node expiry, and never leaves them
// 'running' for good; a second live process under an id in use is refused; a process whose id
// was taken over while it was cut off stops claiming and says so.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "support/sched_test_env.hpp"

#ifndef SLUICE_TEST_NODE
#error "SLUICE_TEST_NODE (the path of sched_test_node) must be defined by tests/CMakeLists.txt"
#endif

namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

class SchedIncarnation : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

double seconds_since(steady_clock::time_point t) {
  return std::chrono::duration<double>(steady_clock::now() - t).count();
}

// A node process with a node expiry of 60 s: anything that comes back within seconds came back
// through the incarnation takeover, not through expiry and rescue.
std::vector<std::string> node_args(const test::sched_env& env, const std::string& node_id,
                                   const std::string& handler, int workers) {
  return {"--schema",         env.schema(),
          "--node-id",        node_id,
          "--workers",        std::to_string(workers),
          "--types",          "work",
          "--handler",        handler,
          "--app-name",       env.app_prefix() + "-" + node_id,
          "--poll-ms",        "200",
          "--heartbeat-ms",   "1000",
          "--node-expiry-ms", "60000"};
}

std::int64_t running_on(test::sched_env& env, const std::string& node) {
  return env.scalar(
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'running' AND claimed_by = $1",
      node);
}

// Three nodes with stable ids run slow tasks; all three are killed with SIGKILL and started again
// at once under the same ids. Every task then runs to success within seconds (the expiry is a
// minute), each with exactly one 'rescued' run under its node id and one success after it, and
// the stats agree with the history.
TEST_F(SchedIncarnation, KilledNodesRestartedUnderTheirIdsGetTheirTasksBackAtOnce) {
  test::sched_env env;
  constexpr int nodes = 3;
  constexpr int per_node = 2;
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<test::node_process>> procs;
  for (int i = 0; i < nodes; ++i) {
    ids.push_back("stable-" + std::to_string(i) + "-" + test::unique_suffix());
    procs.push_back(std::make_unique<test::node_process>(
        SLUICE_TEST_NODE, node_args(env, ids.back(), "sleep:60000", per_node)));
  }
  std::vector<std::int64_t> tasks;
  for (int i = 0; i < nodes * per_node; ++i)
    tasks.push_back(env.store().create(test::due_now("work")));
  const std::string running = "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'running'";
  ASSERT_TRUE(test::eventually([&] { return env.scalar(running) == nodes * per_node; }, 15s))
      << env.scalar(running) << " of " << nodes * per_node << " running";

  std::int64_t held_by_stable = 0;
  for (const auto& id : ids)
    held_by_stable += running_on(env, id);
  ASSERT_EQ(held_by_stable, nodes * per_node);

  for (auto& p : procs)
    p->kill_now();
  const auto killed = steady_clock::now();
  procs.clear();
  for (const auto& id : ids)
    procs.push_back(
        std::make_unique<test::node_process>(SLUICE_TEST_NODE, node_args(env, id, "noop", 4)));

  const std::string succeeded =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  ASSERT_TRUE(
      test::eventually([&] { return env.scalar(succeeded) == nodes * per_node; }, 20s, 50ms))
      << env.scalar(succeeded) << " of " << nodes * per_node << " succeeded "
      << seconds_since(killed) << " s after the restart; still running: " << env.scalar(running);
  const double took = seconds_since(killed);
  std::printf("[ info     ] all tasks succeeded %.2f s after kill -9 and restart\n", took);
  EXPECT_LT(took, 20.0);

  for (const std::int64_t id : tasks) {
    const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
    ASSERT_EQ(runs.size(), 2U) << "task " << id;
    EXPECT_EQ(runs[0].outcome, "rescued") << "task " << id;
    EXPECT_EQ(runs[0].attempt, 1);
    EXPECT_EQ(runs[1].outcome, "succeeded") << "task " << id;
    EXPECT_EQ(runs[1].attempt, 2);
    EXPECT_GT(runs[1].claim_token, runs[0].claim_token);
    EXPECT_NE(std::find(ids.begin(), ids.end(), runs[0].node), ids.end()) << runs[0].node;
  }
  EXPECT_EQ(env.store().stats().total("runs_rescued"), nodes * per_node);
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), nodes * per_node);
  EXPECT_EQ(env.scalar("SELECT coalesce(sum(rescued), 0)::bigint FROM " + env.q("cycles")),
            nodes * per_node);
  // One row per node id, each naming the new process.
  for (const sched::node_info& n : env.store().nodes()) {
    if (std::find(ids.begin(), ids.end(), n.id) == ids.end()) continue;
    EXPECT_TRUE(n.alive) << n.id;
    EXPECT_EQ(n.state, "running") << n.id;
  }
  for (auto& p : procs)
    EXPECT_EQ(p->terminate(10s), 0);
}

// A node id in use by a live process on the same machine is refused at start, at once, with a
// message that names the other process and the setting to change; the first node keeps working.
TEST_F(SchedIncarnation, ASecondLiveSchedulerUnderTheSameIdIsRefused) {
  test::sched_env env;
  sched::scheduler_settings s = env.settings();
  sched::scheduler first(s, env.lane());
  first.handle("work", [](sched::task_context&) { return sched::handler_result::success(); });
  first.start();

  sched::scheduler twin(s, env.lane());
  twin.handle("work", [](sched::task_context&) { return sched::handler_result::success(); });
  const auto before = steady_clock::now();
  try {
    twin.start();
    ADD_FAILURE() << "a second scheduler started under node id " << s.node_id;
  } catch (const sched::node_id_conflict& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("is in use by a running process"), std::string::npos) << what;
    EXPECT_NE(what.find("scheduler.node_id"), std::string::npos) << what;
    EXPECT_NE(what.find("pid"), std::string::npos) << what;
  }
  EXPECT_LT(seconds_since(before), 2.0) << "the same machine can tell at once";

  const std::int64_t id = env.store().create(test::due_now("work"));
  EXPECT_TRUE(test::wait_for_state(env.store(), id, sched::task_state::succeeded, 10s));
  const auto st = first.status();
  EXPECT_FALSE(st.superseded);
  EXPECT_EQ(st.state, sched::scheduler_state::running);
  first.stop();
}

// The same through separate processes: the second exits with an error before it is ready, the
// first one's claims are untouched.
TEST_F(SchedIncarnation, ASecondLiveProcessUnderTheSameIdExitsWithAnError) {
  test::sched_env env;
  const std::string id = "shared-" + test::unique_suffix();
  test::node_process first(SLUICE_TEST_NODE, node_args(env, id, "sleep:60000", 2));
  const std::int64_t task = env.store().create(test::due_now("work"));
  ASSERT_TRUE(test::eventually([&] { return running_on(env, id) == 1; }, 10s));
  const std::int64_t token_before =
      env.scalar("SELECT claim_token FROM " + env.q("tasks") + " WHERE id = $1", task);

  EXPECT_THROW(test::node_process(SLUICE_TEST_NODE, node_args(env, id, "noop", 2), 10s),
               std::runtime_error);
  EXPECT_TRUE(first.running());
  EXPECT_EQ(running_on(env, id), 1);
  EXPECT_EQ(env.scalar("SELECT claim_token FROM " + env.q("tasks") + " WHERE id = $1", task),
            token_before);
  EXPECT_EQ(env.store().stats().total("runs_rescued"), 0);
  first.kill_now();  // its task sleeps for a minute: a graceful stop would wait out stop_grace
}

// A process whose node row was taken over by another incarnation (as a start does when this one
// looked dead) learns it at its next heartbeat: it stops claiming, reports itself superseded,
// calls on_superseded, and its stop() leaves the successor's row and leadership alone.
TEST_F(SchedIncarnation, ASupersededSchedulerStopsClaimingAndSaysSo) {
  test::sched_env env;
  sched::scheduler_settings s = env.settings();
  std::atomic<int> called{0};
  s.on_superseded = [&called](const std::string&) { ++called; };
  sched::scheduler node(s, env.lane());
  node.handle("work", [](sched::task_context&) { return sched::handler_result::success(); });
  node.start();
  ASSERT_TRUE(test::wait_for_cycles(node, 1));

  // What a successor's registration does to the row.
  env.sql().query("UPDATE " + env.q("nodes") +
                      " SET incarnation = 42, pid = 1, host = 'elsewhere' WHERE id = $1",
                  s.node_id);
  ASSERT_TRUE(test::eventually([&] { return node.status().superseded; }, 5s));
  EXPECT_EQ(called.load(), 1);
  EXPECT_NE(node.status().last_error.find("elsewhere"), std::string::npos)
      << node.status().last_error;

  const std::int64_t id = env.store().create(test::due_now("work"));
  // A superseded node asks the database nothing, so there is no cycle to wait for: give it the
  // time of several polls (and the NOTIFY of the insert) to claim, which it must not do.
  std::this_thread::sleep_for(5 * s.poll_interval + 500ms);
  EXPECT_EQ(env.store().get(id)->state, sched::task_state::scheduled)
      << "a superseded node claimed a task";

  node.stop();
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("nodes") +
                           " WHERE id = $1 AND incarnation = 42 AND state = 'running'",
                       s.node_id),
            1)
      << "the superseded process's stop() changed its successor's row";
}

}  // namespace
