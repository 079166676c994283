// The transaction guard: BEGIN with an isolation level, commit, rollback on destruction.

#include <string>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace test = sluice::test;

namespace {

class PgTransaction : public ::testing::Test {
 protected:
  void SetUp() override {
    conn_ = test::test_connect("sluice-test-tx");
    other_ = test::test_connect("sluice-test-tx-other");
    conn_.exec("CREATE TABLE " + table_ + " (id int PRIMARY KEY, note text)");
  }

  std::int64_t visible_rows() {
    return other_.exec("SELECT count(*) FROM " + table_).one<std::int64_t>();
  }

  test::scoped_schema schema_;
  const std::string table_ = schema_.qualified("t");
  pg::connection conn_;
  pg::connection other_;
};

}  // namespace

TEST_F(PgTransaction, ADroppedGuardRollsBack) {
  {
    pg::transaction tx(conn_);
    EXPECT_TRUE(tx.open());
    EXPECT_EQ(conn_.tx_status(), pg::transaction_status::in_transaction);
    conn_.query("INSERT INTO " + table_ + " VALUES ($1, $2)", 1, "never committed");
    EXPECT_EQ(conn_.exec("SELECT count(*) FROM " + table_).one<std::int64_t>(), 1);
  }
  EXPECT_EQ(conn_.tx_status(), pg::transaction_status::idle);
  EXPECT_EQ(conn_.exec("SELECT count(*) FROM " + table_).one<std::int64_t>(), 0);
  EXPECT_EQ(visible_rows(), 0);
  EXPECT_FALSE(conn_.poisoned());
}

TEST_F(PgTransaction, CommitMakesTheWorkVisible) {
  pg::transaction tx(conn_);
  conn_.query("INSERT INTO " + table_ + " VALUES ($1, $2)", 1, "kept");
  EXPECT_EQ(visible_rows(), 0);  // not yet
  tx.commit();
  EXPECT_FALSE(tx.open());
  EXPECT_EQ(visible_rows(), 1);
  EXPECT_EQ(conn_.tx_status(), pg::transaction_status::idle);
  EXPECT_THROW(tx.commit(), pg::error);  // only once
  EXPECT_NO_THROW(tx.rollback());        // a no-op now
  EXPECT_EQ(visible_rows(), 1);
}

TEST_F(PgTransaction, ExplicitRollback) {
  pg::transaction tx(conn_);
  conn_.query("INSERT INTO " + table_ + " VALUES ($1, $2)", 1, "undone");
  tx.rollback();
  EXPECT_FALSE(tx.open());
  EXPECT_EQ(conn_.tx_status(), pg::transaction_status::idle);
  EXPECT_EQ(visible_rows(), 0);
}

TEST_F(PgTransaction, IsolationLevels) {
  // Whatever the server default, the guard says which level it wants.
  conn_.exec("SET default_transaction_isolation = 'serializable'");
  {
    pg::transaction tx(conn_);
    EXPECT_EQ(conn_.exec("SHOW transaction_isolation").one<std::string>(), "read committed");
  }
  {
    pg::transaction tx(conn_, pg::transaction::isolation::repeatable_read);
    EXPECT_EQ(conn_.exec("SHOW transaction_isolation").one<std::string>(), "repeatable read");
  }
  {
    pg::transaction tx(conn_, pg::transaction::isolation::serializable);
    EXPECT_EQ(conn_.exec("SHOW transaction_isolation").one<std::string>(), "serializable");
    tx.commit();
  }
}

TEST_F(PgTransaction, CommitAfterAFailedStatementReportsTheRollback) {
  pg::transaction tx(conn_);
  conn_.query("INSERT INTO " + table_ + " VALUES ($1, $2)", 1, "first");
  EXPECT_THROW(conn_.query("INSERT INTO " + table_ + " VALUES ($1, $2)", 1, "duplicate"),
               pg::sql_error);
  EXPECT_EQ(conn_.tx_status(), pg::transaction_status::in_error);
  try {
    tx.commit();
    ADD_FAILURE() << "commit of a failed transaction did not throw";
  } catch (const pg::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "25P02");
    EXPECT_FALSE(e.poisons_connection());
  }
  EXPECT_EQ(conn_.tx_status(), pg::transaction_status::idle);
  EXPECT_EQ(visible_rows(), 0);
  EXPECT_FALSE(conn_.poisoned());
}

TEST_F(PgTransaction, AGuardInsideATransactionIsRefused) {
  pg::transaction outer(conn_);
  conn_.query("INSERT INTO " + table_ + " VALUES ($1, $2)", 1, "outer");
  EXPECT_THROW(pg::transaction inner(conn_), pg::error);
  // The outer transaction is untouched.
  EXPECT_EQ(conn_.tx_status(), pg::transaction_status::in_transaction);
  outer.commit();
  EXPECT_EQ(visible_rows(), 1);
}

TEST_F(PgTransaction, ALostConnectionPoisonsWithoutThrowingFromTheDestructor) {
  {
    pg::transaction tx(conn_);
    conn_.query("INSERT INTO " + table_ + " VALUES ($1, $2)", 1, "lost");
    EXPECT_TRUE(
        other_.query("SELECT pg_terminate_backend($1, 5000)", conn_.backend_pid()).one<bool>());
  }  // must not throw
  EXPECT_TRUE(conn_.poisoned());
  EXPECT_EQ(visible_rows(), 0);
}

TEST_F(PgTransaction, CommitOnALostConnectionSaysNothingWasCommitted) {
  pg::transaction tx(conn_);
  conn_.query("INSERT INTO " + table_ + " VALUES ($1, $2)", 1, "lost");
  EXPECT_TRUE(
      other_.query("SELECT pg_terminate_backend($1, 5000)", conn_.backend_pid()).one<bool>());
  // The next round trip finds the session gone; the transaction died with it.
  EXPECT_FALSE(conn_.ping());
  try {
    tx.commit();
    ADD_FAILURE() << "commit on a lost connection did not throw";
  } catch (const pg::connection_error& e) {
    EXPECT_TRUE(e.poisons_connection());
    EXPECT_EQ(e.kind(), pg::error_kind::poisoning) << e.what();
  }
  EXPECT_EQ(visible_rows(), 0);
}

TEST_F(PgTransaction, SerializationFailureIsRetryable) {
  // Write skew under SERIALIZABLE: each transaction reads what the other one writes.
  other_.exec("SET search_path TO " + schema_.name());
  conn_.exec("SET search_path TO " + schema_.name());
  conn_.exec("INSERT INTO t VALUES (1, 'a'), (2, 'b')");
  pg::transaction t1(conn_, pg::transaction::isolation::serializable);
  pg::transaction t2(other_, pg::transaction::isolation::serializable);
  (void)conn_.exec("SELECT count(*) FROM t WHERE note = 'a'");
  (void)other_.exec("SELECT count(*) FROM t WHERE note = 'b'");
  conn_.exec("UPDATE t SET note = 'b' WHERE id = 1");
  std::string sqlstate;
  pg::error_kind kind = pg::error_kind::ordinary;
  try {
    other_.exec("UPDATE t SET note = 'a' WHERE id = 2");
    t1.commit();
    t2.commit();
  } catch (const pg::sql_error& e) {
    sqlstate = e.sqlstate();
    kind = e.kind();
  }
  EXPECT_EQ(sqlstate, "40001");
  EXPECT_EQ(kind, pg::error_kind::retry_transaction);
  EXPECT_FALSE(conn_.poisoned());
  EXPECT_FALSE(other_.poisoned());
}
