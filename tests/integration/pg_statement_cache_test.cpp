// The per-connection statement cache: LRU eviction, DEALLOCATE, and recovery when the server
// forgot the statements behind the cache's back.

#include <string>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace test = sluice::test;

namespace {

class PgStatementCache : public ::testing::Test {
 protected:
  void SetUp() override {
    conn_ = test::test_connect("sluice-test-cache");
    schema_.use(conn_);
  }

  // Statements the server holds for this session under the cache's names. Asked with exec()
  // (unnamed statement), so asking changes nothing.
  std::int64_t server_statements() {
    return conn_
        .query("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE $1", "sluice\\_s%")
        .one<std::int64_t>();
  }

  test::scoped_schema schema_;
  pg::connection conn_;
};

const char* const add = "SELECT $1::int + 1";
const char* const mul = "SELECT $1::int * 2";
const char* const sub = "SELECT $1::int - 3";

}  // namespace

TEST_F(PgStatementCache, CapacityZeroPreparesNothing) {
  EXPECT_EQ(conn_.statement_cache_capacity(), 0U);
  EXPECT_EQ(conn_.query_cached(add, 1).one<int>(), 2);
  EXPECT_EQ(conn_.statement_cache_size(), 0U);
  EXPECT_EQ(server_statements(), 0);
}

TEST_F(PgStatementCache, EvictsTheLeastRecentlyUsedAndDeallocatesIt) {
  conn_.set_statement_cache_capacity(2);
  EXPECT_EQ(conn_.query_cached(add, 1).one<int>(), 2);
  EXPECT_EQ(conn_.query_cached(mul, 5).one<int>(), 10);
  EXPECT_EQ(conn_.statement_cache_size(), 2U);
  EXPECT_EQ(server_statements(), 2);

  // Using `add` again makes `mul` the least recent, so `sub` evicts `mul`.
  EXPECT_EQ(conn_.query_cached(add, 10).one<int>(), 11);
  EXPECT_EQ(conn_.query_cached(sub, 10).one<int>(), 7);
  EXPECT_EQ(conn_.statement_cache_size(), 2U);
  EXPECT_EQ(server_statements(), 2);  // DEALLOCATE went through
  const std::int64_t add_still_there =
      conn_.query("SELECT count(*) FROM pg_prepared_statements WHERE statement = $1", add)
          .one<std::int64_t>();
  EXPECT_EQ(add_still_there, 1);

  // Results stay right as statements come and go.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(conn_.query_cached(add, i).one<int>(), i + 1);
    EXPECT_EQ(conn_.query_cached(mul, i).one<int>(), i * 2);
    EXPECT_EQ(conn_.query_cached(sub, i).one<int>(), i - 3);
  }
  EXPECT_EQ(conn_.statement_cache_size(), 2U);
  EXPECT_EQ(server_statements(), 2);
  EXPECT_FALSE(conn_.poisoned());
}

TEST_F(PgStatementCache, AHitDoesNotPrepareAgain) {
  conn_.set_statement_cache_capacity(4);
  for (int i = 0; i < 10; ++i)
    EXPECT_EQ(conn_.query_cached(add, i).one<int>(), i + 1);
  EXPECT_EQ(server_statements(), 1);
  EXPECT_EQ(conn_.statement_cache_size(), 1U);
}

TEST_F(PgStatementCache, StatementsVanishedBehindItsBackArePreparedAgain) {
  conn_.set_statement_cache_capacity(2);
  EXPECT_EQ(conn_.query_cached(add, 1).one<int>(), 2);
  EXPECT_EQ(conn_.query_cached(mul, 2).one<int>(), 4);
  conn_.exec("DEALLOCATE ALL");
  EXPECT_EQ(server_statements(), 0);

  EXPECT_EQ(conn_.query_cached(add, 41).one<int>(), 42);
  EXPECT_EQ(conn_.query_cached(mul, 21).one<int>(), 42);
  EXPECT_EQ(conn_.statement_cache_size(), 2U);
  EXPECT_EQ(server_statements(), 2);
  EXPECT_FALSE(conn_.poisoned());
}

TEST_F(PgStatementCache, AVanishedStatementInsideATransactionFailsItOnce) {
  conn_.set_statement_cache_capacity(2);
  EXPECT_EQ(conn_.query_cached(add, 1).one<int>(), 2);
  conn_.exec("DEALLOCATE ALL");
  {
    pg::transaction tx(conn_);
    try {
      (void)conn_.query_cached(add, 1);
      ADD_FAILURE() << "a vanished statement inside a transaction did not fail";
    } catch (const pg::sql_error& e) {
      EXPECT_EQ(e.sqlstate(), "26000");
      EXPECT_FALSE(e.poisons_connection());
    }
    EXPECT_EQ(conn_.tx_status(), pg::transaction_status::in_error);
  }
  // After the rollback the next use prepares afresh.
  EXPECT_EQ(conn_.query_cached(add, 2).one<int>(), 3);
  EXPECT_EQ(server_statements(), 1);
  EXPECT_FALSE(conn_.poisoned());
}

TEST_F(PgStatementCache, EvictionInsideATransactionWaitsForItsEnd) {
  conn_.exec("CREATE TABLE t (v int)");
  conn_.set_statement_cache_capacity(1);
  EXPECT_EQ(conn_.query_cached(add, 1).one<int>(), 2);
  // The server forgets `add`; the cache does not know. Evicting it inside the transaction
  // must not run a DEALLOCATE that would fail and abort the caller's work.
  conn_.exec("DEALLOCATE ALL");
  {
    pg::transaction tx(conn_);
    EXPECT_EQ(conn_.query_cached(mul, 4).one<int>(), 8);  // evicts `add`
    conn_.query_cached("INSERT INTO t VALUES ($1)", 1);   // evicts `mul`
    EXPECT_EQ(conn_.tx_status(), pg::transaction_status::in_transaction);
    tx.commit();
  }
  EXPECT_EQ(conn_.exec("SELECT count(*) FROM t").one<std::int64_t>(), 1);
  // After the commit the deferred DEALLOCATEs ran: only the insert is left.
  EXPECT_EQ(server_statements(), 1);
  EXPECT_EQ(conn_.statement_cache_size(), 1U);
  EXPECT_FALSE(conn_.poisoned());
}

TEST_F(PgStatementCache, ShrinkingTheCapacityEvicts) {
  conn_.set_statement_cache_capacity(3);
  (void)conn_.query_cached(add, 1);
  (void)conn_.query_cached(mul, 1);
  (void)conn_.query_cached(sub, 1);
  EXPECT_EQ(server_statements(), 3);
  conn_.set_statement_cache_capacity(1);
  EXPECT_EQ(conn_.statement_cache_size(), 1U);
  EXPECT_EQ(server_statements(), 1);
  conn_.set_statement_cache_capacity(0);
  EXPECT_EQ(conn_.statement_cache_size(), 0U);
  EXPECT_EQ(server_statements(), 0);
  EXPECT_EQ(conn_.query_cached(sub, 5).one<int>(), 2);
}

TEST_F(PgStatementCache, ForgettingTheCacheNeverReusesAName) {
  conn_.set_statement_cache_capacity(2);
  (void)conn_.query_cached(add, 1);
  conn_.forget_statement_cache();  // as after a DISCARD ALL we did not actually run
  EXPECT_EQ(conn_.statement_cache_size(), 0U);
  // The server still has the old statement; the new one gets a fresh name, no 42P05.
  EXPECT_EQ(conn_.query_cached(add, 1).one<int>(), 2);
  EXPECT_EQ(server_statements(), 2);
}

TEST_F(PgStatementCache, ErrorsLeaveTheCacheIntact) {
  conn_.set_statement_cache_capacity(2);
  const char* const div = "SELECT 10 / $1::int";
  EXPECT_EQ(conn_.query_cached(div, 2).one<int>(), 5);
  try {
    (void)conn_.query_cached(div, 0);
    ADD_FAILURE() << "division by zero did not fail";
  } catch (const pg::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "22012");
    EXPECT_EQ(e.query(), div);
  }
  EXPECT_EQ(conn_.query_cached(div, 5).one<int>(), 2);
  EXPECT_EQ(conn_.statement_cache_size(), 1U);
  EXPECT_THROW((void)conn_.query_cached("SELEC broken", 1), pg::sql_error);
  EXPECT_EQ(conn_.statement_cache_size(), 1U);
  EXPECT_FALSE(conn_.poisoned());
}
