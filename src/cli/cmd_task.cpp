// `sluice task add|list|show|runs|pause|resume|cancel|run-now`: the operator's view of the tasks
// table, through sched::store (the same calls the API makes).

#include <algorithm>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "http/json.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/sched/schedule.hpp"

namespace sluice::cli {
namespace {

using json = http::json;

// The task and run JSON are the HTTP API's (http/json.hpp), names and all, so that the output of
// `task show --json` can be posted to POST /api/v1/tasks as it is.
json task_json(const sched::task& t) {
  return http::json_of(t);
}

json run_json(const sched::task_run& r) {
  return http::json_of(r);
}

std::string schedule_text(const sched::task& t) {
  if (t.schedule_kind == "cron") {
    return "cron " + t.schedule_spec + (t.timezone == "UTC" ? "" : " (" + t.timezone + ")");
  }
  if (t.schedule_kind == "interval") return "every " + t.schedule_spec;
  return "once";
}

// ---- add ------------------------------------------------------------------------------------

struct add_options {
  common_options common;
  std::string type;
  std::optional<std::string> name;
  std::string payload = "{}";
  std::optional<std::string> at, every, cron;
  std::string tz = "UTC";
  // Unset: the [types.NAME] default of the configuration, else the general default.
  std::optional<int> priority;
  std::optional<int> max_attempts;
  std::optional<std::string> timeout;
  std::optional<std::string> backoff_base;
  std::optional<std::string> backoff_cap;
  std::string misfire = "coalesce";
  std::string misfire_grace = "60s";
  int catch_up_limit = 10;
  int pause_after_failures = 0;
  std::optional<std::string> unique_key;
  std::string on_conflict = "keep";
};

sched::schedule schedule_of(const add_options& opt) {
  const int given = (opt.at ? 1 : 0) + (opt.every ? 1 : 0) + (opt.cron ? 1 : 0);
  if (given != 1) throw command_error("give exactly one of --at, --every and --cron");
  if (opt.tz != "UTC" && !opt.cron) throw command_error("--tz applies to --cron schedules only");
  if (opt.at) {
    if (*opt.at == "now") return sched::schedule::once(std::chrono::system_clock::now());
    return sched::schedule::once(sched::parse_timestamp(*opt.at));
  }
  if (opt.every) return sched::schedule::parse("every:" + *opt.every);
  return sched::schedule::cron(*opt.cron, opt.tz);
}

// The environment rules of command tasks, checked here as the daemon's API checks them, so that
// a task that would set LD_PRELOAD (or a name [commands] allowed_env leaves out) is refused
// when it is created. The rest of the payload is left to the node that runs the task: this
// file's [commands] allow-list may not be that node's.
void check_command_env(const daemon_config& cfg, const std::string& type, const json& payload) {
  std::string handler = type;
  const auto alias = std::find_if(cfg.types.begin(), cfg.types.end(),
                                  [&](const task_type_alias& t) { return t.name == type; });
  if (alias != cfg.types.end()) handler = alias->handler;
  if (handler != "command" || !payload.contains("env") || !payload["env"].is_object()) return;
  sched::command_policy policy;
  policy.allowed_env = cfg.commands.allowed_env;
  for (const auto& [name, value] : payload["env"].items()) {
    if (const auto problem = sched::command_env_problem(name, policy))
      throw command_error("command payload: 'env." + name + "' " + *problem);
  }
}

void run_add(const add_options& opt) {
  sched::task_spec spec;
  spec.type = opt.type;
  spec.name = opt.name;
  const json payload = json::parse(opt.payload, nullptr, false);
  if (payload.is_discarded()) throw command_error("payload: not valid JSON: " + opt.payload);
  if (!payload.is_object()) throw command_error("payload: must be a JSON object ({...})");
  spec.payload = payload.dump();
  spec.when = schedule_of(opt);
  const daemon_config cfg = resolve_config(opt.common);
  check_command_env(cfg, spec.type, payload);
  cfg.apply_type_defaults(spec);
  if (opt.priority) spec.priority = *opt.priority;
  if (opt.max_attempts) spec.max_attempts = *opt.max_attempts;
  if (opt.timeout) spec.timeout = parse_duration_option(*opt.timeout, "--timeout");
  if (opt.backoff_base)
    spec.backoff_base = parse_duration_option(*opt.backoff_base, "--backoff-base");
  if (opt.backoff_cap) spec.backoff_cap = parse_duration_option(*opt.backoff_cap, "--backoff-cap");
  spec.misfire = sched::parse_misfire_policy(opt.misfire);
  spec.misfire_grace = std::chrono::duration_cast<std::chrono::seconds>(
      parse_duration_option(opt.misfire_grace, "--misfire-grace"));
  spec.catch_up_limit = opt.catch_up_limit;
  spec.pause_after_failures = opt.pause_after_failures;
  spec.unique_key = opt.unique_key;
  try {
    spec.on_conflict = sched::parse_conflict_mode(opt.on_conflict);
  } catch (const sched::schedule_error&) {
    throw command_error("--on-conflict: '" + opt.on_conflict + "' is not one of keep, replace");
  }
  spec.validate();  // before connecting: a bad option is reported without a round trip

  database_session db(cfg);
  db.store().check_schema(true);
  const sched::add_result added = db.store().add(spec);
  const std::int64_t id = added.id;
  const auto t = db.store().get(id);
  if (opt.common.json) {
    std::cout << (t ? task_json(*t) : json{{"id", id}}).dump() << '\n';
    return;
  }
  switch (added.outcome) {
    case sched::add_outcome::created:
      std::cout << "created task " << id;
      break;
    case sched::add_outcome::existing:
      std::cout << "task " << id << " already holds unique key '" << *spec.unique_key
                << "': nothing added";
      break;
    case sched::add_outcome::replaced:
      std::cout << "replaced the payload and schedule of task " << id
                << ", which holds unique key '" << *spec.unique_key << "'";
      break;
  }
  if (t) {
    std::cout << " (" << t->type << ", " << schedule_text(*t) << ", next run "
              << format_time(t->next_run_at) << ")";
  }
  std::cout << '\n';
}

// ---- list -----------------------------------------------------------------------------------

struct list_options {
  common_options common;
  std::optional<std::string> type, state, name;
  int limit = 50;
};

void run_list(const list_options& opt) {
  sched::task_filter f;
  f.type = opt.type;
  f.name = opt.name;
  f.limit = opt.limit;
  if (opt.state) {
    try {
      f.state = sched::parse_task_state(*opt.state);
    } catch (const std::invalid_argument& e) {
      throw command_error(std::string("--state: ") + e.what());
    }
  }
  const daemon_config cfg = resolve_config(opt.common);
  database_session db(cfg);
  db.store().check_schema(true);
  const auto tasks = db.store().list(f);
  if (opt.common.json) {
    json arr = json::array();
    for (const auto& t : tasks)
      arr.push_back(task_json(t));
    std::cout << arr.dump() << '\n';
    return;
  }
  if (tasks.empty()) {
    std::cout << "no tasks\n";
    return;
  }
  text_table table(
      {"ID", "TYPE", "NAME", "STATE", "SCHEDULE", "NEXT RUN", "ATTEMPT", "RUNS", "LAST ERROR"}, 40);
  for (const auto& t : tasks) {
    table.add({std::to_string(t.id), t.type, t.name.value_or("-"),
               std::string(sched::to_string(t.state)), schedule_text(t), format_time(t.next_run_at),
               std::to_string(t.attempt) + "/" + std::to_string(t.max_attempts),
               std::to_string(t.runs), t.last_error.value_or("-")});
  }
  table.print(std::cout);
}

// The runs table of `show` and `runs`.
void print_runs(const std::vector<sched::task_run>& runs) {
  if (runs.empty()) {
    std::cout << "no runs yet\n";
    return;
  }
  text_table table({"RUN", "ATTEMPT", "NODE", "STARTED", "DURATION", "OUTCOME", "ERROR"}, 60);
  for (const auto& r : runs) {
    char duration[32];
    std::snprintf(duration, sizeof duration, "%.1fms", r.duration_ms());
    table.add({std::to_string(r.id), std::to_string(r.attempt), r.node, format_time(r.started_at),
               duration, r.outcome, r.error.value_or("")});
  }
  table.print(std::cout);
}

// ---- show -----------------------------------------------------------------------------------

struct show_options {
  common_options common;
  std::string id;
  int runs = 10;
};

void run_show(const show_options& opt) {
  const std::int64_t id = parse_task_id(opt.id);
  const daemon_config cfg = resolve_config(opt.common);
  database_session db(cfg);
  db.store().check_schema(true);
  const auto t = db.store().get(id);
  if (!t) throw command_error("task " + std::to_string(id) + " not found");
  if (opt.common.json) {
    // The task alone, as GET /api/v1/tasks/{id} returns it: POST /api/v1/tasks takes it back.
    // Its runs: `sluice task runs ID --json`.
    std::cout << task_json(*t).dump() << '\n';
    return;
  }
  const auto runs = db.store().runs(id, opt.runs);
  auto field = [](const char* key, const std::string& value) {
    std::cout << key << std::string(22 - std::string_view(key).size(), ' ') << value << '\n';
  };
  field("id", std::to_string(t->id));
  field("type", t->type);
  field("name", t->name.value_or("-"));
  if (t->unique_key) field("unique key", *t->unique_key);
  field("state", std::string(sched::to_string(t->state)));
  field("schedule", schedule_text(*t));
  field("payload", t->payload);
  field("next run", format_time(t->next_run_at));
  field("priority", std::to_string(t->priority));
  field("attempt", std::to_string(t->attempt) + " of " + std::to_string(t->max_attempts));
  field("timeout", format_ms(std::chrono::milliseconds(t->timeout_ms)));
  field("backoff", format_ms(std::chrono::milliseconds(t->backoff_base_ms)) + " doubling to " +
                       format_ms(std::chrono::milliseconds(t->backoff_cap_ms)));
  field("misfire", t->misfire_policy + ", grace " +
                       format_ms(std::chrono::seconds(t->misfire_grace_s)) +
                       (t->misfire_policy == "catch_up"
                            ? ", at most " + std::to_string(t->catch_up_limit) + " runs"
                            : std::string()));
  if (t->pause_after_failures > 0) {
    field("pause after", std::to_string(t->pause_after_failures) + " consecutive failures");
  }
  if (t->claimed_by) {
    field("claimed by", *t->claimed_by + " at " + format_time(t->claimed_at) + ", lease until " +
                            format_time(t->lease_until));
  }
  field("runs", std::to_string(t->runs));
  field("consecutive failures", std::to_string(t->consecutive_failures));
  field("last run", format_time(t->last_run_at));
  field("last success", format_time(t->last_success_at));
  field("last error", t->last_error.value_or("-"));
  field("created", format_time(t->created_at));
  field("updated", format_time(t->updated_at));
  std::cout << '\n';
  print_runs(runs);
}

// ---- runs -----------------------------------------------------------------------------------

struct runs_options {
  common_options common;
  std::string id;
  int limit = 50;
};

void run_runs(const runs_options& opt) {
  const std::int64_t id = parse_task_id(opt.id);
  const daemon_config cfg = resolve_config(opt.common);
  database_session db(cfg);
  db.store().check_schema(true);
  if (!db.store().get(id)) throw command_error("task " + std::to_string(id) + " not found");
  const auto runs = db.store().runs(id, opt.limit);
  if (opt.common.json) {
    json arr = json::array();
    for (const auto& r : runs)
      arr.push_back(run_json(r));
    std::cout << arr.dump() << '\n';
    return;
  }
  print_runs(runs);
}

// ---- pause / resume / cancel / run-now --------------------------------------------------------

struct change_options {
  common_options common;
  std::string id;
};

using change_fn = sched::change_result (sched::store::*)(std::int64_t);

void run_change(const change_options& opt, change_fn fn, const char* verb, const char* done) {
  const std::int64_t id = parse_task_id(opt.id);
  const daemon_config cfg = resolve_config(opt.common);
  database_session db(cfg);
  db.store().check_schema(true);
  const sched::change_result r = (db.store().*fn)(id);
  const std::string task = "task " + std::to_string(id);
  if (r == sched::change_result::not_found) throw command_error(task + " not found");
  if (r == sched::change_result::wrong_state) {
    const auto t = db.store().get(id);
    if (!t) throw command_error(task + " not found");
    throw command_error(task + " is " + std::string(sched::to_string(t->state)) + ": cannot " +
                        verb);
  }
  const auto t = db.store().get(id);
  if (opt.common.json) {
    std::cout << (t ? task_json(*t) : json{{"id", id}}).dump() << '\n';
    return;
  }
  std::cout << task << ' ' << done;
  if (t) std::cout << " (now " << sched::to_string(t->state) << ")";
  std::cout << '\n';
}

void add_change(CLI::App& task, const char* name, const char* description, change_fn fn,
                const char* verb, const char* done) {
  auto opt = std::make_shared<change_options>();
  auto* cmd = task.add_subcommand(name, description);
  add_common_options(*cmd, opt->common);
  cmd->add_option("id", opt->id, "Task id")->required();
  cmd->callback([opt, fn, verb, done] { run_change(*opt, fn, verb, done); });
}

}  // namespace

void register_task(CLI::App& app) {
  auto* task = app.add_subcommand("task", "Create, list, inspect and change tasks");
  task->require_subcommand(1);

  {
    auto opt = std::make_shared<add_options>();
    auto* cmd = task->add_subcommand("add", "Create a task");
    add_common_options(*cmd, opt->common);
    cmd->add_option("--type", opt->type, "Task type: selects the handler (sql, http, command, ...)")
        ->required();
    cmd->add_option("--name", opt->name, "Unique name (optional)");
    cmd->add_option("--payload", opt->payload, "JSON object handed to the handler")
        ->capture_default_str();
    cmd->add_option("--at", opt->at,
                    "Run once at this time: RFC 3339 (2026-05-01T12:00:00Z) or 'now'");
    cmd->add_option("--every", opt->every,
                    "Run every DURATION (90, 30s, 1h30m, 1d; '5m@2026-01-01T00:00:00Z' anchors)");
    cmd->add_option("--cron", opt->cron, "Run on a five-field cron expression ('*/5 * * * *')");
    cmd->add_option("--tz", opt->tz, "Time zone of --cron (IANA name such as Europe/Berlin)")
        ->capture_default_str();
    // Defaults shown are the general ones; a [types.NAME] section of --config may set others.
    cmd->add_option("--priority", opt->priority, "-1000..1000, higher runs first among due tasks")
        ->default_str("0");
    cmd->add_option("--max-attempts", opt->max_attempts, "Attempts per occurrence, 1..1000")
        ->default_str("3");
    cmd->add_option("--timeout", opt->timeout, "Longest run (90, 30s, 500ms, 5m)")
        ->default_str("60s");
    cmd->add_option("--backoff-base", opt->backoff_base, "First retry delay, doubling per attempt")
        ->default_str("1s");
    cmd->add_option("--backoff-cap", opt->backoff_cap, "Longest retry delay")->default_str("1h");
    cmd->add_option("--misfire", opt->misfire,
                    "Recurring tasks found late: coalesce (run once), catch_up (run each missed "
                    "fire), skip")
        ->capture_default_str();
    cmd->add_option("--misfire-grace", opt->misfire_grace, "How late a run still counts as on time")
        ->capture_default_str();
    cmd->add_option("--catch-up-limit", opt->catch_up_limit, "catch_up: most missed runs made up")
        ->capture_default_str();
    cmd->add_option("--pause-after-failures", opt->pause_after_failures,
                    "Recurring tasks: pause after N consecutive failed occurrences (0: never)")
        ->capture_default_str();
    cmd->add_option("--unique-key", opt->unique_key,
                    "At most one live task holds this key (1-200 characters; global across types)");
    cmd->add_option("--on-conflict", opt->on_conflict,
                    "When a live task holds --unique-key: keep it (add nothing) or replace its "
                    "payload and schedule")
        ->capture_default_str();
    cmd->callback([opt] { run_add(*opt); });
  }
  {
    auto opt = std::make_shared<list_options>();
    auto* cmd = task->add_subcommand("list", "List tasks, newest first");
    add_common_options(*cmd, opt->common);
    cmd->add_option("--type", opt->type, "Only this type");
    cmd->add_option("--state", opt->state,
                    "Only this state (scheduled, available, running, retryable, succeeded, "
                    "failed, cancelled, paused)");
    cmd->add_option("--name", opt->name, "Only names containing this text");
    cmd->add_option("--limit", opt->limit, "At most this many tasks")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->callback([opt] { run_list(*opt); });
  }
  {
    auto opt = std::make_shared<show_options>();
    auto* cmd = task->add_subcommand("show", "Show a task and its latest runs");
    add_common_options(*cmd, opt->common);
    cmd->add_option("id", opt->id, "Task id")->required();
    cmd->add_option("--runs", opt->runs, "Latest runs shown")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->callback([opt] { run_show(*opt); });
  }
  {
    auto opt = std::make_shared<runs_options>();
    auto* cmd = task->add_subcommand("runs", "List a task's runs, newest first");
    add_common_options(*cmd, opt->common);
    cmd->add_option("id", opt->id, "Task id")->required();
    cmd->add_option("--limit", opt->limit, "At most this many runs")
        ->check(CLI::Range(1, 1000))
        ->capture_default_str();
    cmd->callback([opt] { run_runs(*opt); });
  }
  add_change(*task, "pause", "Stop a task from running until resumed", &sched::store::pause,
             "pause", "paused");
  add_change(*task, "resume", "Resume a paused task", &sched::store::resume, "resume", "resumed");
  add_change(*task, "cancel", "Cancel a task for good", &sched::store::cancel, "cancel",
             "cancelled");
  add_change(*task, "run-now", "Make a task due now (also a finished or paused one)",
             &sched::store::run_now, "run it now", "due now");
}

}  // namespace sluice::cli
