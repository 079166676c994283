// The `sql` handler: one statement, bound parameters, a lease from a named pool, and a cancel
// request to the server when the task is cancelled or its deadline passes. With
// `"transactional": true` the statement and the task's completion commit together (fenced by
// the claim token), so a ledger row the statement writes exists exactly when the run succeeded.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "sched/handlers_common.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pg/error.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/handlers.hpp"

namespace sluice::sched {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using namespace std::chrono_literals;

// A cancel request that reaches the server just before the statement starts is ignored, so the
// watchdog repeats it this often until the statement has returned.
constexpr milliseconds cancel_repeat = 250ms;

// Stops the running statement when the task's token is cancelled or its deadline passes.
//
// The cancel request (PQcancel) opens a connection to the server and waits for it to be taken,
// so it is sent from the watchdog's own thread, never from the token's callback, which runs on
// the scheduler's cycle thread. It is sent while holding the watchdog's mutex and finish() takes
// that mutex, so no cancel request leaves after the statement returned: a late one could
// otherwise hit whatever the connection's next borrower runs.
class statement_watchdog {
 public:
  statement_watchdog(const cancel_token& token, pg::cancel_handle handle,
                     std::optional<steady_clock::time_point> deadline)
      : state_(std::make_shared<shared>()), handle_(std::move(handle)) {
    // The callback may run after this watchdog is gone (tokens keep their callbacks), hence the
    // weak pointer.
    token.on_cancel([weak = std::weak_ptr<shared>(state_)] {
      if (const auto s = weak.lock()) {
        const std::scoped_lock lock(s->mutex);
        s->cancel_requested = true;
        s->cv.notify_all();
      }
    });
    thread_ = std::thread([this, deadline] { watch(deadline); });
  }
  statement_watchdog(const statement_watchdog&) = delete;
  statement_watchdog& operator=(const statement_watchdog&) = delete;
  statement_watchdog(statement_watchdog&&) = delete;
  statement_watchdog& operator=(statement_watchdog&&) = delete;
  ~statement_watchdog() { finish(); }

  // The statement has returned: stop watching. Idempotent.
  void finish() noexcept {
    {
      const std::scoped_lock lock(state_->mutex);
      state_->done = true;
    }
    state_->cv.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  // True once a cancel request was sent (only meaningful after finish()).
  [[nodiscard]] bool fired() const noexcept { return fired_; }

 private:
  struct shared {
    std::mutex mutex;
    std::condition_variable cv;
    bool cancel_requested = false;  // guarded by mutex
    bool done = false;              // guarded by mutex
  };

  void watch(std::optional<steady_clock::time_point> deadline) {
    std::unique_lock lock(state_->mutex);
    const auto woken = [this] { return state_->done || state_->cancel_requested; };
    if (deadline) {
      state_->cv.wait_until(lock, *deadline, woken);
    } else {
      state_->cv.wait(lock, woken);
    }
    while (!state_->done) {
      fired_ = true;
      if (handle_.valid()) handle_.cancel();
      state_->cv.wait_for(lock, cancel_repeat, [this] { return state_->done; });
    }
  }

  std::shared_ptr<shared> state_;
  pg::cancel_handle handle_;  // used by the watchdog thread only
  bool fired_ = false;        // written by the watchdog thread; read after join
  std::thread thread_;
};

std::string pool_names(const pool::pool_manager& pools) {
  std::string out;
  for (const auto& name : pools.names()) {
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out.empty() ? "none" : out;
}

// Runs the statement inside a transaction that also completes the task (task_context::
// complete_in, fenced by the claim token). The task id is visible to the statement as
// current_setting('sluice.task_id'). Throws what the statements throw; returns a failure when
// the claim went stale meanwhile (everything rolled back then).
handler_result run_in_transaction(task_context& ctx, pg::connection& conn, const std::string& sql,
                                  const pg::param_list& params, pg::result& res) {
  pg::transaction tx(conn);
  conn.exec("SELECT set_config('sluice.task_id', $1, true)",
            pg::param_list::of(std::to_string(ctx.info().id)));
  res = conn.exec(sql, params);
  if (!ctx.complete_in(conn)) {
    tx.rollback();
    return handler_result::failure(
        "the claim is stale (the task was rescued or timed out meanwhile): rolled back");
  }
  tx.commit();
  return handler_result::success();
}

handler_result run_sql(task_context& ctx) {
  detail::sql_payload payload;
  bool transactional = false;
  try {
    payload = detail::parse_sql_payload(ctx.payload());
    transactional = payload.transactional;
  } catch (const schedule_error& e) {
    return handler_result::failure(e.what());
  }

  pool::pool_manager* pools = nullptr;
  try {
    pools = &ctx.pools();
  } catch (const std::logic_error& e) {
    return handler_result::failure(std::string("sql tasks need a pool manager: ") + e.what());
  }
  pool::pool* pool = pools->find(payload.pool);
  if (pool == nullptr) {
    return handler_result::failure("no pool named '" + payload.pool +
                                   "' (pools: " + pool_names(*pools) + ")");
  }

  const cancel_token& token = ctx.cancel();
  const auto deadline = detail::deadline_of(token);
  milliseconds wait = pool->config().timeout;
  if (deadline) {
    const auto left = std::chrono::ceil<milliseconds>(*deadline - steady_clock::now());
    if (left <= 0ms) return handler_result::failure("timed out before the statement started");
    wait = std::min(wait, left);
  }
  if (token.cancelled()) return handler_result::failure("cancelled before the statement started");

  pool::lease lease;
  try {
    lease = pool->acquire_for(wait);
  } catch (const std::exception& e) {  // pool_timeout, pool_closed
    return handler_result::failure(e.what());
  }

  const pg::param_list params(std::move(payload.params));
  pg::result res;
  std::string error;
  handler_result stale;
  {
    statement_watchdog watchdog(token, lease->make_cancel_handle(), deadline);
    try {
      if (transactional) {
        handler_result r = run_in_transaction(ctx, *lease, payload.sql, params, res);
        if (!r.ok) stale = std::move(r);
      } else {
        res = lease->exec(payload.sql, params);
      }
    } catch (const pg::sql_error& e) {
      watchdog.finish();
      ctx.set_detail(detail::dump_detail({{"sqlstate", e.sqlstate()}}));
      error = "SQLSTATE " + e.sqlstate() + ": " + e.message();
      if (e.kind() == pg::error_kind::query_canceled && watchdog.fired())
        error += token.cancelled() ? " (the task was cancelled)" : " (the task timed out)";
      if (e.poisons_connection()) lease.invalidate();
    } catch (const pg::connection_error& e) {
      lease.invalidate();
      if (!e.sqlstate().empty()) ctx.set_detail(detail::dump_detail({{"sqlstate", e.sqlstate()}}));
      error = std::string("connection lost: ") + e.what();
    } catch (const pg::error& e) {  // conversion errors and the like: nothing was sent
      error = e.what();
    }
  }
  if (!error.empty()) return handler_result::failure(std::move(error));
  if (!stale.ok) return stale;

  ctx.set_detail(
      detail::dump_detail({{"rows_affected", res.affected_rows()}, {"rows", res.rows()}}));
  return handler_result::success();
}

}  // namespace

handler make_sql_handler() {
  return run_sql;
}

}  // namespace sluice::sched
