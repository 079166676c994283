// `sluice bench pool`: pgbench's select-only workload (`pgbench -S`) run through sluice's pool,
// so its throughput can be compared with pgbench's on the same server (scripts/bench-pool does
// that side by side; docs/benchmarks.md records the results).
//
// Each worker thread loops: acquire a lease, run one SELECT (autocommit), read the result,
// release. Transactions that complete after the warm-up and before the end of the measured
// duration are counted; each one's latency, acquire included, goes into a per-thread histogram,
// and the histograms are merged at the end.

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <libpq-fe.h>
#include <nlohmann/json.hpp>
#include <sys/resource.h>

#include "cli/commands.hpp"
#include "cli/counting_connector.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pool/pool.hpp"

namespace sluice::cli {
namespace {

using std::chrono::steady_clock;

// pgbench's select-only script: `\set aid random(1, 100000 * :scale)` then this statement.
constexpr const char* select_only_sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
constexpr std::int64_t accounts_per_scale = 100000;

struct bench_options {
  int threads = 4;
  int connections = 4;
  double duration_s = 10;
  double warmup_s = 2;
  std::string mode = "extended";  // extended | prepared
  std::string pre_ping = "on";    // on | off | always
  std::optional<int> scale;
  bool json = false;
  std::string conninfo;
};

// Latency histogram with 64 sub-buckets per power of two: any recorded value is known to within
// 1/64 (1.6 %) of itself, over the whole range of an int64 of nanoseconds. Values below 128 ns
// are exact. One per thread, merged at the end, so recording takes no lock.
class latency_histogram {
 public:
  void record(std::int64_t ns) noexcept {
    const auto v = static_cast<std::uint64_t>(std::max<std::int64_t>(ns, 0));
    ++counts_[index_of(v)];
    ++count_;
    sum_ns_ += static_cast<double>(v);
    max_ns_ = std::max(max_ns_, v);
  }

  void merge(const latency_histogram& other) noexcept {
    for (std::size_t i = 0; i < counts_.size(); ++i)
      counts_[i] += other.counts_[i];
    count_ += other.count_;
    sum_ns_ += other.sum_ns_;
    max_ns_ = std::max(max_ns_, other.max_ns_);
  }

  [[nodiscard]] std::uint64_t count() const noexcept { return count_; }
  [[nodiscard]] std::uint64_t max_ns() const noexcept { return max_ns_; }
  [[nodiscard]] double mean_ns() const noexcept {
    return count_ == 0 ? 0 : sum_ns_ / static_cast<double>(count_);
  }

  // The value at quantile q (0..1): the middle of the bucket holding the rank-th smallest value,
  // never above the recorded maximum.
  [[nodiscard]] double quantile_ns(double q) const noexcept {
    if (count_ == 0) return 0;
    const auto rank = std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_))));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        const auto [lo, hi] = bounds_of(i);
        return std::min(static_cast<double>(lo) + static_cast<double>(hi - lo) / 2,
                        static_cast<double>(max_ns_));
      }
    }
    return static_cast<double>(max_ns_);
  }

 private:
  static constexpr int sub_bits = 6;  // 64 sub-buckets per power of two
  static constexpr std::uint64_t exact_below = 1U << (sub_bits + 1);  // 128
  static constexpr std::size_t buckets =
      exact_below + (64 - (sub_bits + 1)) * (std::size_t{1} << sub_bits);

  static std::size_t index_of(std::uint64_t v) noexcept {
    if (v < exact_below) return static_cast<std::size_t>(v);
    const int msb = std::bit_width(v) - 1;  // >= sub_bits + 1
    const int shift = msb - sub_bits;
    const std::uint64_t top = v >> shift;  // in [64, 128)
    return static_cast<std::size_t>(exact_below) +
           static_cast<std::size_t>(msb - (sub_bits + 1)) * (std::size_t{1} << sub_bits) +
           static_cast<std::size_t>(top - (std::uint64_t{1} << sub_bits));
  }

  // Smallest and largest value of bucket i.
  static std::pair<std::uint64_t, std::uint64_t> bounds_of(std::size_t i) noexcept {
    if (i < exact_below) return {i, i};
    const std::size_t rel = i - static_cast<std::size_t>(exact_below);
    const int msb = static_cast<int>(rel >> sub_bits) + sub_bits + 1;
    const int shift = msb - sub_bits;
    const std::uint64_t top = (rel & ((std::size_t{1} << sub_bits) - 1)) + (1U << sub_bits);
    return {top << shift, ((top + 1) << shift) - 1};
  }

  std::array<std::uint64_t, buckets> counts_{};
  std::uint64_t count_ = 0;
  double sum_ns_ = 0;
  std::uint64_t max_ns_ = 0;
};

enum phase : int { warming_up, measuring, finished };

struct alignas(64) worker_result {
  latency_histogram latencies;
  std::int64_t balance_sum = 0;  // keeps the result reads from being optimised away
  std::uint64_t missing_rows = 0;
};

std::string resolve_conninfo(const std::string& given) {
  if (!given.empty()) return given;
  if (const char* url = std::getenv("DATABASE_URL"); url != nullptr && *url != '\0') return url;
  return {};  // libpq reads PGHOST, PGPORT, PGUSER, PGDATABASE, ...
}

// Checks that pgbench's tables are there and returns the scale (the number of branches) unless
// the caller gave one.
int probe_scale(const std::string& conninfo, std::optional<int> given) {
  pg::connect_options options;
  options.conninfo = conninfo;
  options.application_name = "sluice/bench";
  pg::connection conn = pg::connection::open(options);
  const char* db = PQdb(conn.native());
  const std::string database = db != nullptr ? db : "";
  const bool present = conn.exec(
                               "SELECT to_regclass('pgbench_accounts') IS NOT NULL "
                               "AND to_regclass('pgbench_branches') IS NOT NULL")
                           .one<bool>();
  if (!present) {
    throw std::runtime_error("the pgbench tables are missing in database \"" + database +
                             "\"; run: pgbench -i -s 1 " + database);
  }
  if (given) return *given;
  const auto branches = conn.exec("SELECT count(*) FROM pgbench_branches").one<std::int64_t>();
  if (branches < 1) {
    throw std::runtime_error("pgbench_branches is empty in database \"" + database +
                             "\"; run: pgbench -i -s 1 " + database);
  }
  return static_cast<int>(branches);
}

double ns_to_ms(double ns) {
  return ns / 1e6;
}

double cpu_seconds_used() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

void run_bench_pool(const bench_options& opt) {
  const std::string conninfo = resolve_conninfo(opt.conninfo);
  const int scale = probe_scale(conninfo, opt.scale);
  const bool prepared = opt.mode == "prepared";

  pool::settings s;
  s.name = "bench";
  s.conninfo = conninfo;
  s.size = opt.connections;
  s.max_overflow = 0;
  s.pre_ping = opt.pre_ping != "off";
  if (opt.pre_ping == "always") s.pre_ping_window = std::chrono::milliseconds(0);
  s.application_name = "sluice/bench";
  auto connector = std::make_shared<counting_connector>();
  pool::pool bench_pool(s, connector);

  std::atomic<int> phase{warming_up};
  std::vector<worker_result> results(static_cast<std::size_t>(opt.threads));
  std::mutex error_mutex;
  std::exception_ptr first_error;  // guarded by error_mutex

  const std::int64_t max_aid = accounts_per_scale * scale;
  auto work = [&](int index) {
    worker_result& out = results[static_cast<std::size_t>(index)];
    std::mt19937_64 rng(std::random_device{}() + static_cast<std::uint64_t>(index));
    std::uniform_int_distribution<std::int64_t> aid_dist(1, max_aid);
    try {
      while (phase.load(std::memory_order_relaxed) != finished) {
        // aid fits an int (pgbench's scale is at most 21474 for int4 aids), so it is bound as
        // int4 like the column, and the index is used as in pgbench.
        const pg::param_list params = pg::param_list::of(static_cast<int>(aid_dist(rng)));
        const auto start = steady_clock::now();
        {
          const pool::lease lease = bench_pool.acquire();
          const pg::result r = prepared ? lease->exec_cached(select_only_sql, params)
                                        : lease->exec(select_only_sql, params);
          if (r.rows() == 1) {
            out.balance_sum += r[0].get<int>(0);
          } else {
            ++out.missing_rows;
          }
        }
        const auto end = steady_clock::now();
        if (phase.load(std::memory_order_acquire) == measuring) {
          out.latencies.record(
              std::chrono::duration_cast<std::chrono::nanoseconds>(end - start).count());
        }
      }
    } catch (...) {
      {
        const std::scoped_lock lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
      }
      phase.store(finished);
    }
  };

  std::vector<std::jthread> workers;
  workers.reserve(static_cast<std::size_t>(opt.threads));
  const auto started = steady_clock::now();
  for (int i = 0; i < opt.threads; ++i)
    workers.emplace_back(work, i);

  // The durations are what is being measured, so the main thread simply sleeps through them
  // (a failing worker ends the run early; the error is reported after the join).
  auto sleep_until = [&](steady_clock::time_point t) {
    while (steady_clock::now() < t && phase.load() != finished)
      std::this_thread::sleep_for(
          std::min<steady_clock::duration>(t - steady_clock::now(), std::chrono::milliseconds(50)));
  };
  sleep_until(started + std::chrono::duration_cast<steady_clock::duration>(
                            std::chrono::duration<double>(opt.warmup_s)));
  const double cpu_before = cpu_seconds_used();
  const auto measure_start = steady_clock::now();
  int expected = warming_up;
  phase.compare_exchange_strong(expected, measuring);
  sleep_until(measure_start + std::chrono::duration_cast<steady_clock::duration>(
                                  std::chrono::duration<double>(opt.duration_s)));
  phase.store(finished);
  const auto measure_end = steady_clock::now();
  const double cpu_after = cpu_seconds_used();
  workers.clear();  // joins

  if (first_error) std::rethrow_exception(first_error);

  latency_histogram all;
  std::uint64_t missing = 0;
  for (const worker_result& r : results) {
    all.merge(r.latencies);
    missing += r.missing_rows;
  }
  const pool::pool_stats st = bench_pool.stats();
  bench_pool.close(std::chrono::seconds(5));

  const double elapsed = std::chrono::duration<double>(measure_end - measure_start).count();
  const auto transactions = all.count();
  const double tps = elapsed > 0 ? static_cast<double>(transactions) / elapsed : 0;
  const double cpu_us_per_tx =
      transactions > 0 ? (cpu_after - cpu_before) * 1e6 / static_cast<double>(transactions) : 0;

  if (opt.json) {
    nlohmann::ordered_json j;
    j["workload"] = "select-only";
    j["scale"] = scale;
    j["threads"] = opt.threads;
    j["connections"] = opt.connections;
    j["mode"] = opt.mode;
    j["pre_ping"] = opt.pre_ping;
    j["warmup_s"] = opt.warmup_s;
    j["duration_s"] = elapsed;
    j["transactions"] = transactions;
    j["tps"] = tps;
    j["latency_ms"] = {{"p50", ns_to_ms(all.quantile_ns(0.50))},
                       {"p99", ns_to_ms(all.quantile_ns(0.99))},
                       {"max", ns_to_ms(static_cast<double>(all.max_ns()))},
                       {"mean", ns_to_ms(all.mean_ns())}};
    j["client_cpu_us_per_tx"] = cpu_us_per_tx;
    j["missing_rows"] = missing;
    j["pool"] = {{"wait_p50_ms", st.wait_p50_ms},    {"wait_p99_ms", st.wait_p99_ms},
                 {"wait_max_ms", st.wait_max_ms},    {"peak_checked_out", st.peak_checked_out},
                 {"connects", st.connects},          {"checkouts", st.checkouts},
                 {"pings", connector->pings()},      {"timeouts", st.timeouts},
                 {"invalidations", st.invalidations}};
    std::cout << j.dump() << '\n';
    return;
  }

  std::printf(
      "workload: select-only (pgbench -S), scale %d, %d threads on %d connections, mode %s, "
      "pre-ping %s\n",
      scale, opt.threads, opt.connections, opt.mode.c_str(), opt.pre_ping.c_str());
  std::printf("measured: %.3f s after %.1f s of warm-up\n", elapsed, opt.warmup_s);
  std::printf("transactions: %llu\n", static_cast<unsigned long long>(transactions));
  std::printf("tps = %.3f\n", tps);
  std::printf("latency ms: p50 %.3f, p99 %.3f, max %.3f, mean %.3f (acquire included)\n",
              ns_to_ms(all.quantile_ns(0.50)), ns_to_ms(all.quantile_ns(0.99)),
              ns_to_ms(static_cast<double>(all.max_ns())), ns_to_ms(all.mean_ns()));
  std::printf("client cpu: %.1f us per transaction\n", cpu_us_per_tx);
  std::printf(
      "pool (whole run, warm-up included): wait p50 %.3f ms, p99 %.3f ms, max %.3f ms; peak "
      "checked out %d; connects %llu; checkouts %llu; pre-pings %llu; timeouts %llu\n",
      st.wait_p50_ms, st.wait_p99_ms, st.wait_max_ms, st.peak_checked_out,
      static_cast<unsigned long long>(st.connects), static_cast<unsigned long long>(st.checkouts),
      static_cast<unsigned long long>(connector->pings()),
      static_cast<unsigned long long>(st.timeouts));
  if (missing > 0) {
    std::printf("warning: %llu lookups found no row (is --scale larger than the database's?)\n",
                static_cast<unsigned long long>(missing));
  }
}

}  // namespace

void register_bench_pool(CLI::App& bench) {
  auto opt = std::make_shared<bench_options>();
  auto* cmd = bench.add_subcommand(
      "pool", "pgbench's select-only workload through sluice's pool: TPS, latency and pool stats");
  cmd->add_option("--threads", opt->threads, "Worker threads (borrowers)")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd->add_option("--connections", opt->connections, "Pool size (max_overflow is 0)")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  cmd->add_option("--duration", opt->duration_s, "Seconds measured after the warm-up")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--warmup", opt->warmup_s, "Seconds run before measuring")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--mode", opt->mode,
                  "extended: unnamed statements (pgbench -M extended); prepared: the pool's "
                  "statement cache (pgbench -M prepared)")
      ->check(CLI::IsMember({"extended", "prepared"}))
      ->capture_default_str();
  cmd->add_option("--pre-ping", opt->pre_ping,
                  "on: ping connections idle longer than pre_ping_window (500 ms); off; always: "
                  "pre_ping_window = 0")
      ->check(CLI::IsMember({"on", "off", "always"}))
      ->capture_default_str();
  cmd->add_option("--scale", opt->scale,
                  "pgbench scale of the database (default: the row count of pgbench_branches)")
      ->check(CLI::Range(1, 21474));
  cmd->add_flag("--json", opt->json, "Print the results as one JSON object");
  cmd->add_option("--conninfo", opt->conninfo,
                  "conninfo string or URI (default: DATABASE_URL, else the PG* variables)");
  cmd->callback([opt] { run_bench_pool(*opt); });
}

}  // namespace sluice::cli
