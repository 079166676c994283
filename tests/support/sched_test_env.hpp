#pragma once

// Helpers for the scheduler's integration tests: a throwaway schema with the migrations applied
// and a lane pool whose connections are recognisable in pg_stat_activity, bounded waits
// (support/eventually.hpp), and scheduler nodes run as separate processes
// (tests/tools/sched_test_node.cpp).
//
// Thread-safety: sched_env's lane() and store() may be used from any thread; sql() belongs to
// the test's main thread. The free functions are thread-safe. A node_process
// is used by one thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "support/eventually.hpp"
#include "support/pg_test_env.hpp"

namespace sluice::test {

// test_conninfo() with application_name set, in the same form (URI or key=value), for
// connections that are not opened through pg::connect_options (the scheduler's LISTEN
// connection).
[[nodiscard]] std::string conninfo_with_application(const std::string& application_name);

// Settings of a pool on the test server named `name` with application_name `application_name`.
[[nodiscard]] pool::settings test_pool_settings(const std::string& name,
                                                const std::string& application_name, int size,
                                                int max_overflow);

// A fresh schema with every migration applied through store::migrate(), a lane pool for it and
// a store over it. The schema is dropped (CASCADE) when the environment is destroyed, after the
// pool has closed; stop every scheduler built on it first.
class sched_env {
 public:
  // `migrate`: apply the migrations (false leaves the schema empty, for the migration tests).
  explicit sched_env(bool migrate = true, int lane_size = 4, int lane_overflow = 0);
  sched_env(const sched_env&) = delete;
  sched_env& operator=(const sched_env&) = delete;
  sched_env(sched_env&&) = delete;
  sched_env& operator=(sched_env&&) = delete;
  ~sched_env();

  [[nodiscard]] const std::string& schema() const noexcept { return schema_.name(); }
  // "<schema>.<object>" for SQL text.
  [[nodiscard]] std::string q(std::string_view object) const { return schema_.qualified(object); }
  // Prefix of the application_name of every connection this environment and the schedulers
  // built with settings() open: "<prefix>-lane", "<prefix>-listen-<node>", ...
  [[nodiscard]] const std::string& app_prefix() const noexcept { return app_prefix_; }
  [[nodiscard]] pool::pool& lane() noexcept { return *lane_; }
  [[nodiscard]] sched::store& store() noexcept { return *store_; }
  // A connection of the test's own (search_path: the schema first) for checks and fixtures.
  [[nodiscard]] pg::connection& sql() noexcept { return sql_; }

  // Scheduler settings with short, test-sized timings: the schema, a unique node id, a poll of
  // 100 ms (idle back-off to 300 ms), heartbeat 500 ms, node expiry 3 s, stop grace 2 s, stuck
  // grace 500 ms, LISTEN on a connection named "<prefix>-listen".
  [[nodiscard]] sched::scheduler_settings settings(int workers = 4) const;

  // One bigint from a statement on sql() (count(*), sum(...)::bigint, ...).
  template <class... Ts>
  std::int64_t scalar(std::string_view statement, Ts&&... args) {
    return sql_.query(statement, std::forward<Ts>(args)...).template one<std::int64_t>();
  }

 private:
  scoped_schema schema_;
  std::string app_prefix_;
  std::unique_ptr<pool::pool> lane_;
  std::unique_ptr<sched::store> store_;
  pg::connection sql_;
};

// Polls the task until it is in `state`; false when the deadline passed first (or the task is
// gone).
bool wait_for_state(sched::store& store, std::int64_t id, sched::task_state state,
                    std::chrono::milliseconds timeout);

// Waits until the scheduler has completed `n` more check cycles than when called, so that what
// it would have done by then (re-running a task, say) has had the chance to happen.
bool wait_for_cycles(const sched::scheduler& node, int n,
                     std::chrono::milliseconds timeout = std::chrono::seconds(10));

// store::runs() of a task, oldest first.
[[nodiscard]] std::vector<sched::task_run> runs_oldest_first(sched::store& store, std::int64_t id);

// The fire-and-forget form of sched::task_spec used by most tests: a one-shot task of `type`
// due now.
[[nodiscard]] sched::task_spec due_now(std::string type);

// A scheduler node in a child process (the sched_test_node tool). The constructor starts it and
// waits for its "ready" line; the destructor kills it (SIGKILL) if it is still running.
class node_process {
 public:
  // Throws std::runtime_error (with the exit status when the child died) when "ready" does not
  // arrive within `ready_timeout`.
  node_process(const std::string& executable, const std::vector<std::string>& args,
               std::chrono::milliseconds ready_timeout = std::chrono::seconds(20));
  node_process(const node_process&) = delete;
  node_process& operator=(const node_process&) = delete;
  node_process(node_process&&) = delete;
  node_process& operator=(node_process&&) = delete;
  ~node_process();

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // True until the child has been reaped.
  [[nodiscard]] bool running();
  // SIGKILL and reap.
  void kill_now();
  // SIGTERM, then waits up to `timeout` for the child to exit. Returns its exit code, 128 +
  // signal when a signal ended it, or -1 when it did not exit in time (it is then killed).
  int terminate(std::chrono::milliseconds timeout);

 private:
  // Reaps without blocking (or blocking when `block`); records the status. True when reaped.
  bool reap(bool block);

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

}  // namespace sluice::test
