#pragma once

// Everything an operator or the API does with the scheduler's tables: migrations, creating and
// changing tasks, reading runs, cycles, stats and nodes. Every statement goes through one pool
// (the scheduler's lane) with bound parameters; the SQL lives in src/sched/queries.hpp.
//
// Thread-safety: thread-safe (each call borrows its own connection).
// Throws: pool::pool_timeout, pg::error on database failures; schedule_error on a bad spec;
// conflict_error on a duplicate task name or a unique_key whose task cannot be replaced now;
// schema_error on a schema this binary cannot use.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/error.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/flow.hpp"
#include "sluice/sched/task.hpp"

namespace sluice::sched {

class schema_error : public sluice::error {
 public:
  using sluice::error::error;
};

class conflict_error : public sluice::error {
 public:
  using sluice::error::error;
};

enum class change_result { done, not_found, wrong_state };

// What adding a task did. `existing` and `replaced` happen only to a task_spec with a unique_key
// that a live task holds (task_spec::on_conflict keep and replace).
enum class add_outcome { created, existing, replaced };
[[nodiscard]] std::string_view to_string(add_outcome outcome) noexcept;  // "created", ...

struct add_result {
  std::int64_t id = 0;  // the new task, or the live task holding the unique_key
  add_outcome outcome = add_outcome::created;
  [[nodiscard]] bool created() const noexcept { return outcome == add_outcome::created; }
};

// Adds a task on a connection the application already holds, as part of its open transaction:
// the task exists, and the nodes are woken (one NOTIFY at COMMIT), only when that transaction
// commits; a rollback leaves nothing. On a connection outside a transaction it runs in a
// transaction of its own. Validation, defaults and unique_key semantics are those of store::add
// and of the SQL API's add_task (docs/producers.md). `schema` is sluice's schema on that
// database; the connection's role must be allowed to write its tables (the role that ran
// `sluice migrate` is; the SQL API's sluice_producer role is not: it calls add_task in SQL).
// Under REPEATABLE READ or SERIALIZABLE a collision on a unique_key may fail with 40001 (retry
// the transaction), as in SQL.
// Throws schedule_error (a bad spec), conflict_error (a taken name, 23505; a unique_key whose
// task is running while on_conflict is replace, 55000), std::invalid_argument (a bad schema
// name), pg::error. The spec and the schema name are checked before any statement is sent, so
// those refusals leave the caller's transaction usable; everything found by the server (the
// conflicts, a payload that is not valid JSON) aborts it, as any failed statement does.
// Thread-safety: as the connection's (one thread at a time).
add_result add_task(pg::connection& conn, const task_spec& spec,
                    const std::string& schema = "sluice");
add_result add_task(pg::transaction& tx, const task_spec& spec,
                    const std::string& schema = "sluice");

struct migration_status {
  int current = 0;  // highest applied version (0: none)
  int latest = 0;   // highest version this binary knows
  std::vector<int> applied_now;
};

struct task_filter {
  std::optional<std::string> type;
  std::optional<task_state> state;
  std::optional<std::string> name;        // substring match
  int limit = 50;                         // 1..1000
  std::optional<std::int64_t> before_id;  // paging: tasks with id < before_id, newest first
};

struct cycle_record {
  std::int64_t id = 0;
  std::string node;
  time_point started_at;
  double duration_ms = 0;
  int claimed = 0, succeeded = 0, failed = 0, skipped = 0, rescued = 0, fenced = 0;
  std::string by_type;  // JSON object
  std::optional<std::string> error;
};

struct node_info {
  std::string id, host, version, state;
  int pid = 0;
  int connection_budget = 0;
  time_point started_at, heartbeat_at, expires_at;
  bool alive = false;
};

// Cumulative counters (sum over shards). Keys: metric ("runs_succeeded", "runs_failed",
// "runs_timed_out", "runs_rescued", "runs_fenced", "cycles", "claimed", "skipped") and per type.
struct cumulative_stats {
  std::map<std::string, std::int64_t> totals;
  std::map<std::string, std::map<std::string, std::int64_t>> by_type;  // metric -> type -> value
  [[nodiscard]] std::int64_t total(const std::string& metric) const;
};

struct queue_depth {
  std::string type;
  std::map<std::string, std::int64_t> by_state;
  double lag_s = 0;  // age of the oldest due, unclaimed task (0 when none)
};

// What store::prune keeps; a zero duration keeps everything of that kind.
struct retention {
  std::chrono::hours runs{24 * 7};
  std::chrono::hours cycles{24 * 3};
  std::chrono::hours finished_tasks{24 * 7};  // one-shot tasks in succeeded, failed, cancelled
};

// Rows deleted by one store::prune call. `complete` is false when the time budget ran out
// before everything past its retention was gone (call again).
struct prune_result {
  std::int64_t runs = 0, cycles = 0, tasks = 0, nodes = 0;
  bool complete = true;
};

class store {
 public:
  // `schema` must be a plain identifier ([a-z_][a-z0-9_]*, at most 63 characters).
  store(pool::pool& lane, std::string schema = "sluice");

  [[nodiscard]] const std::string& schema() const noexcept { return schema_; }
  [[nodiscard]] pool::pool& lane() const noexcept { return lane_; }

  // Applies every migration newer than the database's, each in its own transaction, under an
  // advisory transaction lock so concurrent migrators wait. Applying twice is a no-op.
  // Throws schema_error when the database is newer than this binary.
  migration_status migrate();
  // Reads the state without changing anything; throws schema_error when the database is newer,
  // or when `require_current` and migrations are missing.
  migration_status check_schema(bool require_current = true);

  // Adds a task in a transaction of its own (see add_task above for what it does).
  add_result add(const task_spec& spec);
  // add(spec).id: the new task's id, or the id of the live task holding spec.unique_key.
  std::int64_t create(const task_spec& spec);
  [[nodiscard]] std::optional<task> get(std::int64_t id);
  [[nodiscard]] std::optional<task> get_by_name(const std::string& name);
  [[nodiscard]] std::vector<task> list(const task_filter& filter);

  change_result pause(std::int64_t id);
  change_result resume(std::int64_t id);
  change_result cancel(std::int64_t id);
  change_result run_now(std::int64_t id);
  // Sets the next run time of a task that is not running or final.
  change_result reschedule(std::int64_t id, time_point next_run_at);

  [[nodiscard]] std::vector<task_run> runs(std::int64_t task_id, int limit = 50,
                                           std::optional<std::int64_t> before_id = std::nullopt);
  [[nodiscard]] std::vector<cycle_record> cycles(
      int limit = 50, std::optional<std::int64_t> before_id = std::nullopt);
  [[nodiscard]] cumulative_stats stats();
  [[nodiscard]] std::vector<node_info> nodes();
  [[nodiscard]] std::optional<std::string> leader();
  [[nodiscard]] std::vector<queue_depth> queues();
  // Deletes what is older than its retention, plus nodes stopped or dead for a day, in batches of
  // at most `batch` rows per statement (each its own short transaction, so it never holds locks
  // for long or bloats one transaction), until nothing is left or `budget` has passed.
  // Cumulative stats are not touched: they keep counting what the pruned history recorded.
  prune_result prune(const retention& keep,
                     std::chrono::milliseconds budget = std::chrono::seconds(5), int batch = 5000);

  // Sum of connection budgets registered by live nodes other than `except_node`.
  [[nodiscard]] int budget_of_other_nodes(const std::string& except_node = {});

  // ---- flow control (sluice/sched/flow.hpp, src/sched/flow.cpp) ----
  // Adds a graph of tasks in one transaction and returns their ids in the graph's order. Tasks
  // that run after others start 'blocked'; one whose upstream tasks already succeeded starts
  // ready, one with an upstream task that already failed follows its on_failure policy. Throws
  // schedule_error for a bad spec or graph (cycles included, and an after_id that names no
  // task or a recurring one); nothing is added then.
  std::vector<std::int64_t> add_graph(const std::vector<graph_task>& graph);
  // The tasks that `id` runs after, and those that run after it.
  [[nodiscard]] std::vector<std::int64_t> upstream_of(std::int64_t id);
  [[nodiscard]] std::vector<std::int64_t> downstream_of(std::int64_t id);
  // Replaces every flow limit with `limits` (the last node to start or reload writes them, so
  // every node of a fleet should have the same ones). Throws schedule_error for a bad limit.
  void set_flow_limits(const std::map<std::string, flow_limit>& limits);
  [[nodiscard]] std::map<std::string, flow_limit> flow_limits();
  [[nodiscard]] std::vector<flow_usage> flow_usages();

 private:
  pool::pool& lane_;
  std::string schema_;
};

// Throws std::invalid_argument unless `schema` is a plain lower-case identifier.
void validate_schema_name(const std::string& schema);

}  // namespace sluice::sched
