// connection behaviour that needs no server: empty objects, names, bad connection strings.

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"

namespace pg = sluice::pg;

TEST(PgConnection, TransactionStatusNames) {
  EXPECT_EQ(pg::to_string(pg::transaction_status::idle), "idle");
  EXPECT_EQ(pg::to_string(pg::transaction_status::active), "active");
  EXPECT_EQ(pg::to_string(pg::transaction_status::in_transaction), "in_transaction");
  EXPECT_EQ(pg::to_string(pg::transaction_status::in_error), "in_error");
  EXPECT_EQ(pg::to_string(pg::transaction_status::unknown), "unknown");
}

TEST(PgConnection, AnEmptyConnectionIsNeverUsable) {
  pg::connection conn;
  EXPECT_FALSE(conn.valid());
  EXPECT_FALSE(conn.is_ok());
  EXPECT_TRUE(conn.poisoned());
  EXPECT_EQ(conn.tx_status(), pg::transaction_status::unknown);
  EXPECT_EQ(conn.backend_pid(), 0);
  EXPECT_EQ(conn.server_version(), 0);
  EXPECT_EQ(conn.socket(), -1);
  EXPECT_EQ(conn.native(), nullptr);
  EXPECT_FALSE(conn.ping());
  EXPECT_THROW(conn.exec("SELECT 1"), pg::connection_error);
  EXPECT_THROW(conn.query("SELECT $1", 1), pg::connection_error);
  EXPECT_THROW(conn.query_cached("SELECT $1", 1), pg::connection_error);
  EXPECT_THROW(conn.wait_notification(std::chrono::milliseconds(1)), pg::connection_error);
  EXPECT_FALSE(conn.make_cancel_handle().valid());
  EXPECT_THROW(pg::transaction tx(conn), pg::connection_error);

  pg::connection moved = std::move(conn);
  EXPECT_FALSE(moved.valid());
}

TEST(PgConnection, AnEmptyCancelHandleSaysWhy) {
  const pg::cancel_handle handle;
  EXPECT_FALSE(handle.valid());
  std::string why;
  EXPECT_FALSE(handle.cancel(&why));
  EXPECT_FALSE(why.empty());
  EXPECT_FALSE(handle.cancel());
}

TEST(PgConnection, StatementCacheSettingsWithoutAServer) {
  pg::connection conn;
  EXPECT_EQ(conn.statement_cache_capacity(), 0U);
  conn.set_statement_cache_capacity(8);
  EXPECT_EQ(conn.statement_cache_capacity(), 8U);
  EXPECT_EQ(conn.statement_cache_size(), 0U);
  conn.forget_statement_cache();
  EXPECT_EQ(conn.statement_cache_size(), 0U);
}

namespace {

// Opens with a malformed conninfo and returns the error's message.
std::string open_error(const std::string& conninfo) {
  pg::connect_options options;
  options.conninfo = conninfo;
  options.connect_timeout = std::chrono::seconds(1);
  try {
    (void)pg::connection::open(options);
  } catch (const pg::connection_error& e) {
    EXPECT_TRUE(e.poisons_connection());
    return e.what();
  }
  ADD_FAILURE() << "connected with '" << conninfo << "'";
  return {};
}

}  // namespace

TEST(PgConnection, MalformedConninfoNeverEchoesThePassword) {
  // libpq quotes the piece it could not parse, which here is part of the password.
  std::string message = open_error("host=127.0.0.1 password=hunter2 bogus");
  EXPECT_NE(message.find("invalid connection string"), std::string::npos) << message;
  EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;
  EXPECT_EQ(message.find("bogus"), std::string::npos) << message;

  message = open_error("host=127.0.0.1 password=correct horse battery");
  EXPECT_EQ(message.find("correct"), std::string::npos) << message;
  EXPECT_EQ(message.find("horse"), std::string::npos) << message;

  message = open_error("postgresql://bob:hunter%2@127.0.0.1/db");
  EXPECT_EQ(message.find("hunter"), std::string::npos) << message;

  message = open_error("host=127.0.0.1 password='unterminated hunter2");
  EXPECT_EQ(message.find("hunter2"), std::string::npos) << message;

  // Not secret: kept, so the message still says what is wrong.
  message = open_error("host=127.0.0.1 sslmode=sometimes hostx=1");
  EXPECT_NE(message.find("hostx"), std::string::npos) << message;
}

// Statement names must differ between connections, or a server connection shared through a
// transaction pooler runs one client's statement for another (issue 17).
TEST(PgConnection, EveryConnectionHasItsOwnStatementNamePrefix) {
  std::vector<std::string> prefixes;
  for (int i = 0; i < 64; ++i) {
    pg::connection conn;
    prefixes.push_back(conn.statement_name_prefix());
  }
  for (const std::string& p : prefixes) {
    // "sluice_s" + 16 hex digits + "_": a plain identifier, with room for the counter.
    ASSERT_EQ(p.size(), 25U) << p;
    EXPECT_EQ(p.rfind("sluice_s", 0), 0U) << p;
    EXPECT_EQ(p.find_first_not_of("0123456789abcdef", 8), 24U) << p;
    EXPECT_EQ(p.back(), '_');
  }
  std::sort(prefixes.begin(), prefixes.end());
  EXPECT_EQ(std::adjacent_find(prefixes.begin(), prefixes.end()), prefixes.end());

  pg::connection a;
  const std::string prefix = a.statement_name_prefix();
  pg::connection b = std::move(a);
  EXPECT_EQ(b.statement_name_prefix(), prefix);  // moves with the connection
}
