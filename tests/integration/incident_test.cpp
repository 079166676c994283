// The seed's incident replayed end to end, scaled down from scripts/incident: the real
// `sluice serve` with examples/incident.toml (unchanged, apart from port 0 and the test's
// database) gets a burst of due tasks of the seed's three types, which the file maps to the
// built-in handlers ([types]), many more than there are connections. While they run, a
// connection of the test's own samples pg_stat_activity; every task must succeed and the
// daemon's server connections must never exceed the file's budget, in total or per pool. The
// seed's old pool settings, given through its own environment variables, must not start at all.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cli/config.hpp"
#include "sluice/sched/schedule.hpp"
#include "support/daemon_process.hpp"
#include "support/sched_test_env.hpp"

namespace test = sluice::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

const std::filesystem::path incident_file =
    std::filesystem::path(SLUICE_SOURCE_DIR) / "examples" / "incident.toml";

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The highest number of the daemon's connections to `db` seen in pg_stat_activity, in total
// and per application_name, sampled every 50 ms on a thread of its own until destroyed.
// The daemon's connections are named "sluice/<pool>"; the test's own are not.
class connection_sampler {
 public:
  explicit connection_sampler(const test::scoped_database& db)
      : conn_(db.connect("incident-sampler")), thread_([this] { run(); }) {}
  connection_sampler(const connection_sampler&) = delete;
  connection_sampler& operator=(const connection_sampler&) = delete;
  ~connection_sampler() { stop(); }

  void stop() {
    done_ = true;
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] int samples() const {
    const std::scoped_lock lock(mutex_);
    return samples_;
  }
  [[nodiscard]] int peak() const {
    const std::scoped_lock lock(mutex_);
    return peak_;
  }
  [[nodiscard]] std::map<std::string, int> peak_by_name() const {
    const std::scoped_lock lock(mutex_);
    return peak_by_name_;
  }
  [[nodiscard]] std::string error() const {
    const std::scoped_lock lock(mutex_);
    return error_;
  }

 private:
  void run() {
    while (!done_) {
      try {
        const auto r = conn_.query(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'sluice/%' "
            "GROUP BY application_name");
        int total = 0;
        const std::scoped_lock lock(mutex_);
        for (int i = 0; i < r.rows(); ++i) {
          const std::string name(r[i].text(0));
          const int n = static_cast<int>(r[i].get<std::int64_t>(1));
          total += n;
          peak_by_name_[name] = std::max(peak_by_name_[name], n);
        }
        peak_ = std::max(peak_, total);
        ++samples_;
      } catch (const std::exception& e) {
        const std::scoped_lock lock(mutex_);
        error_ = e.what();
        return;
      }
      std::this_thread::sleep_for(50ms);  // the sampling period, not a wait for an event
    }
  }

  sluice::pg::connection conn_;
  std::atomic<bool> done_{false};
  mutable std::mutex mutex_;
  int samples_ = 0;                          // guarded by mutex_
  int peak_ = 0;                             // guarded by mutex_
  std::map<std::string, int> peak_by_name_;  // guarded by mutex_
  std::string error_;                        // guarded by mutex_
  std::thread thread_;                       // last: started once the rest exists
};

json task_body(const std::string& type, const json& payload, const std::string& due_at) {
  return {{"type", type},
          {"payload", payload},
          {"schedule", {{"kind", "once"}, {"at", due_at}}},
          {"timeout_ms", 30000}};
}

TEST(Incident, BurstOfSeedTaskTypesStaysWithinTheBudget) {
  const auto cfg = sluice::cli::load_config(incident_file, {});
  ASSERT_TRUE(cfg.database.connection_budget.has_value());
  const int budget = *cfg.database.connection_budget;
  ASSERT_LE(cfg.connections_needed(), budget);
  ASSERT_FALSE(cfg.http.token.empty());

  test::scoped_database db("sluice_incident");
  {
    auto conn = db.connect("incident-setup");
    conn.exec(
        "CREATE TABLE oauth_tokens (account_id integer PRIMARY KEY, expires_at timestamptz NOT "
        "NULL, checked_at timestamptz)");
    conn.exec(
        "INSERT INTO oauth_tokens (account_id, expires_at) "
        "SELECT g, now() + g * interval '1 minute' FROM generate_series(1, 100) AS g");
    conn.exec(
        "CREATE TABLE monitoring_results (id bigserial PRIMARY KEY, check_name text NOT NULL, "
        "connections integer NOT NULL)");
  }

  test::daemon_options o;
  o.config = read_file(incident_file);
  o.extra_args = {"--migrate"};
  o.database = &db;
  o.env["SLUICE_HTTP_PORT"] = "0";
  test::daemon_process node(o);
  EXPECT_TRUE(node.wait_for_log(
      "task types run by built-in handlers: monitoring_task -> sql, oauth_token_check -> sql, "
      "website_analysis -> http",
      5s))
      << node.log();

  // All due at the same moment, a few seconds from now: by then every task exists, so the
  // scheduler faces the whole burst at once.
  constexpr int per_type = 200;
  const std::string due_at = sluice::sched::format_timestamp(
      std::chrono::ceil<std::chrono::seconds>(std::chrono::system_clock::now()) + 5s);
  connection_sampler sampler(db);
  for (int i = 0; i < per_type; ++i) {
    const json token_check = task_body(
        "oauth_token_check",
        {{"pool", "platform"},
         {"sql",
          "UPDATE oauth_tokens SET checked_at = now() WHERE account_id = $1 AND pg_sleep($2) IS "
          "NOT NULL RETURNING expires_at > now() AS valid"},
         {"params", {(i % 100) + 1, 0.02}}},
        due_at);
    const json site_analysis = task_body(
        "website_analysis",
        {{"method", "GET"}, {"url", node.url("/health")}, {"expect_status", {200}}}, due_at);
    const json monitoring = task_body(
        "monitoring_task",
        {{"pool", "user_data"},
         {"sql",
          "INSERT INTO monitoring_results (check_name, connections) SELECT $1, count(*) FROM "
          "pg_stat_activity, pg_sleep($2) WHERE datname = current_database()"},
         {"params", {"check-" + std::to_string(i), 0.02}}},
        due_at);
    for (const json* body : {&token_check, &site_analysis, &monitoring}) {
      const auto r = node.post("/api/v1/tasks", body->dump(), cfg.http.token);
      ASSERT_EQ(r.status, 201) << r.body;
    }
  }

  // A payload of an alias type is checked by its handler's rules when it is created.
  const auto bad = node.post(
      "/api/v1/tasks",
      json{{"type", "oauth_token_check"}, {"payload", {{"pool", "reports"}, {"sql", "SELECT 1"}}}}
          .dump(),
      cfg.http.token);
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("no pool named 'reports'"), std::string::npos) << bad.body;
  const auto bad_http = node.post(
      "/api/v1/tasks",
      json{{"type", "website_analysis"}, {"payload", {{"url", "ftp://example.com/"}}}}.dump(),
      cfg.http.token);
  EXPECT_EQ(bad_http.status, 400) << bad_http.body;

  auto conn = db.connect("incident-check");
  const auto unfinished = [&] {
    return conn
        .query(
            "SELECT count(*) FROM sluice.tasks "
            "WHERE state NOT IN ('succeeded', 'failed', 'cancelled')")
        .one<std::int64_t>();
  };
  EXPECT_TRUE(test::eventually([&] { return unfinished() == 0; }, 240s, 100ms))
      << unfinished() << " tasks unfinished\n"
      << node.log();
  sampler.stop();

  // Every task succeeded, each on its first run.
  const auto states =
      conn.query("SELECT type, state, count(*) FROM sluice.tasks GROUP BY 1, 2 ORDER BY 1, 2");
  std::map<std::string, std::int64_t> succeeded;
  for (int i = 0; i < states.rows(); ++i) {
    EXPECT_EQ(states[i].text(1), "succeeded") << states[i].text(0);
    if (states[i].text(1) == "succeeded") {
      succeeded[std::string(states[i].text(0))] = states[i].get<std::int64_t>(2);
    }
  }
  EXPECT_EQ(succeeded, (std::map<std::string, std::int64_t>{{"monitoring_task", per_type},
                                                            {"oauth_token_check", per_type},
                                                            {"website_analysis", per_type}}));
  EXPECT_EQ(conn.query("SELECT count(*) FROM sluice.task_runs WHERE outcome <> 'succeeded'")
                .one<std::int64_t>(),
            0);
  EXPECT_EQ(conn.query("SELECT count(*) FROM monitoring_results").one<std::int64_t>(), per_type);

  // The server never saw more of the daemon's connections than the budget allows, nor more
  // per pool than the pool's size + max_overflow. The sampler did see them (it counts).
  ASSERT_EQ(sampler.error(), "");
  EXPECT_GT(sampler.samples(), 10);
  EXPECT_GT(sampler.peak(), 0);
  EXPECT_LE(sampler.peak(), budget);
  EXPECT_LE(sampler.peak(), cfg.connections_needed() + 1);  // + the start-up probe, if seen
  for (const auto& [name, peak] : sampler.peak_by_name()) {
    // "sluice/serve" (the start-up probe, closed before the pools open) and
    // "sluice/scheduler/listen" (LISTEN) are one connection each.
    int limit = 1;
    if (name == "sluice/scheduler") limit = cfg.lane.max_connections();
    for (const auto& p : cfg.pools) {
      if (name == "sluice/" + p.name) limit = p.max_connections();
    }
    EXPECT_LE(peak, limit) << name;
  }
  EXPECT_GT(sampler.peak_by_name()["sluice/platform"], 0);
  EXPECT_GT(sampler.peak_by_name()["sluice/user_data"], 0);
  EXPECT_EQ(node.log().find("too many clients"), std::string::npos);

  EXPECT_EQ(node.stop(), 0) << node.log();
}

TEST(Incident, SeedsOldPoolSettingsAreRefusedAtStart) {
  test::scoped_database db("sluice_incident");
  test::daemon_options o;
  o.config = read_file(incident_file);
  o.database = &db;
  o.env["SLUICE_HTTP_PORT"] = "0";
  o.env["DB_POOL_SIZE"] = "20";
  o.env["DB_MAX_OVERFLOW"] = "30";
  o.wait_until_serving = false;
  test::daemon_process node(o);
  EXPECT_EQ(node.wait_exit(30s), 2) << node.log();
  const std::string log = node.log();
  EXPECT_NE(log.find("database.connection_budget: this process may hold up to 104 server "
                     "connections (platform 20+30, user_data 20+30, scheduler lane 2+1, "
                     "LISTEN 1), more than the budget of 40"),
            std::string::npos)
      << log;
  // Nothing connected: the check comes before the first connection.
  auto conn = db.connect("incident-check");
  EXPECT_EQ(conn.query("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                       "current_database() AND application_name LIKE 'sluice/%'")
                .one<std::int64_t>(),
            0);
}

}  // namespace
