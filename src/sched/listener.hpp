#pragma once

// The wake-up listener: one dedicated connection (outside the lane pool, counted in the node's
// budget) that LISTENs on the tasks channel, where every inserting transaction notifies once,
// and on the nodes channel, where every heartbeat notifies (sched/liveness.hpp). One thread.
//
// At connect it checks that notifications really arrive: it notifies the nodes channel with a
// payload of its own and waits for it. Through a transaction-pooling proxy (PgBouncer) LISTEN
// lands on a server connection that no longer belongs to this client and nothing ever arrives;
// the listener then says so, with the fix, and the engine polls at poll_interval meanwhile.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "sluice/pool/pool.hpp"

namespace sluice::sched::detail {

class listener {
 public:
  struct settings {
    std::string conninfo;  // of the LISTEN connection (listen_conninfo, or the lane's)
    std::string application_name;
    std::chrono::milliseconds connect_timeout{5000};
    std::string tasks_channel;
    std::string nodes_channel;
    std::int64_t incarnation = 0;                   // makes the probe's payload this process's own
    std::chrono::milliseconds poll_interval{1000};  // named in the warning when LISTEN fails
  };
  struct hooks {
    std::function<void()> wake;  // something may be due: run a check cycle
    std::function<void(const std::string& node, std::chrono::milliseconds expiry)> heartbeat;
  };

  // `lane` sends the probe notification.
  listener(pool::pool& lane, settings s, hooks h);
  listener(const listener&) = delete;
  listener& operator=(const listener&) = delete;
  ~listener();

  void start();
  void stop();

  // The connection is up and delivers notifications.
  [[nodiscard]] bool delivering() const noexcept { return delivering_.load(); }
  // Why LISTEN does not deliver; empty when it does (or has not been checked yet).
  [[nodiscard]] std::string problem() const;

 private:
  void loop();
  bool check_delivery(pg::connection& c);
  void dispatch(const pg::notification& n);
  bool wait_stop(std::chrono::milliseconds d);

  pool::pool& lane_;
  settings settings_;
  hooks hooks_;
  std::atomic<bool> delivering_{false};
  std::uint64_t probes_ = 0;  // listener thread only
  std::string probe_;         // the payload of the probe in flight; listener thread only
  bool probe_seen_ = false;   // listener thread only

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool stop_ = false;    // guarded by mutex_
  std::string problem_;  // guarded by mutex_
  std::thread thread_;
};

}  // namespace sluice::sched::detail
