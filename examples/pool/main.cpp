// pool_example: libsluice's connection pool on its own, without the scheduler.
//
// Two named pools under one connection budget checked against the server, leases that return
// their connection when they go out of scope, a transaction, and the pools' statistics.
//
// Usage: pool_example [conninfo]   (default: libpq's PG* environment variables)
// Exits 0 when every step worked, 1 with a one-line reason otherwise.

#include <cstdio>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include <sluice/pg/connection.hpp>
#include <sluice/pg/error.hpp>
#include <sluice/pool/manager.hpp>
#include <sluice/pool/pool.hpp>
#include <sluice/version.hpp>

namespace {

sluice::pool::settings pool_settings(std::string name, const std::string& conninfo) {
  sluice::pool::settings s;
  s.name = std::move(name);
  s.conninfo = conninfo;
  s.size = 2;
  s.max_overflow = 2;
  s.timeout = std::chrono::seconds(5);
  return s;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string conninfo = argc > 1 ? argv[1] : "";
  std::printf("libsluice %s\n", sluice::version_string);

  sluice::pool::pool_manager pools;
  pools.add(pool_settings("platform", conninfo));
  pools.add(pool_settings("user_data", conninfo));

  // The budget: every pool's size + overflow, against what the server can still give.
  {
    sluice::pool::lease probe = pools.get("platform").acquire();
    const auto budget = pools.check_budget(*probe);
    std::printf("budget: this process may open %d connections; the server can give %d: %s\n",
                budget.needed, budget.available, budget.fits() ? "fits" : "DOES NOT FIT");
    if (!budget.fits()) return 1;
  }

  // A transaction on one lease: the connection goes back to the pool when `l` is destroyed,
  // rolled back if the transaction was left open.
  {
    sluice::pool::lease l = pools.get("user_data").acquire();
    l->exec("CREATE TEMP TABLE IF NOT EXISTS visits (n int)");
    sluice::pg::transaction tx(*l);
    for (int i = 1; i <= 3; ++i)
      l->query("INSERT INTO visits VALUES ($1)", i);
    const int sum = l->query("SELECT sum(n)::int FROM visits").one<int>();
    tx.commit();
    std::printf("sum in transaction: %d\n", sum);
  }

  // Several threads share a pool of 2 + 2: at most 4 connections, the others wait their turn.
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&pools] {
      for (int i = 0; i < 20; ++i) {
        sluice::pool::lease l = pools.get("platform").acquire();
        (void)l->query("SELECT $1::int + 1", i).one<int>();
      }
    });
  }
  for (auto& th : threads)
    th.join();

  for (const sluice::pool::pool_stats& s : pools.status()) {
    std::printf(
        "pool %-10s open %d (idle %d, in use %d) max %d peak %d checkouts %llu "
        "timeouts %llu wait p99 %.3f ms\n",
        s.name.c_str(), s.open, s.checked_in, s.checked_out, s.max, s.peak_checked_out,
        static_cast<unsigned long long>(s.checkouts), static_cast<unsigned long long>(s.timeouts),
        s.wait_p99_ms);
    if (s.peak_checked_out > s.max) {
      std::fprintf(stderr, "pool %s exceeded its maximum\n", s.name.c_str());
      return 1;
    }
  }
  return 0;
} catch (const sluice::pg::error& e) {
  std::fprintf(stderr, "pool_example: database error: %s\n", e.what());
  return 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "pool_example: %s\n", e.what());
  return 1;
}
