// `sluice bench`: benchmarks against the real server. Subcommands are added by later work.

#include "cli/commands.hpp"

namespace sluice::cli {

void register_bench(CLI::App& app) {
  auto* bench =
      app.add_subcommand("bench", "Measure the pool and the scheduler against the server");
  bench->require_subcommand(1);
  register_bench_pool(*bench);
}

}  // namespace sluice::cli
