#include "sched/util.hpp"

#include <cctype>
#include <cstdio>

#include "sluice/pg/params.hpp"

namespace sluice::sched::detail {

std::string with_schema(std::string_view sql, std::string_view schema) {
  const std::string quoted =
      "\"" + std::string(schema) + "\"";  // schema names are validated identifiers
  std::string out;
  out.reserve(sql.size() + 64);
  for (std::size_t i = 0; i < sql.size(); ++i) {
    if (sql[i] == '{' && i + 2 < sql.size() + 1 && sql.substr(i, 3) == "{s}") {
      out += quoted;
      i += 2;
    } else {
      out += sql[i];
    }
  }
  return out;
}

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x",
                        static_cast<unsigned>(static_cast<unsigned char>(c)));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

task row_to_task(const pg::row& r) {
  task t;
  int c = 0;
  t.id = r.get<std::int64_t>(c++);
  t.type = r.get<std::string>(c++);
  t.name = r.get<std::optional<std::string>>(c++);
  t.payload = r.get<std::string>(c++);
  t.state = parse_task_state(r.get<std::string>(c++));
  t.schedule_kind = r.get<std::string>(c++);
  t.schedule_spec = r.get<std::string>(c++);
  t.timezone = r.get<std::string>(c++);
  t.misfire_policy = r.get<std::string>(c++);
  t.misfire_grace_s = r.get<int>(c++);
  t.catch_up_limit = r.get<int>(c++);
  t.next_run_at = r.get<std::optional<time_point>>(c++);
  t.priority = r.get<int>(c++);
  t.attempt = r.get<int>(c++);
  t.max_attempts = r.get<int>(c++);
  t.backoff_base_ms = r.get<std::int64_t>(c++);
  t.backoff_cap_ms = r.get<std::int64_t>(c++);
  t.timeout_ms = r.get<std::int64_t>(c++);
  t.pause_after_failures = r.get<int>(c++);
  t.claim_token = r.get<std::int64_t>(c++);
  t.claimed_by = r.get<std::optional<std::string>>(c++);
  t.claimed_at = r.get<std::optional<time_point>>(c++);
  t.lease_until = r.get<std::optional<time_point>>(c++);
  t.fire_time = r.get<std::optional<time_point>>(c++);
  t.last_error = r.get<std::optional<std::string>>(c++);
  t.last_run_at = r.get<std::optional<time_point>>(c++);
  t.last_success_at = r.get<std::optional<time_point>>(c++);
  t.consecutive_failures = r.get<int>(c++);
  t.runs = r.get<std::int64_t>(c++);
  t.created_at = r.get<time_point>(c++);
  t.updated_at = r.get<time_point>(c++);
  return t;
}

}  // namespace sluice::sched::detail
