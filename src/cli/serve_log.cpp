// `sluice serve`'s log: one line per event on stderr, as text or JSON (serve.hpp).

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>
#include <spdlog/details/log_msg.h>
#include <spdlog/formatter.h>

#include "cli/serve.hpp"
#include "sluice/log.hpp"

namespace sluice::cli::serve_detail {
namespace {

using json = nlohmann::ordered_json;
using std::chrono::milliseconds;

// "2026-05-01T12:00:03.123Z": UTC with milliseconds, the same in both formats.
std::string timestamp(spdlog::log_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000;
  const std::time_t secs = spdlog::log_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

std::string_view level_name(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    default:
      return "error";
  }
}

void append(spdlog::memory_buf_t& dest, std::string_view text) {
  dest.append(text.data(), text.data() + text.size());
}

// "2026-05-01T12:00:03.123Z info  scheduler: node web1-4121-a3f0 started ..."
class text_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string level(level_name(msg.level));
    level.resize(5, ' ');
    append(dest, timestamp(msg.time));
    append(dest, " ");
    append(dest, level);
    append(dest, " ");
    append(dest, std::string_view(msg.logger_name.data(), msg.logger_name.size()));
    append(dest, ": ");
    // One event, one line: a message with a newline (a server error's DETAIL) stays one line.
    std::string text(msg.payload.data(), msg.payload.size());
    std::replace(text.begin(), text.end(), '\n', ' ');
    append(dest, text);
    append(dest, "\n");
  }
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<text_formatter>();
  }
};

// {"time":"...","level":"info","component":"scheduler","message":"..."}, one object per line.
class json_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    json j;
    j["time"] = timestamp(msg.time);
    j["level"] = level_name(msg.level);
    j["component"] = std::string(msg.logger_name.data(), msg.logger_name.size());
    j["message"] = std::string(msg.payload.data(), msg.payload.size());
    append(dest, j.dump(-1, ' ', false, json::error_handler_t::replace));
    append(dest, "\n");
  }
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<json_formatter>();
  }
};

spdlog::level::level_enum to_spdlog(sluice::log_level l) {
  switch (l) {
    case sluice::log_level::debug:
      return spdlog::level::debug;
    case sluice::log_level::info:
      return spdlog::level::info;
    case sluice::log_level::warn:
      return spdlog::level::warn;
    case sluice::log_level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

daemon_log::daemon_log(log_format format, log_level level)
    : sink_(std::make_shared<spdlog::sinks::stderr_sink_mt>()) {
  set_format(format);
  set_level(level);
}

void daemon_log::set_format(log_format f) {
  if (f == log_format::json) {
    sink_->set_formatter(std::make_unique<json_formatter>());
  } else {
    sink_->set_formatter(std::make_unique<text_formatter>());
  }
}

void daemon_log::set_level(log_level l) {
  sink_->set_level(to_spdlog(l));
}

void daemon_log::write(spdlog::level::level_enum level, std::string_view component,
                       std::string_view message) {
  if (!sink_->should_log(level)) return;
  const spdlog::details::log_msg msg(spdlog::string_view_t(component.data(), component.size()),
                                     level, spdlog::string_view_t(message.data(), message.size()));
  try {
    sink_->log(msg);
  } catch (const std::exception&) {
    // stderr is gone (closed by the service manager): nothing left to tell.
  }
}

void daemon_log::write(log_level level, std::string_view component, std::string_view message) {
  write(to_spdlog(level), component, message);
}

library_log_route::library_log_route(daemon_log& log) {
  set_log_sink([&log](sluice::log_level l, std::string_view component, std::string_view message) {
    log.write(l, component, message);
  });
}

library_log_route::~library_log_route() {
  set_log_sink({});
}

}  // namespace sluice::cli::serve_detail
