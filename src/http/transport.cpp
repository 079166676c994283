#include "http/transport.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <ctime>
#include <exception>
#include <future>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <fcntl.h>
#include <sys/resource.h>

#include "http/errors.hpp"
#include "http/json.hpp"
#include "http/request_parser.hpp"
#include "sluice/log.hpp"

namespace sluice::http {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using sys_error = boost::system::error_code;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

// After a response that ends the connection, what the client still sends is read and dropped
// for this long (or this much) before the socket is closed: closing with unread bytes makes the
// kernel send a reset, which can destroy the response before the client has read it.
constexpr auto linger_timeout = 2s;
constexpr std::size_t linger_max_bytes = std::size_t{64} << 20;
// How long stop() lets answers already computed be written before it closes everything.
constexpr auto stop_grace = 1s;
// Bytes asked of the socket per read while waiting for a request.
constexpr std::size_t read_chunk = 16 * 1024;
// File descriptors kept free for everything else (database connections, logs, child pipes)
// when the descriptor limit is raised for max_connections.
constexpr rlim_t spare_descriptors = 256;

response error_response(error_code code, std::string_view message) {
  response r;
  r.status = http_status(code);
  r.set_content(dump(error_json(code, message)), "application/json");
  r.set_header("Cache-Control", "no-store");
  return r;
}

bool is_http_error(const sys_error& ec) {
  return ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category();
}

// The client went away or the connection was closed under the operation: nothing to answer.
bool is_disconnect(const sys_error& ec) {
  return ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::connection_aborted || ec == asio::error::broken_pipe ||
         ec == asio::error::operation_aborted || ec == asio::error::bad_descriptor ||
         ec == asio::error::not_connected;
}

void set_cloexec(int fd) {
  const int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

// The RFC 9110 date of now, recomputed at most once a second (I/O thread only).
const std::string& http_date() {
  static std::string text;
  static std::time_t last = 0;
  const std::time_t now = std::time(nullptr);
  if (now != last || text.empty()) {
    std::tm tm{};
    ::gmtime_r(&now, &tm);
    char buf[64];
    const auto n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    text.assign(buf, n);
    last = now;
  }
  return text;
}

bool safe_header_text(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

class connection;

// Every open connection is on exactly one list, by what it is doing, in the order it joined
// that list (oldest first), so the oldest idle one is the front of `idle`.
using connection_list = std::list<connection*>;

// Counters shared by start() / stop() generations of the engine.
struct counters {
  std::atomic<std::uint64_t> open{0};
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> requests{0};
  std::atomic<std::uint64_t> evicted{0};
  std::atomic<std::uint64_t> reserved{0};
  std::atomic<std::uint64_t> refused{0};
  std::atomic<std::uint64_t> timed_out{0};
  std::atomic<std::uint64_t> bad_requests{0};
};

// One listening socket and its connections. Everything but the counters and the thread pools
// belongs to the I/O thread.
struct engine {
  engine(const transport_settings& s, const transport::admit_fn& a, counters& c)
      : settings(s), admit(a), count(c) {}

  void accept();
  void on_accept(const sys_error& ec, tcp::socket socket);
  void make_room();
  void refuse(tcp::socket socket);
  void begin_stop();
  void close_all_soon();
  void close_list(connection_list& list);
  void connection_closed();

  const transport_settings& settings;
  const transport::admit_fn& admit;
  counters& count;

  // I/O thread only. The lists are declared before the io_context so that they outlive the
  // handlers it destroys.
  connection_list idle;       // keep-alive, waiting for the next request
  connection_list header;     // reading a request header
  connection_list body;       // reading an admitted request's body
  connection_list lingering;  // answered, dropping what the client still sends before closing
  connection_list busy;       // a handler runs or its answer is being written
  std::size_t open = 0;
  std::size_t reserve_open = 0;
  std::size_t buffered_body = 0;
  bool stopping = false;
  steady::time_point last_pressure_log{};
  std::uint64_t unlogged_refusals = 0;

  asio::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  asio::steady_timer accept_retry{ioc};
  asio::steady_timer stop_timer{ioc};
  std::optional<asio::thread_pool> workers;
  std::optional<asio::thread_pool> probes;
};

class connection : public std::enable_shared_from_this<connection> {
 public:
  connection(engine& e, tcp::socket socket, bool reserve)
      : e_(e),
        stream_(std::move(socket)),
        buffer_(e.settings.limits.max_header_bytes + read_chunk),
        reserve_(reserve) {}

  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { leave_list(); }

  void start() {
    sys_error ec;
    stream_.socket().non_blocking(true, ec);  // for next_pipelined()'s reads; async ones are alike
    move_to(e_.header);
    stream_.expires_after(e_.settings.limits.header_timeout);
    read_header();
  }

  // When it joined the list it is on (each list is in this order).
  [[nodiscard]] steady::time_point since() const noexcept { return since_; }

  // Idempotent; I/O thread only. Pending operations end with operation_aborted. `why` is
  // logged (debug), so that every disconnect has a reason.
  void close(std::string_view why) {
    if (closed_) return;
    closed_ = true;
    sys_error ec;
    const auto peer = stream_.socket().remote_endpoint(ec);
    log(log_level::debug, "http",
        "closed connection from " +
            (ec ? std::string("?")
                : peer.address().to_string() + ":" + std::to_string(peer.port())) +
            ": " + std::string(why));
    leave_list();
    release_body();
    --e_.open;
    if (reserve_) --e_.reserve_open;
    --e_.count.open;
    stream_.close();
    e_.connection_closed();
  }

 private:
  // ---- reading a request ----

  void read_header() {
    parser_.emplace(e_.settings.limits.max_header_bytes, e_.settings.limits.max_header_count);
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](const sys_error& ec, std::size_t) { self->on_header(ec); });
  }

  // Keep-alive between requests: the idle deadline runs until the next request's first byte,
  // the header deadline from then on.
  void wait_for_request() {
    move_to(e_.idle);
    stream_.expires_after(e_.settings.limits.idle_timeout);
    stream_.async_read_some(buffer_.prepare(read_chunk),
                            [self = shared_from_this()](const sys_error& ec, std::size_t n) {
                              self->on_first_bytes(ec, n);
                            });
  }

  void on_first_bytes(const sys_error& ec, std::size_t n) {
    if (closed_) return;
    if (ec) {
      if (ec == beast::error::timeout) {
        ++e_.count.timed_out;
        close("idle for http.idle_timeout");
      } else {
        close("client closed the idle connection (" + ec.message() + ")");
      }
      return;
    }
    buffer_.commit(n);
    move_to(e_.header);
    stream_.expires_after(e_.settings.limits.header_timeout);
    read_header();
  }

  void on_header(const sys_error& ec) {
    if (closed_) return;
    const auto& limits = e_.settings.limits;
    if (ec) {
      if (ec == beast::error::timeout) {
        ++e_.count.timed_out;
        close("request header not complete within http.header_timeout");
      } else if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
        fail(error_code::header_too_large,
             parser_->too_many_fields
                 ? "request header has more than " + std::to_string(limits.max_header_count) +
                       " fields (http.max_header_count)"
                 : "request header is larger than " + std::to_string(limits.max_header_bytes) +
                       " bytes (http.max_header_bytes)");
      } else if (is_http_error(ec) && !is_disconnect(ec)) {
        fail(error_code::bad_request, framing_problem(ec));
      } else {
        close("client left while sending a header (" + ec.message() + ")");
      }
      return;
    }
    started_ = steady::now();
    req_ = std::move(parser_->head);
    parser_->head = request{};
    req_.has_body = parser_->chunked() || parser_->content_length().value_or(0) > 0;
    if (const auto problem = header_problem(req_)) {
      fail(error_code::bad_request, *problem);
      return;
    }
    try {
      parse_target(req_.target, req_);
    } catch (const api_error& e) {
      // The framing is sound, so the connection may stay (when no body follows unread).
      ++e_.count.bad_requests;
      respond(error_response(e.code(), e.what()), req_.has_body);
      return;
    }
    move_to(e_.busy);
    ++e_.count.requests;
    try {
      adm_ = e_.admit(req_);
    } catch (const std::exception& e) {
      log(log_level::error, "http",
          "admitting " + req_.method + " " + printable(req_.target) + " failed: " + e.what());
      respond(
          error_response(error_code::internal, "internal error; the server log has the details"),
          true);
      return;
    }
    if (adm_.refusal) {
      respond(std::move(*adm_.refusal), req_.has_body);
      return;
    }
    if (reserve_ && adm_.where == lane::worker) {
      respond(error_response(error_code::unavailable,
                             "the server has http.max_connections connections open and busy; "
                             "only /health and /ready are answered now: try again shortly"),
              true);
      return;
    }
    if (!req_.has_body) {
      run();
      return;
    }
    const auto length = parser_->content_length();
    if (length && *length > limits.max_body_bytes) {
      ++e_.count.bad_requests;
      respond(too_large(), true);
      return;
    }
    const std::size_t need = length ? static_cast<std::size_t>(*length) : limits.max_body_bytes;
    if (e_.buffered_body + need > limits.max_buffered_body_bytes) {
      respond(error_response(error_code::unavailable,
                             "too many request bodies in flight (http.max_buffered_body_bytes); "
                             "try again shortly"),
              true);
      return;
    }
    reserved_body_ = need;
    e_.buffered_body += need;
    parser_->max_body = limits.max_body_bytes;
    if (req_.version >= 11 && iequals(req_.header("expect"), "100-continue")) {
      // Only now, with the request admitted, is the client invited to send its body.
      static const std::string proceed = "HTTP/1.1 100 Continue\r\n\r\n";
      stream_.expires_after(limits.write_timeout);
      asio::async_write(stream_, asio::buffer(proceed),
                        [self = shared_from_this()](const sys_error& wec, std::size_t) {
                          if (self->closed_) return;
                          if (wec) {
                            self->close("writing 100 Continue failed (" + wec.message() + ")");
                            return;
                          }
                          self->read_body();
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    move_to(e_.body);
    stream_.expires_after(e_.settings.limits.body_timeout);
    bhttp::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](const sys_error& ec, std::size_t) { self->on_body(ec); });
  }

  void on_body(const sys_error& ec) {
    if (closed_) return;
    if (ec) {
      if (parser_->body_too_large) {
        ++e_.count.bad_requests;
        respond(too_large(), true);
      } else if (ec == beast::error::timeout) {
        ++e_.count.timed_out;
        close("request body not complete within http.body_timeout");
      } else if (is_http_error(ec) && !is_disconnect(ec)) {
        fail(error_code::bad_request, framing_problem(ec));
      } else {
        close("client left while sending a body (" + ec.message() + ")");
      }
      return;
    }
    req_.body = std::move(parser_->head.body);
    run();
  }

  response too_large() const {
    return error_response(error_code::payload_too_large,
                          "request body is larger than " +
                              std::to_string(e_.settings.limits.max_body_bytes) +
                              " bytes (http.max_body_bytes)");
  }

  // ---- serving it ----

  void run() {
    move_to(e_.busy);
    if (adm_.where == lane::io) {
      respond(invoke(), false);
      return;
    }
    auto& pool = adm_.where == lane::probe ? *e_.probes : *e_.workers;
    asio::post(pool, [self = shared_from_this(), work = asio::make_work_guard(e_.ioc)]() mutable {
      response r = self->invoke();
      asio::post(self->e_.ioc,
                 [self, r = std::move(r)]() mutable { self->respond(std::move(r), false); });
      work.reset();
    });
  }

  // On the handler's lane. The I/O thread leaves req_ and adm_ alone meanwhile.
  response invoke() {
    try {
      if (!adm_.run) throw std::logic_error("admission without a handler");
      return adm_.run(req_);
    } catch (const std::exception& e) {
      log(log_level::error, "http",
          req_.method + " " + printable(req_.target) + " failed: " + e.what());
    } catch (...) {
      log(log_level::error, "http", req_.method + " " + printable(req_.target) + " failed");
    }
    return error_response(error_code::internal, "internal error; the server log has the details");
  }

  // A request the transport refuses itself; the connection ends after the answer.
  void fail(error_code code, const std::string& message) {
    ++e_.count.bad_requests;
    log(log_level::debug, "http", "refused a request: " + message);
    respond(error_response(code, message), true);
  }

  // Writes `r`; the connection ends after it when `unread_body` (bytes of this request may
  // still be on their way), when the client or HTTP/1.0 asks for it, or when stopping.
  void respond(response r, bool unread_body) {
    if (closed_) return;
    move_to(e_.busy);
    const bool head = req_.method == "HEAD";
    keep_alive_ = !unread_body && !e_.stopping && !reserve_ && parser_ && parser_->is_done() &&
                  parser_->keep_alive();
    const bool no_body = r.status == 204 || r.status == 304 || (r.status >= 100 && r.status < 200);
    out_ = std::move(r);
    if (!req_.method.empty()) {
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started_).count();
      log(log_level::debug, "http",
          req_.method + " " + printable(req_.target) + " " + std::to_string(out_.status) + " (" +
              std::to_string(ms) + " ms)");
    }

    std::string& h = head_out_;
    h.clear();
    const auto reason = bhttp::obsolete_reason(static_cast<bhttp::status>(out_.status));
    h += "HTTP/1.1 " + std::to_string(out_.status) + " ";
    h.append(reason.data(), reason.size());
    h += "\r\nDate: " + http_date() + "\r\nX-Content-Type-Options: nosniff\r\n";
    for (const auto& [name, value] : out_.headers) {
      if (name.empty() || !safe_header_text(name) || !safe_header_text(value) ||
          iequals(name, "content-length") || iequals(name, "transfer-encoding") ||
          iequals(name, "connection") || iequals(name, "content-type") || iequals(name, "date")) {
        continue;
      }
      h += name + ": " + value + "\r\n";
    }
    if (!no_body) {
      if (!out_.content_type.empty() && safe_header_text(out_.content_type)) {
        h += "Content-Type: " + out_.content_type + "\r\n";
      }
      h += "Content-Length: " + std::to_string(out_.body.size()) + "\r\n";
    }
    if (!keep_alive_) {
      h += "Connection: close\r\n";
    } else if (req_.version == 10) {
      h += "Connection: keep-alive\r\n";
    }
    h += "\r\n";

    const bool send_body = !head && !no_body;
    const std::array<asio::const_buffer, 2> buffers{
        asio::buffer(head_out_), send_body ? asio::buffer(out_.body) : asio::const_buffer()};
    stream_.expires_after(e_.settings.limits.write_timeout);
    asio::async_write(
        stream_, buffers,
        [self = shared_from_this()](const sys_error& ec, std::size_t) { self->on_written(ec); });
  }

  void on_written(const sys_error& ec) {
    if (closed_) return;
    release_body();
    out_ = response{};
    adm_ = admission{};
    req_ = request{};
    if (ec) {
      if (ec == beast::error::timeout) {
        ++e_.count.timed_out;
        close("response not taken within http.write_timeout");
      } else {
        close("writing the response failed (" + ec.message() + ")");
      }
    } else if (!keep_alive_) {
      linger();
    } else if (buffer_.size() > 0) {
      next_pipelined();
    } else {
      wait_for_request();
    }
  }

  // The client sent more than the request just answered (pipelining). A header that is
  // already here whole is parsed at once, so a pipelining client is never on the header list,
  // where it could be closed to make room, between two of its requests.
  void next_pipelined() {
    parser_.emplace(e_.settings.limits.max_header_bytes, e_.settings.limits.max_header_count);
    sys_error ec;
    for (;;) {
      buffer_.consume(parser_->put(buffer_.data(), ec));
      if (ec != bhttp::error::need_more || buffer_.size() >= buffer_.max_size()) break;
      // The rest of the header is usually in the socket already (the buffer holds what one
      // read brought): take it without waiting (the socket is non-blocking).
      sys_error rec;
      const std::size_t room = std::min(read_chunk, buffer_.max_size() - buffer_.size());
      const std::size_t n = stream_.socket().read_some(buffer_.prepare(room), rec);
      if (rec) break;  // nothing there yet: read it asynchronously below
      buffer_.commit(n);
    }
    if (!parser_->is_header_done() && (!ec || ec == bhttp::error::need_more)) {
      // Only part of the next header so far.
      move_to(e_.header);
      stream_.expires_after(e_.settings.limits.header_timeout);
      bhttp::async_read_header(
          stream_, buffer_, *parser_,
          [self = shared_from_this()](const sys_error& rec, std::size_t) { self->on_header(rec); });
      return;
    }
    on_header(ec);
  }

  // ---- ending ----

  void linger() {
    move_to(e_.lingering);
    sys_error ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      close("shutdown after the last response failed (" + ec.message() + ")");
      return;
    }
    buffer_.clear();
    drained_ = 0;
    stream_.expires_after(linger_timeout);
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(discard_),
                            [self = shared_from_this()](const sys_error& ec, std::size_t n) {
                              if (self->closed_) return;
                              self->drained_ += n;
                              if (ec || self->drained_ > linger_max_bytes) {
                                self->close("done after the last response");
                                return;
                              }
                              self->drain();
                            });
  }

  void release_body() {
    e_.buffered_body -= reserved_body_;
    reserved_body_ = 0;
  }

  void move_to(connection_list& list) {
    if (list_ == &list) return;
    leave_list();
    list_ = &list;
    pos_ = list.insert(list.end(), this);
    since_ = steady::now();
  }

  void leave_list() {
    if (list_ == nullptr) return;
    list_->erase(pos_);
    list_ = nullptr;
  }

  engine& e_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<request_parser> parser_;
  request req_;
  admission adm_;
  response out_;
  std::string head_out_;
  connection_list* list_ = nullptr;
  connection_list::iterator pos_;
  steady::time_point since_;  // when it joined list_
  bool reserve_;
  bool closed_ = false;
  bool keep_alive_ = false;
  std::size_t reserved_body_ = 0;
  std::size_t drained_ = 0;
  steady::time_point started_;
  std::array<char, 4096> discard_{};
};

void engine::accept() {
  acceptor.async_accept(
      [this](const sys_error& ec, tcp::socket socket) { on_accept(ec, std::move(socket)); });
}

void engine::on_accept(const sys_error& ec, tcp::socket socket) {
  if (stopping || ec == asio::error::operation_aborted) return;
  if (ec) {
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
        ec == asio::error::no_memory) {
      // Out of file descriptors or memory: accepting again at once would spin.
      const auto now = steady::now();
      if (now - last_pressure_log > 10s) {
        last_pressure_log = now;
        log(log_level::warn, "http",
            "cannot accept connections: " + ec.message() + " (" + std::to_string(open) +
                " open; lower http.max_connections or raise the file descriptor limit)");
      }
      accept_retry.expires_after(100ms);
      accept_retry.async_wait([this](const sys_error& wait_ec) {
        if (!wait_ec && !stopping) accept();
      });
      return;
    }
    accept();  // the client left before it was taken, and the like
    return;
  }
  ++count.accepted;
  set_cloexec(socket.native_handle());
  bool reserve = false;
  const auto regular_full = [this] {
    return open - reserve_open >= settings.limits.max_connections;
  };
  if (regular_full()) {
    make_room();
    // Still full when the connection closed was a reserve one, or none could be closed (every
    // one is being served): this one goes on the reserve, if it has room.
    if (regular_full()) {
      if (reserve_open >= reserve_connections) {
        refuse(std::move(socket));
        accept();
        return;
      }
      reserve = true;
      ++count.reserved;
    }
  }
  sys_error ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  auto c = std::make_shared<connection>(*this, std::move(socket), reserve);
  ++open;
  if (reserve) ++reserve_open;
  ++count.open;
  c->start();
  accept();
}

// Closes the connection that matters least to make room for a new one: one lingering after
// its last answer; else the one that has waited longest on its client, idle between requests
// or still sending its header (an active keep-alive client, idle for a moment between two
// requests, outlives a slow one); else the oldest still sending its (admitted) body.
// Connections whose request is being served are never closed.
void engine::make_room() {
  connection_list* pick = nullptr;
  if (!lingering.empty()) {
    pick = &lingering;
  } else if (!idle.empty() &&
             (header.empty() || idle.front()->since() <= header.front()->since())) {
    pick = &idle;
  } else if (!header.empty()) {
    pick = &header;
  } else if (!body.empty()) {
    pick = &body;
  } else {
    return;
  }
  ++count.evicted;
  pick->front()->close(std::string("the oldest ") +
                       (pick == &lingering ? "lingering"
                        : pick == &idle    ? "idle"
                        : pick == &header  ? "header-reading"
                                           : "body-reading") +
                       " connection, closed to make room for a new one (http.max_connections)");
}

void engine::refuse(tcp::socket socket) {
  ++count.refused;
  ++unlogged_refusals;
  const auto now = steady::now();
  if (now - last_pressure_log > 10s) {
    last_pressure_log = now;
    log(log_level::warn, "http",
        "refused " + std::to_string(unlogged_refusals) + " connection(s): http.max_connections (" +
            std::to_string(settings.limits.max_connections) +
            ") are open and every one is being served");
    unlogged_refusals = 0;
  }
  static const std::string answer = [] {
    const std::string text =
        dump(error_json(error_code::unavailable, "too many connections; try again shortly"));
    return "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           "Content-Length: " +
           std::to_string(text.size()) + "\r\nConnection: close\r\nRetry-After: 1\r\n\r\n" + text;
  }();
  sys_error ec;
  socket.non_blocking(true, ec);
  if (!ec) socket.write_some(asio::buffer(answer), ec);
  socket.close(ec);
}

void engine::begin_stop() {
  stopping = true;
  sys_error ec;
  acceptor.close(ec);
  accept_retry.cancel();
  for (connection_list* list : {&idle, &header, &body, &lingering})
    close_list(*list);
}

void engine::close_all_soon() {
  if (open == 0) return;
  stop_timer.expires_after(stop_grace);
  stop_timer.async_wait([this](const sys_error&) {
    for (connection_list* list : {&idle, &header, &body, &lingering, &busy})
      close_list(*list);
  });
}

void engine::close_list(connection_list& list) {
  while (!list.empty())
    list.front()->close("the server is stopping");  // removes it from the list
}

void engine::connection_closed() {
  if (stopping && open == 0) stop_timer.cancel();
}

tcp::endpoint resolve(asio::io_context& ioc, const std::string& address, int port) {
  sys_error ec;
  const auto ip = asio::ip::make_address(address, ec);
  if (!ec) return {ip, static_cast<unsigned short>(port)};
  tcp::resolver resolver(ioc);
  const auto results = resolver.resolve(address, std::to_string(port), ec);
  if (ec || results.empty()) {
    throw std::runtime_error("http: cannot listen on " + address + ":" + std::to_string(port) +
                             ": " + (ec ? ec.message() : std::string("no address")) +
                             " (set http.address to an IP address or a name of this host)");
  }
  return results.begin()->endpoint();
}

// max_connections sockets need as many descriptors: raise the soft limit towards the hard one
// when it is lower than that plus a margin for everything else.
void ensure_descriptors(std::size_t max_connections) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  const rlim_t want =
      static_cast<rlim_t>(max_connections + reserve_connections) + spare_descriptors;
  if (lim.rlim_cur != RLIM_INFINITY && lim.rlim_cur < want) {
    const rlim_t before = lim.rlim_cur;
    lim.rlim_cur = lim.rlim_max == RLIM_INFINITY ? want : std::min(want, lim.rlim_max);
    if (lim.rlim_cur > before && ::setrlimit(RLIMIT_NOFILE, &lim) == 0) {
      log(log_level::info, "http",
          "raised the open file limit from " + std::to_string(before) + " to " +
              std::to_string(lim.rlim_cur) + " for http.max_connections");
    } else {
      lim.rlim_cur = before;
    }
    if (lim.rlim_cur < want) {
      log(log_level::warn, "http",
          "http.max_connections is " + std::to_string(max_connections) +
              " but the process may open only " + std::to_string(lim.rlim_cur) +
              " files (ulimit -n); connections past that are refused by the kernel (raise "
              "LimitNOFILE or lower http.max_connections)");
    }
  }
}

}  // namespace

struct transport::impl {
  transport_settings settings;
  admit_fn admit;
  counters count;
  std::atomic<int> bound_port{0};

  std::mutex lifecycle_mutex;
  std::unique_ptr<engine> running;  // guarded by lifecycle_mutex
  std::thread io_thread;            // guarded by lifecycle_mutex
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
};

transport::transport(transport_settings settings, admit_fn admit)
    : impl_(std::make_unique<impl>()) {
  impl_->settings = std::move(settings);
  impl_->admit = std::move(admit);
  impl_->bound_port = impl_->settings.port;
}

transport::~transport() {
  stop();
}

void transport::start() {
  impl& d = *impl_;
  const std::scoped_lock lock(d.lifecycle_mutex);
  if (d.running) return;
  const auto& s = d.settings;
  auto e = std::make_unique<engine>(d.settings, d.admit, d.count);
  const auto endpoint = resolve(e->ioc, s.address, s.port);
  const auto fail = [&](const sys_error& ec) {
    throw std::runtime_error("http: cannot listen on " + s.address + ":" + std::to_string(s.port) +
                             ": " + ec.message() +
                             " (is another process using the port? set http.address/http.port)");
  };
  sys_error ec;
  e->acceptor.open(endpoint.protocol(), ec);
  if (ec) fail(ec);
  set_cloexec(e->acceptor.native_handle());
  // SO_REUSEADDR allows a quick restart; no SO_REUSEPORT, which would let a second daemon bind
  // the same port silently.
  e->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  e->acceptor.bind(endpoint, ec);
  if (ec) fail(ec);
  e->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail(ec);
  d.bound_port = e->acceptor.local_endpoint().port();
  ensure_descriptors(s.limits.max_connections);

  e->workers.emplace(std::max<std::size_t>(s.worker_threads, 1));
  e->probes.emplace(std::max<std::size_t>(s.probe_threads, 1));
  d.work.emplace(asio::make_work_guard(e->ioc));
  e->accept();
  engine* raw = e.get();
  d.io_thread = std::thread([raw] {
    for (;;) {
      try {
        raw->ioc.run();
        return;
      } catch (const std::exception& ex) {
        log(log_level::error, "http", std::string("I/O thread: ") + ex.what());
      }
    }
  });
  d.running = std::move(e);
}

void transport::stop() {
  impl& d = *impl_;
  const std::scoped_lock lock(d.lifecycle_mutex);
  if (!d.running) return;
  engine& e = *d.running;
  // 1. No new connections; those not being served are closed.
  std::promise<void> stopped_accepting;
  asio::post(e.ioc, [&] {
    e.begin_stop();
    stopped_accepting.set_value();
  });
  stopped_accepting.get_future().wait();
  // 2. The handlers that run finish; their answers go to the I/O thread.
  e.workers->join();
  e.probes->join();
  // 3. Those answers get a moment to be written, then every connection is closed and the I/O
  // thread runs out of work.
  asio::post(e.ioc, [&e] { e.close_all_soon(); });
  d.work.reset();
  d.io_thread.join();
  d.running.reset();
}

int transport::port() const noexcept {
  return impl_->bound_port;
}

transport_stats transport::stats() const noexcept {
  const counters& c = impl_->count;
  transport_stats s;
  s.open = c.open;
  s.accepted = c.accepted;
  s.requests = c.requests;
  s.evicted = c.evicted;
  s.reserved = c.reserved;
  s.refused = c.refused;
  s.timed_out = c.timed_out;
  s.bad_requests = c.bad_requests;
  return s;
}

}  // namespace sluice::http
