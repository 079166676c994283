// The pool against a server that misbehaves: full (53300), restarted under load, down when the
// pool starts, or too small for the pools' budget. Each test runs its own private cluster
// (tests/support/temp_cluster), because the shared test server must not be restarted or
// filled up under other tests' feet.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <sys/types.h>

#include "sluice/log.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/pool.hpp"
#include "support/eventually.hpp"
#include "support/pg_test_env.hpp"
#include "support/temp_cluster.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

using sluice::test::eventually;

// Collects the library's log messages (the pool warns at every refused or failed connect) so
// that they can be counted, and so they do not flood the test output.
class log_capture {
 public:
  log_capture() {
    sluice::set_log_sink([this](sluice::log_level, std::string_view, std::string_view message) {
      const std::scoped_lock lock(mutex_);
      messages_.emplace_back(message);
    });
  }
  log_capture(const log_capture&) = delete;
  log_capture& operator=(const log_capture&) = delete;
  ~log_capture() { sluice::set_log_sink({}); }

  std::string joined() {
    const std::scoped_lock lock(mutex_);
    std::string all;
    for (const auto& m : messages_)
      all += m + "\n";
    return all;
  }

  int count(const std::string& needle) {
    const std::scoped_lock lock(mutex_);
    return static_cast<int>(std::count_if(messages_.begin(), messages_.end(),
                                          [&](const auto& m) { return contains(m, needle); }));
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> messages_;  // guarded by mutex_
};

// Borrowers that loop acquire + query until stopped, counting what happens to them.
class borrower_crowd {
 public:
  borrower_crowd(pool::pool& p, int threads, std::string sql) : pool_(p), sql_(std::move(sql)) {
    for (int t = 0; t < threads; ++t)
      threads_.emplace_back([this] { run(); });
  }
  borrower_crowd(const borrower_crowd&) = delete;
  borrower_crowd& operator=(const borrower_crowd&) = delete;
  ~borrower_crowd() { stop(); }

  void stop() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  std::uint64_t served() const { return served_.load(); }
  std::uint64_t timeouts() const { return timeouts_.load(); }
  std::uint64_t pg_errors() const { return pg_errors_.load(); }
  std::set<int> pids() {
    const std::scoped_lock lock(mutex_);
    return pids_;
  }
  std::vector<std::string> unexpected() {
    const std::scoped_lock lock(mutex_);
    return unexpected_;
  }

 private:
  void run() {
    while (!stop_.load()) {
      try {
        pool::lease lease = pool_.acquire();
        const int pid = lease->exec(sql_).one<int>();
        ++served_;
        const std::scoped_lock lock(mutex_);
        pids_.insert(pid);
      } catch (const pool::pool_timeout&) {
        ++timeouts_;
      } catch (const pg::error&) {
        ++pg_errors_;  // the query's connection died under it: the server went away
      } catch (const std::exception& e) {
        const std::scoped_lock lock(mutex_);
        if (unexpected_.size() < 10) unexpected_.emplace_back(e.what());
      }
    }
  }

  pool::pool& pool_;
  const std::string sql_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> served_{0};
  std::atomic<std::uint64_t> timeouts_{0};
  std::atomic<std::uint64_t> pg_errors_{0};
  std::mutex mutex_;
  std::set<int> pids_;                   // guarded by mutex_
  std::vector<std::string> unexpected_;  // guarded by mutex_
  std::vector<std::thread> threads_;
};

class PoolServer : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::can_run_temp_cluster())
        << "these tests need a private PostgreSQL 15: " << test::temp_cluster_unavailable_reason();
  }
};

// ---- the test cluster itself ---------------------------------------------------------------

TEST_F(PoolServer, TempClusterAppliesItsSettingsAndKeepsItsPortAcrossRestarts) {
  std::string dir;
  {
    test::temp_cluster_options options;
    options.max_connections = 15;
    options.superuser_reserved_connections = 2;
    options.settings = {{"work_mem", "'8MB'"}};
    test::temp_cluster cluster(options);
    dir = cluster.directory();
    const int port = cluster.port();
    ASSERT_GT(port, 0);
    EXPECT_TRUE(cluster.running());
    EXPECT_TRUE(std::filesystem::exists(dir + "/.s.PGSQL." + std::to_string(port)))
        << "the Unix socket lives in the cluster's folder";

    pg::connection conn = cluster.connect();
    auto show = [&](const char* name) {
      return std::string(conn.exec(std::string("SHOW ") + name)[0].text(0));
    };
    EXPECT_EQ(show("max_connections"), "15");
    EXPECT_EQ(show("superuser_reserved_connections"), "2");
    EXPECT_EQ(show("work_mem"), "8MB");
    EXPECT_EQ(show("fsync"), "off");
    EXPECT_EQ(conn.exec("SELECT inet_server_port()").one<int>(), port);

    cluster.restart();
    EXPECT_EQ(cluster.port(), port);
    EXPECT_THROW(conn.exec("SELECT 1"), pg::error) << "a restart ends every session";
    EXPECT_EQ(cluster.connect().exec("SELECT 1").one<int>(), 1);

    cluster.stop();
    EXPECT_FALSE(cluster.running());
    cluster.stop();  // idempotent
    EXPECT_THROW((void)cluster.connect(), pg::connection_error);
    cluster.start();
    EXPECT_EQ(cluster.connect().exec("SELECT inet_server_port()").one<int>(), port);

    // Crash recovery after an immediate stop works too.
    cluster.restart(test::shutdown_mode::immediate);
    EXPECT_EQ(cluster.connect().exec("SELECT 1").one<int>(), 1);
  }
  EXPECT_FALSE(std::filesystem::exists(dir)) << "the destructor removes the cluster's folder";
}

// ---- back-pressure -------------------------------------------------------------------------

// The seed's outage: another process took every free slot, and the server refused new
// connections ("remaining connection slots are reserved", 53300). The pool keeps serving its
// borrowers from what it holds, reports itself saturated, retries with a bounded, backed-off
// number of attempts, and grows again once slots free up.
TEST_F(PoolServer, FullServerIsBackPressureNotFailure) {
  test::temp_cluster_options options;
  options.max_connections = 12;
  options.superuser_reserved_connections = 3;  // 9 slots for non-superusers such as `app`
  test::temp_cluster cluster(options);
  cluster.connect().exec("CREATE ROLE app LOGIN");
  log_capture logs;

  pool::settings s;
  s.name = "backpressure";
  s.conninfo = cluster.conninfo("app");
  s.application_name = "sluice-test-backpressure";
  s.size = 2;
  s.max_overflow = 8;
  s.timeout = 10s;
  s.connect_backoff_initial = 100ms;
  s.connect_backoff_max = 1s;
  s.housekeeping_interval = 100ms;
  pool::pool p(s);
  {
    pool::lease a = p.acquire();
    pool::lease b = p.acquire();
  }
  ASSERT_EQ(p.stats().open, 2);

  // Another client takes every slot left.
  std::vector<pg::connection> fillers;
  std::string refusal;
  std::string refusal_state;
  while (fillers.size() < 20) {
    try {
      fillers.push_back(cluster.connect("sluice-test-filler", "app"));
    } catch (const pg::connection_error& e) {
      refusal = e.what();
      refusal_state = e.sqlstate();
      break;
    }
  }
  ASSERT_EQ(refusal_state, "53300") << refusal;
  ASSERT_GE(fillers.size(), 1U);

  // Borrowers contend for the two connections for 3 s.
  const auto phase_start = steady_clock::now();
  borrower_crowd crowd(p, 6, "SELECT pg_backend_pid() FROM pg_sleep(0.005)");
  bool saw_saturated = false;
  int max_open = 0;
  while (steady_clock::now() < phase_start + 3s) {
    const pool::pool_stats st = p.stats();
    saw_saturated = saw_saturated || st.saturated;
    max_open = std::max(max_open, st.open);
    std::this_thread::sleep_for(20ms);  // the sampling period
  }
  const std::uint64_t served_while_full = crowd.served();
  const pool::pool_stats full = p.stats();
  EXPECT_TRUE(saw_saturated);
  EXPECT_TRUE(full.saturated) << "still refused, with borrowers waiting";
  EXPECT_GT(full.server_refusals, 0U);
  EXPECT_EQ(full.server_refusals, full.connect_failures) << "every failure was a refusal";
  EXPECT_LE(full.connect_failures, 15U) << "3 s of back-off from 100 ms to 1 s: a few attempts";
  EXPECT_EQ(full.connects, 2U);
  EXPECT_LE(max_open, 3) << "two held, at most one being attempted";
  EXPECT_TRUE(contains(full.last_connect_error, "53300") ||
              contains(full.last_connect_error, "remaining connection slots"))
      << full.last_connect_error;
  EXPECT_GT(served_while_full, 100U) << "borrowers kept being served from the two connections";
  EXPECT_EQ(crowd.timeouts(), 0U);
  EXPECT_EQ(crowd.pg_errors(), 0U);

  // Slots free up: the pool grows again and stops reporting saturation.
  fillers.clear();
  EXPECT_TRUE(eventually(
      [&] {
        const pool::pool_stats st = p.stats();
        return st.open > 2 && !st.saturated;
      },
      5s))
      << "open " << p.stats().open << ", saturated " << p.stats().saturated;
  crowd.stop();
  for (const auto& e : crowd.unexpected())
    ADD_FAILURE() << "a borrower saw: " << e;
  EXPECT_EQ(crowd.timeouts(), 0U);
  EXPECT_EQ(crowd.pg_errors(), 0U);

  p.close();
  const pool::pool_stats end = p.stats();
  EXPECT_GT(end.connects, 2U);
  EXPECT_LE(end.peak_checked_out, 10);
  EXPECT_EQ(logs.count("server refused a connection"), static_cast<int>(end.server_refusals))
      << "each refusal is logged once";
}

// ---- server restart ------------------------------------------------------------------------

// The server restarts under load. Borrowers see errors during the outage (their sessions were
// terminated, or no connection could be made in time), but the same pool object serves them
// again, on new backends, within seconds of the server coming back.
TEST_F(PoolServer, RecoversFromAServerRestartWithoutBeingRecreated) {
  test::temp_cluster cluster;
  log_capture logs;

  pool::settings s;
  s.name = "restart";
  s.conninfo = cluster.conninfo();
  s.application_name = "sluice-test-restart";
  s.size = 3;
  s.max_overflow = 2;
  s.timeout = 1s;
  s.connect_timeout = 2s;
  s.pre_ping_window = 100ms;
  s.connect_backoff_initial = 50ms;
  s.connect_backoff_max = 500ms;
  pool::pool p(s);

  borrower_crowd crowd(p, 4, "SELECT pg_backend_pid() FROM pg_sleep(0.002)");
  ASSERT_TRUE(eventually([&] { return crowd.served() >= 50; }, 5s));
  const std::set<int> pids_before = crowd.pids();

  cluster.restart(test::shutdown_mode::fast);  // returns once the server accepts connections
  const auto back = steady_clock::now();
  const std::uint64_t served_at_restart = crowd.served();

  // 20 consecutive borrows and queries must succeed soon after the server is back.
  int consecutive = 0;
  std::string last_error;
  std::set<int> pids_after;
  while (consecutive < 20 && steady_clock::now() < back + 10s) {
    try {
      pool::lease lease = p.acquire();
      pids_after.insert(lease->exec("SELECT pg_backend_pid()").one<int>());
      ++consecutive;
    } catch (const std::exception& e) {
      last_error = e.what();
      consecutive = 0;
      pids_after.clear();
    }
  }
  const auto recovered_after = steady_clock::now() - back;
  EXPECT_EQ(consecutive, 20) << "last error: " << last_error;
  EXPECT_LT(recovered_after, 5s);
  for (const int pid : pids_after)
    EXPECT_EQ(pids_before.count(pid), 0U) << "pid " << pid;

  // The other borrowers recover too.
  EXPECT_TRUE(eventually([&] { return crowd.served() >= served_at_restart + 50; }, 5s));
  crowd.stop();
  for (const auto& e : crowd.unexpected())
    ADD_FAILURE() << "unexpected error type: " << e;

  // Every connection the pool holds now is a new backend.
  pg::connection admin = cluster.connect();
  for (const auto& row : admin.query("SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                                     s.application_name)) {
    EXPECT_EQ(pids_before.count(row.get<int>(0)), 0U);
  }
  const pool::pool_stats st = p.stats();
  EXPECT_GT(st.connects, 3U);
  EXPECT_GE(st.invalidations, 1U);
  EXPECT_LE(st.open, 5);
  EXPECT_FALSE(st.saturated);
}

// A pool created while the database is still down (a service starting before its database)
// waits, says why in its timeout message, and works once the server is up.
TEST_F(PoolServer, PoolCreatedWhileTheServerIsDownWorksOnceItIsUp) {
  test::temp_cluster cluster;
  cluster.stop();
  log_capture logs;

  pool::settings s;
  s.name = "early";
  s.conninfo = cluster.conninfo();
  s.application_name = "sluice-test-early";
  s.size = 2;
  s.max_overflow = 0;
  s.timeout = 10s;
  s.connect_timeout = 2s;
  s.connect_backoff_initial = 50ms;
  s.connect_backoff_max = 500ms;
  pool::pool p(s);  // opens nothing yet, so it cannot fail

  std::string message;
  try {
    (void)p.acquire_for(300ms);
    ADD_FAILURE() << "acquired a connection from a server that is down";
  } catch (const pool::pool_timeout& e) {
    message = e.what();
  }
  EXPECT_TRUE(contains(message, "last connect error")) << message;
  EXPECT_TRUE(contains(message, "port=" + std::to_string(cluster.port()))) << message;

  // A borrower waits across the server's start.
  std::atomic<bool> served{false};
  std::string error;
  steady_clock::duration waited{};
  std::thread borrower([&] {
    const auto started = steady_clock::now();
    try {
      pool::lease lease = p.acquire();
      served = lease->exec("SELECT 1").one<int>() == 1;
    } catch (const std::exception& e) {
      error = e.what();
    }
    waited = steady_clock::now() - started;
  });
  std::this_thread::sleep_for(500ms);  // the server stays down for a while
  const std::uint64_t failures_while_down = p.stats().connect_failures;
  cluster.start();
  borrower.join();
  EXPECT_TRUE(served.load()) << error;
  EXPECT_GE(waited, 400ms);
  EXPECT_LT(waited, 5s);

  EXPECT_GE(failures_while_down, 2U);
  EXPECT_LE(failures_while_down, 20U) << "back-off: the pool must not spin on a dead server";
  const pool::pool_stats st = p.stats();
  EXPECT_EQ(st.connects, 1U);
  EXPECT_TRUE(st.last_connect_error.empty()) << st.last_connect_error;
  EXPECT_FALSE(st.saturated);
  EXPECT_EQ(logs.count("connect failed") + logs.count("server refused"),
            static_cast<int>(st.connect_failures));
}

// ---- a frozen backend -------------------------------------------------------------------

// Stops a server process (SIGSTOP) as a hung host or a network black hole would: the socket
// stays open and nothing answers. Resumes it (SIGCONT) on thaw() or destruction, whatever the
// test's outcome, so that the cluster can be shut down.
class frozen_backend {
 public:
  explicit frozen_backend(int pid) : pid_(pid) {
    if (::kill(pid_, SIGSTOP) != 0) {
      throw std::system_error(errno, std::generic_category(), "SIGSTOP " + std::to_string(pid));
    }
  }
  frozen_backend(const frozen_backend&) = delete;
  frozen_backend& operator=(const frozen_backend&) = delete;
  ~frozen_backend() { thaw(); }
  void thaw() noexcept {
    if (pid_ > 0) ::kill(std::exchange(pid_, 0), SIGCONT);
  }

 private:
  pid_t pid_;
};

// Runs `f` on its own thread and tells whether it finished within `limit`.
class watched_call {
 public:
  template <class F>
  explicit watched_call(F f)
      : thread_([this, f = std::move(f)]() mutable {
          const auto started = steady_clock::now();
          f();
          const std::scoped_lock lock(mutex_);
          took_ = steady_clock::now() - started;
          done_ = true;
          cv_.notify_all();
        }) {}
  watched_call(const watched_call&) = delete;
  watched_call& operator=(const watched_call&) = delete;
  ~watched_call() { join(); }

  bool finished_within(std::chrono::milliseconds limit) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return done_; });
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }
  steady_clock::duration took() {
    const std::scoped_lock lock(mutex_);
    return took_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;              // guarded by mutex_
  steady_clock::duration took_{};  // guarded by mutex_
  std::thread thread_;
};

pool::settings frozen_test_settings(const test::temp_cluster& cluster, const std::string& name) {
  pool::settings s;
  s.name = name;
  s.conninfo = cluster.conninfo();
  s.application_name = "sluice-test-" + name;
  s.size = 1;
  s.max_overflow = 0;
  s.pre_ping_window = 50ms;
  s.housekeeping_interval = 50ms;
  s.connect_timeout = 1s;
  s.connect_backoff_initial = 50ms;
  s.connect_backoff_max = 200ms;
  return s;
}

// acquire() promises to wait at most `timeout`. The pre-ping of an idle connection whose
// backend no longer answers must not hold the borrower longer than that.
TEST_F(PoolServer, FrozenBackendDoesNotHoldABorrowerPastTheTimeout) {
  test::temp_cluster cluster;
  log_capture logs;
  pool::settings s = frozen_test_settings(cluster, "frozen-ping");
  s.timeout = 1s;
  pool::pool p(s);

  int pid = 0;
  {
    pool::lease lease = p.acquire();
    pid = lease->backend_pid();
  }
  std::this_thread::sleep_for(100ms);  // idle past pre_ping_window: the next borrow pings
  frozen_backend frozen(pid);

  std::string outcome;
  watched_call borrow([&] {
    try {
      pool::lease lease = p.acquire();
      outcome = "lent connection " + std::to_string(lease.connection_id());
    } catch (const std::exception& e) {
      outcome = e.what();
    }
  });
  const bool returned_in_time = borrow.finished_within(3s);
  frozen.thaw();
  borrow.join();
  EXPECT_TRUE(returned_in_time)
      << "acquire() with timeout 1 s was still blocked after 3 s: the pre-ping of a connection "
         "to a frozen backend has no time limit (outcome after thawing: "
      << outcome << ")";
  EXPECT_LT(borrow.took(), 2s) << outcome;
}

// Returning a connection resets it (here a ROLLBACK of the transaction the borrower left open).
// When its backend does not answer, the returning borrower is let go after `timeout`, the
// connection is discarded, and the pool carries on with a new one.
TEST_F(PoolServer, FrozenBackendDoesNotHoldAReturningBorrower) {
  test::temp_cluster cluster;
  log_capture logs;
  pool::settings s = frozen_test_settings(cluster, "frozen-reset");
  s.timeout = 1s;
  pool::pool p(s);

  pool::lease lease = p.acquire();
  const int pid = lease->backend_pid();
  const std::uint64_t first = lease.connection_id();
  lease->exec("BEGIN");
  frozen_backend frozen(pid);
  watched_call give_back([&] { lease.release(); });
  const bool returned_in_time = give_back.finished_within(3s);
  frozen.thaw();
  give_back.join();
  EXPECT_TRUE(returned_in_time) << "the ROLLBACK of a frozen backend's transaction was still "
                                   "blocking the lease's return after 3 s";
  EXPECT_GE(give_back.took(), 900ms) << "the reset was given less than the pool's timeout";
  EXPECT_LT(give_back.took(), 2s);
  EXPECT_EQ(p.stats().invalidations, 1U);
  EXPECT_EQ(p.stats().checked_out, 0);

  pool::lease next = p.acquire();
  EXPECT_NE(next.connection_id(), first);
  EXPECT_EQ(next->exec("SELECT 1").one<int>(), 1);
}

// A leak report must be about a lease that is out. A connection that is between owners (here,
// stuck in a borrower's pre-ping) must not be reported as leaked by its previous borrower, whose
// lease ended long ago.
TEST_F(PoolServer, LeakReportNamesOnlyLeasesThatAreOut) {
  test::temp_cluster cluster;
  log_capture logs;
  pool::settings s = frozen_test_settings(cluster, "leak-between");
  s.timeout = 10s;
  s.leak_threshold = 200ms;
  pool::pool p(s);

  int pid = 0;
  {
    pool::lease short_lease = p.acquire();  // returned at once: never a leak
    pid = short_lease->backend_pid();
  }
  std::this_thread::sleep_for(300ms);  // the short lease ended longer ago than leak_threshold
  frozen_backend frozen(pid);
  watched_call borrow([&] {
    try {
      pool::lease lease = p.acquire();
    } catch (const std::exception&) {
      // Whether this borrower is served is the other test's business.
    }
  });
  EXPECT_FALSE(borrow.finished_within(400ms)) << "the pre-ping should still be waiting";
  frozen.thaw();
  borrow.join();
  EXPECT_EQ(logs.count("possibly leaked"), 0) << logs.joined();
  EXPECT_EQ(p.stats().leaks, 0U);
}

// ---- connection budget ---------------------------------------------------------------------

class PoolBudget : public PoolServer {
 protected:
  static void SetUpTestSuite() {
    test::temp_cluster_options options;
    options.max_connections = 20;
    options.superuser_reserved_connections = 3;
    cluster_ = std::make_unique<test::temp_cluster>(options);
  }
  static void TearDownTestSuite() { cluster_.reset(); }
  void SetUp() override {
    PoolServer::SetUp();
    ASSERT_NE(cluster_, nullptr) << "the suite's cluster did not start";
  }

  static pool::settings pool_settings(const std::string& name, int size, int overflow) {
    pool::settings s;
    s.name = name;
    s.conninfo = cluster_->conninfo();
    s.size = size;
    s.max_overflow = overflow;
    s.timeout = 5s;
    return s;
  }

  static inline std::unique_ptr<test::temp_cluster> cluster_;
};

// The seed's pools (5 + 10 each, twice) against a server with 20 slots, 3 reserved: the
// manager refuses at start-up, with the numbers and the knob to change.
TEST_F(PoolBudget, PoolsBeyondTheServersCapacityAreRefusedWithTheNumbers) {
  pool::pool_manager manager;
  manager.add(pool_settings("platform", 5, 10));
  manager.add(pool_settings("scheduler", 5, 10));
  EXPECT_EQ(manager.connections_needed(), 30);

  std::string message;
  try {
    (void)manager.check_budget();
    ADD_FAILURE() << "30 connections fit in 17 slots?";
  } catch (const pool::budget_error& e) {
    message = e.what();
  }
  EXPECT_TRUE(contains(message, "needs up to 30 connections")) << message;
  EXPECT_TRUE(contains(message, "allows 17")) << message;
  EXPECT_TRUE(contains(message, "max_connections 20")) << message;
  EXPECT_TRUE(contains(message, "3 reserved")) << message;
  EXPECT_TRUE(contains(message, "Over by 13")) << message;
}

TEST_F(PoolBudget, PoolsThatFitPassAndReportTheNumbers) {
  pool::manager_settings ms;
  ms.dedicated_connections = 1;  // e.g. the scheduler's LISTEN connection
  pool::pool_manager manager(ms);
  manager.add(pool_settings("platform", 5, 5));
  manager.add(pool_settings("scheduler", 3, 2));

  const pool::budget_report r = manager.check_budget();
  EXPECT_EQ(r.pools, 15);
  EXPECT_EQ(r.dedicated, 1);
  EXPECT_EQ(r.needed, 16);
  EXPECT_EQ(r.server_max_connections, 20);
  EXPECT_EQ(r.server_reserved, 3);
  EXPECT_EQ(r.server_capacity, 17);
  EXPECT_EQ(r.others, 0);
  EXPECT_EQ(r.available, 17);
  EXPECT_TRUE(r.fits());
  EXPECT_TRUE(contains(pool::describe(r), "Fits, with 1 to spare")) << pool::describe(r);

  // The same pools no longer fit once other nodes have budgeted 5 of the server's slots.
  pg::connection conn = cluster_->connect();
  std::string message;
  try {
    (void)manager.check_budget(conn, 5);
    ADD_FAILURE() << "16 connections fit in 17 - 5 slots?";
  } catch (const pool::budget_error& e) {
    message = e.what();
  }
  EXPECT_TRUE(contains(message, "5 are budgeted by other sluice nodes")) << message;
  EXPECT_TRUE(contains(message, "Over by 4")) << message;
}

// An explicit connection_budget is enforced as pools are added: the pool that would exceed it
// is refused and not created.
TEST_F(PoolBudget, ExplicitBudgetRefusesThePoolThatWouldExceedIt) {
  pool::manager_settings ms;
  ms.connection_budget = 16;
  ms.dedicated_connections = 1;
  pool::pool_manager manager(ms);
  manager.add(pool_settings("platform", 5, 5));   // 11 with the dedicated one
  manager.add(pool_settings("scheduler", 2, 3));  // 16: exactly the budget
  std::string message;
  try {
    manager.add(pool_settings("reports", 1, 0));  // 17
    ADD_FAILURE() << "a 17th connection fitted a budget of 16";
  } catch (const pool::budget_error& e) {
    message = e.what();
  }
  EXPECT_TRUE(contains(message, "pool 'reports'")) << message;
  EXPECT_TRUE(contains(message, "17 connections")) << message;
  EXPECT_TRUE(contains(message, "connection budget of 16")) << message;
  EXPECT_EQ(manager.find("reports"), nullptr);
  EXPECT_EQ(manager.names(), (std::vector<std::string>{"platform", "scheduler"}));
  EXPECT_EQ(manager.connections_needed(), 16);

  // Within its own budget and the server's 17 slots.
  const pool::budget_report r = manager.check_budget();
  EXPECT_EQ(r.explicit_budget, 16);
  EXPECT_EQ(r.needed, 16);
  EXPECT_TRUE(r.fits());
}

}  // namespace
