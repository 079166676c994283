#pragma once

// Private to src/cli/config*.cpp: reading the TOML tables of the configuration file with
// messages that name the key path and its line. config_keys.cpp declares the keys; config.cpp
// puts the sections together.

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "cli/config.hpp"
#include "sluice/pg/conninfo.hpp"

namespace sluice::cli::config_detail {

using std::chrono::milliseconds;
using namespace std::chrono_literals;

// The longest duration any setting accepts; keeps every later time computation in range.
inline constexpr milliseconds max_duration = std::chrono::hours(24 * 365);
// PostgreSQL stores statement_timeout as an int of milliseconds.
inline constexpr milliseconds max_statement_timeout{std::numeric_limits<std::int32_t>::max()};
// PostgreSQL's MAX_BACKENDS: no server accepts more connections than this.
inline constexpr long long max_server_connections = 262143;
// Shorter bearer tokens can be guessed by anyone who can reach the port.
inline constexpr std::size_t min_token_length = 16;
// The dashboard keeps history / sample_interval samples per pool in memory.
inline constexpr long long max_history_samples = 100000;

struct position {
  int line = 0;
  int column = 0;
};

inline position where(const toml::source_region& region) {
  return {static_cast<int>(region.begin.line), static_cast<int>(region.begin.column)};
}

inline std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out.append(separator);
    out += item;
  }
  return out;
}

inline std::string_view type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "a whole number";
    case toml::node_type::floating_point:
      return "a decimal number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// Optimal string alignment distance: edits, with a swap of neighbours counting as one.
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i)
    d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j)
    d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The known key a typo most likely meant, if one is close enough to be a good guess.
inline std::optional<std::string> closest(std::string_view key,
                                          const std::vector<std::string>& known) {
  std::optional<std::string> best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const auto& candidate : known) {
    const std::size_t dist = edit_distance(key, candidate);
    if (dist < best_distance) {
      best_distance = dist;
      best = candidate;
    }
  }
  const std::size_t allowed = key.size() <= 4 ? 1 : (key.size() <= 8 ? 2 : 3);
  if (best && best_distance <= allowed) return best;
  return std::nullopt;
}

inline bool is_printable_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u <= 0x7e;
  });
}

inline bool has_space_or_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f;
  });
}

// Checks a conninfo string or URI the way libpq will read it, so a typo fails at start rather
// than at the first connect. Returns the reason it is unusable, without any part of the value
// that could be a password.
inline std::optional<std::string> conninfo_problem(const std::string& value) {
  // The value itself is never repeated: a misspelt key ("passwrd=") would defeat the redaction
  // of its value. libpq's message is, with every quoted fragment that could be a password
  // masked.
  if (auto error = pg::conninfo_error(value))
    return "not a valid connection string or URI (libpq: " + *error + ")";
  return std::nullopt;
}

// Whether a line of the file assigns a secret (a url or a token), so that a syntax error on it
// is reported without toml++'s description, which may quote the offending characters.
inline bool line_holds_secret(std::string_view text, int line) {
  if (line < 1) return false;
  std::size_t start = 0;
  for (int i = 1; i < line; ++i) {
    start = text.find('\n', start);
    if (start == std::string_view::npos) return false;
    ++start;
  }
  std::string lowered(text.substr(start, text.find('\n', start) - start));
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  for (const std::string_view secret : {"url", "token"}) {
    for (std::size_t at = lowered.find(secret); at != std::string::npos;
         at = lowered.find(secret, at + 1)) {
      std::size_t after = at + secret.size();
      if (after < lowered.size() && lowered[after] == '"') ++after;  // "url" = ...
      while (after < lowered.size() && (lowered[after] == ' ' || lowered[after] == '\t'))
        ++after;
      if (after < lowered.size() && lowered[after] == '=') return true;
    }
  }
  return false;
}

// Task type names, in [types.NAME] and [scheduler.concurrency].
inline bool valid_task_type(std::string_view type) {
  return !type.empty() && type.size() <= 100 && std::all_of(type.begin(), type.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' ||
           c == '-';
  });
}
inline const std::string task_type_rule =
    "task types are 1 to 100 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'";

// Reads the file's tables, raising config_error with the key's path and line.
// Also what every key's reader may need besides its table: the environment (for keys that
// name a variable) and the directory relative paths start from.
class loader {
 public:
  loader(std::string source, env_lookup env, std::filesystem::path base_dir)
      : source_(std::move(source)), env_(std::move(env)), base_dir_(std::move(base_dir)) {}

  [[nodiscard]] const std::string& source() const noexcept { return source_; }
  [[nodiscard]] const std::filesystem::path& base_dir() const noexcept { return base_dir_; }
  // The variable's value; nullopt when it is unset or empty.
  [[nodiscard]] std::optional<std::string> env(std::string_view name) const {
    if (!env_) return std::nullopt;
    auto value = env_(name);
    if (!value || value->empty()) return std::nullopt;
    return value;
  }

  [[noreturn]] void fail(const std::string& key, const std::string& reason,
                         position at = {}) const {
    throw config_error(source_, key, reason, at.line, at.column);
  }
  [[noreturn]] void fail_env(std::string_view variable, const std::string& reason) const {
    throw config_error::environment(source_, std::string(variable), reason);
  }

 private:
  std::string source_;
  env_lookup env_;
  std::filesystem::path base_dir_;
};

// One table of the file. Every getter records its key as known; finish() then rejects the keys
// nothing asked for. A section whose table is absent answers nullopt to everything.
class section {
 public:
  section(const loader& ctx, const toml::table* table, std::string path)
      : ctx_(&ctx), table_(table), path_(std::move(path)) {}

  [[nodiscard]] bool present() const noexcept { return table_ != nullptr; }
  [[nodiscard]] const loader& ctx() const noexcept { return *ctx_; }
  // Whether the file sets `key` (without counting it as asked for).
  [[nodiscard]] bool has(std::string_view key) const {
    return table_ != nullptr && table_->get(key) != nullptr;
  }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }
  [[nodiscard]] position at() const { return table_ ? where(table_->source()) : position{}; }

  [[nodiscard]] std::string key_path(std::string_view key) const {
    if (key.empty()) return path_;
    return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
  }
  // Where `key` is set, or else where the table starts.
  [[nodiscard]] position at(std::string_view key) const {
    if (table_ != nullptr) {
      if (const toml::node* n = table_->get(key)) return where(n->source());
    }
    return at();
  }

  [[noreturn]] void fail(std::string_view key, const std::string& reason) const {
    ctx_->fail(key_path(key), reason, at(key));
  }

  const toml::node* node(std::string_view key) {
    known_.emplace_back(key);
    return table_ != nullptr ? table_->get(key) : nullptr;
  }

  std::optional<std::int64_t> integer(std::string_view key, std::int64_t min, std::int64_t max) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    const auto* v = n->as_integer();
    if (v == nullptr) fail(key, "expected a whole number, got " + std::string(type_name(*n)));
    const std::int64_t value = v->get();
    if (value < min || value > max) {
      fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                    " (got " + std::to_string(value) + ")");
    }
    return value;
  }

  std::optional<int> small_integer(std::string_view key, int min, int max) {
    const auto v = integer(key, min, max);
    return v ? std::optional<int>(static_cast<int>(*v)) : std::nullopt;
  }

  std::optional<double> number(std::string_view key, double min, double max) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    double value = 0;
    if (const auto* f = n->as_floating_point()) {
      value = f->get();
    } else if (const auto* i = n->as_integer()) {
      value = static_cast<double>(i->get());
    } else {
      fail(key, "expected a number, got " + std::string(type_name(*n)));
    }
    if (!(value >= min && value <= max)) {  // also refuses nan
      std::ostringstream msg;
      msg << "must be between " << min << " and " << max << " (got " << value << ")";
      fail(key, msg.str());
    }
    return value;
  }

  std::optional<bool> boolean(std::string_view key) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    const auto* v = n->as_boolean();
    if (v == nullptr) {
      fail(key, "expected true or false, got " + std::string(type_name(*n)));
    }
    return v->get();
  }

  // A string value. Values of secret keys are never repeated in messages, here or by callers.
  std::optional<std::string> string(std::string_view key) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    const auto* v = n->as_string();
    if (v == nullptr) fail(key, "expected a string, got " + std::string(type_name(*n)));
    return v->get();
  }

  std::optional<std::string> choice(std::string_view key, std::vector<std::string> allowed) {
    auto value = string(key);
    if (value && std::find(allowed.begin(), allowed.end(), *value) == allowed.end()) {
      fail(key, "'" + *value + "' is not one of " + join(allowed, ", "));
    }
    return value;
  }

  // A bare integer is seconds; a string carries units ("500ms", "1m30s").
  std::optional<milliseconds> duration(std::string_view key, milliseconds min,
                                       milliseconds max = max_duration) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    milliseconds value{};
    if (const auto* i = n->as_integer()) {
      const std::int64_t seconds = i->get();
      if (seconds < 0) fail(key, "must not be negative (got " + std::to_string(seconds) + ")");
      if (seconds > std::chrono::duration_cast<std::chrono::seconds>(max).count()) {
        fail(key, "must be at most " + format_duration(max) + " (got " + std::to_string(seconds) +
                      " seconds)");
      }
      value = std::chrono::seconds(seconds);
    } else if (const auto* s = n->as_string()) {
      try {
        value = parse_duration(s->get());
      } catch (const std::invalid_argument& e) {
        fail(key, e.what());
      }
    } else {
      fail(key,
           "expected a duration (a whole number of seconds, or a string such as \"30s\" or "
           "\"500ms\"), got " +
               std::string(type_name(*n)));
    }
    if (value < min || value > max) {
      fail(key, "must be between " + format_duration(min) + " and " + format_duration(max) +
                    " (got " + format_duration(value) + ")");
    }
    return value;
  }

  // A whole number of hours (the unit the scheduler stores retention in); 0 means "keep".
  std::optional<std::chrono::hours> hours(std::string_view key, std::chrono::hours max) {
    const auto value = duration(key, 0ms, max);
    if (!value) return std::nullopt;
    if (*value % std::chrono::hours(1) != 0ms) {
      fail(key, "must be a whole number of hours, such as \"72h\" or \"7d\" (got " +
                    format_duration(*value) + ")");
    }
    return std::chrono::duration_cast<std::chrono::hours>(*value);
  }

  // A byte count: a whole number, or a string with a binary unit ("64KiB", "1MiB").
  std::optional<std::size_t> bytes(std::string_view key, std::size_t min, std::size_t max) {
    const toml::node* n = node(key);
    if (n == nullptr) return std::nullopt;
    long double value = 0;
    if (const auto* i = n->as_integer()) {
      value = static_cast<long double>(i->get());
    } else if (const auto* s = n->as_string()) {
      const std::string& text = s->get();
      std::size_t digits = 0;
      while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
        ++digits;
      }
      const std::string unit = text.substr(digits);
      long double scale = 0;
      if (unit == "B" || unit.empty()) scale = 1;
      if (unit == "KiB") scale = 1024.0L;
      if (unit == "MiB") scale = 1024.0L * 1024;
      if (unit == "GiB") scale = 1024.0L * 1024 * 1024;
      if (digits == 0 || digits > 12 || scale == 0) {
        fail(key, "'" + text +
                      "' is not a size: write a whole number of bytes, or a number followed by "
                      "B, KiB, MiB or GiB, such as \"64KiB\"");
      }
      value = std::stold(text.substr(0, digits)) * scale;
    } else {
      fail(key, "expected a size (a whole number of bytes, or a string such as \"1MiB\"), got " +
                    std::string(type_name(*n)));
    }
    if (value < static_cast<long double>(min) || value > static_cast<long double>(max)) {
      fail(key, "must be between " + std::to_string(min) + " and " + std::to_string(max) +
                    " bytes (got " + std::to_string(static_cast<long long>(value)) + ")");
    }
    return static_cast<std::size_t>(value);
  }

  // The table under `key`; absent when the file does not have it.
  section table(std::string_view key) {
    const toml::node* n = node(key);
    if (n != nullptr && !n->is_table()) {
      fail(key, "expected a table ([" + key_path(key) + "]), got " + std::string(type_name(*n)));
    }
    return section(*ctx_, n != nullptr ? n->as_table() : nullptr, key_path(key));
  }

  // Every entry of the table, for tables whose keys are names chosen by the user.
  [[nodiscard]] std::vector<std::pair<std::string, const toml::node*>> entries() const {
    std::vector<std::pair<std::string, const toml::node*>> out;
    if (table_ == nullptr) return out;
    for (const auto& [k, v] : *table_)
      out.emplace_back(std::string(k.str()), &v);
    return out;
  }
  void accept_all() {
    for (const auto& [k, v] : entries())
      known_.push_back(k);
  }

  // Rejects the first key (in file order) that no getter asked for.
  void finish() const {
    if (table_ == nullptr) return;
    const toml::key* first = nullptr;
    for (const auto& [k, v] : *table_) {
      if (std::find(known_.begin(), known_.end(), k.str()) != known_.end()) continue;
      if (first == nullptr || k.source().begin.line < first->source().begin.line) first = &k;
    }
    if (first == nullptr) return;
    std::string reason = "unknown key";
    if (auto guess = closest(first->str(), known_)) {
      reason += "; did you mean '" + *guess + "'?";
    } else {
      std::vector<std::string> sorted = known_;
      std::sort(sorted.begin(), sorted.end());
      sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
      reason += " (known keys" + (path_.empty() ? std::string() : " in [" + path_ + "]") + ": " +
                join(sorted, ", ") + ")";
    }
    ctx_->fail(key_path(first->str()), reason, where(first->source()));
  }

 private:
  const loader* ctx_;
  const toml::table* table_;
  std::string path_;
  std::vector<std::string> known_;
};

}  // namespace sluice::cli::config_detail
