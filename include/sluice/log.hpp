#pragma once

// A minimal logging hook for the library layers. libsluice never decides where logs go: by
// default warnings and errors are written to stderr; the daemon installs a sink that forwards
// to its own logger. Messages never contain passwords (conninfo is redacted before logging).
// Thread-safety: set_log_sink() may be called at any time; sinks are called concurrently.

#include <functional>
#include <string_view>

namespace sluice {

enum class log_level { debug, info, warn, error };

// "debug", "info", "warn", "error": the names the configuration file and the logs use.
[[nodiscard]] std::string_view to_string(log_level level) noexcept;

using log_sink =
    std::function<void(log_level, std::string_view component, std::string_view message)>;

// Replaces the process-wide sink. An empty function restores the default (stderr, warn and up).
void set_log_sink(log_sink sink);
void log(log_level level, std::string_view component, std::string_view message);

}  // namespace sluice
