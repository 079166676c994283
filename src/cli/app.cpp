#include "cli/app.hpp"

#include <exception>
#include <iostream>

#include <CLI/CLI.hpp>

#include "cli/commands.hpp"
#include "sluice/version.hpp"

namespace sluice::cli {

int& exit_code() {
  static int code = 0;
  return code;
}

void register_version(CLI::App& app) {
  auto* cmd = app.add_subcommand("version", "Print the sluice version");
  cmd->callback([] { std::cout << "sluice " << version_string << '\n'; });
}

int run(int argc, char** argv) {
  CLI::App app{"sluice: a PostgreSQL task scheduler and connection pool"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(version_string));
  register_version(app);
  register_bench(app);
  register_bench_scheduler(*app.get_subcommand("bench"));
  register_migrate(app);
  register_task(app);
  register_pools(app);
  register_cycles(app);
  register_doctor(app);
  register_serve(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::cerr << "sluice: " << e.what() << '\n';
    return 1;
  }
  return exit_code();
}

}  // namespace sluice::cli
