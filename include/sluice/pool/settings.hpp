#pragma once

// Settings of one named connection pool. Defaults follow the seed's fix (size 5, overflow 10,
// recycle 30 min) and HikariCP/SQLAlchemy practice elsewhere. docs/configuration.md documents
// each with unit, default and advice.

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "sluice/error.hpp"

namespace sluice::pool {

using namespace std::chrono_literals;

// What to do with a connection when its lease ends.
enum class reset_mode {
  none,         // lend it again as it is (a connection left inside a transaction is discarded)
  rollback,     // ROLLBACK when the borrower left a transaction open (the default)
  discard_all,  // ROLLBACK if needed, then DISCARD ALL: no session state survives a lease
};

[[nodiscard]] std::string_view to_string(reset_mode mode) noexcept;
// Parses "none", "rollback" or "discard_all"; throws settings_error naming `key`.
[[nodiscard]] reset_mode parse_reset_mode(std::string_view text,
                                          std::string_view key = "reset_on_return");

// A setting is out of range or malformed. what() names the setting.
class settings_error : public sluice::error {
 public:
  using sluice::error::error;
};

struct settings {
  std::string name = "default";
  // conninfo string or URI; empty: libpq defaults and the PG* environment.
  std::string conninfo;

  int size = 5;  // connections kept open once created
  // Extra connections allowed under load. One that comes back while nobody waits and the pool
  // holds more than `size` is closed once it has stayed idle `overflow_idle_grace` (0: at once,
  // SQLAlchemy's rule), so demand that hovers just above `size` does not open and close a
  // connection per borrow.
  int max_overflow = 10;
  std::chrono::milliseconds overflow_idle_grace = 1s;
  // How long acquire() waits for a connection, pre-ping included. Also bounds the round trips
  // of a reset on return (a pre-ping or reset is always given at least 100 ms).
  std::chrono::milliseconds timeout = 30s;
  std::chrono::milliseconds recycle = 30min;  // max lifetime; 0 = unlimited
  double recycle_jitter = 0.025;  // each connection's lifetime is shortened by up to this
  std::chrono::milliseconds idle_timeout =
      10min;             // idle connections above min_idle are closed; 0 = never
  int min_idle = 0;      // idle connections the housekeeper keeps open
  bool pre_ping = true;  // validate a connection idle longer than the window
  std::chrono::milliseconds pre_ping_window = 500ms;
  reset_mode reset_on_return = reset_mode::rollback;
  std::chrono::milliseconds leak_threshold = 0ms;  // warn when a lease is held longer; 0 = off
  bool lifo = true;  // lend the most recently returned connection first (lets extras idle out)
  std::chrono::milliseconds connect_timeout = 10s;
  // Sent at connect as a startup option, so it is each session's default: reset_on_return =
  // discard_all keeps it. nullopt: the server's (or role's) setting.
  std::optional<std::chrono::milliseconds> statement_timeout;
  std::string application_name;       // empty: "sluice/<name>"
  std::size_t statement_cache = 100;  // prepared statements per connection; 0 = off (PgBouncer)

  // Back-pressure: after a refused or failed connect the pool waits before growing again, from
  // connect_backoff_initial doubling up to connect_backoff_max, with jitter.
  std::chrono::milliseconds connect_backoff_initial = 100ms;
  std::chrono::milliseconds connect_backoff_max = 5s;
  // How often the housekeeper looks at idle connections, leaks and min_idle.
  std::chrono::milliseconds housekeeping_interval = 1s;

  // application_name, or the default built from name.
  [[nodiscard]] std::string effective_application_name() const;
  // size + max_overflow: the most server connections this pool ever holds.
  [[nodiscard]] int max_connections() const noexcept { return size + max_overflow; }
};

// Throws settings_error naming the first bad setting (e.g. "pool 'platform': size must be >= 1").
void validate(const settings& s);

// Applies the seed's environment variables on top of `base`: DB_POOL_SIZE, DB_MAX_OVERFLOW,
// DB_POOL_RECYCLE (seconds), DB_POOL_TIMEOUT (seconds). The lookup function returns nullopt for
// an unset variable; the pool layer itself never reads the environment. Throws settings_error
// naming the variable when a value is not a number or out of range.
[[nodiscard]] settings apply_env_overrides(
    settings base, const std::function<std::optional<std::string>(std::string_view)>& lookup);

}  // namespace sluice::pool
