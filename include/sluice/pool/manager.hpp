#pragma once

// Named pools created once and shared by everything in the process (the seed's "global engine
// instances"), all under one connection budget.
//
// Thread-safety: every member is thread-safe. Pools are never removed before the manager is
// destroyed, so references returned by add()/get() stay valid until then.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/error.hpp"
#include "sluice/pool/pool.hpp"

namespace sluice::pool {

// The pools would need more connections than allowed. what() gives the numbers and what to change.
class budget_error : public sluice::error {
 public:
  using sluice::error::error;
};

struct manager_settings {
  // Hard limit on this process's server connections; nullopt: only the server's capacity limits.
  std::optional<int> connection_budget;
  // Connections held outside the pools (e.g. the scheduler's LISTEN connection), counted in the
  // budget.
  int dedicated_connections = 0;
};

// What check_budget() found.
struct budget_report {
  int pools = 0;      // sum of size + max_overflow over the pools
  int dedicated = 0;  // connections outside the pools
  int needed = 0;     // pools + dedicated: the most this process will ever hold
  std::optional<int> explicit_budget;
  int server_max_connections = 0;
  int server_reserved = 0;  // superuser_reserved_connections (+ reserved_connections on 16+)
  int server_capacity = 0;  // max_connections - reserved
  int others = 0;           // connections budgeted by other nodes sharing the server
  int available = 0;        // server_capacity - others
  // The check's connection goes through a proxy (PgBouncer): this process's connections are the
  // proxy's clients, and the server's capacity bounds the proxy's server connections instead,
  // so only the explicit budget applies to them.
  bool through_proxy = false;
  [[nodiscard]] bool fits() const noexcept {
    return (through_proxy || needed <= available) &&
           (!explicit_budget || needed <= *explicit_budget);
  }
};

class pool_manager {
 public:
  explicit pool_manager(manager_settings s = {},
                        std::shared_ptr<connector> conn = make_libpq_connector());
  pool_manager(const pool_manager&) = delete;
  pool_manager& operator=(const pool_manager&) = delete;
  pool_manager(pool_manager&&) = delete;
  pool_manager& operator=(pool_manager&&) = delete;
  ~pool_manager();  // shutdown(0)

  // Creates a named pool. Throws settings_error (invalid settings, duplicate name) or
  // budget_error when an explicit connection_budget would be exceeded.
  pool& add(settings s);
  // Throws std::out_of_range naming the pool and the pools that exist.
  [[nodiscard]] pool& get(std::string_view name) const;
  [[nodiscard]] pool* find(std::string_view name) const noexcept;
  [[nodiscard]] std::vector<std::string> names() const;
  // stats() of every pool, in name order: the seed's get_connection_pool_status().
  [[nodiscard]] std::vector<pool_stats> status() const;

  // The most server connections this process can hold: pools plus dedicated connections.
  [[nodiscard]] int connections_needed() const;
  [[nodiscard]] const manager_settings& config() const noexcept { return settings_; }

  // Reads max_connections and the reserved slots from the server (through a lease of the first
  // pool, or `conn` when given) and checks the budget, with `others` connections already
  // budgeted by other nodes. When that connection goes through a proxy (PgBouncer), the server's
  // capacity is reported but not checked: it bounds the proxy's server connections, not this
  // process's (size the proxy's pools against it). Throws budget_error with the numbers when it
  // does not fit; throws pg::error or pool_timeout when the server cannot be asked.
  budget_report check_budget(int others = 0) const;
  budget_report check_budget(pg::connection& conn, int others = 0) const;

  // Stops lending in every pool, waits up to `grace` (in total) for leases to come back, then
  // closes all connections. Returns the number of leases still out. Idempotent.
  int shutdown(std::chrono::milliseconds grace);

 private:
  budget_report evaluate(int server_max, int server_reserved, int others) const;

  const manager_settings settings_;
  const std::shared_ptr<connector> connector_;
  mutable std::shared_mutex mutex_;
  std::map<std::string, std::unique_ptr<pool>, std::less<>> pools_;  // guarded by mutex_
};

// Formats a budget report as the one-paragraph explanation used in budget_error and `doctor`.
[[nodiscard]] std::string describe(const budget_report& r);

}  // namespace sluice::pool
