// `sluice migrate [--status]`: brings the schema up to the version this binary knows, or shows
// where it stands. A database migrated by a newer sluice is refused (exit 1), never touched.

#include <iostream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"

namespace sluice::cli {
namespace {

struct migrate_options {
  common_options common;
  bool status = false;
};

std::string versions_text(const std::vector<int>& versions) {
  std::string out;
  for (const int v : versions)
    out += (out.empty() ? "" : ", ") + std::to_string(v);
  return out;
}

void run_migrate(const migrate_options& opt) {
  const daemon_config cfg = resolve_config(opt.common);
  database_session db(cfg, "sluice/migrate");
  const std::string& schema = db.store().schema();
  // schema_error (a newer database, or with --status nothing else) propagates: exit 1 with its
  // message.
  const sched::migration_status st =
      opt.status ? db.store().check_schema(false) : db.store().migrate();
  if (opt.common.json) {
    nlohmann::ordered_json j;
    j["schema"] = schema;
    j["current"] = st.current;
    j["latest"] = st.latest;
    j["applied"] = st.applied_now;
    j["up_to_date"] = st.current == st.latest;
    std::cout << j.dump() << '\n';
    return;
  }
  if (opt.status) {
    if (st.current == st.latest) {
      std::cout << "schema " << schema << ": up to date (version " << st.current << ")\n";
    } else {
      std::cout << "schema " << schema << ": version " << st.current << ", latest " << st.latest
                << ": " << st.latest - st.current
                << " migration(s) pending; run `sluice migrate`\n";
    }
    return;
  }
  if (st.applied_now.empty()) {
    std::cout << "schema " << schema << ": up to date (version " << st.current << ")\n";
  } else {
    std::cout << "schema " << schema << ": applied version"
              << (st.applied_now.size() > 1 ? "s " : " ") << versions_text(st.applied_now)
              << "; now at version " << st.current << '\n';
  }
}

}  // namespace

void register_migrate(CLI::App& app) {
  auto opt = std::make_shared<migrate_options>();
  auto* cmd = app.add_subcommand(
      "migrate", "Create or upgrade sluice's tables to the version this binary knows");
  add_common_options(*cmd, opt->common);
  cmd->add_flag("--status", opt->status,
                "Show the current and latest schema versions without changing anything");
  cmd->callback([opt] { run_migrate(*opt); });
}

}  // namespace sluice::cli
