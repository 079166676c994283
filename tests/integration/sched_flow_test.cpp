// Flow control on a fleet (docs/flow-control.md): node processes (tests/tools/sched_test_node)
// share one schema with limits in flow_limits. A global limit holds across three nodes, sampled
// while they run and checked afterwards from the run history; a rate limit holds in every
// window over a minute of load; a per-key limit holds per key; a graph of a thousand tasks runs
// each task once, in dependency order, with a failing branch's dependents cancelled, through a
// node killed with SIGKILL. Plus the graph API's rules in one process.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/sched/cron.hpp"
#include "sluice/sched/flow.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "support/sched_test_env.hpp"

#ifndef SLUICE_TEST_NODE
#error "SLUICE_TEST_NODE (the path of sched_test_node) must be defined by tests/CMakeLists.txt"
#endif

namespace sched = sluice::sched;
namespace pg = sluice::pg;
namespace test = sluice::test;
using namespace std::chrono_literals;
using sched::task_state;
using std::chrono::steady_clock;

namespace {

class SchedFlow : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

std::vector<std::string> node_args(const test::sched_env& env, const std::string& node_id,
                                   const std::string& handler, const std::string& type,
                                   int workers) {
  return {"--schema",         env.schema(),
          "--node-id",        node_id,
          "--workers",        std::to_string(workers),
          "--types",          type,
          "--handler",        handler,
          "--app-name",       env.app_prefix() + "-" + node_id,
          "--poll-ms",        "200",
          "--heartbeat-ms",   "300",
          "--node-expiry-ms", "1500"};
}

std::vector<std::unique_ptr<test::node_process>> start_nodes(const test::sched_env& env, int n,
                                                             const std::string& handler,
                                                             const std::string& type, int workers) {
  std::vector<std::unique_ptr<test::node_process>> nodes;
  for (int i = 0; i < n; ++i) {
    nodes.push_back(std::make_unique<test::node_process>(
        SLUICE_TEST_NODE, node_args(env, "flow" + std::to_string(i) + "-" + test::unique_suffix(),
                                    handler, type, workers)));
  }
  return nodes;
}

// The most intervals [start, finish) that overlap at one instant (epoch milliseconds).
std::int64_t max_overlap(std::vector<std::pair<double, double>> intervals) {
  std::vector<std::pair<double, int>> edges;
  for (const auto& [a, b] : intervals) {
    edges.emplace_back(a, 1);
    edges.emplace_back(b, -1);
  }
  // A run that finishes at the instant another starts does not overlap it.
  std::sort(edges.begin(), edges.end());
  std::int64_t now = 0, most = 0;
  for (const auto& [t, d] : edges) {
    now += d;
    most = std::max(most, now);
  }
  return most;
}

std::vector<std::pair<double, double>> run_intervals(test::sched_env& env,
                                                     const std::string& where) {
  std::vector<std::pair<double, double>> out;
  for (const auto row : env.sql().query(
           "SELECT extract(epoch FROM started_at) * 1000, extract(epoch FROM finished_at) * 1000"
           " FROM " +
           env.q("task_runs") + " r WHERE " + where)) {
    out.emplace_back(row.get<double>(0), row.get<double>(1));
  }
  return out;
}

sched::graph_task node_of(
    std::string ref, std::vector<std::string> after = {}, std::vector<std::int64_t> after_ids = {},
    sched::dependency_failure on_failure = sched::dependency_failure::cancel) {
  sched::graph_task g;
  g.ref = std::move(ref);
  g.spec = test::due_now("x");
  g.after = std::move(after);
  g.after_ids = std::move(after_ids);
  g.on_failure = on_failure;
  return g;
}

sched::task_spec limited_task(const std::string& type, const std::string& payload = "{}") {
  sched::task_spec s = test::due_now(type);
  s.payload = payload;
  return s;
}

// Three nodes with four workers each, a fleet-wide limit of 3: sampled every few milliseconds
// from the database and checked afterwards from the history, never more than 3 run at once.
TEST_F(SchedFlow, AGlobalLimitOfThreeHoldsAcrossThreeNodes) {
  test::sched_env env;
  env.store().set_flow_limits({{"limited", sched::flow_limit::running(3)}});
  constexpr int count = 45;
  for (int i = 0; i < count; ++i)
    env.store().create(limited_task("limited"));
  std::atomic<bool> done{false};
  std::atomic<std::int64_t> most{0};
  std::atomic<std::int64_t> samples{0};
  std::thread sampler([&] {
    pg::connect_options o;
    o.conninfo = test::test_conninfo();
    pg::connection c = pg::connection::open(o);
    const std::string q =
        "SELECT count(*) FROM " + env.q("tasks") + " WHERE type = 'limited' AND state = 'running'";
    while (!done) {
      const auto n = c.query(q).one<std::int64_t>();
      most = std::max(most.load(), n);
      ++samples;
    }
  });
  auto nodes = start_nodes(env, 3, "sleep:100", "limited", 4);
  const std::string succeeded =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  const bool all = test::eventually([&] { return env.scalar(succeeded) == count; }, 60s, 50ms);
  done = true;
  sampler.join();
  ASSERT_TRUE(all) << env.scalar(succeeded) << " of " << count << " succeeded";
  for (auto& n : nodes)
    EXPECT_EQ(n->terminate(10s), 0);
  const auto history = max_overlap(run_intervals(env, "outcome = 'succeeded'"));
  std::printf("[ info     ] %lld samples, at most %lld running; history: at most %lld at once\n",
              static_cast<long long>(samples.load()), static_cast<long long>(most.load()),
              static_cast<long long>(history));
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(samples.load(), 100);
  EXPECT_LE(history, 3);
  EXPECT_GE(history, 2) << "the limit was never used: the nodes ran one task at a time";
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome = 'succeeded'"),
      count);
}

// At most 20 starts in any window of 10 s, for a minute, across three nodes: every window that
// opens at a start holds at most 20 starts (as the claim stamps them), and the limit is used.
TEST_F(SchedFlow, ARateLimitHoldsInEveryWindowOverAMinuteOfLoad) {
  test::sched_env env;
  env.store().set_flow_limits(
      {{"metered", sched::flow_limit::starts(20, std::chrono::seconds(10))}});
  for (int i = 0; i < 300; ++i)
    env.store().create(limited_task("metered"));
  auto nodes = start_nodes(env, 3, "noop", "metered", 4);
  std::this_thread::sleep_for(60s);
  for (auto& n : nodes)
    EXPECT_EQ(n->terminate(10s), 0);
  std::vector<double> starts;
  for (const auto row : env.sql().query(
           "SELECT extract(epoch FROM last_run_at) * 1000 FROM " + env.q("tasks") +
           " WHERE type = 'metered' AND last_run_at IS NOT NULL ORDER BY last_run_at")) {
    starts.push_back(row.get<double>(0));
  }
  std::size_t worst = 0;
  for (std::size_t i = 0; i < starts.size(); ++i) {
    const auto end = std::lower_bound(starts.begin(), starts.end(), starts[i] + 10'000.0);
    worst =
        std::max(worst, static_cast<std::size_t>(end - (starts.begin() + static_cast<long>(i))));
  }
  std::printf("[ info     ] %zu starts in 60 s; at most %zu in any 10 s window\n", starts.size(),
              worst);
  EXPECT_LE(worst, 20U);
  // Six full windows and the first: 140 at most; waiting tasks start as the window allows.
  EXPECT_GE(starts.size(), 100U);
  EXPECT_LE(starts.size(), 140U);
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome <> 'succeeded'"),
      0);
}

// One running task per customer across two nodes: per customer the runs never overlap, while
// different customers run side by side.
TEST_F(SchedFlow, APerKeyLimitHoldsPerKey) {
  test::sched_env env;
  env.store().set_flow_limits({{"per_customer", sched::flow_limit::running(1, "customer")}});
  constexpr int count = 30;
  for (int i = 0; i < count; ++i) {
    env.store().create(
        limited_task("per_customer", R"({"customer": "c)" + std::to_string(i % 3) + R"("})"));
  }
  auto nodes = start_nodes(env, 2, "sleep:80", "per_customer", 4);
  const std::string succeeded =
      "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  ASSERT_TRUE(test::eventually([&] { return env.scalar(succeeded) == count; }, 60s, 50ms));
  for (auto& n : nodes)
    EXPECT_EQ(n->terminate(10s), 0);
  for (int c = 0; c < 3; ++c) {
    const std::string where = "outcome = 'succeeded' AND task_id IN (SELECT id FROM " +
                              env.q("tasks") + " WHERE payload ->> 'customer' = 'c" +
                              std::to_string(c) + "')";
    EXPECT_EQ(max_overlap(run_intervals(env, where)), 1) << "customer c" << c;
  }
  EXPECT_GE(max_overlap(run_intervals(env, "outcome = 'succeeded'")), 2)
      << "different customers never ran side by side";
}

// A graph of 1,000 tasks: a root, 33 chains of 30 tasks after it, a join after every chain's
// end, a cleanup after the join that runs whatever happened ('run' policy), and seven more tasks
// after the root alone. Chain 0's tenth task fails for good, so the rest of chain 0 and the join
// are cancelled. Three nodes run it; one is killed with SIGKILL midway. Every task that may run
// runs exactly once (ledger, history), after every task it runs after; the cancelled ones never
// run.
TEST_F(SchedFlow, AThousandTaskGraphRunsOnceInOrderThroughAKilledNode) {
  test::sched_env env;
  env.sql().exec("CREATE TABLE " + env.q("ledger") +
                 " (task_id bigint NOT NULL, node text NOT NULL, at timestamptz DEFAULT now())");
  std::vector<sched::graph_task> graph;
  const auto add = [&](const std::string& ref, std::vector<std::string> after, bool fail = false) {
    sched::graph_task g;
    g.ref = ref;
    g.spec = test::due_now("dag");
    // A run lost with the killed node counts as an attempt: the others get another one.
    g.spec.max_attempts = fail ? 1 : 3;
    g.spec.backoff_base = std::chrono::milliseconds(100);
    if (fail) g.spec.payload = R"({"fail": true})";
    g.after = std::move(after);
    graph.push_back(std::move(g));
  };
  add("root", {});
  std::vector<std::string> ends;
  for (int c = 0; c < 33; ++c) {
    std::string prev = "root";
    for (int i = 0; i < 30; ++i) {
      const std::string ref = "c" + std::to_string(c) + "-" + std::to_string(i);
      add(ref, {prev}, c == 0 && i == 9);
      prev = ref;
    }
    ends.push_back(prev);
  }
  add("join", ends);
  add("cleanup", {"join"});
  graph.back().on_failure = sched::dependency_failure::run;
  for (int i = 0; i < 7; ++i)
    add("extra" + std::to_string(i), {"root"});
  ASSERT_EQ(graph.size(), 1000U);
  const std::vector<std::int64_t> ids = env.store().add_graph(graph);
  ASSERT_EQ(ids.size(), graph.size());
  std::map<std::string, std::int64_t> id_of;
  for (std::size_t i = 0; i < graph.size(); ++i)
    id_of[graph[i].ref] = ids[i];
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'blocked'"), 999);

  auto nodes = start_nodes(env, 3, "dag", "dag", 4);
  const std::string ledger = "SELECT count(*) FROM " + env.q("ledger");
  ASSERT_TRUE(test::eventually([&] { return env.scalar(ledger) >= 300; }, 60s, 20ms));
  nodes[0]->kill_now();
  const std::string final_states = "SELECT count(*) FROM " + env.q("tasks") +
                                   " WHERE state IN ('succeeded', 'failed', 'cancelled')";
  ASSERT_TRUE(test::eventually([&] { return env.scalar(final_states) == 1000; }, 120s, 50ms))
      << env.scalar(final_states) << " of 1000 final";
  for (std::size_t i = 1; i < nodes.size(); ++i)
    EXPECT_EQ(nodes[i]->terminate(10s), 0);

  // 1000 - the failing task - the 20 after it in chain 0 - the join = 978 succeed.
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'"),
            978);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'failed'"), 1);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'cancelled'"),
            21);
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("tasks") + " WHERE id = $1 AND state = 'failed'",
                 id_of["c0-9"]),
      1);
  for (const char* ref : {"c0-10", "c0-29", "join"}) {
    const auto t = env.store().get(id_of[ref]);
    ASSERT_TRUE(t) << ref;
    EXPECT_EQ(t->state, task_state::cancelled) << ref;
    EXPECT_NE(t->last_error.value_or("").find("which it runs after"), std::string::npos) << ref;
  }
  EXPECT_EQ(env.store().get(id_of["cleanup"])->state, task_state::succeeded);
  // Exactly once: one ledger row and one succeeded run per succeeded task; nothing cancelled ran.
  EXPECT_EQ(env.scalar(ledger), 978);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM (SELECT task_id FROM " + env.q("ledger") +
                       " GROUP BY task_id HAVING count(*) > 1) d"),
            0);
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " WHERE outcome = 'succeeded'"),
      978);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("task_runs") + " r JOIN " + env.q("tasks") +
                       " t ON t.id = r.task_id WHERE t.state = 'cancelled'"),
            0);
  // In order: every task's ledger row is later than those of all the tasks it runs after.
  EXPECT_EQ(
      env.scalar("SELECT count(*) FROM " + env.q("task_deps") + " d JOIN " + env.q("ledger") +
                     " down ON down.task_id = d.task_id LEFT JOIN " + env.q("ledger") +
                     " up ON up.task_id = d.depends_on WHERE up.at IS NULL AND d.task_id <> $1"
                     " OR up.at >= down.at",
                 id_of["cleanup"]),
      0);
}

// The graph API on its own: tasks after finished tasks start ready or cancelled, a cycle or an
// unknown task adds nothing, blocked tasks are never claimed, and cancelling an upstream task
// cancels what runs after it.
TEST_F(SchedFlow, GraphsAreCheckedAndResolvedWhenAdded) {
  test::sched_env env;
  const std::int64_t done = env.store().create(test::due_now("x"));
  const std::int64_t failed = env.store().create(test::due_now("x"));
  env.sql().exec("UPDATE " + env.q("tasks") +
                 " SET state = 'succeeded' WHERE id = " + std::to_string(done));
  env.sql().exec("UPDATE " + env.q("tasks") +
                 " SET state = 'failed' WHERE id = " + std::to_string(failed));
  const auto after_done = node_of("a", {}, {done});
  const auto after_failed = node_of("b", {}, {failed});
  const auto after_b = node_of("c", {"b"});
  const auto run_anyway = node_of("d", {}, {failed}, sched::dependency_failure::run);
  const auto ids = env.store().add_graph({after_done, after_failed, after_b, run_anyway});
  EXPECT_EQ(env.store().get(ids[0])->state, task_state::available);
  EXPECT_EQ(env.store().get(ids[1])->state, task_state::cancelled);
  EXPECT_EQ(env.store().get(ids[2])->state, task_state::cancelled) << "transitively";
  EXPECT_EQ(env.store().get(ids[3])->state, task_state::available);
  EXPECT_EQ(env.store().upstream_of(ids[2]), (std::vector<std::int64_t>{ids[1]}));
  EXPECT_EQ(env.store().downstream_of(ids[1]), (std::vector<std::int64_t>{ids[2]}));

  const auto before = env.scalar("SELECT count(*) FROM " + env.q("tasks"));
  const auto p = node_of("p", {"q"});
  const auto q = node_of("q", {"p"});
  try {
    (void)env.store().add_graph({p, q});
    ADD_FAILURE() << "a cycle was accepted";
  } catch (const sched::schedule_error& e) {
    EXPECT_NE(std::string(e.what()).find("cycle"), std::string::npos) << e.what();
  }
  const auto ghost = node_of("g", {}, {987654321});
  try {
    (void)env.store().add_graph({after_done, ghost});
    ADD_FAILURE() << "an unknown upstream task was accepted";
  } catch (const sched::schedule_error& e) {
    EXPECT_NE(std::string(e.what()).find("987654321, which does not exist"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("tasks")), before)
      << "a refused graph added tasks";

  // Blocked tasks wait; cancelling the upstream cancels them.
  auto head = node_of("head");
  head.spec.when = sched::schedule::once(std::chrono::system_clock::now() + 1h);
  const auto tail = node_of("tail", {"head"});
  const auto pair = env.store().add_graph({head, tail});
  EXPECT_EQ(env.store().get(pair[1])->state, task_state::blocked);
  sched::scheduler node(env.settings(), env.lane());
  node.handle("x", [](sched::task_context&) { return sched::handler_result::success(); });
  node.start();
  ASSERT_TRUE(test::wait_for_state(env.store(), ids[0], task_state::succeeded, 10s));
  ASSERT_TRUE(test::wait_for_cycles(node, 3));
  EXPECT_EQ(env.store().get(pair[1])->state, task_state::blocked);
  EXPECT_EQ(env.store().cancel(pair[0]), sched::change_result::done);
  EXPECT_EQ(env.store().get(pair[1])->state, task_state::cancelled);
  node.stop();
}

}  // namespace
