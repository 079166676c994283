#pragma once

// The libpq connector with a count of the pool's pre-pings, for the benchmarks: pool_stats has
// no such counter, and each ping is a round trip (and a transaction in pg_stat_database) that
// `sluice bench pool` and `sluice bench scheduler` report.
//
// Thread-safety: as the libpq connector; pings() may be read from any thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>

#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"

namespace sluice::cli {

class counting_connector final : public pool::connector {
 public:
  pg::connection connect(const pool::settings& s, std::uint64_t id) override {
    return inner_->connect(s, id);
  }
  bool ping(pg::connection& c, std::uint64_t id) override {
    pings_.fetch_add(1, std::memory_order_relaxed);
    return inner_->ping(c, id);
  }
  bool reset(pg::connection& c, std::uint64_t id, pool::reset_mode mode) override {
    return inner_->reset(c, id, mode);
  }
  // The pool calls these (bounded by the borrower's time left); forward them so the libpq
  // connector's deadlines apply.
  bool ping_within(pg::connection& c, std::uint64_t id, std::chrono::milliseconds budget) override {
    pings_.fetch_add(1, std::memory_order_relaxed);
    return inner_->ping_within(c, id, budget);
  }
  bool reset_within(pg::connection& c, std::uint64_t id, pool::reset_mode mode,
                    std::chrono::milliseconds budget) override {
    return inner_->reset_within(c, id, mode, budget);
  }
  [[nodiscard]] std::uint64_t pings() const noexcept { return pings_.load(); }

 private:
  const std::shared_ptr<pool::connector> inner_ = pool::make_libpq_connector();
  std::atomic<std::uint64_t> pings_{0};
};

}  // namespace sluice::cli
