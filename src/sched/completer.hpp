#pragma once

// The completer: writes the outcomes of finished runs (and hands back claims that will not run)
// on a connection of its own, in batches, apart from the claimer. One thread; one autocommit
// statement per batch (queries::complete) that applies every outcome fenced by its claim token,
// writes the run history, the batch's cycle row and the counters, so the log and the stats agree
// with task_runs after any crash. A batch gathers whatever finished while the previous one was
// in flight (no timer): one run per batch when the engine is idle, hundreds under load.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "sched/outcome.hpp"
#include "sluice/pool/pool.hpp"

namespace sluice::sched::detail {

// What one committed batch recorded, per task type.
struct completion_counts {
  int succeeded = 0, failed = 0, timed_out = 0, fenced = 0, skipped = 0;
};
struct completion_report {
  std::map<std::string, completion_counts> by_type;
  int released = 0;
  std::string error;  // set when the batch failed: nothing of it committed, it will be retried
};

class completer {
 public:
  struct settings {
    std::string schema;
    std::string node_id;
    int stats_shard = 0;
    std::chrono::milliseconds retry_interval{1000};  // after a failed batch
    std::size_t max_batch = 5000;
  };
  using report_fn = std::function<void(const completion_report&)>;

  completer(pool::pool& lane, settings s, report_fn on_report);
  completer(const completer&) = delete;
  completer& operator=(const completer&) = delete;
  ~completer();

  void start();
  void push(outcome_row o);
  void release(std::int64_t id, std::int64_t token);
  // Fire times a misfire policy dropped at claim time, counted in the next batch's cycle row.
  void note_skipped(const std::string& type, std::uint64_t n);
  // Adds the tasks whose outcome or release is queued or in flight (not yet known committed).
  void held_ids(std::set<std::int64_t>& out) const;
  // How many outcomes wait or are being written: the claimer counts them as still held, so a
  // completer that falls behind slows the claims instead of letting claimed work pile up.
  [[nodiscard]] std::size_t backlog() const;
  // Writes what is queued, then ends the thread. A batch that fails now is left behind: its
  // claims stay 'running' until the leader rescues them (the node is marked stopped next).
  void stop();

 private:
  struct release_row {
    std::int64_t id = 0, token = 0;
  };
  void loop();
  completion_report flush(std::vector<outcome_row>& outcomes, std::vector<release_row>& releases,
                          std::map<std::string, std::uint64_t>& skipped, bool retry);

  pool::pool& lane_;
  settings settings_;
  report_fn on_report_;
  std::string sql_complete_, sql_release_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<outcome_row> outcomes_;
  std::vector<release_row> releases_;
  std::map<std::string, std::uint64_t> skipped_;
  std::set<std::int64_t> inflight_;
  bool stop_ = false;
  bool retry_ = false;  // the last batch failed: its commit may have happened anyway
  std::thread thread_;
};

}  // namespace sluice::sched::detail
