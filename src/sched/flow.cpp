// Flow control: validation of limits and graphs, and the store's part of it (limits written to
// flow_limits, graphs of tasks added in one transaction). The claim side is engine_claim in
// sql/migrations/006_flow_control.sql; releasing and cancelling blocked tasks is its trigger.

#include "sluice/sched/flow.hpp"

#include <algorithm>
#include <deque>
#include <set>
#include <unordered_map>

#include "sched/queries.hpp"
#include "sched/util.hpp"
#include "sluice/sched/cron.hpp"
#include "sluice/sched/store.hpp"

namespace sluice::sched {

using detail::with_schema;

std::string_view to_string(dependency_failure d) noexcept {
  return d == dependency_failure::run ? "run" : "cancel";
}

dependency_failure parse_dependency_failure(std::string_view text) {
  if (text == "cancel") return dependency_failure::cancel;
  if (text == "run") return dependency_failure::run;
  throw schedule_error("on_dependency_failure: '" + std::string(text) +
                       "' is not a policy (cancel, run)");
}

flow_limit flow_limit::running(int n, std::string key) {
  flow_limit l;
  l.max_running = n;
  l.key = std::move(key);
  return l;
}

flow_limit flow_limit::starts(int n, std::chrono::milliseconds period, std::string key) {
  flow_limit l;
  l.rate = n;
  l.rate_period = period;
  l.key = std::move(key);
  return l;
}

void flow_limit::validate(std::string_view type) const {
  const std::string where = "flow limit of '" + std::string(type) + "': ";
  if (!max_running && !rate) throw schedule_error(where + "set max_running, rate, or both");
  if (max_running && *max_running < 1)
    throw schedule_error(where + "max_running must be at least 1, got " +
                         std::to_string(*max_running));
  if (rate) {
    if (*rate < 1)
      throw schedule_error(where + "rate must be at least 1, got " + std::to_string(*rate));
    if (rate_period < std::chrono::seconds(1) || rate_period > std::chrono::hours(24)) {
      throw schedule_error(where + "rate_period must be between 1s and 1d, got " +
                           std::to_string(rate_period.count()) + " ms");
    }
  } else if (rate_period.count() != 0) {
    throw schedule_error(where + "rate_period is set without a rate");
  }
  if (key.size() > 200) throw schedule_error(where + "key is longer than 200 characters");
}

namespace detail {

std::vector<std::size_t> topological_order(const std::vector<graph_task>& graph) {
  if (graph.empty()) throw schedule_error("graph: no tasks");
  std::unordered_map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < graph.size(); ++i) {
    const auto& ref = graph[i].ref;
    if (ref.empty() || ref.size() > 200)
      throw schedule_error("graph: task " + std::to_string(i) + ": ref must be 1-200 characters");
    if (!index.emplace(ref, i).second)
      throw schedule_error("graph: ref '" + ref + "' is used by two tasks");
  }
  std::vector<std::vector<std::size_t>> downstream(graph.size());
  std::vector<std::size_t> waiting(graph.size(), 0);
  for (std::size_t i = 0; i < graph.size(); ++i) {
    const auto& t = graph[i];
    std::set<std::string> seen;
    for (const auto& up : t.after) {
      const auto it = index.find(up);
      if (it == index.end())
        throw schedule_error("graph: task '" + t.ref + "' runs after '" + up +
                             "', which is not in the graph");
      if (it->second == i) throw schedule_error("graph: task '" + t.ref + "' runs after itself");
      if (!seen.insert(up).second) continue;
      if (graph[it->second].spec.when.kind() != schedule_kind::once)
        throw schedule_error("graph: task '" + t.ref + "' runs after '" + up +
                             "', which is recurring: only one-shot tasks can be run after");
      downstream[it->second].push_back(i);
      ++waiting[i];
    }
    if ((!t.after.empty() || !t.after_ids.empty()) && t.spec.when.kind() != schedule_kind::once)
      throw schedule_error("graph: task '" + t.ref +
                           "' is recurring: only one-shot tasks can run after others");
  }
  // Kahn's algorithm, in the graph's own order where it leaves a choice.
  std::deque<std::size_t> ready;
  for (std::size_t i = 0; i < graph.size(); ++i)
    if (waiting[i] == 0) ready.push_back(i);
  std::vector<std::size_t> order;
  order.reserve(graph.size());
  while (!ready.empty()) {
    const auto i = ready.front();
    ready.pop_front();
    order.push_back(i);
    for (const auto d : downstream[i])
      if (--waiting[d] == 0) ready.push_back(d);
  }
  if (order.size() != graph.size()) {
    std::string names;
    int shown = 0;
    for (std::size_t i = 0; i < graph.size(); ++i) {
      if (waiting[i] == 0) continue;
      if (shown++ == 5) {
        names += ", ...";
        break;
      }
      names += (names.empty() ? "'" : ", '") + graph[i].ref + "'";
    }
    throw schedule_error("graph: tasks " + names + " run after each other in a cycle");
  }
  return order;
}

}  // namespace detail

namespace {

// One task of a graph, on the graph's transaction, through add_task() (the insert, the first
// fire time and the error messages of every other add), named by its ref in any refusal.
// Unique keys do not apply to graphs.
std::int64_t insert_one(pg::connection& c, const std::string& schema, const graph_task& g) {
  task_spec spec = g.spec;
  spec.unique_key.reset();
  try {
    return add_task(c, spec, schema).id;
  } catch (const conflict_error& e) {
    throw conflict_error("graph: task '" + g.ref + "': " + e.what());
  } catch (const schedule_error& e) {
    throw schedule_error("graph: task '" + g.ref + "': " + e.what());
  }
}

}  // namespace

std::vector<std::int64_t> store::add_graph(const std::vector<graph_task>& graph) {
  for (const auto& g : graph) {
    try {
      g.spec.validate();
    } catch (const schedule_error& e) {
      throw schedule_error("graph: task '" + g.ref + "': " + e.what());
    }
  }
  const auto order = detail::topological_order(graph);
  std::set<std::int64_t> external;
  for (const auto& g : graph)
    external.insert(g.after_ids.begin(), g.after_ids.end());

  auto lease = lane_.acquire();
  pg::connection& c = lease.conn();
  pg::transaction tx(c);
  if (!external.empty()) {
    pg::array_literal ids;
    for (const auto id : external)
      ids.add(id);
    std::map<std::int64_t, std::string> kinds;
    for (const auto row : c.query_cached(with_schema(queries::upstream_kinds, schema_), ids))
      kinds[row.get<std::int64_t>(0)] = row.get<std::string>(1);
    for (const auto& g : graph) {
      for (const auto id : g.after_ids) {
        const auto it = kinds.find(id);
        if (it == kinds.end())
          throw schedule_error("graph: task '" + g.ref + "' runs after task " + std::to_string(id) +
                               ", which does not exist");
        if (it->second != "once")
          throw schedule_error("graph: task '" + g.ref + "' runs after task " + std::to_string(id) +
                               ", which is recurring: only one-shot tasks can be run after");
      }
    }
  }
  std::vector<std::int64_t> ids(graph.size(), 0);
  std::unordered_map<std::string, std::int64_t> by_ref;
  for (const auto i : order) {
    ids[i] = insert_one(c, schema_, graph[i]);
    by_ref[graph[i].ref] = ids[i];
  }
  pg::array_literal dep_task, dep_on, blocked, policies;
  for (std::size_t i = 0; i < graph.size(); ++i) {
    const auto& g = graph[i];
    std::set<std::int64_t> ups(g.after_ids.begin(), g.after_ids.end());
    for (const auto& ref : g.after)
      ups.insert(by_ref.at(ref));
    if (ups.empty()) continue;
    for (const auto up : ups) {
      dep_task.add(ids[i]);
      dep_on.add(up);
    }
    blocked.add(ids[i]);
    policies.add(to_string(g.on_failure));
  }
  if (blocked.size() > 0) {
    c.exec_cached(with_schema(queries::insert_deps, schema_), pg::param_list::of(dep_task, dep_on));
    c.exec_cached(with_schema(queries::block_tasks, schema_),
                  pg::param_list::of(blocked, policies));
    if (!external.empty()) {
      c.query_cached(with_schema(queries::resolve_blocked, schema_), blocked);
      c.query_cached(with_schema(queries::release_ready, schema_), blocked);
    }
  }
  tx.commit();
  return ids;
}

namespace {

// The task ids (first column) of the rows `sql` returns for task `id`.
std::vector<std::int64_t> task_ids(pg::connection& c, std::string_view sql, std::int64_t id) {
  std::vector<std::int64_t> out;
  for (const auto row : c.query_cached(sql, id))
    out.push_back(row.get<std::int64_t>(0));
  return out;
}

}  // namespace

std::vector<std::int64_t> store::upstream_of(std::int64_t id) {
  auto lease = lane_.acquire();
  return task_ids(*lease, with_schema(queries::upstream_of, schema_), id);
}

std::vector<std::int64_t> store::downstream_of(std::int64_t id) {
  auto lease = lane_.acquire();
  return task_ids(*lease, with_schema(queries::downstream_of, schema_), id);
}

void store::set_flow_limits(const std::map<std::string, flow_limit>& limits) {
  pg::array_literal types, keys, running, rates, periods;
  for (const auto& [type, l] : limits) {
    task_spec probe;
    probe.type = type;
    try {
      probe.validate();
    } catch (const schedule_error& e) {
      throw schedule_error("flow limit of '" + type + "': " + e.what());
    }
    l.validate(type);
    types.add(type);
    keys.add(l.key.empty() ? std::optional<std::string>() : std::optional(l.key));
    running.add(l.max_running);
    rates.add(l.rate);
    periods.add(l.rate ? std::optional<std::int64_t>(l.rate_period.count()) : std::nullopt);
  }
  auto lease = lane_.acquire();
  lease->exec_cached(with_schema(queries::replace_flow_limits, schema_),
                     pg::param_list::of(types, keys, running, rates, periods));
}

std::map<std::string, flow_limit> store::flow_limits() {
  std::map<std::string, flow_limit> out;
  for (auto& u : flow_usages())
    out.emplace(u.type, std::move(u.limit));
  return out;
}

std::vector<flow_usage> store::flow_usages() {
  auto lease = lane_.acquire();
  std::vector<flow_usage> out;
  for (const auto row : lease->query_cached(with_schema(queries::flow_usage, schema_))) {
    flow_usage u;
    u.type = row.get<std::string>("type");
    u.limit.key = row.get<std::optional<std::string>>("key_path").value_or("");
    u.limit.max_running = row.get<std::optional<int>>("max_running");
    u.limit.rate = row.get<std::optional<int>>("rate_limit");
    u.limit.rate_period = std::chrono::milliseconds(
        row.get<std::optional<std::int64_t>>("rate_period_ms").value_or(0));
    u.running = row.get<std::int64_t>("running");
    u.started_in_window = row.get<std::int64_t>("started");
    out.push_back(std::move(u));
  }
  if (std::none_of(out.begin(), out.end(), [](const auto& u) { return !u.limit.key.empty(); }))
    return out;
  for (const auto row : lease->query_cached(with_schema(queries::flow_key_usage, schema_))) {
    const auto type = row.get<std::string>(0);
    const auto it =
        std::find_if(out.begin(), out.end(), [&](const auto& u) { return u.type == type; });
    if (it == out.end()) continue;  // a limit added between the two reads
    it->by_key.push_back(
        {row.get<std::string>(1), row.get<std::int64_t>(2), row.get<std::int64_t>(3)});
  }
  return out;
}

}  // namespace sluice::sched
