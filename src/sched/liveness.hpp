#pragma once

// Node liveness: this process registers as the node's new incarnation, renews its node row and
// the leader lease with a heartbeat, and, while it leads, rescues the claims of nodes that
// stopped and prunes the history. One thread.
//
// An idle node costs one transaction per heartbeat and nothing more, yet a dead node is rescued
// as soon as its row expires. Every heartbeat notifies the nodes channel with its expiry, and
// every node watches those notifications (fed in by the listener through heard()). The leader
// runs its next heartbeat, which rescues, when a watched node's row would expire; a follower
// does the same for the leader's lease. A node that is alive notifies before its row expires,
// so the early heartbeat happens only when a node is dead or late. When notifications do not
// arrive (no LISTEN, or LISTEN through PgBouncer), the regular heartbeat still rescues, one
// interval later.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "sluice/pool/pool.hpp"
#include "sluice/sched/store.hpp"

namespace sluice::sched::detail {

class liveness {
 public:
  using time_point = std::chrono::system_clock::time_point;
  using steady = std::chrono::steady_clock;

  struct settings {
    std::string schema;
    std::string node_id;
    std::string host;
    std::string process_key;  // see node_identity.hpp; empty when /proc cannot say
    std::int64_t incarnation = 0;
    int stats_shard = 0;
    int connection_budget = 0;
    std::chrono::milliseconds heartbeat_interval{6000};
    std::chrono::milliseconds node_expiry{9000};
    std::chrono::milliseconds prune_interval{std::chrono::minutes(10)};
    sched::retention retention;
    std::string types_array;  // the node's task types, as a PostgreSQL array literal
  };
  struct hooks {
    std::function<bool()> draining;                           // the node is stopping
    std::function<void(int)> rescued;                         // tasks rescued by this node, > 0
    std::function<void(std::optional<time_point>)> next_due;  // after each heartbeat
    std::function<void(const std::string&)> superseded;       // another process took the id over
    // This node's row had expired before the heartbeat renewed it (`dead`: the leader had marked
    // it dead, so its claims were rescued; else they may have been).
    std::function<void(bool dead)> lapsed;
    std::function<void(bool)> leadership;  // this node became or stopped being leader
  };

  liveness(pool::pool& lane, store& tasks, settings s, hooks h);
  liveness(const liveness&) = delete;
  liveness& operator=(const liveness&) = delete;
  ~liveness();

  // Registers this process as the node's new incarnation; a dead predecessor's claims go back to
  // the queue in the same transaction. Throws node_id_conflict when another live process holds
  // the id. Returns how many claims were taken over.
  int register_node();
  // One heartbeat now (also the leader's rescue); returns the tasks rescued. Throws on a
  // database error.
  int heartbeat_once();
  void start();  // the heartbeat thread
  void stop();   // ends the thread, then resigns the lease and marks the node stopped
  // Another node's heartbeat was heard: it lives for `expiry` from now.
  void heard(const std::string& node, std::chrono::milliseconds expiry);

  [[nodiscard]] bool leader() const;
  [[nodiscard]] const std::string& nodes_channel() const noexcept { return channel_; }

 private:
  void loop();
  bool prune();
  void on_superseded(pg::connection& c);
  // When the next heartbeat must run at the latest to rescue a watched node (or take over the
  // leader's lease) as soon as it expires; nullopt when nothing is watched.
  std::optional<steady::time_point> next_expiry_locked() const;

  pool::pool& lane_;
  store& store_;
  settings settings_;
  hooks hooks_;
  std::string channel_;
  std::string sql_heartbeat_, sql_node_row_, sql_register_, sql_take_over_, sql_resign_,
      sql_deregister_;

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  // Guarded by mutex_.
  bool stop_ = false;
  bool leader_ = false;
  bool superseded_ = false;
  std::string leader_node_;
  std::map<std::string, steady::time_point> expires_;  // other live nodes, when each expires
  bool woken_ = false;  // heard() moved a deadline: the thread recomputes its sleep

  std::thread thread_;
};

}  // namespace sluice::sched::detail
