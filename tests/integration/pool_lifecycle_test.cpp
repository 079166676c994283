// A pooled connection's life against the real server: recycled when old, replaced without the
// borrower noticing when its backend died, reset between borrowers, reported when held too
// long, and its statement cache kept (or not) across leases.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <latch>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/log.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"
#include "support/eventually.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

pool::settings settings_for(const std::string& name) {
  pool::settings s;
  s.name = name;
  s.conninfo = test::test_conninfo();
  s.application_name = "sluice-test-" + name + "-" + test::unique_suffix();
  s.timeout = 10s;
  s.connect_backoff_initial = 20ms;
  s.connect_backoff_max = 200ms;
  return s;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

using sluice::test::eventually;

// Backend pids of the server connections with this application_name.
std::set<int> backends_of(const std::string& application_name) {
  pg::connection conn = test::test_connect("sluice-test-observer");
  std::set<int> pids;
  for (const auto& row : conn.query("SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                                    application_name)) {
    pids.insert(row.get<int>(0));
  }
  return pids;
}

// Kills every server connection with this application_name, as an administrator or a failover
// would, and waits until the server has let go of them. Returns how many there were.
int terminate_backends(const std::string& application_name) {
  pg::connection conn = test::test_connect("sluice-test-terminator");
  const int killed = static_cast<int>(
      conn.query("SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE application_name = $1) AS t",
                 application_name)
          .one<std::int64_t>());
  EXPECT_EQ(test::wait_for_backends(application_name, 0, 5s), 0);
  return killed;
}

// Captures the library's log messages for the lifetime of the object.
class log_capture {
 public:
  log_capture() {
    sluice::set_log_sink(
        [this](sluice::log_level level, std::string_view component, std::string_view message) {
          const std::scoped_lock lock(mutex_);
          entries_.push_back({level, std::string(component), std::string(message)});
          cv_.notify_all();
        });
  }
  log_capture(const log_capture&) = delete;
  log_capture& operator=(const log_capture&) = delete;
  ~log_capture() { sluice::set_log_sink({}); }

  struct entry {
    sluice::log_level level;
    std::string component;
    std::string message;
  };

  // Waits up to `limit` for a message containing `needle`; returns it, or empty on time-out.
  std::string wait_for(const std::string& needle, std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex_);
    std::string found;
    cv_.wait_for(lock, limit, [&] {
      for (const auto& e : entries_) {
        if (contains(e.message, needle)) {
          found = e.message;
          return true;
        }
      }
      return false;
    });
    return found;
  }

  int count(const std::string& needle) {
    const std::scoped_lock lock(mutex_);
    return static_cast<int>(std::count_if(entries_.begin(), entries_.end(), [&](const entry& e) {
      return contains(e.message, needle);
    }));
  }

  std::vector<entry> entries() {
    const std::scoped_lock lock(mutex_);
    return entries_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<entry> entries_;  // guarded by mutex_
};

class PoolLifecycle : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

// ---- recycle -----------------------------------------------------------------------------

// A connection older than `recycle` is closed and replaced by a new backend, but never taken
// away from a borrower who holds it.
TEST_F(PoolLifecycle, ConnectionOlderThanRecycleIsReplaced) {
  pool::settings s = settings_for("recycle");
  s.size = 1;
  s.max_overflow = 0;
  s.recycle = 1s;  // the smallest allowed
  s.housekeeping_interval = 50ms;
  pool::pool p(s);

  int first_pid = 0;
  std::uint64_t first_id = 0;
  {
    pool::lease lease = p.acquire();
    first_pid = lease->backend_pid();
    first_id = lease.connection_id();
    std::this_thread::sleep_for(1200ms);  // let the connection outlive `recycle` while lent
    EXPECT_EQ(lease->exec("SELECT pg_backend_pid()").one<int>(), first_pid)
        << "a lent connection must not be recycled under its borrower";
    EXPECT_EQ(p.stats().recycles, 0U);
  }
  // Returned past its lifetime: the housekeeper (or the next borrow) retires it.
  EXPECT_TRUE(eventually([&] { return p.stats().recycles >= 1; }, 3s))
      << "recycles: " << p.stats().recycles;

  pool::lease lease = p.acquire();
  const int second_pid = lease->exec("SELECT pg_backend_pid()").one<int>();
  EXPECT_NE(second_pid, first_pid);
  EXPECT_NE(lease.connection_id(), first_id);
  EXPECT_EQ(backends_of(s.application_name), std::set<int>{second_pid})
      << "the recycled backend must be gone from the server";
  const pool::pool_stats st = p.stats();
  EXPECT_EQ(st.recycles, 1U);
  EXPECT_EQ(st.connects, 2U);
  EXPECT_EQ(st.invalidations, 0U);
}

// ---- growing and shrinking ------------------------------------------------------------------

// Without a grace, a returned connection above `size` that nobody waits for is closed at once
// (SQLAlchemy's overflow), and the server has let its backend go by the time the borrower's
// release returns: a burst does not leave the server holding the pool's peak.
TEST_F(PoolLifecycle, OverflowConnectionsCloseWhenReturned) {
  pool::settings s = settings_for("overflow");
  s.size = 2;
  s.max_overflow = 3;
  s.overflow_idle_grace = 0ms;
  pool::pool p(s);

  {
    std::vector<pool::lease> burst;
    for (int i = 0; i < 5; ++i)
      burst.push_back(p.acquire());
    EXPECT_EQ(test::count_backends(s.application_name), 5);
    const pool::pool_stats st = p.stats();
    EXPECT_EQ(st.open, 5);
    EXPECT_EQ(st.overflow, 3);
    EXPECT_EQ(st.checked_out, 5);
  }
  const pool::pool_stats st = p.stats();
  EXPECT_EQ(st.open, 2);
  EXPECT_EQ(st.checked_in, 2);
  EXPECT_EQ(st.overflow, 0);
  EXPECT_EQ(st.idle_closes, 3U);
  EXPECT_EQ(test::count_backends(s.application_name), 2) << "a closed backend still counted";
}

// With a grace, overflow connections stay for the next burst and close once idle that long.
TEST_F(PoolLifecycle, OverflowConnectionsCloseAfterTheirGrace) {
  pool::settings s = settings_for("grace");
  s.size = 2;
  s.max_overflow = 3;
  s.overflow_idle_grace = 300ms;
  s.housekeeping_interval = 50ms;
  pool::pool p(s);
  for (int round = 0; round < 3; ++round) {
    std::vector<pool::lease> burst;
    for (int i = 0; i < 5; ++i)
      burst.push_back(p.acquire());
  }
  EXPECT_EQ(p.stats().connects, 5U) << "bursts within the grace reuse the overflow connections";
  const auto returned = steady_clock::now();
  EXPECT_TRUE(eventually([&] { return p.stats().open == 2; }, 5s)) << p.stats().open;
  EXPECT_GE(steady_clock::now() - returned, 250ms) << "closed before the grace";
  EXPECT_EQ(test::count_backends(s.application_name), 2);
}

// The budget is a hard promise, also while overflow connections churn: threads borrowing in
// bursts above `size` with no grace (a close and a connect on almost every borrow), sampled from
// pg_stat_activity thousands of times, never show the server more backends than size +
// max_overflow. A close counts against the pool until the server has let the backend go.
TEST_F(PoolLifecycle, OverflowChurnNeverExceedsTheCapacityOnTheServer) {
  pool::settings s = settings_for("churn");
  s.size = 1;
  s.max_overflow = 1;
  s.overflow_idle_grace = 0ms;
  s.timeout = 10s;
  pool::pool p(s);
  std::atomic<bool> stop{false};
  std::vector<std::thread> borrowers;
  // Three borrowers that pause between borrows: a connection often comes back with nobody
  // waiting (closed, above size) and is wanted again a moment later (opened).
  for (int t = 0; t < 3; ++t) {
    borrowers.emplace_back([&, t] {
      while (!stop.load()) {
        {
          auto l = p.acquire();
          l->exec("SELECT 1");
        }
        std::this_thread::sleep_for(std::chrono::microseconds(100 + 150 * t));
      }
    });
  }
  pg::connection sampler = test::test_connect("sluice-test-sampler");
  int samples = 0;
  int highest = 0;
  const auto end = steady_clock::now() + 4s;
  while (steady_clock::now() < end) {
    const int n = static_cast<int>(
        sampler
            .query("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                   s.application_name)
            .one<std::int64_t>());
    highest = std::max(highest, n);
    ++samples;
  }
  stop = true;
  for (auto& b : borrowers)
    b.join();
  const pool::pool_stats st = p.stats();
  std::printf("[ info     ] %d samples, highest %d backends (capacity 2), %llu connects\n", samples,
              highest, static_cast<unsigned long long>(st.connects));
  EXPECT_GE(samples, 1000);
  EXPECT_GT(st.connects, 20U) << "the test did not make the pool churn";
  EXPECT_LE(highest, s.size + s.max_overflow);
}

// The housekeeper closes connections idle longer than idle_timeout, down to min_idle, and
// opens connections up to min_idle before anyone asks.
TEST_F(PoolLifecycle, IdleConnectionsAboveMinIdleAreClosedAndMinIdleIsKeptWarm) {
  pool::settings s = settings_for("idle");
  s.size = 4;
  s.max_overflow = 0;
  s.min_idle = 2;
  s.idle_timeout = 300ms;
  s.housekeeping_interval = 50ms;
  pool::pool p(s);

  // Warm before the first borrower.
  EXPECT_EQ(test::wait_for_backends(s.application_name, 2, 5s), 2);
  EXPECT_EQ(p.stats().checkouts, 0U);

  {
    std::vector<pool::lease> all;
    for (int i = 0; i < 4; ++i)
      all.push_back(p.acquire());
    EXPECT_EQ(p.stats().open, 4);
  }
  const auto returned = steady_clock::now();
  EXPECT_EQ(p.stats().open, 4) << "within size: kept after return";
  EXPECT_TRUE(eventually([&] { return p.stats().open == 2; }, 5s)) << p.stats().open;
  EXPECT_GE(steady_clock::now() - returned, 250ms) << "closed before idle_timeout";
  EXPECT_EQ(test::wait_for_backends(s.application_name, 2, 5s), 2);
  const pool::pool_stats st = p.stats();
  EXPECT_EQ(st.idle_closes, 2U);
  EXPECT_EQ(st.checked_in, 2);
}

// ---- closing -------------------------------------------------------------------------------

// close() stops lending at once (a waiting borrower gets pool_closed), waits up to its grace
// period for leases to come back, and leaves no connection open once they have.
TEST_F(PoolLifecycle, CloseStopsLendingAndWaitsForLeases) {
  pool::settings s = settings_for("close");
  s.size = 1;
  s.max_overflow = 0;
  pool::pool p(s);

  pool::lease held = p.acquire();
  std::string waiter_error;
  std::thread waiter([&] {
    try {
      pool::lease l = p.acquire();
      waiter_error = "the waiter was lent a connection from a closed pool";
    } catch (const pool::pool_closed&) {
      waiter_error.clear();
    } catch (const std::exception& e) {
      waiter_error = std::string("wrong exception: ") + e.what();
    }
  });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));

  // The lease comes back 200 ms into a 5 s grace period: close() returns then, not at 5 s.
  std::thread returner([&] {
    std::this_thread::sleep_for(200ms);  // the borrower finishing its work
    EXPECT_EQ(held->exec("SELECT 1").one<int>(), 1) << "a lease stays usable while the pool closes";
    held.release();
  });
  const auto started = steady_clock::now();
  const int still_out = p.close(5s);
  const auto took = steady_clock::now() - started;
  waiter.join();
  returner.join();
  EXPECT_TRUE(waiter_error.empty()) << waiter_error;
  EXPECT_EQ(still_out, 0);
  EXPECT_GE(took, 150ms);
  EXPECT_LT(took, 3s);
  EXPECT_THROW((void)p.acquire(), pool::pool_closed);
  EXPECT_TRUE(p.stats().closed);
  EXPECT_EQ(p.stats().open, 0);
  EXPECT_EQ(test::wait_for_backends(s.application_name, 0, 5s), 0);
  EXPECT_EQ(p.close(), 0) << "idempotent";
}

// A lease may outlive its pool: it stays usable, and its connection is closed when it ends.
TEST_F(PoolLifecycle, LeaseOutlivesItsPool) {
  pool::settings s = settings_for("outlive");
  s.size = 2;
  s.max_overflow = 0;
  pool::lease survivor;
  {
    pool::pool p(s);
    pool::lease idle = p.acquire();
    survivor = p.acquire();
  }  // the idle connection closes with the pool; the lent one stays open
  EXPECT_EQ(test::wait_for_backends(s.application_name, 1, 5s), 1);
  EXPECT_EQ(survivor->exec("SELECT 42").one<int>(), 42);
  survivor.release();
  EXPECT_FALSE(survivor);
  EXPECT_EQ(test::wait_for_backends(s.application_name, 0, 5s), 0);
}

// ---- pre-ping ----------------------------------------------------------------------------

// Backends killed behind the pool's back (pg_terminate_backend, a failover, an idle-session
// timeout) are found by the pre-ping and replaced: no borrower ever sees the error.
TEST_F(PoolLifecycle, PrePingReplacesKilledBackendsWithoutTheBorrowerNoticing) {
  pool::settings s = settings_for("preping");
  s.size = 3;
  s.max_overflow = 0;
  s.pre_ping = true;
  s.pre_ping_window = 50ms;
  s.housekeeping_interval = 50ms;
  pool::pool p(s);

  // Three borrowers at once: the pool opens three connections.
  auto open_three = [&] {
    std::vector<pool::lease> leases;
    for (int i = 0; i < 3; ++i)
      leases.push_back(p.acquire());
    std::set<int> pids;
    for (auto& l : leases)
      pids.insert(l->backend_pid());
    return pids;
  };
  const std::set<int> old_pids = open_three();
  ASSERT_EQ(old_pids.size(), 3U);
  ASSERT_EQ(backends_of(s.application_name), old_pids);

  ASSERT_EQ(terminate_backends(s.application_name), 3);
  std::this_thread::sleep_for(100ms);  // let the idle connections age past pre_ping_window

  // Sequential borrowers: each works first time, on a new backend.
  for (int i = 0; i < 5; ++i) {
    pool::lease lease = p.acquire();
    int pid = 0;
    ASSERT_NO_THROW(pid = lease->exec("SELECT pg_backend_pid()").one<int>()) << "borrow " << i;
    EXPECT_EQ(old_pids.count(pid), 0U) << "borrow " << i << " got a killed backend";
  }
  pool::pool_stats st = p.stats();
  EXPECT_EQ(st.pings_failed, 3U) << "each of the three dead connections is found by a ping";
  EXPECT_EQ(st.checked_out, 0);

  // Concurrent borrowers, after killing the pool's connections again.
  const std::set<int> second_pids = open_three();
  ASSERT_EQ(second_pids.size(), 3U);
  ASSERT_EQ(terminate_backends(s.application_name), 3);
  std::this_thread::sleep_for(100ms);

  constexpr int threads = 3;
  std::latch all_hold(threads);
  std::mutex mutex;
  std::set<int> new_pids;  // guarded by mutex
  std::vector<std::string> errors;
  std::vector<std::thread> borrowers;
  for (int t = 0; t < threads; ++t) {
    borrowers.emplace_back([&] {
      bool arrived = false;
      try {
        pool::lease lease = p.acquire();
        const int pid = lease->exec("SELECT pg_backend_pid()").one<int>();
        {
          const std::scoped_lock lock(mutex);
          new_pids.insert(pid);
        }
        arrived = true;
        all_hold.arrive_and_wait();  // hold the lease until all three have one
      } catch (const std::exception& e) {
        const std::scoped_lock lock(mutex);
        errors.emplace_back(e.what());
        if (!arrived) all_hold.count_down();
      }
    });
  }
  for (auto& b : borrowers)
    b.join();
  for (const auto& e : errors)
    ADD_FAILURE() << "a borrower saw: " << e;
  EXPECT_EQ(new_pids.size(), 3U);
  for (const int pid : new_pids) {
    EXPECT_EQ(old_pids.count(pid) + second_pids.count(pid), 0U) << "pid " << pid << " was killed";
  }
  st = p.stats();
  EXPECT_EQ(st.pings_failed, 6U) << "the three idle connections were each pinged and discarded";
  EXPECT_LE(st.open, 3);
}

// ---- reset on return ---------------------------------------------------------------------

class PoolReset : public PoolLifecycle {
 protected:
  void SetUp() override {
    PoolLifecycle::SetUp();
    pg::connection conn = test::test_connect("sluice-test-setup");
    conn.exec("CREATE TABLE " + schema_.qualified("items") + " (x int)");
  }

  int committed_rows() {
    pg::connection conn = test::test_connect("sluice-test-observer");
    return static_cast<int>(
        conn.exec("SELECT count(*) FROM " + schema_.qualified("items")).one<std::int64_t>());
  }

  test::scoped_schema schema_{"sluice_pool"};
};

// The seed's borrowers sometimes returned connections mid-transaction. A lease dropped inside
// an open transaction commits nothing, and the next borrower of that same connection starts
// outside any transaction.
TEST_F(PoolReset, LeaseDroppedInsideATransactionIsRolledBack) {
  pool::settings s = settings_for("reset");
  s.size = 1;
  s.max_overflow = 0;
  s.reset_on_return = pool::reset_mode::rollback;
  pool::pool p(s);
  const std::string table = schema_.qualified("items");

  int pid = 0;
  {
    pool::lease lease = p.acquire();
    pid = lease->backend_pid();
    lease->exec("BEGIN");
    lease->exec("INSERT INTO " + table + " VALUES (1)");
    ASSERT_EQ(lease->tx_status(), pg::transaction_status::in_transaction);
  }
  {
    pool::lease lease = p.acquire();
    EXPECT_EQ(lease->backend_pid(), pid) << "size 1: the same connection, reset";
    EXPECT_EQ(lease->tx_status(), pg::transaction_status::idle);
    EXPECT_EQ(lease->exec("SELECT count(*) FROM " + table).one<std::int64_t>(), 0);
    // A failed transaction (25P02 for every later statement) is rolled back the same way.
    lease->exec("BEGIN");
    lease->exec("INSERT INTO " + table + " VALUES (2)");
    EXPECT_THROW(lease->exec("SELECT 1 / 0"), pg::sql_error);
    ASSERT_EQ(lease->tx_status(), pg::transaction_status::in_error);
  }
  {
    pool::lease lease = p.acquire();
    EXPECT_EQ(lease->backend_pid(), pid);
    EXPECT_EQ(lease->tx_status(), pg::transaction_status::idle);
    EXPECT_EQ(lease->exec("SELECT count(*) FROM " + table).one<std::int64_t>(), 0);
  }
  EXPECT_EQ(committed_rows(), 0);
  const pool::pool_stats st = p.stats();
  EXPECT_EQ(st.connects, 1U);
  EXPECT_EQ(st.invalidations, 0U);
}

// reset_on_return = none does not clean up: a connection left inside a transaction is
// discarded instead (its transaction dies with it), never lent again.
TEST_F(PoolReset, ResetNoneDiscardsAConnectionLeftInATransaction) {
  pool::settings s = settings_for("reset-none");
  s.size = 1;
  s.max_overflow = 0;
  s.reset_on_return = pool::reset_mode::none;
  pool::pool p(s);
  const std::string table = schema_.qualified("items");

  int pid = 0;
  {
    pool::lease lease = p.acquire();
    pid = lease->backend_pid();
    lease->exec("BEGIN");
    lease->exec("INSERT INTO " + table + " VALUES (1)");
  }
  pool::lease lease = p.acquire();
  EXPECT_NE(lease->backend_pid(), pid);
  EXPECT_EQ(lease->tx_status(), pg::transaction_status::idle);
  EXPECT_EQ(lease->exec("SELECT count(*) FROM " + table).one<std::int64_t>(), 0);
  EXPECT_EQ(committed_rows(), 0);
  EXPECT_EQ(p.stats().invalidations, 1U);
}

// Session settings made by a borrower survive into the next lease with the default reset
// (ROLLBACK only), and are wiped by reset_on_return = discard_all.
TEST_F(PoolReset, DiscardAllClearsSessionStateRollbackKeepsIt) {
  for (const pool::reset_mode mode : {pool::reset_mode::rollback, pool::reset_mode::discard_all}) {
    SCOPED_TRACE(std::string(pool::to_string(mode)));
    pool::settings s = settings_for("reset-session");
    s.size = 1;
    s.max_overflow = 0;
    s.reset_on_return = mode;
    pool::pool p(s);

    int pid = 0;
    {
      pool::lease lease = p.acquire();
      pid = lease->backend_pid();
      lease->exec("SET statement_timeout = '4321ms'");
      lease->exec("SET search_path TO " + schema_.name());
      lease->exec("CREATE TEMP TABLE scratch (x int)");
    }
    pool::lease lease = p.acquire();
    ASSERT_EQ(lease->backend_pid(), pid);
    const std::string timeout = std::string(lease->exec("SHOW statement_timeout")[0].text(0));
    const std::string search_path = std::string(lease->exec("SHOW search_path")[0].text(0));
    const bool temp_table =
        lease->exec("SELECT to_regclass('pg_temp.scratch') IS NOT NULL").one<bool>();
    if (mode == pool::reset_mode::rollback) {
      EXPECT_EQ(timeout, "4321ms");
      EXPECT_EQ(search_path, schema_.name());
      EXPECT_TRUE(temp_table);
    } else {
      EXPECT_EQ(timeout, "0");
      EXPECT_EQ(search_path, "\"$user\", public");
      EXPECT_FALSE(temp_table);
    }
    // Whatever the mode, the session's identity stays: application_name is a connection
    // parameter, which DISCARD ALL restores rather than clears.
    EXPECT_EQ(std::string(lease->exec("SHOW application_name")[0].text(0)), s.application_name);
  }
}

// The pool's own statement_timeout is part of the connection, not of a borrower's session
// state: DISCARD ALL between leases must not remove it.
TEST_F(PoolReset, DiscardAllKeepsThePoolsStatementTimeout) {
  pool::settings s = settings_for("reset-timeout");
  s.size = 1;
  s.max_overflow = 0;
  s.reset_on_return = pool::reset_mode::discard_all;
  s.statement_timeout = 1500ms;
  pool::pool p(s);

  for (int i = 0; i < 2; ++i) {
    pool::lease lease = p.acquire();
    EXPECT_EQ(std::string(lease->exec("SHOW statement_timeout")[0].text(0)), "1500ms")
        << "lease " << i << " (after " << i << " DISCARD ALL)";
  }
}

// `conninfo` with `-c` switches added to its startup options, whatever form it has (empty, a
// key=value string, or a URI, as DATABASE_URL is).
std::string with_startup_options(const std::string& conninfo, const std::string& options) {
  if (conninfo.rfind("postgresql://", 0) == 0 || conninfo.rfind("postgres://", 0) == 0) {
    std::string encoded;
    for (const char c : options) {
      if (c == ' ') {
        encoded += "%20";
      } else if (c == '=') {
        encoded += "%3D";
      } else {
        encoded += c;
      }
    }
    return conninfo + (conninfo.find('?') == std::string::npos ? "?" : "&") + "options=" + encoded;
  }
  return conninfo + (conninfo.empty() ? "" : " ") + "options='" + options + "'";
}

// The pool's statement_timeout joins the startup options the conninfo already has instead of
// replacing them, and wins over a statement_timeout among them; all of them survive DISCARD ALL.
TEST_F(PoolReset, StatementTimeoutJoinsTheConninfosStartupOptions) {
  pool::settings s = settings_for("reset-options");
  s.conninfo =
      with_startup_options(test::test_conninfo(), "-c lock_timeout=1234 -c statement_timeout=99");
  s.size = 1;
  s.max_overflow = 0;
  s.reset_on_return = pool::reset_mode::discard_all;
  s.statement_timeout = 1500ms;
  pool::pool p(s);

  for (int i = 0; i < 2; ++i) {
    pool::lease lease = p.acquire();
    EXPECT_EQ(std::string(lease->exec("SHOW lock_timeout")[0].text(0)), "1234ms") << "lease " << i;
    EXPECT_EQ(std::string(lease->exec("SHOW statement_timeout")[0].text(0)), "1500ms")
        << "lease " << i;
    lease->exec("SET lock_timeout = 1; SET statement_timeout = 2");  // undone by DISCARD ALL
  }
  EXPECT_EQ(p.stats().connects, 1U);
}

// Sets an environment variable for the lifetime of the object, restoring it afterwards. Only
// while no other thread of the process may read the environment (no pool alive).
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value, 1);
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;
  ~scoped_env() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// Without options in the conninfo, libpq would send PGOPTIONS: the pool's statement_timeout is
// added to them, not put in their place.
TEST_F(PoolReset, StatementTimeoutJoinsPgoptions) {
  const scoped_env env("PGOPTIONS", "-c lock_timeout=4321");
  {
    pool::settings s = settings_for("reset-pgoptions");
    s.size = 1;
    s.max_overflow = 0;
    s.statement_timeout = 1500ms;
    pool::pool p(s);
    pool::lease lease = p.acquire();
    EXPECT_EQ(std::string(lease->exec("SHOW lock_timeout")[0].text(0)), "4321ms");
    EXPECT_EQ(std::string(lease->exec("SHOW statement_timeout")[0].text(0)), "1500ms");
  }  // the pool and its threads are gone before the environment is restored
}

// ---- leak reports ------------------------------------------------------------------------

// A lease held longer than leak_threshold is reported once, naming the line that borrowed it.
TEST_F(PoolLifecycle, LeakWarningNamesTheBorrowersSourceLine) {
  log_capture logs;
  pool::settings s = settings_for("leak");
  s.size = 1;
  s.max_overflow = 0;
  s.leak_threshold = 200ms;
  s.housekeeping_interval = 50ms;
  pool::pool p(s);

  const auto borrowed_at = steady_clock::now();
  const int line = __LINE__ + 1;
  pool::lease lease = p.acquire();

  const std::string warning = logs.wait_for("possibly leaked", 5s);
  const auto reported_after = steady_clock::now() - borrowed_at;
  ASSERT_FALSE(warning.empty()) << "no leak warning within 5 s";
  std::string file = __FILE__;
  file = file.substr(file.find_last_of('/') + 1);
  EXPECT_TRUE(contains(warning, file + ":" + std::to_string(line))) << warning;
  EXPECT_TRUE(contains(warning, "pool 'leak'")) << warning;
  // The pool measures lease times with its coarse clock, which the housekeeper advances once
  // per tick (here 50 ms): a report may come up to one tick early, never more.
  EXPECT_GE(reported_after, 150ms) << "reported well before the threshold";
  EXPECT_EQ(p.stats().leaks, 1U);

  // Still held: not reported again.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(logs.count("possibly leaked"), 1);
  EXPECT_EQ(p.stats().leaks, 1U);
  for (const auto& e : logs.entries()) {
    if (contains(e.message, "possibly leaked")) {
      EXPECT_EQ(e.level, sluice::log_level::warn);
    }
  }

  // The next lease of the same connection is judged afresh, and a short one is not reported.
  lease.release();
  {
    pool::lease quick = p.acquire();
    EXPECT_EQ(quick->exec("SELECT 1").one<int>(), 1);
  }
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(p.stats().leaks, 1U);
}

// ---- statement cache -----------------------------------------------------------------------

int server_prepared_statements(pg::connection& conn) {
  return static_cast<int>(
      conn.exec("SELECT count(*) FROM pg_prepared_statements").one<std::int64_t>());
}

// The pool sizes each connection's statement cache; prepared statements survive from one lease
// to the next on the same connection.
TEST_F(PoolLifecycle, StatementCacheWorksAcrossLeases) {
  pool::settings s = settings_for("stmt-cache");
  s.size = 1;
  s.max_overflow = 0;
  s.statement_cache = 2;
  pool::pool p(s);

  {
    pool::lease lease = p.acquire();
    EXPECT_EQ(lease->statement_cache_capacity(), 2U);
    EXPECT_EQ(lease->query_cached("SELECT $1::int + 1", 1).one<int>(), 2);
  }
  {
    pool::lease lease = p.acquire();
    EXPECT_EQ(lease->statement_cache_size(), 1U) << "the cache survives the lease";
    EXPECT_EQ(server_prepared_statements(*lease), 1);
    EXPECT_EQ(lease->query_cached("SELECT $1::int + 1", 41).one<int>(), 42);
    EXPECT_EQ(server_prepared_statements(*lease), 1) << "reused, not prepared again";
    EXPECT_EQ(lease->query_cached("SELECT $1::int * 2", 21).one<int>(), 42);
    EXPECT_EQ(lease->query_cached("SELECT $1::int - 1", 43).one<int>(), 42);
    EXPECT_EQ(lease->statement_cache_size(), 2U) << "capacity 2: the oldest was evicted";
    EXPECT_LE(server_prepared_statements(*lease), 2) << "evicted statements are deallocated";
  }
}

// statement_cache = 0 (for PgBouncer's transaction pooling): query_cached still works, with
// unnamed statements only, so nothing is left prepared on the server.
TEST_F(PoolLifecycle, StatementCacheZeroUsesUnnamedStatements) {
  pool::settings s = settings_for("stmt-nocache");
  s.size = 1;
  s.max_overflow = 0;
  s.statement_cache = 0;
  pool::pool p(s);

  for (int i = 0; i < 2; ++i) {
    pool::lease lease = p.acquire();
    EXPECT_EQ(lease->statement_cache_capacity(), 0U);
    EXPECT_EQ(lease->query_cached("SELECT $1::int + 1", i).one<int>(), i + 1);
    EXPECT_EQ(lease->statement_cache_size(), 0U);
    EXPECT_EQ(server_prepared_statements(*lease), 0);
  }
}

// DISCARD ALL drops the server's prepared statements; the pool makes the connection forget
// its cache too, so the next borrower's query_cached prepares afresh instead of failing.
TEST_F(PoolLifecycle, StatementCacheSurvivesDiscardAll) {
  pool::settings s = settings_for("stmt-discard");
  s.size = 1;
  s.max_overflow = 0;
  s.statement_cache = 4;
  s.reset_on_return = pool::reset_mode::discard_all;
  pool::pool p(s);

  for (int i = 0; i < 3; ++i) {
    pool::lease lease = p.acquire();
    EXPECT_EQ(lease->statement_cache_size(), 0U) << "lease " << i;
    EXPECT_EQ(server_prepared_statements(*lease), 0) << "lease " << i;
    EXPECT_EQ(lease->query_cached("SELECT $1::int + 1", i).one<int>(), i + 1) << "lease " << i;
    EXPECT_EQ(server_prepared_statements(*lease), 1) << "lease " << i;
  }
  EXPECT_EQ(p.stats().connects, 1U);
  EXPECT_EQ(p.stats().invalidations, 0U);
}

}  // namespace
