#pragma once

// Each subcommand lives in its own file and registers itself on the app here. A register
// function adds the subcommand, its options and a callback that sets the process exit code.

#include <CLI/CLI.hpp>

namespace sluice::cli {

// Exit code a subcommand callback leaves for run() to return.
int& exit_code();

void register_version(CLI::App& app);
void register_bench(CLI::App& app);

}  // namespace sluice::cli
