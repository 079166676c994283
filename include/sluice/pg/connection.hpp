#pragma once

// A single libpq connection: RAII, move-only, bound parameters only.
// Thread-safety: a connection is used by one thread at a time; only cancel_handle may be used
// from another thread while a statement runs.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "sluice/pg/error.hpp"
#include "sluice/pg/params.hpp"
#include "sluice/pg/result.hpp"

struct pg_conn;    // libpq's PGconn
struct pg_cancel;  // libpq's PGcancel

namespace sluice::pg {

struct connect_options {
  // A conninfo string ("host=... port=...") or a URI ("postgresql://..."). Empty: libpq's
  // defaults and the standard PG* environment variables.
  std::string conninfo;
  // Upper bound on the connect to each host (libpq's connect_timeout has one-second
  // granularity; a value below one second is rounded up to one). A conninfo with several hosts
  // is tried host by host, each within this bound, so one that never answers is passed over.
  std::chrono::milliseconds connect_timeout{std::chrono::seconds(10)};
  // Shown in pg_stat_activity. Empty: keep whatever conninfo or PGAPPNAME says.
  std::string application_name;
  // Sent in the startup packet as `options=-c statement_timeout=<ms>`, appended to the options
  // the conninfo (or, when it has none, PGOPTIONS or the PGSERVICE entry) already gives. It is
  // then the session's default, which RESET ALL and DISCARD ALL return to instead of dropping
  // it. Must not be negative (std::invalid_argument). PgBouncer refuses an `options` startup
  // parameter it does not track (see docs/pool.md).
  std::optional<std::chrono::milliseconds> statement_timeout;
  // TCP keepalives so a dead peer is noticed (ignored on Unix sockets).
  bool keepalives = true;
};

enum class transaction_status { idle, active, in_transaction, in_error, unknown };

// What connection::probe_proxy() found out about the path to the server.
struct proxy_probe {
  // The endpoint the client connected to and the one the server says it serves differ, so
  // something sits in between (PgBouncer, pgpool, a port-forwarding proxy).
  bool through_proxy = false;
  std::string client_side;  // "127.0.0.1 port 6432", "unix socket /run/postgresql"
  std::string server_side;  // "port 5432", "a unix socket"
};

[[nodiscard]] std::string_view to_string(transaction_status s) noexcept;

struct notification {
  std::string channel;
  std::string payload;
  int backend_pid = 0;
};

// Cancels the statement running on a connection. Safe to use from another thread while the
// connection's owner waits for its result; must not outlive the connection's process.
class cancel_handle {
 public:
  cancel_handle() = default;
  explicit cancel_handle(pg_cancel* c) noexcept : cancel_(c) {}
  // Sends a cancel request. Returns false (and fills `error_message`) when it could not be sent;
  // true does not mean that a statement was running.
  bool cancel(std::string* error_message = nullptr) const;
  [[nodiscard]] bool valid() const noexcept { return cancel_ != nullptr; }

 private:
  struct deleter {
    void operator()(pg_cancel* c) const noexcept;
  };
  std::unique_ptr<pg_cancel, deleter> cancel_;
};

class connection {
 public:
  // An empty connection (no server behind it); valid() is false.
  connection() = default;
  // Opens a connection. Throws connection_error (with the server's SQLSTATE when it refused,
  // e.g. 53300) naming host, port, database and user, never the password; std::invalid_argument
  // for a negative statement_timeout.
  static connection open(const connect_options& options);

  connection(connection&& other) noexcept;
  connection& operator=(connection&& other) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  [[nodiscard]] bool valid() const noexcept { return conn_ != nullptr; }
  // True while libpq reports CONNECTION_OK and no poisoning error was seen.
  [[nodiscard]] bool is_ok() const noexcept;
  // Set once an error that poisons the connection was raised on it; never cleared.
  [[nodiscard]] bool poisoned() const noexcept { return poisoned_ || !is_ok(); }
  void mark_poisoned() noexcept { poisoned_ = true; }
  [[nodiscard]] transaction_status tx_status() const noexcept;
  [[nodiscard]] int backend_pid() const noexcept;
  [[nodiscard]] int server_version() const noexcept;  // e.g. 150018

  // Whether this connection reaches PostgreSQL through a proxy: compares the port (or Unix
  // socket) the client connected to with what the server reports (`inet_server_port()`, NULL
  // when the server side is a Unix socket). One round trip the first time (a statement, so
  // not inside a failed transaction), answered from memory afterwards. It cannot see a proxy
  // that listens on the same port as the server (on another host) or one reached over a Unix
  // socket that reaches the server over a Unix socket too; NAT or a container's port mapping
  // look like a proxy. Throws sql_error or connection_error.
  const proxy_probe& probe_proxy();
  bool through_proxy() { return probe_proxy().through_proxy; }
  // "host=127.0.0.1 port=5432 dbname=x user=y": for messages; never contains a password.
  [[nodiscard]] const std::string& describe() const noexcept { return description_; }

  // Round trip to the server with an empty statement. False (and the connection marked
  // poisoned) when the server does not answer properly.
  bool ping() noexcept;
  // The same, answered by `deadline` at the latest: a server that has not answered by then (a
  // frozen backend, a partitioned network) counts as dead, as in exec_until().
  bool ping(std::chrono::steady_clock::time_point deadline) noexcept;

  // Runs SQL without parameters (simple protocol; several statements allowed, the last
  // result is returned). Throws sql_error or connection_error.
  result exec(std::string_view sql);
  // Runs one statement with bound parameters (extended protocol, unnamed statement).
  result exec(std::string_view sql, const param_list& params);
  // Like exec(sql), but never blocks past `deadline`: the statement is sent and its result
  // awaited without blocking libpq calls, polling the socket for the time left. When the
  // deadline passes first, the connection is marked poisoned (the statement may still run and
  // the session's state is unknown) and connection_error is thrown; such a connection is left
  // in non-blocking mode, so closing it does not block either. Also throws sql_error.
  result exec_until(std::string_view sql, std::chrono::steady_clock::time_point deadline);
  template <class... Ts>
  result query(std::string_view sql, Ts&&... args) {
    return exec(sql, param_list::of(std::forward<Ts>(args)...));
  }

  // Named prepared statements.
  void prepare(const std::string& name, std::string_view sql);
  result exec_prepared(const std::string& name, const param_list& params);

  // Runs through the per-connection statement cache: the first use of a SQL text prepares it,
  // later uses execute the prepared statement. The cache holds at most
  // statement_cache_capacity() statements, evicting the least recently used (DEALLOCATE).
  // With capacity 0 (for PgBouncer transaction pooling) it is the same as exec(sql, params).
  // Statement names are "sluice_s<16 random hex digits>_<N>": the random part is drawn for
  // each connection, so a server connection shared by several clients (a transaction-pooling
  // proxy) can never run another client's statement under one of ours.
  // A statement that vanished server-side (26000, e.g. after DISCARD ALL) is prepared again.
  // (Outside a transaction, transparently; inside one the 26000 has already aborted it, so it
  // is thrown, and the next use prepares afresh.) When a statement vanishes right after it was
  // prepared, or a fresh name already exists (42P05), the server connection changes under us:
  // sql_error with that SQLSTATE, whose message names the fix (statement cache off). A
  // cached statement keeps the parameter types of its first execution. Evicted statements
  // are DEALLOCATEd once the connection is outside a transaction, so that a DEALLOCATE can
  // never abort the caller's transaction.
  result exec_cached(std::string_view sql, const param_list& params);
  template <class... Ts>
  result query_cached(std::string_view sql, Ts&&... args) {
    return exec_cached(sql, param_list::of(std::forward<Ts>(args)...));
  }
  void set_statement_cache_capacity(std::size_t capacity);
  [[nodiscard]] std::size_t statement_cache_capacity() const noexcept { return cache_capacity_; }
  [[nodiscard]] std::size_t statement_cache_size() const noexcept { return cache_index_.size(); }
  // Forgets the cache without talking to the server (after DISCARD ALL / DEALLOCATE ALL).
  void forget_statement_cache() noexcept;
  // "sluice_s<16 hex digits>_": what this connection's statement names start with. Drawn
  // from std::random_device for every connection object, so no two connections share it.
  [[nodiscard]] const std::string& statement_name_prefix() const noexcept {
    return statement_prefix_;
  }

  void set_statement_timeout(std::chrono::milliseconds timeout);  // 0 disables
  [[nodiscard]] cancel_handle make_cancel_handle() const;

  // LISTEN/NOTIFY. Channel names are quoted as identifiers.
  void listen(std::string_view channel);
  void unlisten(std::string_view channel);
  void notify(std::string_view channel, std::string_view payload);
  // Returns a pending notification at once, or waits on the socket up to `timeout` for one.
  // Throws connection_error when the connection is lost while waiting.
  std::optional<notification> wait_notification(std::chrono::milliseconds timeout);
  // Every notification already received, without waiting.
  std::vector<notification> drain_notifications();

  [[nodiscard]] int socket() const noexcept;
  // Closes the connection (the object is empty afterwards) and waits up to `server_grace` for
  // the server to close its end of the socket, which a backend does only after it has left
  // pg_stat_activity and given its max_connections slot back. A pool that opens a replacement
  // only after this never holds more server connections than it counts. Returns false when the
  // server did not confirm in time or there was no socket to watch.
  bool close_and_confirm(std::chrono::milliseconds server_grace) noexcept;
  [[nodiscard]] pg_conn* native() const noexcept { return conn_; }

 private:
  explicit connection(pg_conn* conn);
  [[noreturn]] void throw_error(pg_result* res, std::string_view sql);
  // Wraps a result, throwing for an error. `flush_pending` runs the deallocations waiting for
  // the connection to be idle (blocking calls: exec_until() passes false).
  result check(pg_result* res, std::string_view sql, bool flush_pending = true);
  // exec_until()'s send and receive; returns what PQexec would have returned.
  pg_result* send_and_await(const std::string& sql, std::chrono::steady_clock::time_point deadline);
  void close() noexcept;
  void require_connection() const;
  result exec_prepared_as(const std::string& name, const param_list& params,
                          std::string_view query);
  result prepare_cached_and_exec(std::string_view sql, const param_list& params);
  void evict_least_recent();
  // The error for a cached statement that the server connection lost (26000) or already had
  // (42P05) when that can only mean a proxy moved us to another server connection.
  [[noreturn]] void throw_moved_server_connection(const sql_error& e, const std::string& name,
                                                  const std::string& sql);
  // DEALLOCATE runs only outside a transaction: inside one, a statement that vanished
  // behind our back (DEALLOCATE ALL) would make it fail and abort the caller's transaction.
  // Names evicted meanwhile wait here until the connection is idle again.
  void flush_deallocations() noexcept;

  static std::string new_statement_prefix();

  pg_conn* conn_ = nullptr;
  bool poisoned_ = false;
  std::string description_;

  // Statement cache: LRU list of SQL texts, most recent first, and an index into it.
  struct cached_statement {
    std::string sql;
    std::string name;
  };
  std::optional<proxy_probe> proxy_;  // probe_proxy()'s answer, once asked

  std::size_t cache_capacity_ = 0;
  std::string statement_prefix_ = new_statement_prefix();
  std::uint64_t next_statement_id_ = 0;
  std::list<cached_statement> cache_lru_;
  std::unordered_map<std::string_view, std::list<cached_statement>::iterator> cache_index_;
  std::vector<std::string> pending_deallocations_;
};

// Rolls back on destruction unless committed. Not copyable or movable.
// The constructor throws pg::error when the connection is already inside a transaction (a
// nested BEGIN would only warn, and this guard would then end the outer transaction), and
// sql_error / connection_error when BEGIN fails. commit() throws sql_error 25P02 when the
// server turned the COMMIT into a ROLLBACK (an earlier statement failed), and
// connection_error with SQLSTATE 08007 (outcome_unknown) when the connection was lost while
// the COMMIT was in flight.
class transaction {
 public:
  enum class isolation { read_committed, repeatable_read, serializable };
  explicit transaction(connection& conn, isolation level = isolation::read_committed);
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;
  transaction(transaction&&) = delete;
  transaction& operator=(transaction&&) = delete;
  // Rolls back if still open; a failed rollback marks the connection poisoned, never throws.
  ~transaction();

  void commit();
  void rollback();
  [[nodiscard]] bool open() const noexcept { return open_; }
  [[nodiscard]] connection& conn() noexcept { return conn_; }

 private:
  connection& conn_;
  bool open_ = true;
};

}  // namespace sluice::pg
