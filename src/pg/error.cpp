#include "sluice/pg/error.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <string>
#include <string_view>
#include <utility>

namespace sluice {

error::~error() = default;

}  // namespace sluice

namespace sluice::pg {
namespace {

constexpr std::string_view redacted = "***";

bool is_sqlstate(std::string_view s) noexcept {
  if (s.size() != 5) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'))) return false;
  }
  return true;
}

bool starts_with_icase(std::string_view s, std::string_view prefix) noexcept {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

bool equals_icase(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && starts_with_icase(a, b);
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

// ---- redaction of key=value conninfo strings ----

bool is_space(char c) noexcept {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

bool looks_like_uri(std::string_view s) noexcept {
  return starts_with_icase(s, "postgresql://") || starts_with_icase(s, "postgres://");
}

std::string quote_conninfo_value(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

std::string redact_uri(std::string_view uri) {
  const std::size_t scheme_end = uri.find("://") + 3;
  // The query string starts at the first '?'. Userinfo ends at the last '@' before it, so that
  // a password holding a raw '@' or '/' (which libpq would misparse, but users do write) is
  // still hidden entirely. A '?' inside a password must be percent-encoded, as RFC 3986 says.
  const std::size_t query_start = std::min(uri.find('?', scheme_end), uri.size());
  std::string out(uri.substr(0, scheme_end));
  std::string_view rest = uri.substr(scheme_end, query_start - scheme_end);
  const std::size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    const std::size_t colon = userinfo.find(':');
    if (colon != std::string_view::npos) {
      out += userinfo.substr(0, colon + 1);
      out += redacted;
    } else {
      out += userinfo;
    }
    out += rest.substr(at);
  } else {
    out += rest;
  }
  if (query_start >= uri.size()) return out;

  out += '?';
  std::string_view query = uri.substr(query_start + 1);
  bool first = true;
  while (true) {
    const std::size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    if (!first) out += '&';
    first = false;
    const std::size_t eq = item.find('=');
    std::string_view key = item.substr(0, eq);
    if (eq != std::string_view::npos && equals_icase(key, "password")) {
      out += key;
      out += '=';
      out += redacted;
    } else if (eq != std::string_view::npos && equals_icase(key, "dbname")) {
      // dbname may itself be a connection string; libpq does not expand it inside a URI,
      // but hiding a password there costs nothing.
      out += key;
      out += '=';
      out += redact_conninfo(item.substr(eq + 1));
    } else {
      out += item;
    }
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return out;
}

std::string redact_keyword_value(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    // Whitespace between pairs is copied as is.
    const std::size_t pair_start = i;
    while (i < n && is_space(s[i]))
      ++i;
    out.append(s.substr(pair_start, i - pair_start));
    if (i >= n) break;

    const std::size_t key_start = i;
    while (i < n && s[i] != '=' && !is_space(s[i]))
      ++i;
    std::string_view key = s.substr(key_start, i - key_start);
    std::size_t j = i;
    while (j < n && is_space(s[j]))
      ++j;
    if (j >= n || s[j] != '=' || key.empty()) {
      // Malformed (libpq rejects it too). What follows could be a fragment of a password
      // written with a space in it, so it is not echoed.
      out += redacted;
      return out;
    }
    ++j;  // '='
    while (j < n && is_space(s[j]))
      ++j;
    const std::string_view separator = s.substr(i, j - i);  // '=' and any spaces

    // Value: quoted with backslash escapes, or up to the next whitespace.
    std::string value;
    const std::size_t value_start = j;
    bool terminated = true;
    if (j < n && s[j] == '\'') {
      terminated = false;
      ++j;
      while (j < n) {
        if (s[j] == '\\' && j + 1 < n) {
          value += s[j + 1];
          j += 2;
        } else if (s[j] == '\'') {
          ++j;
          terminated = true;
          break;
        } else {
          value += s[j++];
        }
      }
    } else {
      while (j < n && !is_space(s[j])) {
        if (s[j] == '\\' && j + 1 < n) {
          value += s[j + 1];
          j += 2;
        } else {
          value += s[j++];
        }
      }
    }
    std::string_view raw = s.substr(value_start, j - value_start);

    if (!terminated || equals_icase(key, "password")) {
      out.append(key);
      out.append(separator);
      out += redacted;
      // An unterminated quote swallows the rest of the string, as libpq would read it.
      if (!terminated) return out;
    } else if (equals_icase(key, "dbname") &&
               (looks_like_uri(value) || value.find('=') != std::string::npos)) {
      // With expand_dbname, dbname may carry a whole connection string or URI.
      std::string inner = redact_conninfo(value);
      out.append(key);
      out.append(separator);
      if (inner == value) {
        out.append(raw);
      } else {
        out += quote_conninfo_value(inner);
      }
    } else {
      out.append(key);
      out.append(separator);
      out.append(raw);
    }
    i = j;
  }
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
  switch (kind) {
    case error_kind::ordinary:
      return "ordinary";
    case error_kind::query_canceled:
      return "query_canceled";
    case error_kind::poisoning:
      return "poisoning";
    case error_kind::back_pressure:
      return "back_pressure";
    case error_kind::retry_transaction:
      return "retry_transaction";
    case error_kind::outcome_unknown:
      return "outcome_unknown";
  }
  return "unknown";
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

std::string redact_conninfo(std::string_view conninfo) {
  std::size_t start = 0;
  while (start < conninfo.size() && is_space(conninfo[start]))
    ++start;
  if (looks_like_uri(conninfo.substr(start))) {
    return std::string(conninfo.substr(0, start)) + redact_uri(conninfo.substr(start));
  }
  return redact_keyword_value(conninfo);
}

}  // namespace sluice::pg
