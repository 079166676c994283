#include "cli/app.hpp"

#include <CLI/CLI.hpp>
#include <iostream>

#include "sluice/version.hpp"

namespace sluice::cli {

int run(int argc, char** argv) {
  CLI::App app{"sluice: a PostgreSQL task scheduler and connection pool"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(version_string));

  auto* version = app.add_subcommand("version", "Print the sluice version");
  version->callback([] { std::cout << "sluice " << version_string << '\n'; });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}

}  // namespace sluice::cli
