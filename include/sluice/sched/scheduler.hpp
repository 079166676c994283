#pragma once

// The scheduler engine: check cycles that claim due tasks with FOR UPDATE SKIP LOCKED, a fixed
// set of worker threads running registered handlers, fenced completion, retries with backoff,
// heartbeats, leader election and rescue of dead nodes' tasks. Several schedulers (in one
// process or many) may share one database.
//
// Connections: everything the engine itself does (cycles, completions, heartbeats) goes
// through `lane`, a small pool reserved for it, so handlers that exhaust their own pools cannot
// stop the scheduler from recording its work. One more connection is held for LISTEN.
//
// Thread-safety: handle() before start(); everything else is thread-safe.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "sluice/error.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/sched/task.hpp"

namespace sluice::sched {

struct scheduler_settings {
  std::string schema = "sluice";
  std::string node_id;                     // empty: "<host>-<pid>-<random>"
  int workers = 8;                         // handler threads
  std::map<std::string, int> concurrency;  // per task type; unlisted types may use every worker
  int claim_batch = 500;                   // most tasks claimed per type per cycle
  // Tasks claimed beyond the free workers and held in a local queue, so workers never wait for a
  // cycle: at least `prefetch`, and while a backlog lasts (claims come back full) the engine
  // doubles it each cycle up to `max_prefetch`, halving it again once the backlog is gone. A
  // higher ceiling drains a backlog faster; a lower one spreads it more evenly over nodes.
  int prefetch = 8;
  int max_prefetch = 500;
  std::chrono::milliseconds poll_interval = 1s;   // longest sleep while work may be due
  std::chrono::milliseconds idle_poll_max = 60s;  // idle nodes back off up to this
  // An idle node's whole load is one transaction per heartbeat (0.17 tx/s). A dead node is
  // rescued when its row expires: the leader watches the others' heartbeats (NOTIFY) and runs
  // its own at that moment (sched/liveness.hpp), within node_expiry of the death.
  std::chrono::milliseconds heartbeat_interval = 6s;
  std::chrono::milliseconds node_expiry = 9s;  // a node silent this long is dead; rescued
  std::chrono::milliseconds stop_grace = 10s;  // stop(): how long running handlers may finish
  std::chrono::milliseconds stuck_grace =
      5s;                                    // after a timeout, how long a handler may take to stop
  std::chrono::hours run_retention{24 * 7};  // task_runs older than this are pruned; 0 = keep
  std::chrono::hours cycle_retention{24 * 3};  // cycles older than this are pruned; 0 = keep
  // Finished one-shot tasks (succeeded, failed, cancelled) untouched this long are deleted, which
  // frees their unique names; their runs follow run_retention. 0 = keep.
  std::chrono::hours task_retention{24 * 7};
  // How often the leader prunes (the first time a minute after start, or sooner).
  std::chrono::milliseconds prune_interval = std::chrono::minutes(10);
  bool listen = true;           // LISTEN for new tasks (off: poll only)
  std::string listen_conninfo;  // empty: the lane pool's conninfo
  int connection_budget = 0;    // registered in `nodes` for fleet budget checks
  // Called once (from the heartbeat thread) when another process has registered under this node
  // id after this one: this scheduler then claims nothing more and its running tasks cannot
  // complete. The daemon stops with an error; an embedder should stop the scheduler too.
  std::function<void(const std::string& message)> on_superseded;
};

// start() found another live process using the same node id.
class node_id_conflict : public sluice::error {
 public:
  using sluice::error::error;
};

// Cooperative cancellation: set when the task's timeout passes or the scheduler stops.
class cancel_token {
 public:
  [[nodiscard]] bool cancelled() const noexcept {
    return cancelled_.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::chrono::steady_clock::time_point deadline() const noexcept {
    return deadline_;
  }
  // Sleeps up to `d`; returns false early when cancelled.
  bool sleep_for(std::chrono::milliseconds d) const;
  // Runs `fn` (from the scheduler's thread) when the token is cancelled, at once if it already
  // is. Used to interrupt blocking work: PQcancel, killing a process group, aborting a transfer.
  void on_cancel(std::function<void()> fn) const;

  // Called by the engine: marks the token and runs the callbacks once.
  void cancel();
  void set_deadline(std::chrono::steady_clock::time_point d) noexcept { deadline_ = d; }

 private:
  std::atomic<bool> cancelled_{false};
  std::chrono::steady_clock::time_point deadline_{};
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  mutable std::vector<std::function<void()>> callbacks_;  // guarded by mutex_
};

class task_context {
 public:
  task_context(const task& t, time_point fire_time, const cancel_token& token,
               pool::pool_manager* pools, std::function<bool(pg::connection&)> complete_in)
      : task_(t),
        fire_time_(fire_time),
        token_(token),
        pools_(pools),
        complete_in_(std::move(complete_in)) {}

  [[nodiscard]] const task& info() const noexcept { return task_; }
  [[nodiscard]] const std::string& payload() const noexcept { return task_.payload; }
  [[nodiscard]] time_point fire_time() const noexcept { return fire_time_; }
  [[nodiscard]] const cancel_token& cancel() const noexcept { return token_; }
  // The process's pools (null when the scheduler was given none). Throws std::logic_error if null.
  [[nodiscard]] pool::pool_manager& pools() const;

  // Transactional completion: records this run as succeeded inside `conn`'s open transaction
  // (which must be on the scheduler's database), fenced by the claim token. Returns false when
  // the claim is stale (the task was rescued or timed out): roll the transaction back then.
  // If it returns true and the transaction commits, the handler's writes and the completion
  // commit together exactly once.
  bool complete_in(pg::connection& conn);
  [[nodiscard]] bool completed_in_transaction() const noexcept { return completed_in_tx_; }

  // A JSON object recorded with the run (response status, exit code, ...).
  void set_detail(std::string json) { detail_ = std::move(json); }
  [[nodiscard]] const std::string& detail() const noexcept { return detail_; }

 private:
  const task& task_;
  time_point fire_time_;
  const cancel_token& token_;
  pool::pool_manager* pools_;
  std::function<bool(pg::connection&)> complete_in_;
  bool completed_in_tx_ = false;
  std::string detail_;
};

// What a handler reports. Throwing counts as failure with the exception's message.
struct handler_result {
  bool ok = true;
  std::string error;
  static handler_result success() { return {}; }
  static handler_result failure(std::string message) { return {false, std::move(message)}; }
};

using handler = std::function<handler_result(task_context&)>;

enum class scheduler_state { stopped, running, draining };
[[nodiscard]] std::string_view to_string(scheduler_state s) noexcept;

struct scheduler_status {
  scheduler_state state = scheduler_state::stopped;
  std::string node_id;
  bool leader = false;
  std::uint64_t cycles = 0;  // cycles run by this node since start
  std::uint64_t cycle_errors = 0;
  std::chrono::milliseconds current_poll{0};
  std::chrono::steady_clock::time_point last_cycle_at{};
  std::chrono::steady_clock::time_point started_at{};
  std::string last_error;
  bool superseded = false;  // another process took this node id over; nothing more is claimed
  // Why the LISTEN connection does not deliver notifications (through PgBouncer, say), with the
  // fix; empty when it does or LISTEN is off. New tasks are then found by polling only.
  std::string listen_problem;
  bool listen_delivering = false;  // the LISTEN connection received this node's own check
  int workers = 0;
  int running = 0;  // handlers running now
  int stuck = 0;    // handlers past timeout + stuck_grace that have not returned
  std::map<std::string, int> running_by_type;
  // Runs this node recorded since start, by outcome (failed excludes timed_out).
  std::uint64_t succeeded = 0, failed = 0, timed_out = 0, fenced = 0, rescued = 0, skipped = 0,
                claimed = 0;
};

class scheduler {
 public:
  // `lane` carries the engine's own statements; `pools` is offered to handlers (may be null).
  scheduler(scheduler_settings s, pool::pool& lane, pool::pool_manager* pools = nullptr);
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;
  scheduler(scheduler&&) = delete;
  scheduler& operator=(scheduler&&) = delete;
  ~scheduler();  // stop()

  // Registers the handler for a task type. Only before start().
  void handle(const std::string& type, handler fn);

  // Checks the schema, registers the node and starts the threads. Each start is a new
  // incarnation of the node id: claims left by an earlier process under the same id (killed and
  // restarted) go back to the queue at once. Throws node_id_conflict when another live process
  // uses the id (on another machine this can take up to that process's node expiry to tell),
  // and on database errors or a schema that is missing or too new.
  void start();
  // Stops claiming, lets running handlers finish up to stop_grace, cancels the rest and hands
  // their claims back so another node takes them at once; records what completed; deregisters.
  // Idempotent, safe before start(), returns when every thread has stopped.
  void stop();

  [[nodiscard]] scheduler_status status() const;
  [[nodiscard]] const std::string& node_id() const noexcept;
  [[nodiscard]] store& tasks() noexcept;
  [[nodiscard]] const scheduler_settings& config() const noexcept;

  // Wakes the check cycle now (after creating due tasks in-process, for instance).
  void wake();

 private:
  class impl;
  std::shared_ptr<impl> impl_;  // shared with the engine's threads
};

}  // namespace sluice::sched
