// The sluice binary: parses the command line and hands off to a subcommand.

#include "cli/app.hpp"

int main(int argc, char** argv) {
  return sluice::cli::run(argc, argv);
}
