#include "sched/completer.hpp"

#include <algorithm>
#include <exception>
#include <utility>

#include "sched/queries.hpp"
#include "sched/util.hpp"
#include "sluice/log.hpp"
#include "sluice/pg/params.hpp"

namespace sluice::sched::detail {

completer::completer(pool::pool& lane, settings s, report_fn on_report)
    : lane_(lane), settings_(std::move(s)), on_report_(std::move(on_report)) {
  sql_complete_ = with_schema(queries::complete, settings_.schema);
  sql_release_ = with_schema(queries::release_claims, settings_.schema);
}

completer::~completer() {
  stop();
}

void completer::start() {
  thread_ = std::thread([this] { loop(); });
}

void completer::push(outcome_row o) {
  {
    const std::scoped_lock lock(mutex_);
    outcomes_.push_back(std::move(o));
  }
  cv_.notify_one();
}

void completer::release(std::int64_t id, std::int64_t token) {
  {
    const std::scoped_lock lock(mutex_);
    releases_.push_back({id, token});
  }
  cv_.notify_one();
}

void completer::note_skipped(const std::string& type, std::uint64_t n) {
  if (n == 0) return;
  {
    const std::scoped_lock lock(mutex_);
    skipped_[type] += n;
  }
  cv_.notify_one();
}

void completer::held_ids(std::set<std::int64_t>& out) const {
  const std::scoped_lock lock(mutex_);
  for (const auto& o : outcomes_)
    out.insert(o.id);
  for (const auto& r : releases_)
    out.insert(r.id);
  out.insert(inflight_.begin(), inflight_.end());
}

std::size_t completer::backlog() const {
  const std::scoped_lock lock(mutex_);
  return outcomes_.size() + inflight_.size();
}

void completer::stop() {
  {
    const std::scoped_lock lock(mutex_);
    stop_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void completer::loop() {
  for (;;) {
    std::vector<outcome_row> outcomes;
    std::vector<release_row> releases;
    std::map<std::string, std::uint64_t> skipped;
    bool retry = false;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] {
        return stop_ || !outcomes_.empty() || !releases_.empty() || !skipped_.empty();
      });
      if (outcomes_.empty() && releases_.empty() && skipped_.empty()) return;  // stopping
      if (outcomes_.size() <= settings_.max_batch) {
        outcomes.swap(outcomes_);
      } else {
        const auto cut = outcomes_.begin() + static_cast<std::ptrdiff_t>(settings_.max_batch);
        outcomes.assign(std::make_move_iterator(outcomes_.begin()), std::make_move_iterator(cut));
        outcomes_.erase(outcomes_.begin(), cut);
      }
      releases.swap(releases_);
      skipped.swap(skipped_);
      for (const auto& o : outcomes)
        inflight_.insert(o.id);
      for (const auto& r : releases)
        inflight_.insert(r.id);
      retry = retry_;
    }
    completion_report report = flush(outcomes, releases, skipped, retry);
    bool give_up = false;
    {
      std::unique_lock lock(mutex_);
      inflight_.clear();
      if (report.error.empty()) {
        retry_ = false;
      } else {
        // Nothing of the batch committed, or its commit was not confirmed: keep it, in order,
        // for the next attempt (which leaves out what turns out to be recorded already).
        retry_ = true;
        outcomes_.insert(outcomes_.begin(), std::make_move_iterator(outcomes.begin()),
                         std::make_move_iterator(outcomes.end()));
        releases_.insert(releases_.begin(), releases.begin(), releases.end());
        for (const auto& [type, n] : skipped)
          skipped_[type] += n;
        give_up = stop_;
      }
    }
    if (on_report_) on_report_(report);
    if (give_up) {
      log(log_level::warn, "scheduler",
          "stopping with outcomes not written (" + report.error +
              "): their tasks stay claimed until the leader rescues them");
      return;
    }
    if (!report.error.empty()) {
      std::unique_lock lock(mutex_);
      cv_.wait_for(lock, settings_.retry_interval, [this] { return stop_; });
    }
  }
}

completion_report completer::flush(std::vector<outcome_row>& outcomes,
                                   std::vector<release_row>& releases,
                                   std::map<std::string, std::uint64_t>& skipped, bool retry) {
  completion_report report;
  try {
    auto lease = lane_.acquire();
    pg::connection& c = lease.conn();
    // Releases first: they are idempotent (fenced by token), so a batch retried after its
    // outcomes failed may repeat them harmlessly.
    if (!releases.empty()) {
      std::sort(releases.begin(), releases.end(),
                [](const release_row& a, const release_row& b) { return a.id < b.id; });
      pg::array_literal ids, tokens;
      for (const auto& r : releases) {
        ids.add(r.id);
        tokens.add(r.token);
      }
      c.query_cached(sql_release_, ids, tokens);
      report.released = static_cast<int>(releases.size());
    }
    if (!outcomes.empty() || !skipped.empty()) {
      // Rows in id order: every statement that updates several tasks locks them in that order.
      std::vector<const outcome_row*> rows;
      rows.reserve(outcomes.size());
      for (const auto& o : outcomes)
        rows.push_back(&o);
      std::sort(rows.begin(), rows.end(),
                [](const outcome_row* a, const outcome_row* b) { return a->id < b->id; });
      pg::array_literal id, token, type, attempt, outcome, new_state, next_run_at, reset, error,
          failures, fire_time, started_at, finished_at, detail, counts_run;
      std::map<std::string, std::uint64_t> skips = skipped;
      for (const outcome_row* o : rows) {
        id.add(o->id);
        token.add(o->token);
        type.add(o->type);
        attempt.add(o->attempt);
        outcome.add(o->outcome);
        new_state.add(o->new_state);
        next_run_at.add(o->next_run_at);
        reset.add(o->reset_attempt);
        error.add(o->error);
        failures.add(o->consecutive_failures);
        fire_time.add(o->fire_time);
        started_at.add(o->started_at);
        finished_at.add(o->finished_at);
        if (o->detail.empty())
          detail.null();
        else
          detail.add(o->detail);
        counts_run.add(o->counts_run);
        if (o->skipped > 0) skips[o->type] += o->skipped;
      }
      pg::array_literal skip_types, skip_counts;
      for (const auto& [t, n] : skips) {
        skip_types.add(t);
        skip_counts.add(static_cast<std::int64_t>(n));
        report.by_type[t].skipped += static_cast<int>(n);
      }
      const auto res = c.query_cached(sql_complete_, id, token, type, attempt, outcome, new_state,
                                      next_run_at, reset, error, failures, fire_time, started_at,
                                      finished_at, detail, counts_run, settings_.node_id,
                                      settings_.stats_shard, skip_types, skip_counts, retry);
      for (const auto row : res) {
        auto& tc = report.by_type[row.get<std::string>(0)];
        const auto o = row.get<std::string>(1);
        const int n = row.get<int>(2);
        if (o == "succeeded")
          tc.succeeded += n;
        else if (o == "fenced")
          tc.fenced += n;
        else if (o == "timed_out")
          tc.failed += n, tc.timed_out += n;
        else
          tc.failed += n;
      }
    }
  } catch (const std::exception& e) {
    report = {};
    report.error = e.what();
  }
  return report;
}

}  // namespace sluice::sched::detail
