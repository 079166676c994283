// Several scheduler nodes as separate processes (tests/tools/sched_test_node) on one schema:
// 10,000 one-shot tasks run exactly once between three nodes, and the tasks of a node killed
// with SIGKILL are rescued and run by another node within seconds, as soon as its row expires:
// the leader (or, for a dead leader, a follower) watches the others' heartbeats and does not
// wait for its own next regular heartbeat.

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
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
using sched::task_state;
using std::chrono::steady_clock;

namespace {

class SchedMultiNode : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

double seconds_since(steady_clock::time_point t) {
  return std::chrono::duration<double>(steady_clock::now() - t).count();
}

std::vector<std::string> node_args(const test::sched_env& env, const std::string& node_id,
                                   const std::string& handler, const std::string& type,
                                   int workers) {
  return {"--schema",  env.schema(), "--node-id",
          node_id,     "--workers",  std::to_string(workers),
          "--types",   type,         "--handler",
          handler,     "--app-name", env.app_prefix() + "-" + node_id,
          "--poll-ms", "200"};
}

// Three node processes with the ledger handler (insert a row and complete in the same
// transaction) share 10,000 due tasks: every task succeeds, the ledger has exactly one row per
// task, there is exactly one succeeded run per task, and the stats say 10,000.
TEST_F(SchedMultiNode, TenThousandTasksRunExactlyOnceAcrossThreeProcesses) {
  test::sched_env env;
  env.sql().exec("CREATE TABLE " + env.q("ledger") +
                 " (task_id bigint NOT NULL, node text NOT NULL, at timestamptz DEFAULT now())");

  const std::string suffix = test::unique_suffix();
  std::vector<std::string> ids;
  std::vector<std::unique_ptr<test::node_process>> nodes;
  for (int i = 0; i < 3; ++i) {
    ids.push_back("n" + std::to_string(i) + "-" + suffix);
    nodes.push_back(std::make_unique<test::node_process>(
        SLUICE_TEST_NODE, node_args(env, ids.back(), "ledger", "ledger", 8)));
  }

  // One task through the store, then 9,999 copies of its row in one statement: the store's
  // own insert decides every column, and the copies are made due now.
  constexpr int total = 10000;
  sched::task_spec spec = test::due_now("ledger");
  spec.name = "template";
  spec.when = sched::schedule::once(std::chrono::system_clock::now() + 1h);
  const std::int64_t template_id = env.store().create(spec);
  const std::string columns =
      "type, payload, schedule_kind, schedule_spec, timezone, misfire_policy, misfire_grace_s,"
      " catch_up_limit, priority, max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms,"
      " pause_after_failures";
  // Each node claims and completes on two connections at once (claimer and completer), three
  // nodes side by side: nothing of it may ever deadlock. PostgreSQL counts every deadlock it
  // breaks in the database (any deadlock here, from whichever test, is a bug).
  const std::string deadlocks_sql =
      "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()";
  const std::int64_t deadlocks_before = env.scalar(deadlocks_sql);
  const auto started = steady_clock::now();
  env.sql().query("INSERT INTO " + env.q("tasks") + " (" + columns +
                      ", state, next_run_at)"
                      " SELECT " +
                      columns + ", 'scheduled', now() FROM " + env.q("tasks") +
                      " CROSS JOIN generate_series(1, $2) WHERE id = $1",
                  template_id, total - 1);
  ASSERT_EQ(env.store().run_now(template_id), sched::change_result::done);

  const std::string done = "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  const bool finished = test::eventually([&] { return env.scalar(done) == total; }, 150s, 200ms);
  const double took = seconds_since(started);
  ASSERT_TRUE(finished) << env.scalar(done) << " of " << total << " succeeded after " << took
                        << " s";
  std::printf("[ info     ] %d tasks on 3 nodes in %.1f s (%.0f tasks/s)\n", total, took,
              total / took);

  for (std::size_t i = 0; i < nodes.size(); ++i) {
    EXPECT_EQ(nodes[i]->terminate(15s), 0) << "node " << ids[i] << " did not stop cleanly";
  }

  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE state <> 'succeeded'"),
            0);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("ledger")), total);
  EXPECT_EQ(env.scalar("SELECT count(DISTINCT task_id) FROM " + env.q("ledger")), total);
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome = 'succeeded'"),
      total);
  EXPECT_EQ(env.scalar("SELECT count(DISTINCT task_id) FROM " + env.q("task_runs") +
                       " WHERE outcome = 'succeeded'"),
            total);
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome <> 'succeeded'"), 0)
      << "failed, fenced or rescued runs although no node died";
  EXPECT_EQ(env.store().stats().total("runs_succeeded"), total);
  // The nodes' backends have exited, so their statistics have reached the shared counters.
  (void)env.scalar("SELECT count(*) FROM (SELECT pg_stat_clear_snapshot()) x");
  EXPECT_EQ(env.scalar(deadlocks_sql), deadlocks_before) << "a deadlock was broken meanwhile";
  // The work really was shared: every node ran some of it.
  for (const std::string& id : ids) {
    EXPECT_GT(env.scalar("SELECT count(*) FROM " + env.q("ledger") + " WHERE node = $1", id), 0)
        << id;
  }
}

// A node running three 30 s tasks is killed with SIGKILL. Another node (expiry 3 s, heartbeat
// 1 s) takes the lead once the dead node's lease expires, rescues the tasks and runs them,
// well within 15 s; the rescue is recorded against the dead node.
TEST_F(SchedMultiNode, TasksOfAKilledNodeAreRescuedWithinSeconds) {
  test::sched_env env;
  const std::string dead_id = "doomed-" + test::unique_suffix();
  std::vector<std::string> args = node_args(env, dead_id, "sleep:30000", "slow", 4);
  for (const char* extra : {"--heartbeat-ms", "1000", "--node-expiry-ms", "3000"}) {
    args.emplace_back(extra);
  }
  test::node_process doomed(SLUICE_TEST_NODE, args);

  constexpr int count = 3;
  std::vector<std::int64_t> ids;
  for (int i = 0; i < count; ++i)
    ids.push_back(env.store().create(test::due_now("slow")));
  const std::string running_on_doomed =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'running' AND claimed_by = $1";
  ASSERT_TRUE(
      test::eventually([&] { return env.scalar(running_on_doomed, dead_id) == count; }, 10s))
      << env.scalar(running_on_doomed, dead_id) << " running on the doomed node";

  doomed.kill_now();
  const auto killed = steady_clock::now();

  sched::scheduler_settings s = env.settings();
  s.node_expiry = 3s;
  s.heartbeat_interval = 1s;
  sched::scheduler rescuer(s, env.lane());
  rescuer.handle("slow", [](sched::task_context&) { return sched::handler_result::success(); });
  rescuer.start();

  const std::string succeeded =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  const bool rescued = test::eventually([&] { return env.scalar(succeeded) == count; }, 15s, 50ms);
  const double took = seconds_since(killed);
  ASSERT_TRUE(rescued) << env.scalar(succeeded) << " of " << count << " rerun after " << took
                       << " s";
  EXPECT_LT(took, 15.0);
  std::printf("[ info     ] rescued and rerun %.1f s after kill -9\n", took);

  for (const std::int64_t id : ids) {
    const std::vector<sched::task_run> runs = test::runs_oldest_first(env.store(), id);
    ASSERT_EQ(runs.size(), 2U) << "task " << id;
    EXPECT_EQ(runs[0].outcome, "rescued");
    EXPECT_EQ(runs[0].node, dead_id);
    EXPECT_EQ(runs[0].attempt, 1);
    EXPECT_EQ(runs[1].outcome, "succeeded");
    EXPECT_EQ(runs[1].node, rescuer.node_id());
    EXPECT_EQ(runs[1].attempt, 2);
    EXPECT_GT(runs[1].claim_token, runs[0].claim_token);
  }
  bool seen = false;
  for (const sched::node_info& n : env.store().nodes()) {
    if (n.id != dead_id) continue;
    seen = true;
    EXPECT_EQ(n.state, "dead");
    EXPECT_FALSE(n.alive);
  }
  EXPECT_TRUE(seen);
  EXPECT_EQ(env.store().leader(), std::optional<std::string>(rescuer.node_id()));
  EXPECT_EQ(rescuer.status().rescued, static_cast<std::uint64_t>(count));
  EXPECT_EQ(env.store().stats().total("runs_rescued"), count);
  EXPECT_EQ(env.scalar("SELECT coalesce(sum(rescued), 0)::bigint FROM " + env.q("cycles")), count);
}

// A node process (heartbeat 300 ms, row expiry 1 s) running `count` 30 s tasks of type "slow",
// started and seen running.
std::unique_ptr<test::node_process> doomed_node_running(test::sched_env& env, const std::string& id,
                                                        int count) {
  std::vector<std::string> args = node_args(env, id, "sleep:30000", "slow", count);
  for (const char* extra : {"--heartbeat-ms", "300", "--node-expiry-ms", "1000"})
    args.emplace_back(extra);
  auto node = std::make_unique<test::node_process>(SLUICE_TEST_NODE, args);
  for (int i = 0; i < count; ++i)
    env.store().create(test::due_now("slow"));
  const std::string running =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'running' AND claimed_by = $1";
  EXPECT_TRUE(test::eventually([&] { return env.scalar(running, id) == count; }, 10s))
      << env.scalar(running, id) << " of " << count << " running on " << id;
  return node;
}

// The leader's own heartbeat is a minute apart, the doomed node's row expires one second after
// its last heartbeat. The leader hears the doomed node's heartbeats (NOTIFY) and runs its next
// heartbeat, which rescues, when that row expires: the tasks are back in the queue within
// seconds, not at the leader's next regular heartbeat a minute later.
TEST_F(SchedMultiNode, TheLeaderRescuesADeadNodeWhenItsRowExpiresNotAtItsNextHeartbeat) {
  test::sched_env env;
  sched::scheduler_settings s = env.settings();
  s.heartbeat_interval = 60s;
  s.node_expiry = 90s;
  sched::scheduler leader(s, env.lane());
  // Another type: the leader must not run the doomed node's tasks itself.
  leader.handle("other", [](sched::task_context&) { return sched::handler_result::success(); });
  leader.start();
  ASSERT_TRUE(leader.status().leader);
  ASSERT_TRUE(test::eventually([&] { return leader.status().listen_delivering; }, 10s));

  const std::string dead_id = "doomed-" + test::unique_suffix();
  constexpr int count = 2;
  const auto doomed = doomed_node_running(env, dead_id, count);
  ASSERT_FALSE(HasFailure());
  const std::string running_on_doomed =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'running' AND claimed_by = $1";

  doomed->kill_now();
  const auto killed = steady_clock::now();
  const std::string rescued_runs =
      "SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome = 'rescued' AND node = $1";
  const bool rescued =
      test::eventually([&] { return env.scalar(rescued_runs, dead_id) == count; }, 20s, 50ms);
  const double took = seconds_since(killed);
  ASSERT_TRUE(rescued) << env.scalar(rescued_runs, dead_id) << " of " << count << " rescued after "
                       << took << " s (the leader's next heartbeat is 60 s"
                       << " after its last)";
  std::printf("[ info     ] rescued %.1f s after kill -9 (row expiry 1 s)\n", took);
  EXPECT_EQ(env.scalar(running_on_doomed, dead_id), 0);
  EXPECT_EQ(leader.status().rescued, static_cast<std::uint64_t>(count));
  leader.stop();
}

// The mirror case: the leader dies. Its lease expires one second after its last heartbeat; a
// follower whose own heartbeat is a minute apart takes the lease over at that moment, rescues
// the dead leader's tasks and runs them.
TEST_F(SchedMultiNode, AFollowerTakesTheLeaseAsSoonAsTheDeadLeadersLeaseExpires) {
  test::sched_env env;
  const std::string dead_id = "doomed-" + test::unique_suffix();
  constexpr int count = 2;
  const auto doomed = doomed_node_running(env, dead_id, count);
  ASSERT_FALSE(HasFailure());
  ASSERT_EQ(env.store().leader(), std::optional<std::string>(dead_id));

  sched::scheduler_settings s = env.settings();
  s.heartbeat_interval = 60s;
  s.node_expiry = 90s;
  sched::scheduler follower(s, env.lane());
  follower.handle("slow", [](sched::task_context&) { return sched::handler_result::success(); });
  follower.start();
  ASSERT_FALSE(follower.status().leader);
  ASSERT_TRUE(test::eventually([&] { return follower.status().listen_delivering; }, 10s));

  doomed->kill_now();
  const auto killed = steady_clock::now();
  const std::string succeeded =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  const bool done = test::eventually([&] { return env.scalar(succeeded) == count; }, 20s, 50ms);
  const double took = seconds_since(killed);
  ASSERT_TRUE(done) << env.scalar(succeeded) << " of " << count << " rerun after " << took
                    << " s (the follower's next heartbeat is 60 s after its last)";
  std::printf("[ info     ] lease taken over and tasks rerun %.1f s after kill -9\n", took);
  EXPECT_TRUE(follower.status().leader);
  EXPECT_EQ(env.store().leader(), std::optional<std::string>(follower.node_id()));
  EXPECT_EQ(follower.status().rescued, static_cast<std::uint64_t>(count));
  follower.stop();
}

// A node stopped (SIGSTOP) for longer than its expiry, with tasks claimed and queued: the leader
// rescues them and another node runs them. When the stopped node resumes, its first heartbeat
// finds that its row had lapsed and hands its queue back, so it does not run the rescued tasks a
// second time (their outcome would be refused, but a handler's side effects would happen twice).
// At most what its workers held, plus what they took in the moment before that heartbeat, runs
// stale.
TEST_F(SchedMultiNode, ANodeResumedAfterItsTasksWereRescuedDoesNotRunItsStaleQueue) {
  test::sched_env env;
  const std::string stopped_id = "stopped-" + test::unique_suffix();
  std::vector<std::string> args = node_args(env, stopped_id, "sleep:500", "stale", 2);
  for (const char* extra : {"--heartbeat-ms", "300", "--node-expiry-ms", "1000"})
    args.emplace_back(extra);
  test::node_process stopped(SLUICE_TEST_NODE, args);
  constexpr int count = 40;
  for (int i = 0; i < count; ++i)
    env.store().create(test::due_now("stale"));
  const std::string held =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'running' AND claimed_by = $1";
  // Two run, the rest wait in its queue (prefetch).
  ASSERT_TRUE(test::eventually([&] { return env.scalar(held, stopped_id) >= 8; }, 10s));
  const auto claimed = env.scalar(held, stopped_id);
  ASSERT_EQ(::kill(stopped.pid(), SIGSTOP), 0);

  sched::scheduler_settings s = env.settings();
  s.heartbeat_interval = 300ms;
  s.node_expiry = 1s;
  sched::scheduler rescuer(s, env.lane());
  rescuer.handle("stale", [](sched::task_context&) { return sched::handler_result::success(); });
  rescuer.start();
  ASSERT_TRUE(test::eventually([&] { return env.scalar(held, stopped_id) == 0; }, 20s));
  ASSERT_EQ(::kill(stopped.pid(), SIGCONT), 0);
  const std::string succeeded =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  ASSERT_TRUE(test::eventually([&] { return env.scalar(succeeded) == count; }, 30s, 50ms));
  // Three seconds of the resumed node: with its stale queue it would run two tasks each 500 ms.
  std::this_thread::sleep_for(3s);
  EXPECT_EQ(stopped.terminate(10s), 0);
  rescuer.stop();
  const auto fenced = env.scalar(
      "SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome = 'fenced' AND node = $1",
      stopped_id);
  std::printf(
      "[ info     ] %lld claimed by the stopped node, %lld of them run stale after it"
      " resumed\n",
      static_cast<long long>(claimed), static_cast<long long>(fenced));
  EXPECT_LE(fenced, 6) << "the resumed node ran the queue that was rescued while it was stopped";
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome = 'succeeded'"),
      count);
}

}  // namespace
