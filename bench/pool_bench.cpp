// Borrow + return cost of sluice's pool against a bare mutex and a naive pool (one mutex, one
// condition variable, a vector of handles), measured in the same run. The pool uses a connector
// that does nothing, so only the pool's own machinery is timed.
//
//   build/release/bench/pool_bench --benchmark_repetitions=5
//   --benchmark_report_aggregates_only=true
//
// With several threads, google-benchmark's real time per iteration is the wall time divided by
// the iterations of all threads: "ns per pair" is the inverse of the aggregate rate, and
// items_per_second is the aggregate pairs per second. scripts/bench-pool --micro runs this and
// prints the table recorded in docs/benchmarks.md.

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <benchmark/benchmark.h>

#include "sluice/pool/pool.hpp"

namespace {

// Opens empty connections and accepts them back as they are. (tests' fake_connector counts every
// reset in an atomic shared by all threads; that cache line would be timed along with the pool.)
// The libpq connector's usable() and reset() are also local checks for a connection that is
// idle outside a transaction, so this leaves out no server round trip the real pool would make.
class null_connector final : public sluice::pool::connector {
 public:
  sluice::pg::connection connect(const sluice::pool::settings& /*s*/,
                                 std::uint64_t /*id*/) override {
    return {};
  }
  bool ping(sluice::pg::connection& /*c*/, std::uint64_t /*id*/) override { return true; }
  bool reset(sluice::pg::connection& /*c*/, std::uint64_t /*id*/,
             sluice::pool::reset_mode /*mode*/) override {
    return true;
  }
};

// The baseline a C++ developer would write in ten minutes.
class naive_pool {
 public:
  explicit naive_pool(int n) {
    for (int i = 0; i < n; ++i)
      free_.push_back(i);
  }
  int acquire() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return !free_.empty(); });
    const int h = free_.back();
    free_.pop_back();
    return h;
  }
  void release(int h) {
    {
      const std::scoped_lock lock(mutex_);
      free_.push_back(h);
    }
    cv_.notify_one();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<int> free_;
};

template <class T>
T& shared_instance(int n) {
  static std::mutex m;
  static std::map<int, std::unique_ptr<T>> instances;
  const std::scoped_lock lock(m);
  auto& slot = instances[n];
  if (!slot) slot = std::make_unique<T>(n);
  return *slot;
}

struct sluice_pool_holder {
  explicit sluice_pool_holder(int n) {
    sluice::pool::settings s;
    s.name = "bench";
    s.size = n;
    s.max_overflow = 0;
    s.timeout = std::chrono::seconds(60);
    s.recycle = std::chrono::milliseconds(0);
    s.idle_timeout = std::chrono::milliseconds(0);
    pool = std::make_unique<sluice::pool::pool>(s, std::make_shared<null_connector>());
    // Open every connection up front so the timed loop measures lending only.
    std::vector<sluice::pool::lease> warm;
    for (int i = 0; i < n; ++i)
      warm.push_back(pool->acquire());
  }
  std::unique_ptr<sluice::pool::pool> pool;
};

// The floor: one lock/unlock pair of a mutex shared by all threads.
void BM_MutexLockUnlock(benchmark::State& state) {
  static std::mutex m;
  for (auto _ : state) {
    m.lock();
    m.unlock();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_NaivePool(benchmark::State& state) {
  auto& p = shared_instance<naive_pool>(static_cast<int>(state.range(0)));
  for (auto _ : state) {
    const int h = p.acquire();
    benchmark::DoNotOptimize(h);
    p.release(h);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_SluicePool(benchmark::State& state) {
  auto& p = *shared_instance<sluice_pool_holder>(static_cast<int>(state.range(0))).pool;
  for (auto _ : state) {
    auto l = p.acquire();
    benchmark::DoNotOptimize(l.connection_id());
  }
  state.SetItemsProcessed(state.iterations());
}

void pool_args(benchmark::internal::Benchmark* b) {
  b->ArgName("handles");
  for (const int n : {2, 4, 8})
    b->Arg(n);
  b->ThreadRange(1, 16)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_MutexLockUnlock)->ThreadRange(1, 16)->UseRealTime();
BENCHMARK(BM_NaivePool)->Apply(pool_args);
BENCHMARK(BM_SluicePool)->Apply(pool_args);
