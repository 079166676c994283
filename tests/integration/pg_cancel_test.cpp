// Cancelling a running statement from another thread, and statement_timeout.

#include <chrono>
#include <exception>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "support/eventually.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

// Waits until backend `pid` is running a statement. pg_stat_activity is the only signal.
bool wait_until_active(pg::connection& observer, int pid, std::chrono::milliseconds timeout) {
  return test::eventually(
      [&] {
        return observer
                   .query(
                       "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = "
                       "'active' AND query LIKE '%pg_sleep%'",
                       pid)
                   .one<std::int64_t>() == 1;
      },
      timeout, 5ms);
}

}  // namespace

TEST(PgCancel, ACancelledSleepEndsQuicklyAndLeavesTheConnectionUsable) {
  pg::connection conn = test::test_connect("sluice-test-cancel");
  pg::connection observer = test::test_connect("sluice-test-observer");
  const pg::cancel_handle handle = conn.make_cancel_handle();
  ASSERT_TRUE(handle.valid());

  std::exception_ptr failure;
  steady_clock::time_point ended;
  std::thread runner([&] {
    try {
      conn.exec("SELECT pg_sleep(10)");
    } catch (...) {
      failure = std::current_exception();
    }
    ended = steady_clock::now();
  });
  ASSERT_TRUE(wait_until_active(observer, conn.backend_pid(), 10s));
  const auto cancelled_at = steady_clock::now();
  std::string why;
  EXPECT_TRUE(handle.cancel(&why)) << why;
  runner.join();

  EXPECT_LT(ended - cancelled_at, 2s);
  ASSERT_TRUE(failure);
  try {
    std::rethrow_exception(failure);
  } catch (const pg::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "57014");
    EXPECT_EQ(e.kind(), pg::error_kind::query_canceled);
    EXPECT_FALSE(e.poisons_connection());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "unexpected error: " << e.what();
  }
  EXPECT_FALSE(conn.poisoned());
  EXPECT_EQ(conn.tx_status(), pg::transaction_status::idle);
  EXPECT_EQ(conn.query("SELECT 1").one<int>(), 1);
  EXPECT_TRUE(conn.ping());
}

TEST(PgCancel, CancellingInsideATransactionAbortsOnlyTheTransaction) {
  pg::connection conn = test::test_connect("sluice-test-cancel");
  pg::connection observer = test::test_connect("sluice-test-observer");
  const pg::cancel_handle handle = conn.make_cancel_handle();
  std::exception_ptr failure;
  {
    pg::transaction tx(conn);
    std::thread runner([&] {
      try {
        conn.exec("SELECT pg_sleep(10)");
      } catch (...) {
        failure = std::current_exception();
      }
    });
    ASSERT_TRUE(wait_until_active(observer, conn.backend_pid(), 10s));
    EXPECT_TRUE(handle.cancel());
    runner.join();
    EXPECT_EQ(conn.tx_status(), pg::transaction_status::in_error);
  }  // the guard rolls back
  ASSERT_TRUE(failure);
  EXPECT_FALSE(conn.poisoned());
  EXPECT_EQ(conn.tx_status(), pg::transaction_status::idle);
  EXPECT_EQ(conn.query("SELECT 2").one<int>(), 2);
}

TEST(PgCancel, CancelWithNothingRunningIsHarmless) {
  pg::connection conn = test::test_connect("sluice-test-cancel");
  EXPECT_TRUE(conn.make_cancel_handle().cancel());
  EXPECT_EQ(conn.query("SELECT 3").one<int>(), 3);
  EXPECT_FALSE(conn.poisoned());
}

TEST(PgCancel, StatementTimeoutCancelsWith57014) {
  pg::connection conn = test::test_connect("sluice-test-timeout");
  conn.set_statement_timeout(100ms);
  EXPECT_EQ(conn.query("SHOW statement_timeout").one<std::string>(), "100ms");
  const auto start = steady_clock::now();
  try {
    conn.exec("SELECT pg_sleep(5)");
    ADD_FAILURE() << "pg_sleep(5) was not cancelled";
  } catch (const pg::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "57014");
    EXPECT_EQ(e.kind(), pg::error_kind::query_canceled);
  }
  EXPECT_LT(steady_clock::now() - start, 2s);
  EXPECT_FALSE(conn.poisoned());

  conn.set_statement_timeout(0ms);
  EXPECT_EQ(conn.query("SHOW statement_timeout").one<std::string>(), "0");
  EXPECT_NO_THROW(conn.exec("SELECT pg_sleep(0.2)"));
  EXPECT_THROW(conn.set_statement_timeout(-1ms), std::invalid_argument);
}

TEST(PgCancel, StatementTimeoutFromConnectOptions) {
  pg::connect_options options;
  options.conninfo = test::test_conninfo();
  options.statement_timeout = 100ms;
  pg::connection conn = pg::connection::open(options);
  try {
    conn.exec("SELECT pg_sleep(5)");
    ADD_FAILURE() << "pg_sleep(5) was not cancelled";
  } catch (const pg::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "57014");
  }
}
