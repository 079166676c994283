// libFuzzer target: the daemon's configuration loader, parse_config() on arbitrary TOML text.
//
// Beyond "no crash", it checks what src/cli/config.hpp promises:
//   - loading throws config_error and nothing else (std::bad_alloc aside);
//   - a configuration that loads has at least one pool, a lane, and a positive connection need;
//   - to_json_redacted() does not throw and yields valid JSON.
// The environment is empty, so only the text decides the outcome.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "cli/config.hpp"

namespace {

[[noreturn]] void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "fuzz_config invariant broken: %s [%.*s]\n", what,
               static_cast<int>(detail.size()), detail.data());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 16384) return -1;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const sluice::cli::env_lookup no_env = [](std::string_view) -> std::optional<std::string> {
    return std::nullopt;
  };

  std::optional<sluice::cli::daemon_config> config;
  try {
    config = sluice::cli::parse_config(text, "fuzz.toml", no_env);
  } catch (const sluice::cli::config_error& e) {
    if (std::string_view(e.what()).empty()) fail("config_error without a message", text);
    return 0;
  } catch (const std::bad_alloc&) {
    throw;
  } catch (const std::exception& e) {
    fail("parse_config threw something other than config_error", e.what());
  }

  if (config->pools.empty()) fail("a loaded configuration has no pool", text);
  if (config->connections_needed() <= 0) fail("connections_needed() is not positive", text);
  if (config->pool_settings().size() != config->pools.size() + 1)
    fail("pool_settings() is not the pools plus the lane", text);

  std::string redacted;
  try {
    redacted = config->to_json_redacted();
  } catch (const std::exception& e) {
    fail("to_json_redacted threw", e.what());
  }
  if (!nlohmann::json::accept(redacted)) fail("to_json_redacted is not valid JSON", redacted);
  return 0;
}
