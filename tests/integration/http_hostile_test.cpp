// The HTTP front door against hostile and slow clients (issue 16), on the real `sluice serve`
// (tests/support/daemon_process) spoken to over raw sockets:
//   - slowloris: many clients sending their header or body a byte at a time, idle keep-alive
//     connections, unauthenticated uploads, all reconnecting, more of them than
//     http.max_connections, while /health and /ready must each answer within a second; the
//     daemon's threads, file descriptors and memory are sampled and must stay bounded;
//   - oversized headers and bodies, chunked and not, with and without a token: refused with
//     431 / 413 / 401 without being buffered (the daemon's RSS is sampled throughout), and
//     "100 Continue" only for a request that is admitted;
//   - pipelined requests all answered, in order;
//   - a table of malformed requests with the status and error code each must get, and no
//     error line in the daemon's log for any of them;
//   - 200 concurrent keep-alive clients, every request answered on its client's one connection.
// Times are only bounded generously (a second where the normal answer takes a millisecond), so a
// loaded machine does not make these fail.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/daemon_process.hpp"
#include "support/pg_test_env.hpp"
#include "support/sched_test_env.hpp"

namespace test = sluice::test;
using namespace std::chrono_literals;
using json = nlohmann::json;
using steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr const char* token = "hostile-token-0123456789abcdef";
const std::string bearer = std::string("Authorization: Bearer ") + token + "\r\n";

// ---- a raw HTTP/1.1 client -------------------------------------------------------------------

struct reply {
  int status = 0;
  std::string head;  // status line and header fields
  std::string body;

  [[nodiscard]] std::string header(const std::string& lower_case_name) const {
    std::string lower = head;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    const auto at = lower.find("\r\n" + lower_case_name + ":");
    if (at == std::string::npos) return {};
    auto start = at + 3 + lower_case_name.size();
    while (start < head.size() && head[start] == ' ')
      ++start;
    return head.substr(start, head.find("\r\n", start) - start);
  }

  [[nodiscard]] std::string error_code() const {
    const json j = json::parse(body, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("error")) return "<no JSON error>";
    return j["error"].value("code", "<no code>");
  }
};

class raw_connection {
 public:
  explicit raw_connection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
      return;
    }
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  explicit raw_connection(int fd, std::nullptr_t) : fd_(fd) {}
  raw_connection(const raw_connection&) = delete;
  raw_connection& operator=(const raw_connection&) = delete;
  ~raw_connection() {
    if (fd_ >= 0) ::close(fd_);
  }

  [[nodiscard]] bool connected() const { return fd_ >= 0; }
  [[nodiscard]] int fd() const { return fd_; }

  // Sends everything; false when the server closed or reset the connection first (it may
  // answer and close before a large request is written, which is not an error).
  bool send_all(std::string_view data) {
    while (!data.empty()) {
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, 10000) <= 0) return false;
      const auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        return false;
      }
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // One response (a 1xx counts as one); nullopt when the connection ended or `timeout` passed
  // first. The answer to a HEAD request has no body whatever its Content-Length says.
  std::optional<reply> read_reply(milliseconds timeout = 20s, bool to_head = false) {
    const auto until = steady::now() + timeout;
    for (;;) {
      const auto end = in_.find("\r\n\r\n");
      if (end != std::string::npos) {
        reply r;
        r.head = in_.substr(0, end);
        if (r.head.rfind("HTTP/1.", 0) == 0 && r.head.size() >= 12) {
          r.status = std::atoi(r.head.c_str() + 9);
        }
        const std::string length = r.header("content-length");
        const std::size_t n =
            r.status >= 200 && !to_head && !length.empty() ? std::stoul(length) : 0;
        if (in_.size() >= end + 4 + n) {
          r.body = in_.substr(end + 4, n);
          in_.erase(0, end + 4 + n);
          return r;
        }
      }
      if (!fill(until)) return std::nullopt;
    }
  }

  // Waits for the server to end the connection (EOF or reset), dropping what it sends.
  bool closed_by_server(milliseconds timeout) {
    const auto until = steady::now() + timeout;
    while (fill(until)) {
      in_.clear();
    }
    return eof_;
  }

  [[nodiscard]] bool eof() const { return eof_; }

 private:
  // Reads what is there (waiting until `until`); false on EOF, error or timeout.
  bool fill(steady::time_point until) {
    const auto left = std::chrono::duration_cast<milliseconds>(until - steady::now());
    if (left <= 0ms) return false;
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r <= 0) return false;
    char buf[65536];
    const auto n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    in_.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  int fd_ = -1;
  std::string in_;
  bool eof_ = false;
};

// One request on a connection of its own.
std::optional<reply> round_trip(int port, const std::string& request, milliseconds timeout = 20s) {
  raw_connection c(port);
  if (!c.connected()) return std::nullopt;
  c.send_all(request);
  return c.read_reply(timeout);
}

std::string get_request(const std::string& target, const std::string& extra = {}) {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n";
}

std::string post_request(const std::string& target, const std::string& body,
                         const std::string& extra = bearer + "Content-Type: application/json\r\n") {
  return "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::string chunked(const std::string& body, std::size_t piece = 4096) {
  std::string out;
  char size[32];
  for (std::size_t at = 0; at < body.size(); at += piece) {
    const std::size_t n = std::min(piece, body.size() - at);
    std::snprintf(size, sizeof size, "%zx\r\n", n);
    out += size + body.substr(at, n) + "\r\n";
  }
  return out + "0\r\n\r\n";
}

std::string spec(const std::string& name) {
  return json{
      {"type", "noop"}, {"name", name}, {"schedule", {{"kind", "interval"}, {"every", "1h"}}}}
      .dump();
}

// ---- the daemon's resources ----------------------------------------------------------------

long proc_status(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

long rss_kb(pid_t pid) {
  return proc_status(pid, "VmRSS");
}

long threads_of(pid_t pid) {
  return proc_status(pid, "Threads");
}

long fds_of(pid_t pid) {
  std::error_code ec;
  long n = 0;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++n;
  }
  return n;
}

// The daemon's RSS, threads and descriptors, sampled on a thread of its own until stop().
class resource_sampler {
 public:
  explicit resource_sampler(pid_t pid) : pid_(pid) {
    thread_ = std::thread([this] {
      while (!done_) {
        sample();
        std::this_thread::sleep_for(20ms);  // a sampling period, not a wait for an event
      }
    });
  }
  resource_sampler(const resource_sampler&) = delete;
  resource_sampler& operator=(const resource_sampler&) = delete;
  ~resource_sampler() { stop(); }

  void stop() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
    sample();
  }

  long peak_rss_kb = 0;
  long peak_threads = 0;
  long peak_fds = 0;

 private:
  void sample() {
    peak_rss_kb = std::max(peak_rss_kb, rss_kb(pid_));
    peak_threads = std::max(peak_threads, threads_of(pid_));
    peak_fds = std::max(peak_fds, fds_of(pid_));
  }

  pid_t pid_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Lines of the daemon's log at level error (text format: "<time> error <component>: ...").
std::vector<std::string> error_lines(const std::string& log) {
  std::vector<std::string> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(" error ") != std::string::npos) out.push_back(line);
  }
  return out;
}

class HttpHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    db_ = std::make_unique<test::scoped_database>("sluice_hostile");
  }

  void TearDown() override {
    if (daemon_) {
      EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
    }
    daemon_.reset();
    db_.reset();
  }

  // A daemon with the given extra [http] settings; max_body_bytes is 1 MiB (the default).
  // HOSTILE_DEBUG=1 in the environment logs at debug level: every request and every close with
  // its reason (the log is kept when a test fails).
  void start_daemon(const std::string& http_settings = {}) {
    test::daemon_options o;
    o.config =
        "[database]\nconnect_timeout = \"5s\"\n\n"
        "[pools.work]\nsize = 2\nmax_overflow = 1\n\n"
        "[scheduler]\nworkers = 2\npoll_interval = \"200ms\"\n\n"
        "[http]\naddress = \"127.0.0.1\"\nport = 0\ntoken = \"" +
        std::string(token) + "\"\n" + http_settings + "\n[log]\nlevel = \"" +
        (std::getenv("HOSTILE_DEBUG") ? "debug" : "info") + "\"\n";
    o.extra_args = {"--migrate"};
    o.database = db_.get();
    daemon_ = std::make_unique<test::daemon_process>(o);
    port_ = daemon_->port();
  }

  std::int64_t task_count() {
    auto conn = db_->connect("sluice-hostile-check");
    return conn.query("SELECT count(*) FROM sluice.tasks").one<std::int64_t>();
  }

  std::unique_ptr<test::scoped_database> db_;
  std::unique_ptr<test::daemon_process> daemon_;
  int port_ = 0;
};

// ---- slowloris -------------------------------------------------------------------------------

// What a slow client does once connected.
enum class slow_kind {
  header,        // a request header, one byte at a time, never finished
  body,          // an admitted POST (token, Content-Length) whose body comes a byte at a time
  body_no_auth,  // the same without a token: refused at once, reconnects
  idle,          // one request, then nothing on the keep-alive connection
};

struct slow_client {
  slow_kind kind;
  std::unique_ptr<raw_connection> conn;
  std::string script;  // what it still has to send, a byte per tick
  int connections = 0;
  int closed_by_server = 0;
};

TEST_F(HttpHostile, ProbesAnswerWithinASecondWhileSlowClientsHoldEveryConnection) {
  // Fewer connections than slow clients, so the cap and its eviction are part of the test.
  constexpr int max_connections = 64;
  start_daemon("max_connections = " + std::to_string(max_connections) +
               "\nheader_timeout = \"3s\"\nbody_timeout = \"3s\"\nidle_timeout = \"3s\"\n");
  const pid_t pid = daemon_->pid();
  // Warm up (pools connected, threads started) before the baseline is taken.
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(round_trip(port_, get_request("/ready", "Connection: close\r\n"))->status, 200);
  }
  const long threads_before = threads_of(pid);
  const long fds_before = fds_of(pid);
  const long rss_before = rss_kb(pid);
  resource_sampler sampler(pid);

  std::vector<slow_client> clients;
  const auto add = [&](slow_kind kind, int n) {
    for (int i = 0; i < n; ++i)
      clients.push_back({kind, nullptr, {}, 0, 0});
  };
  add(slow_kind::header, 90);
  add(slow_kind::body, 20);
  add(slow_kind::body_no_auth, 20);
  add(slow_kind::idle, 20);

  const auto connect = [&](slow_client& c) {
    c.conn = std::make_unique<raw_connection>(port_);
    if (!c.conn->connected()) return;
    ++c.connections;
    ::fcntl(c.conn->fd(), F_SETFL, ::fcntl(c.conn->fd(), F_GETFL) | O_NONBLOCK);
    switch (c.kind) {
      case slow_kind::header:
        c.script = "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer +
                   "X-Slow: " + std::string(4000, 'z');
        break;
      case slow_kind::body:
        c.conn->send_all("POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer +
                         "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
        c.script = "{\"type\":\"noop\",\"payload\":{\"x\":\"" + std::string(4000, 'p');
        break;
      case slow_kind::body_no_auth:
        c.conn->send_all(
            "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n");
        c.script = std::string(4000, 'p');
        break;
      case slow_kind::idle:
        c.conn->send_all(get_request("/health"));
        c.script.clear();
        break;
    }
  };

  std::atomic<bool> attacking{true};
  std::mutex mutex;  // guards `clients` against the reporting below, once the thread ended
  std::thread attacker([&] {
    const std::lock_guard lock(mutex);
    std::size_t start = 0;
    while (attacking) {
      // Up to 30 new connections a tick, fewer than max_connections: a connection that has
      // sent nothing yet is closed once max_connections newer ones have come (the oldest goes
      // first), and the probes' own connect() and send() are not one step, so a bigger burst
      // could catch a probe between the two if this machine paused the probing thread there.
      // Each tick starts at another client, so that every kind gets its share of reconnects.
      int reconnects = 0;
      start = (start + 37) % clients.size();
      for (std::size_t k = 0; k < clients.size(); ++k) {
        auto& c = clients[(start + k) % clients.size()];
        if (!c.conn || !c.conn->connected()) {
          if (reconnects < 30) {
            ++reconnects;
            connect(c);
          }
          continue;
        }
        char buf[4096];
        const auto n = ::recv(c.conn->fd(), buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
          ++c.closed_by_server;
          c.conn.reset();
          if (reconnects < 30) {  // reconnect at once, as an attacker would
            ++reconnects;
            connect(c);
          }
          continue;
        }
        if (!c.script.empty()) {
          const auto sent = ::send(c.conn->fd(), c.script.data(), 1, MSG_NOSIGNAL);
          if (sent == 1) c.script.erase(0, 1);
        }
      }
      std::this_thread::sleep_for(100ms);  // the attackers' pace: a byte per client per tick
    }
  });

  // Meanwhile: /health and /ready on fresh connections, each answered within a second.
  struct probe_result {
    std::string path;
    int status;
    milliseconds took;
    std::string failure;  // how it went wrong, when it did
  };
  std::vector<probe_result> probes;
  const auto attack_until = steady::now() + 8s;
  while (steady::now() < attack_until) {
    for (const std::string path : {"/health", "/ready"}) {
      const auto started = steady::now();
      raw_connection c(port_);
      std::optional<reply> r;
      std::string failure;
      if (!c.connected()) {
        failure = std::string("connect: ") + std::strerror(errno);
      } else if (!c.send_all(get_request(path, "Connection: close\r\n"))) {
        failure = "send failed";
      } else if (r = c.read_reply(5s); !r) {
        failure = c.eof() ? "closed by the server without an answer" : "no answer within 5 s";
      }
      probes.push_back({path, r ? r->status : 0,
                        std::chrono::duration_cast<milliseconds>(steady::now() - started),
                        failure});
    }
    std::this_thread::sleep_for(100ms);  // the probes' pace
  }
  attacking = false;
  attacker.join();
  sampler.stop();

  ASSERT_GE(probes.size(), 20U);
  milliseconds slowest{0};
  for (const auto& p : probes) {
    EXPECT_EQ(p.status, 200) << p.path << " after " << p.took.count() << " ms: " << p.failure;
    EXPECT_LT(p.took, 1s) << p.path;
    slowest = std::max(slowest, p.took);
  }
  std::map<slow_kind, std::pair<int, int>> per_kind;  // connections, closed by the server
  {
    const std::lock_guard lock(mutex);
    for (const auto& c : clients) {
      per_kind[c.kind].first += c.connections;
      per_kind[c.kind].second += c.closed_by_server;
    }
  }
  std::cout << probes.size() << " probes, slowest " << slowest.count() << " ms; slow clients "
            << "(connections / closed by the server): header " << per_kind[slow_kind::header].first
            << "/" << per_kind[slow_kind::header].second << ", body "
            << per_kind[slow_kind::body].first << "/" << per_kind[slow_kind::body].second
            << ", unauthenticated body " << per_kind[slow_kind::body_no_auth].first << "/"
            << per_kind[slow_kind::body_no_auth].second << ", idle "
            << per_kind[slow_kind::idle].first << "/" << per_kind[slow_kind::idle].second << "\n";
  std::cout << "daemon: threads " << threads_before << " -> peak " << sampler.peak_threads
            << ", fds " << fds_before << " -> peak " << sampler.peak_fds << ", RSS " << rss_before
            << " kB -> peak " << sampler.peak_rss_kb << " kB\n";

  // The server cut them off (deadlines, eviction at the cap, the unauthenticated uploads'
  // refusal) rather than holding them: every kind saw closes.
  for (const auto& [kind, counts] : per_kind) {
    EXPECT_GT(counts.second, 0) << "slow client kind " << static_cast<int>(kind);
  }
  // No thread per connection; descriptors bounded by the cap and its reserve.
  EXPECT_LE(sampler.peak_threads, threads_before + 2);
  EXPECT_LE(sampler.peak_fds, fds_before + max_connections + 32 + 8);
// Under ASan (its quarantine keeps freed memory) and TSan (shadow memory) RSS says nothing.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LE(sampler.peak_rss_kb - rss_before, 32 * 1024);
#endif

  const auto errors = error_lines(daemon_->log());
  EXPECT_TRUE(errors.empty()) << errors.front();
  EXPECT_EQ(task_count(), 0);
  // What the daemon counted (for the log of a run).
  if (const auto m = round_trip(port_, get_request("/metrics", "Connection: close\r\n"))) {
    std::istringstream lines(m->body);
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind("sluice_http_", 0) == 0) std::cout << "  " << line << "\n";
    }
  }
}

// When every connection is being served (here: each writing responses its client does not
// read), a new connection still gets one request on the reserve: /health and /ready are
// answered, anything else is 503.
TEST_F(HttpHostile, TheReserveAnswersProbesWhenEveryConnectionIsBusy) {
  constexpr int max_connections = 16;  // the smallest allowed
  start_daemon("max_connections = " + std::to_string(max_connections) + "\n");
  std::string pipeline;
  for (int i = 0; i < 40; ++i)
    pipeline += get_request("/chart.min.js");  // 200 KB each, 8 MB in all
  std::vector<std::unique_ptr<raw_connection>> blockers;
  for (int i = 0; i < max_connections; ++i) {
    // A tiny receive buffer, set before connecting, and nothing read: the server's writes
    // stall once its send buffer is full, until http.write_timeout (30 s).
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(fd, 0);
    const int small = 4096;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port_));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::send(fd, pipeline.data(), pipeline.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(pipeline.size()));
    blockers.push_back(std::make_unique<raw_connection>(fd, nullptr));
  }
  // Each has its first answer coming (so none is still waiting to have its header read, where
  // a new connection at the cap could close it); once all are stuck writing, a new connection
  // is on the reserve.
  for (const auto& b : blockers) {
    pollfd p{b->fd(), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 10000), 1) << "a blocker got no answer";
  }
  ASSERT_TRUE(test::eventually(
      [&] {
        const auto r = round_trip(port_, get_request("/api/v1/pools", "Connection: close\r\n"));
        return r && r->status == 503;
      },
      20s))
      << "the blockers never filled every connection";
  const auto refused = round_trip(port_, get_request("/api/v1/pools"));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);
  EXPECT_EQ(refused->error_code(), "unavailable");
  EXPECT_NE(refused->body.find("only /health and /ready"), std::string::npos) << refused->body;
  for (int i = 0; i < 10; ++i) {
    for (const std::string path : {"/health", "/ready"}) {
      SCOPED_TRACE(path);
      const auto started = steady::now();
      const auto r = round_trip(port_, get_request(path), 5s);
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200) << r->body;
      EXPECT_LT(steady::now() - started, 1s);
      EXPECT_EQ(r->header("connection"), "close");  // one request per reserve connection
    }
  }
  blockers.clear();  // their connections close; the server's writes fail and free them
  ASSERT_TRUE(test::eventually(
      [&] {
        const auto r = round_trip(port_, get_request("/api/v1/pools", "Connection: close\r\n"));
        return r && r->status == 200;
      },
      20s));
  const auto m = round_trip(port_, get_request("/metrics", "Connection: close\r\n"));
  ASSERT_TRUE(m);
  EXPECT_EQ(m->body.find("sluice_http_connections_reserved_total 0\n"), std::string::npos);
  std::istringstream lines(m->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("sluice_http_", 0) == 0) std::cout << "  " << line << "\n";
  }
}

// ---- oversized headers and bodies -------------------------------------------------------------

struct oversized_case {
  std::string name;
  std::string request;
  int status;
  std::string code;
};

TEST_F(HttpHostile, OversizedHeadersAndBodiesAreRefusedWithoutBeingBuffered) {
  start_daemon();
  const pid_t pid = daemon_->pid();
  const std::string two_mib(2 * 1024 * 1024, 'x');
  const std::string twenty_mib(20 * 1024 * 1024, 'x');
  const std::string big_spec = R"({"type":"noop","payload":{"x":")" + two_mib + R"("}})";
  std::string many_lines;
  for (int i = 0; i < 200000; ++i)
    many_lines += "X-Line-" + std::to_string(i) + ": vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv\r\n";

  const std::vector<oversized_case> cases = {
      {"200000 header lines (10 MiB), no token",
       "GET /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + many_lines + "\r\n", 431,
       "header_too_large"},
      {"one 1 MiB header field",
       get_request("/health", "X-Big: " + std::string(1024 * 1024, 'b') + "\r\n"), 431,
       "header_too_large"},
      {"a 64 KiB request target", get_request("/api/v1/tasks?name=" + std::string(65536, 'n')), 431,
       "header_too_large"},
      {"20 MiB body, Content-Length, no token",
       post_request("/api/v1/tasks", twenty_mib, "Content-Type: application/json\r\n"), 401,
       "unauthorized"},
      {"20 MiB body, chunked, no token",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
       "Transfer-Encoding: chunked\r\n\r\n" +
           chunked(twenty_mib, 65536),
       401, "unauthorized"},
      {"2 MiB task, Content-Length, with token", post_request("/api/v1/tasks", big_spec), 413,
       "payload_too_large"},
      {"2 MiB task, chunked, with token",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer +
           "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
           chunked(big_spec),
       413, "payload_too_large"},
      {"2 MiB task in one chunk, with token",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer +
           "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
           chunked(big_spec, big_spec.size()),
       413, "payload_too_large"},
      {"20 MiB body to an unknown endpoint", post_request("/api/v1/elsewhere", twenty_mib), 404,
       "not_found"},
  };

  const auto run_all = [&] {
    for (const auto& c : cases) {
      SCOPED_TRACE(c.name);
      const auto r = round_trip(port_, c.request);
      ASSERT_TRUE(r) << "no answer";
      EXPECT_EQ(r->status, c.status) << r->head << "\n" << r->body;
      EXPECT_EQ(r->error_code(), c.code) << r->body;
      EXPECT_EQ(r->header("connection"), "close");
    }
  };
  run_all();  // warm-up: what the daemon keeps for good (threads' arenas, buffers)
  const long rss_before = rss_kb(pid);
  resource_sampler sampler(pid);
  run_all();
  sampler.stop();
  const long rss_after = rss_kb(pid);
  std::cout << "daemon RSS " << rss_before << " kB -> peak " << sampler.peak_rss_kb
            << " kB -> after " << rss_after << " kB\n";
  // The largest thing read is one body up to max_body_bytes (1 MiB) before it is refused.
// Under ASan (its quarantine keeps freed memory) and TSan (shadow memory) RSS says nothing.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
  EXPECT_LE(sampler.peak_rss_kb - rss_before, 4 * 1024);
  EXPECT_LE(rss_after - rss_before, 2 * 1024);
#endif
  EXPECT_EQ(task_count(), 0);
}

TEST_F(HttpHostile, ContinueIsSentOnlyToAnAdmittedRequest) {
  start_daemon();
  const std::string body = spec("continued");
  const auto head = [&](const std::string& auth, std::size_t length) {
    return "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth +
           "Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
           std::to_string(length) + "\r\n\r\n";
  };
  {
    SCOPED_TRACE("no token: 401 at once, never 100");
    raw_connection c(port_);
    ASSERT_TRUE(c.send_all(head("", body.size())));
    const auto r = c.read_reply(5s);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401) << r->head;
    EXPECT_EQ(r->header("connection"), "close");
  }
  {
    SCOPED_TRACE("too large: 413 at once, never 100");
    raw_connection c(port_);
    ASSERT_TRUE(c.send_all(head(bearer, 20 * 1024 * 1024)));
    const auto r = c.read_reply(5s);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413) << r->head;
  }
  {
    SCOPED_TRACE("admitted: 100, then the body, then 201");
    raw_connection c(port_);
    ASSERT_TRUE(c.send_all(head(bearer, body.size())));
    const auto go = c.read_reply(5s);
    ASSERT_TRUE(go);
    EXPECT_EQ(go->status, 100) << go->head;
    ASSERT_TRUE(c.send_all(body));
    const auto r = c.read_reply(5s);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 201) << r->head << r->body;
  }
  EXPECT_EQ(task_count(), 1);
}

// ---- pipelining and keep-alive ------------------------------------------------------------------

TEST_F(HttpHostile, PipelinedRequestsAreAllAnsweredInOrder) {
  start_daemon();
  std::string burst;
  constexpr int tasks = 10;
  for (int i = 0; i < tasks; ++i) {
    burst += post_request("/api/v1/tasks", spec("piped-" + std::to_string(i)));
    burst += get_request("/health");
    burst += get_request("/api/v1/tasks?name=piped-" + std::to_string(i));
  }
  burst += "HEAD /api/v1/pools HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
  burst += get_request("/api/v1/nothing");  // a 404 does not end the connection
  burst += get_request("/health", "Connection: close\r\n");
  raw_connection c(port_);
  ASSERT_TRUE(c.send_all(burst));  // all of it in one go, before reading anything
  for (int i = 0; i < tasks; ++i) {
    SCOPED_TRACE(i);
    const auto created = c.read_reply();
    ASSERT_TRUE(created);
    EXPECT_EQ(created->status, 201) << created->body;
    EXPECT_EQ(json::parse(created->body)["name"], "piped-" + std::to_string(i));
    const auto health = c.read_reply();
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
    EXPECT_EQ(json::parse(health->body)["status"], "healthy");
    const auto listed = c.read_reply();
    ASSERT_TRUE(listed);
    ASSERT_EQ(listed->status, 200);
    const json found = json::parse(listed->body)["tasks"];
    ASSERT_EQ(found.size(), 1U);
    EXPECT_EQ(found[0]["name"], "piped-" + std::to_string(i));
  }
  const auto head = c.read_reply(20s, true);
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_TRUE(head->body.empty());
  EXPECT_GT(std::stoul(head->header("content-length")), 0U);  // the GET body's length
  const auto missing = c.read_reply();
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  const auto last = c.read_reply();
  ASSERT_TRUE(last);
  EXPECT_EQ(last->status, 200);
  EXPECT_EQ(last->header("connection"), "close");
  EXPECT_TRUE(c.closed_by_server(5s));
  EXPECT_EQ(task_count(), tasks);
}

TEST_F(HttpHostile, TwoHundredKeepAliveClients) {
  start_daemon();
  constexpr int clients = 200;
  constexpr int requests_each = 25;
  const pid_t pid = daemon_->pid();
  const long threads_before = threads_of(pid);
  resource_sampler sampler(pid);
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::atomic<int> created{0};
  std::mutex mutex;
  std::vector<milliseconds> latencies;
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      raw_connection c(port_);  // one connection for all of this client's requests
      std::vector<milliseconds> mine;
      for (int i = 0; i < requests_each; ++i) {
        const bool write = i == 0;
        const std::string request =
            write        ? post_request("/api/v1/tasks", spec("ka-" + std::to_string(t)))
            : i % 2 == 0 ? get_request("/health")
                         : get_request("/api/v1/tasks/1");
        const auto started = steady::now();
        const auto r = c.send_all(request) ? c.read_reply(30s) : std::nullopt;
        mine.push_back(std::chrono::duration_cast<milliseconds>(steady::now() - started));
        const int expected = write ? 201 : (i % 2 == 0 ? 200 : 0);
        if (r &&
            (r->status == expected || (expected == 0 && (r->status == 200 || r->status == 404)))) {
          ++ok;
          if (write) ++created;
        } else {
          ++failed;
          break;
        }
        if (!r->header("connection").empty()) {  // the server never ends a healthy one
          ++failed;
          break;
        }
      }
      const std::lock_guard lock(mutex);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }
  for (auto& th : threads)
    th.join();
  sampler.stop();
  std::sort(latencies.begin(), latencies.end());
  ASSERT_FALSE(latencies.empty());
  const auto p99 = latencies[latencies.size() * 99 / 100];
  std::cout << ok << " requests answered on " << clients << " keep-alive connections, p50 "
            << latencies[latencies.size() / 2].count() << " ms, p99 " << p99.count()
            << " ms; daemon threads " << threads_before << " -> peak " << sampler.peak_threads
            << "\n";
  EXPECT_EQ(failed, 0);
  EXPECT_EQ(ok, clients * requests_each);
  EXPECT_EQ(created, clients);
  EXPECT_LE(sampler.peak_threads, threads_before + 2);
  EXPECT_EQ(task_count(), clients);
}

// ---- malformed requests ----------------------------------------------------------------------

struct malformed_case {
  const char* what;
  std::string request;
  int status;
  const char* code;
  const char* mentions = "";
};

TEST_F(HttpHostile, MalformedRequestsGetTheirStatusAndNoErrorIsLogged) {
  start_daemon();
  const std::string json_type = "Content-Type: application/json\r\n";
  const auto post = [&](const std::string& body, const std::string& extra) {
    return post_request("/api/v1/tasks", body, extra);
  };
  std::string fields;
  for (int i = 0; i < 101; ++i)
    fields += "X-F" + std::to_string(i) + ": v\r\n";
  const std::vector<malformed_case> cases = {
      // Query parameters and path segments.
      {"NUL in a query value", get_request("/api/v1/tasks?name=%00"), 400, "bad_request", "NUL"},
      {"NUL in type", get_request("/api/v1/tasks?type=%00"), 400, "bad_request", "NUL"},
      {"invalid UTF-8 in a query value", get_request("/api/v1/tasks?name=%C3%28"), 400,
       "bad_request", "UTF-8"},
      {"overlong UTF-8 in the path", get_request("/%C0%AF"), 400, "bad_request", "UTF-8"},
      {"NUL in a path segment", get_request("/api/v1/tasks/%00"), 400, "bad_request", "NUL"},
      {"malformed percent-encoding", get_request("/api/v1/tasks?name=%zz"), 400, "bad_request",
       "percent"},
      {"unknown query parameter", get_request("/api/v1/tasks?colour=red"), 400, "bad_request",
       "unknown query parameter 'colour'"},
      {"query parameter twice", get_request("/api/v1/cycles?limit=1&limit=2"), 400, "bad_request",
       "more than once"},
      {"parameter on an endpoint that takes none", get_request("/api/v1/scheduler?x=1"), 400,
       "bad_request", "takes none"},
      {"limit out of range", get_request("/api/v1/tasks?limit=99999999999999999999"), 400,
       "bad_request", "limit:"},
      {"before out of range", get_request("/api/v1/tasks?before=99999999999999999999"), 400,
       "bad_request", "before:"},
      {"since far in the future", get_request("/api/v1/pools/history?since=99999-01-01T00:00:00Z"),
       400, "bad_request", "since:"},
      {"task id out of range", get_request("/api/v1/tasks/99999999999999999999"), 404, "not_found",
       "no task"},
      // The header.
      {"two Host headers", get_request("/health", "Host: 127.0.0.1\r\n"), 400, "bad_request",
       "Host"},
      {"HTTP/1.1 without Host", "GET /health HTTP/1.1\r\n\r\n", 400, "bad_request", "Host"},
      {"foreign Host", "GET /health HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403, "forbidden"},
      {"HTTP/2.0 request line", "GET /health HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n", 400,
       "bad_request", "HTTP"},
      {"absolute-form target", "GET http://127.0.0.1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
       400, "bad_request", "not a path"},
      {"conflicting Content-Length",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\nContent-Length: "
       "3\r\n\r\n{}",
       400, "bad_request", "Content-Length"},
      {"Content-Length and chunked",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
       "Transfer-Encoding: chunked\r\n\r\n{}",
       400, "bad_request"},
      {"Transfer-Encoding other than chunked",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer + json_type +
           "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
       400, "bad_request", "Transfer-Encoding"},
      {"malformed chunk size",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer + json_type +
           "Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
       400, "bad_request", "chunked"},
      {"too many header fields", get_request("/health", fields), 431, "header_too_large",
       "http.max_header_count"},
      {"header too large", get_request("/health", "X-Big: " + std::string(20000, 'b') + "\r\n"),
       431, "header_too_large", "http.max_header_bytes"},
      {"unknown method on a known path", "BREW /api/v1/pools HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
       405, "method_not_allowed"},
      {"Expect: 100-continue without a token",
       "POST /api/v1/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n" + json_type +
           "Expect: 100-continue\r\nContent-Length: 10\r\n\r\n",
       401, "unauthorized"},
      // Bodies.
      {"text/plain body", post("{}", bearer + "Content-Type: text/plain\r\n"), 415,
       "unsupported_media_type", "application/json"},
      {"form body",
       post("type=noop", bearer + "Content-Type: application/x-www-form-urlencoded\r\n"), 415,
       "unsupported_media_type"},
      {"body without Content-Type", post("{}", bearer), 415, "unsupported_media_type", "none"},
      {"body over max_body_bytes", post(std::string(1024 * 1024 + 1, ' '), bearer + json_type), 413,
       "payload_too_large", "http.max_body_bytes"},
      {"invalid UTF-8 in a JSON string",
       post("{\"type\":\"noop\",\"name\":\"\xff\"}", bearer + json_type), 400, "bad_request",
       "UTF-8"},
      {"lone surrogate in a JSON string",
       post(R"({"type":"noop","name":"\ud800"})", bearer + json_type), 400, "bad_request"},
      {"NUL in a JSON string", post(R"({"type":"noop","name":"a\u0000"})", bearer + json_type), 400,
       "bad_request", "name: must not contain NUL"},
      {"NUL in a time zone",
       post(R"({"type":"noop","schedule":{"kind":"cron","expr":"* * * * *","tz":"UTC\u0000"}})",
            bearer + json_type),
       400, "bad_request", "schedule.tz: must not contain NUL"},
      {"number past double", post(R"({"type":"noop","priority":1e400})", bearer + json_type), 400,
       "bad_request"},
      {"integer past 64 bits",
       post(R"({"type":"noop","priority":18446744073709551616})", bearer + json_type), 400,
       "bad_request", "priority"},
      {"timeout out of range",
       post(R"({"type":"noop","timeout_ms":9223372036854775807})", bearer + json_type), 400,
       "bad_request", "timeout_ms"},
      {"time outside the supported years",
       post(R"({"type":"noop","schedule":{"kind":"once","at":"9999-12-31T23:59:59Z"}})",
            bearer + json_type),
       400, "bad_request", "schedule.at"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto r = round_trip(port_, c.request);
    ASSERT_TRUE(r) << "no answer";
    EXPECT_EQ(r->status, c.status) << r->head << "\n" << r->body;
    EXPECT_EQ(r->error_code(), c.code) << r->body;
    EXPECT_NE(r->body.find(c.mentions), std::string::npos)
        << r->body << "\nexpected to mention: " << c.mentions;
  }
  // The daemon is fine, wrote nothing and logged no error for any of it.
  EXPECT_EQ(round_trip(port_, get_request("/health"))->status, 200);
  EXPECT_EQ(task_count(), 0);
  const auto errors = error_lines(daemon_->log());
  EXPECT_TRUE(errors.empty()) << errors.front();
}

}  // namespace
