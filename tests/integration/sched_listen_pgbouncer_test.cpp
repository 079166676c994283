// LISTEN through PgBouncer in transaction mode cannot work: the engine notices at start (it
// notifies itself and waits), says so with the fix, keeps finding work by polling, and reports
// the problem in its status (shown on /ready). A direct LISTEN connection passes the same check.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/sched/scheduler.hpp"
#include "support/sched_test_env.hpp"
#include "support/temp_pgbouncer.hpp"

namespace pg = sluice::pg;
namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;

namespace {

sched::handler succeed() {
  return [](sched::task_context&) { return sched::handler_result::success(); };
}

TEST(SchedListen, ADirectListenConnectionPassesTheDeliveryCheck) {
  ASSERT_TRUE(test::database_available());
  test::sched_env env;
  sched::scheduler node(env.settings(), env.lane());
  node.handle("job", succeed());
  node.start();
  ASSERT_TRUE(test::eventually([&] { return node.status().listen_delivering; }, 10s))
      << node.status().listen_problem;
  const std::int64_t id = env.store().create(test::due_now("job"));
  EXPECT_TRUE(test::wait_for_state(env.store(), id, sched::task_state::succeeded, 10s));
  EXPECT_TRUE(node.status().listen_problem.empty()) << node.status().listen_problem;
  node.stop();
}

TEST(SchedListen, ListenThroughPgBouncerIsReportedWithTheFixAndPollingStillFindsWork) {
  const std::string why = test::temp_pgbouncer_unavailable_reason();
  ASSERT_TRUE(why.empty()) << "this test needs PgBouncer: " << why;
  test::sched_env env;
  const pg::connection direct = test::test_connect("sluice-test-listen-direct");
  test::temp_pgbouncer_options o;
  o.pool_mode = "transaction";
  o.default_pool_size = 2;
  test::temp_pgbouncer bouncer(direct, o);

  sched::scheduler_settings s = env.settings();
  s.listen_conninfo = bouncer.conninfo();
  s.poll_interval = 200ms;
  sched::scheduler node(s, env.lane());
  node.handle("job", succeed());
  node.start();
  ASSERT_TRUE(test::eventually([&] { return !node.status().listen_problem.empty(); }, 10s))
      << "LISTEN through PgBouncer was not noticed";
  const std::string problem = node.status().listen_problem;
  EXPECT_NE(problem.find("PgBouncer"), std::string::npos) << problem;
  EXPECT_NE(problem.find("scheduler.listen_url"), std::string::npos) << problem;
  EXPECT_FALSE(node.status().listen_delivering);

  const std::int64_t id = env.store().create(test::due_now("job"));
  EXPECT_TRUE(test::wait_for_state(env.store(), id, sched::task_state::succeeded, 5s))
      << "polling did not find the task";
  node.stop();
}

}  // namespace
