// The scheduler engine. Threads:
//   claimer    claims due tasks into the local queue (one statement per cycle), watches timeouts
//   completer  writes outcomes in batches on its own connection (sched/completer.cpp)
//   workers    run handlers (a fixed number)
//   listener   LISTENs for new tasks and other nodes' heartbeats (sched/listener.cpp)
//   heartbeat  renews the node row and the leader lease; the leader rescues dead nodes' tasks
//              (sched/liveness.cpp)
// The claimer and the completer each commit their own statement with its cycle row and counters,
// so the log and the stats always agree with task_runs; what a run's outcome does to its task is
// decided in sched/outcome.cpp. docs/scheduler.md draws the whole picture.

#include "sluice/sched/scheduler.hpp"

#include <algorithm>
#include <deque>
#include <list>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include <unistd.h>

#include "sched/claimer.hpp"
#include "sched/completer.hpp"
#include "sched/listener.hpp"
#include "sched/liveness.hpp"
#include "sched/node_identity.hpp"
#include "sched/outcome.hpp"
#include "sched/queries.hpp"
#include "sched/util.hpp"
#include "sluice/log.hpp"
#include "sluice/sched/backoff.hpp"
#include "sluice/version.hpp"

namespace sluice::sched {

using detail::json_quote;
using detail::outcome_row;
using detail::with_schema;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using std::chrono::system_clock;

std::string_view to_string(scheduler_state s) noexcept {
  switch (s) {
    case scheduler_state::stopped:
      return "stopped";
    case scheduler_state::running:
      return "running";
    case scheduler_state::draining:
      return "draining";
  }
  return "?";
}

// ---- cancel_token / task_context -----------------------------------------------------------

bool cancel_token::sleep_for(milliseconds d) const {
  std::unique_lock lock(mutex_);
  return !cv_.wait_for(lock, d, [this] { return cancelled(); });
}

void cancel_token::on_cancel(std::function<void()> fn) const {
  {
    const std::scoped_lock lock(mutex_);
    if (!cancelled()) {
      callbacks_.push_back(std::move(fn));
      return;
    }
  }
  fn();
}

void cancel_token::cancel() {
  std::vector<std::function<void()>> callbacks;
  {
    const std::scoped_lock lock(mutex_);
    if (cancelled_.exchange(true)) return;
    callbacks.swap(callbacks_);
  }
  cv_.notify_all();
  for (auto& fn : callbacks) {
    try {
      fn();
    } catch (const std::exception& e) {
      log(log_level::warn, "scheduler", std::string("cancel callback failed: ") + e.what());
    }
  }
}

pool::pool_manager& task_context::pools() const {
  if (pools_ == nullptr)
    throw std::logic_error("this scheduler was started without a pool manager");
  return *pools_;
}

bool task_context::complete_in(pg::connection& conn) {
  if (completed_in_tx_) return true;
  completed_in_tx_ = complete_in_(conn);
  return completed_in_tx_;
}

// ---- engine ---------------------------------------------------------------------------------

namespace {

struct running_task {
  task t;
  time_point fire_time;
  time_point started_wall{};
  steady_clock::time_point deadline{};
  cancel_token token;
  bool started = false;
  bool cancel_sent = false;
  bool abandoned = false;  // declared stuck; its outcome was already recorded as timed out
  std::thread::id worker;  // the worker thread running it (once started)
  bool stopping = false;   // cancelled by stop(), not by its deadline: handed back, not charged
};

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::uint64_t random_u64() {
  thread_local std::mt19937_64 gen{std::random_device{}()};
  return gen();
}

}  // namespace

class scheduler::impl : public std::enable_shared_from_this<scheduler::impl> {
 public:
  impl(scheduler_settings s, pool::pool& lane, pool::pool_manager* pools)
      : settings_(std::move(s)), lane_(lane), pools_(pools), store_(lane, settings_.schema) {
    if (settings_.workers < 1 || settings_.workers > 4096)
      throw std::invalid_argument("scheduler: workers must be 1-4096");
    if (settings_.claim_batch < 1)
      throw std::invalid_argument("scheduler: claim_batch must be at least 1");
    if (settings_.prefetch < 0)
      throw std::invalid_argument("scheduler: prefetch must not be negative");
    if (settings_.max_prefetch < settings_.prefetch)
      throw std::invalid_argument("scheduler: max_prefetch must be at least prefetch");
    prefetch_now_ = settings_.prefetch;
    if (settings_.poll_interval.count() <= 0)
      throw std::invalid_argument("scheduler: poll_interval must be positive");
    if (settings_.heartbeat_interval.count() <= 0 ||
        settings_.node_expiry <= settings_.heartbeat_interval) {
      throw std::invalid_argument("scheduler: node_expiry must be longer than heartbeat_interval");
    }
    if (settings_.prune_interval.count() <= 0)
      throw std::invalid_argument("scheduler: prune_interval must be positive");
    if (settings_.run_retention.count() < 0 || settings_.cycle_retention.count() < 0 ||
        settings_.task_retention.count() < 0)
      throw std::invalid_argument("scheduler: retentions must not be negative (0 keeps all)");
    for (const auto& [type, n] : settings_.concurrency) {
      if (n < 1)
        throw std::invalid_argument("scheduler: concurrency of '" + type + "' must be at least 1");
    }
    host_ = host_name();
    if (settings_.node_id.empty()) {
      char suffix[16];
      std::snprintf(suffix, sizeof suffix, "%04x", static_cast<unsigned>(random_u64() & 0xffff));
      settings_.node_id = host_ + "-" + std::to_string(getpid()) + "-" + suffix;
    }
    shard_ = static_cast<int>(random_u64() % 16);
    // Positive and never 0 (the value rows written before schema version 3 carry).
    incarnation_ = static_cast<std::int64_t>(random_u64() >> 1) | 1;
    process_key_ = detail::own_process_key();
    const auto& sc = settings_.schema;
    sql_complete_in_handler_ = with_schema(queries::complete_in_handler, sc);
  }

  void handle(const std::string& type, handler fn) {
    const std::scoped_lock lock(mutex_);
    if (state_ != scheduler_state::stopped || started_once_)
      throw std::logic_error("scheduler: handle() after start()");
    task_spec probe;
    probe.type = type;
    probe.validate();
    handlers_[type] = std::move(fn);
  }

  void start() {
    {
      const std::scoped_lock lock(mutex_);
      if (started_once_) throw std::logic_error("scheduler: start() called twice");
      if (handlers_.empty()) throw std::logic_error("scheduler: no handlers registered");
      started_once_ = true;
    }
    store_.check_schema(true);
    types_.clear();
    for (const auto& [type, fn] : handlers_)
      types_.push_back(type);
    types_array_ = "{";
    for (const auto& t : types_)
      types_array_ += (types_array_.size() > 1 ? "," : "") + json_quote(t);
    types_array_ += "}";
    liveness_ = std::make_unique<detail::liveness>(
        lane_, store_,
        detail::liveness::settings{.schema = settings_.schema,
                                   .node_id = settings_.node_id,
                                   .host = host_,
                                   .process_key = process_key_,
                                   .incarnation = incarnation_,
                                   .stats_shard = shard_,
                                   .connection_budget = settings_.connection_budget,
                                   .heartbeat_interval = settings_.heartbeat_interval,
                                   .node_expiry = settings_.node_expiry,
                                   .prune_interval = settings_.prune_interval,
                                   .retention = {.runs = settings_.run_retention,
                                                 .cycles = settings_.cycle_retention,
                                                 .finished_tasks = settings_.task_retention},
                                   .types_array = types_array_},
        liveness_hooks());
    // Throws if another live process uses this node id.
    const int taken = liveness_->register_node();
    {
      const std::scoped_lock lock(mutex_);
      counters_.rescued += static_cast<std::uint64_t>(taken);
    }
    liveness_->heartbeat_once();  // leadership; throws if the database is unusable
    {
      const std::scoped_lock lock(mutex_);
      state_ = scheduler_state::running;
      started_at_ = steady_clock::now();
      current_poll_ = settings_.poll_interval;
    }
    // Before any thread of the engine starts: the claimer reads listener_ (delivering()).
    if (settings_.listen) {
      listener_ = std::make_unique<detail::listener>(
          lane_,
          detail::listener::settings{
              .conninfo = settings_.listen_conninfo.empty() ? lane_.config().conninfo
                                                            : settings_.listen_conninfo,
              .application_name = lane_.config().effective_application_name() + "/listen",
              .connect_timeout = lane_.config().connect_timeout,
              .tasks_channel = settings_.schema + ".tasks",
              .nodes_channel = liveness_->nodes_channel(),
              .incarnation = incarnation_,
              .poll_interval = settings_.poll_interval},
          detail::listener::hooks{
              .wake = [this] { wake(); },
              .heartbeat = [this](const std::string& node,
                                  milliseconds expiry) { liveness_->heard(node, expiry); }});
      listener_->start();
    }
    auto self = shared_from_this();
    // Its counters use a stats shard of their own, so the claimer's and the completer's
    // statements never wait for each other's row locks.
    completer_ = std::make_unique<detail::completer>(
        lane_,
        detail::completer::settings{.schema = settings_.schema,
                                    .node_id = settings_.node_id,
                                    .stats_shard = shard_ + 16,
                                    .retry_interval = settings_.poll_interval},
        [this](const detail::completion_report& r) { on_completion(r); });
    completer_->start();
    claimer_ = std::make_unique<detail::claimer>(
        lane_, *completer_,
        detail::claimer::settings{.schema = settings_.schema,
                                  .node_id = settings_.node_id,
                                  .incarnation = incarnation_,
                                  .shard = shard_,
                                  .types_array = types_array_},
        detail::claimer::hooks{
            .deliver = [this](std::vector<detail::claimed_task>& c) { hand_to_workers(c); },
            .held = [this] { return held_ids(); },
            .due_hint = [this] { return usable_due_hint(); }});
    for (int i = 0; i < settings_.workers; ++i)
      workers_.emplace_back([self] { self->worker_loop(); });
    cycle_thread_ = std::thread([self] { self->cycle_loop(); });
    liveness_->start();
    log(log_level::info, "scheduler",
        "node " + settings_.node_id + " started with " + std::to_string(settings_.workers) +
            " workers for " + std::to_string(types_.size()) + " task types");
  }

  void stop() {
    {
      std::unique_lock lock(mutex_);
      if (state_ != scheduler_state::running) {
        // Not started, or another stop() is in progress / done: wait for it to finish.
        stopped_cv_.wait(lock, [this] { return !stop_in_progress_; });
        return;
      }
      state_ = scheduler_state::draining;
      stop_in_progress_ = true;
      // Tasks claimed but not started go straight back to the queue.
      release_queued_locked();
      wake_locked();
    }
    log(log_level::info, "scheduler",
        "node " + settings_.node_id + " draining: waiting up to " +
            std::to_string(settings_.stop_grace.count()) + " ms for running tasks");
    const auto grace_end = steady_clock::now() + settings_.stop_grace;
    {
      std::unique_lock lock(mutex_);
      idle_cv_.wait_until(lock, grace_end, [this] { return live_running_locked() == 0; });
      if (live_running_locked() > 0) {
        for (auto& rt : running_)
          rt->stopping = true;
        std::vector<std::shared_ptr<running_task>> to_cancel(running_.begin(), running_.end());
        lock.unlock();  // cancellation callbacks may block briefly (PQcancel)
        for (auto& rt : to_cancel)
          rt->token.cancel();
        lock.lock();
        idle_cv_.wait_for(lock, std::min(settings_.stuck_grace, milliseconds(2000)),
                          [this] { return live_running_locked() == 0; });
        // Whatever still runs is handed back: another node takes it now, and the late outcome
        // of this one will be refused by the claim token.
        for (auto& rt : running_) {
          if (!rt->abandoned) {
            rt->abandoned = true;
            stuck_worker_ids_.insert(rt->worker);
            completer_->release(rt->t.id, rt->t.claim_token);
          }
        }
      }
      workers_stop_ = true;
      claimer_stop_ = true;
      // Anything still queued (claimed after the queue was emptied above) goes back too.
      release_queued_locked();
      wake_locked();
    }
    worker_cv_.notify_all();
    if (cycle_thread_.joinable()) cycle_thread_.join();
    // The claimer is gone, so nothing is added any more: the completer writes what is left.
    completer_->stop();
    if (listener_) listener_->stop();
    std::set<std::thread::id> stuck;
    {
      const std::scoped_lock lock(mutex_);
      stuck = stuck_worker_ids_;
    }
    for (auto& w : workers_) {
      // A worker stuck in a handler that ignores cancellation cannot be joined: let it finish on
      // its own (it holds the engine alive and touches nothing but the engine's memory).
      if (w.joinable()) stuck.count(w.get_id()) != 0 ? w.detach() : w.join();
    }
    liveness_->stop();  // the last heartbeat, then the node resigns and deregisters
    {
      const std::scoped_lock lock(mutex_);
      state_ = scheduler_state::stopped;
      stop_in_progress_ = false;
      leader_ = false;
    }
    stopped_cv_.notify_all();
    log(log_level::info, "scheduler", "node " + settings_.node_id + " stopped");
  }

  void wake() {
    const std::scoped_lock lock(mutex_);
    wake_locked();
  }

  scheduler_status status() const {
    const std::scoped_lock lock(mutex_);
    scheduler_status st = counters_;
    st.state = state_;
    st.node_id = settings_.node_id;
    st.leader = leader_;
    st.current_poll = current_poll_;
    st.last_cycle_at = last_cycle_at_;
    st.started_at = started_at_;
    st.last_error = last_error_.empty() ? completion_error_ : last_error_;
    st.superseded = superseded_.load();
    st.listen_problem = listener_ ? listener_->problem() : std::string();
    st.listen_delivering = listener_ && listener_->delivering() && st.listen_problem.empty();
    if (st.superseded && st.last_error.empty()) st.last_error = superseded_message_;
    st.workers = settings_.workers;
    st.running = 0;
    st.stuck = 0;
    for (const auto& rt : running_) {
      if (rt->abandoned) {
        ++st.stuck;
      } else {
        ++st.running;
        ++st.running_by_type[rt->t.type];
      }
    }
    return st;
  }

  store& tasks() { return store_; }
  const scheduler_settings& config() const { return settings_; }
  const std::string& node_id() const { return settings_.node_id; }

 private:
  detail::liveness::hooks liveness_hooks() {
    return {
        .draining =
            [this] {
              const std::scoped_lock lock(mutex_);
              return state_ == scheduler_state::draining;
            },
        .rescued =
            [this](int n) {
              const std::scoped_lock lock(mutex_);
              counters_.rescued += static_cast<std::uint64_t>(n);
              wake_locked();
            },
        // The heartbeat's look at the queue: the safety net for a notification that never came
        // (and, while LISTEN works, the only look an idle node takes between its idle polls).
        .next_due =
            [this](std::optional<time_point> due) {
              const auto now = system_clock::now();
              const std::scoped_lock lock(mutex_);
              due_hint_ = due;
              due_hint_known_ = true;
              if (!due) return;
              if (*due <= now) {
                wake_locked();
                return;
              }
              const auto at = steady_clock::now() +
                              std::chrono::duration_cast<steady_clock::duration>(*due - now);
              if (at < next_wake_) {
                next_wake_ = at;
                cycle_cv_.notify_all();
              }
            },
        // It stops claiming and says so, and the embedder (the daemon) decides what to do.
        .superseded =
            [this](const std::string& message) {
              superseded_ = true;
              {
                const std::scoped_lock lock(mutex_);
                last_error_ = message;
                superseded_message_ = message;
                leader_ = false;
                release_queued_locked();
              }
              if (settings_.on_superseded) settings_.on_superseded(message);
            },
        // Claimed but not started: back to the queue (a release is fenced, so one that was
        // rescued meanwhile is refused and stays with its new owner). Running handlers of a node
        // declared dead are cancelled: their tasks run elsewhere now, and their outcome would be
        // refused anyway.
        .lapsed =
            [this](bool dead) {
              std::vector<std::shared_ptr<running_task>> to_cancel;
              {
                const std::scoped_lock lock(mutex_);
                release_queued_locked();
                if (dead) {
                  for (auto& rt : running_)
                    if (!rt->abandoned && !rt->cancel_sent) to_cancel.push_back(rt);
                }
                wake_locked();
              }
              for (auto& rt : to_cancel)
                rt->token.cancel();
            },
        .leadership =
            [this](bool leader) {
              const std::scoped_lock lock(mutex_);
              leader_ = leader;
            },
    };
  }

  int limit_for(const std::string& type) const {
    const auto it = settings_.concurrency.find(type);
    return it == settings_.concurrency.end() ? settings_.workers
                                             : std::min(it->second, settings_.workers);
  }

  void wake_locked() {
    wake_ = true;
    cycle_cv_.notify_one();
  }

  // Claimed but not started: handed back without using up an attempt.
  void release_queued_locked() {
    for (auto& [type, q] : queued_) {
      for (auto& rt : q)
        completer_->release(rt->t.id, rt->t.claim_token);
      q.clear();
    }
  }

  // A batch of the completer committed (or failed and will be retried).
  void on_completion(const detail::completion_report& r) {
    const std::scoped_lock lock(mutex_);
    ++counters_.cycles;
    last_cycle_at_ = steady_clock::now();
    if (!r.error.empty()) {
      ++counters_.cycle_errors;
      if (r.error != completion_error_)
        log(log_level::error, "scheduler", "writing outcomes failed: " + r.error);
      completion_error_ = r.error;
      return;
    }
    completion_error_.clear();
    // The written outcomes no longer hold room (see claim_limits_locked).
    if (more_due_) wake_locked();
    for (const auto& [type, tc] : r.by_type) {
      counters_.succeeded += static_cast<std::uint64_t>(tc.succeeded);
      counters_.failed += static_cast<std::uint64_t>(tc.failed - tc.timed_out);
      counters_.timed_out += static_cast<std::uint64_t>(tc.timed_out);
      counters_.fenced += static_cast<std::uint64_t>(tc.fenced);
      counters_.skipped += static_cast<std::uint64_t>(tc.skipped);
    }
  }

  int live_running_locked() const {
    int n = 0;
    for (const auto& rt : running_)
      n += rt->abandoned ? 0 : 1;
    return n;
  }

  // ---- workers ----

  void worker_loop() {
    for (;;) {
      std::shared_ptr<running_task> rt;
      handler fn;
      {
        std::unique_lock lock(mutex_);
        worker_cv_.wait(lock,
                        [&] { return workers_stop_ || (rt = next_queued_locked()) != nullptr; });
        if (!rt) return;
        rt->started = true;
        rt->worker = std::this_thread::get_id();
        rt->started_wall = system_clock::now();
        rt->deadline = steady_clock::now() + milliseconds(rt->t.timeout_ms);
        rt->token.set_deadline(rt->deadline);
        running_.push_back(rt);
        fn = handlers_.at(rt->t.type);
        // The cycle thread watches deadlines: wake it only when this one comes before the time
        // it sleeps until (a wake per started task would be a context switch per task).
        if (rt->deadline < cycle_sleeps_until_) cycle_cv_.notify_one();
      }
      bool ok = false;
      std::string error;
      std::string detail;
      bool completed_in_tx = false;
      {
        task_context ctx(rt->t, rt->fire_time, rt->token, pools_,
                         [this, rt](pg::connection& c) { return complete_in_handler(*rt, c); });
        try {
          const handler_result r = fn(ctx);
          ok = r.ok;
          error = r.error;
        } catch (const std::exception& e) {
          error = e.what();
        } catch (...) {
          error = "handler threw a non-standard exception";
        }
        if (!ok && error.empty()) error = "handler reported failure";
        detail = ctx.detail();
        completed_in_tx = ctx.completed_in_transaction() && ok;
      }
      std::unique_lock lock(mutex_);
      // A handler that failed after its token fired (or past its deadline) timed out; one that
      // stopped because the node is stopping is handed back without using up an attempt.
      const bool cut_short = !ok && (rt->token.cancelled() || steady_clock::now() >= rt->deadline);
      const bool timed_out = cut_short && !rt->stopping;
      running_.erase(std::find(running_.begin(), running_.end(), rt));
      if (completed_in_tx) {
        ++counters_.succeeded;
      } else if (cut_short && rt->stopping) {
        if (!rt->abandoned) {
          rt->abandoned = true;
          completer_->release(rt->t.id, rt->t.claim_token);
        }
      } else if (!(workers_stop_ && rt->abandoned)) {
        // An abandoned task's outcome is still recorded: the claim token refuses it ('fenced').
        completer_->push(detail::decide_outcome(rt->t, rt->fire_time, rt->started_wall, ok,
                                                timed_out, error, detail));
      }
      if (rt->abandoned) stuck_worker_ids_.erase(std::this_thread::get_id());
      idle_cv_.notify_all();
      // A free worker: claim more at once if more is known to be due (otherwise a NOTIFY or the
      // next due time brings the claimer back).
      if (more_due_) wake_locked();
    }
  }

  std::shared_ptr<running_task> next_queued_locked() {
    if (state_ != scheduler_state::running && state_ != scheduler_state::draining) return nullptr;
    for (std::size_t n = 0; n < types_.size(); ++n) {
      const std::string& type = types_[(rr_ + n) % types_.size()];
      auto& q = queued_[type];
      if (q.empty()) continue;
      int running = 0;
      for (const auto& r : running_)
        running += r->t.type == type ? 1 : 0;
      if (running >= limit_for(type)) continue;
      rr_ = (rr_ + n + 1) % types_.size();
      auto rt = q.front();
      q.pop_front();
      return rt;
    }
    return nullptr;
  }

  bool complete_in_handler(const running_task& rt, pg::connection& c) {
    const outcome_row o =
        detail::decide_outcome(rt.t, rt.fire_time, rt.started_wall, true, false, {}, {});
    const auto res = c.query_cached(sql_complete_in_handler_, o.id, o.token, settings_.node_id,
                                    o.new_state, o.next_run_at, o.reset_attempt, rt.started_wall,
                                    pg::json_text{"{}"}, shard_);
    return res.one<int>() == 1;
  }

  // ---- the check cycle ----

  void cycle_loop() {
    for (;;) {
      bool woken = false;
      {
        std::unique_lock lock(mutex_);
        for (;;) {
          if (claimer_stop_) return;
          if (wake_) break;
          const auto now = steady_clock::now();
          auto until = next_wake_;
          std::vector<std::shared_ptr<running_task>> to_cancel;
          watch_timeouts_locked(now, until, to_cancel);
          if (!to_cancel.empty()) {
            // Cancellation callbacks may block briefly (PQcancel): run them outside the lock,
            // then look again (running_ may have changed meanwhile).
            lock.unlock();
            for (auto& rt : to_cancel)
              rt->token.cancel();
            lock.lock();
            continue;
          }
          if (wake_) break;
          if (now >= until) break;
          cycle_sleeps_until_ = until;
          cycle_cv_.wait_until(lock, until);
          cycle_sleeps_until_ = steady_clock::time_point::min();
          if (steady_clock::now() >= until) break;
        }
        woken = wake_;
        wake_ = false;
      }
      run_cycle(woken);
    }
  }

  // Cancels handlers past their deadline; declares stuck those past deadline + stuck_grace and
  // records their run as timed out. Moves `until` to the next deadline that needs attention.
  // Tokens to cancel are handed back in `to_cancel`: the caller cancels them without the lock.
  void watch_timeouts_locked(steady_clock::time_point now, steady_clock::time_point& until,
                             std::vector<std::shared_ptr<running_task>>& to_cancel) {
    for (auto& rt : running_) {
      if (rt->abandoned) continue;
      if (!rt->cancel_sent) {
        if (now >= rt->deadline) {
          rt->cancel_sent = true;
          to_cancel.push_back(rt);
          continue;  // stuck only after deadline + stuck_grace, checked on a later pass
        } else {
          until = std::min(until, rt->deadline);
          continue;
        }
      }
      const auto stuck_at = rt->deadline + settings_.stuck_grace;
      if (now >= stuck_at) {
        rt->abandoned = true;
        stuck_worker_ids_.insert(rt->worker);
        completer_->push(detail::decide_outcome(
            rt->t, rt->fire_time, rt->started_wall, false, true,
            "timed out after " + std::to_string(rt->t.timeout_ms) +
                " ms and did not stop within stuck_grace; its worker is stuck",
            {}));
        log(log_level::warn, "scheduler",
            "task " + std::to_string(rt->t.id) + " (" + rt->t.type +
                ") ignored its cancellation: worker stuck, task will be retried");
      } else {
        until = std::min(until, stuck_at);
      }
    }
  }

  // How many tasks of each type this cycle may claim: the free places (workers plus the
  // adaptive prefetch, minus what is queued or running) shared fairly between the types, each
  // within its own concurrency limit. Empty when there is no room.
  std::vector<std::pair<std::string, int>> claim_limits_locked(int& room_out,
                                                               std::vector<int>& free_out) {
    std::vector<std::pair<std::string, int>> limits;
    free_out.clear();
    if (state_ != scheduler_state::running || superseded_) return limits;
    int outstanding_total = 0;
    int queued_total = 0;
    int stuck = 0;  // stuck workers are still occupied: they count against the total
    std::map<std::string, int> outstanding;
    for (const auto& rt : running_) {
      if (rt->abandoned) {
        ++stuck;
        continue;
      }
      ++outstanding[rt->t.type];
      ++outstanding_total;
    }
    for (const auto& [type, q] : queued_) {
      outstanding[type] += static_cast<int>(q.size());
      outstanding_total += static_cast<int>(q.size());
      queued_total += static_cast<int>(q.size());
    }
    // Outcomes not yet written still hold their claims: a completer that falls behind (a slow
    // or unreachable database) holds back the claims, so memory and the tasks 'running' under
    // this node stay bounded by workers + prefetch.
    outstanding_total += static_cast<int>(completer_->backlog());
    int room = settings_.workers - stuck + prefetch_now_ - outstanding_total;
    // While every worker still has a queued task to go to, wait until a fair part of the local
    // queue is free rather than claim a task or two per cycle (the local queue refills in
    // batches, as graphile-worker's does).
    if (queued_total >= settings_.workers && room < std::max(1, prefetch_now_ / 2)) room = 0;
    std::vector<std::pair<std::string, int>> caps;
    for (std::size_t k = 0; k < types_.size(); ++k) {
      // Start with a different type each cycle so no type always comes first.
      const std::string& type = types_[(claim_rr_ + k) % types_.size()];
      const int cap =
          std::min(settings_.claim_batch, limit_for(type) + prefetch_now_ - outstanding[type]);
      if (cap > 0) {
        caps.emplace_back(type, cap);
        // The workers free for it now: a flow-limited type near its limit claims only for these
        // (engine_claim), so what it claims starts at once.
        free_out.push_back(std::max(0, std::min(settings_.workers - stuck - outstanding_total,
                                                limit_for(type) - outstanding[type])));
      }
    }
    if (!types_.empty()) claim_rr_ = (claim_rr_ + 1) % types_.size();
    // The room is shared between the types in this order by the claim itself (engine_claim):
    // each gets its fair share of what is left, and what one does not use passes on.
    room_out = room;
    if (room > 0) limits = std::move(caps);
    return limits;
  }

  // One check cycle: the claimer asks the database (sched/claimer.cpp), then this decides when
  // to look again. `woken`: something asked for this cycle (a notification, a free worker, a
  // rescue); else the due time or the idle poll came.
  void run_cycle(bool woken) {
    detail::claim_request req;
    req.woken = woken;
    {
      const std::scoped_lock lock(mutex_);
      req.limits = claim_limits_locked(req.room, req.free);
      if (req.limits.empty() && !claimer_->reconciling()) {
        // No room: nothing to ask the database. A worker that frees up comes back here.
        more_due_ = true;
        next_wake_ = steady_clock::now() + current_poll_;
        return;
      }
    }
    const auto& limits = req.limits;
    detail::claim_result got;
    std::string error;
    try {
      got = claimer_->cycle(req);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (got.orphans > 0) {
      log(log_level::warn, "scheduler",
          "handed back " + std::to_string(got.orphans) +
              " tasks claimed by a cycle whose commit was not confirmed");
    }
    const auto& claimed_by_type = got.by_type;
    const bool full_batch = got.full_batch;
    const auto& next_due = got.next_due;

    const std::scoped_lock lock(mutex_);
    if (!limits.empty()) {
      last_cycle_at_ = steady_clock::now();
      ++counters_.cycles;
    }
    if (!error.empty()) {
      ++counters_.cycle_errors;
      if (error != last_error_) log(log_level::error, "scheduler", "check cycle failed: " + error);
      last_error_ = error;
      next_wake_ = steady_clock::now() + settings_.poll_interval;
      return;
    }
    last_error_.clear();
    if (got.next_due_known) {
      due_hint_ = got.next_due;
      due_hint_known_ = true;
    }
    int claimed_n = 0;
    for (const auto& [type, n] : claimed_by_type) {
      counters_.claimed += static_cast<std::uint64_t>(n);
      claimed_n += n;
    }
    // The local queue follows the backlog: a full claim means more is due than was asked for.
    if (full_batch) {
      prefetch_now_ =
          std::min(settings_.max_prefetch, std::max(prefetch_now_ * 2, settings_.workers));
    } else if (claimed_n > 0) {
      prefetch_now_ = std::max(settings_.prefetch, prefetch_now_ / 2);
    }
    const auto now_wall = system_clock::now();
    more_due_ = full_batch || (next_due && *next_due <= now_wall);

    // When to look again: at once if a batch came back full, else at the next due time, within
    // the poll interval, which doubles while nothing happens (NOTIFY wakes us meanwhile).
    const bool busy = claimed_n > 0;
    const bool listening = listener_ && listener_->delivering();
    current_poll_ = busy || !listening
                        ? settings_.poll_interval
                        : std::min(current_poll_ * 2,
                                   std::max(settings_.idle_poll_max, settings_.poll_interval));
    auto wake_at = steady_clock::now() + current_poll_;
    if (full_batch) {
      wake_at = steady_clock::now();
    } else if (next_due) {
      const auto until_due = *next_due - now_wall;
      if (until_due <= std::chrono::nanoseconds(0)) {
        // Due but not claimable now (no free worker, or locked by another node): a free worker
        // (more_due_) or the poll interval brings us back.
        wake_at = std::min(wake_at, steady_clock::now() + settings_.poll_interval);
      } else {
        wake_at =
            std::min(wake_at, steady_clock::now() +
                                  std::chrono::duration_cast<steady_clock::duration>(until_due));
      }
    }
    next_wake_ = wake_at;
  }

  // The tasks this node holds in memory: queued and running (the completer adds its own).
  std::set<std::int64_t> held_ids() const {
    std::set<std::int64_t> ids;
    const std::scoped_lock lock(mutex_);
    for (const auto& rt : running_)
      ids.insert(rt->t.id);
    for (const auto& [type, q] : queued_)
      for (const auto& rt : q)
        ids.insert(rt->t.id);
    return ids;
  }

  // The heartbeat's answer to "when is the next task due", while LISTEN delivers (so anything
  // added since then notified); nullopt when no such answer is good.
  std::optional<std::optional<time_point>> usable_due_hint() const {
    if (!listener_ || !listener_->delivering()) return std::nullopt;
    const std::scoped_lock lock(mutex_);
    if (!due_hint_known_) return std::nullopt;
    return due_hint_;
  }

  // Claimed tasks go to the local queue, or, when the node began to stop meanwhile (a cycle that
  // started before stop() emptied the queue), straight back to the database.
  void hand_to_workers(std::vector<detail::claimed_task>& claimed) {
    if (claimed.empty()) return;
    const std::size_t n = claimed.size();
    {
      const std::scoped_lock lock(mutex_);
      const bool draining = state_ != scheduler_state::running || superseded_;
      for (auto& ct : claimed) {
        if (draining) {
          completer_->release(ct.t.id, ct.t.claim_token);
          continue;
        }
        auto rt = std::make_shared<running_task>();
        rt->t = std::move(ct.t);
        rt->fire_time = ct.fire_time;
        queued_[rt->t.type].push_back(std::move(rt));
      }
    }
    claimed.clear();
    // One wake-up per task, not all workers for one task (a herd that costs the pick-up time).
    if (n >= static_cast<std::size_t>(settings_.workers)) {
      worker_cv_.notify_all();
    } else {
      for (std::size_t k = 0; k < n; ++k)
        worker_cv_.notify_one();
    }
  }

  // ---- node registration: one live process per node id ----

  scheduler_settings settings_;
  pool::pool& lane_;
  pool::pool_manager* pools_;
  store store_;
  std::string host_;
  int shard_ = 0;
  std::string sql_complete_in_handler_;
  std::int64_t incarnation_ = 0;  // this process start; claims carry it
  std::string process_key_;  // how another process on this machine can tell that this one lives
  std::atomic<bool> superseded_{false};      // another process took over this node id
  std::vector<std::string> types_;           // set at start, then read-only
  std::string types_array_;                  // the same as a PostgreSQL array literal
  std::map<std::string, handler> handlers_;  // read-only after start

  mutable std::mutex mutex_;
  std::condition_variable cycle_cv_;   // wakes the cycle thread
  std::condition_variable worker_cv_;  // wakes workers
  std::condition_variable idle_cv_;    // a handler finished
  std::condition_variable stopped_cv_;
  // Everything below is guarded by mutex_.
  scheduler_state state_ = scheduler_state::stopped;
  bool started_once_ = false;
  bool stop_in_progress_ = false;
  bool wake_ = false;
  bool workers_stop_ = false;
  bool claimer_stop_ = false;
  // The last claim suggests more is due than was taken (a full batch, or due tasks it could not
  // take): a worker that frees up wakes the claimer.
  bool more_due_ = false;
  bool leader_ = false;
  std::size_t rr_ = 0;
  std::size_t claim_rr_ = 0;  // the type that claims first in the next cycle
  int prefetch_now_ = 0;      // tasks claimed beyond the free workers now (see max_prefetch)
  std::map<std::string, std::deque<std::shared_ptr<running_task>>> queued_;
  std::list<std::shared_ptr<running_task>> running_;
  std::set<std::thread::id> stuck_worker_ids_;
  steady_clock::time_point next_wake_{};
  // While the cycle thread sleeps: until when (min() while it is awake and will look anyway).
  steady_clock::time_point cycle_sleeps_until_ = steady_clock::time_point::min();
  // When the next task of this node's types is due, as the last heartbeat or cycle that asked
  // saw it (nullopt: none is waiting).
  std::optional<time_point> due_hint_;
  bool due_hint_known_ = false;
  steady_clock::time_point last_cycle_at_{};
  steady_clock::time_point started_at_{};
  milliseconds current_poll_{0};
  std::string last_error_;        // of the claimer's last cycle
  std::string completion_error_;  // of the completer's last batch
  std::string superseded_message_;
  scheduler_status counters_;
  // Created at start(); outlives every thread that pushes to it (it is stopped after them).
  std::unique_ptr<detail::completer> completer_;
  // Created at start(), after the completer; used by the cycle thread only.
  std::unique_ptr<detail::claimer> claimer_;
  // Created in the constructor / at start(); stopped in stop() after the claimer and completer.
  std::unique_ptr<detail::liveness> liveness_;
  std::unique_ptr<detail::listener> listener_;

  std::vector<std::thread> workers_;
  std::thread cycle_thread_;
};

scheduler::scheduler(scheduler_settings s, pool::pool& lane, pool::pool_manager* pools)
    : impl_(std::make_shared<impl>(std::move(s), lane, pools)) {}

scheduler::~scheduler() {
  try {
    impl_->stop();
  } catch (const std::exception& e) {
    log(log_level::error, "scheduler", std::string("stop failed: ") + e.what());
  }
}

void scheduler::handle(const std::string& type, handler fn) {
  impl_->handle(type, std::move(fn));
}
void scheduler::start() {
  impl_->start();
}
void scheduler::stop() {
  impl_->stop();
}
scheduler_status scheduler::status() const {
  return impl_->status();
}
const std::string& scheduler::node_id() const noexcept {
  return impl_->node_id();
}
store& scheduler::tasks() noexcept {
  return impl_->tasks();
}
const scheduler_settings& scheduler::config() const noexcept {
  return impl_->config();
}
void scheduler::wake() {
  impl_->wake();
}

}  // namespace sluice::sched
