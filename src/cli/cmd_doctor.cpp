// `sluice doctor`: checks what a deployment needs and ends with one verdict line, "OK" or
// "PROBLEMS FOUND: n" (exit 0 or 1). The checks: the server answers and is new enough; a node
// with this configuration fits the server's connection slots next to the live nodes; the schema
// is at this binary's version; the clocks agree; which nodes are alive; no task is left running
// on a node that is gone.

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "sluice/enum_names.hpp"
#include "sluice/pool/manager.hpp"

namespace sluice::cli {
namespace {

using json = nlohmann::ordered_json;
using std::chrono::system_clock;

// Oldest server the schema works on: its trigger uses EXECUTE FUNCTION (PostgreSQL 11).
constexpr int min_server_version = 110000;
// Beyond this, schedules computed on this machine and due times compared on the server disagree
// noticeably.
constexpr double max_clock_skew_s = 1.0;

enum class verdict { ok, problem, skipped };

struct check {
  std::string name;
  verdict status = verdict::ok;
  std::string message;
};

class checklist {
 public:
  void ok(std::string name, std::string message) {
    items_.push_back({std::move(name), verdict::ok, std::move(message)});
  }
  void problem(std::string name, std::string message) {
    items_.push_back({std::move(name), verdict::problem, std::move(message)});
  }
  void skipped(std::string name, std::string message) {
    items_.push_back({std::move(name), verdict::skipped, std::move(message)});
  }
  [[nodiscard]] int problems() const {
    return static_cast<int>(std::count_if(
        items_.begin(), items_.end(), [](const check& c) { return c.status == verdict::problem; }));
  }
  [[nodiscard]] const std::vector<check>& items() const noexcept { return items_; }

 private:
  std::vector<check> items_;
};

std::string_view label(verdict v) {
  static constexpr std::array<std::string_view, 3> names{"ok", "PROBLEM", "skipped"};
  return enum_name<verdict::skipped>(v, names);
}

std::string seconds_text(double s) {
  char buf[32];
  if (s < 1) {
    std::snprintf(buf, sizeof buf, "%.2f ms", s * 1000);
  } else {
    std::snprintf(buf, sizeof buf, "%.3f s", s);
  }
  return buf;
}

// Server clock minus this machine's clock, from the round trip with the least delay of a few.
// `uncertainty` is half that round trip.
double clock_skew_s(pg::connection& conn, double& uncertainty) {
  double best_rtt = 1e9;
  double skew = 0;
  for (int i = 0; i < 5; ++i) {
    const auto before = system_clock::now();
    const auto server = conn.exec("SELECT clock_timestamp()").one<system_clock::time_point>();
    const auto after = system_clock::now();
    const double rtt = std::chrono::duration<double>(after - before).count();
    if (rtt < best_rtt) {
      best_rtt = rtt;
      skew = std::chrono::duration<double>(server - (before + (after - before) / 2)).count();
    }
  }
  uncertainty = best_rtt / 2;
  return skew;
}

void check_budget(checklist& list, const daemon_config& cfg, pg::connection& conn,
                  std::optional<sched::store*> store) {
  int others = 0;
  std::string others_note;
  if (store) {
    others = (*store)->budget_of_other_nodes();
  } else {
    others_note = " (no other nodes counted: the schema is not migrated)";
  }
  try {
    pool::pool_manager manager(cfg.manager_settings());
    for (auto s : cfg.pool_settings()) {
      s.min_idle = 0;  // the check needs the settings, not connections
      manager.add(std::move(s));
    }
    const pool::budget_report r = manager.check_budget(conn, others);
    list.ok("budget", "a node with this configuration fits: " + pool::describe(r) + others_note);
  } catch (const pool::budget_error& e) {
    list.problem("budget", std::string(e.what()) + others_note);
  }
}

void check_nodes_and_tasks(checklist& list, sched::store& store) {
  const auto nodes = store.nodes();
  std::set<std::string> alive;
  std::vector<std::string> dead;
  for (const auto& n : nodes) {
    if (n.alive) {
      alive.insert(n.id);
    } else if (n.state != "stopped") {
      dead.push_back(n.id + " (last heartbeat " + format_time(n.heartbeat_at) + ")");
    }
  }
  std::string text = std::to_string(alive.size()) + " alive";
  if (!alive.empty()) {
    text += " (";
    bool first = true;
    for (const auto& id : alive) {
      text += (first ? "" : ", ") + id;
      first = false;
    }
    text += ")";
    const auto leader = store.leader();
    text += leader ? ", leader " + *leader : ", no leader yet";
  }
  text += "; " + std::to_string(dead.size()) + " dead";
  for (std::size_t i = 0; i < dead.size() && i < 5; ++i)
    text += (i == 0 ? ": " : ", ") + dead[i];
  list.ok("nodes", text);

  sched::task_filter f;
  f.state = sched::task_state::running;
  f.limit = 1000;
  std::vector<std::string> orphans;
  std::size_t orphan_count = 0;
  for (const auto& t : store.list(f)) {
    if (t.claimed_by && alive.count(*t.claimed_by) != 0) continue;
    ++orphan_count;
    if (orphans.size() < 10) {
      orphans.push_back(std::to_string(t.id) + " on " + t.claimed_by.value_or("?"));
    }
  }
  if (orphan_count == 0) {
    list.ok("stuck tasks", "no task is running on a dead node");
    return;
  }
  std::string ids;
  for (const auto& o : orphans)
    ids += (ids.empty() ? "" : ", ") + o;
  list.problem("stuck tasks",
               std::to_string(orphan_count) + " task(s) running on nodes that are gone (" + ids +
                   (orphan_count > orphans.size() ? ", ..." : "") + "); " +
                   (alive.empty() ? "start a node: its leader returns them to the queue"
                                  : "the leader should return them within a few seconds; "
                                    "if this persists, check the nodes' logs"));
}

void run_doctor(const common_options& opt) {
  const daemon_config cfg = resolve_config(opt);
  checklist list;

  std::optional<pg::connection> conn;
  try {
    conn = open_connection(cfg, "sluice/doctor");
  } catch (const pg::error& e) {
    list.problem("server", e.what());
  }
  if (conn) {
    const std::string version = conn->exec("SHOW server_version").one<std::string>();
    const std::string where = conn->describe();
    if (conn->server_version() < min_server_version) {
      list.problem("server", "PostgreSQL " + version + " at " + where +
                                 ": sluice needs PostgreSQL 11 or newer");
    } else {
      list.ok("server", "PostgreSQL " + version + " at " + where);
    }

    std::unique_ptr<database_session> db;
    bool schema_current = false;
    try {
      db = std::make_unique<database_session>(cfg, "sluice/doctor");
      const auto st = db->store().check_schema(false);
      if (st.current == 0) {
        list.problem("schema", "schema " + cfg.scheduler.schema +
                                   " has no sluice tables: run `sluice migrate`");
      } else if (st.current < st.latest) {
        list.problem("schema", "schema " + cfg.scheduler.schema + " is at version " +
                                   std::to_string(st.current) + ", this sluice needs " +
                                   std::to_string(st.latest) + ": run `sluice migrate`");
      } else {
        list.ok("schema", "schema " + cfg.scheduler.schema + " at version " +
                              std::to_string(st.current) + " (latest " + std::to_string(st.latest) +
                              ")");
        schema_current = true;
      }
    } catch (const sched::schema_error& e) {
      list.problem("schema", e.what());
    }

    check_budget(list, cfg, *conn,
                 schema_current ? std::optional<sched::store*>(&db->store()) : std::nullopt);

    double uncertainty = 0;
    const double skew = clock_skew_s(*conn, uncertainty);
    const std::string skew_text = "the server's clock is " + seconds_text(std::fabs(skew)) +
                                  (skew >= 0 ? " ahead of" : " behind") + " this machine's (+/- " +
                                  seconds_text(uncertainty) + ")";
    if (std::fabs(skew) > max_clock_skew_s) {
      list.problem("clock", skew_text +
                                ": synchronise the clocks (NTP); schedules are computed "
                                "on the nodes and due times compared on the server");
    } else {
      list.ok("clock", skew_text);
    }

    if (schema_current) {
      check_nodes_and_tasks(list, db->store());
    } else {
      list.skipped("nodes", "needs the current schema");
      list.skipped("stuck tasks", "needs the current schema");
    }
  } else {
    for (const char* name : {"schema", "budget", "clock", "nodes", "stuck tasks"})
      list.skipped(name, "needs the server");
  }

  const int problems = list.problems();
  const std::string verdict_line =
      problems == 0 ? "OK" : "PROBLEMS FOUND: " + std::to_string(problems);
  if (opt.json) {
    json j;
    j["checks"] = json::array();
    for (const auto& c : list.items()) {
      j["checks"].push_back(
          {{"name", c.name}, {"status", std::string(label(c.status))}, {"message", c.message}});
    }
    j["problems"] = problems;
    j["verdict"] = verdict_line;
    std::cout << j.dump() << '\n';
  } else {
    for (const auto& c : list.items()) {
      std::string tag(label(c.status));
      tag.resize(9, ' ');
      std::string name = c.name + ":";
      name.resize(13, ' ');
      std::cout << tag << name << c.message << '\n';
    }
    std::cout << verdict_line << '\n';
  }
  exit_code() = problems == 0 ? 0 : 1;
}

}  // namespace

void register_doctor(CLI::App& app) {
  auto opt = std::make_shared<common_options>();
  auto* cmd = app.add_subcommand(
      "doctor",
      "Check the server, connection budget, schema, clocks and nodes; exit 1 on problems");
  add_common_options(*cmd, *opt);
  cmd->callback([opt] { run_doctor(*opt); });
}

}  // namespace sluice::cli
