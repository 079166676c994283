// Conninfo strings that name several hosts (a primary and its standbys, as failover setups hand
// out: "host=a,b port=1,2 target_session_attrs=read-write"). Each host gets connect_timeout of
// its own, so a host that never answers (a machine that is off, a frozen server) no longer
// takes the whole connect with it and the next host is reached; a refusing host is passed at
// once, as before. The host that never answers is a listening socket nobody accepts on: the
// kernel completes the TCP handshake and libpq then waits for an answer that never comes.

#include <string>

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/pg/connection.hpp"
#include "sluice/pg/error.hpp"
#include "support/pg_test_env.hpp"

namespace pg = sluice::pg;
namespace test = sluice::test;
using namespace std::chrono_literals;

namespace {

// A TCP socket on 127.0.0.1 that listens but never accepts.
class silent_listener {
 public:
  silent_listener() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 16) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      ADD_FAILURE() << "cannot make a listening socket";
      return;
    }
    port_ = ntohs(addr.sin_port);
  }
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;
  ~silent_listener() {
    if (fd_ >= 0) ::close(fd_);
  }
  [[nodiscard]] int port() const noexcept { return port_; }

 private:
  int fd_;
  int port_ = 0;
};

class PgMultiHost : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    pg::connection c = test::test_connect("sluice-test-multihost");
    const auto r = c.exec("SELECT inet_server_port(), current_database(), current_user");
    ASSERT_FALSE(r[0].is_null(0)) << "the test server must be reached over TCP";
    port_ = r[0].get<int>(0);
    tail_ = " dbname=" + r[0].get<std::string>(1) + " user=" + r[0].get<std::string>(2);
  }

  // Two hosts on 127.0.0.1: `first_port`, then the test server.
  [[nodiscard]] std::string then_server(int first_port, const std::string& extra = "") const {
    return "host=127.0.0.1,127.0.0.1 port=" + std::to_string(first_port) + "," +
           std::to_string(port_) + tail_ + extra;
  }

  static pg::connection open(const std::string& conninfo) {
    pg::connect_options o;
    o.conninfo = conninfo;
    o.application_name = "sluice-test-multihost";
    o.connect_timeout = 1s;
    return pg::connection::open(o);
  }

  int port_ = 0;
  std::string tail_;
};

TEST_F(PgMultiHost, AHostThatNeverAnswersIsLeftForTheNextOne) {
  const silent_listener silent;
  ASSERT_GT(silent.port(), 0);
  pg::connection c = open(then_server(silent.port(), " target_session_attrs=read-write"));
  EXPECT_EQ(c.exec("SELECT inet_server_port()").one<int>(), port_);
  EXPECT_NE(c.describe().find("port=" + std::to_string(port_)), std::string::npos) << c.describe();
}

TEST_F(PgMultiHost, ARefusingHostIsLeftAtOnce) {
  pg::connection c = open(then_server(test::unused_local_port()));
  EXPECT_EQ(c.exec("SELECT inet_server_port()").one<int>(), port_);
}

TEST_F(PgMultiHost, WhenNoHostAnswersTheErrorNamesEach) {
  const silent_listener a;
  const silent_listener b;
  ASSERT_GT(a.port(), 0);
  ASSERT_GT(b.port(), 0);
  const std::string conninfo =
      "host=127.0.0.1,127.0.0.1 port=" + std::to_string(a.port()) + "," + std::to_string(b.port());
  try {
    (void)open(conninfo + tail_);
    ADD_FAILURE() << "connected to a socket that never answers";
  } catch (const pg::connection_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("port=" + std::to_string(a.port())), std::string::npos) << m;
    EXPECT_NE(m.find("port=" + std::to_string(b.port())), std::string::npos) << m;
    EXPECT_NE(m.find("timeout expired"), std::string::npos) << m;
  }
}

// Lists that do not match are left to libpq, which says so.
TEST_F(PgMultiHost, MismatchedListsAreReportedByLibpq) {
  try {
    (void)open("host=127.0.0.1,127.0.0.1 port=1,2,3" + tail_);
    ADD_FAILURE() << "connected with three ports for two hosts";
  } catch (const pg::connection_error& e) {
    EXPECT_NE(std::string(e.what()).find("could not match"), std::string::npos) << e.what();
  }
}

}  // namespace
