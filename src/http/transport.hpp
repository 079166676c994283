#pragma once

// The HTTP/1.1 transport under the API: an event-driven server (Boost.Beast's request parser on
// Boost.Asio) on one I/O thread, with the request handlers on thread pools of their own. It
// bounds what any client can make it hold, per connection and overall:
//
//   - header: at most max_header_bytes (request line included) and max_header_count fields,
//     else 431; it must be complete within header_timeout of its first byte (of the connection,
//     for the first request), else the connection is closed;
//   - body: at most max_body_bytes whatever the transfer encoding, checked while reading (413
//     before a byte is read when Content-Length says more, as soon as a chunk passes the limit
//     otherwise); all bodies being read or served together hold at most
//     max_buffered_body_bytes (503 beyond); a body must arrive within body_timeout;
//   - a body is read only once `admit` has accepted the header: a request it refuses (no
//     token, unknown route, wrong Content-Type, ...) is answered without reading the body and
//     before any "100 Continue";
//   - connections: at most max_connections open. When a new one would pass the cap, the one
//     that has waited longest on its client (idle between requests or still sending its
//     header) is closed, an admitted body's sender only when no other can be; when none can
//     be, the new connection still gets one request on a small reserve, served only when
//     admit() puts it in the io or probe lane (/health, /ready) and 503 otherwise;
//   - a keep-alive connection with no request for idle_timeout is closed; a response not taken
//     by the client within write_timeout is abandoned.
//
// HTTP/1.1 keep-alive and pipelining work (the next request is parsed only once the previous
// answer is written). Refused as 400 before admit() sees them: broken framing, a request
// target that is not a path or decodes to NUL or invalid UTF-8, duplicate Host, a missing Host
// in HTTP/1.1, conflicting Content-Length, Transfer-Encoding other than chunked. Every error
// the transport answers itself carries the API's JSON error body; errors are logged at debug
// level only, since they are the client's.
//
// Thread-safety: start(), stop(), port() and stats() from any thread. `admit` runs on the I/O
// thread and must not block; the returned admission's `run` runs on the lane it names.
// stop() is idempotent, safe before start(), and returns once every handler has returned and
// every connection is closed (responses being written get about a second).
// Throws: start() throws std::runtime_error when the address cannot be bound, naming it.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "http/message.hpp"

namespace sluice::http {

struct transport_limits {
  std::size_t max_connections = 1024;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_header_count = 100;
  std::size_t max_body_bytes = std::size_t{1} << 20;
  std::size_t max_buffered_body_bytes = std::size_t{64} << 20;
  std::chrono::milliseconds header_timeout = std::chrono::seconds(10);
  std::chrono::milliseconds body_timeout = std::chrono::seconds(30);
  std::chrono::milliseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::milliseconds write_timeout = std::chrono::seconds(30);
};

// Connections accepted beyond max_connections when none can be closed for them, each for one
// request on the reserved path.
inline constexpr std::size_t reserve_connections = 32;

// Where a request's handler runs.
enum class lane {
  io,      // on the I/O thread itself: only for handlers that never block (GET /health)
  probe,   // a small pool of its own, so probes never queue behind API calls (GET /ready)
  worker,  // the request threads (everything else)
};

// What admit() decides from a request's header, before its body is read.
struct admission {
  std::optional<response> refusal;  // set: answered at once, the body is never read
  lane where = lane::worker;        // else: where run() is called, with the body in
  std::function<response(const request&)> run;
};

struct transport_settings {
  std::string address = "127.0.0.1";
  int port = 8080;  // 0: any free port
  transport_limits limits;
  std::size_t worker_threads = 8;
  std::size_t probe_threads = 2;
};

// Counters since start(); `open` is the number of connections open now.
struct transport_stats {
  std::uint64_t open = 0;
  std::uint64_t accepted = 0;
  std::uint64_t requests = 0;
  std::uint64_t evicted = 0;       // closed to make room for a new connection
  std::uint64_t reserved = 0;      // taken on the reserve (no room, none could be closed)
  std::uint64_t refused = 0;       // new connections turned away (no room, not even reserve)
  std::uint64_t timed_out = 0;     // header, body, idle or write deadline passed
  std::uint64_t bad_requests = 0;  // refused by the transport itself (framing, limits)
};

class transport {
 public:
  using admit_fn = std::function<admission(const request&)>;

  transport(transport_settings settings, admit_fn admit);
  transport(const transport&) = delete;
  transport& operator=(const transport&) = delete;
  transport(transport&&) = delete;
  transport& operator=(transport&&) = delete;
  ~transport();  // stop()

  // Binds and listens (connections are accepted once this returns) and starts the threads.
  void start();
  void stop();

  // The bound port once started (the chosen one when settings.port was 0), else settings.port.
  [[nodiscard]] int port() const noexcept;
  [[nodiscard]] transport_stats stats() const noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace sluice::http
