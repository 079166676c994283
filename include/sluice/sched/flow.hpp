#pragma once

// Flow control across the fleet (docs/flow-control.md): limits per task type that hold over
// every node because the claim enforces them in PostgreSQL, and tasks that run after other
// tasks (a graph added in one transaction).

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "sluice/sched/task.hpp"

namespace sluice::sched {

// Limits of one task type, counted across every node. With `key` set they count per distinct
// value of that payload field (a task without it counts under the empty value), else per type.
struct flow_limit {
  std::optional<int> max_running;  // at most this many running at once
  std::optional<int> rate;         // at most this many starts in any window of rate_period
  std::chrono::milliseconds rate_period{0};  // 1 s to 1 day
  std::string key;                           // a top-level payload field; empty: per type

  // At most `n` running at once; at most `n` starts in any window of `period`.
  [[nodiscard]] static flow_limit running(int n, std::string key = {});
  [[nodiscard]] static flow_limit starts(int n, std::chrono::milliseconds period,
                                         std::string key = {});

  // Throws schedule_error naming the type and the field.
  void validate(std::string_view type) const;
  bool operator==(const flow_limit&) const = default;
};

// How much of a limit counted per key one key uses.
struct flow_key_usage {
  std::string key;  // the payload field's value; empty for tasks without it
  std::int64_t running = 0;
  std::int64_t started_in_window = 0;
};

// What the database holds now for a limited type: the limit and how much of it is in use.
struct flow_usage {
  std::string type;
  flow_limit limit;
  std::int64_t running = 0;            // running now (all keys together)
  std::int64_t started_in_window = 0;  // starts counted in the current rate window
  // With limit.key set: the keys in use now (running or started in the window), busiest
  // first, at most 20. Empty for a limit per type.
  std::vector<flow_key_usage> by_key;
};

// What a blocked task does when a task it runs after fails or is cancelled.
enum class dependency_failure {
  cancel,  // it is cancelled, and so are the blocked tasks after it (transitively)
  run,     // it runs once every task it runs after has finished, whatever the outcome
};

[[nodiscard]] std::string_view to_string(dependency_failure d) noexcept;
// Throws schedule_error naming the bad value.
[[nodiscard]] dependency_failure parse_dependency_failure(std::string_view text);

// One task of a graph: its spec, a name local to the graph, and the tasks it runs after, in the
// same graph (by ref) or already in the database (by id). A task that runs after others is
// 'blocked' until they succeeded; only one-shot tasks can run after, or be run after.
struct graph_task {
  std::string ref;  // unique within the graph; 1-200 characters
  task_spec spec;
  std::vector<std::string> after;       // refs of tasks in the same graph
  std::vector<std::int64_t> after_ids;  // tasks already in the database
  dependency_failure on_failure = dependency_failure::cancel;
};

namespace detail {
// The graph's tasks in an order where each comes after those it runs after (by ref); throws
// schedule_error for an empty or duplicate ref, an unknown ref, a task that runs after itself
// or a cycle (naming the tasks in it), and for a recurring task that runs after or is run after.
[[nodiscard]] std::vector<std::size_t> topological_order(const std::vector<graph_task>& graph);
}  // namespace detail

}  // namespace sluice::sched
