// A first end-to-end pass through the engine: migrate, enqueue, run, and check that the cycle
// log, the cumulative stats and the run history agree.

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "sluice/pool/pool.hpp"
#include "sluice/sched/scheduler.hpp"
#include "support/eventually.hpp"
#include "support/pg_test_env.hpp"

using namespace std::chrono_literals;
namespace sched = sluice::sched;

namespace {

using sluice::test::eventually;

}  // namespace

TEST(EngineSmoke, RunsOneShotTasksOnceAndKeepsLogStatsAndHistoryInAgreement) {
  sluice::test::scoped_schema schema;
  sluice::pool::settings ps;
  ps.name = "lane";
  ps.conninfo = sluice::test::test_conninfo();
  ps.size = 2;
  ps.max_overflow = 1;
  sluice::pool::pool lane(ps);
  sched::store st(lane, schema.name());
  EXPECT_FALSE(st.migrate().applied_now.empty());
  EXPECT_TRUE(st.migrate().applied_now.empty());

  for (int i = 0; i < 200; ++i) {
    sched::task_spec spec;
    spec.type = "noop";
    st.create(spec);
  }
  sched::scheduler_settings ss;
  ss.schema = schema.name();
  ss.workers = 4;
  ss.heartbeat_interval = 500ms;
  ss.node_expiry = 2s;
  std::atomic<int> ran{0};
  {
    sched::scheduler s(ss, lane);
    s.handle("noop", [&](sched::task_context&) {
      ++ran;
      return sched::handler_result::success();
    });
    s.start();
    ASSERT_TRUE(eventually(
        [&] {
          sched::task_filter f;
          f.state = sched::task_state::succeeded;
          f.limit = 1000;
          return st.list(f).size() == 200u;
        },
        20s))
        << "ran " << ran.load();
    s.stop();
  }
  EXPECT_EQ(ran.load(), 200);
  const auto stats = st.stats();
  EXPECT_EQ(stats.total("runs_succeeded"), 200);
  EXPECT_EQ(stats.total("claimed"), 200);
  auto conn = sluice::test::test_connect();
  const auto runs = conn.exec("SELECT count(*) FROM \"" + schema.name() +
                              "\".task_runs WHERE outcome = 'succeeded'")
                        .one<std::int64_t>();
  EXPECT_EQ(runs, 200);
  const auto cycle_sum =
      conn.exec("SELECT sum(succeeded)::bigint FROM \"" + schema.name() + "\".cycles")
          .one<std::int64_t>();
  EXPECT_EQ(cycle_sum, 200);
}
