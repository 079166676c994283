#include "sched/liveness.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>
#include <unistd.h>

#include "sched/node_identity.hpp"
#include "sched/queries.hpp"
#include "sched/util.hpp"
#include "sluice/log.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/version.hpp"

namespace sluice::sched::detail {

using std::chrono::milliseconds;
using steady_clock = std::chrono::steady_clock;

namespace {

// A watched node's row has expired in the database by the time its local deadline passes (see
// heard()); this much later the early heartbeat runs, for the rounding of milliseconds.
constexpr milliseconds expiry_margin{25};
// Heartbeats never follow each other closer than this, whatever the watch says.
constexpr milliseconds min_gap{100};
// After a failed heartbeat: the next try comes this soon (within the interval), so that one
// failed statement does not make the node look late.
constexpr milliseconds retry_after{1000};

}  // namespace

liveness::liveness(pool::pool& lane, store& tasks, settings s, hooks h)
    : lane_(lane), store_(tasks), settings_(std::move(s)), hooks_(std::move(h)) {
  const auto& sc = settings_.schema;
  channel_ = sc + ".nodes";
  sql_heartbeat_ = with_schema(queries::heartbeat, sc);
  sql_node_row_ = with_schema(queries::node_row, sc);
  sql_register_ = with_schema(queries::register_node, sc);
  sql_take_over_ = with_schema(queries::take_over_claims, sc);
  sql_resign_ = with_schema(queries::resign_leader, sc);
  sql_deregister_ = with_schema(queries::deregister_node, sc);
}

liveness::~liveness() {
  {
    const std::scoped_lock lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

// A row under the same id that still looks alive belongs either to a predecessor that died
// without deregistering (killed, crashed: typical for a stable node id that systemd or
// Kubernetes restarts at once) or to a second live process given the same id by mistake. On the
// same machine /proc tells which at once; otherwise the row's heartbeat does: it moves within the
// other process's heartbeat interval if that process lives, and expires if not. A live one is
// refused; a dead one's claims are taken over in the registration's transaction, so they are
// back in the queue before this node claims.
int liveness::register_node() {
  std::optional<time_point> first_heartbeat;  // the other row's heartbeat when first seen
  bool told_wait = false;
  const auto& id = settings_.node_id;
  for (;;) {
    auto lease = lane_.acquire();
    pg::connection& c = lease.conn();
    pg::transaction tx(c);
    c.query_cached(queries::node_start_lock, settings_.schema + ".node:" + id);
    const auto row = c.query_cached(sql_node_row_, id);
    if (!row.empty() && row[0].get<bool>("alive")) {
      const auto r = row[0];
      const std::string other =
          "host " + r.get<std::string>("host") + ", pid " + std::to_string(r.get<int>("pid"));
      const auto heartbeat = r.get<time_point>("heartbeat_at");
      const auto age_ms = r.get<std::int64_t>("heartbeat_age_ms");
      const auto refuse = [&] {
        return node_id_conflict(
            "node id '" + id + "' is in use by a running process (" + other + ", last heartbeat " +
            std::to_string(age_ms) +
            " ms ago): two processes cannot share a node id. Give each process its own node "
            "id (scheduler.node_id; leave it empty for a generated one) or stop the other "
            "process first");
      };
      switch (liveness_of(r.get<std::optional<std::string>>("process_key").value_or(""))) {
        case process_liveness::alive:
          throw refuse();
        case process_liveness::gone:
          log(log_level::info, "scheduler",
              "node " + id + ": the previous process (" + other +
                  ") has exited; taking over its claims");
          break;
        case process_liveness::unknown: {
          if (first_heartbeat && heartbeat != *first_heartbeat) throw refuse();
          if (!first_heartbeat) first_heartbeat = heartbeat;
          if (!told_wait) {
            told_wait = true;
            log(log_level::info, "scheduler",
                "node " + id + " was registered by another process (" + other +
                    ") that this machine cannot see; waiting up to " +
                    std::to_string(r.get<std::int64_t>("expires_in_ms")) +
                    " ms for its heartbeat to show whether it still runs");
          }
          tx.rollback();
          lease = {};
          std::this_thread::sleep_for(milliseconds(100));
          continue;
        }
      }
    }
    c.query_cached(sql_register_, id, settings_.host, static_cast<int>(getpid()),
                   std::string(version_string),
                   static_cast<std::int64_t>(settings_.node_expiry.count()),
                   settings_.connection_budget, settings_.incarnation,
                   settings_.process_key.empty() ? std::optional<std::string>()
                                                 : std::optional(settings_.process_key));
    const int taken =
        c.query_cached(sql_take_over_, id, settings_.incarnation, settings_.stats_shard).one<int>();
    tx.commit();
    if (taken > 0) {
      log(log_level::warn, "scheduler",
          "node " + id + " took over " + std::to_string(taken) +
              " tasks that its previous process had claimed: they are back in the queue");
    }
    return taken;
  }
}

// Another process registered under this node id after this one (its start found this one's
// heartbeat late enough to look dead: the process was stopped, or cut off from the database). It
// rescued this process's claims, so nothing this process holds can complete any more.
void liveness::on_superseded(pg::connection& c) {
  {
    const std::scoped_lock lock(mutex_);
    if (superseded_) return;
    superseded_ = true;
    leader_ = false;
  }
  std::string other = "another process";
  try {
    const auto row = c.query_cached(sql_node_row_, settings_.node_id);
    if (!row.empty()) {
      other += " (host " + row[0].get<std::string>("host") + ", pid " +
               std::to_string(row[0].get<int>("pid")) + ")";
    }
  } catch (const std::exception&) {
    // The message below is complete without the other process's address.
  }
  const std::string message =
      "node " + settings_.node_id + " was taken over by " + other +
      " registered under the same node id while this process could not renew its heartbeat; "
      "this process no longer claims tasks and its running tasks cannot complete (their claims "
      "were rescued)";
  log(log_level::error, "scheduler", message);
  if (hooks_.superseded) hooks_.superseded(message);
}

int liveness::heartbeat_once() {
  auto lease = lane_.acquire();
  const bool draining = hooks_.draining && hooks_.draining();
  const auto sent = steady_clock::now();
  const auto res = lease->query_cached(
      sql_heartbeat_, settings_.node_id, settings_.host, static_cast<int>(getpid()),
      std::string(version_string), static_cast<std::int64_t>(settings_.node_expiry.count()),
      settings_.connection_budget, std::string(draining ? "draining" : "running"),
      settings_.stats_shard, settings_.incarnation,
      settings_.process_key.empty() ? std::optional<std::string>()
                                    : std::optional(settings_.process_key),
      settings_.types_array, channel_, settings_.schema + ".tasks");
  const auto row = res[0];
  if (row.get<int>("registered") == 0) {
    on_superseded(lease.conn());
    return 0;
  }
  if (const auto lapsed = row.get<std::string>("lapsed"); !lapsed.empty()) {
    log(log_level::warn, "scheduler",
        "node " + settings_.node_id + "'s heartbeat came after its row had expired" +
            (lapsed == "dead" ? " and the leader had declared it dead and rescued its tasks"
                              : " (its tasks may have been rescued)") +
            ": it hands back the tasks it had claimed but not started");
    if (hooks_.lapsed) hooks_.lapsed(lapsed == "dead");
  }
  const bool leader = row.get<int>("leader") == 1;
  const int rescued = row.get<int>("rescued");
  // Deadlines count from when the statement was sent, not when its answer arrived: its now()
  // is at least that late, so a node is never judged expired before the database says so.
  const auto others = nlohmann::json::parse(row.get<std::string>("others_expire_in_ms"));
  const auto leader_node = row.get<std::optional<std::string>>("leader_node");
  const auto leader_left = row.get<std::optional<std::int64_t>>("leader_expires_in_ms");
  bool changed = false;
  {
    const std::scoped_lock lock(mutex_);
    changed = leader != leader_;
    leader_ = leader;
    leader_node_ = leader_node.value_or("");
    expires_.clear();
    for (const auto& [node, ms] : others.items())
      expires_[node] = sent + milliseconds(static_cast<std::int64_t>(ms.get<double>()));
    if (!leader && leader_node && leader_left && *leader_node != settings_.node_id) {
      auto& at = expires_[*leader_node];
      at = std::max(at, sent + milliseconds(*leader_left));
    }
  }
  if (changed) {
    log(log_level::info, "scheduler",
        "node " + settings_.node_id + (leader ? " is now the leader" : " is no longer the leader"));
    if (hooks_.leadership) hooks_.leadership(leader);
  }
  if (rescued > 0) {
    log(log_level::warn, "scheduler",
        "rescued " + std::to_string(rescued) + " tasks of nodes that stopped responding");
    if (hooks_.rescued) hooks_.rescued(rescued);
  }
  if (hooks_.next_due) hooks_.next_due(row.get<std::optional<time_point>>("next_due"));
  return rescued;
}

void liveness::heard(const std::string& node, milliseconds expiry) {
  if (node == settings_.node_id) return;
  {
    const std::scoped_lock lock(mutex_);
    // Heard after its heartbeat began, so its row expires before this deadline.
    expires_[node] = steady_clock::now() + expiry;
    woken_ = true;
  }
  cv_.notify_all();
}

std::optional<liveness::steady::time_point> liveness::next_expiry_locked() const {
  std::optional<steady::time_point> at;
  for (const auto& [node, t] : expires_) {
    // The leader watches every node; a follower only the leader, whose lease it would take.
    if (!leader_ && node != leader_node_) continue;
    if (!at || t < *at) at = t;
  }
  if (at) *at += expiry_margin;
  return at;
}

bool liveness::leader() const {
  const std::scoped_lock lock(mutex_);
  return leader_;
}

// One round of retention (leader only), on the heartbeat thread: it gets half a heartbeat
// interval, so the node's own heartbeat is never late enough to make it look dead. Returns false
// when rows past their retention are left, so the caller comes back after the next heartbeat
// instead of in ten minutes.
bool liveness::prune() {
  const auto r = store_.prune(settings_.retention, settings_.heartbeat_interval / 2);
  if (r.runs + r.cycles + r.tasks + r.nodes > 0) {
    log(log_level::info, "scheduler",
        "pruned " + std::to_string(r.runs) + " runs, " + std::to_string(r.cycles) + " cycles, " +
            std::to_string(r.tasks) + " finished tasks, " + std::to_string(r.nodes) +
            " stopped nodes" +
            (r.complete ? "" : " (more left; continuing after the next heartbeat)"));
  }
  return r.complete;
}

void liveness::start() {
  thread_ = std::thread([this] { loop(); });
}

void liveness::loop() {
  // The first round of retention comes with the first heartbeat after start, so that a node
  // restarted more often than the interval still prunes, and an idle node's steady load is its
  // heartbeats and idle polls only (four small deletes every prune_interval, 10 min by default).
  auto next_prune = steady_clock::now();
  auto last_try = steady_clock::now();
  auto regular = last_try + settings_.heartbeat_interval;
  std::string last_error;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      for (;;) {
        if (stop_) return;
        woken_ = false;
        auto until = regular;
        if (const auto early = next_expiry_locked()) until = std::min(until, *early);
        until = std::max(until, last_try + min_gap);
        if (steady_clock::now() >= until) break;
        cv_.wait_until(lock, until, [this] { return stop_ || woken_; });
        if (stop_) return;
        if (!woken_) break;  // the deadline came
      }
    }
    last_try = steady_clock::now();
    try {
      heartbeat_once();
      regular = last_try + settings_.heartbeat_interval;
      if (leader() && steady_clock::now() >= next_prune) {
        next_prune = steady_clock::now() + settings_.prune_interval;
        if (!prune()) next_prune = steady_clock::now();
      }
      last_error.clear();
    } catch (const std::exception& e) {
      if (last_error != e.what())
        log(log_level::error, "scheduler", std::string("heartbeat failed: ") + e.what());
      last_error = e.what();
      regular = std::min(last_try + settings_.heartbeat_interval, last_try + retry_after);
    }
  }
}

void liveness::stop() {
  {
    const std::scoped_lock lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  try {
    auto lease = lane_.acquire_for(milliseconds(2000));
    lease->query(sql_resign_, settings_.node_id, settings_.incarnation);
    lease->query(sql_deregister_, settings_.node_id, settings_.incarnation);
  } catch (const std::exception& e) {
    log(log_level::warn, "scheduler", std::string("could not deregister the node: ") + e.what());
  }
  const std::scoped_lock lock(mutex_);
  leader_ = false;
}

}  // namespace sluice::sched::detail
