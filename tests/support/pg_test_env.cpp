#include "pg_test_env.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <system_error>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/eventually.hpp"

namespace sluice::test {

std::string test_conninfo() {
  const char* url = std::getenv("DATABASE_URL");
  return url == nullptr ? std::string() : std::string(url);
}

pg::connection test_connect(std::string app_name) {
  pg::connect_options options;
  options.conninfo = test_conninfo();
  options.application_name = std::move(app_name);
  options.connect_timeout = std::chrono::seconds(10);
  return pg::connection::open(options);
}

bool database_available() {
  try {
    pg::connection conn = test_connect("sluice-test-probe");
    return conn.query("SELECT 1").one<int>() == 1;
  } catch (const std::exception&) {
    return false;
  }
}

int count_backends(std::string_view application_name_like) {
  pg::connection conn = test_connect("sluice-test-count");
  return static_cast<int>(conn.query("SELECT count(*) FROM pg_stat_activity "
                                     "WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
                                     application_name_like)
                              .one<std::int64_t>());
}

int wait_for_backends(std::string_view application_name_like, int expected,
                      std::chrono::milliseconds timeout) {
  pg::connection conn = test_connect("sluice-test-count");
  int n = 0;
  (void)eventually(
      [&] {
        n = static_cast<int>(
            conn.query("SELECT count(*) FROM pg_stat_activity "
                       "WHERE application_name LIKE $1 AND pid <> pg_backend_pid()",
                       application_name_like)
                .one<std::int64_t>());
        return n == expected;
      },
      timeout, std::chrono::milliseconds(20));
  return n;
}

std::string unique_suffix() {
  static std::atomic<unsigned> counter{0};
  static const unsigned salt = std::random_device{}();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%ld_%u_%04x", static_cast<long>(::getpid()), counter++,
                salt & 0xffffU);
  return buf;
}

int unused_local_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "bind");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

scoped_schema::scoped_schema(std::string_view prefix)
    : name_(std::string(prefix) + "_" + unique_suffix()) {
  pg::connection conn = test_connect("sluice-test-schema");
  conn.exec("CREATE SCHEMA " + name_);
}

scoped_schema::~scoped_schema() {
  try {
    pg::connection conn = test_connect("sluice-test-schema");
    conn.exec("DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
  } catch (const std::exception& e) {
    // The database may be gone (a test that stops it); never throw from a destructor.
    std::fprintf(stderr, "scoped_schema: could not drop %s: %s\n", name_.c_str(), e.what());
  }
}

std::string scoped_schema::qualified(std::string_view object) const {
  return name_ + "." + std::string(object);
}

void scoped_schema::use(pg::connection& conn) const {
  conn.exec("SET search_path TO " + name_ + ", public");
}

}  // namespace sluice::test
