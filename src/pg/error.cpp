#include "sluice/pg/error.hpp"

#include <array>
#include <string>
#include <string_view>
#include <utility>

#include "sluice/enum_names.hpp"

namespace sluice {

error::~error() = default;

}  // namespace sluice

namespace sluice::pg {
namespace {

bool is_sqlstate(std::string_view s) noexcept {
  if (s.size() != 5) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'))) return false;
  }
  return true;
}

std::string shorten(std::string_view text, std::size_t limit) {
  if (text.size() <= limit) return std::string(text);
  std::string out(text.substr(0, limit));
  out += "...";
  return out;
}

std::string build_sql_message(const std::string& sqlstate, const std::string& message,
                              const std::string& detail, const std::string& hint,
                              const std::string& query) {
  std::string out = "ERROR";
  if (!sqlstate.empty()) out += " " + sqlstate;
  out += ": " + message;
  if (!detail.empty()) out += " (detail: " + detail + ")";
  if (!hint.empty()) out += " (hint: " + hint + ")";
  // The query text is ours, never a parameter value, so it carries no secrets; it is shortened
  // so that a huge generated statement does not swamp a log line (query() has all of it).
  if (!query.empty()) out += " [query: " + shorten(query, 500) + "]";
  return out;
}

}  // namespace

error_kind classify_sqlstate(std::string_view sqlstate) noexcept {
  if (!is_sqlstate(sqlstate)) return error_kind::ordinary;
  if (sqlstate == "57014") return error_kind::query_canceled;
  if (sqlstate_is_back_pressure(sqlstate)) return error_kind::back_pressure;
  if (sqlstate_is_retryable(sqlstate)) return error_kind::retry_transaction;
  // Before the poisoning test: 08007 is in class 08 but what matters most to the caller is
  // that the commit may have happened.
  if (sqlstate_outcome_unknown(sqlstate)) return error_kind::outcome_unknown;
  if (sqlstate_poisons_connection(sqlstate)) return error_kind::poisoning;
  return error_kind::ordinary;
}

bool sqlstate_poisons_connection(std::string_view sqlstate) noexcept {
  if (!is_sqlstate(sqlstate)) return false;
  if (sqlstate.substr(0, 2) == "08") return true;  // connection exception
  // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now,
  // 57P04 database_dropped, 57P05 idle_session_timeout.
  if (sqlstate.substr(0, 4) == "57P0" && sqlstate[4] >= '1' && sqlstate[4] <= '5') return true;
  // 25P03 idle_in_transaction_session_timeout: the server closes the session.
  // 0A000 feature_not_supported: what a pooler or proxy answers when the session cannot go on.
  return sqlstate == "25P03" || sqlstate == "0A000";
}

bool sqlstate_is_back_pressure(std::string_view sqlstate) noexcept {
  return sqlstate == "53300" || sqlstate == "57P03";
}

bool sqlstate_is_retryable(std::string_view sqlstate) noexcept {
  return sqlstate == "40001" || sqlstate == "40P01";
}

bool sqlstate_outcome_unknown(std::string_view sqlstate) noexcept {
  return sqlstate == "08007" || sqlstate == "40003";
}

std::string_view to_string(error_kind kind) noexcept {
  static constexpr std::array<std::string_view, 6> names{"ordinary",          "query_canceled",
                                                         "poisoning",         "back_pressure",
                                                         "retry_transaction", "outcome_unknown"};
  return enum_name<error_kind::outcome_unknown>(kind, names, "unknown");
}

std::string sqlstate_from_message(std::string_view message) {
  // With PQERRORS_VERBOSE libpq formats a server error as "SEVERITY:  XXXXX: text". The
  // severity word may be translated, the layout is not. Several attempts (hosts, addresses)
  // may be in one message: the last one decides.
  std::string found;
  std::size_t pos = 0;
  while ((pos = message.find(":  ", pos)) != std::string_view::npos) {
    pos += 3;
    std::string_view candidate = message.substr(pos, 5);
    if (is_sqlstate(candidate) && message.substr(pos + 5, 1) == ":") found = candidate;
  }
  if (!found.empty()) return found;

  // Without the code, recognise the server's English messages.
  struct known {
    std::string_view text;
    std::string_view sqlstate;
  };
  static constexpr std::array<known, 8> table{{
      {"too many clients", "53300"},
      {"remaining connection slots are reserved", "53300"},
      {"too many connections for", "53300"},  // role / database CONNECTION LIMIT
      {"the database system is starting up", "57P03"},
      {"the database system is shutting down", "57P03"},
      {"the database system is in recovery mode", "57P03"},
      {"the database system is not yet accepting connections", "57P03"},
      {"the database system is not accepting connections", "57P03"},
  }};
  std::size_t best_pos = 0;
  for (const known& k : table) {
    const std::size_t at = message.rfind(k.text);
    if (at != std::string_view::npos && (found.empty() || at >= best_pos)) {
      found = k.sqlstate;
      best_pos = at;
    }
  }
  return found;
}

sql_error::sql_error(std::string sqlstate, std::string message, std::string detail,
                     std::string hint, std::string query)
    : error(build_sql_message(sqlstate, message, detail, hint, query)),
      sqlstate_(std::move(sqlstate)),
      message_(std::move(message)),
      detail_(std::move(detail)),
      hint_(std::move(hint)),
      query_(std::move(query)) {}

bool sql_error::poisons_connection() const noexcept {
  return sqlstate_poisons_connection(sqlstate_);
}

error_kind sql_error::kind() const noexcept {
  return classify_sqlstate(sqlstate_);
}

connection_error::connection_error(std::string message, std::string sqlstate)
    : error(std::move(message)), sqlstate_(std::move(sqlstate)) {}

error_kind connection_error::kind() const noexcept {
  // A refusal the server explained keeps its meaning (back off, or "did the commit happen?");
  // anything else about a connection means: discard it.
  const error_kind k = classify_sqlstate(sqlstate_);
  if (k == error_kind::back_pressure || k == error_kind::outcome_unknown) return k;
  return error_kind::poisoning;
}

}  // namespace sluice::pg
