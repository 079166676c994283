#include "sched/claimer.hpp"

#include <algorithm>

#include "sched/outcome.hpp"
#include "sched/queries.hpp"
#include "sched/util.hpp"
#include "sluice/pg/params.hpp"

namespace sluice::sched::detail {

using std::chrono::steady_clock;
using std::chrono::system_clock;

bool claimer::mark::before(const mark& other) const {
  if (priority != other.priority) return priority > other.priority;
  if (run_at != other.run_at) return run_at < other.run_at;
  return id < other.id;
}

claimer::claimer(pool::pool& lane, completer& outcomes, settings s, hooks h)
    : lane_(lane), outcomes_(outcomes), settings_(std::move(s)), hooks_(std::move(h)) {
  sql_claim_ = with_schema(queries::claim, settings_.schema);
  sql_next_due_ = with_schema(queries::next_due, settings_.schema);
  sql_own_claims_ = with_schema(queries::own_claims, settings_.schema);
}

claim_result claimer::cycle(const claim_request& r) {
  claim_result out;
  std::vector<claimed_task> claimed;
  try {
    auto lease = lane_.acquire();
    pg::connection& c = lease.conn();
    if (reconcile_) {
      out.orphans = reconcile(c);
      reconcile_ = false;
    }
    if (r.limits.empty()) return out;
    claim(c, r, out, claimed);
    // Workers start on the claims while the claimer asks when the next task is due.
    hooks_.deliver(claimed);
    // An idle poll that found nothing does not ask again: the heartbeat asked at most one
    // interval ago, and whatever was added since then notified, which makes a woken cycle that
    // asks. A hint that says "due now" after a claim that found nothing is stale: ask.
    if (!r.woken && out.by_type.empty()) {
      if (auto hint = hooks_.due_hint(); hint && (!*hint || **hint > system_clock::now())) {
        out.next_due = *hint;
        out.next_due_known = true;
      }
    }
    if (!out.full_batch && !out.next_due_known) {
      out.next_due =
          c.query_cached(sql_next_due_, settings_.types_array).one<std::optional<time_point>>();
      out.next_due_known = true;
    }
  } catch (...) {
    reconcile_ = true;
    hooks_.deliver(claimed);  // rows read before the failure were claimed and committed
    throw;
  }
  return out;
}

// The last cycle failed and may have committed anyway (the connection died during the
// statement): claims this node holds in the database but not in memory go back (fenced).
int claimer::reconcile(pg::connection& c) {
  std::set<std::int64_t> known = hooks_.held();
  outcomes_.held_ids(known);
  int orphans = 0;
  for (const auto row : c.query_cached(sql_own_claims_, settings_.node_id, settings_.incarnation)) {
    const auto id = row.get<std::int64_t>(0);
    if (known.count(id) != 0) continue;
    outcomes_.release(id, row.get<std::int64_t>(1));
    ++orphans;
  }
  return orphans;
}

bool claimer::sweep_now() {
  const auto now = steady_clock::now();
  const bool sweep = (++cycles_since_sweep_ >= sweep_every && now - last_sweep_ >= sweep_gap) ||
                     now - last_sweep_ >= sweep_max_gap;
  if (sweep) {
    cycles_since_sweep_ = 0;
    last_sweep_ = now;
  }
  return sweep;
}

void claimer::claim(pg::connection& c, const claim_request& r, claim_result& out,
                    std::vector<claimed_task>& claimed) {
  // A claim starts past the watermark of its type (where the previous claim ended); a sweep
  // starts from the head.
  const bool sweep = sweep_now();
  pg::array_literal types, counts, after_priority, after_run_at, after_id, free_workers;
  for (const auto& [type, n] : r.limits) {
    types.add(type);
    counts.add(n);
    const auto m = marks_.find(type);
    if (sweep || m == marks_.end()) {
      after_priority.null();
      after_run_at.null();
      after_id.null();
    } else {
      after_priority.add(m->second.priority);
      after_run_at.add(m->second.run_at);
      after_id.add(m->second.id);
    }
  }
  for (const int f : r.free)
    free_workers.add(f);
  const auto started_wall = system_clock::now();
  const auto res =
      c.query_cached(sql_claim_, settings_.node_id, types, counts, settings_.incarnation,
                     settings_.shard, after_priority, after_run_at, after_id, r.room, free_workers);
  std::map<std::string, mark> last;  // per type, the last row in claim order
  for (const auto row : res) {
    claimed_task ct{.t = row_to_task(row), .fire_time = {}};
    ++out.by_type[ct.t.type];
    const mark m{ct.t.priority, ct.t.next_run_at.value_or(time_point{}), ct.t.id};
    auto [it, fresh] = last.try_emplace(ct.t.type, m);
    if (!fresh && it->second.before(m)) it->second = m;
    ct.fire_time = ct.t.fire_time.value_or(started_wall);
    auto misfire = decide_misfire_on_claim(ct.t, ct.fire_time, started_wall);
    if (misfire.skipped > 0) outcomes_.note_skipped(ct.t.type, misfire.skipped);
    if (misfire.skip) {
      outcomes_.push(std::move(*misfire.skip));
      continue;
    }
    claimed.push_back(std::move(ct));
  }
  // Full when some type took its whole share (the same shares as engine_claim's).
  int left = r.room;
  const int count = static_cast<int>(r.limits.size());
  for (int k = 0; k < count && left > 0; ++k) {
    const auto& [type, cap] = r.limits[static_cast<std::size_t>(k)];
    const int share = std::min(cap, std::max(1, (left + count - k - 1) / (count - k)));
    const auto it = out.by_type.find(type);  // (not [], which would add a zero: "claimed")
    const int got = it == out.by_type.end() ? 0 : it->second;
    out.full_batch = out.full_batch || got >= share;
    left -= got;
  }
  for (const auto& [type, m] : last)
    marks_[type] = m;
}

}  // namespace sluice::sched::detail
