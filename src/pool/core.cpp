#include "pool/core.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <random>
#include <utility>

#include <time.h>

#include "sluice/log.hpp"
#include "sluice/pg/error.hpp"

namespace sluice::pool {

const double wait_bucket_bounds_ms[16] = {0.05, 0.1, 0.25, 0.5, 1,   2.5,  5,    10,
                                          25,   50,  100,  250, 500, 1000, 5000, INFINITY};

namespace detail {
namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::steady_clock;

// The slot the calling thread returned last, per pool: most borrowers use one connection at a
// time, so this is usually the one they get back, without touching any other cache line.
struct thread_hint {
  const core* owner = nullptr;
  int index = -1;
  // Set when the thread's last release found borrowers waiting: when it happened (steady
  // clock), read back by the thread's next acquire() to learn whether it comes back promptly.
  std::int64_t released_to_waiters_ns = 0;
  // The thread came back for a connection within prompt_return of its last release to waiters.
  bool prompt = false;
};
thread_local thread_hint hint;

std::int64_t steady_now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// CLOCK_MONOTONIC_COARSE costs a few nanoseconds and its resolution (a few ms) is plenty for
// lifetimes, idle times and leak thresholds. Timeouts use steady_clock.
std::int64_t coarse_now_ns() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

std::int64_t to_ns(milliseconds d) {
  return duration_cast<nanoseconds>(d).count();
}

double random_unit() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  return std::uniform_real_distribution<double>(0.0, 1.0)(gen);
}

std::string format_seconds(steady_clock::duration d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", std::chrono::duration<double>(d).count());
  return buf;
}

}  // namespace

core::core(settings s, std::shared_ptr<connector> conn, clock_fn clock)
    : settings_(std::move(s)),
      connector_(std::move(conn)),
      clock_(std::move(clock)),
      capacity_(settings_.max_connections()),
      reset_budget_(std::max(settings_.timeout, min_round_trip_budget)),
      slots_(std::make_unique<slot[]>(static_cast<std::size_t>(capacity_))),
      tick_ns_(coarse_now_ns()) {
  for (int i = 0; i < capacity_; ++i)
    slots_[static_cast<std::size_t>(i)].index = static_cast<std::uint32_t>(i);
}

core::~core() {
  // close() has joined the threads; what remains are idle connections, closed by the slots.
  close(milliseconds(0));
}

void core::start() {
  const std::scoped_lock lock(mutex_);
  threads_started_ = true;
  connector_thread_ = std::thread([this] { connector_loop(); });
  housekeeper_thread_ = std::thread([this] { housekeeper_loop(); });
}

std::int64_t core::now_ns() const {
  if (clock_) return duration_cast<nanoseconds>(clock_().time_since_epoch()).count();
  return tick_ns_.load(std::memory_order_relaxed);
}

slot* core::try_take_idle() noexcept {
  if (hint.owner == this && hint.index >= 0 && hint.index < capacity_) {
    slot& s = slots_[static_cast<std::size_t>(hint.index)];
    int expected = slot::idle;
    if (s.state.compare_exchange_strong(expected, slot::in_use, std::memory_order_acquire))
      return &s;
  }
  // lifo: lowest slot first, so the same few connections stay hot and the rest idle out.
  // fifo: start at a per-thread rotating offset to spread use over all connections.
  int start = 0;
  if (!settings_.lifo) {
    thread_local unsigned rotation = 0;
    start = static_cast<int>(rotation++ % static_cast<unsigned>(capacity_));
  }
  for (int n = 0; n < capacity_; ++n) {
    int i = start + n;
    if (i >= capacity_) i -= capacity_;
    slot& s = slots_[static_cast<std::size_t>(i)];
    if (s.state.load(std::memory_order_relaxed) != slot::idle) continue;
    int expected = slot::idle;
    if (s.state.compare_exchange_strong(expected, slot::in_use, std::memory_order_acquire))
      return &s;
  }
  return nullptr;
}

void core::note_peak(int checked_out) noexcept {
  int peak = peak_checked_out_.load(std::memory_order_relaxed);
  while (checked_out > peak &&
         !peak_checked_out_.compare_exchange_weak(peak, checked_out, std::memory_order_relaxed)) {
  }
}

lease core::acquire(milliseconds timeout, const std::source_location& where) {
  // The deadline is only computed once the borrower has to wait: the fast path reads no clock.
  std::optional<steady_clock::time_point> deadline;
  note_return_gap();
  for (;;) {
    if (closed_.load(std::memory_order_acquire)) {
      throw pool_closed("pool '" + settings_.name + "' is closed");
    }
    slot* s = try_take_idle();
    if (s != nullptr) {
      note_peak(checked_out_.fetch_add(1, std::memory_order_relaxed) + 1);
    } else {
      if (!deadline) deadline = steady_clock::now() + timeout;
      s = wait_for_slot(*deadline, timeout);  // counted as checked out by whoever handed it over
    }
    std::int64_t now = now_ns();
    fitness f = fitness_of(s, now);
    if (f == fitness::needs_ping) {
      // Off the fast path: the deadline is computed here if the borrower has not waited.
      if (!deadline) deadline = steady_clock::now() + timeout;
      f = ping_before_lending(s, *deadline);
      // The lease starts after the ping: the ping's time is the pool's, not the borrower's.
      now = now_ns();
    }
    if (f == fitness::fit) {
      lend(s, where, now);
      refs_.fetch_add(2, std::memory_order_relaxed);
      return lease(this, s);
    }
    discard(s, true);
    // The borrower never sees a dead or expired connection: try again, within the same timeout.
    if (!deadline) deadline = steady_clock::now() + timeout;
  }
}

core::fitness core::fitness_of(const slot* s, std::int64_t now) noexcept {
  if (s->expires_ns != 0 && now >= s->expires_ns) {
    recycles_.fetch_add(1, std::memory_order_relaxed);
    return fitness::unfit;
  }
  if (settings_.pre_ping) {
    const std::int64_t returned = s->last_returned_ns.load(std::memory_order_relaxed);
    const bool stale = now - returned > to_ns(settings_.pre_ping_window) ||
                       returned < ping_all_before_ns_.load(std::memory_order_relaxed);
    if (stale) return fitness::needs_ping;
  }
  return fitness::fit;
}

core::fitness core::ping_before_lending(slot* s, steady_clock::time_point deadline) {
  // The ping gets what is left of the borrower's timeout: acquire() keeps its promise even when
  // the backend behind an idle connection stopped answering (frozen, partitioned).
  const auto budget = std::max(std::chrono::ceil<milliseconds>(deadline - steady_clock::now()),
                               min_round_trip_budget);
  bool alive = false;
  try {
    alive = connector_->ping_within(s->conn, s->id, budget);
  } catch (...) {
    alive = false;  // a connector that throws has not shown the connection to be alive
  }
  if (alive) return fitness::fit;
  pings_failed_.fetch_add(1, std::memory_order_relaxed);
  invalidations_.fetch_add(1, std::memory_order_relaxed);
  // One dead connection usually means the server restarted or killed backends: check every
  // idle connection before lending it, as SQLAlchemy does after a disconnect.
  ping_all_before_ns_.store(now_ns() + 1, std::memory_order_relaxed);
  return fitness::unfit;
}

void core::lend(slot* s, const std::source_location& where, std::int64_t now) noexcept {
  s->checkouts.store(s->checkouts.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (settings_.leak_threshold.count() > 0) {
    // 0 means "no lease out"; an injected clock could really read 0.
    s->lease_start_ns.store(now != 0 ? now : 1, std::memory_order_relaxed);
    s->borrower.store(where, std::memory_order_relaxed);
    s->leak_reported.store(false, std::memory_order_relaxed);
  }
}

slot* core::wait_for_slot(steady_clock::time_point deadline, milliseconds timeout) {
  const auto started = deadline - timeout;
  waiter w;
  std::unique_lock lock(mutex_);
  waiters_.push_back(&w);
  waiting_.fetch_add(1, std::memory_order_seq_cst);
  auto leave_queue = [&] {
    waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &w));
    waiting_.fetch_sub(1, std::memory_order_seq_cst);
  };
  // A connection returned between our scan and our joining the queue is idle now: take it.
  if (slot* s = try_take_idle()) {
    leave_queue();
    note_peak(checked_out_.fetch_add(1, std::memory_order_relaxed) + 1);
    record_wait_locked(steady_clock::now() - started);
    return s;
  }
  connector_cv_.notify_one();
  // A waiter first sleeps until it is handoff_after old, then marks itself due for a direct
  // hand-off, so that release() can tell without reading a clock. (A waiter served sooner
  // never makes that extra wake-up.)
  const auto handoff_at = started + handoff_after;
  while (w.handed == nullptr) {
    if (closed_.load(std::memory_order_acquire)) {
      leave_queue();
      throw pool_closed("pool '" + settings_.name + "' closed while waiting for a connection");
    }
    const bool until_handoff = !w.handoff_due && handoff_at < deadline;
    const bool timed_out =
        w.cv.wait_until(lock, until_handoff ? handoff_at : deadline) == std::cv_status::timeout;
    if (w.handed != nullptr) break;
    // Woken by a release that published its connection instead of handing it over: compete.
    if (slot* s = try_take_idle()) {
      leave_queue();
      note_peak(checked_out_.fetch_add(1, std::memory_order_relaxed) + 1);
      record_wait_locked(steady_clock::now() - started);
      return s;
    }
    if (timed_out && until_handoff) {
      w.handoff_due = true;
      continue;
    }
    if (timed_out) {
      leave_queue();
      timeouts_.fetch_add(1, std::memory_order_relaxed);
      const auto waited = steady_clock::now() - started;
      record_wait_locked(waited);
      throw pool_timeout(timeout_message_locked(waited));
    }
  }
  record_wait_locked(steady_clock::now() - started);
  return w.handed;
}

std::string core::timeout_message_locked(steady_clock::duration waited) const {
  std::string msg = "pool '" + settings_.name + "': no connection available within " +
                    format_seconds(waited) + " (size " + std::to_string(settings_.size) +
                    ", overflow " + std::to_string(settings_.max_overflow) + ", open " +
                    std::to_string(open_.load()) + ", checked out " +
                    std::to_string(checked_out_.load()) + ", waiting " +
                    std::to_string(waiters_.size() + 1);
  if (saturated_.load()) msg += "; the server is refusing new connections";
  if (!last_connect_error_.empty()) msg += "; last connect error: " + last_connect_error_;
  msg += ")";
  return msg;
}

void core::record_wait_locked(steady_clock::duration waited) noexcept {
  const double ms = std::chrono::duration<double, std::milli>(waited).count();
  ++slow_checkouts_;
  wait_sum_ms_ += ms;
  wait_max_ms_ = std::max(wait_max_ms_, ms);
  std::size_t b = 0;
  while (b + 1 < wait_buckets_.size() && ms > wait_bucket_bounds_ms[b])
    ++b;
  ++wait_buckets_[b];
}

void core::hand_off_locked(slot* s) noexcept {
  waiter* w = waiters_.front();
  waiters_.pop_front();
  waiting_.fetch_sub(1, std::memory_order_seq_cst);
  w->handed = s;
  w->cv.notify_one();
}

// Called right after a slot was published as idle: a waiter that joined the queue after the
// owner last looked is woken to take it (or a barging borrower already did).
void core::wake_head_waiter() noexcept {
  if (waiting_.load(std::memory_order_seq_cst) == 0) return;
  const std::scoped_lock lock(mutex_);
  if (!waiters_.empty()) waiters_.front()->cv.notify_one();
}

void core::release(slot* s, bool invalid) noexcept {
  // The lease ends here: whatever happens to the connection next (reset, hand-off, close) is
  // the pool's time, not the borrower's, and must not count towards a leak report.
  if (settings_.leak_threshold.count() > 0) s->lease_start_ns.store(0, std::memory_order_relaxed);
  bool keep = !invalid && !closed_.load(std::memory_order_acquire);
  if (keep) {
    try {
      // No borrower waits longer than `timeout` for a connection: one whose reset takes
      // longer is worth nothing to them.
      keep = connector_->reset_within(s->conn, s->id, settings_.reset_on_return, reset_budget_);
    } catch (...) {
      keep = false;
    }
    if (!keep) {
      // The borrower's last error broke this connection: the others may be broken too.
      ping_all_before_ns_.store(now_ns() + 1, std::memory_order_relaxed);
    }
  }
  if (!keep) {
    if (!closed_.load()) invalidations_.fetch_add(1, std::memory_order_relaxed);
    discard(s, true);
    return;
  }
  s->last_returned_ns.store(now_ns(), std::memory_order_relaxed);

  // Fairness without convoys: a borrower that has waited longer than handoff_after gets the
  // connection handed over directly, first come first served. Before that, the connection is
  // published and the head waiter woken to compete for it, so a thread that is already running
  // can reuse a hot connection instead of every release paying for a context switch.
  bool waiters_present = false;
  if (waiting_.load(std::memory_order_seq_cst) > 0) {
    const std::scoped_lock lock(mutex_);
    if (!waiters_.empty()) {
      waiters_present = true;
      if (waiters_.front()->handoff_due) {
        hand_off_locked(s);
        return;
      }
    }
  }
  // Above `size`, a returned connection nobody waits for is closed at once when there is no
  // grace (SQLAlchemy's overflow); with a grace the housekeeper closes it once it stayed idle
  // that long. It counts as closing before it stops counting as open, so the connector never
  // sees room for a replacement while the server still holds this one.
  if (!waiters_present && settings_.overflow_idle_grace.count() == 0) {
    closing_.fetch_add(1, std::memory_order_seq_cst);
    bool close_it = false;
    int open = open_.load(std::memory_order_relaxed);
    while (open > settings_.size) {
      if (open_.compare_exchange_weak(open, open - 1, std::memory_order_relaxed)) {
        close_it = true;
        break;
      }
    }
    if (close_it) {
      idle_closes_.fetch_add(1, std::memory_order_relaxed);
      checked_out_.fetch_sub(1, std::memory_order_relaxed);
      close_connection(*s);
      s->state.store(slot::empty, std::memory_order_release);
      closing_.fetch_sub(1, std::memory_order_seq_cst);
      const std::scoped_lock lock(mutex_);
      connector_cv_.notify_one();
      notify_drained_locked();
      return;
    }
    closing_.fetch_sub(1, std::memory_order_seq_cst);
    if (waiting_.load() > 0) {
      const std::scoped_lock lock(mutex_);
      connector_cv_.notify_one();
    }
  }
  // A thread that came back promptly after its last such release is about to take this
  // connection again: waking a waiter now would only make it lose the race and sleep again, a
  // pair of context switches per checkout that halved throughput with 8 borrowers on 4
  // connections. The waiter is not forgotten: at handoff_after it wakes by itself, takes an
  // idle connection if one is left, and is due for the next one returned.
  const bool prompt = hint.owner == this && hint.prompt;
  hint =
      thread_hint{this, static_cast<int>(s->index), waiters_present ? steady_now_ns() : 0, prompt};
  checked_out_.fetch_sub(1, std::memory_order_relaxed);
  s->state.exchange(slot::idle, std::memory_order_seq_cst);
  if (!(waiters_present && prompt)) wake_head_waiter();
}

void core::note_return_gap() noexcept {
  if (hint.owner != this || hint.released_to_waiters_ns == 0) return;
  hint.prompt = steady_now_ns() - hint.released_to_waiters_ns < prompt_return_ns;
  hint.released_to_waiters_ns = 0;
}

void core::notify_drained_locked() noexcept {
  if (closed_.load()) drained_cv_.notify_all();
}

// Closes the connection in `s` (outside the mutex) and frees the slot. A waiter may now need a
// new connection, so the connector thread is woken.
void core::discard(slot* s, bool was_lent) noexcept {
  // Counted as returned before the slot is freed, so the slot's next connection is never counted
  // while this one still is (peak_checked_out must not overstate).
  if (was_lent) checked_out_.fetch_sub(1, std::memory_order_relaxed);
  close_connection(*s);  // counted in open_ until the server has let it go
  s->state.store(slot::empty, std::memory_order_release);
  open_.fetch_sub(1, std::memory_order_relaxed);
  const std::scoped_lock lock(mutex_);
  connector_cv_.notify_one();
  notify_drained_locked();
}

void core::close_connection(slot& s) noexcept {
  (void)s.conn.close_and_confirm(server_close_wait);
}

bool core::needs_connection_locked() const noexcept {
  if (open_.load() + closing_.load() >= capacity_) return false;
  return !waiters_.empty() || open_.load() < settings_.min_idle;
}

void core::connector_loop() {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (closed_.load()) return;
    if (!needs_connection_locked()) {
      connector_cv_.wait(lock);
      continue;
    }
    const auto now = steady_clock::now();
    if (now < next_connect_at_) {
      connector_cv_.wait_until(lock, next_connect_at_);
      continue;
    }
    slot* target = nullptr;
    for (int i = 0; i < capacity_ && target == nullptr; ++i) {
      slot& s = slots_[static_cast<std::size_t>(i)];
      int expected = slot::empty;
      if (s.state.compare_exchange_strong(expected, slot::reserved, std::memory_order_acquire)) {
        target = &s;
      }
    }
    if (target == nullptr) {  // every slot is busy being closed: wait for one
      connector_cv_.wait_for(lock, milliseconds(10));
      continue;
    }
    open_.fetch_add(1, std::memory_order_relaxed);
    const std::uint64_t id = next_id_.fetch_add(1, std::memory_order_relaxed) + 1;
    lock.unlock();

    std::string error;
    std::string sqlstate;
    try {
      target->conn = connector_->connect(settings_, id);
    } catch (const pg::connection_error& e) {
      error = e.what();  // pg errors never carry the password
      sqlstate = e.sqlstate();
    } catch (const std::exception& e) {
      error = e.what();  // pg errors never carry the password
    }

    if (error.empty()) {
      const std::int64_t created = now_ns();
      target->id = id;
      target->last_returned_ns.store(created, std::memory_order_relaxed);
      target->expires_ns = 0;
      if (settings_.recycle.count() > 0) {
        const double life = static_cast<double>(to_ns(settings_.recycle)) *
                            (1.0 - settings_.recycle_jitter * random_unit());
        target->expires_ns = created + static_cast<std::int64_t>(life);
      }
      connects_.fetch_add(1, std::memory_order_relaxed);
      lock.lock();
      backoff_ = milliseconds(0);
      next_connect_at_ = {};
      saturated_.store(false);
      last_connect_error_.clear();
      if (!waiters_.empty() && !closed_.load()) {
        target->state.store(slot::in_use, std::memory_order_release);
        note_peak(checked_out_.fetch_add(1, std::memory_order_relaxed) + 1);
        hand_off_locked(target);
      } else {
        target->state.store(slot::idle, std::memory_order_release);
      }
      continue;
    }

    target->conn = pg::connection{};
    target->state.store(slot::empty, std::memory_order_release);
    open_.fetch_sub(1, std::memory_order_relaxed);
    connect_failures_.fetch_add(1, std::memory_order_relaxed);
    const bool refused = pg::sqlstate_is_back_pressure(sqlstate);
    if (refused) refusals_.fetch_add(1, std::memory_order_relaxed);
    lock.lock();
    // Back off, growing and jittered, so a refusing or missing server is not hammered: the pool
    // keeps serving from the connections it holds meanwhile.
    backoff_ = backoff_.count() == 0 ? settings_.connect_backoff_initial
                                     : std::min(backoff_ * 2, settings_.connect_backoff_max);
    const auto delay = milliseconds(static_cast<std::int64_t>(
        static_cast<double>(backoff_.count()) * (0.5 + 0.5 * random_unit())));
    next_connect_at_ = steady_clock::now() + delay;
    if (refused) saturated_.store(true);
    last_connect_error_ = error;
    lock.unlock();
    log(log_level::warn, "pool",
        "pool '" + settings_.name +
            "': " + (refused ? "server refused a connection" : "connect failed") + " (" + error +
            "); holding " + std::to_string(open_.load()) + " connections, next attempt in " +
            std::to_string(delay.count()) + " ms");
    lock.lock();
  }
}

void core::housekeeper_loop() {
  // The housekeeper also keeps the pool's coarse clock: borrowing reads tick_ns_ instead of a
  // clock (a clock read costs more than the rest of a borrow). Its resolution bounds the
  // precision of pre_ping_window, leak_threshold, idle_timeout and recycle.
  const auto tick = std::min(std::max(settings_.pre_ping_window / 4, milliseconds(10)),
                             settings_.housekeeping_interval);
  auto next_pass = steady_clock::now() + settings_.housekeeping_interval;
  std::unique_lock lock(mutex_);
  while (!closed_.load()) {
    housekeeper_cv_.wait_for(lock, tick);
    if (closed_.load()) return;
    tick_ns_.store(coarse_now_ns(), std::memory_order_relaxed);
    if (steady_clock::now() < next_pass) continue;
    next_pass = steady_clock::now() + settings_.housekeeping_interval;
    lock.unlock();
    housekeep_once();
    lock.lock();
  }
}

void core::housekeep_once() {
  if (!clock_) tick_ns_.store(coarse_now_ns(), std::memory_order_relaxed);
  const std::int64_t now = now_ns();
  const std::int64_t idle_limit = to_ns(settings_.idle_timeout);
  const std::int64_t leak_limit = to_ns(settings_.leak_threshold);
  for (int i = 0; i < capacity_; ++i) {
    slot& s = slots_[static_cast<std::size_t>(i)];
    const int state = s.state.load(std::memory_order_acquire);
    if (state == slot::in_use && leak_limit > 0) {
      const std::int64_t started = s.lease_start_ns.load(std::memory_order_relaxed);
      if (started == 0) continue;  // between owners: no lease is out
      const std::int64_t held = now - started;
      if (held > leak_limit && !s.leak_reported.exchange(true)) {
        leaks_.fetch_add(1, std::memory_order_relaxed);
        const std::source_location where = s.borrower.load(std::memory_order_relaxed);
        char held_text[32];
        std::snprintf(held_text, sizeof held_text, "%.1f s", static_cast<double>(held) / 1e9);
        log(log_level::warn, "pool",
            "pool '" + settings_.name + "': connection " + std::to_string(s.id) +
                " possibly leaked: held for " + held_text + " by " + where.file_name() + ":" +
                std::to_string(where.line()) + " (" + where.function_name() + ")");
      }
      continue;
    }
    if (state != slot::idle) continue;
    int expected = slot::idle;
    if (!s.state.compare_exchange_strong(expected, slot::reserved, std::memory_order_acquire))
      continue;
    const bool expired = s.expires_ns != 0 && now >= s.expires_ns;
    const std::int64_t idle_for = now - s.last_returned_ns.load(std::memory_order_relaxed);
    const bool idle_too_long =
        idle_limit > 0 && idle_for >= idle_limit && open_.load() > settings_.min_idle;
    // An overflow connection nobody has borrowed for its grace: the pool goes back to `size`.
    const bool overflow_done = open_.load() > settings_.size &&
                               idle_for >= to_ns(settings_.overflow_idle_grace) &&
                               open_.load() > settings_.min_idle;
    if (expired || idle_too_long || overflow_done) {
      (expired ? recycles_ : idle_closes_).fetch_add(1, std::memory_order_relaxed);
      discard(&s, false);
      continue;
    }
    s.state.exchange(slot::idle, std::memory_order_seq_cst);
    wake_head_waiter();
  }
  const std::scoped_lock lock(mutex_);
  if (needs_connection_locked()) connector_cv_.notify_one();
  // Nothing is waiting for a connection and the back-off has passed: no longer saturated.
  if (saturated_.load() && waiters_.empty() && steady_clock::now() >= next_connect_at_) {
    saturated_.store(false);
  }
}

pool_stats core::stats() const {
  pool_stats st;
  st.name = settings_.name;
  st.size = settings_.size;
  st.max_overflow = settings_.max_overflow;
  st.max = capacity_;
  std::uint64_t checkouts = 0;
  for (int i = 0; i < capacity_; ++i) {
    const slot& s = slots_[static_cast<std::size_t>(i)];
    checkouts += s.checkouts.load(std::memory_order_relaxed);
    if (s.state.load(std::memory_order_relaxed) == slot::idle) ++st.checked_in;
  }
  st.open = open_.load();
  st.checked_out = checked_out_.load();
  st.overflow = std::max(0, st.open - settings_.size);
  st.waiting = waiting_.load();
  st.peak_checked_out = peak_checked_out_.load();
  st.saturated = saturated_.load();
  st.closed = closed_.load();
  st.connects = connects_.load();
  st.connect_failures = connect_failures_.load();
  st.server_refusals = refusals_.load();
  st.checkouts = checkouts;
  st.timeouts = timeouts_.load();
  st.invalidations = invalidations_.load();
  st.recycles = recycles_.load();
  st.idle_closes = idle_closes_.load();
  st.pings_failed = pings_failed_.load();
  st.leaks = leaks_.load();

  const std::scoped_lock lock(mutex_);
  st.last_connect_error = last_connect_error_;
  // Borrowers served without waiting never took the lock: they count as zero waits. (The
  // recorded waits include acquire() calls that timed out, which lent nothing; timeouts_ only
  // changes under the mutex, like slow_checkouts_.)
  const std::uint64_t timed_out = timeouts_.load(std::memory_order_relaxed);
  const std::uint64_t waited_and_served =
      slow_checkouts_ > timed_out ? slow_checkouts_ - timed_out : 0;
  const std::uint64_t fast = checkouts > waited_and_served ? checkouts - waited_and_served : 0;
  std::uint64_t total = fast;
  for (std::size_t b = 0; b < wait_buckets_.size(); ++b) {
    // In the exported histogram they belong to the first bucket (waits <= 0.05 ms).
    st.wait_bucket_counts[b] = wait_buckets_[b] + (b == 0 ? fast : 0);
    total += wait_buckets_[b];
  }
  st.wait_sum_ms = wait_sum_ms_;
  st.wait_max_ms = wait_max_ms_;
  auto percentile = [&](double q) {
    if (total == 0) return 0.0;
    const double rank = q * static_cast<double>(total);
    // The zero waits are exactly zero: interpolating them across the first bucket would report
    // a wait (up to 0.05 ms) when most borrowers never waited at all.
    if (rank <= static_cast<double>(fast)) return 0.0;
    double seen = static_cast<double>(fast);
    for (std::size_t b = 0; b < wait_buckets_.size(); ++b) {
      const double count = static_cast<double>(wait_buckets_[b]);
      if (count > 0 && seen + count >= rank) {
        // Interpolate inside the bucket; no wait exceeded the recorded maximum.
        const double hi = std::min(wait_bucket_bounds_ms[b], wait_max_ms_);
        const double lo = b == 0 ? 0.0 : std::min(wait_bucket_bounds_ms[b - 1], hi);
        return lo + (hi - lo) * (rank - seen) / count;
      }
      seen += count;
    }
    return wait_max_ms_;
  };
  st.wait_p50_ms = percentile(0.50);
  st.wait_p99_ms = percentile(0.99);
  return st;
}

int core::close(milliseconds grace) {
  {
    std::unique_lock lock(mutex_);
    if (!closed_.exchange(true)) {
      for (waiter* w : waiters_)
        w->cv.notify_one();
      connector_cv_.notify_all();
      housekeeper_cv_.notify_all();
    }
  }
  if (connector_thread_.joinable()) connector_thread_.join();
  if (housekeeper_thread_.joinable()) housekeeper_thread_.join();
  // Close idle connections now; lent ones are closed when they come back.
  for (int i = 0; i < capacity_; ++i) {
    slot& s = slots_[static_cast<std::size_t>(i)];
    int expected = slot::idle;
    if (s.state.compare_exchange_strong(expected, slot::reserved, std::memory_order_acquire)) {
      close_connection(s);
      s.state.store(slot::empty, std::memory_order_release);
      open_.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  std::unique_lock lock(mutex_);
  if (grace.count() > 0) {
    drained_cv_.wait_for(lock, grace, [this] { return checked_out_.load() == 0; });
  }
  return checked_out_.load();
}

void core::drop_owner(core* c) noexcept {
  c->close(milliseconds(0));
  if (c->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1)
    delete c;  // NOLINT(cppcoreguidelines-owning-memory)
}

void core::drop_lease(core* c) noexcept {
  if (c->refs_.fetch_sub(2, std::memory_order_acq_rel) == 2)
    delete c;  // NOLINT(cppcoreguidelines-owning-memory)
}

}  // namespace detail

// ---- lease -------------------------------------------------------------------------------

lease::lease(lease&& other) noexcept
    : core_(std::exchange(other.core_, nullptr)),
      slot_(std::exchange(other.slot_, nullptr)),
      invalid_(std::exchange(other.invalid_, false)) {}

lease& lease::operator=(lease&& other) noexcept {
  if (this != &other) {
    release();
    core_ = std::exchange(other.core_, nullptr);
    slot_ = std::exchange(other.slot_, nullptr);
    invalid_ = std::exchange(other.invalid_, false);
  }
  return *this;
}

pg::connection& lease::conn() const noexcept {
  return slot_->conn;
}

std::uint64_t lease::connection_id() const noexcept {
  return slot_ != nullptr ? slot_->id : 0;
}

void lease::release() noexcept {
  if (slot_ == nullptr) return;
  detail::core* c = std::exchange(core_, nullptr);
  detail::slot* s = std::exchange(slot_, nullptr);
  c->release(s, std::exchange(invalid_, false));
  detail::core::drop_lease(c);  // last: may delete the core when the pool is gone
}

// ---- pool --------------------------------------------------------------------------------

pool::pool(settings s, std::shared_ptr<connector> conn) : pool(std::move(s), std::move(conn), {}) {}

pool::pool(settings s, std::shared_ptr<connector> conn,
           std::function<std::chrono::steady_clock::time_point()> clock) {
  validate(s);
  if (!conn) throw settings_error("pool '" + s.name + "': no connector");
  auto owned = std::make_unique<detail::core>(std::move(s), std::move(conn), std::move(clock));
  owned->start();
  core_ = owned.release();  // from here on owned through refs_ (see detail::core)
}

pool::~pool() {
  detail::core::drop_owner(core_);
}

lease pool::acquire(std::source_location where) {
  return core_->acquire(core_->config().timeout, where);
}

lease pool::acquire_for(std::chrono::milliseconds timeout, std::source_location where) {
  return core_->acquire(timeout, where);
}

pool_stats pool::stats() const {
  return core_->stats();
}
const settings& pool::config() const noexcept {
  return core_->config();
}
const std::string& pool::name() const noexcept {
  return core_->config().name;
}
int pool::close(std::chrono::milliseconds grace) {
  return core_->close(grace);
}
void pool::housekeep_now() {
  core_->housekeep_once();
}

}  // namespace sluice::pool
