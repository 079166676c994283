// The seed's failure, replayed against the scheduler: handlers that exhaust their own pool must
// neither push the node past its connection budget nor stop it from logging its check cycles.
// 64 workers, each handler holding a lease of a 4 + 4 pool for 200 ms: pg_stat_activity never
// shows more than lane max + pool max + 1 (LISTEN) connections of the node, and the cycle log
// keeps growing while the handlers queue for connections.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
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
using std::chrono::steady_clock;

namespace {

class SchedConnections : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

struct sample {
  steady_clock::time_point at;
  int connections = 0;
  std::int64_t cycles = 0;
};

TEST_F(SchedConnections, ExhaustedHandlerPoolNeitherExceedsTheBudgetNorStopsTheCycleLog) {
  constexpr int lane_max = 4;
  constexpr int pool_size = 4, pool_overflow = 4;
  constexpr int tasks = 64;
  test::sched_env env(/*migrate=*/true, lane_max, 0);
  pool::pool_manager pools;
  pool::pool& work = pools.add(
      test::test_pool_settings("work", env.app_prefix() + "-work", pool_size, pool_overflow));

  std::mutex mutex;
  steady_clock::time_point first_start = steady_clock::time_point::max();  // guarded by mutex
  steady_clock::time_point last_end{};                                     // guarded by mutex
  std::atomic<int> failures{0};
  sched::scheduler node(env.settings(/*workers=*/tasks), env.lane(), &pools);
  node.handle("hog", [&](sched::task_context& ctx) {
    {
      const std::scoped_lock lock(mutex);
      first_start = std::min(first_start, steady_clock::now());
    }
    try {
      pool::lease l = ctx.pools().get("work").acquire();
      l->exec("SELECT pg_sleep(0.2)");
    } catch (const std::exception&) {
      ++failures;
      throw;
    }
    const std::scoped_lock lock(mutex);
    last_end = std::max(last_end, steady_clock::now());
    return sched::handler_result::success();
  });
  node.start();

  // The node's connections: its lane and handler pool by application_name, and its LISTEN
  // connection by what it listens to (the channel is "<schema>.tasks").
  const std::string count_sql =
      "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND"
      " (application_name IN ($1, $2) OR (query ILIKE 'LISTEN%' AND strpos(query, $3) > 0))";
  const std::string lane_app = env.app_prefix() + "-lane";
  const std::string work_app = env.app_prefix() + "-work";
  const std::string cycles_sql = "SELECT count(*) FROM " + env.q("cycles");

  std::atomic<bool> stop_sampling{false};
  std::mutex samples_mutex;
  std::vector<sample> samples;  // guarded by samples_mutex
  std::string sampler_error;    // guarded by samples_mutex
  std::thread sampler([&] {
    try {
      pg::connection conn = test::test_connect("sluice-test-sampler");
      while (!stop_sampling) {
        sample s;
        s.at = steady_clock::now();
        s.connections = static_cast<int>(
            conn.query(count_sql, lane_app, work_app, env.schema()).one<std::int64_t>());
        s.cycles = conn.query(cycles_sql).one<std::int64_t>();
        {
          const std::scoped_lock lock(samples_mutex);
          samples.push_back(s);
        }
        std::this_thread::sleep_for(10ms);  // the sampling period, not a wait for an event
      }
    } catch (const std::exception& e) {
      const std::scoped_lock lock(samples_mutex);
      sampler_error = e.what();
    }
  });

  for (int i = 0; i < tasks; ++i)
    (void)env.store().create(test::due_now("hog"));
  const std::string done = "SELECT count(*) FROM " + env.q("tasks") + " WHERE state = 'succeeded'";
  const bool finished = test::eventually([&] { return env.scalar(done) == tasks; }, 30s, 50ms);
  stop_sampling = true;
  sampler.join();
  node.stop();
  ASSERT_TRUE(finished) << env.scalar(done) << " of " << tasks << " succeeded";
  ASSERT_TRUE(sampler_error.empty()) << sampler_error;
  EXPECT_EQ(failures.load(), 0);

  const int budget = lane_max + pool_size + pool_overflow + 1;
  int peak = 0;
  for (const sample& s : samples)
    peak = std::max(peak, s.connections);
  EXPECT_LE(peak, budget) << "the node held more connections than its budget";
  // The test did what it claims: the handler pool was exhausted (everyone queued for it).
  EXPECT_EQ(work.stats().peak_checked_out, pool_size + pool_overflow);
  EXPECT_GE(peak, pool_size + pool_overflow);

  // The cycle log grew while handlers held every connection of their pool.
  std::int64_t cycles_at_start = -1, cycles_at_end = -1;
  {
    const std::scoped_lock lock(mutex);
    for (const sample& s : samples) {
      if (s.at < first_start) continue;
      if (s.at > last_end) break;
      if (cycles_at_start < 0) cycles_at_start = s.cycles;
      cycles_at_end = s.cycles;
    }
    EXPECT_GT(std::chrono::duration<double>(last_end - first_start).count(), 1.0)
        << "64 handlers of 200 ms on 8 connections take at least 1.6 s";
  }
  ASSERT_GE(cycles_at_start, 0) << "no sample while the handlers ran (" << samples.size()
                                << " samples)";
  EXPECT_GE(cycles_at_end - cycles_at_start, 3)
      << "the cycle log stalled while the handlers' pool was exhausted";
  std::printf("[ info     ] %zu samples, peak %d connections (budget %d), %lld cycles logged\n",
              samples.size(), peak, budget,
              static_cast<long long>(cycles_at_end - cycles_at_start));
}

}  // namespace
