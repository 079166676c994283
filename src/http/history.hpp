#pragma once

// pool_history: a bounded ring of periodic samples of the pools and of the server's connection
// count, kept in memory for the dashboard's charts (GET /api/v1/pools/history) and for the
// server-side gauges of /metrics. A restart starts with an empty history.
//
// Thread-safety: every member is thread-safe. start() and stop() may be called from any
// thread; stop() is idempotent, safe before start(), and returns when the sampling thread has
// ended.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "http/json.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/pool.hpp"

namespace sluice::http {

struct pool_sample {
  std::string name;
  int checked_out = 0;
  int open = 0;
  int max = 0;
  int waiting = 0;
};

struct history_sample {
  sched::time_point at;
  std::vector<pool_sample> pools;
  // From the server (pg_stat_activity); unset when the database could not be asked.
  std::optional<int> max_connections;
  std::map<std::string, int> connections;  // by application_name
  std::string error;                       // why the server part is missing
};

// One sample: every pool of `pools` (and `lane`, when it is not one of them) from memory, and
// with one statement through `lane` (waiting at most `db_timeout` for a connection) the server's
// max_connections and its connections whose application_name is LIKE 'sluice/%' or is one of the
// pools' application names.
[[nodiscard]] history_sample take_sample(const pool::pool_manager& pools, pool::pool& lane,
                                         std::chrono::milliseconds db_timeout);

class pool_history {
 public:
  using sampler = std::function<history_sample()>;

  // Keeps the newest `capacity` samples (at least 1), taken every `interval`.
  pool_history(std::chrono::milliseconds interval, std::size_t capacity, sampler take);
  pool_history(const pool_history&) = delete;
  pool_history& operator=(const pool_history&) = delete;
  pool_history(pool_history&&) = delete;
  pool_history& operator=(pool_history&&) = delete;
  ~pool_history();  // stop()

  // Starts the sampling thread; its first sample is taken at once.
  void start();
  void stop();

  // Takes one sample on the calling thread and adds it.
  void sample_now();
  // The samples taken after `since` (all when unset), oldest first.
  [[nodiscard]] std::vector<history_sample> samples(
      std::optional<sched::time_point> since = std::nullopt) const;
  [[nodiscard]] std::optional<history_sample> latest() const;
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] std::chrono::milliseconds interval() const noexcept { return interval_; }

 private:
  void run();
  void add(history_sample s);

  const std::chrono::milliseconds interval_;
  const std::size_t capacity_;
  const sampler take_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<history_sample> samples_;  // guarded by mutex_; oldest first
  bool stopping_ = false;               // guarded by mutex_
  std::thread thread_;                  // started and joined under start_mutex_
  std::mutex start_mutex_;
};

[[nodiscard]] json json_of(const history_sample& s);

}  // namespace sluice::http
