// The lines `sluice serve` logs about itself: what it starts with, what it leaves open or shut,
// and where it serves (serve.hpp).

#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "cli/serve.hpp"
#include "sluice/version.hpp"

namespace sluice::cli::serve_detail {

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& i : items)
    out += (out.empty() ? "" : std::string(sep)) + i;
  return out;
}

std::string url_of(const std::string& address, int port) {
  const bool v6 = address.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port) + "/";
}

std::string describe_pools(const daemon_config& cfg) {
  return join(cfg.connection_terms()) + " = up to " + std::to_string(cfg.connections_needed()) +
         " connections";
}

void log_starting(daemon_log& log, const serve_options& opt, const daemon_config& cfg) {
  log.info("sluice " + std::string(version_string) + " starting with " + opt.config_file +
           " (pid " + std::to_string(::getpid()) + ")");
  if (!cfg.environment_applied.empty()) {
    log.info("environment overrides applied: " + join(cfg.environment_applied));
  }
}

void log_policies(daemon_log& log, const daemon_config& cfg) {
  if (cfg.commands.allow.empty()) {
    log.info("command tasks are disabled: commands.allow is empty");
  } else {
    log.info("command tasks may run: " + join(cfg.commands.allow));
  }
  if (cfg.http.token.empty()) {
    log.warn(
        "no API token is set (http.token, http.token_file or SLUICE_API_TOKEN): the API "
        "is read-only");
  }
}

void log_serving(daemon_log& log, const daemon_config& cfg, int port, const std::string& node_id,
                 long long ready_ms) {
  log.info("serving " + url_of(cfg.http.address, port) + " as node " + node_id + " (ready in " +
           std::to_string(ready_ms) +
           " ms): dashboard at /, API under /api/v1/, /health, /ready, /metrics");
}

}  // namespace sluice::cli::serve_detail
