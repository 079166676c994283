// `sluice pools`: the pools a configuration defines, as this process would create them, and
// whether their connection budget fits the server next to the live nodes. Nothing is borrowed
// from the pools (they open no connection unless min_idle asks for it); the budget is read over
// one connection of the command's own. With --url the pools of a running daemon are fetched from
// its API instead.

#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <curl/curl.h>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "sluice/pg/conninfo.hpp"
#include "sluice/pool/manager.hpp"

namespace sluice::cli {
namespace {

using json = nlohmann::ordered_json;

struct pools_options {
  common_options common;
  std::string url;  // a running daemon's base URL
};

// ---- a running daemon -----------------------------------------------------------------------

struct curl_deleter {
  void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};

std::size_t append_body(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

json fetch_json(const std::string& url) {
  std::unique_ptr<CURL, curl_deleter> curl(curl_easy_init());
  if (!curl) throw command_error("could not initialise libcurl");
  std::string body;
  char error[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, &append_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 10000L);
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  const CURLcode rc = curl_easy_perform(curl.get());
  if (rc != CURLE_OK) {
    throw command_error("GET " + url + ": " +
                        (error[0] != '\0' ? std::string(error) : curl_easy_strerror(rc)));
  }
  long status = 0;
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
  if (status != 200) {
    // One line: the daemon's {"error": {"message": ...}} when it sent one, else the start of
    // the body.
    const json err = json::parse(body, nullptr, false);
    std::string reason = body.substr(0, 200);
    if (err.is_object() && err.contains("error") && err["error"].is_object() &&
        err["error"].contains("message") && err["error"]["message"].is_string()) {
      reason = err["error"]["message"].get<std::string>();
    }
    std::string line;
    for (const char c : reason) {
      const bool space = c == '\n' || c == '\r' || c == '\t' || c == ' ';
      if (!space || (!line.empty() && line.back() != ' ')) line += space ? ' ' : c;
    }
    throw command_error("GET " + url + ": HTTP " + std::to_string(status) +
                        (line.empty() ? "" : ": " + line));
  }
  json j = json::parse(body, nullptr, false);
  if (j.is_discarded()) throw command_error("GET " + url + ": the answer is not JSON");
  return j;
}

void show_remote(const pools_options& opt) {
  std::string base = opt.url;
  while (!base.empty() && base.back() == '/')
    base.pop_back();
  const json j = fetch_json(base + "/api/v1/pools");
  if (opt.common.json) {
    std::cout << j.dump() << '\n';
    return;
  }
  const json* list = &j;
  if (j.is_object() && j.contains("pools")) list = &j["pools"];
  if (!list->is_array()) {
    std::cout << j.dump(2) << '\n';
    return;
  }
  // The pool_stats fields, those the daemon sends, in this order.
  static const std::vector<std::string> keys = {
      "name",     "size",    "max_overflow", "open",     "checked_in", "checked_out",
      "overflow", "waiting", "saturated",    "timeouts", "wait_p99_ms"};
  std::vector<std::string> shown;
  for (const auto& k : keys) {
    for (const auto& p : *list) {
      if (p.is_object() && p.contains(k)) {
        shown.push_back(k);
        break;
      }
    }
  }
  std::vector<std::string> headers;
  for (const auto& k : shown)
    headers.push_back(k);
  text_table table(headers);
  for (const auto& p : *list) {
    std::vector<std::string> cells;
    for (const auto& k : shown) {
      if (!p.is_object() || !p.contains(k)) {
        cells.emplace_back("-");
      } else if (p[k].is_string()) {
        cells.push_back(p[k].get<std::string>());
      } else {
        cells.push_back(p[k].dump());
      }
    }
    table.add(std::move(cells));
  }
  table.print(std::cout);
}

// ---- the configuration ----------------------------------------------------------------------

json settings_json(const pool::settings& s) {
  json j;
  j["name"] = s.name;
  j["size"] = s.size;
  j["max_overflow"] = s.max_overflow;
  j["max_connections"] = s.max_connections();
  j["timeout_ms"] = s.timeout.count();
  j["recycle_ms"] = s.recycle.count();
  j["idle_timeout_ms"] = s.idle_timeout.count();
  j["min_idle"] = s.min_idle;
  j["pre_ping"] = s.pre_ping;
  j["reset_on_return"] = std::string(pool::to_string(s.reset_on_return));
  j["leak_threshold_ms"] = s.leak_threshold.count();
  j["lifo"] = s.lifo;
  j["connect_timeout_ms"] = s.connect_timeout.count();
  j["statement_timeout_ms"] = s.statement_timeout ? json(s.statement_timeout->count()) : json();
  j["application_name"] = s.effective_application_name();
  j["statement_cache"] = s.statement_cache;
  j["url"] = pg::redact_conninfo(s.conninfo);
  return j;
}

json report_json(const pool::budget_report& r) {
  json j;
  j["pools"] = r.pools;
  j["dedicated"] = r.dedicated;
  j["needed"] = r.needed;
  j["explicit_budget"] = r.explicit_budget ? json(*r.explicit_budget) : json();
  j["server_max_connections"] = r.server_max_connections;
  j["server_reserved"] = r.server_reserved;
  j["server_capacity"] = r.server_capacity;
  j["other_nodes"] = r.others;
  j["available"] = r.available;
  j["fits"] = r.fits();
  return j;
}

void show_configured(const pools_options& opt) {
  const daemon_config cfg = resolve_config(opt.common);
  pool::pool_manager manager(cfg.manager_settings());
  for (const auto& s : cfg.pool_settings())
    manager.add(s);  // budget_error when the explicit connection_budget is too small

  database_session db(cfg, "sluice/pools");
  // Other live nodes only count when the schema exists; a fresh database has none.
  int others = 0;
  bool schema_ready = false;
  try {
    schema_ready = db.store().check_schema(false).current > 0;
  } catch (const sched::schema_error&) {
    schema_ready = false;
  }
  if (schema_ready) others = db.store().budget_of_other_nodes();
  pg::connection conn = open_connection(cfg, "sluice/pools");
  std::optional<pool::budget_report> report;
  std::string budget_problem;
  try {
    report = manager.check_budget(conn, others);
  } catch (const pool::budget_error& e) {
    budget_problem = e.what();
  }
  const auto stats = manager.status();

  if (opt.common.json) {
    json j;
    j["pools"] = json::array();
    for (const auto& s : cfg.pool_settings()) {
      json p = settings_json(s);
      for (const auto& st : stats) {
        if (st.name == s.name) {
          p["open"] = st.open;
          p["checked_out"] = st.checked_out;
        }
      }
      j["pools"].push_back(std::move(p));
    }
    j["dedicated_connections"] = cfg.dedicated_connections();
    j["connections_needed"] = manager.connections_needed();
    j["budget"] = report ? report_json(*report) : json();
    j["budget_error"] = budget_problem.empty() ? json() : json(budget_problem);
    std::cout << j.dump() << '\n';
  } else {
    text_table table({"POOL", "SIZE", "OVERFLOW", "MAX", "TIMEOUT", "RECYCLE", "IDLE TIMEOUT",
                      "MIN IDLE", "PRE-PING", "RESET", "APPLICATION NAME", "OPEN"});
    for (const auto& s : cfg.pool_settings()) {
      int open = 0;
      for (const auto& st : stats)
        open = st.name == s.name ? st.open : open;
      table.add({s.name, std::to_string(s.size), std::to_string(s.max_overflow),
                 std::to_string(s.max_connections()), format_ms(s.timeout), format_ms(s.recycle),
                 s.idle_timeout.count() == 0 ? "never" : format_ms(s.idle_timeout),
                 std::to_string(s.min_idle), s.pre_ping ? "on" : "off",
                 std::string(pool::to_string(s.reset_on_return)), s.effective_application_name(),
                 std::to_string(open)});
    }
    table.print(std::cout);
    std::cout << "\nserver: " << conn.describe() << '\n';
    if (cfg.dedicated_connections() > 0) {
      std::cout << "outside the pools: " << cfg.dedicated_connections()
                << " LISTEN connection of the scheduler\n";
    }
    if (!schema_ready) {
      std::cout << "schema " << cfg.scheduler.schema << " not migrated: no other nodes counted\n";
    }
    std::cout << "budget: " << (report ? pool::describe(*report) : budget_problem) << '\n';
  }
  manager.shutdown(std::chrono::seconds(1));
  if (!budget_problem.empty()) exit_code() = 1;
}

}  // namespace

void register_pools(CLI::App& app) {
  auto opt = std::make_shared<pools_options>();
  auto* cmd = app.add_subcommand(
      "pools", "Show the configured pools and their connection budget against the server");
  add_common_options(*cmd, opt->common);
  cmd->add_option("--url", opt->url,
                  "Base URL of a running sluice serve (http://127.0.0.1:8080): show its live "
                  "pools from /api/v1/pools instead");
  cmd->callback([opt] {
    if (!opt->url.empty()) {
      show_remote(*opt);
    } else {
      show_configured(*opt);
    }
  });
}

}  // namespace sluice::cli
