// sluice behind a real PgBouncer in transaction pooling mode (issue 17): a client's prepared
// statement can never run another client's SQL, a lost statement gives an error that names the
// fix, the proxy is detected, and a pool turns its statement cache off behind it.
// Each test starts a private PgBouncer (tests/support/temp_pgbouncer.hpp) in front of the test
// server; without PgBouncer installed the tests fail, naming the Debian package.

#include <atomic>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>

#include "sluice/log.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"
#include "support/pg_test_env.hpp"
#include "support/temp_pgbouncer.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace test = sluice::test;
using ::testing::HasSubstr;

namespace {

// The error a client gets instead of a wrong answer: the SQLSTATE kept, the fix named.
void expect_names_the_fix(const pg::sql_error& e) {
  EXPECT_THAT(e.sqlstate(), ::testing::AnyOf("26000", "42P05")) << e.what();
  EXPECT_THAT(e.message(), HasSubstr("PgBouncer"));
  EXPECT_THAT(e.message(), HasSubstr("statement_cache = 0"));
  EXPECT_THAT(e.message(), HasSubstr("set_statement_cache_capacity(0)"));
}

class PgBouncer : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string why = test::temp_pgbouncer_unavailable_reason();
    ASSERT_TRUE(why.empty()) << "these tests need PgBouncer: " << why;
    direct_ = test::test_connect("sluice-test-pgb-direct");
    start_bouncer(1);
  }

  void start_bouncer(int pool_size) {
    bouncer_.reset();
    test::temp_pgbouncer_options o;
    o.pool_mode = "transaction";
    o.default_pool_size = pool_size;
    bouncer_ = std::make_unique<test::temp_pgbouncer>(direct_, o);
  }

  pg::connection client(const std::string& name, std::size_t cache = 8) {
    pg::connect_options o;
    o.conninfo = bouncer_->conninfo();
    o.application_name = "sluice-test-pgb-" + name;
    pg::connection c = pg::connection::open(o);
    c.set_statement_cache_capacity(cache);
    return c;
  }

  // Closes every server connection of the bouncer once released (admin console), so the next
  // transaction runs on a fresh one that holds none of the statements prepared so far.
  void reconnect_servers() {
    pg::connect_options o;
    o.conninfo = bouncer_->admin_conninfo();
    pg::connection admin = pg::connection::open(o);
    admin.exec("RECONNECT");
  }

  pg::connection direct_;
  std::unique_ptr<test::temp_pgbouncer> bouncer_;
};

}  // namespace

// The failure, with the names every process used to generate: on the one server
// connection both clients share, B cannot prepare its SQL (42P05), and "its" statement runs A's.
TEST_F(PgBouncer, SharedNamesRunAnotherClientsStatement) {
  pg::connection a = client("a", 0);
  pg::connection b = client("b", 0);
  a.prepare("sluice_s0", "SELECT 'a'");
  EXPECT_EQ(a.exec_prepared("sluice_s0", {}).one<std::string>(), "a");
  try {
    b.prepare("sluice_s0", "SELECT 'b'");
    ADD_FAILURE() << "B prepared a name A's session already holds";
  } catch (const pg::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "42P05");
  }
  EXPECT_EQ(b.exec_prepared("sluice_s0", {}).one<std::string>(), "a") << "the bug as filed";
  a.exec("DEALLOCATE sluice_s0");
}

// The same two clients through the statement cache: names differ, so each gets its own
// answer (or, were a statement lost, an error naming the fix), never the other's.
TEST_F(PgBouncer, TheCacheNeverRunsAnotherClientsStatement) {
  pg::connection a = client("a");
  pg::connection b = client("b");
  EXPECT_NE(a.statement_name_prefix(), b.statement_name_prefix());

  int answers = 0;
  auto run = [&](pg::connection& c, const char* sql, const std::string& expected) {
    try {
      EXPECT_EQ(c.query_cached(sql).one<std::string>(), expected);
      ++answers;
    } catch (const pg::sql_error& e) {
      expect_names_the_fix(e);
    }
  };
  for (int round = 0; round < 20; ++round) {
    run(a, "SELECT 'a'", "a");
    run(b, "SELECT 'b'", "b");
    // Parameterised too, with the same text: each client's own statement, same answer rules.
    try {
      EXPECT_EQ(a.query_cached("SELECT $1::text || 'a'", "x").one<std::string>(), "xa");
      EXPECT_EQ(b.query_cached("SELECT $1::text || 'b'", "x").one<std::string>(), "xb");
    } catch (const pg::sql_error& e) {
      expect_names_the_fix(e);
    }
  }
  // One server connection: every statement stayed where it was prepared, so all answered.
  EXPECT_EQ(answers, 40);

  // The one server connection holds both clients' statements, side by side under their names.
  pg::connection observer = client("observer", 0);
  const pg::result r = observer.exec(
      "SELECT name, statement FROM pg_prepared_statements WHERE name LIKE 'sluice\\_s%' "
      "ORDER BY statement");
  ASSERT_EQ(r.rows(), 4U);
  for (const auto& row : r) {
    const std::string name = row.get<std::string>(0);
    const std::string statement = row.get<std::string>(1);
    const bool of_a = statement.back() == 'a' || statement.find("'a'") != std::string::npos;
    EXPECT_EQ(name.rfind(of_a ? a.statement_name_prefix() : b.statement_name_prefix(), 0), 0U)
        << name << ": " << statement;
  }
}

// A cached statement whose server connection went away: outside a transaction it is prepared
// again transparently; inside one the 26000 aborts it, with a message naming the fix.
TEST_F(PgBouncer, AStatementLostWithItsServerConnectionNamesTheFix) {
  pg::connection a = client("a");
  EXPECT_TRUE(a.through_proxy());
  const int first_server = a.exec("SELECT pg_backend_pid()").one<int>();
  EXPECT_EQ(a.query_cached("SELECT 'a'").one<std::string>(), "a");

  reconnect_servers();
  {
    pg::transaction tx(a);
    EXPECT_NE(a.exec("SELECT pg_backend_pid()").one<int>(), first_server);
    try {
      (void)a.query_cached("SELECT 'a'");
      ADD_FAILURE() << "a statement prepared on another server connection ran";
    } catch (const pg::sql_error& e) {
      expect_names_the_fix(e);
      EXPECT_EQ(e.sqlstate(), "26000");
      // The probe ran: the message says what it saw.
      EXPECT_THAT(e.message(), HasSubstr("goes through a proxy (127.0.0.1 port " +
                                         std::to_string(bouncer_->port())));
    }
  }
  // After the rollback it is prepared afresh.
  EXPECT_EQ(a.query_cached("SELECT 'a'").one<std::string>(), "a");

  // Outside a transaction, losing it again costs nothing but a second PREPARE.
  reconnect_servers();
  EXPECT_EQ(a.query_cached("SELECT 'a'").one<std::string>(), "a");
  EXPECT_FALSE(a.poisoned());
}

// Several clients over two server connections, so that a PREPARE and the EXECUTE after it
// may land on different ones: every answer is the client's own, every failure names the fix.
TEST_F(PgBouncer, ClientsSharingServerConnectionsGetTheirOwnAnswersOrTheFix) {
  start_bouncer(2);
  constexpr int clients = 6;
  constexpr int rounds = 60;
  std::atomic<int> answers{0};
  std::atomic<int> errors{0};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  std::vector<pg::connection> conns;
  for (int i = 0; i < clients; ++i)
    conns.push_back(client("c" + std::to_string(i), 2));
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      pg::connection& c = conns[static_cast<std::size_t>(i)];
      const std::string mine = "c" + std::to_string(i);
      // Every client's own SQL, under its own names; the texts churn the cache (capacity 2).
      const std::string sql[] = {"SELECT '" + mine + "'", "SELECT '" + mine + "' || ''",
                                 "SELECT ('" + mine + "')::text"};
      for (int r = 0; r < rounds; ++r) {
        try {
          if (c.query_cached(sql[r % 3]).one<std::string>() == mine) {
            ++answers;
          } else {
            ++wrong;
          }
        } catch (const pg::sql_error& e) {
          ++errors;
          expect_names_the_fix(e);
        }
      }
    });
  }
  for (auto& t : threads)
    t.join();
  EXPECT_EQ(wrong.load(), 0) << "a client got another client's answer";
  EXPECT_EQ(answers.load() + errors.load(), clients * rounds);
  EXPECT_GT(answers.load(), 0);
  std::cout << "answers " << answers.load() << ", errors naming the fix " << errors.load() << "\n";
}

TEST_F(PgBouncer, TheProbeTellsAProxyFromADirectConnection) {
  pg::connection through = client("probe", 0);
  const pg::proxy_probe& p = through.probe_proxy();
  EXPECT_TRUE(p.through_proxy);
  EXPECT_EQ(p.client_side, "127.0.0.1 port " + std::to_string(bouncer_->port()));
  EXPECT_EQ(p.server_side, "port " + std::string(PQport(direct_.native())));
  EXPECT_TRUE(through.through_proxy());  // answered from memory

  pg::connection direct = test::test_connect("sluice-test-pgb-probe");
  EXPECT_FALSE(direct.through_proxy())
      << direct.probe_proxy().client_side << " vs " << direct.probe_proxy().server_side;
}

// A pool with the cache on turns it off behind the proxy, and says so once, naming the key.
TEST_F(PgBouncer, APoolTurnsItsStatementCacheOffBehindAProxy) {
  std::mutex mutex;
  std::vector<std::string> warnings;
  sluice::set_log_sink(
      [&](sluice::log_level level, std::string_view component, std::string_view message) {
        if (level != sluice::log_level::warn || component != "pool") return;
        const std::scoped_lock lock(mutex);
        warnings.emplace_back(message);
      });
  struct restore_sink {
    restore_sink() = default;
    restore_sink(const restore_sink&) = delete;
    restore_sink& operator=(const restore_sink&) = delete;
    ~restore_sink() { sluice::set_log_sink({}); }
  } const restore;

  pool::settings s;
  s.name = "pgb_test";
  s.conninfo = bouncer_->conninfo();
  s.size = 2;
  s.max_overflow = 0;
  s.statement_cache = 100;
  {
    pool::pool p(s);
    pool::lease one = p.acquire();
    pool::lease two = p.acquire();
    EXPECT_EQ(one->statement_cache_capacity(), 0U);
    EXPECT_EQ(two->statement_cache_capacity(), 0U);
    EXPECT_EQ(one->query_cached("SELECT 'one'").one<std::string>(), "one");
  }
  {
    const std::scoped_lock lock(mutex);
    ASSERT_EQ(warnings.size(), 1U);
    EXPECT_THAT(warnings[0], HasSubstr("pool 'pgb_test'"));
    EXPECT_THAT(warnings[0], HasSubstr("statement_cache = 0 in [pools.pgb_test]"));
    EXPECT_THAT(warnings[0], HasSubstr("127.0.0.1 port " + std::to_string(bouncer_->port())));
  }

  s.name = "direct_test";
  s.conninfo = test::test_conninfo();
  {
    pool::pool p(s);
    pool::lease one = p.acquire();
    EXPECT_EQ(one->statement_cache_capacity(), 100U);
  }
  const std::scoped_lock lock(mutex);
  EXPECT_EQ(warnings.size(), 1U);
}
