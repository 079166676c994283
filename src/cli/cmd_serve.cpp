// `sluice serve`: the daemon. Loads and checks the configuration, builds the pools under one
// budget, checks (or with --migrate brings up to date) the schema and the budget against the
// server, registers the built-in task handlers, starts the scheduler and the HTTP server, and
// then waits for signals:
//
//   SIGTERM, SIGINT  drain: no new claims, running tasks get scheduler.stop_grace to finish,
//                    the rest are cancelled and their claims handed back, then HTTP stops and
//                    the pools close; exit 0. A second one exits at once with 128 + signal.
//   SIGHUP           reload the file: log.level, log.format and [commands] take effect at
//                    once; every other changed key ([types] included: handlers are
//                    registered once, before the scheduler starts) is logged as needing a
//                    restart.
//
// Signals are blocked in every thread and read from a signalfd by one thread of their own, so
// no work happens in an asynchronous signal handler.
//
// The parts are in src/cli/serve.hpp: start-up (serve_startup.cpp), signals and reload
// (serve_signals.cpp), the banner (serve_banner.cpp), the log (serve_log.cpp).
//
// Exit codes: 0 stopped cleanly; 1 could not start (database, schema, budget, port); 2 the
// configuration is unusable (one line naming the file, the key and the reason); 128 + n when a
// second stop signal n ended the drain. docs/cli.md has the full description.

#include <memory>

#include "cli/commands.hpp"
#include "cli/serve.hpp"

namespace sluice::cli {

void register_serve(CLI::App& app) {
  auto opt = std::make_shared<serve_detail::serve_options>();
  auto* cmd = app.add_subcommand(
      "serve", "Run the daemon: the scheduler, the HTTP API, /metrics and the dashboard");
  cmd->add_option("--config", opt->config_file, "TOML configuration file (docs/configuration.md)")
      ->required();
  cmd->add_flag("--migrate", opt->migrate,
                "Create or upgrade sluice's tables before starting (else a schema that is behind "
                "stops the start)");
  cmd->add_option("--log-format", opt->log_format,
                  "text (default) or json (one object per line); overrides log.format")
      ->check(CLI::IsMember({"text", "json"}));
  cmd->add_flag("--print-config", opt->print_config,
                "Print the configuration as sluice sees it (defaults filled in, secrets removed) "
                "as JSON and exit");
  cmd->add_option("--port-file", opt->port_file,
                  "Once serving, write the HTTP port to this file (useful with http.port = 0); "
                  "removed again on a clean stop");
  cmd->callback([opt] { exit_code() = serve_detail::serve(*opt); });
}

}  // namespace sluice::cli
