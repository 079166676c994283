#include "cli/common.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <ostream>
#include <string>

#include "sluice/sched/schedule.hpp"

namespace sluice::cli {

void add_common_options(CLI::App& cmd, common_options& opt, bool json, bool schema) {
  cmd.add_option("--config", opt.config_file,
                 "TOML configuration file (the daemon's); without it the defaults apply")
      ->check(CLI::ExistingFile);
  cmd.add_option("--database-url", opt.database_url,
                 "conninfo string or URI; default: the config's database.url, DATABASE_URL, "
                 "then libpq's PG* variables");
  if (schema) {
    cmd.add_option(
        "--schema", opt.schema,
        "schema of sluice's tables; default: the config's scheduler.schema, else sluice");
  }
  if (json) cmd.add_flag("--json", opt.json, "Print the result as JSON");
}

daemon_config resolve_config(const common_options& opt) {
  const env_lookup env = process_environment();
  daemon_config cfg = opt.config_file.empty() ? parse_config("", "(defaults)", env)
                                              : load_config(opt.config_file, env);
  if (!opt.database_url.empty()) {
    cfg.database.url = opt.database_url;
    for (auto& p : cfg.pools)
      p.conninfo = opt.database_url;
    cfg.lane.conninfo = opt.database_url;
    if (!cfg.scheduler.listen_conninfo.empty()) cfg.scheduler.listen_conninfo = opt.database_url;
  }
  if (!opt.schema.empty()) {
    try {
      sched::validate_schema_name(opt.schema);
    } catch (const std::invalid_argument& e) {
      throw command_error(std::string("--") + e.what());
    }
    cfg.scheduler.schema = opt.schema;
  }
  return cfg;
}

std::string conninfo_of(const daemon_config& cfg) {
  return cfg.lane.conninfo;
}

pg::connection open_connection(const daemon_config& cfg, const std::string& application_name) {
  pg::connect_options o;
  o.conninfo = conninfo_of(cfg);
  o.connect_timeout = cfg.database.connect_timeout;
  o.application_name = application_name;
  o.statement_timeout = cfg.database.statement_timeout;
  return pg::connection::open(o);
}

database_session::database_session(const daemon_config& cfg, std::string application_name) {
  // The probe: a refused or unreachable server is reported now, with libpq's reason.
  { const pg::connection probe = open_connection(cfg, application_name); }
  pool::settings s;
  s.name = "cli";
  s.conninfo = conninfo_of(cfg);
  s.size = 1;
  s.max_overflow = 0;
  s.timeout = cfg.database.connect_timeout + std::chrono::seconds(5);
  s.connect_timeout = cfg.database.connect_timeout;
  s.statement_timeout = cfg.database.statement_timeout;
  s.application_name = std::move(application_name);
  lane_ = std::make_unique<pool::pool>(s);
  store_ = std::make_unique<sched::store>(*lane_, cfg.scheduler.schema);
}

database_session::~database_session() {
  store_.reset();
  if (lane_) lane_->close(std::chrono::seconds(1));
}

text_table::text_table(std::vector<std::string> headers, std::size_t max_cell)
    : headers_(std::move(headers)), max_cell_(max_cell) {}

void text_table::add(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  for (auto& c : cells) {
    // One line per row: a newline inside an error message would break the columns.
    std::replace(c.begin(), c.end(), '\n', ' ');
    if (c.size() > max_cell_ && max_cell_ > 3) c = c.substr(0, max_cell_ - 3) + "...";
  }
  rows_.push_back(std::move(cells));
}

void text_table::print(std::ostream& out) const {
  std::vector<std::size_t> width(headers_.size());
  for (std::size_t i = 0; i < headers_.size(); ++i)
    width[i] = headers_[i].size();
  for (const auto& r : rows_) {
    for (std::size_t i = 0; i < r.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      text += cells[i];
      if (i + 1 < cells.size()) text += std::string(width[i] - cells[i].size() + 2, ' ');
    }
    out << text << '\n';
  };
  line(headers_);
  for (const auto& r : rows_)
    line(r);
}

std::string format_time(std::optional<std::chrono::system_clock::time_point> t) {
  if (!t) return "-";
  const std::time_t secs =
      std::chrono::system_clock::to_time_t(std::chrono::floor<std::chrono::seconds>(*t));
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string format_ms(std::chrono::milliseconds d) {
  if (d < std::chrono::seconds(1)) return std::to_string(d.count()) + "ms";
  if (d.count() % 1000 == 0) {
    return sched::format_duration(std::chrono::duration_cast<std::chrono::seconds>(d));
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(d.count()) / 1000.0);
  return buf;
}

std::chrono::milliseconds parse_duration_option(std::string_view text, std::string_view option) {
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(),
                                                   [](char c) { return c >= '0' && c <= '9'; });
  if (digits) {
    long long seconds = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
    if (ec != std::errc() || end != text.data() + text.size() || seconds > 365LL * 24 * 3600) {
      throw command_error(std::string(option) + ": '" + std::string(text) +
                          "' is out of range (at most a year)");
    }
    return std::chrono::seconds(seconds);
  }
  try {
    return cli::parse_duration(text);
  } catch (const std::invalid_argument& e) {
    throw command_error(std::string(option) + ": " + e.what());
  }
}

std::int64_t parse_task_id(std::string_view text) {
  std::int64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id < 1) {
    throw command_error("task id: '" + std::string(text) + "' is not a positive whole number");
  }
  return id;
}

}  // namespace sluice::cli
