// The pool's policy against a fake connector: no database needed.

#include <atomic>
#include <chrono>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/log.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/pool.hpp"
#include "support/eventually.hpp"
#include "support/fake_connector.hpp"

using namespace std::chrono_literals;
using sluice::pool::pool;
using sluice::pool::settings;
using sluice::test::fake_connector;
using sluice::test::manual_clock;

namespace {

settings small(int size, int overflow) {
  settings s;
  s.name = "unit";
  s.size = size;
  s.max_overflow = overflow;
  s.timeout = 2s;
  s.connect_backoff_initial = 10ms;
  s.connect_backoff_max = 40ms;
  return s;
}

using sluice::test::eventually;

}  // namespace

TEST(PoolPolicy, LendsAndTakesBackOneConnection) {
  auto fake = std::make_shared<fake_connector>();
  pool p(small(2, 1), fake);
  {
    auto a = p.acquire();
    ASSERT_TRUE(a);
    const auto st = p.stats();
    EXPECT_EQ(st.checked_out, 1);
    EXPECT_EQ(st.checked_in, 0);
    EXPECT_EQ(st.open, 1);
    EXPECT_EQ(st.max, 3);
  }
  const auto st = p.stats();
  EXPECT_EQ(st.checked_out, 0);
  EXPECT_EQ(st.checked_in, 1);
  EXPECT_EQ(st.checkouts, 1u);
  EXPECT_EQ(fake->connects.load(), 1);
}

TEST(PoolPolicy, ReusesReturnedConnection) {
  auto fake = std::make_shared<fake_connector>();
  pool p(small(2, 0), fake);
  std::uint64_t first = 0;
  {
    auto a = p.acquire();
    first = a.connection_id();
  }
  auto b = p.acquire();
  EXPECT_EQ(b.connection_id(), first);
  EXPECT_EQ(fake->connects.load(), 1);
}

TEST(PoolPolicy, OverflowConnectionsAreClosedOnReturnWithoutAGrace) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(2, 2);
  s.overflow_idle_grace = 0ms;
  pool p(s, fake);
  {
    std::vector<sluice::pool::lease> held;
    for (int i = 0; i < 4; ++i)
      held.push_back(p.acquire());
    const auto st = p.stats();
    EXPECT_EQ(st.open, 4);
    EXPECT_EQ(st.overflow, 2);
    EXPECT_EQ(st.peak_checked_out, 4);
  }
  const auto st = p.stats();
  EXPECT_EQ(st.open, 2);
  EXPECT_EQ(st.checked_in, 2);
  EXPECT_EQ(st.overflow, 0);
  EXPECT_EQ(st.idle_closes, 2u);
}

TEST(PoolPolicy, NeverOpensMoreThanSizePlusOverflowAndTimesOutWithState) {
  auto fake = std::make_shared<fake_connector>();
  pool p(small(1, 1), fake);
  auto a = p.acquire();
  auto b = p.acquire();
  const auto started = std::chrono::steady_clock::now();
  try {
    auto c = p.acquire_for(150ms);
    FAIL() << "acquire beyond size + overflow must time out";
  } catch (const sluice::pool::pool_timeout& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("pool 'unit'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("size 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("overflow 1"), std::string::npos) << msg;
    EXPECT_NE(msg.find("checked out 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("waiting 1"), std::string::npos) << msg;
  }
  EXPECT_GE(std::chrono::steady_clock::now() - started, 150ms);
  EXPECT_EQ(fake->connects.load(), 2);
  EXPECT_EQ(p.stats().timeouts, 1u);
  EXPECT_EQ(p.stats().waiting, 0);
}

TEST(PoolPolicy, LendsTheMostRecentlyReturnedConnectionFirst) {
  auto fake = std::make_shared<fake_connector>();
  pool p(small(3, 0), fake);
  auto a = p.acquire();
  auto b = p.acquire();
  auto c = p.acquire();
  const auto id_a = a.connection_id();
  const auto id_c = c.connection_id();
  a.release();
  c.release();
  auto next = p.acquire();
  EXPECT_EQ(next.connection_id(), id_c);
  auto after = p.acquire();
  EXPECT_EQ(after.connection_id(), id_a);
}

TEST(PoolPolicy, WaitersAreServedFirstComeFirstServed) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(1, 0);
  s.timeout = 10s;
  pool p(s, fake);
  auto held = p.acquire();
  std::mutex order_mutex;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto l = p.acquire();
      {
        const std::scoped_lock lock(order_mutex);
        order.push_back(i);
      }
    });
    // Let thread i queue before thread i+1 starts.
    ASSERT_TRUE(eventually([&] { return p.stats().waiting == i + 1; }));
  }
  held.release();
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

// A borrower that has waited longer than 2 ms is handed the next returned connection directly:
// the thread returning it cannot take it straight back.
TEST(PoolPolicy, AWaiterOlderThanTheHandoffAgeIsHandedTheNextReturnedConnection) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(1, 0);
  s.timeout = 10s;
  pool p(s, fake);
  auto held = p.acquire();
  std::uint64_t waiter_got = 0;
  std::latch checked(1);
  std::thread waiter([&] {
    auto l = p.acquire();
    waiter_got = l.connection_id();
    checked.wait();  // holds the connection until the main thread has tried to take it
  });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
  // Time passing is the condition itself: well past the 2 ms after which a waiter is due.
  std::this_thread::sleep_for(100ms);
  const auto id = held.connection_id();
  held.release();
  EXPECT_THROW((void)p.acquire_for(0ms), sluice::pool::pool_timeout)
      << "the returning thread took the connection back from a waiter that was due";
  checked.count_down();
  waiter.join();
  EXPECT_EQ(waiter_got, id);
}

// A thread in a tight loop is "prompt": its returns do not wake the waiter it would beat to the
// connection. The waiter still gets its turn (it wakes by itself and is then due), so a loop
// that never pauses cannot starve it.
TEST(PoolPolicy, APromptBorrowerInALoopDoesNotStarveAWaiter) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(1, 0);
  s.timeout = 10s;
  pool p(s, fake);
  std::atomic<bool> waiter_served{false};
  std::atomic<int> loops{0};
  std::thread looper([&] {
    while (!waiter_served.load()) {
      auto l = p.acquire();
      loops.fetch_add(1);
    }
  });
  ASSERT_TRUE(eventually([&] { return loops.load() > 100; }));
  for (int round = 0; round < 20; ++round) {
    EXPECT_NO_THROW({ auto l = p.acquire(); }) << "round " << round;
  }
  waiter_served.store(true);
  looper.join();
}

// The last return of a prompt thread skips the wake-up too, and then the thread does not come
// back: the waiter must find the idle connection by itself.
TEST(PoolPolicy, AWaiterIsServedWhenAPromptThreadStopsComingBack) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(1, 0);
  s.timeout = 10s;
  pool p(s, fake);
  int prompt_returns = 0;
  for (int round = 0; round < 20; ++round) {
    auto held = p.acquire();
    std::atomic<bool> got{false};
    std::thread waiter([&] {
      auto l = p.acquire();
      got.store(true);
    });
    ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
    // Return and take back at once, with the waiter queued: this thread counts as prompt.
    // (The woken waiter may win the race instead; then this round has no prompt return.)
    held.release();
    try {
      held = p.acquire_for(0ms);
      ++prompt_returns;
      held.release();  // a prompt return: no wake-up; and this thread asks for nothing more
    } catch (const sluice::pool::pool_timeout&) {
    }
    waiter.join();  // acquire() would throw pool_timeout after 10 s if the waiter were lost
    EXPECT_TRUE(got.load()) << "round " << round;
  }
  EXPECT_GT(prompt_returns, 0) << "no round took the connection back before the waiter";
}

// With a grace (the default, 1 s), overflow connections stay idle after their return and are
// reused by the next borrowers; the housekeeper closes them, down to `size`, once they have been
// idle for the grace. Demand just above `size` thus costs no connect per borrow.
TEST(PoolPolicy, OverflowConnectionsStayForTheirGraceThenClose) {
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(2, 2);
  s.overflow_idle_grace = 2s;
  s.housekeeping_interval = 1h;  // passes only when the test asks
  pool p(s, fake, clock.fn());
  const auto borrow_four = [&] {
    std::vector<sluice::pool::lease> held;
    for (int i = 0; i < 4; ++i)
      held.push_back(p.acquire());
  };
  borrow_four();
  EXPECT_EQ(p.stats().open, 4);
  EXPECT_EQ(p.stats().checked_in, 4);
  borrow_four();  // reuses them: no new connection
  EXPECT_EQ(p.stats().connects, 4u);
  clock.advance(1s);
  p.housekeep_now();
  EXPECT_EQ(p.stats().open, 4) << "closed before the grace";
  clock.advance(1500ms);
  p.housekeep_now();
  const auto st = p.stats();
  EXPECT_EQ(st.open, 2);
  EXPECT_EQ(st.overflow, 0);
  EXPECT_EQ(st.idle_closes, 2u);
  EXPECT_EQ(st.connects, 4u);
}

TEST(PoolPolicy, IdleConnectionsAboveMinIdleAreClosedAfterIdleTimeout) {
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(3, 0);
  s.idle_timeout = 1min;
  s.min_idle = 1;
  s.housekeeping_interval = 1h;  // passes only when the test asks
  pool p(s, fake, clock.fn());
  {
    auto a = p.acquire();
    auto b = p.acquire();
    auto c = p.acquire();
  }
  EXPECT_EQ(p.stats().open, 3);
  clock.advance(30s);
  p.housekeep_now();
  EXPECT_EQ(p.stats().open, 3);
  clock.advance(31s);
  p.housekeep_now();
  const auto st = p.stats();
  EXPECT_EQ(st.open, 1);
  EXPECT_EQ(st.idle_closes, 2u);
}

TEST(PoolPolicy, MinIdleIsKeptWarm) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(3, 0);
  s.min_idle = 2;
  s.housekeeping_interval = 5ms;
  pool p(s, fake);
  ASSERT_TRUE(eventually([&] { return p.stats().checked_in == 2; }));
  EXPECT_EQ(p.stats().open, 2);
}

TEST(PoolPolicy, ConnectionsOlderThanRecycleAreReplaced) {
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(1, 0);
  s.recycle = 10min;
  s.housekeeping_interval = 1h;
  pool p(s, fake, clock.fn());
  std::uint64_t first = 0;
  {
    auto a = p.acquire();
    first = a.connection_id();
  }
  clock.advance(9min);
  {
    auto a = p.acquire();
    EXPECT_EQ(a.connection_id(), first);
  }
  clock.advance(2min);
  auto b = p.acquire();
  EXPECT_NE(b.connection_id(), first);
  EXPECT_EQ(p.stats().recycles, 1u);
}

TEST(PoolPolicy, PrePingReplacesDeadConnectionWithoutTheBorrowerNoticing) {
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(2, 0);
  s.housekeeping_interval = 1h;
  pool p(s, fake, clock.fn());
  std::uint64_t id_a = 0;
  std::uint64_t id_b = 0;
  {
    auto a = p.acquire();
    auto b = p.acquire();
    id_a = a.connection_id();
    id_b = b.connection_id();
  }
  fake->kill(id_a);
  fake->kill(id_b);
  clock.advance(1s);  // past the pre-ping window
  auto c = p.acquire();
  EXPECT_NE(c.connection_id(), id_a);
  EXPECT_NE(c.connection_id(), id_b);
  const auto st = p.stats();
  EXPECT_EQ(st.pings_failed, 2u);
  EXPECT_EQ(st.open, 1);
}

TEST(PoolPolicy, RecentlyUsedConnectionIsNotPinged) {
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(1, 0);
  s.housekeeping_interval = 1h;
  pool p(s, fake, clock.fn());
  { auto a = p.acquire(); }
  const int pings = fake->pings.load();
  clock.advance(100ms);
  { auto a = p.acquire(); }
  EXPECT_EQ(fake->pings.load(), pings);
  clock.advance(600ms);
  { auto a = p.acquire(); }
  EXPECT_EQ(fake->pings.load(), pings + 1);
}

TEST(PoolPolicy, PoisonedOrInvalidatedConnectionsAreNeverLentAgain) {
  auto fake = std::make_shared<fake_connector>();
  pool p(small(1, 0), fake);
  std::uint64_t first = 0;
  {
    auto a = p.acquire();
    first = a.connection_id();
    fake->poison(first);
  }
  std::uint64_t second = 0;
  {
    auto b = p.acquire();
    second = b.connection_id();
    EXPECT_NE(second, first);
    b.invalidate();
  }
  auto c = p.acquire();
  EXPECT_NE(c.connection_id(), second);
  EXPECT_EQ(p.stats().invalidations, 2u);
}

TEST(PoolPolicy, RefusedConnectsAreBackPressureNotErrors) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(2, 0);
  s.timeout = 5s;
  s.connect_backoff_initial = 20ms;
  s.connect_backoff_max = 80ms;
  pool p(s, fake);
  auto held = p.acquire();
  fake->refuse_next(1000);
  std::thread borrower([&] {
    auto l = p.acquire();  // served by the connection the pool already holds
    EXPECT_EQ(l.connection_id(), 1u);
  });
  ASSERT_TRUE(eventually([&] { return p.stats().saturated; }));
  const auto refused = p.stats();
  EXPECT_GE(refused.server_refusals, 1u);
  EXPECT_NE(refused.last_connect_error.find("too many clients"), std::string::npos);
  std::this_thread::sleep_for(300ms);
  // Growing back-off: 300 ms at 20..80 ms (jittered down to half) allows at most ~20 attempts.
  EXPECT_LE(fake->connect_attempts.load(), 25);
  held.release();
  borrower.join();
  // The server frees slots: the pool grows again and is no longer saturated.
  fake->refuse_next(0);
  auto a = p.acquire();
  auto b = p.acquire();
  EXPECT_FALSE(p.stats().saturated);
  EXPECT_EQ(p.stats().open, 2);
}

TEST(PoolPolicy, TimeoutMessageCarriesLastConnectError) {
  auto fake = std::make_shared<fake_connector>();
  fake->refuse_next(1000, "57P03");
  pool p(small(1, 0), fake);
  try {
    auto l = p.acquire_for(200ms);
    FAIL() << "no connection can be opened";
  } catch (const sluice::pool::pool_timeout& e) {
    EXPECT_NE(std::string(e.what()).find("last connect error"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("refusing"), std::string::npos) << e.what();
  }
}

TEST(PoolPolicy, LeakWarningNamesTheBorrowersSourceLine) {
  std::mutex m;
  std::vector<std::string> warnings;
  sluice::set_log_sink([&](sluice::log_level level, std::string_view, std::string_view msg) {
    if (level >= sluice::log_level::warn) {
      const std::scoped_lock lock(m);
      warnings.emplace_back(msg);
    }
  });
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(1, 0);
  s.leak_threshold = 2s;
  s.housekeeping_interval = 1h;
  pool p(s, fake, clock.fn());
  const int line = __LINE__ + 1;
  auto leaked = p.acquire();
  clock.advance(1s);
  p.housekeep_now();
  EXPECT_EQ(p.stats().leaks, 0u);
  clock.advance(2s);
  p.housekeep_now();
  p.housekeep_now();  // reported once per lease
  EXPECT_EQ(p.stats().leaks, 1u);
  sluice::set_log_sink({});
  const std::scoped_lock lock(m);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("pool_policy_test.cpp:" + std::to_string(line)), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[0].find("held for 3.0 s"), std::string::npos) << warnings[0];
}

// A pre-ping is given what is left of the borrower's timeout: a connection whose server stopped
// answering costs the borrower no more than its timeout, and is discarded, never lent.
TEST(PoolPolicy, PrePingOfAFrozenConnectionKeepsTheAcquireTimeout) {
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(1, 0);
  s.housekeeping_interval = 1h;
  pool p(s, fake, clock.fn());
  std::uint64_t frozen = 0;
  {
    auto a = p.acquire();
    frozen = a.connection_id();
  }
  clock.advance(1s);  // past the pre-ping window: the next borrow pings
  fake->freeze(frozen);

  const auto started = std::chrono::steady_clock::now();
  std::uint64_t lent = 0;
  try {
    auto l = p.acquire_for(300ms);
    lent = l.connection_id();  // a new connection, opened after the frozen one was discarded
  } catch (const sluice::pool::pool_timeout&) {
    // Just as good: the borrower's time was used up by the ping.
  }
  const auto took = std::chrono::steady_clock::now() - started;
  fake->thaw(frozen);
  EXPECT_NE(lent, frozen);
  EXPECT_LT(took, 1s) << "the pre-ping was not bounded by the acquire timeout";
  EXPECT_LE(fake->last_ping_budget_ms.load(), 300);
  EXPECT_GE(fake->last_ping_budget_ms.load(), 100);
  const auto st = p.stats();
  EXPECT_EQ(st.pings_failed, 1u);
  EXPECT_EQ(st.checked_out, 0);
  // The frozen connection is gone for good: the next borrower gets a fresh one.
  auto next = p.acquire_for(2s);
  EXPECT_NE(next.connection_id(), frozen);
}

// A borrower with (almost) no time left still gives a healthy connection the time of a round
// trip, instead of discarding it unchecked.
TEST(PoolPolicy, PrePingGetsAMinimumBudgetWhenTheTimeoutIsZero) {
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(1, 0);
  s.housekeeping_interval = 1h;
  pool p(s, fake, clock.fn());
  std::uint64_t first = 0;
  {
    auto a = p.acquire();
    first = a.connection_id();
  }
  clock.advance(1s);
  auto l = p.acquire_for(0ms);
  EXPECT_EQ(l.connection_id(), first);
  EXPECT_EQ(fake->last_ping_budget_ms.load(), 100);
  EXPECT_EQ(p.stats().pings_failed, 0u);
}

// A reset on return whose server does not answer ends after `timeout`, and the connection is
// discarded: the borrower returning it is not held indefinitely.
TEST(PoolPolicy, ResetOfAFrozenConnectionIsBoundedAndDiscardsIt) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(1, 0);
  s.timeout = 200ms;
  pool p(s, fake);
  auto l = p.acquire();
  const auto id = l.connection_id();
  fake->freeze(id);
  const auto started = std::chrono::steady_clock::now();
  l.release();
  const auto took = std::chrono::steady_clock::now() - started;
  fake->thaw(id);
  EXPECT_EQ(fake->last_reset_budget_ms.load(), 200);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 1s);
  const auto st = p.stats();
  EXPECT_EQ(st.invalidations, 1u);
  EXPECT_EQ(st.checked_out, 0);
  EXPECT_EQ(st.checked_in, 0);
}

// A leak report is about a lease that is out. A connection between owners (in a borrower's
// pre-ping, or in the reset after its lease ended) is not reported, however long that takes;
// the lease starts when the borrower gets the connection, and its call site is the borrower's.
TEST(PoolPolicy, LeakReportsCountOnlyTheTimeALeaseIsOut) {
  std::mutex m;
  std::vector<std::string> warnings;
  sluice::set_log_sink([&](sluice::log_level level, std::string_view, std::string_view msg) {
    if (level >= sluice::log_level::warn) {
      const std::scoped_lock lock(m);
      warnings.emplace_back(msg);
    }
  });
  auto fake = std::make_shared<fake_connector>();
  manual_clock clock;
  auto s = small(1, 0);
  s.timeout = 10s;
  s.leak_threshold = 2s;
  s.housekeeping_interval = 1h;
  pool p(s, fake, clock.fn());
  std::uint64_t id = 0;
  {
    auto quick = p.acquire();  // returned at once: never a leak
    id = quick.connection_id();
  }
  clock.advance(3s);  // the quick lease ended longer ago than leak_threshold
  fake->freeze(id);

  // A borrower stuck in the pre-ping.
  sluice::pool::lease held;
  int line = 0;
  std::thread borrower([&] {
    line = __LINE__ + 1;
    held = p.acquire();
  });
  ASSERT_TRUE(eventually([&] { return fake->stuck_calls() == 1; }));
  clock.advance(3s);
  p.housekeep_now();
  EXPECT_EQ(p.stats().leaks, 0u) << "reported during the pre-ping";
  fake->thaw(id);
  borrower.join();
  ASSERT_TRUE(held);
  EXPECT_EQ(held.connection_id(), id);

  // The lease starts now: reported once it has been out longer than leak_threshold.
  clock.advance(1s);
  p.housekeep_now();
  EXPECT_EQ(p.stats().leaks, 0u);
  clock.advance(2s);
  p.housekeep_now();
  EXPECT_EQ(p.stats().leaks, 1u);

  // Its return is stuck in the reset: the lease has ended, nothing more to report.
  fake->freeze(id);
  std::thread returner([&] { held.release(); });
  ASSERT_TRUE(eventually([&] { return fake->stuck_calls() == 1; }));
  clock.advance(10s);
  p.housekeep_now();
  fake->thaw(id);
  returner.join();
  EXPECT_EQ(p.stats().leaks, 1u);
  EXPECT_EQ(p.stats().checked_in, 1);

  sluice::set_log_sink({});
  const std::scoped_lock lock(m);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("pool_policy_test.cpp:" + std::to_string(line)), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[0].find("held for 3.0 s"), std::string::npos) << warnings[0];
}

// Borrowers served without waiting count as waits of exactly 0: the percentiles say 0, not a
// value interpolated inside the first histogram bucket.
TEST(PoolPolicy, WaitPercentilesAreZeroWhenBorrowersDidNotWait) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(1, 0);
  s.min_idle = 1;
  s.housekeeping_interval = 5ms;
  {
    pool p(s, fake);
    ASSERT_TRUE(eventually([&] { return p.stats().checked_in == 1; }));
    for (int i = 0; i < 10; ++i)
      auto l = p.acquire();
    const auto st = p.stats();
    EXPECT_EQ(st.checkouts, 10u);
    EXPECT_EQ(st.wait_p50_ms, 0.0);
    EXPECT_EQ(st.wait_p99_ms, 0.0);
    EXPECT_EQ(st.wait_max_ms, 0.0);
    EXPECT_EQ(st.wait_bucket_counts[0], 10u);
  }
  // The first borrower waits for the connection to be opened; the next 99 do not.
  s.min_idle = 0;
  fake->connect_delay = 5ms;
  pool p(s, fake);
  for (int i = 0; i < 100; ++i)
    auto l = p.acquire();
  const auto st = p.stats();
  EXPECT_EQ(st.checkouts, 100u);
  EXPECT_EQ(st.wait_p50_ms, 0.0);
  EXPECT_GE(st.wait_max_ms, 4.0);
  std::uint64_t total = 0;
  for (const auto c : st.wait_bucket_counts)
    total += c;
  EXPECT_EQ(total, 100u);
  EXPECT_GE(st.wait_sum_ms, 4.0);
}

// Timed-out acquisitions are waits too, but they lent nothing: they must not be subtracted from
// the borrowers that were served at once.
TEST(PoolPolicy, TimeoutsDoNotHideZeroWaits) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(1, 0);
  s.min_idle = 1;
  s.housekeeping_interval = 5ms;
  pool p(s, fake);
  ASSERT_TRUE(eventually([&] { return p.stats().checked_in == 1; }));
  {
    auto held = p.acquire();
    for (int i = 0; i < 3; ++i)
      EXPECT_THROW((void)p.acquire_for(1ms), sluice::pool::pool_timeout);
  }
  for (int i = 0; i < 2; ++i)
    auto l = p.acquire();
  // 3 borrowers served at once, 3 timeouts (waits of at least 1 ms).
  const auto st = p.stats();
  EXPECT_EQ(st.timeouts, 3u);
  EXPECT_EQ(st.checkouts, 3u);
  std::uint64_t total = 0;
  for (const auto c : st.wait_bucket_counts)
    total += c;
  EXPECT_EQ(total, 6u);
  EXPECT_EQ(st.wait_p50_ms, 0.0);  // rank 3 of 6: still a zero wait
  EXPECT_GE(st.wait_p99_ms, 0.5);  // in the bucket of the 1 ms waits
}

TEST(PoolPolicy, LeaseMayOutliveItsPool) {
  auto fake = std::make_shared<fake_connector>();
  auto p = std::make_unique<pool>(small(1, 0), fake);
  auto l = p->acquire();
  p.reset();
  EXPECT_TRUE(l);
  l.release();  // closes the connection; the pool's machinery is freed here
  EXPECT_FALSE(l);
}

TEST(PoolPolicy, CloseWakesWaitersAndRefusesNewBorrowers) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(1, 0);
  s.timeout = 10s;
  pool p(s, fake);
  auto held = p.acquire();
  std::atomic<bool> closed_seen{false};
  std::thread waiter([&] {
    try {
      auto l = p.acquire();
    } catch (const sluice::pool::pool_closed&) {
      closed_seen = true;
    }
  });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
  std::thread closer([&] { EXPECT_EQ(p.close(2s), 0); });
  waiter.join();
  EXPECT_TRUE(closed_seen);
  held.release();  // lets close() finish its grace period early
  closer.join();
  EXPECT_THROW((void)p.acquire(), sluice::pool::pool_closed);
  EXPECT_EQ(p.stats().open, 0);
}

TEST(PoolPolicy, ManyThreadsNeverExceedTheMaximum) {
  auto fake = std::make_shared<fake_connector>();
  auto s = small(3, 2);
  s.timeout = 10s;
  pool p(s, fake);
  std::atomic<int> in_hand{0};
  std::atomic<int> worst{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        auto l = p.acquire();
        const int now = in_hand.fetch_add(1) + 1;
        int w = worst.load();
        while (now > w && !worst.compare_exchange_weak(w, now)) {
        }
        if (i % 7 == 0) std::this_thread::yield();
        in_hand.fetch_sub(1);
      }
    });
  }
  for (auto& t : threads)
    t.join();
  const auto st = p.stats();
  EXPECT_LE(worst.load(), 5);
  EXPECT_LE(st.peak_checked_out, 5);
  EXPECT_LE(fake->connects.load() - static_cast<int>(st.idle_closes), 5);
  EXPECT_EQ(st.checkouts, 32u * 500u);
  EXPECT_EQ(st.checked_out, 0);
  EXPECT_EQ(st.timeouts, 0u);
}

TEST(PoolSettings, InvalidSettingsNameTheSetting) {
  auto expect_error = [](settings s, const std::string& needle) {
    try {
      sluice::pool::validate(s);
      ADD_FAILURE() << "expected an error mentioning " << needle;
    } catch (const sluice::pool::settings_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  settings s;
  s.size = 0;
  expect_error(s, "size");
  s = {};
  s.max_overflow = -1;
  expect_error(s, "max_overflow");
  s = {};
  s.min_idle = 6;
  expect_error(s, "min_idle");
  s = {};
  s.timeout = -1ms;
  expect_error(s, "timeout");
  s = {};
  s.recycle_jitter = 2;
  expect_error(s, "recycle_jitter");
  EXPECT_NO_THROW(sluice::pool::validate(settings{}));
  EXPECT_EQ(settings{}.effective_application_name(), "sluice/default");
}

TEST(PoolSettings, SeedEnvironmentVariablesOverrideDefaults) {
  auto env = [](std::string_view name) -> std::optional<std::string> {
    if (name == "DB_POOL_SIZE") return "7";
    if (name == "DB_MAX_OVERFLOW") return "3";
    if (name == "DB_POOL_RECYCLE") return "1800";
    if (name == "DB_POOL_TIMEOUT") return "12";
    return std::nullopt;
  };
  const auto s = sluice::pool::apply_env_overrides(settings{}, env);
  EXPECT_EQ(s.size, 7);
  EXPECT_EQ(s.max_overflow, 3);
  EXPECT_EQ(s.recycle, std::chrono::seconds(1800));
  EXPECT_EQ(s.timeout, std::chrono::seconds(12));
  auto bad = [](std::string_view name) -> std::optional<std::string> {
    if (name == "DB_POOL_SIZE") return "five";
    return std::nullopt;
  };
  try {
    (void)sluice::pool::apply_env_overrides(settings{}, bad);
    FAIL();
  } catch (const sluice::pool::settings_error& e) {
    EXPECT_NE(std::string(e.what()).find("DB_POOL_SIZE"), std::string::npos);
  }
}

TEST(PoolManager, NamedPoolsAreCreatedOnceAndShareTheBudget) {
  auto fake = std::make_shared<fake_connector>();
  sluice::pool::manager_settings ms;
  ms.connection_budget = 31;
  ms.dedicated_connections = 1;
  sluice::pool::pool_manager m(ms, fake);
  auto s = small(5, 10);
  s.name = "platform";
  m.add(s);
  s.name = "user_data";
  m.add(s);
  EXPECT_EQ(m.connections_needed(), 31);
  EXPECT_THROW(m.add(s), sluice::pool::settings_error);  // duplicate name
  s.name = "extra";
  s.size = 1;
  s.max_overflow = 0;
  try {
    m.add(s);
    FAIL() << "budget exceeded";
  } catch (const sluice::pool::budget_error& e) {
    EXPECT_NE(std::string(e.what()).find("32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("31"), std::string::npos) << e.what();
  }
  EXPECT_EQ(&m.get("platform"), m.find("platform"));
  EXPECT_THROW((void)m.get("nope"), std::out_of_range);
  { auto l = m.get("platform").acquire(); }
  const auto status = m.status();
  ASSERT_EQ(status.size(), 2u);
  EXPECT_EQ(status[0].name, "platform");
  EXPECT_EQ(status[0].size, 5);
  EXPECT_EQ(status[0].checked_in, 1);
  EXPECT_EQ(status[1].name, "user_data");
}
