#pragma once

// The claimer: what a check cycle asks the database. One statement (queries::claim, the
// engine_claim function) takes due tasks for this node's incarnation with FOR UPDATE SKIP
// LOCKED, records the cycle and counts it; then, unless the batch came back full, one more asks
// when the next task is due. It owns what only the cycle thread needs between cycles: where the
// last claim of each type ended (the watermark, so a claim does not walk the dead index entries
// that earlier claims left at the head of the queue), when to sweep from the head instead, and
// whether a failed cycle may have committed claims this node does not know about.
//
// How much to claim (the room, each type's share) is decided by the scheduler, which knows the
// workers and the local queue; what to do after the cycle (when to look again) too.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "sched/completer.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/task.hpp"

namespace sluice::sched::detail {

// A task claimed by a cycle, with the fire time its run is for.
struct claimed_task {
  task t;
  time_point fire_time;
};

// What one cycle may take: per type the most (in the order the room is shared between the
// types), the workers free for it now (a flow-limited type near its limit claims only for
// these), and the room of the local queue in all.
struct claim_request {
  std::vector<std::pair<std::string, int>> limits;
  std::vector<int> free;
  int room = 0;
  // Something asked for this cycle (a notification, a free worker); else a due time or the
  // idle poll came, and a claim that finds nothing may answer "when next" from the heartbeat.
  bool woken = false;
};

struct claim_result {
  std::map<std::string, int> by_type;  // claimed per type, misfire skips included
  bool full_batch = false;             // some type took its whole share: more is due
  bool next_due_known = false;         // next_due was asked (or taken from the heartbeat)
  std::optional<time_point> next_due;  // nullopt: nothing of these types is waiting
  int orphans = 0;                     // claims of a failed cycle handed back
};

class claimer {
 public:
  struct settings {
    std::string schema;
    std::string node_id;
    std::int64_t incarnation = 0;
    int shard = 0;
    std::string types_array;  // the node's task types as a PostgreSQL array literal
  };
  struct hooks {
    // Takes the claimed tasks (also those read before a failure: they were committed). Called
    // before the claimer asks when the next task is due, so workers start meanwhile.
    std::function<void(std::vector<claimed_task>&)> deliver;
    // The tasks this node holds in memory (queued, running, outcome not yet written).
    std::function<std::set<std::int64_t>()> held;
    // When the next task is due as the last heartbeat saw it, if that answer is still good
    // (LISTEN delivers, so anything added since then notified); nullopt when it is not.
    std::function<std::optional<std::optional<time_point>>()> due_hint;
  };

  claimer(pool::pool& lane, completer& outcomes, settings s, hooks h);

  // One cycle; with no limits it only hands back orphans, if a failed cycle left any. Throws
  // the database's error after delivering what was read before it.
  claim_result cycle(const claim_request& r);
  // The last cycle failed: the next one reconciles, even with nothing to claim.
  [[nodiscard]] bool reconciling() const noexcept { return reconcile_; }

 private:
  // Where the last claim of a type ended, in the claim order (priority DESC, due time, id).
  struct mark {
    int priority = 0;
    time_point run_at{};
    std::int64_t id = 0;
    // True when `other` comes after this mark in the claim order.
    [[nodiscard]] bool before(const mark& other) const;
  };
  // A task before the watermark (a higher priority, an earlier due time, one released or
  // skipped by another node) is found by a sweep from the head: every sweep_every cycles but
  // at most every sweep_gap, and at least every sweep_max_gap.
  static constexpr int sweep_every = 8;
  static constexpr std::chrono::milliseconds sweep_gap{100};
  static constexpr std::chrono::milliseconds sweep_max_gap{1000};

  int reconcile(pg::connection& c);
  bool sweep_now();
  void claim(pg::connection& c, const claim_request& r, claim_result& out,
             std::vector<claimed_task>& claimed);

  pool::pool& lane_;
  completer& outcomes_;
  settings settings_;
  hooks hooks_;
  std::string sql_claim_, sql_next_due_, sql_own_claims_;
  std::map<std::string, mark> marks_;
  int cycles_since_sweep_ = 0;
  std::chrono::steady_clock::time_point last_sweep_{};
  // Set when a cycle failed: its claims may have committed anyway (the connection died during
  // COMMIT), leaving tasks 'running' under this live node that no worker will ever run.
  bool reconcile_ = false;
};

}  // namespace sluice::sched::detail
