#include "sluice/sched/store.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <stdexcept>

#include "sched/migrations_data.hpp"
#include "sched/queries.hpp"
#include "sched/util.hpp"
#include "sluice/enum_names.hpp"
#include "sluice/pg/connection.hpp"

namespace sluice::sched {

using detail::with_schema;

void validate_schema_name(const std::string& schema) {
  const bool ok = !schema.empty() && schema.size() <= 63 &&
                  (std::islower(static_cast<unsigned char>(schema[0])) || schema[0] == '_') &&
                  std::all_of(schema.begin(), schema.end(), [](char c) {
                    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
                  });
  if (!ok) {
    throw std::invalid_argument(
        "schema: '" + schema +
        "' must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 characters)");
  }
}

std::int64_t cumulative_stats::total(const std::string& metric) const {
  const auto it = totals.find(metric);
  return it == totals.end() ? 0 : it->second;
}

store::store(pool::pool& lane, std::string schema) : lane_(lane), schema_(std::move(schema)) {
  validate_schema_name(schema_);
}

namespace {

int latest_version() {
  const auto& all = detail::embedded_migrations();
  return all.empty() ? 0 : all.back().version;
}

int read_version(pg::connection& c, const std::string& schema) {
  const bool exists =
      c.query("SELECT to_regclass($1) IS NOT NULL", "\"" + schema + "\".schema_migrations")
          .one<bool>();
  if (!exists) return 0;
  return c.exec(with_schema(queries::current_version, schema)).one<int>();
}

std::string newer_message(int db, int mine, const std::string& schema) {
  return "schema '" + schema + "' is at version " + std::to_string(db) +
         ", newer than this sluice binary knows (" + std::to_string(mine) +
         "): upgrade sluice before running it against this database";
}

}  // namespace

migration_status store::check_schema(bool require_current) {
  auto lease = lane_.acquire();
  migration_status st;
  st.latest = latest_version();
  st.current = read_version(lease.conn(), schema_);
  if (st.current > st.latest) throw schema_error(newer_message(st.current, st.latest, schema_));
  if (require_current && st.current < st.latest) {
    throw schema_error("schema '" + schema_ + "' is at version " + std::to_string(st.current) +
                       ", this sluice needs " + std::to_string(st.latest) +
                       ": run `sluice migrate`");
  }
  return st;
}

migration_status store::migrate() {
  auto lease = lane_.acquire();
  pg::connection& c = lease.conn();
  migration_status st;
  st.latest = latest_version();
  for (const auto& m : detail::embedded_migrations()) {
    pg::transaction tx(c);
    c.query(queries::migration_lock, "sluice.migrate." + schema_);
    c.exec("CREATE SCHEMA IF NOT EXISTS \"" + schema_ + "\"");
    c.exec(with_schema(queries::create_migrations_table, schema_));
    const int current = read_version(c, schema_);
    if (current > st.latest) throw schema_error(newer_message(current, st.latest, schema_));
    if (m.version <= current) continue;
    c.exec("SET LOCAL search_path TO \"" + schema_ + "\"");
    c.exec(m.sql);
    c.query(with_schema(queries::record_migration, schema_), m.version, std::string(m.name));
    tx.commit();
    st.applied_now.push_back(m.version);
  }
  st.current = read_version(c, schema_);
  if (st.current > st.latest) throw schema_error(newer_message(st.current, st.latest, schema_));
  return st;
}

std::string_view to_string(add_outcome outcome) noexcept {
  static constexpr std::array<std::string_view, 3> names{"created", "existing", "replaced"};
  return enum_name<add_outcome::replaced>(outcome, names);
}

namespace {

// The first next_run_at of a validated spec.
time_point first_run(const schedule& when) {
  if (when.kind() == schedule_kind::once) return when.at();  // in the past (or the epoch): now
  const auto first = when.next_after(std::chrono::system_clock::now());
  if (!first) throw schedule_error("schedule: '" + when.to_string() + "' never fires after now");
  return *first;
}

// Called from a catch block: anything it does not translate is rethrown as it was.
[[noreturn]] void rethrow_add_error(const pg::sql_error& e, const task_spec& spec) {
  if (e.sqlstate() == "23505")
    throw conflict_error("a task named '" + spec.name.value_or("") + "' already exists");
  // insert_tasks(): the key's holder is running and on_conflict is replace.
  if (e.sqlstate() == "55000") throw conflict_error(e.message());
  if (e.sqlstate() == "22P02" || e.sqlstate() == "22032")
    throw schedule_error("payload: not valid JSON: " + e.message());
  if (e.sqlstate() == "23514")
    throw schedule_error("task rejected by the database: " + e.message());
  throw;
}

// Without a key: one INSERT. With one: the SQL API's insert_tasks(), whose answer may be the
// holder's id; then the zone of a cron schedule, which insert_tasks() does not write (the
// caller makes sure those two run in one transaction).
add_result add_in_transaction(pg::connection& c, const task_spec& spec, const std::string& schema,
                              time_point first) {
  const schedule& when = spec.when;
  const auto grace = static_cast<int>(spec.misfire_grace.count());
  const auto base = static_cast<std::int64_t>(spec.backoff_base.count());
  const auto cap = static_cast<std::int64_t>(spec.backoff_cap.count());
  const auto timeout = static_cast<std::int64_t>(spec.timeout.count());
  const std::string kind(when.kind_name());
  const std::string misfire(to_string(spec.misfire));
  if (!spec.unique_key) {
    const auto id =
        c.exec_cached(with_schema(queries::insert_task, schema),
                      pg::param_list::of(
                          spec.type, spec.name, pg::json_text{spec.payload}, kind, when.spec(),
                          when.tz(), misfire, grace, spec.catch_up_limit, first, spec.priority,
                          spec.max_attempts, base, cap, timeout, spec.pause_after_failures))
            .one<std::int64_t>();
    return {id, add_outcome::created};
  }
  const auto res = c.exec_cached(
      with_schema(queries::add_unique_task, schema),
      pg::param_list::of(spec.type, spec.name, pg::json_text{spec.payload}, kind, when.spec(),
                         first, misfire, grace, spec.catch_up_limit, spec.priority,
                         spec.max_attempts, base, cap, timeout, spec.pause_after_failures,
                         *spec.unique_key, std::string(to_string(spec.on_conflict))));
  add_result out;
  out.id = res[0].get<std::int64_t>(0);
  const bool created = res[0].get<bool>(1);
  out.outcome = created                                      ? add_outcome::created
                : spec.on_conflict == conflict_mode::replace ? add_outcome::replaced
                                                             : add_outcome::existing;
  if (out.outcome != add_outcome::existing && when.tz() != "UTC") {
    c.query_cached(with_schema(queries::set_task_timezone, schema), out.id, when.tz());
  }
  return out;
}

}  // namespace

add_result add_task(pg::connection& conn, const task_spec& spec, const std::string& schema) {
  validate_schema_name(schema);
  spec.validate();
  const time_point first = first_run(spec.when);
  try {
    // One statement is atomic on its own; a cron task in a zone with a key may take two.
    const bool two_statements = spec.unique_key && spec.when.tz() != "UTC";
    if (two_statements && conn.tx_status() == pg::transaction_status::idle) {
      pg::transaction tx(conn);
      const auto out = add_in_transaction(conn, spec, schema, first);
      tx.commit();
      return out;
    }
    return add_in_transaction(conn, spec, schema, first);
  } catch (const pg::sql_error& e) {
    rethrow_add_error(e, spec);
  }
}

add_result add_task(pg::transaction& tx, const task_spec& spec, const std::string& schema) {
  return add_task(tx.conn(), spec, schema);
}

add_result store::add(const task_spec& spec) {
  spec.validate();  // before borrowing a connection
  auto lease = lane_.acquire();
  return add_task(lease.conn(), spec, schema_);
}

std::int64_t store::create(const task_spec& spec) {
  return add(spec).id;
}

namespace {

// row_to_task() and, in the column after its own, the unique_key (get_task.sql and the other
// reads of the store select it; the engine's claim does not).
constexpr int unique_key_column = 31;

task task_of(const pg::row& r) {
  task t = detail::row_to_task(r);
  t.unique_key = r.get<std::optional<std::string>>(unique_key_column);
  return t;
}

}  // namespace

std::optional<task> store::get(std::int64_t id) {
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::get_task, schema_), id);
  if (res.empty()) return std::nullopt;
  return task_of(res[0]);
}

std::optional<task> store::get_by_name(const std::string& name) {
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::get_task_by_name, schema_), name);
  if (res.empty()) return std::nullopt;
  return task_of(res[0]);
}

std::vector<task> store::list(const task_filter& f) {
  const int limit = std::clamp(f.limit, 1, 1000);
  std::optional<std::string> state;
  if (f.state) state = std::string(to_string(*f.state));
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::list_tasks, schema_), f.type, state,
                                       f.name, f.before_id, limit);
  std::vector<task> out;
  out.reserve(static_cast<std::size_t>(res.rows()));
  for (const auto row : res)
    out.push_back(task_of(row));
  return out;
}

namespace {

change_result apply_change(pool::pool& lane, const std::string& schema, const char* sql,
                           std::int64_t id, std::optional<time_point> when = std::nullopt) {
  auto lease = lane.acquire();
  pg::connection& c = lease.conn();
  const auto res = when ? c.query_cached(with_schema(sql, schema), id, *when)
                        : c.query_cached(with_schema(sql, schema), id);
  if (res.rows() == 1) {
    // Due work may have appeared: wake the nodes instead of waiting for their poll.
    c.query_cached(queries::notify_tasks, schema + ".tasks");
    return change_result::done;
  }
  const auto exists =
      c.query_cached(with_schema("SELECT 1 FROM {s}.tasks WHERE id = $1", schema), id);
  return exists.empty() ? change_result::not_found : change_result::wrong_state;
}

}  // namespace

change_result store::pause(std::int64_t id) {
  return apply_change(lane_, schema_, queries::pause_task, id);
}
change_result store::resume(std::int64_t id) {
  return apply_change(lane_, schema_, queries::resume_task, id);
}
change_result store::cancel(std::int64_t id) {
  return apply_change(lane_, schema_, queries::cancel_task, id);
}
change_result store::run_now(std::int64_t id) {
  return apply_change(lane_, schema_, queries::run_now_task, id);
}
change_result store::reschedule(std::int64_t id, time_point next_run_at) {
  return apply_change(lane_, schema_, queries::reschedule_task, id, next_run_at);
}

std::vector<task_run> store::runs(std::int64_t task_id, int limit,
                                  std::optional<std::int64_t> before_id) {
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::list_runs, schema_), task_id, before_id,
                                       std::clamp(limit, 1, 1000));
  std::vector<task_run> out;
  for (const auto r : res) {
    task_run run;
    run.id = r.get<std::int64_t>(0);
    run.task_id = r.get<std::int64_t>(1);
    run.type = r.get<std::string>(2);
    run.attempt = r.get<int>(3);
    run.claim_token = r.get<std::int64_t>(4);
    run.node = r.get<std::string>(5);
    run.fire_time = r.get<std::optional<time_point>>(6);
    run.started_at = r.get<time_point>(7);
    run.finished_at = r.get<time_point>(8);
    run.outcome = r.get<std::string>(9);
    run.error = r.get<std::optional<std::string>>(10);
    run.detail = r.get<std::optional<std::string>>(11);
    run.recorded_by = r.get<std::string>(12);
    out.push_back(std::move(run));
  }
  return out;
}

std::vector<cycle_record> store::cycles(int limit, std::optional<std::int64_t> before_id) {
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::list_cycles, schema_), before_id,
                                       std::clamp(limit, 1, 1000));
  std::vector<cycle_record> out;
  for (const auto r : res) {
    cycle_record c;
    c.id = r.get<std::int64_t>(0);
    c.node = r.get<std::string>(1);
    c.started_at = r.get<time_point>(2);
    c.duration_ms = r.get<double>(3);
    c.claimed = r.get<int>(4);
    c.succeeded = r.get<int>(5);
    c.failed = r.get<int>(6);
    c.skipped = r.get<int>(7);
    c.rescued = r.get<int>(8);
    c.fenced = r.get<int>(9);
    c.by_type = r.get<std::string>(10);
    c.error = r.get<std::optional<std::string>>(11);
    out.push_back(std::move(c));
  }
  return out;
}

cumulative_stats store::stats() {
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::read_stats, schema_));
  cumulative_stats st;
  for (const auto r : res) {
    const auto metric = r.get<std::string>(0);
    const auto type = r.get<std::string>(1);
    const auto value = r.get<std::int64_t>(2);
    st.totals[metric] += value;
    if (!type.empty()) st.by_type[metric][type] += value;
  }
  return st;
}

std::vector<node_info> store::nodes() {
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::list_nodes, schema_));
  std::vector<node_info> out;
  for (const auto r : res) {
    node_info n;
    n.id = r.get<std::string>(0);
    n.host = r.get<std::string>(1);
    n.pid = r.get<int>(2);
    n.version = r.get<std::string>(3);
    n.started_at = r.get<time_point>(4);
    n.heartbeat_at = r.get<time_point>(5);
    n.expires_at = r.get<time_point>(6);
    n.connection_budget = r.get<int>(7);
    n.state = r.get<std::string>(8);
    n.alive = r.get<bool>(9);
    out.push_back(std::move(n));
  }
  return out;
}

std::optional<std::string> store::leader() {
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::current_leader, schema_));
  if (res.empty()) return std::nullopt;
  return res[0].get<std::string>(0);
}

std::vector<queue_depth> store::queues() {
  auto lease = lane_.acquire();
  const auto res = lease->query_cached(with_schema(queries::queue_depths, schema_));
  std::vector<queue_depth> out;
  for (const auto r : res) {
    const auto type = r.get<std::string>(0);
    if (out.empty() || out.back().type != type) out.push_back(queue_depth{type, {}, 0});
    out.back().by_state[r.get<std::string>(1)] = r.get<std::int64_t>(2);
    out.back().lag_s = std::max(out.back().lag_s, r.get<double>(3));
  }
  return out;
}

prune_result store::prune(const retention& keep, std::chrono::milliseconds budget, int batch) {
  if (batch < 1) throw std::invalid_argument("store::prune: batch must be at least 1");
  const auto until = std::chrono::steady_clock::now() + budget;
  prune_result out;
  auto lease = lane_.acquire();
  // Deletes batch after batch; false when the budget ran out before the last one.
  const auto drain = [&](const char* sql, std::chrono::hours age, std::int64_t& count) {
    if (age.count() <= 0) return true;
    const auto text = with_schema(sql, schema_);
    for (;;) {
      const auto n = lease
                         ->query(text, static_cast<std::int64_t>(age.count()),
                                 static_cast<std::int64_t>(batch))
                         .affected_rows();
      count += n;
      if (n < batch) return true;
      if (std::chrono::steady_clock::now() >= until) return false;
    }
  };
  out.complete = drain(queries::prune_runs, keep.runs, out.runs) &&
                 drain(queries::prune_cycles, keep.cycles, out.cycles) &&
                 drain(queries::prune_tasks, keep.finished_tasks, out.tasks);
  out.nodes = lease->exec(with_schema(queries::prune_nodes, schema_)).affected_rows();
  return out;
}

int store::budget_of_other_nodes(const std::string& except_node) {
  auto lease = lane_.acquire();
  return lease->query_cached(with_schema(queries::other_nodes_budget, schema_), except_node)
      .one<int>();
}

}  // namespace sluice::sched
