// Producers adding tasks from C++ and over HTTP (docs/producers.md, docs/api.md): unique keys
// keep or replace the live task holding them, through store::add and add_task() on a connection
// the application holds, and through POST /api/v1/tasks (body field or Idempotency-Key header);
// many producers racing on one key create one task, on either path; a task added in the caller's
// transaction exists only once it commits, and then runs; and the task JSON that GET and
// `sluice task show --json` print can be posted back as it is.

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <latch>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>

#include "http/json.hpp"
#include "http/server.hpp"
#include "sluice/pg/connection.hpp"
#include "sluice/pg/error.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/sched/schedule.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/sched/task.hpp"
#include "support/sched_test_env.hpp"

namespace http = sluice::http;
namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;
using http::json;
using std::chrono::system_clock;

namespace {

constexpr const char* token = "producers-test-token-0123456789";

class Producers : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    env_ = std::make_unique<test::sched_env>(true, 4, 0);
  }

  std::int64_t task_count(const std::string& where = "true") {
    return env_->scalar("SELECT count(*) FROM " + env_->q("tasks") + " WHERE " + where);
  }

  static sched::task_spec keyed(const std::string& key, const std::string& payload = "{}") {
    sched::task_spec spec = test::due_now("producer.job");
    spec.unique_key = key;
    spec.payload = payload;
    return spec;
  }

  std::unique_ptr<test::sched_env> env_;
};

// ---- the C++ API ------------------------------------------------------------------------------

TEST_F(Producers, AUniqueKeyKeepsTheLiveTaskAndIsFreeAgainOnceItIsFinal) {
  sched::store& store = env_->store();
  const sched::add_result first = store.add(keyed("order:42", R"({"v": 1})"));
  EXPECT_EQ(first.outcome, sched::add_outcome::created);
  const sched::add_result again = store.add(keyed("order:42", R"({"v": 2})"));
  EXPECT_EQ(again.outcome, sched::add_outcome::existing);
  EXPECT_EQ(again.id, first.id);
  const auto kept = store.get(first.id);
  ASSERT_TRUE(kept);
  EXPECT_EQ(kept->payload, R"({"v": 1})");
  EXPECT_EQ(kept->unique_key, "order:42");
  EXPECT_EQ(task_count(), 1);

  ASSERT_EQ(store.cancel(first.id), sched::change_result::done);
  const sched::add_result fresh = store.add(keyed("order:42"));
  EXPECT_EQ(fresh.outcome, sched::add_outcome::created);
  EXPECT_NE(fresh.id, first.id);
  // A task without a key is never deduplicated.
  EXPECT_NE(store.create(test::due_now("producer.job")),
            store.create(test::due_now("producer.job")));
  EXPECT_EQ(task_count(), 4);
}

TEST_F(Producers, ReplaceTakesThePayloadAndScheduleZoneIncluded) {
  sched::store& store = env_->store();
  sched::task_spec spec = keyed("report:eu", R"({"v": 1})");
  spec.when = sched::schedule::cron("0 3 * * *");
  spec.priority = 7;
  const auto first = store.add(spec);
  ASSERT_TRUE(first.created());

  sched::task_spec change = keyed("report:eu", R"({"v": 2})");
  change.when = sched::schedule::cron("30 6 * * MON-FRI", "Europe/Berlin");
  change.on_conflict = sched::conflict_mode::replace;
  const auto replaced = store.add(change);
  EXPECT_EQ(replaced.outcome, sched::add_outcome::replaced);
  EXPECT_EQ(replaced.id, first.id);
  const auto t = store.get(first.id);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->payload, R"({"v": 2})");
  EXPECT_EQ(t->parsed_schedule(), change.when);
  EXPECT_EQ(t->timezone, "Europe/Berlin");
  EXPECT_EQ(t->priority, 7) << "replace changes the payload and schedule only";
  EXPECT_EQ(t->next_run_at, change.when.next_after(system_clock::now()));

  // A new task in a zone, added with a key, keeps its zone too.
  sched::task_spec zoned = keyed("report:us");
  zoned.when = sched::schedule::cron("0 9 * * *", "America/New_York");
  const auto z = store.add(zoned);
  ASSERT_TRUE(z.created());
  EXPECT_EQ(store.get(z.id)->timezone, "America/New_York");

  // keep leaves the holder's zone alone.
  sched::task_spec other_zone = zoned;
  other_zone.when = sched::schedule::cron("0 9 * * *", "Asia/Tokyo");
  EXPECT_EQ(store.add(other_zone).outcome, sched::add_outcome::existing);
  EXPECT_EQ(store.get(z.id)->timezone, "America/New_York");
}

TEST_F(Producers, ReplacingARunningTaskAndATakenNameAreConflicts) {
  sched::store& store = env_->store();
  const auto id = store.create(keyed("busy"));
  env_->sql().query("UPDATE " + env_->q("tasks") + " SET state = 'running' WHERE id = $1", id);
  sched::task_spec change = keyed("busy", R"({"v": 2})");
  change.on_conflict = sched::conflict_mode::replace;
  try {
    (void)store.add(change);
    ADD_FAILURE() << "replacing a running task was accepted";
  } catch (const sched::conflict_error& e) {
    EXPECT_NE(std::string(e.what()).find("is running"), std::string::npos) << e.what();
  }
  // keep still answers with the running holder.
  EXPECT_EQ(store.add(keyed("busy")).id, id);

  sched::task_spec named = keyed("named:1");
  named.name = "nightly";
  ASSERT_TRUE(store.add(named).created());
  sched::task_spec same_name = keyed("named:2");
  same_name.name = "nightly";
  EXPECT_THROW((void)store.add(same_name), sched::conflict_error);
}

TEST_F(Producers, BadSpecsAreRefusedBeforeAnyStatementSoTheCallersTransactionGoesOn) {
  pg::connection c = test::test_connect("sluice-producers-bad");
  pg::transaction tx(c);
  sched::task_spec bad_key = keyed("");
  EXPECT_THROW((void)sched::add_task(tx, bad_key, env_->schema()), sched::schedule_error);
  sched::task_spec long_key = keyed(std::string(201, 'k'));
  EXPECT_THROW((void)sched::add_task(tx, long_key, env_->schema()), sched::schedule_error);
  sched::task_spec nul_key = keyed(std::string("a\0b", 3));
  EXPECT_THROW((void)sched::add_task(tx, nul_key, env_->schema()), sched::schedule_error);
  sched::task_spec bad_priority = keyed("p");
  bad_priority.priority = 5000;
  EXPECT_THROW((void)sched::add_task(tx, bad_priority, env_->schema()), sched::schedule_error);
  // The bounds of the HTTP and SQL APIs: the C++ API accepts no task they would refuse.
  sched::task_spec long_timeout = keyed("t");
  long_timeout.timeout = std::chrono::hours(24 * 367);
  EXPECT_THROW((void)sched::add_task(tx, long_timeout, env_->schema()), sched::schedule_error);
  sched::task_spec many_failures = keyed("f");
  many_failures.pause_after_failures = 1'000'001;
  EXPECT_THROW((void)sched::add_task(tx, many_failures, env_->schema()), sched::schedule_error);
  EXPECT_THROW((void)sched::add_task(tx, keyed("s"), "Bad Schema"), std::invalid_argument);
  // The transaction is still usable.
  const auto added = sched::add_task(tx, keyed("good"), env_->schema());
  tx.commit();
  EXPECT_TRUE(added.created());
  EXPECT_EQ(task_count(), 1);
}

TEST_F(Producers, SixteenConnectionsRacingOnOneKeyThroughTheCppApiCreateOneTask) {
  constexpr int producers = 16;
  std::vector<sched::add_result> results(producers);
  std::vector<std::string> errors(producers);
  std::latch start(producers);
  std::vector<std::thread> threads;
  for (int i = 0; i < producers; ++i) {
    threads.emplace_back([&, i] {
      const auto at = static_cast<std::size_t>(i);
      try {
        pg::connection c = test::test_connect("sluice-producers-race");
        pg::transaction tx(c);
        // Something of the application's own first, as a real producer would.
        c.exec("SELECT 1");
        start.arrive_and_wait();
        results[at] = sched::add_task(
            tx, keyed("the-key", R"({"producer": )" + std::to_string(i) + "}"), env_->schema());
        tx.commit();
      } catch (const std::exception& e) {
        errors[at] = e.what();
      }
    });
  }
  for (auto& t : threads)
    t.join();
  int created = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(errors[i], "") << "producer " << i;
    EXPECT_EQ(results[i].id, results[0].id) << "producer " << i;
    if (results[i].created()) ++created;
  }
  EXPECT_EQ(created, 1);
  EXPECT_EQ(task_count(), 1);
}

TEST_F(Producers, ATaskAddedInTheCallersTransactionExistsOnlyAfterCommitAndThenRuns) {
  pool::pool_manager pools;
  sched::scheduler node(env_->settings(2), env_->lane(), &pools);
  std::latch ran(1);
  std::atomic<int> runs{0};
  node.handle("producer.job", [&](sched::task_context&) {
    if (runs.fetch_add(1) == 0) ran.count_down();
    return sched::handler_result::success();
  });
  node.start();

  pg::connection app = test::test_connect("sluice-producers-app");
  app.exec("CREATE TABLE " + env_->q("orders") + " (id int PRIMARY KEY)");

  // Rolled back: neither the order nor the task.
  {
    pg::transaction tx(app);
    app.query("INSERT INTO " + env_->q("orders") + " VALUES ($1)", 1);
    const auto added = sched::add_task(tx, keyed("order:1"), env_->schema());
    EXPECT_TRUE(added.created());
    tx.rollback();
  }
  EXPECT_EQ(task_count(), 0);
  EXPECT_EQ(env_->scalar("SELECT count(*) FROM " + env_->q("orders")), 0);

  // Committed: both, and the task runs.
  std::int64_t id = 0;
  {
    pg::transaction tx(app);
    app.query("INSERT INTO " + env_->q("orders") + " VALUES ($1)", 2);
    sched::task_spec spec = keyed("order:2");
    id = sched::add_task(tx, spec, env_->schema()).id;
    EXPECT_EQ(task_count(), 0) << "visible before COMMIT";
    tx.commit();
  }
  EXPECT_EQ(task_count("id = " + std::to_string(id)), 1);
  EXPECT_TRUE(test::wait_for_state(env_->store(), id, sched::task_state::succeeded, 20s));
  ran.wait();
  node.stop();
  EXPECT_EQ(runs.load(), 1);

  // A cron task in a zone needs two statements; they share the caller's transaction too.
  {
    pg::transaction tx(app);
    sched::task_spec spec = keyed("zoned");
    spec.when = sched::schedule::cron("0 4 * * *", "Europe/Berlin");
    const auto zoned = sched::add_task(tx, spec, env_->schema());
    tx.rollback();
    EXPECT_FALSE(env_->store().get(zoned.id));
  }
  // On a connection outside a transaction, add_task makes its own.
  sched::task_spec spec = keyed("zoned");
  spec.when = sched::schedule::cron("0 4 * * *", "Europe/Berlin");
  const auto own = sched::add_task(app, spec, env_->schema());
  EXPECT_EQ(app.tx_status(), pg::transaction_status::idle);
  EXPECT_EQ(env_->store().get(own.id)->timezone, "Europe/Berlin");
}

// ---- the SQL API's JSON form ----------------------------------------------------------------

// The SQLSTATE and message of the error `statement` raises; empty when it succeeds.
std::pair<std::string, std::string> error_of(pg::connection& c, const std::string& statement,
                                             const std::string& arg) {
  try {
    c.query(statement, arg);
  } catch (const pg::sql_error& e) {
    return {e.sqlstate(), e.message()};
  }
  return {};
}

TEST_F(Producers, AddTasksTakesTheTaskJsonOfTheApi) {
  sched::store& store = env_->store();
  const auto at = sched::parse_timestamp("2030-01-02T03:04:05.25Z");
  const std::vector<sched::schedule> schedules = {
      sched::schedule::once(system_clock::time_point{}), sched::schedule::once(at),
      sched::schedule::every(90s), sched::schedule::every(1h, at)};
  json tasks = json::array();
  std::vector<sched::task> originals;
  for (std::size_t i = 0; i < schedules.size(); ++i) {
    sched::task_spec spec = test::due_now("report.daily");
    spec.when = schedules[i];
    spec.payload = R"({"n": )" + std::to_string(i) + "}";
    spec.priority = 9;
    spec.max_attempts = 4;
    spec.timeout = 1500ms;
    spec.misfire = sched::misfire_policy::catch_up;
    spec.unique_key = "json:" + std::to_string(i);
    originals.push_back(*store.get(store.create(spec)));
    ASSERT_EQ(store.cancel(originals.back().id), sched::change_result::done);  // frees the key
    originals.back() = *store.get(originals.back().id);
    tasks.push_back(http::json_of(originals.back()));  // read-only fields and all
  }
  const auto before = system_clock::now();
  const auto res = env_->sql().query("SELECT unnest(" + env_->q("add_tasks") + "($1::jsonb))",
                                     http::dump(tasks));
  ASSERT_EQ(res.rows(), static_cast<int>(schedules.size()));
  for (std::size_t i = 0; i < schedules.size(); ++i) {
    const auto copy = store.get(res[static_cast<int>(i)].get<std::int64_t>(0));
    ASSERT_TRUE(copy);
    const sched::task& o = originals[i];
    EXPECT_EQ(copy->parsed_schedule(), o.parsed_schedule()) << i;
    EXPECT_EQ(copy->state, sched::task_state::scheduled) << "state is not the producer's to set";
    EXPECT_EQ(copy->payload, o.payload);
    EXPECT_EQ(copy->priority, 9);
    EXPECT_EQ(copy->max_attempts, 4);
    EXPECT_EQ(copy->timeout_ms, 1500);
    EXPECT_EQ(copy->misfire_policy, "catch_up");
    EXPECT_EQ(copy->unique_key, o.unique_key);
  }
  // The unanchored interval runs one period from now, as when the API adds it.
  const auto unanchored = store.get(res[2].get<std::int64_t>(0));
  EXPECT_GE(*unanchored->next_run_at, before + 90s - 1s);
  EXPECT_EQ(unanchored->schedule_spec, "1m30s");

  // The one-string forms, and refusals that name the field.
  const std::string add = "SELECT " + env_->q("add_tasks") + "($1::jsonb)";
  EXPECT_EQ(error_of(env_->sql(), add,
                     R"([{"type":"t","schedule":"every:5m@2026-01-01T00:00:00Z"},)"
                     R"({"type":"t","schedule":"once:2030-01-01T00:00:00Z"}])")
                .first,
            "");
  const std::vector<std::pair<std::string, std::string>> refused = {
      {R"([{"type":"t","schedule":{"kind":"once"},"run_at":"2030-01-01T00:00:00Z"}])",
       "tasks[0]: schedule: give either schedule or run_at / every / cron"},
      {R"([{"type":"t","schedule":{"kind":"once","at":"2030-01-01T00:00:00Z","text":"once:x"}}])",
       "tasks[0]: schedule.text: 'once:x' is not the schedule the other fields give"},
      {R"([{"type":"t","schedule":{"kind":"weekly"}}])",
       "tasks[0]: schedule.kind: 'weekly' is not one of once, interval, cron"},
      {R"([{"type":"t","schedule":{"kind":"once","every":"5s"}}])",
       "tasks[0]: unknown field 'schedule.every' for a once schedule"},
      {R"([{"type":"t","schedule":{"kind":"interval"}}])", "tasks[0]: schedule.every: required"},
      {R"([{"type":"t","schedule":"sometimes"}])", "tasks[0]: schedule: 'sometimes' is not a"},
      {R"([{"type":"t","schedule":{"kind":"once","at":"soon"}}])",
       "tasks[0]: schedule.at: 'soon' is not a time"},
      {R"([{"type":"t","stat":"paused"}])", "tasks[0]: unknown field 'stat'"},
  };
  for (const auto& [body, message] : refused) {
    const auto [state, got] = error_of(env_->sql(), add, body);
    EXPECT_EQ(state, "22023") << body << ": " << got;
    EXPECT_EQ(got.substr(0, message.size()), message) << body;
  }
  const auto [cron_state, cron_message] =
      error_of(env_->sql(), add, R"([{"type":"t","schedule":{"kind":"cron","expr":"* * * * *"}}])");
  EXPECT_EQ(cron_state, "0A000") << cron_message;
}

// ---- HTTP ---------------------------------------------------------------------------------------

class ProducersHttp : public Producers {
 protected:
  void SetUp() override {
    Producers::SetUp();
    pools_ = std::make_unique<pool::pool_manager>();
    scheduler_ = std::make_unique<sched::scheduler>(env_->settings(2), env_->lane(), pools_.get());
    // A type no test adds: the tasks posted here stay live (unclaimed), so their keys stay held.
    scheduler_->handle("producers.unused",
                       [](sched::task_context&) { return sched::handler_result::success(); });
    scheduler_->start();
    app_ = std::make_unique<http::app>(http::app{*pools_,
                                                 env_->lane(),
                                                 *scheduler_,
                                                 env_->store(),
                                                 {},
                                                 {},
                                                 "9.9.9-test",
                                                 std::chrono::steady_clock::now()});
    http::server_settings s;
    s.port = 0;
    s.token = token;
    s.threads = 8;
    server_ = std::make_unique<http::server>(s, *app_);
    server_->start();
  }

  void TearDown() override {
    server_.reset();
    scheduler_.reset();
    app_.reset();
    pools_.reset();
  }

  [[nodiscard]] std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", server_->port());
    c->set_read_timeout(30, 0);
    c->set_connection_timeout(5, 0);
    return c;
  }

  httplib::Result post(httplib::Client& c, const std::string& body,
                       const std::optional<std::string>& idempotency_key = std::nullopt) {
    httplib::Headers headers{{"Authorization", std::string("Bearer ") + token}};
    if (idempotency_key) headers.emplace("Idempotency-Key", *idempotency_key);
    return c.Post("/api/v1/tasks", headers, body, "application/json");
  }

  static json body(const httplib::Result& r) {
    if (!r) return nullptr;
    json j = json::parse(r->body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r->body;
    return j;
  }

  // The fields a producer sets: the task's JSON without what the scheduler writes.
  static json spec_fields(json task) {
    for (const char* k :
         {"id", "state", "next_run_at", "attempt", "claim_token", "claimed_by", "claimed_at",
          "lease_until", "fire_time", "last_error", "last_run_at", "last_success_at",
          "consecutive_failures", "runs", "created_at", "updated_at", "upstream", "downstream"}) {
      task.erase(k);
    }
    return task;
  }

  std::unique_ptr<pool::pool_manager> pools_;
  std::unique_ptr<sched::scheduler> scheduler_;
  std::unique_ptr<http::app> app_;
  std::unique_ptr<http::server> server_;
};

TEST_F(ProducersHttp, IdempotencyKeyGivesTheSameTaskBackWith200) {
  auto c = client();
  const auto first = post(*c, R"({"type":"mail","payload":{"v":1}})", "req-7f3a");
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 201) << first->body;
  const json created = body(first);
  EXPECT_EQ(created["unique_key"], "req-7f3a");
  EXPECT_EQ(first->get_header_value("Sluice-Task-Outcome"), "created");

  const auto again = post(*c, R"({"type":"mail","payload":{"v":2}})", "req-7f3a");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200) << again->body;
  EXPECT_EQ(again->get_header_value("Sluice-Task-Outcome"), "existing");
  EXPECT_EQ(again->get_header_value("Location"),
            "/api/v1/tasks/" + std::to_string(created["id"].get<std::int64_t>()));
  const json same = body(again);
  EXPECT_EQ(same["id"], created["id"]);
  EXPECT_EQ(same["payload"]["v"], 1);

  // The same key in the body is the same thing; a different one is refused.
  const auto in_body = post(*c, R"({"type":"mail","unique_key":"req-7f3a"})", "req-7f3a");
  ASSERT_TRUE(in_body);
  EXPECT_EQ(in_body->status, 200) << in_body->body;
  const auto differs = post(*c, R"({"type":"mail","unique_key":"other"})", "req-7f3a");
  ASSERT_TRUE(differs);
  EXPECT_EQ(differs->status, 400) << differs->body;
  EXPECT_NE(differs->body.find("Idempotency-Key"), std::string::npos) << differs->body;
  const auto too_long = post(*c, R"({"type":"mail"})", std::string(201, 'k'));
  ASSERT_TRUE(too_long);
  EXPECT_EQ(too_long->status, 400) << too_long->body;
  const auto not_ascii = post(*c, R"({"type":"mail"})", "schl\xc3\xbcssel");
  ASSERT_TRUE(not_ascii);
  EXPECT_EQ(not_ascii->status, 400) << not_ascii->body;
  httplib::Headers twice{{"Authorization", std::string("Bearer ") + token},
                         {"Idempotency-Key", "a"},
                         {"Idempotency-Key", "b"}};
  const auto doubled = c->Post("/api/v1/tasks", twice, R"({"type":"mail"})", "application/json");
  ASSERT_TRUE(doubled);
  EXPECT_EQ(doubled->status, 400) << doubled->body;
  EXPECT_NE(doubled->body.find("given more than once"), std::string::npos) << doubled->body;
  EXPECT_EQ(task_count(), 1);
}

TEST_F(ProducersHttp, UniqueKeyInTheBodyKeepsOrReplaces) {
  auto c = client();
  const auto first = post(*c, R"({"type":"mail","unique_key":"user:7","payload":{"v":1}})");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->status, 201) << first->body;
  const auto replaced =
      post(*c, R"({"type":"mail","unique_key":"user:7","on_conflict":"replace","payload":{"v":3},)"
               R"("schedule":{"kind":"cron","expr":"0 9 * * *","tz":"Europe/Berlin"}})");
  ASSERT_TRUE(replaced);
  EXPECT_EQ(replaced->status, 200) << replaced->body;
  EXPECT_EQ(replaced->get_header_value("Sluice-Task-Outcome"), "replaced");
  const json t = body(replaced);
  EXPECT_EQ(t["id"], body(first)["id"]);
  EXPECT_EQ(t["payload"]["v"], 3);
  EXPECT_EQ(t["schedule"]["tz"], "Europe/Berlin");
  EXPECT_EQ(t["schedule"]["expr"], "0 9 * * *");

  const auto bad_mode = post(*c, R"({"type":"mail","unique_key":"user:7","on_conflict":"merge"})");
  ASSERT_TRUE(bad_mode);
  EXPECT_EQ(bad_mode->status, 400);
  EXPECT_NE(bad_mode->body.find("on_conflict"), std::string::npos) << bad_mode->body;
  const auto bad_key = post(*c, R"({"type":"mail","unique_key":""})");
  ASSERT_TRUE(bad_key);
  EXPECT_EQ(bad_key->status, 400);
  EXPECT_NE(bad_key->body.find("unique_key"), std::string::npos) << bad_key->body;
  EXPECT_EQ(task_count(), 1);
}

TEST_F(ProducersHttp, TwelveClientsRacingOnOneIdempotencyKeyCreateOneTask) {
  constexpr int clients = 12;
  std::vector<int> statuses(clients, 0);
  std::vector<std::int64_t> ids(clients, 0);
  std::latch start(clients);
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; ++i) {
    threads.emplace_back([&, i] {
      const auto at = static_cast<std::size_t>(i);
      auto c = client();
      start.arrive_and_wait();
      const auto r = post(*c, R"({"type":"race","payload":{"client":)" + std::to_string(i) + "}}",
                          "race-key-1");
      if (!r) return;
      statuses[at] = r->status;
      const json j = json::parse(r->body, nullptr, false);
      if (j.is_object() && j.contains("id")) ids[at] = j["id"].get<std::int64_t>();
    });
  }
  for (auto& t : threads)
    t.join();
  int created = 0;
  for (std::size_t i = 0; i < statuses.size(); ++i) {
    EXPECT_TRUE(statuses[i] == 200 || statuses[i] == 201) << "client " << i << ": " << statuses[i];
    EXPECT_EQ(ids[i], ids[0]) << "client " << i;
    if (statuses[i] == 201) ++created;
  }
  EXPECT_EQ(created, 1);
  EXPECT_EQ(task_count(), 1);
}

TEST_F(ProducersHttp, ATasksJsonPostsBackAsItIs) {
  auto c = client();
  const auto made =
      post(*c, R"({"type":"report","payload":{"region":"eu","n":[1,2]},)"
               R"("schedule":{"kind":"cron","expr":"15 4 * * MON","tz":"Europe/Berlin"},)"
               R"("priority":9,"max_attempts":4,"timeout_ms":1500,)"
               R"("backoff_base_ms":20,"backoff_cap_ms":900,"misfire_policy":"catch_up",)"
               R"("misfire_grace_s":30,"catch_up_limit":3,"pause_after_failures":2})");
  ASSERT_TRUE(made);
  ASSERT_EQ(made->status, 201) << made->body;
  const auto id = body(made)["id"].get<std::int64_t>();
  const auto got = c->Get("/api/v1/tasks/" + std::to_string(id));
  ASSERT_TRUE(got);
  ASSERT_EQ(got->status, 200);

  const auto copy = post(*c, got->body);
  ASSERT_TRUE(copy);
  ASSERT_EQ(copy->status, 201) << copy->body;
  const json copied = body(copy);
  EXPECT_NE(copied["id"], id);
  EXPECT_EQ(spec_fields(copied), spec_fields(body(got)));

  // Every schedule kind, and a key: the key's task comes back.
  for (const std::string schedule :
       {R"({"kind":"once","at":"2030-01-02T03:04:05.5Z"})", R"({"kind":"once"})",
        R"({"kind":"interval","every":"1h30m"})",
        R"({"kind":"interval","every":90,"anchor":"2026-01-01T00:00:00Z"})"}) {
    const auto r = post(*c, R"({"type":"report","schedule":)" + schedule + "}");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 201) << schedule << ": " << r->body;
    const auto shown = c->Get("/api/v1/tasks/" + std::to_string(body(r)["id"].get<std::int64_t>()));
    ASSERT_TRUE(shown);
    const auto again = post(*c, shown->body);
    ASSERT_TRUE(again);
    ASSERT_EQ(again->status, 201) << shown->body << ": " << again->body;
    EXPECT_EQ(spec_fields(body(again)), spec_fields(body(shown))) << schedule;
  }

  // "text" must agree with the fields beside it.
  json edited = body(got);
  edited["schedule"]["expr"] = "0 5 * * MON";
  const auto disagreeing = post(*c, edited.dump());
  ASSERT_TRUE(disagreeing);
  EXPECT_EQ(disagreeing->status, 400) << disagreeing->body;
  EXPECT_NE(disagreeing->body.find("schedule.text"), std::string::npos) << disagreeing->body;
}

// `sluice task show --json` prints what GET prints; POSTed, it makes the same task again (or,
// with its unique key, answers with the task itself).
std::string run_show_json(const std::string& schema, std::int64_t id) {
  const std::string command = std::string(SLUICE_BINARY_DIR) + "/sluice task show " +
                              std::to_string(id) + " --json --schema " + schema + " 2>&1";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("cannot run " + command);
  std::string out;
  std::array<char, 4096> buf{};
  while (const std::size_t n = std::fread(buf.data(), 1, buf.size(), pipe.get()))
    out.append(buf.data(), n);
  return out;
}

TEST_F(ProducersHttp, TheClisShowJsonPostsBackAsItIs) {
  sched::task_spec spec = test::due_now("report");
  spec.when = sched::schedule::cron("0 3 * * *", "Europe/Berlin");
  spec.payload = R"({"a": 1})";
  spec.priority = 5;
  const auto id = env_->store().create(spec);
  const std::string shown = run_show_json(env_->schema(), id);
  const json from_cli = json::parse(shown, nullptr, false);
  ASSERT_TRUE(from_cli.is_object()) << shown;
  EXPECT_EQ(from_cli["schedule"]["tz"], "Europe/Berlin");
  EXPECT_EQ(from_cli["schedule"]["expr"], "0 3 * * *");

  auto c = client();
  const auto got = c->Get("/api/v1/tasks/" + std::to_string(id));
  ASSERT_TRUE(got);
  // The API's detail adds the task's graph relations (upstream, downstream) to the one task
  // JSON; everything else is the same, field for field.
  auto from_api = body(got);
  EXPECT_EQ(from_api["upstream"], json::array());
  EXPECT_EQ(from_api["downstream"], json::array());
  from_api.erase("upstream");
  from_api.erase("downstream");
  EXPECT_EQ(from_cli, from_api) << "the CLI and the API print one task JSON";

  const auto posted = post(*c, shown);
  ASSERT_TRUE(posted);
  ASSERT_EQ(posted->status, 201) << posted->body;
  EXPECT_EQ(spec_fields(body(posted)), spec_fields(from_cli));

  const auto keyed_id = env_->store().create(keyed("cli:1"));
  const auto keyed_posted = post(*c, run_show_json(env_->schema(), keyed_id));
  ASSERT_TRUE(keyed_posted);
  EXPECT_EQ(keyed_posted->status, 200) << keyed_posted->body;
  EXPECT_EQ(body(keyed_posted)["id"], keyed_id);
}

}  // namespace
