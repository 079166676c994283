#pragma once

// End-to-end helpers: the real `sluice serve` binary as a child process against a database of
// its own on the test server, found by port, spoken to over HTTP and stopped with signals.
// Several daemon_process objects may share one scoped_database (a fleet of nodes).
//
// The daemon gets a config file written from the test's TOML text, `--port-file` so the test
// learns the port it bound (use `port = 0` in [http]), DATABASE_URL pointing at the database,
// and the test's environment less the variables that would override the file (SLUICE_API_TOKEN,
// SLUICE_HTTP_PORT, DB_POOL_*), unless the test sets them. Its stdout and stderr go to a log
// file that the test can read at any time.
//
// Typical use (a fleet is several daemon_process objects with the same `database`):
//
//   test::scoped_database db;
//   test::daemon_options o;
//   o.config = "[http]\nport = 0\ntoken = \"...\"\n";
//   o.extra_args = {"--migrate"};
//   o.database = &db;
//   test::daemon_process node(o);           // returns once it serves
//   auto r = node.get("/health");           // r.status, r.body
//   EXPECT_EQ(node.stop(), 0);              // SIGTERM, drain, exit code
//
// Thread-safety: http_request() is thread-safe. A daemon_process belongs to one thread, except
// log(), wait_for_log(), port() and url(), which may be called from any thread.
// Throws: std::runtime_error (the daemon's log included) when a daemon cannot be started or does
// not start serving in time; pg::error from scoped_database.

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "sluice/pg/connection.hpp"

namespace sluice::test {

// A database created on the test server by the constructor and dropped (connections and all) by
// the destructor. Its name is "<prefix>_<unique suffix>", a plain identifier.
class scoped_database {
 public:
  explicit scoped_database(std::string_view prefix = "sluice_e2e");
  scoped_database(const scoped_database&) = delete;
  scoped_database& operator=(const scoped_database&) = delete;
  ~scoped_database();

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  // The test server's conninfo (DATABASE_URL or the PG* variables) with this database, as a
  // key=value string.
  [[nodiscard]] const std::string& conninfo() const noexcept { return conninfo_; }
  // A connection of the test's own to this database.
  [[nodiscard]] pg::connection connect(std::string application_name = "sluice-test") const;

 private:
  std::string name_;
  std::string conninfo_;
};

// One answer; status 0 means none came (refused, timed out) and `error` says why.
struct http_reply {
  int status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // names lower-case, the last value of each
  std::string error;
  [[nodiscard]] std::string header(std::string_view lower_case_name) const;
};

using http_headers = std::vector<std::pair<std::string, std::string>>;

// One HTTP request through libcurl (no proxy, no redirects). A non-empty body is sent as given;
// POST without a body sends Content-Length: 0.
[[nodiscard]] http_reply http_request(const std::string& method, const std::string& url,
                                      const std::string& body = {},
                                      const http_headers& headers = {},
                                      std::chrono::milliseconds timeout = std::chrono::seconds(20));

struct daemon_options {
  std::string config;                   // the TOML text of the config file
  std::vector<std::string> extra_args;  // after `serve --config F --port-file P`, e.g. --migrate
  const scoped_database* database = nullptr;  // sets DATABASE_URL; null: the test's environment
  // Variables set (a value) or removed (nullopt) on top of the inherited environment.
  std::map<std::string, std::optional<std::string>> env;
  // true: the constructor returns once the port file is written (the daemon serves HTTP and its
  // scheduler runs). false: it returns at once (for daemons expected to fail).
  bool wait_until_serving = true;
  std::chrono::milliseconds start_timeout = std::chrono::seconds(30);
  std::string binary;  // empty: the sluice binary of this build
};

class daemon_process {
 public:
  explicit daemon_process(daemon_options options);
  daemon_process(const daemon_process&) = delete;
  daemon_process& operator=(const daemon_process&) = delete;
  daemon_process(daemon_process&&) = delete;
  daemon_process& operator=(daemon_process&&) = delete;
  // SIGKILL when still running; removes the working directory (config, log) unless the test
  // failed, so that a failure can be looked at.
  ~daemon_process();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // The bound HTTP port once serving, else 0.
  [[nodiscard]] int port() const noexcept { return port_; }
  // "http://127.0.0.1:<port><path>".
  [[nodiscard]] std::string url(std::string_view path = "/") const;
  [[nodiscard]] const std::filesystem::path& config_path() const noexcept { return config_; }
  [[nodiscard]] const std::filesystem::path& log_path() const noexcept { return log_; }

  // Replaces the config file's text (for SIGHUP).
  void write_config(const std::string& toml) const;

  // Everything the daemon has written to stdout and stderr so far.
  [[nodiscard]] std::string log() const;
  // Polls the log until it contains `text`; false when `timeout` passed first.
  bool wait_for_log(std::string_view text, std::chrono::milliseconds timeout) const;

  // True until the daemon has exited (and been reaped).
  [[nodiscard]] bool running();
  void send_signal(int signo);
  // Waits up to `timeout` for the exit: the exit code, 128 + n for death by signal n, nullopt
  // when still running.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  // SIGTERM, then wait_exit(timeout); a daemon still running then is killed and nullopt returned.
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // SIGKILL and reap.
  void kill_now();

  // Requests to the daemon. `token`: sent as "Authorization: Bearer <token>" when set.
  [[nodiscard]] http_reply get(const std::string& path) const;
  [[nodiscard]] http_reply post(const std::string& path, const std::string& body,
                                const std::optional<std::string>& token = std::nullopt) const;

 private:
  bool reap(bool block);

  std::filesystem::path dir_;
  std::filesystem::path config_;
  std::filesystem::path log_;
  std::filesystem::path port_file_;
  pid_t pid_ = -1;
  int pidfd_ = -1;  // readable once the child exits; -1 without pidfd support
  bool reaped_ = false;
  int status_ = 0;
  int port_ = 0;
};

}  // namespace sluice::test
