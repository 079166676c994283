#pragma once

// The daemon's HTTP server: the JSON API under /api/v1, /health, /ready and /metrics, plus a
// hook through which the dashboard serves everything else. Endpoints, request and response
// bodies and error codes: docs/api.md.
//
// Security: mutating calls (POST, PUT, PATCH, DELETE) need "Authorization: Bearer <token>";
// with no token configured they are refused. No response carries a conninfo or the token.
//
// Transport: http/transport.hpp, an event-driven HTTP/1.1 server that bounds every client's
// header, body, time and connection (the limits below; docs/api.md#limits). /health is answered
// on the I/O thread and /ready on a lane of its own, so both answer while the request threads
// are busy or every other connection is slow.
//
// Thread-safety: requests are served concurrently by the request threads; everything they
// touch through `app` is thread-safe. set_static_handler() only before start(); start(), stop(),
// port() and connection_stats() from any thread. stop() is idempotent, safe before start(), and
// returns once no request is being served and the history sampler has stopped.
// Throws: start() throws std::runtime_error when the address cannot be bound (port taken,
// address not local, ...), naming the address and the reason.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/history.hpp"
#include "http/transport.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"

namespace sluice::http {

struct server_settings {
  std::string address = "127.0.0.1";
  int port = 8080;    // 0: the operating system picks a free port (see server::port())
  std::string token;  // bearer token for mutating calls; empty: mutating calls are refused
  std::size_t max_body_bytes = std::size_t{1} << 20;  // larger request bodies get 413
  // The other limits on clients; transport_limits has the defaults, docs/api.md what each does.
  std::size_t max_connections = transport_limits{}.max_connections;
  std::size_t max_header_bytes = transport_limits{}.max_header_bytes;  // larger headers get 431
  std::size_t max_header_count = transport_limits{}.max_header_count;  // more fields get 431
  std::size_t max_buffered_body_bytes = transport_limits{}.max_buffered_body_bytes;
  std::chrono::milliseconds header_timeout = transport_limits{}.header_timeout;
  std::chrono::milliseconds body_timeout = transport_limits{}.body_timeout;
  std::chrono::milliseconds idle_timeout = transport_limits{}.idle_timeout;
  std::chrono::milliseconds write_timeout = transport_limits{}.write_timeout;
  std::chrono::milliseconds history = std::chrono::hours(1);  // pool history kept in memory
  std::chrono::milliseconds sample_interval = std::chrono::seconds(5);
  // How long /ready waits for a lane connection before the database check fails.
  std::chrono::milliseconds ready_timeout = std::chrono::seconds(1);
  std::size_t threads = 8;  // request-serving threads
  // Host names accepted in the Host header besides IP literals and localhost (DNS-rebinding
  // defence, see host_allowed() in http/auth.hpp); "*" accepts any.
  std::vector<std::string> allowed_hosts;
};

// What the server serves from. Everything here must outlive the server.
struct app {
  pool::pool_manager& pools;
  pool::pool& lane;  // the scheduler's pool: /ready's SELECT 1 and the history's samples
  sched::scheduler& scheduler;
  sched::store& store;
  // Called before a task is created; throws (any std::exception) to refuse it with 400 and the
  // exception's message. May be empty.
  std::function<void(std::string_view type, std::string_view payload)> validate_payload;
  // Sets a new task's per-type defaults (the daemon's [types.NAME] settings) once its type is
  // known, before the request's own settings are applied. May be empty.
  std::function<void(sched::task_spec&)> type_defaults;
  std::string version;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// A request the API does not handle (GET or HEAD of a path outside /api/, /health, /ready,
// /metrics), offered to the static handler.
struct static_request {
  std::string method;                          // "GET" or "HEAD"
  std::string path;                            // decoded path, without the query
  std::map<std::string, std::string> query;    // first value of each parameter
  std::map<std::string, std::string> headers;  // names lower-case; first value of each
  [[nodiscard]] std::string header(std::string_view lower_case_name) const;
};

struct static_response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// nullopt: not found (answered with the API's JSON 404).
using static_handler = std::function<std::optional<static_response>(const static_request&)>;

class server {
 public:
  server(server_settings settings, app& application);
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  server(server&&) = delete;
  server& operator=(server&&) = delete;
  ~server();  // stop()

  // Serves everything that is not an API route (the dashboard). Only before start().
  void set_static_handler(static_handler handler);

  // Binds the address, starts serving on a background thread and starts the pool-history
  // sampler. Returns once connections are accepted.
  void start();
  void stop();

  // The bound port once started (the chosen one when settings.port was 0), else settings.port.
  [[nodiscard]] int port() const noexcept;
  [[nodiscard]] const server_settings& settings() const noexcept;
  [[nodiscard]] const pool_history& history() const noexcept;
  // Connection and request counters of the transport.
  [[nodiscard]] transport_stats connection_stats() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace sluice::http
