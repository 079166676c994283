// Many borrowers against the real server: the pool never holds more than size + max_overflow
// server connections, times out as documented, hands returned connections to waiters, and
// serves waiting borrowers fairly.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <mutex>
#include <numeric>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

// Settings for a pool on the test server whose application_name is unique to this run, so
// pg_stat_activity tells its connections apart from everyone else's.
pool::settings settings_for(const std::string& name) {
  pool::settings s;
  s.name = name;
  s.conninfo = test::test_conninfo();
  s.application_name = "sluice-test-" + name + "-" + test::unique_suffix();
  s.connect_backoff_initial = 20ms;
  s.connect_backoff_max = 200ms;
  return s;
}

int count_by_application(pg::connection& conn, const std::string& application_name) {
  return static_cast<int>(conn.query("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE application_name = $1",
                                     application_name)
                              .one<std::int64_t>());
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

void raise_max(std::atomic<int>& max, int value) {
  int seen = max.load();
  while (value > seen && !max.compare_exchange_weak(seen, value)) {
  }
}

// pool_timeout's documented message: "pool '<name>': no connection available within 0.5 s
// (size 5, overflow 10, open 15, checked out 15, waiting 3; ...)".
std::regex timeout_message_format(const std::string& name, int size, int overflow) {
  return std::regex("pool '" + name +
                    "': no connection available within [0-9]+\\.[0-9] s \\(size " +
                    std::to_string(size) + ", overflow " + std::to_string(overflow) +
                    ", open [0-9]+, checked out [0-9]+, waiting [0-9]+(; [^)]*)?\\)");
}

class PoolLoad : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

// The seed's failure was a process holding more connections than it was configured for. 64
// threads on a 5 + 10 pool: pg_stat_activity, sampled from outside every 20 ms, never shows more
// than 15 connections of this pool, and every borrow either works or times out with the
// documented message.
TEST_F(PoolLoad, SixtyFourThreadsNeverHoldMoreThanSizePlusOverflow) {
  pool::settings s = settings_for("hammer");
  s.size = 5;
  s.max_overflow = 10;
  // Short enough that, under this load, some borrowers time out while others are handed
  // connections: the timeout path races the hand-off path.
  s.timeout = 10ms;
  const std::string app = s.application_name;
  std::optional<pool::pool> p;
  p.emplace(s);

  const std::regex timeout_format = timeout_message_format("hammer", 5, 10);

  std::atomic<bool> stop{false};
  std::atomic<int> max_server{0};
  std::atomic<int> max_open{0};
  std::atomic<int> max_checked_out{0};
  std::atomic<int> samples{0};
  std::mutex errors_mutex;
  std::vector<std::string> errors;  // guarded by errors_mutex
  auto record_error = [&](std::string what) {
    const std::scoped_lock lock(errors_mutex);
    if (errors.size() < 10) errors.push_back(std::move(what));
  };

  std::thread sampler([&] {
    try {
      pg::connection conn = test::test_connect("sluice-test-sampler");
      while (!stop.load()) {
        raise_max(max_server, count_by_application(conn, app));
        const pool::pool_stats st = p->stats();
        raise_max(max_open, st.open);
        raise_max(max_checked_out, st.checked_out);
        ++samples;
        std::this_thread::sleep_for(20ms);  // the sampling period, not a wait for an event
      }
    } catch (const std::exception& e) {
      record_error(std::string("sampler: ") + e.what());
    }
  });

  constexpr int threads = 64;
  std::atomic<std::uint64_t> served{0};
  std::atomic<std::uint64_t> timed_out{0};
  const auto deadline = steady_clock::now() + 3s;
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      while (steady_clock::now() < deadline) {
        try {
          pool::lease lease = p->acquire();
          lease->exec("SELECT pg_sleep(0.001)");
          ++served;
        } catch (const pool::pool_timeout& e) {
          ++timed_out;
          if (!std::regex_match(e.what(), timeout_format)) {
            record_error(std::string("timeout message not in the documented format: ") + e.what());
          }
        } catch (const std::exception& e) {
          record_error(std::string("borrower: ") + e.what());
        }
      }
    });
  }
  for (auto& w : workers)
    w.join();
  stop = true;
  sampler.join();

  for (const auto& e : errors)
    ADD_FAILURE() << e;
  EXPECT_GE(samples.load(), 20) << "the sampler must have looked often enough to mean something";
  EXPECT_LE(max_server.load(), 15) << "server connections with application_name " << app;
  EXPECT_GT(max_server.load(), 5) << "64 threads should have pushed the pool into overflow";
  EXPECT_LE(max_open.load(), 15);
  EXPECT_LE(max_checked_out.load(), 15);

  const pool::pool_stats st = p->stats();
  EXPECT_LE(st.peak_checked_out, 15);
  EXPECT_EQ(st.checkouts, served.load()) << "every lent connection was used by one borrower";
  EXPECT_EQ(st.timeouts, timed_out.load());
  EXPECT_EQ(st.checked_out, 0);
  EXPECT_EQ(st.waiting, 0);
  EXPECT_LE(st.connects, 15U + st.invalidations + st.recycles + st.idle_closes);
  // 15 connections for 3 s serve some 20000 borrows on a developer machine; a few hundred even
  // under ThreadSanitizer on a loaded CI runner, where most of the 10 ms waits time out.
  EXPECT_GT(served.load(), 100U);

  // Closing the pool closes its connections on the server too.
  p.reset();
  EXPECT_EQ(test::wait_for_backends(app, 0, 5s), 0);
}

// With every connection lent, acquire() fails after `timeout` (not much later), and the
// message names the pool and its state, so an operator can tell which knob to turn.
TEST_F(PoolLoad, AcquireTimesOutAfterTimeoutNamingThePoolState) {
  pool::settings s = settings_for("timeout");
  s.size = 2;
  s.max_overflow = 1;
  s.timeout = 500ms;
  pool::pool p(s);

  std::vector<pool::lease> held;
  for (int i = 0; i < 3; ++i)
    held.push_back(p.acquire());

  std::string message;
  const auto started = steady_clock::now();
  try {
    pool::lease extra = p.acquire();
    ADD_FAILURE() << "acquire() succeeded with every connection lent";
  } catch (const pool::pool_timeout& e) {
    message = e.what();
  }
  const auto elapsed = steady_clock::now() - started;
  EXPECT_GE(elapsed, 500ms);
  EXPECT_LT(elapsed, 1500ms);
  EXPECT_TRUE(std::regex_match(message, timeout_message_format("timeout", 2, 1))) << message;
  EXPECT_TRUE(contains(message, "pool 'timeout'")) << message;
  EXPECT_TRUE(contains(message, "within 0.5 s")) << message;
  EXPECT_TRUE(contains(message, "size 2")) << message;
  EXPECT_TRUE(contains(message, "overflow 1")) << message;
  EXPECT_TRUE(contains(message, "checked out 3")) << message;
  EXPECT_TRUE(contains(message, "waiting 1")) << message;

  // acquire_for() overrides the pool's timeout.
  const auto started_short = steady_clock::now();
  EXPECT_THROW((void)p.acquire_for(100ms), pool::pool_timeout);
  const auto elapsed_short = steady_clock::now() - started_short;
  EXPECT_GE(elapsed_short, 100ms);
  EXPECT_LT(elapsed_short, 1000ms);

  pool::pool_stats st = p.stats();
  EXPECT_EQ(st.timeouts, 2U);
  EXPECT_EQ(st.checked_out, 3);
  EXPECT_EQ(st.waiting, 0);

  // The lent connections were never disturbed by the timeouts.
  for (auto& l : held)
    EXPECT_EQ(l->exec("SELECT 1").one<int>(), 1);

  // Once a connection comes back, the next borrower gets one.
  held.pop_back();
  pool::lease again = p.acquire();
  EXPECT_EQ(again->exec("SELECT 2").one<int>(), 2);
}

// A borrower waiting for a full pool is handed the connection another borrower returns, as
// soon as it is returned: it neither times out nor waits for a new connection.
TEST_F(PoolLoad, WaitingBorrowerIsHandedAReturnedConnection) {
  pool::settings s = settings_for("handoff");
  s.size = 1;
  s.max_overflow = 0;
  s.timeout = 5s;
  pool::pool p(s);

  pool::lease held = p.acquire();
  const std::uint64_t held_id = held.connection_id();
  const int held_pid = held->backend_pid();
  std::thread returner([&] {
    std::this_thread::sleep_for(200ms);  // long enough that the borrower below is surely waiting
    held.release();
  });
  const auto started = steady_clock::now();
  pool::lease got = p.acquire();
  const auto waited = steady_clock::now() - started;
  returner.join();

  EXPECT_GE(waited, 150ms);
  EXPECT_LT(waited, 2s);
  EXPECT_EQ(got.connection_id(), held_id);
  EXPECT_EQ(got->backend_pid(), held_pid);
  EXPECT_EQ(got->exec("SELECT 1").one<int>(), 1);
  const pool::pool_stats st = p.stats();
  EXPECT_EQ(st.connects, 1U);
  EXPECT_EQ(st.timeouts, 0U);
  EXPECT_GE(st.wait_max_ms, 150.0);
}

// First come, first served: 16 threads share 2 connections for 2 s and every one of them gets
// a fair share. A pool that let running threads barge ahead forever would starve some.
//
// The pool controls how long each borrower waits, not how long the server takes to answer it:
// on a loaded machine a single `SELECT 1` over loopback now and then stalls for over a second
// (seen under parallel ctest), which costs that thread its count through no fault of the pool's.
// So a thread's share is its borrows per second spent outside its own queries. Time a thread
// spends runnable but not scheduled still counts against it: with 16 threads on an overloaded
// 2-core runner the least served one was once seen at a fifth of the mean (1 run in ~25), hence
// a sixth. A pool that let running threads barge ahead would leave some near zero, and the
// longest single wait catches outright starvation.
TEST_F(PoolLoad, SixteenThreadsOnTwoConnectionsAllGetAFairShare) {
  pool::settings s = settings_for("fairness");
  s.size = 2;
  s.max_overflow = 0;
  s.timeout = 10s;
  pool::pool p(s);

  struct share {
    std::uint64_t borrows = 0;
    steady_clock::duration in_queries{};
    steady_clock::duration longest_wait{};
  };
  constexpr int threads = 16;
  constexpr auto run_for = 2s;
  std::vector<share> shares(threads);
  std::atomic<int> failures{0};
  std::latch go(threads + 1);
  std::atomic<std::int64_t> deadline_ns{0};
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      go.arrive_and_wait();
      const steady_clock::time_point deadline{steady_clock::duration(deadline_ns.load())};
      share& mine = shares[static_cast<std::size_t>(t)];
      while (steady_clock::now() < deadline) {
        try {
          const auto asked = steady_clock::now();
          pool::lease lease = p.acquire();
          const auto lent = steady_clock::now();
          lease->exec("SELECT 1");
          mine.in_queries += steady_clock::now() - lent;
          mine.longest_wait = std::max(mine.longest_wait, lent - asked);
          ++mine.borrows;
        } catch (const std::exception& e) {
          ++failures;
          ADD_FAILURE() << "thread " << t << ": " << e.what();
          break;
        }
      }
    });
  }
  deadline_ns = (steady_clock::now() + run_for).time_since_epoch().count();
  go.arrive_and_wait();
  for (auto& w : workers)
    w.join();

  EXPECT_EQ(failures.load(), 0);
  std::uint64_t total = 0;
  std::vector<double> rates;
  std::string report;
  for (const share& sh : shares) {
    total += sh.borrows;
    const double outside_queries =
        std::chrono::duration<double>(run_for -
                                      std::min(sh.in_queries, steady_clock::duration(run_for)))
            .count();
    rates.push_back(static_cast<double>(sh.borrows) / std::max(outside_queries, 0.001));
    report += std::to_string(sh.borrows) + " (longest wait " +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::milliseconds>(sh.longest_wait).count()) +
              " ms), ";
  }
  const double mean_rate = std::accumulate(rates.begin(), rates.end(), 0.0) / threads;
  const double least_rate = *std::min_element(rates.begin(), rates.end());
  EXPECT_GT(total, 200U) << "2 connections for 2 s serve far more than this";
  EXPECT_GE(least_rate, mean_rate / 6) << "borrows per thread: " << report;
  for (const share& sh : shares) {
    // In a FIFO queue a borrower waits for the 15 ahead of it, a few milliseconds each.
    EXPECT_LT(sh.longest_wait, 1s) << "a borrower starved; borrows per thread: " << report;
  }

  const pool::pool_stats st = p.stats();
  EXPECT_EQ(st.timeouts, 0U);
  EXPECT_LE(st.peak_checked_out, 2);
  EXPECT_EQ(st.checkouts, total);
  EXPECT_EQ(st.connects, 2U) << "no connection should have been lost or replaced";
}

}  // namespace
