// The default connector: opens libpq connections with the pool's settings, pings with an empty
// statement, and resets a returned connection according to reset_on_return. Pings and resets
// sent for the pool have a deadline, so a backend that stopped answering (frozen, or behind a
// partitioned network) costs a borrower no more than its acquire timeout.

#include <algorithm>
#include <chrono>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "sluice/log.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"

namespace sluice::pool {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

steady_clock::time_point deadline_in(milliseconds budget) {
  // Keeps the arithmetic in range for a budget meaning "practically forever".
  constexpr auto ten_years =
      std::chrono::duration_cast<milliseconds>(std::chrono::hours(24 * 3650));
  return steady_clock::now() + std::clamp(budget, milliseconds::zero(), ten_years);
}

class libpq_connector final : public connector {
 public:
  pg::connection connect(const settings& s, std::uint64_t /*id*/) override {
    pg::connect_options options;
    options.conninfo = s.conninfo;
    options.connect_timeout = s.connect_timeout;
    options.application_name = s.effective_application_name();
    options.statement_timeout = s.statement_timeout;
    pg::connection conn = pg::connection::open(options);
    if (s.statement_cache > 0 && goes_through_proxy(conn, s)) {
      // A transaction-pooling proxy hands each transaction to any server connection, where
      // the statements this one prepared do not exist. Unique names keep that from running
      // another client's SQL, but every cached statement would fail; the proxy's pooling mode
      // cannot be seen from here, so the cache stays off behind any proxy.
      conn.set_statement_cache_capacity(0);
    } else {
      conn.set_statement_cache_capacity(s.statement_cache);
    }
    return conn;
  }

  bool ping(pg::connection& c, std::uint64_t /*id*/) override { return c.ping(); }

  bool ping_within(pg::connection& c, std::uint64_t /*id*/, milliseconds budget) override {
    return c.ping(deadline_in(budget));
  }

  bool reset(pg::connection& c, std::uint64_t /*id*/, reset_mode mode) override {
    return reset_impl(c, mode, std::nullopt);
  }

  bool reset_within(pg::connection& c, std::uint64_t /*id*/, reset_mode mode,
                    milliseconds budget) override {
    return reset_impl(c, mode, budget);
  }

 private:
  // Asks the connection whether a proxy sits in between, and warns once per pool when one
  // does. A server that cannot answer the probe (no inet_server_port()) counts as direct:
  // statement names are unique per connection, so the worst case is an error naming the fix.
  bool goes_through_proxy(pg::connection& conn, const settings& s) {
    pg::proxy_probe probe;
    try {
      probe = conn.probe_proxy();
    } catch (const pg::sql_error& e) {
      log(log_level::debug, "pool",
          "pool '" + s.name + "': cannot tell whether a proxy sits in between: " + e.what());
      return false;
    }
    if (!probe.through_proxy) return false;
    bool first = false;
    {
      const std::scoped_lock lock(mutex_);
      first = warned_pools_.insert(s.name).second;
    }
    if (first) {
      // The section of the daemon's configuration the pool comes from.
      const std::string section =
          s.name == "scheduler" ? "[scheduler.lane]" : "[pools." + s.name + "]";
      log(log_level::warn, "pool",
          "pool '" + s.name + "': connections go through a proxy (connected to " +
              probe.client_side + ", the server reports " + probe.server_side +
              "), such as PgBouncer; its statement cache is turned off for them, since a "
              "transaction-pooling proxy moves a session between server connections and "
              "prepared statements stay behind. Set statement_cache = 0 in " +
              section +
              " (pool::settings::statement_cache in the library) to silence this warning, or "
              "connect to PostgreSQL directly to keep the cache");
    }
    return true;
  }

  std::mutex mutex_;                    // guards warned_pools_
  std::set<std::string> warned_pools_;  // pools whose proxy warning was logged

  // Without a budget, statements run with blocking calls (no time limit).
  static bool reset_impl(pg::connection& c, reset_mode mode, std::optional<milliseconds> budget) {
    if (c.poisoned()) return false;
    // The clock is read only when a statement is needed: most returns need none.
    std::optional<steady_clock::time_point> deadline;
    auto run = [&](const char* sql) {
      if (!budget) {
        c.exec(sql);
        return;
      }
      if (!deadline) deadline = deadline_in(*budget);
      c.exec_until(sql, *deadline);
    };
    switch (c.tx_status()) {
      case pg::transaction_status::idle:
        break;
      case pg::transaction_status::in_transaction:
      case pg::transaction_status::in_error:
        if (mode == reset_mode::none) return false;
        run("ROLLBACK");
        break;
      case pg::transaction_status::active:  // a result was never read: not worth rescuing
      case pg::transaction_status::unknown:
        return false;
    }
    if (mode == reset_mode::discard_all) {
      run("DISCARD ALL");
      c.forget_statement_cache();
    }
    return c.tx_status() == pg::transaction_status::idle && !c.poisoned();
  }
};

}  // namespace

std::shared_ptr<connector> make_libpq_connector() {
  return std::make_shared<libpq_connector>();
}

}  // namespace sluice::pool
