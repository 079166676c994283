#include "cli/config.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>
#include <unistd.h>

#include "sluice/pg/conninfo.hpp"
#include "sluice/sched/handlers.hpp"

static_assert(TOML_EXCEPTIONS, "config.cpp expects toml::parse to throw toml::parse_error");

namespace sluice::cli {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

// The longest duration any setting accepts; keeps every later time computation in range.
constexpr milliseconds max_duration = std::chrono::hours(24 * 365);
// PostgreSQL stores statement_timeout as an int of milliseconds.
constexpr milliseconds max_statement_timeout{std::numeric_limits<std::int32_t>::max()};
// PostgreSQL's MAX_BACKENDS: no server accepts more connections than this.
constexpr long long max_server_connections = 262143;
// Shorter bearer tokens can be guessed by anyone who can reach the port.
constexpr std::size_t min_token_length = 16;
// The dashboard keeps history / sample_interval samples per pool in memory.
constexpr long long max_history_samples = 100000;

struct position {
  int line = 0;
  int column = 0;
};

position where(const toml::source_region& region) {
  return {static_cast<int>(region.begin.line), static_cast<int>(region.begin.column)};
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out.append(separator);
    out += item;
  }
  return out;
}

std::string_view type_name(const toml::node& n) {
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
std::size_t edit_distance(std::string_view a, std::string_view b) {
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
std::optional<std::string> closest(std::string_view key, const std::vector<std::string>& known) {
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

bool is_printable_ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u <= 0x7e;
  });
}

bool has_space_or_control(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u <= 0x20 || u == 0x7f;
  });
}

// Checks a conninfo string or URI the way libpq will read it, so a typo fails at start rather
// than at the first connect. Returns the reason it is unusable, without any part of the value
// that could be a password.
std::optional<std::string> conninfo_problem(const std::string& value) {
  // The value itself is never repeated: a misspelt key ("passwrd=") would defeat the redaction
  // of its value. libpq's message is, with every quoted fragment that could be a password
  // masked.
  if (auto error = pg::conninfo_error(value))
    return "not a valid connection string or URI (libpq: " + *error + ")";
  return std::nullopt;
}

// Whether a line of the file assigns a secret (a url or a token), so that a syntax error on it
// is reported without toml++'s description, which may quote the offending characters.
bool line_holds_secret(std::string_view text, int line) {
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

// Reads the file's tables, raising config_error with the key's path and line.
class loader {
 public:
  explicit loader(std::string source) : source_(std::move(source)) {}

  [[nodiscard]] const std::string& source() const noexcept { return source_; }

  [[noreturn]] void fail(const std::string& key, const std::string& reason,
                         position at = {}) const {
    throw config_error(source_, key, reason, at.line, at.column);
  }
  [[noreturn]] void fail_env(std::string_view variable, const std::string& reason) const {
    throw config_error::environment(source_, std::string(variable), reason);
  }

 private:
  std::string source_;
};

// One table of the file. Every getter records its key as known; finish() then rejects the keys
// nothing asked for. A section whose table is absent answers nullopt to everything.
class section {
 public:
  section(const loader& ctx, const toml::table* table, std::string path)
      : ctx_(&ctx), table_(table), path_(std::move(path)) {}

  [[nodiscard]] bool present() const noexcept { return table_ != nullptr; }
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

bool valid_pool_name(std::string_view name) {
  return !name.empty() && name.size() <= 63 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

bool valid_task_type(std::string_view type) {
  return !type.empty() && type.size() <= 100 && std::all_of(type.begin(), type.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' ||
           c == '-';
  });
}

bool valid_schema_name(std::string_view name) {
  if (name.empty() || name.size() > 63) return false;
  if (!((name[0] >= 'a' && name[0] <= 'z') || name[0] == '_')) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// The keys of a pool table, in the order docs/configuration.md lists them.
const std::vector<std::string>& pool_keys() {
  static const std::vector<std::string> keys = {"url",
                                                "size",
                                                "max_overflow",
                                                "timeout",
                                                "recycle",
                                                "recycle_jitter",
                                                "idle_timeout",
                                                "overflow_idle_grace",
                                                "min_idle",
                                                "pre_ping",
                                                "pre_ping_window",
                                                "reset_on_return",
                                                "leak_threshold",
                                                "lifo",
                                                "connect_timeout",
                                                "statement_timeout",
                                                "application_name",
                                                "statement_cache",
                                                "connect_backoff_initial",
                                                "connect_backoff_max",
                                                "housekeeping_interval"};
  return keys;
}

// Reads one pool table on top of `s`, which holds the defaults and what [database] passes on.
void read_pool(section& t, pool::settings& s) {
  if (auto v = t.string("url")) {
    if (auto problem = conninfo_problem(*v)) t.fail("url", *problem);
    s.conninfo = *v;
  }
  if (auto v = t.small_integer("size", 1, 10000)) s.size = *v;
  if (auto v = t.small_integer("max_overflow", 0, 10000)) s.max_overflow = *v;
  if (auto v = t.duration("timeout", 0ms, std::chrono::hours(24))) s.timeout = *v;
  if (auto v = t.duration("recycle", 0ms)) s.recycle = *v;
  if (auto v = t.number("recycle_jitter", 0.0, 0.5)) s.recycle_jitter = *v;
  if (auto v = t.duration("idle_timeout", 0ms)) s.idle_timeout = *v;
  if (auto v = t.duration("overflow_idle_grace", 0ms)) s.overflow_idle_grace = *v;
  if (auto v = t.small_integer("min_idle", 0, 10000)) s.min_idle = *v;
  if (auto v = t.boolean("pre_ping")) s.pre_ping = *v;
  if (auto v = t.duration("pre_ping_window", 0ms)) s.pre_ping_window = *v;
  if (auto v = t.choice("reset_on_return", {"none", "rollback", "discard_all"})) {
    s.reset_on_return = pool::parse_reset_mode(*v);
  }
  if (auto v = t.duration("leak_threshold", 0ms)) s.leak_threshold = *v;
  if (auto v = t.boolean("lifo")) s.lifo = *v;
  if (auto v = t.duration("connect_timeout", 1ms, std::chrono::hours(1))) s.connect_timeout = *v;
  if (auto v = t.duration("statement_timeout", 0ms, max_statement_timeout)) {
    s.statement_timeout = *v;
  }
  if (auto v = t.string("application_name")) {
    if (v->empty() || v->size() > 63 || !is_printable_ascii(*v)) {
      t.fail("application_name", "must be 1 to 63 printable ASCII characters");
    }
    s.application_name = *v;
  }
  if (auto v = t.integer("statement_cache", 0, 100000)) {
    s.statement_cache = static_cast<std::size_t>(*v);
  }
  if (auto v = t.duration("connect_backoff_initial", 1ms, std::chrono::minutes(10))) {
    s.connect_backoff_initial = *v;
  }
  if (auto v = t.duration("connect_backoff_max", 1ms, std::chrono::hours(1))) {
    s.connect_backoff_max = *v;
  }
  if (auto v = t.duration("housekeeping_interval", 10ms, std::chrono::hours(1))) {
    s.housekeeping_interval = *v;
  }
}

// The pool settings each DB_POOL_* variable feeds, for saying when the environment made a pool
// invalid.
bool env_var_affects(std::string_view variable, std::string_view field) {
  if (variable == "DB_POOL_SIZE") return field == "size" || field == "min_idle";
  if (variable == "DB_MAX_OVERFLOW") return field == "size" || field == "max_overflow";
  if (variable == "DB_POOL_RECYCLE") return field == "recycle";
  if (variable == "DB_POOL_TIMEOUT") return field == "timeout";
  return false;
}

// pool::validate's verdict as a config_error on the key it names. `env` lists the environment
// variables (name, value) that changed the pool.
void validate_pool(const section& t, const pool::settings& s,
                   const std::vector<std::pair<std::string, std::string>>& env) {
  try {
    pool::validate(s);
  } catch (const pool::settings_error& e) {
    std::string reason = e.what();
    const std::string prefix = "pool '" + s.name + "': ";
    if (reason.rfind(prefix, 0) == 0) reason.erase(0, prefix.size());
    const std::string field = reason.substr(0, reason.find(' '));
    std::string note;
    for (const auto& [variable, value] : env) {
      if (!env_var_affects(variable, field)) continue;
      note += (note.empty() ? " (after " : ", ") + variable + "=" + value;
    }
    if (!note.empty()) reason += note + " from the environment)";
    const auto& keys = pool_keys();
    if (std::find(keys.begin(), keys.end(), field) != keys.end()) t.fail(field, reason);
    t.fail("", reason);
  }
}

std::string read_token_file(const section& t, const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    t.fail("token_file", "cannot read '" + file.string() + "': " + std::strerror(errno));
  }
  std::string token((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back())))
    token.pop_back();
  if (token.empty()) t.fail("token_file", "'" + file.string() + "' is empty");
  return token;
}

// Why a token is unusable (without repeating it), or nullopt.
std::optional<std::string> token_problem(const std::string& token) {
  if (has_space_or_control(token) || !is_printable_ascii(token)) {
    return "the token must be printable ASCII without spaces";
  }
  if (token.size() < min_token_length) {
    return "the token is " + std::to_string(token.size()) + " characters long; use at least " +
           std::to_string(min_token_length) + " (e.g. the output of `openssl rand -hex 24`)";
  }
  return std::nullopt;
}

std::optional<std::string> env_value(const env_lookup& env, std::string_view name) {
  if (!env) return std::nullopt;
  auto value = env(name);
  if (!value || value->empty()) return std::nullopt;
  return value;
}

daemon_config parse_text(std::string_view text, std::string source,
                         const std::filesystem::path& base_dir, const env_lookup& env) {
  const loader ctx(source);
  toml::table doc;
  try {
    doc = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const position at = where(e.source());
    std::string reason = "TOML syntax error: ";
    if (line_holds_secret(text, at.line)) {
      reason += "the line sets a url or token, so the details are not shown";
    } else {
      reason += std::string(e.description());
    }
    ctx.fail("", reason, at);
  }

  daemon_config cfg;
  cfg.source = source;
  section root(ctx, &doc, "");

  // [database]
  section db = root.table("database");
  if (auto v = db.string("url")) {
    if (auto problem = conninfo_problem(*v)) db.fail("url", *problem);
    cfg.database.url = *v;
  }
  if (auto v = env_value(env, "DATABASE_URL")) {
    if (auto problem = conninfo_problem(*v)) ctx.fail_env("DATABASE_URL", *problem);
    cfg.database.url = *v;
    cfg.environment_applied.emplace_back("DATABASE_URL");
  }
  if (auto v = db.duration("connect_timeout", 1ms, std::chrono::hours(1))) {
    cfg.database.connect_timeout = *v;
  }
  if (auto v = db.duration("statement_timeout", 0ms, max_statement_timeout)) {
    cfg.database.statement_timeout = *v;
  }
  if (auto v = db.string("application_name_prefix")) {
    if (v->empty() || v->size() > 40 || !is_printable_ascii(*v)) {
      db.fail("application_name_prefix", "must be 1 to 40 printable ASCII characters");
    }
    cfg.database.application_name_prefix = *v;
  }
  if (auto v = db.small_integer("connection_budget", 1, static_cast<int>(max_server_connections))) {
    cfg.database.connection_budget = *v;
  }
  db.finish();

  auto pool_defaults = [&](std::string name) {
    pool::settings s;
    s.conninfo = cfg.database.url;
    s.connect_timeout = cfg.database.connect_timeout;
    s.statement_timeout = cfg.database.statement_timeout;
    s.application_name = cfg.database.application_name_prefix + "/" + name;
    s.name = std::move(name);
    return s;
  };

  // [pools.<name>]
  std::set<std::string> pool_env_vars;
  section pools = root.table("pools");
  pools.accept_all();
  std::vector<std::pair<pool::settings, section>> named;
  for (const auto& [name, node] : pools.entries()) {
    if (!node->is_table()) {
      pools.fail(name, "expected a table ([pools." + name + "]) of pool settings, got " +
                           std::string(type_name(*node)));
    }
    if (name == lane_pool_name) {
      pools.fail(name, "the name '" + name +
                           "' is reserved for the scheduler's lane; configure it under "
                           "[scheduler.lane]");
    }
    if (!valid_pool_name(name)) {
      pools.fail(name, "pool names are 1 to 63 characters of a-z, 0-9, '_' and '-'");
    }
    section t(ctx, node->as_table(), "pools." + name);
    pool::settings s = pool_defaults(name);
    read_pool(t, s);
    t.finish();
    named.emplace_back(std::move(s), std::move(t));
  }
  if (named.empty()) {
    named.emplace_back(pool_defaults("default"), section(ctx, nullptr, "pools.default"));
  }
  for (auto& [s, t] : named) {
    try {
      s = pool::apply_env_overrides(std::move(s), [&](std::string_view var) {
        auto value = env_value(env, var);
        if (value) pool_env_vars.emplace(var);
        return value;
      });
    } catch (const pool::settings_error& e) {
      std::string reason = e.what();
      const std::string variable = reason.substr(0, reason.find(':'));
      if (reason.rfind(variable + ": ", 0) == 0) reason.erase(0, variable.size() + 2);
      ctx.fail_env(variable, reason);
    }
    std::vector<std::pair<std::string, std::string>> applied;
    for (const auto& var : pool_env_vars)
      applied.emplace_back(var, *env_value(env, var));
    validate_pool(t, s, applied);
    cfg.pools.push_back(std::move(s));
  }
  cfg.environment_applied.insert(cfg.environment_applied.end(), pool_env_vars.begin(),
                                 pool_env_vars.end());

  // [scheduler]
  section sch = root.table("scheduler");
  auto& ss = cfg.scheduler;
  if (auto v = sch.string("schema")) {
    if (!valid_schema_name(*v)) {
      sch.fail("schema",
               "'" + *v +
                   "' is not a plain schema name: 1 to 63 characters of a-z, 0-9 and '_', "
                   "not starting with a digit");
    }
    ss.schema = *v;
  }
  if (auto v = sch.string("node_id")) {
    if (v->empty() || v->size() > 100 || has_space_or_control(*v) || !is_printable_ascii(*v)) {
      sch.fail("node_id", "must be 1 to 100 printable ASCII characters without spaces");
    }
    ss.node_id = *v;
  }
  if (auto v = sch.small_integer("workers", 1, 1024)) ss.workers = *v;
  if (auto v = sch.small_integer("claim_batch", 1, 100000)) ss.claim_batch = *v;
  if (auto v = sch.small_integer("prefetch", 0, 100000)) ss.prefetch = *v;
  if (auto v = sch.small_integer("max_prefetch", 0, 100000)) ss.max_prefetch = *v;
  if (ss.max_prefetch < ss.prefetch) {
    sch.fail(sch.node("max_prefetch") != nullptr ? "max_prefetch" : "prefetch",
             "max_prefetch (" + std::to_string(ss.max_prefetch) + ") must be at least prefetch (" +
                 std::to_string(ss.prefetch) + ")");
  }
  if (auto v = sch.duration("poll_interval", 10ms, std::chrono::hours(1))) ss.poll_interval = *v;
  if (auto v = sch.duration("idle_poll_max", 10ms, std::chrono::hours(1))) ss.idle_poll_max = *v;
  if (auto v = sch.duration("heartbeat_interval", 100ms, std::chrono::hours(1))) {
    ss.heartbeat_interval = *v;
  }
  if (auto v = sch.duration("node_expiry", 200ms, std::chrono::hours(24))) ss.node_expiry = *v;
  if (auto v = sch.duration("stop_grace", 0ms, std::chrono::hours(24))) ss.stop_grace = *v;
  if (auto v = sch.duration("stuck_grace", 0ms, std::chrono::hours(24))) ss.stuck_grace = *v;
  if (auto v = sch.hours("run_retention", std::chrono::hours(24 * 365))) ss.run_retention = *v;
  if (auto v = sch.hours("cycle_retention", std::chrono::hours(24 * 365))) {
    ss.cycle_retention = *v;
  }
  if (auto v = sch.hours("task_retention", std::chrono::hours(24 * 365))) ss.task_retention = *v;
  if (auto v = sch.boolean("listen")) ss.listen = *v;
  if (auto v = sch.string("listen_url")) {
    if (auto problem = conninfo_problem(*v)) sch.fail("listen_url", *problem);
    ss.listen_conninfo = *v;
  }
  if (ss.idle_poll_max < ss.poll_interval) {
    sch.fail("idle_poll_max", "must be at least poll_interval (" +
                                  format_duration(ss.poll_interval) + "), got " +
                                  format_duration(ss.idle_poll_max));
  }
  if (ss.node_expiry < ss.heartbeat_interval * 3 / 2) {
    sch.fail("node_expiry", "must be at least 1.5 times heartbeat_interval (" +
                                format_duration(ss.heartbeat_interval * 3 / 2) + "), got " +
                                format_duration(ss.node_expiry) +
                                ": a node whose heartbeat is late by half an interval is not "
                                "dead yet");
  }
  section conc = sch.table("concurrency");
  conc.accept_all();
  for (const auto& [type, node] : conc.entries()) {
    if (!valid_task_type(type)) {
      conc.fail(type, "task types are 1 to 100 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'");
    }
    const auto* n = node->as_integer();
    if (n == nullptr) {
      conc.fail(type, "expected a whole number of handlers, got " + std::string(type_name(*node)));
    }
    if (n->get() < 1 || n->get() > ss.workers) {
      conc.fail(type, "must be between 1 and scheduler.workers (" + std::to_string(ss.workers) +
                          "), got " + std::to_string(n->get()) +
                          ": a type never runs more handlers than there are workers");
    }
    ss.concurrency[type] = static_cast<int>(n->get());
  }
  conc.finish();

  section lane = sch.table("lane");
  cfg.lane = pool_defaults(std::string(lane_pool_name));
  cfg.lane.size = 2;
  cfg.lane.max_overflow = 1;
  // The lane is used every heartbeat (2 s): with the pools' 500 ms pre-ping window every
  // heartbeat would cost a second round trip and transaction. A dead lane connection costs one
  // failed heartbeat or cycle instead, which the engine retries on a fresh connection.
  cfg.lane.pre_ping_window = std::chrono::seconds(30);
  read_pool(lane, cfg.lane);
  lane.finish();
  validate_pool(lane, cfg.lane, {});
  sch.finish();

  // [types.<name>]
  section types = root.table("types");
  types.accept_all();
  const std::vector<std::string> handlers(std::begin(builtin_handlers), std::end(builtin_handlers));
  for (const auto& [name, node] : types.entries()) {
    if (!node->is_table()) {
      types.fail(name, "expected a table ([types." + name + "]) with handler = \"sql\" or " +
                           "another built-in handler, got " + std::string(type_name(*node)));
    }
    if (!valid_task_type(name)) {
      types.fail(name, "task types are 1 to 100 characters of A-Z, a-z, 0-9, '_', '.', ':', '-'");
    }
    if (std::find(handlers.begin(), handlers.end(), name) != handlers.end()) {
      types.fail(name, "'" + name +
                           "' is a built-in task type and cannot be redefined; give the alias a "
                           "name of its own");
    }
    section t(ctx, node->as_table(), "types." + name);
    const auto handler = t.string("handler");
    if (!handler) {
      t.fail("handler", "missing: name the built-in handler that runs tasks of type '" + name +
                            "' (" + join(handlers, ", ") + ")");
    }
    if (std::find(handlers.begin(), handlers.end(), *handler) == handlers.end()) {
      t.fail("handler", "'" + *handler + "' is not a built-in handler (" + join(handlers, ", ") +
                            "); an alias cannot name another alias");
    }
    task_defaults d;
    d.priority = t.small_integer("priority", -1000, 1000);
    d.max_attempts = t.small_integer("max_attempts", 1, 1000);
    constexpr auto year = std::chrono::hours(24 * 366);
    d.timeout = t.duration("timeout", 1ms, year);
    d.backoff_base = t.duration("backoff_base", 0ms, year);
    d.backoff_cap = t.duration("backoff_cap", 0ms, year);
    const sched::task_spec general;
    if (d.backoff_cap.value_or(general.backoff_cap) <
        d.backoff_base.value_or(general.backoff_base)) {
      t.fail(d.backoff_cap ? "backoff_cap" : "backoff_base",
             "backoff_cap (" + format_duration(d.backoff_cap.value_or(general.backoff_cap)) +
                 ") must be at least backoff_base (" +
                 format_duration(d.backoff_base.value_or(general.backoff_base)) + ")");
    }
    t.finish();
    cfg.types.push_back({name, *handler, d});
  }
  types.finish();
  std::sort(cfg.types.begin(), cfg.types.end(),
            [](const task_type_alias& a, const task_type_alias& b) { return a.name < b.name; });

  // [http]
  section http = root.table("http");
  auto& hc = cfg.http;
  if (auto v = http.string("address")) {
    if (v->empty() || has_space_or_control(*v)) {
      http.fail("address", "expected an IP address or host name such as \"127.0.0.1\"");
    }
    hc.address = *v;
  }
  if (auto v = http.small_integer("port", 0, 65535)) hc.port = *v;
  const auto token = http.string("token");
  const auto token_file = http.string("token_file");
  if (token && token_file) http.fail("token_file", "set token or token_file, not both");
  if (token) {
    if (auto problem = token_problem(*token)) http.fail("token", *problem);
    hc.token = *token;
  }
  if (token_file) {
    if (token_file->empty()) http.fail("token_file", "must not be empty");
    std::filesystem::path file(*token_file);
    if (file.is_relative()) file = base_dir / file;
    hc.token = read_token_file(http, file);
    if (auto problem = token_problem(hc.token)) {
      http.fail("token_file", "'" + file.string() + "': " + *problem);
    }
    hc.token_file = file.lexically_normal();
  }
  if (auto v = http.bytes("max_body_bytes", 1024, std::size_t{256} * 1024 * 1024)) {
    hc.max_body_bytes = *v;
  }
  if (auto v = http.integer("max_connections", 16, 1'000'000)) {
    hc.max_connections = static_cast<std::size_t>(*v);
  }
  if (auto v = http.bytes("max_header_bytes", 1024, std::size_t{1024} * 1024)) {
    hc.max_header_bytes = *v;
  }
  if (auto v = http.integer("max_header_count", 8, 10'000)) {
    hc.max_header_count = static_cast<std::size_t>(*v);
  }
  if (auto v = http.bytes("max_buffered_body_bytes", 1024, std::size_t{64} * 1024 * 1024 * 1024)) {
    hc.max_buffered_body_bytes = *v;
  }
  if (hc.max_buffered_body_bytes < hc.max_body_bytes) {
    http.fail("max_buffered_body_bytes",
              "must be at least max_body_bytes (" + std::to_string(hc.max_body_bytes) +
                  "), or no body of the largest size could ever be read");
  }
  if (auto v = http.duration("header_timeout", 100ms, std::chrono::minutes(10))) {
    hc.header_timeout = *v;
  }
  if (auto v = http.duration("body_timeout", 100ms, std::chrono::hours(1))) hc.body_timeout = *v;
  if (auto v = http.duration("idle_timeout", 100ms, std::chrono::hours(1))) hc.idle_timeout = *v;
  if (auto v = http.duration("write_timeout", 100ms, std::chrono::hours(1))) hc.write_timeout = *v;
  if (auto v = http.duration("history", 1s, std::chrono::hours(24 * 7))) hc.history = *v;
  if (auto v = http.duration("sample_interval", 100ms, std::chrono::hours(1))) {
    hc.sample_interval = *v;
  }
  if (hc.history < hc.sample_interval) {
    http.fail("history",
              "must be at least sample_interval (" + format_duration(hc.sample_interval) + ")");
  }
  if (hc.history / hc.sample_interval > max_history_samples) {
    http.fail("history", "keeps " + std::to_string(hc.history / hc.sample_interval) +
                             " samples per pool (history / sample_interval); at most " +
                             std::to_string(max_history_samples) +
                             " are allowed: shorten history or lengthen sample_interval");
  }
  if (const toml::node* n = http.node("allowed_hosts")) {
    const auto* list = n->as_array();
    if (list == nullptr) {
      http.fail("allowed_hosts",
                "expected an array of host names, got " + std::string(type_name(*n)));
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
      const toml::node& item = *list->get(i);
      const std::string key = "http.allowed_hosts[" + std::to_string(i) + "]";
      const auto* name = item.as_string();
      if (name == nullptr) {
        ctx.fail(key, "expected a string, got " + std::string(type_name(item)),
                 where(item.source()));
      }
      const std::string& h = name->get();
      if (h.empty() || h.size() > 253 || has_space_or_control(h) ||
          h.find_first_of(":/[]@") != std::string::npos) {
        ctx.fail(key,
                 "'" + h.substr(0, 100) +
                     "' is not a host name (give the name alone, without scheme or port, "
                     "or \"*\" for any)",
                 where(item.source()));
      }
      hc.allowed_hosts.push_back(h);
    }
  }
  http.finish();
  if (auto v = env_value(env, "SLUICE_API_TOKEN")) {
    if (auto problem = token_problem(*v)) ctx.fail_env("SLUICE_API_TOKEN", *problem);
    hc.token = *v;
    hc.token_file.clear();
    cfg.environment_applied.emplace_back("SLUICE_API_TOKEN");
  }
  if (auto v = env_value(env, "SLUICE_HTTP_PORT")) {
    int port = -1;
    const bool digits = v->size() <= 5 && std::all_of(v->begin(), v->end(), [](char c) {
                          return std::isdigit(static_cast<unsigned char>(c));
                        });
    if (digits) port = std::stoi(*v);
    if (port < 0 || port > 65535) {
      ctx.fail_env("SLUICE_HTTP_PORT", "'" + *v + "' is not a port number (0 to 65535)");
    }
    hc.port = port;
    cfg.environment_applied.emplace_back("SLUICE_HTTP_PORT");
  }

  // [commands]
  section cmds = root.table("commands");
  if (const toml::node* n = cmds.node("allow")) {
    const auto* list = n->as_array();
    if (list == nullptr) {
      cmds.fail("allow", "expected an array of absolute paths, got " + std::string(type_name(*n)));
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
      const toml::node& item = *list->get(i);
      const std::string key = "commands.allow[" + std::to_string(i) + "]";
      const auto* path = item.as_string();
      if (path == nullptr) {
        ctx.fail(key, "expected a string, got " + std::string(type_name(item)),
                 where(item.source()));
      }
      const std::string& p = path->get();
      const std::filesystem::path fp(p);
      if (!fp.is_absolute()) {
        ctx.fail(key, "'" + p + "' is not an absolute path; commands are never looked up in PATH",
                 where(item.source()));
      }
      std::error_code ec;
      const auto status = std::filesystem::status(fp, ec);
      if (ec || !std::filesystem::exists(status)) {
        ctx.fail(key, "'" + p + "' does not exist", where(item.source()));
      }
      if (!std::filesystem::is_regular_file(status)) {
        ctx.fail(key, "'" + p + "' is not a regular file", where(item.source()));
      }
      if (::access(p.c_str(), X_OK) != 0) {
        ctx.fail(key, "'" + p + "' is not executable by this user", where(item.source()));
      }
      auto& allow = cfg.commands.allow;
      if (std::find(allow.begin(), allow.end(), p) == allow.end()) allow.push_back(p);
    }
  }
  if (auto v = cmds.duration("default_timeout", 1s)) cfg.commands.default_timeout = *v;
  if (auto v = cmds.bytes("max_output_bytes", 1024, std::size_t{64} * 1024 * 1024)) {
    cfg.commands.max_output_bytes = *v;
  }
  if (const toml::node* n = cmds.node("allowed_env")) {
    const auto* list = n->as_array();
    if (list == nullptr) {
      cmds.fail("allowed_env", "expected an array of environment variable names, got " +
                                   std::string(type_name(*n)));
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
      const toml::node& item = *list->get(i);
      const std::string key = "commands.allowed_env[" + std::to_string(i) + "]";
      const auto* name = item.as_string();
      if (name == nullptr) {
        ctx.fail(key, "expected a string, got " + std::string(type_name(item)),
                 where(item.source()));
      }
      const std::string& v = name->get();
      // The rules a task's env follows, so that every listed name is one a task can set.
      if (const auto problem = sched::command_env_problem(v, sched::command_policy{})) {
        ctx.fail(key, "'" + v + "' " + *problem, where(item.source()));
      }
      auto& allowed = cfg.commands.allowed_env;
      if (std::find(allowed.begin(), allowed.end(), v) == allowed.end()) allowed.push_back(v);
    }
    if (list->empty()) {
      cmds.fail("allowed_env",
                "is empty; leave it out to allow every name that is not refused, or list the "
                "names tasks may set");
    }
  }
  if (auto v = cmds.string("path")) {
    if (v->empty()) cmds.fail("path", "must not be empty");
    std::size_t start = 0;
    for (;;) {
      const std::size_t colon = v->find(':', start);
      const std::string dir = v->substr(start, colon - start);
      // An empty entry means the working directory, which a task chooses (cwd).
      if (dir.empty() || dir.front() != '/') {
        cmds.fail("path", "'" + *v +
                              "' must be absolute directories separated by ':' (no empty "
                              "entries, which would mean the working directory)");
      }
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    cfg.commands.path = *v;
  }
  cmds.finish();

  // [http_tasks]
  section ht = root.table("http_tasks");
  if (const toml::node* n = ht.node("allow_networks")) {
    const auto* list = n->as_array();
    if (list == nullptr) {
      ht.fail("allow_networks", "expected an array of networks such as \"10.0.0.0/8\", got " +
                                    std::string(type_name(*n)));
    }
    for (std::size_t i = 0; i < list->size(); ++i) {
      const toml::node& item = *list->get(i);
      const std::string key = "http_tasks.allow_networks[" + std::to_string(i) + "]";
      const auto* net = item.as_string();
      if (net == nullptr) {
        ctx.fail(key, "expected a string, got " + std::string(type_name(item)),
                 where(item.source()));
      }
      const std::string& v = net->get();
      if (!sched::parse_ip_network(v)) {
        ctx.fail(key,
                 "'" + v.substr(0, 100) +
                     "' is not a network: give an address with a prefix length and no host "
                     "bits set (\"127.0.0.1/32\", \"10.0.0.0/8\", \"fd00::/8\") or a lone address",
                 where(item.source()));
      }
      auto& allow = cfg.http_tasks.allow_networks;
      if (std::find(allow.begin(), allow.end(), v) == allow.end()) allow.push_back(v);
    }
  }
  {
    auto secret = ht.string("signing_secret");
    auto variable = ht.string("signing_secret_env");
    if (secret && variable) {
      ht.fail("signing_secret_env",
              "give signing_secret or signing_secret_env, not both (signing_secret_env keeps "
              "the secret out of the file)");
    }
    const char* key = "signing_secret";
    if (variable) {
      key = "signing_secret_env";
      if (variable->empty()) ht.fail(key, "must name an environment variable");
      secret = env_value(env, *variable);
      if (!secret) {
        ht.fail(key, "the environment variable " + *variable +
                         " is not set or is empty; set it to the webhook signing secret");
      }
      cfg.http_tasks.signing_secret_env = *variable;
    }
    if (secret) {
      if (secret->size() < 16) {
        ht.fail(key, "the signing secret is " + std::to_string(secret->size()) +
                         " characters long; use at least 16 (e.g. the output of `openssl rand "
                         "-hex 32`)");
      }
      cfg.http_tasks.signing_secret = *secret;
    }
  }
  {
    section keys = ht.table("signing_keys");
    keys.accept_all();
    for (const auto& [name, node] : keys.entries()) {
      const auto* variable = node->as_string();
      if (variable == nullptr) {
        keys.fail(name,
                  "expected the name of the environment variable that holds this key's "
                  "secret, got " +
                      std::string(type_name(*node)));
      }
      if (name.empty() || name.size() > 64 || !std::all_of(name.begin(), name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-' ||
                   c == '.';
          })) {
        keys.fail(name, "key names are 1 to 64 characters of A-Z, a-z, 0-9, '_', '-', '.'");
      }
      const auto secret = env_value(env, variable->get());
      if (!secret) {
        keys.fail(name, "the environment variable " + variable->get() +
                            " is not set or is empty; set it to this key's signing secret");
      }
      if (secret->size() < 16) {
        keys.fail(name, "the secret in " + variable->get() + " is " +
                            std::to_string(secret->size()) + " characters long; use at least 16");
      }
      cfg.http_tasks.signing_keys_env[name] = variable->get();
      cfg.http_tasks.signing_keys[name] = *secret;
    }
    keys.finish();
  }
  ht.finish();

  // [log]
  section lg = root.table("log");
  if (auto v = lg.choice("format", {"text", "json"})) {
    cfg.log.format = *v == "json" ? log_format::json : log_format::text;
  }
  if (auto v = lg.choice("level", {"debug", "info", "warn", "error"})) {
    if (*v == "debug") cfg.log.level = log_level::debug;
    if (*v == "info") cfg.log.level = log_level::info;
    if (*v == "warn") cfg.log.level = log_level::warn;
    if (*v == "error") cfg.log.level = log_level::error;
  }
  lg.finish();

  root.finish();

  // The budget: every connection the process can hold, counted before anything connects.
  long long needed = 0;
  std::vector<std::string> parts;
  for (const auto& p : cfg.pools) {
    needed += p.max_connections();
    parts.push_back(p.name + " " + std::to_string(p.size) + "+" + std::to_string(p.max_overflow));
  }
  needed += cfg.lane.max_connections();
  parts.push_back("scheduler lane " + std::to_string(cfg.lane.size) + "+" +
                  std::to_string(cfg.lane.max_overflow));
  if (cfg.scheduler.listen) {
    needed += 1;
    parts.emplace_back("LISTEN 1");
  }
  const std::string breakdown =
      std::to_string(needed) + " server connections (" + join(parts, ", ") + ")";
  if (needed > max_server_connections) {
    ctx.fail("pools", "the pools need " + breakdown +
                          ", more than any PostgreSQL server accepts (" +
                          std::to_string(max_server_connections) + ")");
  }
  if (cfg.database.connection_budget && needed > *cfg.database.connection_budget) {
    db.fail("connection_budget",
            "this process may hold up to " + breakdown + ", more than the budget of " +
                std::to_string(*cfg.database.connection_budget) +
                ": lower size or max_overflow of some pools, or raise connection_budget");
  }
  cfg.scheduler.connection_budget = static_cast<int>(needed);
  return cfg;
}

}  // namespace

config_error::config_error(std::string source, std::string key, std::string reason, int line,
                           int column)
    : std::runtime_error([&] {
        std::string what = source;
        if (line > 0) {
          what += ":" + std::to_string(line);
          if (column > 0) what += ":" + std::to_string(column);
        }
        what += ": ";
        if (!key.empty()) what += key + ": ";
        return what + reason;
      }()),
      source_(std::move(source)),
      key_(std::move(key)),
      reason_(std::move(reason)),
      line_(line),
      column_(column) {}

config_error config_error::environment(std::string source, std::string variable,
                                       std::string reason) {
  config_error e(source + ": environment variable " + variable, "", reason);
  e.source_ = std::move(source);
  e.key_ = std::move(variable);
  e.from_environment_ = true;
  return e;
}

env_lookup process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

std::string_view to_string(log_format f) noexcept {
  return f == log_format::json ? "json" : "text";
}

std::string_view to_string(log_level l) noexcept {
  switch (l) {
    case log_level::debug:
      return "debug";
    case log_level::info:
      return "info";
    case log_level::warn:
      return "warn";
    case log_level::error:
      return "error";
  }
  return "?";
}

milliseconds parse_duration(std::string_view text) {
  const auto bad = [&](const std::string& why) -> std::invalid_argument {
    return std::invalid_argument("'" + std::string(text) + "' is not a duration: " + why);
  };
  if (text.empty()) throw bad("it is empty");
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    throw bad("a unit is missing (ms, s, m, h or d), e.g. \"" + std::string(text) +
              "s\"; a bare number without quotes means seconds");
  }
  struct unit {
    std::string_view name;
    milliseconds length;
  };
  static constexpr unit units[] = {{"d", std::chrono::hours(24)},
                                   {"h", std::chrono::hours(1)},
                                   {"m", std::chrono::minutes(1)},
                                   {"s", std::chrono::seconds(1)},
                                   {"ms", milliseconds(1)}};
  constexpr std::size_t unit_count = std::size(units);
  std::size_t next_unit = 0;  // units must come largest first, each at most once
  milliseconds total{0};
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t digits_start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i])))
      ++i;
    if (i == digits_start) {
      throw bad("expected a number at '" + std::string(text.substr(digits_start)) + "'");
    }
    if (i - digits_start > 12) throw bad("the number is too large");
    const long long number = std::stoll(std::string(text.substr(digits_start, i - digits_start)));
    const std::size_t unit_start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i])))
      ++i;
    const std::string_view name = text.substr(unit_start, i - unit_start);
    if (name.empty()) throw bad("a unit is missing after " + std::to_string(number));
    std::size_t u = 0;
    while (u < unit_count && units[u].name != name)
      ++u;
    if (u == unit_count) {
      throw bad("unknown unit '" + std::string(name) + "' (use ms, s, m, h or d)");
    }
    if (u < next_unit) throw bad("units must go from largest to smallest, each once (\"1m30s\")");
    next_unit = u + 1;
    if (number > max_duration / units[u].length) throw bad("longer than 365 days");
    total += number * units[u].length;
    if (total > max_duration) throw bad("longer than 365 days");
  }
  return total;
}

std::string format_duration(milliseconds d) {
  if (d == 0ms) return "0s";
  std::string out;
  if (d < 0ms) {
    out += '-';
    d = -d;
  }
  const std::pair<std::string_view, milliseconds> units[] = {{"d", std::chrono::hours(24)},
                                                             {"h", std::chrono::hours(1)},
                                                             {"m", std::chrono::minutes(1)},
                                                             {"s", std::chrono::seconds(1)},
                                                             {"ms", milliseconds(1)}};
  for (const auto& [name, length] : units) {
    if (d >= length) {
      out += std::to_string(d / length);
      out += name;
      d %= length;
    }
  }
  return out;
}

int daemon_config::connections_needed() const noexcept {
  int needed = lane.max_connections() + dedicated_connections();
  for (const auto& p : pools)
    needed += p.max_connections();
  return needed;
}

pool::manager_settings daemon_config::manager_settings() const {
  pool::manager_settings m;
  m.connection_budget = database.connection_budget;
  m.dedicated_connections = dedicated_connections();
  return m;
}

std::vector<pool::settings> daemon_config::pool_settings() const {
  std::vector<pool::settings> all = pools;
  all.push_back(lane);
  return all;
}

const pool::settings* daemon_config::find_pool(std::string_view name) const noexcept {
  for (const auto& p : pools) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::optional<std::string> daemon_config::handler_of(std::string_view type) const {
  for (const std::string_view h : builtin_handlers) {
    if (h == type) return std::string(h);
  }
  for (const auto& t : types) {
    if (t.name == type) return t.handler;
  }
  return std::nullopt;
}

void daemon_config::apply_alias_defaults(const std::vector<task_type_alias>& aliases,
                                         sched::task_spec& spec) {
  for (const auto& t : aliases) {
    if (t.name != spec.type) continue;
    const task_defaults& d = t.defaults;
    if (d.priority) spec.priority = *d.priority;
    if (d.max_attempts) spec.max_attempts = *d.max_attempts;
    if (d.timeout) spec.timeout = *d.timeout;
    if (d.backoff_base) spec.backoff_base = *d.backoff_base;
    if (d.backoff_cap) spec.backoff_cap = *d.backoff_cap;
    return;
  }
}

std::string daemon_config::to_json_redacted() const {
  using json = nlohmann::ordered_json;
  const auto dur = [](milliseconds d) { return format_duration(d); };
  const auto pool_json = [&](const pool::settings& p) {
    json j;
    j["url"] = pg::redact_conninfo(p.conninfo);
    j["size"] = p.size;
    j["max_overflow"] = p.max_overflow;
    j["timeout"] = dur(p.timeout);
    j["recycle"] = dur(p.recycle);
    j["recycle_jitter"] = p.recycle_jitter;
    j["idle_timeout"] = dur(p.idle_timeout);
    j["overflow_idle_grace"] = dur(p.overflow_idle_grace);
    j["min_idle"] = p.min_idle;
    j["pre_ping"] = p.pre_ping;
    j["pre_ping_window"] = dur(p.pre_ping_window);
    j["reset_on_return"] = std::string(pool::to_string(p.reset_on_return));
    j["leak_threshold"] = dur(p.leak_threshold);
    j["lifo"] = p.lifo;
    j["connect_timeout"] = dur(p.connect_timeout);
    j["statement_timeout"] = p.statement_timeout ? json(dur(*p.statement_timeout)) : json(nullptr);
    j["application_name"] = p.effective_application_name();
    j["statement_cache"] = p.statement_cache;
    j["connect_backoff_initial"] = dur(p.connect_backoff_initial);
    j["connect_backoff_max"] = dur(p.connect_backoff_max);
    j["housekeeping_interval"] = dur(p.housekeeping_interval);
    return j;
  };

  json j;
  j["source"] = source;
  j["environment_applied"] = environment_applied;
  j["database"] = {
      {"url", pg::redact_conninfo(database.url)},
      {"connect_timeout", dur(database.connect_timeout)},
      {"statement_timeout",
       database.statement_timeout ? json(dur(*database.statement_timeout)) : json(nullptr)},
      {"application_name_prefix", database.application_name_prefix},
      {"connection_budget",
       database.connection_budget ? json(*database.connection_budget) : json(nullptr)},
  };
  json pools_json = json::object();
  for (const auto& p : pools)
    pools_json[p.name] = pool_json(p);
  j["pools"] = std::move(pools_json);

  json sch;
  sch["schema"] = scheduler.schema;
  sch["node_id"] = scheduler.node_id;
  sch["workers"] = scheduler.workers;
  sch["claim_batch"] = scheduler.claim_batch;
  sch["prefetch"] = scheduler.prefetch;
  sch["max_prefetch"] = scheduler.max_prefetch;
  sch["poll_interval"] = dur(scheduler.poll_interval);
  sch["idle_poll_max"] = dur(scheduler.idle_poll_max);
  sch["heartbeat_interval"] = dur(scheduler.heartbeat_interval);
  sch["node_expiry"] = dur(scheduler.node_expiry);
  sch["stop_grace"] = dur(scheduler.stop_grace);
  sch["stuck_grace"] = dur(scheduler.stuck_grace);
  sch["run_retention"] = dur(scheduler.run_retention);
  sch["cycle_retention"] = dur(scheduler.cycle_retention);
  sch["task_retention"] = dur(scheduler.task_retention);
  sch["listen"] = scheduler.listen;
  sch["listen_url"] = pg::redact_conninfo(scheduler.listen_conninfo);
  sch["concurrency"] = scheduler.concurrency;
  sch["lane"] = pool_json(lane);
  j["scheduler"] = std::move(sch);

  j["http"] = {
      {"address", http.address},
      {"port", http.port},
      {"token_set", !http.token.empty()},
      {"token_file", http.token_file.string()},
      {"max_body_bytes", http.max_body_bytes},
      {"max_connections", http.max_connections},
      {"max_header_bytes", http.max_header_bytes},
      {"max_header_count", http.max_header_count},
      {"max_buffered_body_bytes", http.max_buffered_body_bytes},
      {"header_timeout", dur(http.header_timeout)},
      {"body_timeout", dur(http.body_timeout)},
      {"idle_timeout", dur(http.idle_timeout)},
      {"write_timeout", dur(http.write_timeout)},
      {"history", dur(http.history)},
      {"sample_interval", dur(http.sample_interval)},
      {"allowed_hosts", http.allowed_hosts},
  };
  j["commands"] = {
      {"allow", commands.allow},
      {"default_timeout", dur(commands.default_timeout)},
      {"max_output_bytes", commands.max_output_bytes},
      {"allowed_env", commands.allowed_env},
      {"path", commands.path},
  };
  j["http_tasks"] = {
      {"allow_networks", http_tasks.allow_networks},
      {"signing_secret_set", !http_tasks.signing_secret.empty()},
      {"signing_secret_env", http_tasks.signing_secret_env},
      {"signing_keys", http_tasks.signing_keys_env},  // names and variables, never the secrets
  };
  json types_json = json::object();
  for (const auto& t : types) {
    json entry = {{"handler", t.handler}};
    const task_defaults& d = t.defaults;
    if (d.priority) entry["priority"] = *d.priority;
    if (d.max_attempts) entry["max_attempts"] = *d.max_attempts;
    if (d.timeout) entry["timeout"] = dur(*d.timeout);
    if (d.backoff_base) entry["backoff_base"] = dur(*d.backoff_base);
    if (d.backoff_cap) entry["backoff_cap"] = dur(*d.backoff_cap);
    types_json[t.name] = std::move(entry);
  }
  j["types"] = std::move(types_json);
  j["log"] = {{"format", std::string(to_string(log.format))},
              {"level", std::string(to_string(log.level))}};

  int pool_connections = 0;
  for (const auto& p : pools)
    pool_connections += p.max_connections();
  j["budget"] = {
      {"pools", pool_connections},
      {"lane", lane.max_connections()},
      {"dedicated", dedicated_connections()},
      {"needed", connections_needed()},
      {"connection_budget",
       database.connection_budget ? json(*database.connection_budget) : json(nullptr)},
  };
  return j.dump(2);
}

sched::http_policy http_tasks_config::policy() const {
  sched::http_policy p;
  for (const auto& n : allow_networks) {
    if (auto net = sched::parse_ip_network(n)) p.allow_networks.push_back(*net);
  }
  p.signing_secret = signing_secret;
  p.signing_keys.insert(signing_keys.begin(), signing_keys.end());
  return p;
}

daemon_config load_config(const std::filesystem::path& file, const env_lookup& env) {
  const std::string source = file.string();
  std::ifstream in(file, std::ios::binary);
  if (!in) throw config_error(source, "", std::string("cannot read: ") + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw config_error(source, "", "cannot read: I/O error");
  std::filesystem::path base = file.parent_path();
  if (base.empty()) base = ".";
  std::error_code ec;
  const auto absolute = std::filesystem::absolute(base, ec);
  return parse_text(text.str(), source, ec ? base : absolute, env);
}

daemon_config parse_config(std::string_view toml_text, std::string_view source_name,
                           const env_lookup& env) {
  std::error_code ec;
  auto base = std::filesystem::current_path(ec);
  if (ec) base = ".";
  return parse_text(toml_text, std::string(source_name), base, env);
}

}  // namespace sluice::cli
