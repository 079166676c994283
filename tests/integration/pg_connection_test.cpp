// Opening, refusing, losing and using a connection against the real server.

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/pg/connection.hpp"
#include "support/eventually.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace test = sluice::test;
using namespace std::chrono_literals;
using std::chrono::steady_clock;

namespace {

class PgConnection : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    conn_ = test::test_connect("sluice-test-pg-connection");
    schema_.use(conn_);
  }

  test::scoped_schema schema_;
  pg::connection conn_;
};

// Catches the error `f` throws.
template <class E, class F>
E expect_throw(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  ADD_FAILURE() << "expected an exception";
  throw std::logic_error("expected an exception");
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// A conninfo for the test server as another user, built from a live connection's settings.
std::string conninfo_as(const pg::connection& conn, const std::string& user,
                        const std::string& password) {
  return "host=" + std::string(PQhost(conn.native())) + " port=" + PQport(conn.native()) +
         " dbname=" + PQdb(conn.native()) + " user=" + user + " password=" + password;
}

// Sets an environment variable for a scope (tests in one executable run one at a time).
class scoped_env {
 public:
  scoped_env(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
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

}  // namespace

TEST_F(PgConnection, OpensAndDescribesItself) {
  EXPECT_TRUE(conn_.valid());
  EXPECT_TRUE(conn_.is_ok());
  EXPECT_FALSE(conn_.poisoned());
  EXPECT_EQ(conn_.tx_status(), pg::transaction_status::idle);
  EXPECT_GT(conn_.backend_pid(), 0);
  EXPECT_GE(conn_.server_version(), 120000);
  EXPECT_GE(conn_.socket(), 0);
  EXPECT_TRUE(conn_.ping());
  EXPECT_EQ(conn_.query("SELECT pg_backend_pid()").one<int>(), conn_.backend_pid());

  const std::string& d = conn_.describe();
  EXPECT_EQ(d.rfind("host=", 0), 0U) << d;
  EXPECT_TRUE(contains(d, " port=")) << d;
  EXPECT_TRUE(contains(d, " dbname=")) << d;
  EXPECT_TRUE(contains(d, " user=")) << d;
  EXPECT_FALSE(contains(d, "password")) << d;
  EXPECT_TRUE(contains(d, "dbname=" + conn_.query("SELECT current_database()").one<std::string>()))
      << d;
}

TEST_F(PgConnection, ApplicationNameAndStatementTimeoutOptions) {
  const std::string app = "sluice-test-app-" + test::unique_suffix();
  {
    pg::connect_options options;
    options.conninfo = test::test_conninfo();
    options.application_name = app;
    options.statement_timeout = 250ms;
    pg::connection c = pg::connection::open(options);
    EXPECT_EQ(c.query("SHOW application_name").one<std::string>(), app);
    EXPECT_EQ(c.query("SHOW statement_timeout").one<std::string>(), "250ms");
    EXPECT_EQ(c.query("SHOW client_encoding").one<std::string>(), "UTF8");
    EXPECT_EQ(test::count_backends(app), 1);
  }
  // The destructor closed it; the backend goes away a moment later.
  EXPECT_EQ(test::wait_for_backends(app, 0), 0);
}

TEST_F(PgConnection, ExplicitOptionsOverrideTheConnectionString) {
  // application_name in the string, and a different one in the options: the option wins.
  const std::string in_string = "sluice-test-in-string";
  const std::string option = "sluice-test-option-" + test::unique_suffix();
  pg::connect_options options;
  options.conninfo = "application_name=" + in_string + " host=" + PQhost(conn_.native()) +
                     " port=" + PQport(conn_.native()) + " dbname=" + PQdb(conn_.native()) +
                     " user=" + PQuser(conn_.native());
  options.application_name = option;
  pg::connection c = pg::connection::open(options);
  EXPECT_EQ(c.query("SHOW application_name").one<std::string>(), option);

  // Without the option, the string's value is kept.
  options.application_name.clear();
  pg::connection d = pg::connection::open(options);
  EXPECT_EQ(d.query("SHOW application_name").one<std::string>(), in_string);
}

TEST_F(PgConnection, ARefusedConnectionNamesHostAndPortButNotThePassword) {
  const int port = test::unused_local_port();
  const std::string password = "s3cr3t-Pa55w0rd";
  pg::connect_options options;
  options.conninfo = "host=127.0.0.1 port=" + std::to_string(port) +
                     " dbname=nowhere user=nobody password=" + password;
  options.connect_timeout = 5s;
  const auto start = steady_clock::now();
  const auto e = expect_throw<pg::connection_error>([&] { (void)pg::connection::open(options); });
  EXPECT_LT(steady_clock::now() - start, 4s);
  const std::string what = e.what();
  EXPECT_TRUE(contains(what, "127.0.0.1")) << what;
  EXPECT_TRUE(contains(what, "port=" + std::to_string(port))) << what;
  EXPECT_TRUE(contains(what, "dbname=nowhere")) << what;
  EXPECT_TRUE(contains(what, "user=nobody")) << what;
  EXPECT_FALSE(contains(what, password)) << what;
  EXPECT_EQ(e.sqlstate(), "");
  EXPECT_TRUE(e.poisons_connection());
  EXPECT_EQ(e.kind(), pg::error_kind::poisoning);

  // The same through a URI.
  options.conninfo = "postgresql://nobody:" + password + "@127.0.0.1:" + std::to_string(port) +
                     "/nowhere?sslmode=disable";
  const auto u = expect_throw<pg::connection_error>([&] { (void)pg::connection::open(options); });
  const std::string uwhat = u.what();
  EXPECT_TRUE(contains(uwhat, "port=" + std::to_string(port))) << uwhat;
  EXPECT_FALSE(contains(uwhat, password)) << uwhat;
}

TEST_F(PgConnection, AMistypedUriIsNotEchoedAsADatabaseName) {
  // Not a URI to libpq (bad scheme) and no '=': it becomes the database name, which the
  // server then quotes in its refusal.
  // Such a string carries no host, so point libpq's defaults at the test server meanwhile.
  const scoped_env host("PGHOST", PQhost(conn_.native()));
  const scoped_env port("PGPORT", PQport(conn_.native()));
  const scoped_env user("PGUSER", PQuser(conn_.native()));
  const std::string password = "hunter2-" + test::unique_suffix();
  pg::connect_options options;
  options.conninfo = "postgress://bob:" + password + "@127.0.0.1/db";
  const auto e = expect_throw<pg::connection_error>([&] { (void)pg::connection::open(options); });
  EXPECT_FALSE(contains(e.what(), password)) << e.what();
  EXPECT_EQ(e.sqlstate(), "3D000") << e.what();  // invalid_catalog_name
}

TEST_F(PgConnection, AServerThatNeverAnswersTimesOut) {
  // A socket that listens but never accepts: the kernel completes the handshake, then the
  // startup packet goes unanswered.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);

  pg::connect_options options;
  options.conninfo = "host=127.0.0.1 port=" + std::to_string(port) + " user=x dbname=y";
  options.connect_timeout = 1200ms;
  const auto start = steady_clock::now();
  const auto e = expect_throw<pg::connection_error>([&] { (void)pg::connection::open(options); });
  const auto elapsed = steady_clock::now() - start;
  ::close(fd);
  EXPECT_GE(elapsed, 1100ms);
  EXPECT_LT(elapsed, 3s);
  EXPECT_TRUE(contains(e.what(), "timeout")) << e.what();
  EXPECT_TRUE(contains(e.what(), "port=" + std::to_string(port))) << e.what();
}

TEST_F(PgConnection, ARefusalByTheServerCarriesItsSqlstate) {
  // A role allowed no connections gets 53300, as a full server would answer.
  const std::string role = "sluice_test_limited_" + test::unique_suffix();
  const std::string password = "Pw-" + test::unique_suffix();
  conn_.exec("CREATE ROLE " + role + " LOGIN CONNECTION LIMIT 0 PASSWORD '" + password + "'");
  struct drop_role {
    pg::connection& c;
    const std::string& r;
    ~drop_role() {
      try {
        c.exec("DROP ROLE IF EXISTS " + r);
      } catch (const std::exception&) {
      }
    }
  } cleanup{conn_, role};

  pg::connect_options options;
  options.conninfo = conninfo_as(conn_, role, password);
  const auto e = expect_throw<pg::connection_error>([&] { (void)pg::connection::open(options); });
  EXPECT_EQ(e.sqlstate(), "53300") << e.what();
  EXPECT_EQ(e.kind(), pg::error_kind::back_pressure);
  EXPECT_TRUE(contains(e.what(), "user=" + role)) << e.what();
  EXPECT_FALSE(contains(e.what(), password)) << e.what();
  EXPECT_FALSE(contains(e.what(), "LOCATION")) << e.what();
}

TEST_F(PgConnection, DuplicateKeyIsAnOrdinarySqlError) {
  conn_.exec("CREATE TABLE items (id int PRIMARY KEY, name text)");
  conn_.query("INSERT INTO items VALUES ($1, $2)", 1, "one");
  const std::string sql = "INSERT INTO items VALUES ($1, $2)";
  const auto e = expect_throw<pg::sql_error>([&] { conn_.query(sql, 1, "uno"); });
  EXPECT_EQ(e.sqlstate(), "23505");
  EXPECT_EQ(e.kind(), pg::error_kind::ordinary);
  EXPECT_FALSE(e.poisons_connection());
  EXPECT_TRUE(contains(e.message(), "items_pkey")) << e.message();
  EXPECT_EQ(e.detail(), "Key (id)=(1) already exists.");
  EXPECT_EQ(e.query(), sql);
  EXPECT_TRUE(contains(e.what(), "23505")) << e.what();

  EXPECT_FALSE(conn_.poisoned());
  EXPECT_EQ(conn_.tx_status(), pg::transaction_status::idle);
  EXPECT_EQ(conn_.query("SELECT 1").one<int>(), 1);
  EXPECT_EQ(conn_.query("SELECT name FROM items WHERE id = $1", 1).one<std::string>(), "one");
}

TEST_F(PgConnection, ServerErrorFieldsAndKinds) {
  const auto hint = expect_throw<pg::sql_error>([&] { conn_.exec("SELECT no_such_fn(1)"); });
  EXPECT_EQ(hint.sqlstate(), "42883");
  EXPECT_FALSE(hint.hint().empty());

  const auto syntax = expect_throw<pg::sql_error>([&] { conn_.exec("SELEC 1"); });
  EXPECT_EQ(syntax.sqlstate(), "42601");

  conn_.exec("CREATE TABLE n (v int)");
  const auto input = expect_throw<pg::sql_error>(
      [&] { conn_.query("INSERT INTO n VALUES ($1)", "not a number"); });
  EXPECT_EQ(input.sqlstate(), "22P02");
  EXPECT_FALSE(conn_.poisoned());

  // A SQLSTATE raised by PL/pgSQL is classified like any other.
  const auto raised = expect_throw<pg::sql_error>(
      [&] { conn_.exec("DO $$ BEGIN RAISE EXCEPTION 'busy' USING ERRCODE = '40001'; END $$"); });
  EXPECT_EQ(raised.kind(), pg::error_kind::retry_transaction);
  EXPECT_FALSE(conn_.poisoned());
}

TEST_F(PgConnection, APoisoningSqlstatePoisonsEvenWhenTheSessionSurvives) {
  // 0A000 comes from the server here, but a pooler answers it too when it cannot go on.
  const auto e = expect_throw<pg::sql_error>([&] {
    conn_.exec(
        "DO $$ BEGIN RAISE EXCEPTION 'nope' USING ERRCODE = 'feature_not_supported'; END $$");
  });
  EXPECT_EQ(e.sqlstate(), "0A000");
  EXPECT_TRUE(e.poisons_connection());
  EXPECT_TRUE(conn_.poisoned());
  EXPECT_FALSE(conn_.is_ok());
  EXPECT_FALSE(conn_.ping());
}

TEST_F(PgConnection, TerminatedBackendPoisonsTheConnection) {
  pg::connection victim = test::test_connect("sluice-test-victim");
  const int pid = victim.backend_pid();
  // Waits (up to 5 s) until the backend has really exited.
  EXPECT_TRUE(conn_.query("SELECT pg_terminate_backend($1, 5000)", pid).one<bool>());

  bool poisons = false;
  std::string what;
  try {
    victim.exec("SELECT 1");
  } catch (const pg::error& e) {
    poisons = e.poisons_connection();
    what = e.what();
  }
  EXPECT_TRUE(poisons) << what;
  EXPECT_FALSE(what.empty());
  EXPECT_TRUE(victim.poisoned());
  EXPECT_FALSE(victim.is_ok());
  EXPECT_FALSE(victim.ping());
  EXPECT_THROW(victim.exec("SELECT 1"), pg::connection_error);
}

TEST_F(PgConnection, TerminationDuringAStatementPoisonsToo) {
  pg::connection victim = test::test_connect("sluice-test-victim");
  const int pid = victim.backend_pid();
  std::exception_ptr failure;
  std::thread runner([&] {
    try {
      victim.exec("SELECT pg_sleep(30)");
    } catch (...) {
      failure = std::current_exception();
    }
  });
  // Wait until the statement runs; there is no signal for that but pg_stat_activity.
  (void)sluice::test::eventually(
      [&] {
        return conn_
                   .query(
                       "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = "
                       "'active'",
                       pid)
                   .one<std::int64_t>() != 0;
      },
      10s, 5ms);
  EXPECT_TRUE(conn_.query("SELECT pg_terminate_backend($1, 5000)", pid).one<bool>());
  runner.join();
  ASSERT_TRUE(failure);
  try {
    std::rethrow_exception(failure);
  } catch (const pg::sql_error& e) {
    EXPECT_EQ(e.sqlstate(), "57P01") << e.what();
    EXPECT_TRUE(e.poisons_connection());
  } catch (const pg::connection_error& e) {
    EXPECT_TRUE(e.poisons_connection());
  }
  EXPECT_TRUE(victim.poisoned());
}

TEST_F(PgConnection, ExecRunsScriptsAndCountsRows) {
  const pg::result last = conn_.exec(
      "CREATE TABLE r (id int); INSERT INTO r SELECT generate_series(1, 5); SELECT count(*) FROM "
      "r");
  EXPECT_EQ(last.one<std::int64_t>(), 5);
  EXPECT_EQ(conn_.query("UPDATE r SET id = id + 1 WHERE id > $1", 2).affected_rows(), 3);
  EXPECT_EQ(conn_.exec("DELETE FROM r").affected_rows(), 5);
  EXPECT_EQ(conn_.exec("INSERT INTO r VALUES (1), (2)").affected_rows(), 2);
  EXPECT_EQ(conn_.exec("CREATE INDEX ON r (id)").affected_rows(), 0);
  const pg::result empty = conn_.exec("");
  EXPECT_EQ(empty.rows(), 0);
  const pg::result named = conn_.exec("SELECT 1 AS a, 'x' AS b");
  EXPECT_EQ(named[0].get<int>("a"), 1);
  EXPECT_EQ(named[0].get<std::string>("b"), "x");
}

TEST_F(PgConnection, NamedPreparedStatements) {
  conn_.prepare("add_one", "SELECT $1::int + 1");
  EXPECT_EQ(conn_.exec_prepared("add_one", pg::param_list::of(41)).one<int>(), 42);
  EXPECT_EQ(conn_.exec_prepared("add_one", pg::param_list::of(1)).one<int>(), 2);
  const auto e = expect_throw<pg::sql_error>(
      [&] { (void)conn_.exec_prepared("missing", pg::param_list::of()); });
  EXPECT_EQ(e.sqlstate(), "26000");
  EXPECT_FALSE(conn_.poisoned());
}

TEST_F(PgConnection, CopyIsRefusedAndPoisons) {
  conn_.exec("CREATE TABLE c (v int)");
  EXPECT_THROW(conn_.exec("COPY c FROM STDIN"), pg::error);
  EXPECT_TRUE(conn_.poisoned());
}

TEST_F(PgConnection, MoveKeepsTheSession) {
  const int pid = conn_.backend_pid();
  pg::connection moved = std::move(conn_);
  EXPECT_FALSE(conn_.valid());  // NOLINT(bugprone-use-after-move): documented moved-from state
  EXPECT_EQ(moved.backend_pid(), pid);
  EXPECT_EQ(moved.query("SELECT 2").one<int>(), 2);
  pg::connection other = test::test_connect();
  other = std::move(moved);
  EXPECT_EQ(other.backend_pid(), pid);
  conn_ = std::move(other);
  EXPECT_EQ(conn_.backend_pid(), pid);
}
