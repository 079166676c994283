// sched::store against the real server: creating tasks writes what the spec says, listing
// filters and pages, duplicate names and bad specs are refused without writing anything, and
// the operator's state changes follow the state machine.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "sluice/sched/cron.hpp"
#include "sluice/sched/schedule.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/sched/task.hpp"
#include "support/sched_test_env.hpp"

namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;
using sched::change_result;
using sched::task_state;
using std::chrono::system_clock;

namespace {

class SchedStore : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }
};

sched::time_point whole_seconds(sched::time_point t) {
  return std::chrono::floor<std::chrono::seconds>(t);
}

std::int64_t task_count(test::sched_env& env) {
  return env.scalar("SELECT count(*) FROM " + env.q("tasks"));
}

sched::task_spec future_once(const std::string& type, std::optional<std::string> name = {}) {
  sched::task_spec spec;
  spec.type = type;
  spec.name = std::move(name);
  spec.when = sched::schedule::once(whole_seconds(system_clock::now()) + 1h);
  return spec;
}

std::vector<std::int64_t> ids_of(const std::vector<sched::task>& tasks) {
  std::vector<std::int64_t> ids;
  for (const auto& t : tasks)
    ids.push_back(t.id);
  return ids;
}

// Every field of the spec lands in the row, and get() and get_by_name() read it back.
TEST_F(SchedStore, CreateWritesTheSpecAndGetReadsItBack) {
  test::sched_env env;
  sched::task_spec spec;
  spec.type = "report.daily";
  spec.name = "nightly-report";
  spec.payload = R"({"k": 1})";
  const sched::time_point at = whole_seconds(system_clock::now()) + 2h;
  spec.when = sched::schedule::once(at);
  spec.priority = 7;
  spec.max_attempts = 5;
  spec.backoff_base = 250ms;
  spec.backoff_cap = 30s;
  spec.timeout = 12s;
  spec.misfire = sched::misfire_policy::catch_up;
  spec.misfire_grace = 15s;
  spec.catch_up_limit = 4;
  spec.pause_after_failures = 0;

  const std::int64_t id = env.store().create(spec);
  ASSERT_GT(id, 0);
  const std::optional<sched::task> t = env.store().get(id);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->id, id);
  EXPECT_EQ(t->type, "report.daily");
  EXPECT_EQ(t->name, std::optional<std::string>("nightly-report"));
  EXPECT_EQ(t->payload, R"({"k": 1})");
  EXPECT_EQ(t->state, task_state::scheduled);
  EXPECT_EQ(t->schedule_kind, "once");
  EXPECT_EQ(t->timezone, "UTC");
  EXPECT_EQ(t->misfire_policy, "catch_up");
  EXPECT_EQ(t->misfire_grace_s, 15);
  EXPECT_EQ(t->catch_up_limit, 4);
  ASSERT_TRUE(t->next_run_at.has_value());
  EXPECT_EQ(*t->next_run_at, at);
  EXPECT_EQ(t->priority, 7);
  EXPECT_EQ(t->attempt, 0);
  EXPECT_EQ(t->max_attempts, 5);
  EXPECT_EQ(t->backoff_base_ms, 250);
  EXPECT_EQ(t->backoff_cap_ms, 30000);
  EXPECT_EQ(t->timeout_ms, 12000);
  EXPECT_FALSE(t->claimed_by.has_value());
  EXPECT_EQ(t->runs, 0);
  EXPECT_EQ(t->parsed_schedule(), spec.when);

  const std::optional<sched::task> by_name = env.store().get_by_name("nightly-report");
  ASSERT_TRUE(by_name.has_value());
  EXPECT_EQ(by_name->id, id);
  EXPECT_FALSE(env.store().get(id + 1000).has_value());
  EXPECT_FALSE(env.store().get_by_name("no-such-task").has_value());
}

// A cron task's first run is the expression's next fire time after creation, in its zone; an
// interval task's is within one period of creation.
TEST_F(SchedStore, RecurringTasksGetTheirFirstFireTime) {
  test::sched_env env;
  sched::task_spec cron = future_once("cron.berlin");
  cron.when = sched::schedule::cron("30 9 * * MON-FRI", "Europe/Berlin");
  const sched::time_point before = system_clock::now();
  const std::int64_t cron_id = env.store().create(cron);
  const sched::time_point after = system_clock::now();
  const std::optional<sched::task> c = env.store().get(cron_id);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->schedule_kind, "cron");
  EXPECT_EQ(c->schedule_spec, "30 9 * * MON-FRI");
  EXPECT_EQ(c->timezone, "Europe/Berlin");
  ASSERT_TRUE(c->next_run_at.has_value());
  EXPECT_TRUE(*c->next_run_at == cron.when.next_after(before) ||
              *c->next_run_at == cron.when.next_after(after))
      << sched::format_timestamp(*c->next_run_at);
  EXPECT_EQ(c->parsed_schedule(), cron.when);

  sched::task_spec every = future_once("interval.hourly");
  every.when = sched::schedule::every(1h);
  const sched::time_point before_every = system_clock::now();
  const std::int64_t every_id = env.store().create(every);
  const std::optional<sched::task> e = env.store().get(every_id);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->schedule_kind, "interval");
  EXPECT_EQ(e->schedule_spec, "1h");
  ASSERT_TRUE(e->next_run_at.has_value());
  EXPECT_GE(*e->next_run_at, whole_seconds(before_every) - 1s);
  EXPECT_LE(*e->next_run_at, system_clock::now() + 1h + 1s);
}

TEST_F(SchedStore, ListFiltersAndPagesNewestFirst) {
  test::sched_env env;
  std::vector<std::int64_t> alpha;  // creation order
  for (int i = 0; i < 7; ++i) {
    alpha.push_back(env.store().create(future_once("alpha", "alpha-job-" + std::to_string(i))));
  }
  std::vector<std::int64_t> beta;
  for (int i = 0; i < 3; ++i) {
    beta.push_back(env.store().create(future_once("beta", "beta-job-" + std::to_string(i))));
  }
  ASSERT_EQ(env.store().pause(beta[1]), change_result::done);

  sched::task_filter all;
  all.limit = 100;
  EXPECT_EQ(env.store().list(all).size(), 10U);

  sched::task_filter by_type;
  by_type.type = "alpha";
  by_type.limit = 3;
  std::vector<std::int64_t> paged;
  std::vector<std::int64_t> page = ids_of(env.store().list(by_type));
  EXPECT_EQ(page, (std::vector<std::int64_t>{alpha[6], alpha[5], alpha[4]}));
  while (!page.empty()) {
    EXPECT_LE(page.size(), 3U);
    paged.insert(paged.end(), page.begin(), page.end());
    by_type.before_id = page.back();
    page = ids_of(env.store().list(by_type));
  }
  EXPECT_EQ(paged, (std::vector<std::int64_t>(alpha.rbegin(), alpha.rend())));

  sched::task_filter paused;
  paused.state = task_state::paused;
  EXPECT_EQ(ids_of(env.store().list(paused)), std::vector<std::int64_t>{beta[1]});

  sched::task_filter by_name;
  by_name.name = "job-2";  // a substring: alpha-job-2 and beta-job-2
  EXPECT_EQ(ids_of(env.store().list(by_name)), (std::vector<std::int64_t>{beta[2], alpha[2]}));

  sched::task_filter combined;
  combined.type = "beta";
  combined.state = task_state::scheduled;
  EXPECT_EQ(ids_of(env.store().list(combined)), (std::vector<std::int64_t>{beta[2], beta[0]}));

  sched::task_filter none;
  none.type = "gamma";
  EXPECT_TRUE(env.store().list(none).empty());
}

TEST_F(SchedStore, DuplicateNameIsAConflictAndWritesNothing) {
  test::sched_env env;
  const std::int64_t first = env.store().create(future_once("dup", "only-one"));
  EXPECT_THROW((void)env.store().create(future_once("dup", "only-one")), sched::conflict_error);
  EXPECT_THROW((void)env.store().create(future_once("other-type", "only-one")),
               sched::conflict_error);
  EXPECT_EQ(task_count(env), 1);
  // The store's connections are still good after the refused inserts.
  EXPECT_EQ(env.store().get_by_name("only-one")->id, first);
  EXPECT_GT(env.store().create(future_once("dup", "another")), first);
}

// A bad spec is refused before anything reaches the database.
TEST_F(SchedStore, BadSpecsAreRefusedWithScheduleErrorAndWriteNothing) {
  test::sched_env env;
  // The schedule factories refuse nonsense outright.
  EXPECT_THROW((void)sched::schedule::every(0s), sched::schedule_error);
  EXPECT_THROW((void)sched::schedule::every(-5s), sched::schedule_error);
  EXPECT_THROW((void)sched::schedule::cron("61 * * * *"), sched::schedule_error);
  EXPECT_THROW((void)sched::schedule::cron("* * * * *", "Mars/Olympus_Mons"),
               sched::schedule_error);

  struct bad_case {
    const char* what;
    sched::task_spec spec;
  };
  std::vector<bad_case> cases;
  auto add = [&](const char* what, auto change) {
    sched::task_spec s = future_once("fine.type");
    change(s);
    cases.push_back({what, std::move(s)});
  };
  add("type with a space", [](sched::task_spec& s) { s.type = "bad type"; });
  add("empty type", [](sched::task_spec& s) { s.type = ""; });
  add("type too long", [](sched::task_spec& s) { s.type = std::string(101, 'x'); });
  add("empty name", [](sched::task_spec& s) { s.name = ""; });
  add("priority above 1000", [](sched::task_spec& s) { s.priority = 1001; });
  add("max_attempts 0", [](sched::task_spec& s) { s.max_attempts = 0; });
  add("timeout 0", [](sched::task_spec& s) { s.timeout = 0ms; });
  add("negative backoff", [](sched::task_spec& s) { s.backoff_base = -1ms; });
  add("cap below base", [](sched::task_spec& s) {
    s.backoff_base = 10s;
    s.backoff_cap = 1s;
  });
  add("catch_up_limit 0", [](sched::task_spec& s) { s.catch_up_limit = 0; });
  add("negative grace", [](sched::task_spec& s) { s.misfire_grace = -1s; });
  add("negative pause_after_failures", [](sched::task_spec& s) { s.pause_after_failures = -1; });

  for (const bad_case& c : cases) {
    EXPECT_THROW((void)c.spec.validate(), sched::schedule_error) << c.what;
    EXPECT_THROW((void)env.store().create(c.spec), sched::schedule_error) << c.what;
  }
  EXPECT_EQ(task_count(env), 0);
}

// pause / resume / cancel / run_now / reschedule: done where the state machine allows it,
// wrong_state where it does not, not_found for an unknown id; nothing changes on a refusal.
TEST_F(SchedStore, StateChangesFollowTheStateMachine) {
  test::sched_env env;
  sched::store& st = env.store();
  const std::int64_t id = st.create(future_once("life"));
  const std::int64_t missing = id + 100000;
  auto state_of = [&](std::int64_t task) { return st.get(task)->state; };

  // scheduled -> paused -> scheduled
  EXPECT_EQ(st.pause(id), change_result::done);
  EXPECT_EQ(state_of(id), task_state::paused);
  EXPECT_EQ(st.pause(id), change_result::wrong_state);
  EXPECT_EQ(st.resume(id), change_result::done);
  EXPECT_EQ(state_of(id), task_state::scheduled);
  EXPECT_EQ(st.resume(id), change_result::wrong_state);

  // reschedule moves next_run_at.
  const sched::time_point later = whole_seconds(system_clock::now()) + 3h;
  EXPECT_EQ(st.reschedule(id, later), change_result::done);
  EXPECT_EQ(*st.get(id)->next_run_at, later);
  EXPECT_EQ(state_of(id), task_state::scheduled);

  // run_now makes it due at once.
  EXPECT_EQ(st.run_now(id), change_result::done);
  const sched::task due = *st.get(id);
  EXPECT_EQ(due.state, task_state::available);
  ASSERT_TRUE(due.next_run_at.has_value());
  EXPECT_LE(*due.next_run_at, system_clock::now() + 1s);

  // cancelled is final: every later change is refused and leaves the row alone.
  EXPECT_EQ(st.cancel(id), change_result::done);
  const sched::task cancelled = *st.get(id);
  EXPECT_EQ(cancelled.state, task_state::cancelled);
  EXPECT_EQ(st.cancel(id), change_result::wrong_state);
  EXPECT_EQ(st.pause(id), change_result::wrong_state);
  EXPECT_EQ(st.resume(id), change_result::wrong_state);
  EXPECT_EQ(st.reschedule(id, later), change_result::wrong_state);
  EXPECT_EQ(st.run_now(id), change_result::wrong_state);
  EXPECT_EQ(state_of(id), task_state::cancelled);
  EXPECT_EQ(st.get(id)->updated_at, cancelled.updated_at);

  // A paused task can be cancelled, and a rescheduled paused task stays paused.
  const std::int64_t other = st.create(future_once("life"));
  EXPECT_EQ(st.pause(other), change_result::done);
  EXPECT_EQ(st.reschedule(other, later + 1h), change_result::done);
  EXPECT_EQ(state_of(other), task_state::paused);
  EXPECT_EQ(*st.get(other)->next_run_at, later + 1h);
  EXPECT_EQ(st.cancel(other), change_result::done);

  // A running task is the engine's: the operator cannot pause, resume or reschedule it.
  const std::int64_t running = st.create(future_once("life"));
  env.sql().query("UPDATE " + env.q("tasks") +
                      " SET state = 'running', claimed_by = 'someone', claim_token = 1"
                      " WHERE id = $1",
                  running);
  EXPECT_EQ(st.pause(running), change_result::wrong_state);
  EXPECT_EQ(st.resume(running), change_result::wrong_state);
  EXPECT_EQ(st.reschedule(running, later), change_result::wrong_state);
  EXPECT_EQ(state_of(running), task_state::running);

  for (auto change : {&sched::store::pause, &sched::store::resume, &sched::store::cancel,
                      &sched::store::run_now}) {
    EXPECT_EQ((st.*change)(missing), change_result::not_found);
  }
  EXPECT_EQ(st.reschedule(missing, later), change_result::not_found);
}

}  // namespace

// Retention: what is past it goes, in batches; what is not, or is still live, or recurs, stays;
// cumulative stats do not move; a freed unique name can be used again.
TEST_F(SchedStore, PruneDeletesOnlyWhatIsPastItsRetention) {
  test::sched_env env;
  auto& st = env.store();
  // Finished one-shot tasks: old ones (10 days untouched) and a recent one.
  const auto make = [&](const std::string& state, const std::string& age,
                        std::optional<std::string> name = {}, bool recurring = false) {
    sched::task_spec spec = future_once("prune.me", std::move(name));
    if (recurring) spec.when = sched::schedule::every(1h);
    const std::int64_t id = st.create(spec);
    env.sql().query("UPDATE " + env.q("tasks") +
                        " SET state = $2, updated_at = now() - $3::interval WHERE id = $1",
                    id, state, age);
    return id;
  };
  const std::int64_t old_ok = make("succeeded", "10 days", "nightly-once");
  const std::int64_t old_failed = make("failed", "10 days");
  const std::int64_t old_cancelled = make("cancelled", "10 days");
  const std::int64_t recent_ok = make("succeeded", "1 day");
  const std::int64_t old_scheduled = make("scheduled", "10 days");
  const std::int64_t old_paused = make("paused", "10 days");
  const std::int64_t old_recurring = make("cancelled", "10 days", {}, /*recurring=*/true);

  // History: 5 old runs and 2 recent; 3 old cycles and 1 recent.
  for (const char* age : {"9 days", "9 days", "9 days", "8 days", "8 days", "1 hour", "2 days"}) {
    env.sql().query("INSERT INTO " + env.q("task_runs") +
                        " (task_id, type, attempt, claim_token, node, started_at, finished_at,"
                        " outcome) VALUES ($1, 'prune.me', 1, 1, 'n1', now() - $2::interval,"
                        " now() - $2::interval, 'succeeded')",
                    old_ok, std::string(age));
  }
  for (const char* age : {"5 days", "4 days", "4 days", "1 hour"}) {
    env.sql().query("INSERT INTO " + env.q("cycles") +
                        " (node, started_at, duration_ms) VALUES ('n1', now() - $1::interval, 1)",
                    std::string(age));
  }
  env.sql().exec("INSERT INTO " + env.q("stats") +
                 " (metric, type, shard, value) VALUES ('runs_succeeded', 'prune.me', 0, 7)");
  const auto stats_before = st.stats().total("runs_succeeded");

  const sched::retention keep{.runs = 24h * 7, .cycles = 24h * 3, .finished_tasks = 24h * 7};
  // A budget of zero stops after the first batch of each kind that was full.
  const sched::prune_result first = st.prune(keep, 0ms, 2);
  EXPECT_FALSE(first.complete);
  EXPECT_EQ(first.runs, 2);
  EXPECT_EQ(first.cycles, 0);
  EXPECT_EQ(first.tasks, 0);

  const sched::prune_result rest = st.prune(keep, 10s, 2);
  EXPECT_TRUE(rest.complete);
  EXPECT_EQ(rest.runs, 3);
  EXPECT_EQ(rest.cycles, 3);
  EXPECT_EQ(rest.tasks, 3);

  for (const std::int64_t gone : {old_ok, old_failed, old_cancelled})
    EXPECT_FALSE(st.get(gone).has_value()) << "task " << gone;
  for (const std::int64_t kept : {recent_ok, old_scheduled, old_paused, old_recurring})
    EXPECT_TRUE(st.get(kept).has_value()) << "task " << kept;
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("task_runs")), 2);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("cycles")), 1);
  EXPECT_EQ(st.stats().total("runs_succeeded"), stats_before);

  // Nothing is left to do, and zero retentions keep everything.
  const sched::prune_result again = st.prune(keep);
  EXPECT_TRUE(again.complete);
  EXPECT_EQ(again.runs + again.cycles + again.tasks, 0);
  const sched::prune_result keep_all = st.prune({.runs = 0h, .cycles = 0h, .finished_tasks = 0h});
  EXPECT_EQ(keep_all.runs + keep_all.cycles + keep_all.tasks, 0);
  EXPECT_EQ(env.scalar("SELECT count(*) FROM " + env.q("task_runs")), 2);

  // The pruned task's unique name is free again.
  EXPECT_NO_THROW(st.create(future_once("prune.me", "nightly-once")));
  EXPECT_THROW(st.prune(keep, 1s, 0), std::invalid_argument);
}
