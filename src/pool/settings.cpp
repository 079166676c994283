#include "sluice/pool/settings.hpp"

#include <array>
#include <charconv>
#include <string>

#include "sluice/enum_names.hpp"

namespace sluice::pool {

namespace {
constexpr std::array<std::string_view, 3> reset_mode_names{"none", "rollback", "discard_all"};
}  // namespace

std::string_view to_string(reset_mode mode) noexcept {
  return enum_name<reset_mode::discard_all>(mode, reset_mode_names);
}

reset_mode parse_reset_mode(std::string_view text, std::string_view key) {
  if (const auto mode = enum_from_name<reset_mode>(reset_mode_names, text)) return *mode;
  throw settings_error(std::string(key) + ": '" + std::string(text) +
                       "' is not one of none, rollback, discard_all");
}

std::string settings::effective_application_name() const {
  return application_name.empty() ? "sluice/" + name : application_name;
}

void validate(const settings& s) {
  const std::string where = "pool '" + s.name + "': ";
  auto fail = [&](const std::string& what) { throw settings_error(where + what); };
  if (s.name.empty()) throw settings_error("pool: name must not be empty");
  if (s.size < 1) fail("size must be at least 1 (got " + std::to_string(s.size) + ")");
  if (s.max_overflow < 0)
    fail("max_overflow must be 0 or more (got " + std::to_string(s.max_overflow) + ")");
  if (s.size + s.max_overflow > 10000) fail("size + max_overflow must be at most 10000");
  if (s.timeout.count() < 0) fail("timeout must not be negative");
  if (s.recycle.count() < 0) fail("recycle must not be negative (0 disables it)");
  if (s.recycle.count() > 0 && s.recycle < std::chrono::seconds(1))
    fail("recycle must be at least 1 s (or 0 to disable)");
  if (s.recycle_jitter < 0 || s.recycle_jitter > 0.5)
    fail("recycle_jitter must be between 0 and 0.5");
  if (s.idle_timeout.count() < 0) fail("idle_timeout must not be negative (0 disables it)");
  if (s.overflow_idle_grace.count() < 0)
    fail("overflow_idle_grace must not be negative (0 closes overflow connections at once)");
  if (s.min_idle < 0 || s.min_idle > s.size) {
    fail("min_idle must be between 0 and size (" + std::to_string(s.size) + "), got " +
         std::to_string(s.min_idle));
  }
  if (s.pre_ping_window.count() < 0) fail("pre_ping_window must not be negative");
  if (s.leak_threshold.count() < 0) fail("leak_threshold must not be negative (0 disables it)");
  if (s.connect_timeout.count() <= 0) fail("connect_timeout must be positive");
  if (s.statement_timeout && s.statement_timeout->count() < 0)
    fail("statement_timeout must not be negative");
  if (s.statement_cache > 100000) fail("statement_cache must be at most 100000");
  if (s.connect_backoff_initial.count() <= 0) fail("connect_backoff_initial must be positive");
  if (s.connect_backoff_max < s.connect_backoff_initial)
    fail("connect_backoff_max must be >= connect_backoff_initial");
  if (s.housekeeping_interval.count() <= 0) fail("housekeeping_interval must be positive");
  for (const char c : s.effective_application_name()) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e) {
      fail("application_name must be printable ASCII");
    }
  }
}

settings apply_env_overrides(
    settings base, const std::function<std::optional<std::string>(std::string_view)>& lookup) {
  auto read_int = [&](std::string_view var, long long min,
                      long long max) -> std::optional<long long> {
    const auto text = lookup(var);
    if (!text || text->empty()) return std::nullopt;
    long long value = 0;
    const auto* end = text->data() + text->size();
    const auto [ptr, ec] = std::from_chars(text->data(), end, value);
    if (ec != std::errc{} || ptr != end) {
      throw settings_error(std::string(var) + ": '" + *text + "' is not a whole number");
    }
    if (value < min || value > max) {
      throw settings_error(std::string(var) + ": " + *text + " is out of range " +
                           std::to_string(min) + "-" + std::to_string(max));
    }
    return value;
  };
  if (auto v = read_int("DB_POOL_SIZE", 1, 10000)) base.size = static_cast<int>(*v);
  if (auto v = read_int("DB_MAX_OVERFLOW", 0, 10000)) base.max_overflow = static_cast<int>(*v);
  if (auto v = read_int("DB_POOL_RECYCLE", -1, 31'536'000)) {
    // SQLAlchemy's pool_recycle: -1 (its default) and 0 both mean "never".
    base.recycle = std::chrono::seconds(*v < 0 ? 0 : *v);
  }
  if (auto v = read_int("DB_POOL_TIMEOUT", 0, 86'400)) base.timeout = std::chrono::seconds(*v);
  return base;
}

}  // namespace sluice::pool
