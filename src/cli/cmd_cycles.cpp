// `sluice cycles [--limit N]`: the check-cycle event log, newest first. Each row is one check
// cycle of one node (what the seed's "check cycle event log" recorded), or one rescue of dead
// nodes' tasks by the leader.

#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "sluice/sched/schedule.hpp"

namespace sluice::cli {
namespace {

using json = nlohmann::ordered_json;

struct cycles_options {
  common_options common;
  int limit = 50;
  std::optional<std::int64_t> before;
};

void run_cycles(const cycles_options& opt) {
  const daemon_config cfg = resolve_config(opt.common);
  database_session db(cfg);
  db.store().check_schema(true);
  const auto cycles = db.store().cycles(opt.limit, opt.before);
  if (opt.common.json) {
    json arr = json::array();
    for (const auto& c : cycles) {
      json j;
      j["id"] = c.id;
      j["node"] = c.node;
      j["started_at"] = sched::format_timestamp(c.started_at);
      j["duration_ms"] = c.duration_ms;
      j["claimed"] = c.claimed;
      j["succeeded"] = c.succeeded;
      j["failed"] = c.failed;
      j["skipped"] = c.skipped;
      j["rescued"] = c.rescued;
      j["fenced"] = c.fenced;
      j["by_type"] = json::parse(c.by_type, nullptr, false);
      if (j["by_type"].is_discarded()) j["by_type"] = c.by_type;
      j["error"] = c.error ? json(*c.error) : json(nullptr);
      arr.push_back(std::move(j));
    }
    std::cout << arr.dump() << '\n';
    return;
  }
  if (cycles.empty()) {
    std::cout << "no check cycles recorded\n";
    return;
  }
  text_table table({"ID", "NODE", "STARTED", "MS", "CLAIMED", "OK", "FAILED", "SKIPPED", "RESCUED",
                    "FENCED", "ERROR"},
                   60);
  for (const auto& c : cycles) {
    char ms[32];
    std::snprintf(ms, sizeof ms, "%.1f", c.duration_ms);
    table.add({std::to_string(c.id), c.node, format_time(c.started_at), ms,
               std::to_string(c.claimed), std::to_string(c.succeeded), std::to_string(c.failed),
               std::to_string(c.skipped), std::to_string(c.rescued), std::to_string(c.fenced),
               c.error.value_or("")});
  }
  table.print(std::cout);
}

}  // namespace

void register_cycles(CLI::App& app) {
  auto opt = std::make_shared<cycles_options>();
  auto* cmd = app.add_subcommand("cycles", "Show the check-cycle log, newest first");
  add_common_options(*cmd, opt->common);
  cmd->add_option("--limit", opt->limit, "At most this many cycles")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  cmd->add_option("--before", opt->before, "Only cycles with an id below this (paging)")
      ->check(CLI::PositiveNumber);
  cmd->callback([opt] { run_cycles(*opt); });
}

}  // namespace sluice::cli
