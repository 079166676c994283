#pragma once

// A bounded libpq connection pool: `size` connections kept, up to `max_overflow` more under load,
// borrowers served first come first served within `timeout`.
//
// Thread-safety: pool is fully thread-safe. A lease belongs to one thread at a time.
// Throws: acquire() throws pool_timeout or pool_closed; nothing else escapes from the pool.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <source_location>
#include <stdexcept>
#include <string>

#include "sluice/error.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/settings.hpp"

namespace sluice::pool {

namespace detail {
class core;
struct slot;
}  // namespace detail

// acquire() waited `timeout` without getting a connection. what() names the pool and its state:
// "pool 'platform': no connection within 30.0 s (size 5, overflow 10, checked out 15, waiting 3;
// last connect error: ...)".
class pool_timeout : public sluice::error {
 public:
  using sluice::error::error;
};

// The pool is closed or shutting down.
class pool_closed : public sluice::error {
 public:
  using sluice::error::error;
};

// How the pool opens, checks and resets connections. The default talks to PostgreSQL through
// libpq; tests and benchmarks substitute a fake. `id` is the pool's serial number for the
// connection. Implementations must be thread-safe; they are called outside the pool's locks.
//
// The pool calls ping_within() and reset_within(), never ping() or reset() directly; their
// defaults forward to ping() and reset(), so a connector that overrides only those still
// works, without the time limit.
class connector {
 public:
  connector() = default;
  connector(const connector&) = delete;
  connector& operator=(const connector&) = delete;
  connector(connector&&) = delete;
  connector& operator=(connector&&) = delete;
  virtual ~connector() = default;

  // Opens a connection; throws pg::connection_error (with SQLSTATE 53300/57P03 on refusal).
  virtual pg::connection connect(const settings& s, std::uint64_t id) = 0;
  // A round trip to the server; false when the connection is dead.
  virtual bool ping(pg::connection& c, std::uint64_t id) = 0;
  // Brings a returned connection back to a clean state; false when it must be discarded (it is
  // broken, poisoned, or its session could not be reset). Called for every returned connection,
  // so the common case (idle, healthy) must not need a round trip.
  virtual bool reset(pg::connection& c, std::uint64_t id, reset_mode mode) = 0;

  // ping(), answered within `budget` (counted from the call): a connection whose server has not
  // answered by then is dead (false), and must be left so that closing it does not block. The
  // pool passes what is left of the borrower's acquire timeout.
  virtual bool ping_within(pg::connection& c, std::uint64_t id, std::chrono::milliseconds budget) {
    (void)budget;
    return ping(c, id);
  }
  // reset(), with any round trip it needs answered within `budget` (counted from the call);
  // false when it is not. The pool passes its acquire timeout: no borrower waits longer.
  virtual bool reset_within(pg::connection& c, std::uint64_t id, reset_mode mode,
                            std::chrono::milliseconds budget) {
    (void)budget;
    return reset(c, id, mode);
  }
};

// The libpq-backed connector.
std::shared_ptr<connector> make_libpq_connector();

// A snapshot of one pool's state. Field names follow SQLAlchemy's QueuePool status (size,
// checked_in, checked_out, overflow) so the seed's get_connection_pool_status() maps directly.
struct pool_stats {
  std::string name;
  int size = 0;          // configured size
  int max_overflow = 0;  // configured overflow
  int max = 0;           // size + max_overflow
  int open = 0;          // connections currently open (checked in + checked out + being checked)
  int checked_in = 0;    // idle, ready to lend
  int checked_out = 0;   // lent to borrowers
  int overflow = 0;      // open connections beyond size
  int waiting = 0;       // borrowers waiting in acquire()
  int peak_checked_out = 0;
  bool saturated = false;  // the server refused new connections (53300/57P03); backing off
  bool closed = false;
  std::uint64_t connects = 0;          // connections opened
  std::uint64_t connect_failures = 0;  // connect attempts that failed (refusals included)
  std::uint64_t server_refusals = 0;   // connect attempts refused with 53300/57P03
  std::uint64_t checkouts = 0;
  std::uint64_t timeouts = 0;       // acquire() calls that timed out
  std::uint64_t invalidations = 0;  // connections discarded as broken or invalidated
  std::uint64_t recycles = 0;       // connections closed for age
  std::uint64_t idle_closes = 0;    // connections closed for idleness or as overflow
  std::uint64_t pings_failed = 0;   // pre-ping found a dead connection (the borrower never saw it)
  std::uint64_t leaks = 0;          // leases reported held longer than leak_threshold
  double wait_p50_ms = 0;           // acquire() wait percentiles over the pool's lifetime
  double wait_p99_ms = 0;
  double wait_max_ms = 0;
  std::uint64_t wait_bucket_counts[16] =
      {};  // histogram: bucket i counts waits <= wait_bucket_bounds_ms[i]
  double wait_sum_ms = 0;
  std::string last_connect_error;  // redacted; empty when the last connect succeeded
};

// Upper bounds (ms) of the acquire-wait histogram buckets; the last is +Inf.
extern const double wait_bucket_bounds_ms[16];

// A borrowed connection. Returns it to the pool when destroyed (after the reset the pool's
// reset_on_return asks for). Move-only. May outlive its pool: the connection is then closed.
class lease {
 public:
  lease() noexcept = default;
  lease(lease&& other) noexcept;
  lease& operator=(lease&& other) noexcept;
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  ~lease() { release(); }

  [[nodiscard]] pg::connection& conn() const noexcept;
  pg::connection* operator->() const noexcept { return &conn(); }
  pg::connection& operator*() const noexcept { return conn(); }
  explicit operator bool() const noexcept { return slot_ != nullptr; }

  // The connection will be closed instead of returned (it is broken, or its session state is
  // not worth resetting).
  void invalidate() noexcept { invalid_ = true; }
  // Returns the connection now; the lease becomes empty.
  void release() noexcept;
  // The pool's serial number of the connection (stable for the connection's life).
  [[nodiscard]] std::uint64_t connection_id() const noexcept;

 private:
  friend class detail::core;
  lease(detail::core* core, detail::slot* slot) noexcept : core_(core), slot_(slot) {}
  detail::core* core_ = nullptr;
  detail::slot* slot_ = nullptr;
  bool invalid_ = false;
};

class pool {
 public:
  // Validates the settings (settings_error) and starts the housekeeper and connector threads.
  // Opens no connection until one is needed, unless min_idle > 0.
  explicit pool(settings s, std::shared_ptr<connector> conn = make_libpq_connector());
  // With an injected clock for lifetimes, idle times and leak thresholds (tests); acquire()
  // timeouts always use the real steady clock.
  pool(settings s, std::shared_ptr<connector> conn,
       std::function<std::chrono::steady_clock::time_point()> clock);
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  pool(pool&&) = delete;
  pool& operator=(pool&&) = delete;
  // Closes the pool (see close()); leases still out stay valid and close their connections.
  ~pool();

  // Borrows a connection, waiting up to settings().timeout. The caller's source location is kept
  // for leak reports. Throws pool_timeout or pool_closed.
  [[nodiscard]] lease acquire(std::source_location where = std::source_location::current());
  // Same with an explicit wait limit.
  [[nodiscard]] lease acquire_for(std::chrono::milliseconds timeout,
                                  std::source_location where = std::source_location::current());

  [[nodiscard]] pool_stats stats() const;
  [[nodiscard]] const settings& config() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept;

  // Stops lending (waiting and later acquire() calls get pool_closed), waits up to `grace` for
  // leases to come back, then closes every connection. Idempotent. Returns the number of leases
  // still out when the grace period ended.
  int close(std::chrono::milliseconds grace = 5s);

  // Runs one housekeeping pass (idle timeout, recycling, min_idle, leak reports) on the calling
  // thread, in addition to the housekeeper thread's periodic passes.
  void housekeep_now();

 private:
  detail::core* core_;  // shared with outstanding leases; see detail::core for its lifetime
};

}  // namespace sluice::pool
