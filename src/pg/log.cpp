#include "sluice/log.hpp"

#include <array>
#include <cstdio>
#include <memory>
#include <mutex>

#include "sluice/enum_names.hpp"

namespace sluice {
namespace {

std::mutex sink_mutex;
// Shared so a sink being replaced stays alive while another thread is still calling it.
std::shared_ptr<const log_sink> current_sink;  // guarded by sink_mutex

}  // namespace

std::string_view to_string(log_level level) noexcept {
  static constexpr std::array<std::string_view, 4> names{"debug", "info", "warn", "error"};
  return enum_name<log_level::error>(level, names);
}

void set_log_sink(log_sink sink) {
  auto next = sink ? std::make_shared<const log_sink>(std::move(sink)) : nullptr;
  const std::scoped_lock lock(sink_mutex);
  current_sink = std::move(next);
}

void log(log_level level, std::string_view component, std::string_view message) {
  std::shared_ptr<const log_sink> sink;
  {
    const std::scoped_lock lock(sink_mutex);
    sink = current_sink;
  }
  if (sink) {
    (*sink)(level, component, message);
    return;
  }
  if (level < log_level::warn) return;
  std::fprintf(stderr, "sluice %.*s [%.*s] %.*s\n", static_cast<int>(to_string(level).size()),
               to_string(level).data(), static_cast<int>(component.size()), component.data(),
               static_cast<int>(message.size()), message.data());
}

}  // namespace sluice
