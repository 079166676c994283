#include "sluice/pg/conninfo.hpp"

#include <algorithm>
#include <cctype>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <libpq-fe.h>

namespace sluice::pg {
namespace {

constexpr std::string_view mask = "***";

bool is_space(char c) noexcept {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

char lower(char c) noexcept {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

bool starts_with_icase(std::string_view s, std::string_view prefix) noexcept {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (lower(s[i]) != lower(prefix[i])) return false;
  }
  return true;
}

bool equals_icase(std::string_view a, std::string_view b) noexcept {
  return a.size() == b.size() && starts_with_icase(a, b);
}

// Case-insensitive on purpose, wider than libpq (which only takes the lower-case prefixes):
// "POSTGRESQL://u:pw@h" is a URI to a reader, and its password is hidden as one.
bool looks_like_uri(std::string_view s) noexcept {
  return starts_with_icase(s, "postgresql://") || starts_with_icase(s, "postgres://");
}

struct options_free {
  void operator()(PQconninfoOption* o) const noexcept { PQconninfoFree(o); }
};
using options_ptr = std::unique_ptr<PQconninfoOption, options_free>;

using keyword_values = std::vector<std::pair<std::string, std::string>>;

// libpq's reading of a connection string: the keywords it sets, in libpq's order, with their
// values decoded (percent-encoding and quoting undone). PQconninfoParse applies no defaults and
// reads no environment or service file. nullopt when libpq refuses the string; `error` then
// holds libpq's message.
std::optional<keyword_values> libpq_parse(const std::string& conninfo, std::string* error) {
  char* err = nullptr;
  const options_ptr parsed(PQconninfoParse(conninfo.c_str(), &err));
  if (!parsed) {
    if (err == nullptr) throw std::bad_alloc();
    if (error != nullptr) *error = err;
    PQfreemem(err);
    return std::nullopt;
  }
  keyword_values out;
  for (const PQconninfoOption* o = parsed.get(); o->keyword != nullptr; ++o) {
    if (o->val != nullptr) out.emplace_back(o->keyword, o->val);
  }
  return out;
}

// Every keyword this libpq accepts (PQconninfoParse of "" lists them all, without values), plus
// "ssl", which libpq's URI parser accepts as an alias of sslmode.
bool is_known_keyword(std::string_view keyword) {
  static const std::vector<std::string> known = [] {
    std::vector<std::string> names{"ssl"};
    char* err = nullptr;
    const options_ptr all(PQconninfoParse("", &err));
    if (err != nullptr) PQfreemem(err);
    if (all) {
      for (const PQconninfoOption* o = all.get(); o->keyword != nullptr; ++o)
        names.emplace_back(o->keyword);
    }
    return names;
  }();
  return std::find(known.begin(), known.end(), keyword) != known.end();
}

// Whether the value of `keyword` may be shown as written.
bool shown(std::string_view keyword) {
  return is_known_keyword(keyword) && !is_secret_keyword(keyword);
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding as libpq's URI parser does it; nullopt for a malformed escape, which libpq
// refuses too.
std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex_value(s[i + 1]);
    const int lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::string percent_encode(std::string_view s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 0xF];
    }
  }
  return out;
}

// A value as key=value conninfo writes it: bare when it can be, else quoted with escapes.
std::string conninfo_value(std::string_view v) {
  const bool bare = !v.empty() && std::none_of(v.begin(), v.end(), [](char c) {
    return is_space(c) || c == '\'' || c == '\\';
  });
  if (bare) return std::string(v);
  std::string out = "'";
  for (const char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

// ---- masking by the string's own structure, keeping its form ----

std::string mask_uri(std::string_view uri) {
  const std::size_t scheme_end = uri.find("://") + 3;
  // The query string starts at the first '?'. Userinfo ends at the last '@' before it, so that
  // a password holding a raw '@' or '/' (which libpq misparses, but people write) is still
  // hidden entirely. A '?' inside a password must be percent-encoded, as RFC 3986 says.
  const std::size_t query_start = std::min(uri.find('?', scheme_end), uri.size());
  std::string out(uri.substr(0, scheme_end));
  const std::string_view rest = uri.substr(scheme_end, query_start - scheme_end);
  const std::size_t at = rest.rfind('@');
  if (at != std::string_view::npos) {
    const std::string_view userinfo = rest.substr(0, at);
    const std::size_t colon = userinfo.find(':');
    if (colon != std::string_view::npos) {
      out += userinfo.substr(0, colon + 1);
      out += mask;
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
  for (bool first = true;; first = false) {
    const std::size_t amp = query.find('&');
    const std::string_view item = query.substr(0, amp);
    if (!first) out += '&';
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      out += item;  // no value (libpq refuses the URI)
    } else {
      // libpq decodes keywords too: "passwor%64=..." is a password.
      const std::string_view raw_key = item.substr(0, eq);
      const std::string_view raw_value = item.substr(eq + 1);
      const auto key = percent_decode(raw_key);
      out += raw_key;
      out += '=';
      if (key && *key == "dbname") {
        // dbname may carry a whole connection string. libpq does not expand it inside a URI,
        // but hiding a password there costs nothing.
        const auto value = percent_decode(raw_value);
        if (!value) {
          out += mask;
        } else if (is_connection_string(*value)) {
          const std::string inner = redact_conninfo(*value);
          out += inner == *value ? std::string(raw_value) : percent_encode(inner);
        } else {
          out += raw_value;
        }
      } else if (key && shown(*key)) {
        out += raw_value;
      } else {
        out += mask;
      }
    }
    if (amp == std::string_view::npos) break;
    query = query.substr(amp + 1);
  }
  return out;
}

std::string mask_keyword_value(std::string_view s) {
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
    const std::string_view key = s.substr(key_start, i - key_start);
    std::size_t j = i;
    while (j < n && is_space(s[j]))
      ++j;
    if (j >= n || s[j] != '=' || key.empty()) {
      // Malformed (libpq refuses it too). What follows could be a fragment of a password
      // written with a space in it, so it is not echoed.
      out += mask;
      return out;
    }
    ++j;  // '='
    while (j < n && is_space(s[j]))
      ++j;
    const std::string_view separator = s.substr(i, j - i);  // '=' and any spaces

    // The value: quoted with backslash escapes, or up to the next whitespace (where a
    // backslash escapes too), as libpq reads it.
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
    const std::string_view raw = s.substr(value_start, j - value_start);

    out.append(key);
    out.append(separator);
    if (!terminated) {
      // An unterminated quote swallows the rest of the string, as libpq would read it.
      out += mask;
      return out;
    }
    if (key == "dbname" && is_connection_string(value)) {
      // With expand_dbname, dbname may carry a whole connection string or URI.
      const std::string inner = redact_conninfo(value);
      out += inner == value ? std::string(raw) : conninfo_value(inner);
    } else if (shown(key)) {
      out.append(raw);
    } else {
      out += mask;
    }
    i = j;
  }
  return out;
}

std::string mask_by_structure(std::string_view conninfo) {
  std::size_t start = 0;
  while (start < conninfo.size() && is_space(conninfo[start]))
    ++start;
  if (looks_like_uri(conninfo.substr(start))) {
    return std::string(conninfo.substr(0, start)) + mask_uri(conninfo.substr(start));
  }
  return mask_keyword_value(conninfo);
}

// ---- the check against libpq's reading ----

// Whether `masked` could still show a secret that libpq reads from the original string: libpq
// finds a secret in `masked` that is not the mask, or a secret's text (four characters or more;
// shorter ones occur in ordinary words) appears in it anywhere, raw or after libpq's decoding.
// A secret that is also part of a value shown on purpose (user=postgres password=postgres) is
// not looked for: finding it would prove nothing.
bool shows_a_secret(const std::string& masked, const keyword_values& original) {
  const auto reread = libpq_parse(masked, nullptr);
  if (!reread) return true;
  for (const auto& [keyword, value] : *reread) {
    if (is_secret_keyword(keyword) && !value.empty() && value != mask) return true;
  }
  const auto in_a_shown_value = [&](const std::string& secret) {
    return std::any_of(original.begin(), original.end(), [&](const auto& kv) {
      return !is_secret_keyword(kv.first) && kv.second.find(secret) != std::string::npos;
    });
  };
  for (const auto& [keyword, secret] : original) {
    if (!is_secret_keyword(keyword) || secret.size() < 4 || secret == mask) continue;
    if (in_a_shown_value(secret)) continue;
    if (masked.find(secret) != std::string::npos) return true;
    for (const auto& [k, v] : *reread) {
      if (v.find(secret) != std::string::npos) return true;
    }
  }
  return false;
}

// key=value pairs from libpq's reading, every secret masked.
std::string rebuild(const keyword_values& values) {
  std::string out;
  for (const auto& [keyword, value] : values) {
    if (!out.empty()) out += ' ';
    out += keyword;
    out += '=';
    if (is_secret_keyword(keyword)) {
      out += mask;
    } else if (keyword == "dbname" && is_connection_string(value)) {
      out += conninfo_value(redact_conninfo(value));
    } else {
      out += conninfo_value(value);
    }
  }
  return out;
}

}  // namespace

bool is_connection_string(std::string_view s) noexcept {
  return s.rfind("postgresql://", 0) == 0 || s.rfind("postgres://", 0) == 0 ||
         s.find('=') != std::string_view::npos;
}

bool is_secret_keyword(std::string_view keyword) noexcept {
  constexpr std::string_view word = "password";
  for (std::size_t i = 0; i + word.size() <= keyword.size(); ++i) {
    if (equals_icase(keyword.substr(i, word.size()), word)) return true;
  }
  return false;
}

std::string redact_conninfo(std::string_view conninfo) {
  std::string masked = mask_by_structure(conninfo);
  if (!is_connection_string(conninfo)) return masked;
  const auto original = libpq_parse(std::string(conninfo), nullptr);
  // libpq cannot read it: the structural mask, which stops at the first thing it does not
  // understand, is all there is to go by.
  if (!original) return masked;
  if (shows_a_secret(masked, *original)) return rebuild(*original);
  return masked;
}

std::optional<std::string> conninfo_error(const std::string& conninfo) {
  if (!is_connection_string(conninfo)) return std::nullopt;
  std::string message;
  if (libpq_parse(conninfo, &message)) return std::nullopt;
  // One line: libpq ends its messages with a newline and may continue on another.
  std::replace(message.begin(), message.end(), '\n', ' ');
  while (!message.empty() && is_space(message.back()))
    message.pop_back();
  return scrub_conninfo_message(message, conninfo);
}

std::string scrub_conninfo_message(std::string_view message, std::string_view conninfo) {
  const std::string redacted = redact_conninfo(conninfo);
  std::string out;
  std::size_t pos = 0;
  while (pos < message.size()) {
    const std::size_t open = message.find('"', pos);
    if (open == std::string_view::npos) break;
    const std::size_t close = message.find('"', open + 1);
    if (close == std::string_view::npos) break;
    out.append(message.substr(pos, open + 1 - pos));
    const std::string_view quoted = message.substr(open + 1, close - open - 1);
    if (quoted.empty() || redacted.find(quoted) != std::string::npos) {
      out.append(quoted);
    } else {
      out += mask;
    }
    out += '"';
    pos = close + 1;
  }
  out.append(message.substr(std::min(pos, message.size())));
  return out;
}

}  // namespace sluice::pg
