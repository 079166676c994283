// The budget check against the server behind PgBouncer: the pools' connections are PgBouncer's
// clients there, and the server's max_connections bounds PgBouncer's own server connections, so
// a fleet whose client budgets add up to more than the server's capacity must still start (it
// was refused with "put PgBouncer in front" while already behind one). Connected directly, the
// same budget is still refused.

#include <string>

#include <gtest/gtest.h>

#include "sluice/pg/connection.hpp"
#include "sluice/pool/manager.hpp"
#include "support/pg_test_env.hpp"
#include "support/temp_pgbouncer.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace test = sluice::test;
using namespace std::chrono_literals;

namespace {

class PoolBudgetPgBouncer : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    const std::string why = test::temp_pgbouncer_unavailable_reason();
    ASSERT_TRUE(why.empty()) << "this test needs PgBouncer: " << why;
  }

  // A manager whose one pool may grow to more than the server allows (no connection is opened).
  static void add_oversized_pool(pool::pool_manager& m, int server_capacity) {
    pool::settings s;
    s.name = "big";
    s.size = server_capacity;
    s.max_overflow = 10;
    s.statement_cache = 0;
    m.add(s);
  }

  static int server_capacity(pg::connection& c) {
    return c
        .exec(
            "SELECT current_setting('max_connections')::int -"
            " current_setting('superuser_reserved_connections')::int")
        .one<int>();
  }
};

TEST_F(PoolBudgetPgBouncer, ClientBudgetsBehindPgBouncerAreNotCheckedAgainstTheServer) {
  pg::connection direct = test::test_connect("sluice-test-budget-direct");
  const int capacity = server_capacity(direct);
  test::temp_pgbouncer bouncer(direct);
  pg::connect_options o;
  o.conninfo = bouncer.conninfo();
  o.application_name = "sluice-test-budget-proxied";
  o.connect_timeout = 5s;
  pg::connection proxied = pg::connection::open(o);

  pool::pool_manager m;
  add_oversized_pool(m, capacity);
  const pool::budget_report r = m.check_budget(proxied, /*others=*/capacity);
  EXPECT_TRUE(r.through_proxy);
  EXPECT_TRUE(r.fits());
  EXPECT_GT(r.needed, r.available);
  EXPECT_NE(pool::describe(r).find("proxy"), std::string::npos) << pool::describe(r);

  // The same budget on a direct connection does not fit, and says by how much.
  try {
    (void)m.check_budget(direct, capacity);
    ADD_FAILURE() << "a budget above the server's capacity was accepted on a direct connection";
  } catch (const pool::budget_error& e) {
    EXPECT_NE(std::string(e.what()).find("Over by"), std::string::npos) << e.what();
  }
}

TEST_F(PoolBudgetPgBouncer, AnExplicitBudgetStillAppliesBehindPgBouncer) {
  pg::connection direct = test::test_connect("sluice-test-budget-direct");
  test::temp_pgbouncer bouncer(direct);
  pg::connect_options o;
  o.conninfo = bouncer.conninfo();
  o.connect_timeout = 5s;
  pg::connection proxied = pg::connection::open(o);

  pool::manager_settings ms;
  ms.connection_budget = 20;
  ms.dedicated_connections = 15;
  pool::pool_manager m(ms);
  pool::settings s;
  s.name = "small";
  s.size = 5;
  s.max_overflow = 0;
  m.add(s);  // 5 + 15 = 20: at the budget
  pool::budget_report r = m.check_budget(proxied);
  EXPECT_TRUE(r.through_proxy);
  EXPECT_TRUE(r.fits());
  r.needed = 21;  // what one more connection would need
  EXPECT_FALSE(r.fits());
  EXPECT_NE(pool::describe(r).find("Over the connection_budget by 1"), std::string::npos)
      << pool::describe(r);
}

}  // namespace
