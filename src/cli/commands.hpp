#pragma once

// Each subcommand lives in its own file and registers itself on the app here. A register
// function adds the subcommand, its options and a callback that sets the process exit code.

#include <CLI/CLI.hpp>

namespace sluice::cli {

// Exit code a subcommand callback leaves for run() to return.
int& exit_code();

void register_version(CLI::App& app);
void register_bench(CLI::App& app);
void register_bench_pool(CLI::App& bench);       // `sluice bench pool`, in bench_pool.cpp
void register_migrate(CLI::App& app);            // cmd_migrate.cpp
void register_task(CLI::App& app);               // cmd_task.cpp
void register_pools(CLI::App& app);              // cmd_pools.cpp
void register_cycles(CLI::App& app);             // cmd_cycles.cpp
void register_doctor(CLI::App& app);             // cmd_doctor.cpp
void register_serve(CLI::App& app);              // cmd_serve.cpp: the daemon
void register_bench_scheduler(CLI::App& bench);  // `sluice bench scheduler`, bench_scheduler.cpp

}  // namespace sluice::cli
