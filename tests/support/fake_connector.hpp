#pragma once

// A connector with no database behind it, for unit tests and benchmarks of the pool's policy.
// Connections it "opens" are empty pg::connection objects told apart by the pool's id.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "sluice/pg/error.hpp"
#include "sluice/pool/pool.hpp"

namespace sluice::test {

class fake_connector final : public pool::connector {
 public:
  pg::connection connect(const pool::settings& /*s*/, std::uint64_t id) override {
    connect_attempts.fetch_add(1);
    if (connect_delay.count() > 0) std::this_thread::sleep_for(connect_delay);
    {
      const std::scoped_lock lock(mutex_);
      if (refuse_connects > 0) {
        --refuse_connects;
        throw pg::connection_error("FATAL:  sorry, too many clients already", refuse_sqlstate);
      }
      opened.insert(id);
    }
    connects.fetch_add(1);
    return pg::connection{};
  }

  bool ping(pg::connection& /*c*/, std::uint64_t id) override {
    pings.fetch_add(1);
    return !is_dead(id);
  }

  bool reset(pg::connection& /*c*/, std::uint64_t id, pool::reset_mode /*mode*/) override {
    resets.fetch_add(1, std::memory_order_relaxed);
    return !is_dead(id);
  }

  // A frozen connection's server answers nothing until thawed: the call waits for the thaw or
  // for its budget to run out, and then counts as dead.
  bool ping_within(pg::connection& c, std::uint64_t id, std::chrono::milliseconds budget) override {
    last_ping_budget_ms.store(budget.count());
    if (!answers_within(id, budget)) {
      pings.fetch_add(1);
      return false;
    }
    return ping(c, id);
  }
  bool reset_within(pg::connection& c, std::uint64_t id, pool::reset_mode mode,
                    std::chrono::milliseconds budget) override {
    last_reset_budget_ms.store(budget.count(), std::memory_order_relaxed);
    if (!answers_within(id, budget)) {
      resets.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    return reset(c, id, mode);
  }

  // The server side of `id` went away: pings fail, a return still looks fine.
  void kill(std::uint64_t id) {
    const std::scoped_lock lock(mutex_);
    dead_.insert(id);
    any_dead_.store(true);
  }
  // `id` is known locally to be broken (like a poisoned pg::connection): it is discarded when
  // returned.
  void poison(std::uint64_t id) {
    const std::scoped_lock lock(mutex_);
    broken_.insert(id);
    any_broken_.store(true);
  }
  // `id`'s server stops answering (like a SIGSTOPped backend) until thaw(id).
  void freeze(std::uint64_t id) {
    const std::scoped_lock lock(mutex_);
    frozen_.insert(id);
    any_frozen_.store(true);
  }
  void thaw(std::uint64_t id) {
    {
      const std::scoped_lock lock(mutex_);
      frozen_.erase(id);
    }
    thawed_.notify_all();
  }
  // Calls waiting on a frozen connection right now.
  int stuck_calls() {
    const std::scoped_lock lock(mutex_);
    return stuck_;
  }
  void refuse_next(int n, std::string sqlstate = "53300") {
    const std::scoped_lock lock(mutex_);
    refuse_connects = n;
    refuse_sqlstate = std::move(sqlstate);
  }

  std::atomic<int> connect_attempts{0};
  std::atomic<int> connects{0};
  std::atomic<int> pings{0};
  std::atomic<std::uint64_t> resets{0};
  std::atomic<std::int64_t> last_ping_budget_ms{-1};   // -1: no ping_within yet
  std::atomic<std::int64_t> last_reset_budget_ms{-1};  // -1: no reset_within yet
  std::chrono::milliseconds connect_delay{0};

 private:
  // False when `id` is frozen and stays so for `budget`.
  bool answers_within(std::uint64_t id, std::chrono::milliseconds budget) {
    if (!any_frozen_.load(std::memory_order_relaxed)) return true;
    std::unique_lock lock(mutex_);
    ++stuck_;
    const bool thawed = thawed_.wait_for(lock, budget, [&] { return !frozen_.contains(id); });
    --stuck_;
    return thawed;
  }

  bool is_dead(std::uint64_t id) {
    if (!any_dead_.load(std::memory_order_relaxed) && !any_broken_.load(std::memory_order_relaxed))
      return false;
    const std::scoped_lock lock(mutex_);
    return dead_.contains(id) || broken_.contains(id);
  }

  std::mutex mutex_;
  std::set<std::uint64_t> opened;   // guarded by mutex_
  std::set<std::uint64_t> dead_;    // guarded by mutex_
  std::set<std::uint64_t> broken_;  // guarded by mutex_
  std::set<std::uint64_t> frozen_;  // guarded by mutex_
  int stuck_ = 0;                   // guarded by mutex_
  int refuse_connects = 0;          // guarded by mutex_
  std::string refuse_sqlstate;      // guarded by mutex_
  std::condition_variable thawed_;  // with mutex_
  std::atomic<bool> any_dead_{false};
  std::atomic<bool> any_broken_{false};
  std::atomic<bool> any_frozen_{false};
};

// A clock the test moves by hand.
class manual_clock {
 public:
  std::chrono::steady_clock::time_point now() const {
    return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns_.load()));
  }
  void advance(std::chrono::steady_clock::duration d) {
    ns_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  }
  auto fn() {
    return [this] { return now(); };
  }

 private:
  std::atomic<std::int64_t> ns_{3'600'000'000'000};
};

}  // namespace sluice::test
