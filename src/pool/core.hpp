#pragma once

// The pool's machinery, private to libsluice.
//
// Borrow path. Every connection lives in a fixed slot whose state changes by compare-and-swap:
//   empty -> reserved (connector thread opens a connection) -> idle <-> in_use
//   idle -> reserved (housekeeper looks at it) -> idle or empty
// A borrower first tries the slot it returned last (per thread), then scans for an idle slot;
// neither takes a lock, so uncontended borrowing costs a few atomic operations. Only when no
// slot is idle does it take the mutex, queue as a waiter (first come first served) and wait to
// be handed a connection by a returning borrower or by the connector thread. Borrowers never
// open connections themselves and never wait on a connect made for someone else.
//
// Lost wake-ups: a returning borrower publishes its slot as idle and then reads the waiter
// count; a waiter publishes itself in the count and then scans under the mutex. Both are
// sequentially consistent, so at least one of them sees the other.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <source_location>
#include <string>
#include <thread>

#include "sluice/pool/pool.hpp"

namespace sluice::pool::detail {

using clock_fn = std::function<std::chrono::steady_clock::time_point()>;

struct alignas(64) slot {
  enum : int { empty = 0, idle = 1, in_use = 2, reserved = 3 };
  std::atomic<int> state{empty};
  // Owned by whoever moved the slot out of idle/empty; never touched by others.
  pg::connection conn;
  std::uint64_t id = 0;
  std::int64_t expires_ns = 0;  // 0: never
  std::uint32_t index = 0;
  // Read by the housekeeper and stats() while another thread owns the slot.
  std::atomic<std::int64_t> last_returned_ns{0};
  // When the borrower got the connection (set by lend(), after any pre-ping); 0 while no lease
  // is out: idle, and also in_use between owners (pre-ping, reset, a hand-off not yet picked
  // up). Only kept when leak_threshold is on; leak reports look at nothing else.
  std::atomic<std::int64_t> lease_start_ns{0};
  std::atomic<std::source_location> borrower{std::source_location{}};
  std::atomic<bool> leak_reported{false};
  std::atomic<std::uint64_t> checkouts{0};  // written only by the owner
};

// Lifetime: the pool object and every outstanding lease each hold a reference (refs_); whoever
// drops the last one deletes the core. So a lease may outlive its pool, and a lease being
// returned never races with the pool's destruction.
class core {
 public:
  core(settings s, std::shared_ptr<connector> conn, clock_fn clock);
  core(const core&) = delete;
  core& operator=(const core&) = delete;
  core(core&&) = delete;
  core& operator=(core&&) = delete;
  ~core();

  void start();
  lease acquire(std::chrono::milliseconds timeout, const std::source_location& where);
  void release(slot* s, bool invalid) noexcept;
  pool_stats stats() const;
  int close(std::chrono::milliseconds grace);
  // The pool object lets go: closes the pool; the core lives on until its last lease returns.
  static void drop_owner(core* c) noexcept;
  // Called by lease::release() as its very last step.
  static void drop_lease(core* c) noexcept;
  void housekeep_once();
  const settings& config() const noexcept { return settings_; }

 private:
  struct waiter {  // every field guarded by mutex_
    std::condition_variable cv;
    slot* handed = nullptr;
    bool handoff_due = false;  // has waited handoff_after: gets returned connections directly
  };
  // A waiter older than this gets returned connections handed over directly (strict FIFO).
  static constexpr std::chrono::milliseconds handoff_after{2};
  // A thread that asks for a connection again within this long of returning one while others
  // waited counts as prompt: its next such return skips waking a waiter (see release()).
  static constexpr std::int64_t prompt_return_ns = 50'000;
  // The least time a pre-ping or a reset is given, even when the borrower's timeout leaves
  // less: without it, a borrower served just before its deadline (or a pool with timeout 0)
  // would discard healthy connections for want of time for one round trip.
  static constexpr std::chrono::milliseconds min_round_trip_budget{100};

  std::int64_t now_ns() const;
  slot* try_take_idle() noexcept;
  slot* wait_for_slot(std::chrono::steady_clock::time_point deadline,
                      std::chrono::milliseconds timeout);
  enum class fitness { fit, unfit, needs_ping };
  // Whether `s` may be lent as it is (no clock read, no round trip): unfit when it has expired,
  // needs_ping when pre_ping is on and it has been idle too long.
  fitness fitness_of(const slot* s, std::int64_t now) noexcept;
  // Pings `s` within what is left until the borrower's `deadline`: fit or unfit (dead).
  fitness ping_before_lending(slot* s, std::chrono::steady_clock::time_point deadline);
  void lend(slot* s, const std::source_location& where, std::int64_t now) noexcept;
  void hand_off_locked(slot* s) noexcept;
  void wake_head_waiter() noexcept;
  // Called on entry to acquire(): records whether this thread came back promptly.
  void note_return_gap() noexcept;
  void discard(slot* s, bool was_lent) noexcept;
  // Closes the slot's connection, waiting (bounded) until the server has let the backend go.
  static void close_connection(slot& s) noexcept;
  // How long a close waits for the server to confirm (it takes about a millisecond locally).
  static constexpr std::chrono::milliseconds server_close_wait{500};
  void notify_drained_locked() noexcept;
  void note_peak(int checked_out) noexcept;
  void connector_loop();
  void housekeeper_loop();
  bool needs_connection_locked() const noexcept;
  void record_wait_locked(std::chrono::steady_clock::duration waited) noexcept;
  std::string timeout_message_locked(std::chrono::steady_clock::duration waited) const;

  const settings settings_;
  const std::shared_ptr<connector> connector_;
  const clock_fn clock_;
  const int capacity_;
  // What a reset on return is given: `timeout` (no borrower waits longer), at least
  // min_round_trip_budget.
  const std::chrono::milliseconds reset_budget_;
  std::unique_ptr<slot[]> slots_;
  alignas(64) std::atomic<std::int64_t> tick_ns_;  // coarse monotonic time, kept by the housekeeper

  alignas(64) std::atomic<std::int64_t> refs_{1};  // bit 0: the pool object; 2 per lease
  alignas(64) std::atomic<int> checked_out_{0};
  alignas(64) std::atomic<int> waiting_{0};  // == waiters_.size(), readable without the mutex
  alignas(64) std::atomic<int> open_{0};     // slots not empty (connecting ones included)
  // Connections being closed that the server has not let go yet: they still count against the
  // capacity (open_ + closing_), so a replacement never makes the server see one too many.
  std::atomic<int> closing_{0};
  std::atomic<bool> closed_{false};
  std::atomic<bool> saturated_{false};
  std::atomic<int> peak_checked_out_{0};
  std::atomic<std::int64_t> ping_all_before_ns_{0};  // idle connections older than this get pinged
  std::atomic<std::uint64_t> next_id_{0};
  std::atomic<std::uint64_t> connects_{0}, connect_failures_{0}, refusals_{0}, timeouts_{0},
      invalidations_{0}, recycles_{0}, idle_closes_{0}, pings_failed_{0}, leaks_{0};

  mutable std::mutex mutex_;
  std::deque<waiter*> waiters_;                              // guarded by mutex_
  std::condition_variable connector_cv_;                     // with mutex_
  std::condition_variable housekeeper_cv_;                   // with mutex_
  std::condition_variable drained_cv_;                       // with mutex_
  std::chrono::steady_clock::time_point next_connect_at_{};  // guarded: back-off after a failure
  std::chrono::milliseconds backoff_{0};                     // guarded
  std::string last_connect_error_;                           // guarded
  std::uint64_t slow_checkouts_ = 0;                         // guarded: acquisitions that waited
  std::array<std::uint64_t, 16> wait_buckets_{};             // guarded
  double wait_sum_ms_ = 0;                                   // guarded
  double wait_max_ms_ = 0;                                   // guarded
  bool threads_started_ = false;                             // guarded

  std::thread connector_thread_;
  std::thread housekeeper_thread_;
};

}  // namespace sluice::pool::detail
