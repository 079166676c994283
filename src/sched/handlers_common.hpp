#pragma once

// Private to the built-in handlers: their payloads parsed and checked, and small helpers the
// handlers share. Parsing throws schedule_error; the handlers turn that into a failure.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "sluice/pg/params.hpp"
#include "sluice/sched/handlers.hpp"

namespace sluice::sched::detail {

struct sql_payload {
  std::string pool;
  std::string sql;
  std::vector<pg::param> params;  // JSON scalars typed; arrays and objects as JSON text
  bool transactional = false;     // run in the transaction that completes the task
};

struct http_payload {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;  // in payload order
  std::optional<std::string> body;
  std::vector<int> expect_status;  // empty: any 2xx
  std::optional<std::chrono::milliseconds> timeout;
  bool follow_redirects = false;
  std::optional<std::string> signing_key;  // name of a secret of http_policy::signing_keys
};

struct command_payload {
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;  // in payload order
  std::optional<std::string> cwd;
  std::optional<std::string> stdin_data;
};

// Each throws schedule_error whose message starts with "<type> payload: " and names the field.
[[nodiscard]] sql_payload parse_sql_payload(std::string_view json);
[[nodiscard]] http_payload parse_http_payload(std::string_view json);
// Also checks argv[0] against policy.allow ("command not allowed: ...") and each env name with
// command_env_problem().
[[nodiscard]] command_payload parse_command_payload(std::string_view json,
                                                    const command_policy& policy);

// The token's deadline, or nullopt when none was ever set (a default time_point).
[[nodiscard]] std::optional<std::chrono::steady_clock::time_point> deadline_of(
    const cancel_token& token) noexcept;

// Serialises a detail object. Invalid UTF-8 (command output, response bodies, or a multi-byte
// character cut by truncation) becomes U+FFFD instead of making the dump throw.
[[nodiscard]] std::string dump_detail(const nlohmann::json& detail);

// A URL fit for messages and logs: scheme, host, port and path; user, password, query and
// fragment (where tokens usually travel) are dropped.
[[nodiscard]] std::string redact_url(std::string_view url);

}  // namespace sluice::sched::detail
