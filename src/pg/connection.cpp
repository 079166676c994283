#include "sluice/pg/connection.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <unistd.h>

#include "sluice/enum_names.hpp"
#include "sluice/log.hpp"
#include "sluice/pg/conninfo.hpp"

namespace sluice::pg {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

struct conn_closer {
  void operator()(PGconn* c) const noexcept { PQfinish(c); }
};
using conn_ptr = std::unique_ptr<PGconn, conn_closer>;

// Server notices go to the library's log hook instead of libpq's default (stderr, behind the
// application's back): WARNING as warn, the chattier levels (NOTICE, INFO, ...) as debug.
// libpq also passes here an error that arrives while no statement runs, such as the FATAL
// "terminating connection due to administrator command" before the server hangs up: that is
// logged as warn too, since the connection_error that follows can only say "server closed the
// connection unexpectedly".
// Called from inside libpq (C code): nothing may propagate out of it.
void forward_notice(void* /*arg*/, const PGresult* res) noexcept try {
  const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  const bool warning =
      severity != nullptr &&
      (std::strcmp(severity, "WARNING") == 0 || std::strcmp(severity, "ERROR") == 0 ||
       std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0);
  const char* text = PQresultErrorMessage(res);
  std::string message = "server notice: ";
  message += text == nullptr ? "" : text;
  while (!message.empty() && message.back() == '\n')
    message.pop_back();
  log(warning ? log_level::warn : log_level::debug, "pg", message);
} catch (...) {
  // A notice that cannot be logged is dropped.
}

std::string or_default(const char* s, std::string_view fallback) {
  return (s == nullptr || *s == '\0') ? std::string(fallback) : std::string(s);
}

std::string describe_conn(const PGconn* c) {
  return "host=" + or_default(PQhost(c), "(default)") +
         " port=" + or_default(PQport(c), "(default)") +
         " dbname=" + or_default(PQdb(c), "(default)") +
         " user=" + or_default(PQuser(c), "(default)");
}

// libpq messages end with a newline and continue on tab-indented lines; verbose ones (used
// while connecting, to get the SQLSTATE) add a "LOCATION:" line naming server source files.
std::string one_line(std::string_view text) {
  std::string out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t'))
      line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) {
      line.remove_suffix(1);
    }
    if (line.empty() || line.substr(0, 9) == "LOCATION:") continue;
    if (!out.empty()) out += ' ';
    out += line;
  }
  return out;
}

void replace_all(std::string& text, std::string_view needle, std::string_view replacement) {
  if (needle.empty()) return;
  std::size_t pos = 0;
  while ((pos = text.find(needle, pos)) != std::string::npos) {
    text.replace(pos, needle.size(), replacement);
    pos += replacement.size();
  }
}

steady_clock::time_point deadline_after(milliseconds timeout) {
  // A caller may pass milliseconds::max() for "forever"; keep the arithmetic in range.
  constexpr auto ten_years = std::chrono::hours(24 * 365 * 10);
  if (timeout < milliseconds::zero()) timeout = milliseconds::zero();
  if (timeout > ten_years) timeout = std::chrono::duration_cast<milliseconds>(ten_years);
  return steady_clock::now() + timeout;
}

enum class wait_result { ready, timed_out, failed };

// Waits until `fd` is ready for `events` or `deadline` passes. Wakes up for real events only
// (poll with the remaining time), and re-checks the clock after an early or interrupted wakeup.
wait_result wait_socket(int fd, short events, steady_clock::time_point deadline,
                        std::string* error_message) {
  for (;;) {
    const auto now = steady_clock::now();
    if (now >= deadline) return wait_result::timed_out;
    // Rounded up, so that a remaining 0.3 ms does not become a busy poll(…, 0).
    const auto remaining = std::chrono::ceil<milliseconds>(deadline - now).count();
    pollfd p{};
    p.fd = fd;
    p.events = events;
    const int rc = ::poll(&p, 1, static_cast<int>(std::min<long long>(remaining, INT_MAX)));
    if (rc > 0) return wait_result::ready;
    if (rc < 0 && errno != EINTR) {
      if (error_message != nullptr) *error_message = std::string("poll: ") + std::strerror(errno);
      return wait_result::failed;
    }
  }
}

std::string field(const PGresult* res, int code) {
  const char* v = PQresultErrorField(res, code);
  return v == nullptr ? std::string() : std::string(v);
}

std::string connect_failure(PGconn* c, const std::vector<std::string>& secret_hints) {
  std::string message = one_line(PQerrorMessage(c));
  // libpq does not echo passwords in connection errors; this is a second line of defence.
  // Very short passwords are left alone: replacing every "a" would wreck the message.
  std::vector<std::string> secrets = secret_hints;
  secrets.push_back(or_default(PQpass(c), ""));
  for (const std::string& p : secrets) {
    if (p.size() >= 4) replace_all(message, p, "***");
  }
  return message.empty() ? std::string("unknown error") : message;
}

// The `options` libpq would send when the conninfo names none: PGOPTIONS, or the options of
// the service PGSERVICE names. (A service named inside the conninfo is not looked up here:
// options set only in its service file are replaced when statement_timeout is added.)
std::string default_startup_options() {
  PQconninfoOption* defaults = PQconndefaults();
  if (defaults == nullptr) throw std::bad_alloc();
  std::string value;
  for (const PQconninfoOption* o = defaults; o->keyword != nullptr; ++o) {
    if (o->val != nullptr && std::strcmp(o->keyword, "options") == 0) value = o->val;
  }
  PQconninfoFree(defaults);
  return value;
}

}  // namespace

std::string_view to_string(transaction_status s) noexcept {
  static constexpr std::array<std::string_view, 5> names{"idle", "active", "in_transaction",
                                                         "in_error", "unknown"};
  return enum_name<transaction_status::unknown>(s, names, "unknown");
}

// ---- cancel_handle ----

void cancel_handle::deleter::operator()(pg_cancel* c) const noexcept {
  PQfreeCancel(c);
}

bool cancel_handle::cancel(std::string* error_message) const {
  if (!cancel_) {
    if (error_message != nullptr) *error_message = "no connection to cancel";
    return false;
  }
  char buf[256] = {};
  if (PQcancel(cancel_.get(), buf, sizeof buf) == 1) return true;
  if (error_message != nullptr) *error_message = one_line(buf);
  return false;
}

// ---- connection: lifetime ----

connection::connection(pg_conn* conn) : conn_(conn), description_(describe_conn(conn)) {}

connection::connection(connection&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)),
      poisoned_(std::exchange(other.poisoned_, false)),
      description_(std::move(other.description_)),
      proxy_(std::exchange(other.proxy_, std::nullopt)),
      cache_capacity_(other.cache_capacity_),
      statement_prefix_(std::move(other.statement_prefix_)),
      next_statement_id_(other.next_statement_id_),
      cache_lru_(std::move(other.cache_lru_)),
      cache_index_(std::move(other.cache_index_)),
      pending_deallocations_(std::move(other.pending_deallocations_)) {
  // List nodes do not move, so the index's string_views into them stay valid.
  other.forget_statement_cache();
}

connection& connection::operator=(connection&& other) noexcept {
  if (this != &other) {
    close();
    conn_ = std::exchange(other.conn_, nullptr);
    poisoned_ = std::exchange(other.poisoned_, false);
    description_ = std::move(other.description_);
    proxy_ = std::exchange(other.proxy_, std::nullopt);
    cache_capacity_ = other.cache_capacity_;
    statement_prefix_ = std::move(other.statement_prefix_);
    next_statement_id_ = other.next_statement_id_;
    cache_lru_ = std::move(other.cache_lru_);
    cache_index_ = std::move(other.cache_index_);
    pending_deallocations_ = std::move(other.pending_deallocations_);
    other.forget_statement_cache();
  }
  return *this;
}

connection::~connection() {
  close();
}

bool connection::close_and_confirm(std::chrono::milliseconds server_grace) noexcept {
  if (conn_ == nullptr) return true;
  // A second descriptor of the socket keeps it open after PQfinish() (which sends Terminate and
  // closes libpq's own), so the server's close can be seen: end of file, or a reset.
  const int fd = PQsocket(conn_);
  const int watch = fd >= 0 ? ::fcntl(fd, F_DUPFD_CLOEXEC, 0) : -1;
  close();
  if (watch < 0) return false;
  const auto deadline = std::chrono::steady_clock::now() + server_grace;
  bool confirmed = false;
  for (;;) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{watch, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    char buf[512];
    const ssize_t got = ::read(watch, buf, sizeof buf);  // anything left (TLS close_notify)
    if (got == 0) {
      confirmed = true;
      break;
    }
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (got < 0) {
      confirmed = errno == ECONNRESET || errno == EPIPE;
      break;
    }
  }
  ::close(watch);
  return confirmed;
}

void connection::close() noexcept {
  if (conn_ != nullptr) PQfinish(conn_);
  conn_ = nullptr;
  proxy_.reset();
  forget_statement_cache();
}

std::string connection::new_statement_prefix() {
  // 64 bits from the operating system's generator for every connection object: a seeded
  // engine would hand a forked child the parent's sequence. Should no generator be available,
  // a mix of the clock, the process id and a counter still differs between connections.
  std::uint64_t bits = 0;
  try {
    std::random_device device;
    bits = (static_cast<std::uint64_t>(device()) << 32) ^ static_cast<std::uint64_t>(device());
  } catch (const std::exception&) {
    static std::atomic<std::uint64_t> counter{0};
    bits = static_cast<std::uint64_t>(steady_clock::now().time_since_epoch().count()) ^
           (static_cast<std::uint64_t>(::getpid()) << 40) ^
           (counter.fetch_add(1) * 0x9E3779B97F4A7C15ULL);
  }
  static constexpr char digits[] = "0123456789abcdef";
  std::string prefix = "sluice_s";
  for (int shift = 60; shift >= 0; shift -= 4)
    prefix += digits[(bits >> shift) & 0xF];
  prefix += '_';
  return prefix;
}

namespace {

// One host of a conninfo that names several ("host=a,b port=1,2"): what a connect attempt to it
// alone puts in place of the lists. Empty: not given.
struct host_target {
  std::string host, hostaddr, port;
};

std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = list.find(',', start);
    out.push_back(
        list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

// The hosts of a conninfo's host/hostaddr/port lists, one target each, when there are two or
// more and the lists match as libpq requires (as many hostaddrs as hosts, one port or one per
// host, no empty entry). Otherwise empty: one attempt with the string as it is, and libpq
// reports what does not match.
std::vector<host_target> host_targets(const std::optional<std::string>& host,
                                      const std::optional<std::string>& hostaddr,
                                      const std::optional<std::string>& port) {
  const std::vector<std::string> hosts = host ? split_commas(*host) : std::vector<std::string>{};
  const std::vector<std::string> addrs =
      hostaddr ? split_commas(*hostaddr) : std::vector<std::string>{};
  const std::vector<std::string> ports = port ? split_commas(*port) : std::vector<std::string>{};
  const std::size_t n = std::max(hosts.size(), addrs.size());
  if (n < 2) return {};
  if ((!hosts.empty() && hosts.size() != n) || (!addrs.empty() && addrs.size() != n) ||
      (ports.size() > 1 && ports.size() != n)) {
    return {};
  }
  const auto has_empty = [](const std::vector<std::string>& v) {
    return std::any_of(v.begin(), v.end(), [](const std::string& e) { return e.empty(); });
  };
  if (has_empty(hosts) || has_empty(addrs) || has_empty(ports)) return {};
  std::vector<host_target> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (!hosts.empty()) out[i].host = hosts[i];
    if (!addrs.empty()) out[i].hostaddr = addrs[i];
    if (!ports.empty()) out[i].port = ports.size() == 1 ? ports[0] : ports[i];
  }
  return out;
}

}  // namespace

connection connection::open(const connect_options& options) {
  const std::string& conninfo = options.conninfo;
  if (options.statement_timeout && options.statement_timeout->count() < 0) {
    throw std::invalid_argument("statement timeout must not be negative");
  }
  std::vector<std::string> secret_hints;        // password, sslpassword: kept out of later messages
  std::optional<std::string> conninfo_options;  // the conninfo's own `options`, when it has one
  std::optional<std::string> host_list, hostaddr_list, port_list;
  if (is_connection_string(conninfo)) {
    // Parse first: a malformed string gets a message of its own instead of a misleading
    // "could not connect", and we learn the password to keep out of later messages.
    char* err = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &err);
    if (parsed == nullptr) {
      const std::string libpq_message = err != nullptr ? one_line(err) : "out of memory";
      if (err != nullptr) PQfreemem(err);
      // The string itself is not repeated: a typo in a key ("passwrd=...") would defeat the
      // redaction of its value.
      throw connection_error("invalid connection string: " +
                             scrub_conninfo_message(libpq_message, conninfo));
    }
    for (const PQconninfoOption* o = parsed; o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      if (is_secret_keyword(o->keyword)) secret_hints.emplace_back(o->val);
      if (std::strcmp(o->keyword, "options") == 0) conninfo_options = o->val;
      if (std::strcmp(o->keyword, "host") == 0) host_list = o->val;
      if (std::strcmp(o->keyword, "hostaddr") == 0) hostaddr_list = o->val;
      if (std::strcmp(o->keyword, "port") == 0) port_list = o->val;
    }
    PQconninfoFree(parsed);
  }
  // statement_timeout goes into the startup packet rather than a SET after connecting: a
  // startup option is the session's default, so RESET ALL and DISCARD ALL (a pool's
  // reset_on_return) return to it; a SET they would undo. It is appended to the options the
  // connection would otherwise get, which it would replace: a later `options` keyword wins whole.
  std::string startup_options;
  if (options.statement_timeout) {
    startup_options = conninfo_options ? *conninfo_options : default_startup_options();
    if (!startup_options.empty()) startup_options += ' ';
    startup_options += "-c statement_timeout=" + std::to_string(options.statement_timeout->count());
  }

  auto timeout = std::max(options.connect_timeout, milliseconds(std::chrono::seconds(1)));
  const std::string timeout_s =
      std::to_string(std::chrono::ceil<std::chrono::seconds>(timeout).count());

  // One connect, to the hosts of the conninfo or (`only`) to one of them, within `timeout`.
  auto connect_within_timeout = [&](const host_target* only) -> connection {
    // Keywords are applied in order, the last one winning. The defaults come before the
    // caller's string, so it may override them; the explicit options come after it.
    std::vector<const char*> keys;
    std::vector<const char*> values;
    auto add = [&](const char* k, const char* v) {
      keys.push_back(k);
      values.push_back(v);
    };
    add("fallback_application_name", "sluice");
    add("client_encoding", "UTF8");
    if (options.keepalives) {
      // A dead peer is noticed after about a minute instead of the kernel's two hours.
      add("keepalives", "1");
      add("keepalives_idle", "30");
      add("keepalives_interval", "10");
      add("keepalives_count", "3");
    }
    if (!conninfo.empty()) add("dbname", conninfo.c_str());
    if (only != nullptr) {
      if (!only->host.empty()) add("host", only->host.c_str());
      if (!only->hostaddr.empty()) add("hostaddr", only->hostaddr.c_str());
      if (!only->port.empty()) add("port", only->port.c_str());
    }
    if (!options.keepalives) add("keepalives", "0");
    if (!startup_options.empty()) add("options", startup_options.c_str());
    // Not what enforces the deadline (PQconnectPoll ignores it; the loop below does), but it
    // keeps PQconninfo() truthful and bounds a later PQreset().
    add("connect_timeout", timeout_s.c_str());
    if (!options.application_name.empty()) {
      add("application_name", options.application_name.c_str());
    }
    add(nullptr, nullptr);

    // Non-blocking connect, for two reasons: our own deadline bounds the whole connect with
    // millisecond precision, and verbose error messages can be switched on before the server
    // answers, so that a refusal carries its SQLSTATE ("FATAL:  53300: sorry, too many clients
    // already") in every server language. PQconnectdbParams offers neither.
    const auto deadline = deadline_after(timeout);
    conn_ptr c(PQconnectStartParams(keys.data(), values.data(), /*expand_dbname=*/1));
    if (!c) throw connection_error("could not connect: out of memory");
    auto fail = [&](const std::string& why) -> connection_error {
      std::string raw = PQerrorMessage(c.get());
      std::string message = "could not connect to " + describe_conn(c.get()) + ": " + why;
      // A string libpq does not take for a connection string is a database name, and is
      // echoed (in dbname=, in 'database "..." does not exist'). One that looks like a mistyped
      // URI ("postgress://bob:pw@db") may hold a password: hide it.
      if (!is_connection_string(conninfo) && conninfo.find_first_of(":@") != std::string::npos) {
        replace_all(message, conninfo, "***");
      }
      return connection_error(std::move(message), sqlstate_from_message(raw));
    };
    if (PQstatus(c.get()) == CONNECTION_BAD) throw fail(connect_failure(c.get(), secret_hints));
    PQsetErrorVerbosity(c.get(), PQERRORS_VERBOSE);
    PQsetNoticeReceiver(c.get(), forward_notice, nullptr);

    // PQconnectPoll's protocol: start as if it had asked to write.
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    while (state != PGRES_POLLING_OK) {
      if (state == PGRES_POLLING_FAILED) throw fail(connect_failure(c.get(), secret_hints));
      const int fd = PQsocket(c.get());
      if (fd < 0) throw fail(connect_failure(c.get(), secret_hints));
      std::string poll_error;
      const wait_result w =
          wait_socket(fd, state == PGRES_POLLING_READING ? POLLIN : POLLOUT, deadline, &poll_error);
      if (w == wait_result::timed_out) {
        throw fail("timeout expired after " + std::to_string(timeout.count()) + " ms");
      }
      if (w == wait_result::failed) throw fail(poll_error);
      state = PQconnectPoll(c.get());
    }
    PQsetErrorVerbosity(c.get(), PQERRORS_DEFAULT);
    return connection(c.release());
  };

  // Several hosts (a primary and its standbys, target_session_attrs=read-write): each gets
  // `timeout` of its own, as libpq's connect_timeout promises. libpq moves on to the next host
  // by itself when one refuses or is not what target_session_attrs asks for, but not when one
  // never answers (a machine that is off or cut off, a frozen server): PQconnectPoll leaves
  // that to its caller, and one deadline for the whole string would be spent on that host at
  // every attempt, so the others would never be tried. Hence one attempt per host, in order.
  const std::vector<host_target> targets = host_targets(host_list, hostaddr_list, port_list);
  if (targets.empty()) return connect_within_timeout(nullptr);
  std::string earlier;   // the failures of the hosts before, for the message of the last one
  std::string sqlstate;  // the first refusal's code (53300 from a full primary, say)
  for (std::size_t i = 0;; ++i) {
    try {
      return connect_within_timeout(&targets[i]);
    } catch (const connection_error& e) {
      if (sqlstate.empty()) sqlstate = e.sqlstate();
      if (i + 1 == targets.size()) throw connection_error(earlier + e.what(), sqlstate);
      earlier += std::string(e.what()) + "; ";
    }
  }
}

// ---- connection: state ----

bool connection::is_ok() const noexcept {
  return conn_ != nullptr && !poisoned_ && PQstatus(conn_) == CONNECTION_OK;
}

transaction_status connection::tx_status() const noexcept {
  if (conn_ == nullptr) return transaction_status::unknown;
  switch (PQtransactionStatus(conn_)) {
    case PQTRANS_IDLE:
      return transaction_status::idle;
    case PQTRANS_ACTIVE:
      return transaction_status::active;
    case PQTRANS_INTRANS:
      return transaction_status::in_transaction;
    case PQTRANS_INERROR:
      return transaction_status::in_error;
    case PQTRANS_UNKNOWN:
      break;
  }
  return transaction_status::unknown;
}

int connection::backend_pid() const noexcept {
  return conn_ == nullptr ? 0 : PQbackendPID(conn_);
}

int connection::server_version() const noexcept {
  return conn_ == nullptr ? 0 : PQserverVersion(conn_);
}

int connection::socket() const noexcept {
  return conn_ == nullptr ? -1 : PQsocket(conn_);
}

const proxy_probe& connection::probe_proxy() {
  if (proxy_) return *proxy_;
  require_connection();
  // The server's view of the endpoint it serves this session on. NULL: a Unix socket.
  const result r = exec("SELECT inet_server_port()");
  const std::optional<int> server_port = r.one<std::optional<int>>();

  const std::string host = or_default(PQhost(conn_), "");
  const bool client_on_socket = host.empty() || host.front() == '/' || host.front() == '@';
  // libpq reports its compiled-in default when no port was given; 5432 covers an empty answer.
  const std::string port = or_default(PQport(conn_), "5432");
  proxy_probe probe;
  probe.client_side = client_on_socket ? "unix socket " + (host.empty() ? "(default)" : host)
                                       : host + " port " + port;
  probe.server_side = server_port ? "port " + std::to_string(*server_port) : "a unix socket";
  if (client_on_socket) {
    probe.through_proxy = server_port.has_value();
  } else {
    probe.through_proxy = !server_port.has_value() || std::to_string(*server_port) != port;
  }
  proxy_ = std::move(probe);
  return *proxy_;
}

bool connection::ping() noexcept {
  return ping(steady_clock::time_point::max());
}

bool connection::ping(steady_clock::time_point deadline) noexcept {
  if (conn_ == nullptr || poisoned()) return false;
  // An empty query is answered even inside a failed transaction, and costs the server
  // nothing but a round trip.
  bool ok = false;
  try {
    const result res = exec_until("", deadline);
    ok = PQresultStatus(res.native()) == PGRES_EMPTY_QUERY && PQstatus(conn_) == CONNECTION_OK;
  } catch (...) {
    ok = false;  // no answer in time, a lost connection, or no memory for the result
  }
  if (!ok) poisoned_ = true;
  return ok;
}

void connection::require_connection() const {
  if (conn_ == nullptr) throw connection_error("not connected (empty connection object)");
}

// ---- connection: statements ----

result connection::check(pg_result* res, std::string_view sql, bool flush_pending) {
  result owned(res, std::string(sql));
  if (res == nullptr) {
    // libpq returns no result when it could not even send the statement.
    const std::string message = one_line(PQerrorMessage(conn_));
    if (PQstatus(conn_) != CONNECTION_OK || PQtransactionStatus(conn_) == PQTRANS_ACTIVE) {
      poisoned_ = true;
      throw connection_error("connection " + description_ + ": " + message);
    }
    // A client-side refusal, e.g. too many parameters: nothing reached the server.
    throw sql_error({}, message, {}, {}, std::string(sql));
  }
  switch (PQresultStatus(res)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
      if (flush_pending) flush_deallocations();
      return owned;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
      // The connection now waits for COPY data that will never come.
      poisoned_ = true;
      throw error("COPY is not supported by connection::exec (the connection is now unusable) " +
                  std::string("[query: ") + std::string(sql) + "]");
    default:
      throw_error(res, sql);
  }
}

void connection::throw_error(pg_result* res, std::string_view sql) {
  const std::string sqlstate = field(res, PG_DIAG_SQLSTATE);
  std::string message = field(res, PG_DIAG_MESSAGE_PRIMARY);
  if (message.empty()) message = one_line(PQresultErrorMessage(res));
  if (message.empty()) message = one_line(PQerrorMessage(conn_));
  const bool broken = PQstatus(conn_) != CONNECTION_OK;

  if (sqlstate.empty() || PQresultStatus(res) == PGRES_BAD_RESPONSE) {
    // An error libpq made up itself: the server closed the socket, or the protocol went out
    // of step. Either way the session is gone or cannot be trusted.
    poisoned_ = true;
    throw connection_error("connection " + description_ + " lost: " + message, sqlstate);
  }
  if (broken || sqlstate_poisons_connection(sqlstate)) poisoned_ = true;
  if (broken && !sqlstate_poisons_connection(sqlstate)) {
    // Keep the promise that poisons_connection() tells the truth about this connection.
    throw connection_error("connection " + description_ + " lost: " + message, sqlstate);
  }
  throw sql_error(sqlstate, std::move(message), field(res, PG_DIAG_MESSAGE_DETAIL),
                  field(res, PG_DIAG_MESSAGE_HINT), std::string(sql));
}

result connection::exec(std::string_view sql) {
  require_connection();
  const std::string text(sql);
  return check(PQexec(conn_, text.c_str()), sql);
}

result connection::exec(std::string_view sql, const param_list& params) {
  require_connection();
  const std::string text(sql);
  return check(PQexecParams(conn_, text.c_str(), params.size(), params.types(), params.values(),
                            params.lengths(), params.formats(), /*resultFormat=*/0),
               sql);
}

result connection::exec_until(std::string_view sql, steady_clock::time_point deadline) {
  require_connection();
  const std::string text(sql);
  // No flush of pending DEALLOCATEs: they use blocking calls, and would not keep the deadline.
  return check(send_and_await(text, deadline), sql, /*flush_pending=*/false);
}

pg_result* connection::send_and_await(const std::string& sql, steady_clock::time_point deadline) {
  auto lost = [&](const std::string& why) {
    poisoned_ = true;
    return connection_error("connection " + description_ + " lost: " + why);
  };
  // Non-blocking mode, so that neither sending nor closing the connection later can block on
  // a full socket buffer; results are only read once PQisBusy() says they are complete.
  if (PQsetnonblocking(conn_, 1) != 0 || PQsendQuery(conn_, sql.c_str()) == 0) {
    throw lost(one_line(PQerrorMessage(conn_)));
  }
  const int fd = PQsocket(conn_);
  auto await = [&](short events) {
    std::string poll_error;
    switch (wait_socket(fd, events, deadline, &poll_error)) {
      case wait_result::ready:
        break;
      case wait_result::timed_out:
        // The statement is still on its way or running: the session's state is unknown.
        // The connection stays non-blocking, so that closing it cannot block.
        poisoned_ = true;
        throw connection_error("connection " + description_ +
                               ": no answer from the server in time" +
                               (sql.empty() ? std::string(" (ping)") : " [query: " + sql + "]"));
      case wait_result::failed:
        throw lost(poll_error);
    }
    if (PQconsumeInput(conn_) == 0) throw lost(one_line(PQerrorMessage(conn_)));
  };
  for (;;) {
    const int flushed = PQflush(conn_);
    if (flushed == 0) break;
    if (flushed < 0) throw lost(one_line(PQerrorMessage(conn_)));
    // Reading too while the query is sent keeps both sides' buffers moving (libpq does the same).
    await(POLLOUT | POLLIN);
  }
  // As PQexec: the last result wins, except that an error is kept; stop at COPY, which check()
  // refuses.
  std::unique_ptr<PGresult, decltype(&PQclear)> kept(nullptr, &PQclear);
  for (;;) {
    while (PQisBusy(conn_) != 0)
      await(POLLIN);
    PGresult* next = PQgetResult(conn_);
    if (next == nullptr) break;
    const ExecStatusType status = PQresultStatus(next);
    if (kept && PQresultStatus(kept.get()) == PGRES_FATAL_ERROR) {
      PQclear(next);
    } else {
      kept.reset(next);
    }
    if (status == PGRES_COPY_IN || status == PGRES_COPY_OUT || status == PGRES_COPY_BOTH) break;
  }
  // The rest of this class uses blocking calls. Switching back flushes nothing (all was sent).
  if (PQsetnonblocking(conn_, 0) != 0) poisoned_ = true;
  return kept.release();
}

void connection::prepare(const std::string& name, std::string_view sql) {
  require_connection();
  const std::string text(sql);
  check(PQprepare(conn_, name.c_str(), text.c_str(), 0, nullptr), sql);
}

result connection::exec_prepared(const std::string& name, const param_list& params) {
  return exec_prepared_as(name, params, "EXECUTE " + name);
}

result connection::exec_prepared_as(const std::string& name, const param_list& params,
                                    std::string_view query) {
  require_connection();
  return check(PQexecPrepared(conn_, name.c_str(), params.size(), params.values(), params.lengths(),
                              params.formats(), /*resultFormat=*/0),
               query);
}

// ---- connection: statement cache ----

namespace {

// What an operator has to change when a transaction-pooling proxy moves a session's statements
// between server connections. Names both the daemon's setting and the library's call.
constexpr std::string_view statement_cache_fix =
    "set statement_cache = 0 for this pool ([pools.NAME] or [scheduler.lane] in the "
    "configuration; set_statement_cache_capacity(0) on a pg::connection in the library), or "
    "connect to PostgreSQL directly";

}  // namespace

result connection::exec_cached(std::string_view sql, const param_list& params) {
  if (cache_capacity_ == 0) return exec(sql, params);
  require_connection();
  const auto found = cache_index_.find(sql);
  if (found == cache_index_.end()) return prepare_cached_and_exec(sql, params);

  const auto node = found->second;
  cache_lru_.splice(cache_lru_.begin(), cache_lru_, node);  // most recent first; node stays put
  const std::string name = node->name;
  try {
    return exec_prepared_as(name, params, node->sql);
  } catch (const sql_error& e) {
    if (e.sqlstate() != "26000") throw;
  }
  // invalid_sql_statement_name: the server forgot it (DEALLOCATE ALL, DISCARD ALL, a pooler
  // that moved us to another server connection). Forget it too. (Copy the text first: `sql`
  // might view the node's own string.)
  const std::string text(sql);
  cache_index_.erase(found);
  cache_lru_.erase(node);
  const bool proxied = proxy_ && proxy_->through_proxy;
  // Inside a transaction the error has already aborted it; preparing again would only fail
  // with 25P02. The caller gets the 26000 and the next use prepares afresh.
  if (PQtransactionStatus(conn_) != PQTRANS_IDLE) {
    std::string message = "prepared statement \"" + name +
                          "\" vanished from the server inside a transaction; it will be prepared "
                          "again on next use. ";
    if (proxied) {
      message += "This connection goes through a proxy (" + proxy_->client_side +
                 ", the server reports " + proxy_->server_side +
                 "): a transaction-pooling proxy such as PgBouncer hands each transaction to "
                 "another server connection, where our prepared statements do not exist; ";
    } else {
      message +=
          "Unless DEALLOCATE ALL or DISCARD ALL ran on this connection, it goes through "
          "a transaction-pooling proxy such as PgBouncer, which hands each transaction "
          "to another server connection; then ";
    }
    message += statement_cache_fix;
    throw sql_error("26000", std::move(message), {}, {}, text);
  }
  // Once, with a new name. Should that one vanish too, prepare_cached_and_exec() says why.
  return prepare_cached_and_exec(text, params);
}

void connection::throw_moved_server_connection(const sql_error& e, const std::string& name,
                                               const std::string& sql) {
  std::string message = e.message() + ", although this connection ";
  message +=
      e.sqlstate() == "42P05" ? "never prepared it under that name before" : "had just prepared it";
  message +=
      ": this connection goes through a transaction-pooling proxy (PgBouncer, say) that "
      "moves it from one server connection to another, so prepared statements cannot be "
      "cached";
  if (proxy_ && proxy_->through_proxy) {
    message += " (connected to " + proxy_->client_side + ", the server reports " +
               proxy_->server_side + ")";
  }
  message += "; ";
  message += statement_cache_fix;
  // Our vanished statement may live on on another server connection: deallocate it when we
  // next can. (A name that already existed is someone else's, and stays theirs.)
  if (e.sqlstate() == "26000") pending_deallocations_.push_back(name);
  throw sql_error(e.sqlstate(), std::move(message), e.detail(), e.hint(), sql);
}

result connection::prepare_cached_and_exec(std::string_view sql, const param_list& params) {
  // Names are never reused on this connection, so a statement we forgot but the server still
  // has (forget_statement_cache() without DISCARD) cannot collide with a new one; and the
  // connection's random prefix keeps them apart from every other client's on a server
  // connection a proxy shares between clients.
  std::string name = statement_prefix_ + std::to_string(next_statement_id_++);
  const std::string text(sql);
  // The parameter types of this first execution become the statement's types.
  try {
    check(PQprepare(conn_, name.c_str(), text.c_str(), params.size(), params.types()), sql);
  } catch (const sql_error& e) {
    // A fresh name that already exists: only another session's statement could hold it.
    if (e.sqlstate() == "42P05") throw_moved_server_connection(e, name, text);
    throw;
  }
  cache_lru_.push_front(cached_statement{text, name});
  cache_index_.emplace(std::string_view(cache_lru_.front().sql), cache_lru_.begin());
  while (cache_index_.size() > cache_capacity_)
    evict_least_recent();
  try {
    return exec_prepared_as(name, params, cache_lru_.front().sql);
  } catch (const sql_error& e) {
    if (e.sqlstate() != "26000") throw;
    // Gone between PREPARE and EXECUTE: the two went to different server connections.
    cache_index_.erase(std::string_view(cache_lru_.front().sql));
    cache_lru_.pop_front();
    throw_moved_server_connection(e, name, text);
  }
}

void connection::evict_least_recent() {
  cached_statement& victim = cache_lru_.back();
  cache_index_.erase(std::string_view(victim.sql));
  pending_deallocations_.push_back(std::move(victim.name));
  cache_lru_.pop_back();
  flush_deallocations();
}

void connection::flush_deallocations() noexcept {
  if (pending_deallocations_.empty() || conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK ||
      PQtransactionStatus(conn_) != PQTRANS_IDLE) {
    return;
  }
  try {
    std::vector<std::string> names = std::move(pending_deallocations_);
    pending_deallocations_.clear();
    for (const std::string& name : names) {
      // Our own generated name ("sluice_s<hex>_<N>"), so it is a plain identifier.
      const std::string sql = "DEALLOCATE " + name;
      PGresult* res = PQexec(conn_, sql.c_str());
      // An error here is 26000 (already gone): the goal is reached either way. Outside a
      // transaction it leaves nothing behind, so only a broken connection matters.
      PQclear(res);
      if (PQstatus(conn_) != CONNECTION_OK) {
        poisoned_ = true;
        return;
      }
    }
  } catch (...) {
    // Only allocation can throw here; the statements then live until the connection closes.
  }
}

void connection::set_statement_cache_capacity(std::size_t capacity) {
  cache_capacity_ = capacity;
  while (cache_index_.size() > cache_capacity_)
    evict_least_recent();
}

void connection::forget_statement_cache() noexcept {
  cache_index_.clear();
  cache_lru_.clear();
  pending_deallocations_.clear();
}

// ---- connection: settings, cancel ----

void connection::set_statement_timeout(milliseconds timeout) {
  if (timeout < milliseconds::zero()) {
    throw std::invalid_argument("statement timeout must not be negative");
  }
  // An integer we formatted, not caller text: nothing to bind. (SET takes no parameters.)
  exec("SET statement_timeout = " + std::to_string(timeout.count()));
}

cancel_handle connection::make_cancel_handle() const {
  if (conn_ == nullptr) return {};
  return cancel_handle(PQgetCancel(conn_));
}

// ---- connection: LISTEN / NOTIFY ----

namespace {

std::string quoted_identifier(PGconn* conn, std::string_view name) {
  char* q = PQescapeIdentifier(conn, name.data(), name.size());
  if (q == nullptr) {
    throw error("cannot quote channel name '" + std::string(name) +
                "': " + one_line(PQerrorMessage(conn)));
  }
  std::string out(q);
  PQfreemem(q);
  return out;
}

}  // namespace

void connection::listen(std::string_view channel) {
  require_connection();
  exec("LISTEN " + quoted_identifier(conn_, channel));
}

void connection::unlisten(std::string_view channel) {
  require_connection();
  exec("UNLISTEN " + quoted_identifier(conn_, channel));
}

void connection::notify(std::string_view channel, std::string_view payload) {
  exec("SELECT pg_notify($1, $2)", param_list::of(channel, payload));
}

namespace {

std::optional<notification> next_notification(PGconn* conn) {
  PGnotify* n = PQnotifies(conn);
  if (n == nullptr) return std::nullopt;
  notification out{n->relname, n->extra == nullptr ? std::string() : std::string(n->extra),
                   n->be_pid};
  PQfreemem(n);
  return out;
}

}  // namespace

std::optional<notification> connection::wait_notification(milliseconds timeout) {
  require_connection();
  // Already read along with an earlier result?
  if (auto n = next_notification(conn_)) return n;
  const auto deadline = deadline_after(timeout);
  for (;;) {
    if (PQconsumeInput(conn_) == 0 || PQstatus(conn_) != CONNECTION_OK) {
      poisoned_ = true;
      throw connection_error(
          "connection " + description_ +
          " lost while waiting for notifications: " + one_line(PQerrorMessage(conn_)));
    }
    if (auto n = next_notification(conn_)) return n;
    std::string poll_error;
    const wait_result w = wait_socket(PQsocket(conn_), POLLIN, deadline, &poll_error);
    if (w == wait_result::timed_out) return std::nullopt;
    if (w == wait_result::failed) {
      poisoned_ = true;
      throw connection_error("connection " + description_ + ": " + poll_error);
    }
  }
}

std::vector<notification> connection::drain_notifications() {
  require_connection();
  const bool consumed = PQconsumeInput(conn_) != 0 && PQstatus(conn_) == CONNECTION_OK;
  std::vector<notification> out;
  while (auto n = next_notification(conn_))
    out.push_back(std::move(*n));
  if (!consumed) {
    poisoned_ = true;
    // What arrived before the loss is still worth handing over; the next call reports it.
    if (out.empty()) {
      throw connection_error("connection " + description_ +
                             " lost: " + one_line(PQerrorMessage(conn_)));
    }
  }
  return out;
}

// ---- transaction ----

namespace {

const char* begin_statement(transaction::isolation level) {
  switch (level) {
    case transaction::isolation::read_committed:
      break;
    case transaction::isolation::repeatable_read:
      return "BEGIN ISOLATION LEVEL REPEATABLE READ";
    case transaction::isolation::serializable:
      return "BEGIN ISOLATION LEVEL SERIALIZABLE";
  }
  // Spelled out rather than a bare BEGIN: default_transaction_isolation may say otherwise.
  return "BEGIN ISOLATION LEVEL READ COMMITTED";
}

}  // namespace

transaction::transaction(connection& conn, isolation level) : conn_(conn) {
  if (conn.valid() && conn.tx_status() != transaction_status::idle) {
    throw error("cannot begin a transaction on " + conn.describe() + ": the connection is " +
                std::string(to_string(conn.tx_status())));
  }
  conn_.exec(begin_statement(level));
}

transaction::~transaction() {
  if (!open_) return;
  open_ = false;
  if (!conn_.valid() || PQstatus(conn_.native()) != CONNECTION_OK) {
    // The server rolls back by itself when the session ends.
    conn_.mark_poisoned();
    return;
  }
  try {
    conn_.exec("ROLLBACK");
  } catch (...) {
    // The connection's transaction state is unknown now: it must not be reused.
    conn_.mark_poisoned();
  }
}

void transaction::commit() {
  if (!open_) throw error("commit() on a transaction that was already committed or rolled back");
  open_ = false;
  if (!conn_.valid() || PQstatus(conn_.native()) != CONNECTION_OK) {
    // The session, and the transaction with it, is gone: nothing was committed.
    conn_.mark_poisoned();
    throw connection_error("cannot commit: connection " + conn_.describe() +
                           " was lost; the transaction was rolled back");
  }
  result res;
  try {
    res = conn_.exec("COMMIT");
  } catch (const connection_error& e) {
    // The COMMIT may have been applied with only the answer lost.
    throw connection_error(std::string(e.what()) +
                               " (during COMMIT: it may or may not have "
                               "been applied)",
                           "08007");
  }
  if (std::string_view(PQcmdStatus(res.native())) == "ROLLBACK") {
    throw sql_error("25P02",
                    "COMMIT rolled the transaction back because an earlier statement in it "
                    "failed",
                    {}, {}, "COMMIT");
  }
}

void transaction::rollback() {
  if (!open_) return;
  open_ = false;
  try {
    conn_.exec("ROLLBACK");
  } catch (...) {
    conn_.mark_poisoned();
    throw;
  }
}

}  // namespace sluice::pg
