// The reliability suite (docs/reliability.md): several real `sluice serve` processes on one fresh
// database, thousands of one-shot transactional sql tasks that each insert their id into a
// ledger (UNIQUE on task_id) in the same transaction that completes the task, and a fault
// injected while they run. Afterwards every scenario checks the same promises:
//   - every task succeeded exactly once: ledger rows = tasks, one succeeded run per task;
//   - none is lost: every task is terminal (succeeded), none left running;
//   - the cumulative stats table equals the run history (per outcome and type);
//   - no node held more server connections than its budget (pg_stat_activity, sampled by a
//     thread of the test, grouped by the node's application_name prefix).
//
// Scenario length: SLUICE_REL_SECONDS (fault phase, default 12) and SLUICE_REL_TASKS (default
// 2000) make a soak run longer (scripts in docs/reliability.md).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <unistd.h>

#include "support/daemon_process.hpp"
#include "support/pg_test_env.hpp"
#include "support/sched_test_env.hpp"
#include "support/temp_cluster.hpp"

namespace test = sluice::test;
namespace pg = sluice::pg;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

// CPU time (user + system) a process has used so far, from /proc/<pid>/stat; 0 if unreadable.
double cpu_seconds(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return 0;
  char buf[1024];
  const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // Fields after the command name, which is in parentheses and may hold spaces: state is field
  // 3, utime 14 and stime 15.
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return 0;
  std::istringstream in(p + 2);
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int k = 3; k <= 15 && (in >> field); ++k) {
    if (k == 14) utime = std::stoull(field);
    if (k == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

constexpr const char* token = "reliability-token-0123456789";

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  return std::atoi(v);
}

int task_count() {
  return env_int("SLUICE_REL_TASKS", 2000);
}
std::chrono::seconds fault_seconds() {
  return std::chrono::seconds(env_int("SLUICE_REL_SECONDS", 12));
}

// Connections a node may hold: pools.app (3 + 1) + lane (2 + 1) + LISTEN 1. Also given to the
// daemon as database.connection_budget, so a configuration that could exceed it cannot start.
constexpr int app_size = 3;
constexpr int app_overflow = 1;
constexpr int lane_size = 2;
constexpr int lane_overflow = 1;
constexpr int node_budget = app_size + app_overflow + lane_size + lane_overflow + 1;

struct node_knobs {
  int workers = 4;
  std::string extra;  // whole tables appended to the file
};

std::string node_config(const std::string& name, const node_knobs& k) {
  std::ostringstream s;
  s << "[database]\n"
       "connect_timeout = \"2s\"\n"
       "application_name_prefix = \""
    << name << "\"\nconnection_budget = " << node_budget << "\n\n[pools.app]\nsize = " << app_size
    << "\nmax_overflow = " << app_overflow
    << "\ntimeout = \"3s\"\n\n"
       "[scheduler]\nnode_id = \""
    << name << "\"\nworkers = " << k.workers
    << "\n"
       "poll_interval = \"100ms\"\n"
       "idle_poll_max = \"300ms\"\n"
       "heartbeat_interval = \"300ms\"\n"
       "node_expiry = \"2s\"\n"
       "stop_grace = \"5s\"\n"
       "stuck_grace = \"1s\"\n\n"
       "[scheduler.lane]\nsize = "
    << lane_size << "\nmax_overflow = " << lane_overflow
    << "\n\n[http]\naddress = \"127.0.0.1\"\nport = 0\ntoken = \"" << token
    << "\"\nsample_interval = \"200ms\"\n\n[log]\nlevel = \"info\"\n"
    << k.extra;
  return s.str();
}

// Samples pg_stat_activity of one database from its own thread: the most connections each node
// prefix held at once, and the most backends per node running a statement that contains
// `marker` (the handlers' concurrency).
class activity_sampler {
 public:
  activity_sampler(std::string conninfo, std::string datname, std::string marker = "")
      : conninfo_(std::move(conninfo)), datname_(std::move(datname)), marker_(std::move(marker)) {
    thread_ = std::thread([this] { loop(); });
  }
  activity_sampler(const activity_sampler&) = delete;
  activity_sampler& operator=(const activity_sampler&) = delete;
  ~activity_sampler() { stop(); }

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::map<std::string, int> peak_connections() const {
    const std::scoped_lock lock(mutex_);
    return peak_;
  }
  std::map<std::string, int> peak_marked() const {
    const std::scoped_lock lock(mutex_);
    return peak_marked_;
  }
  int samples() const { return samples_; }

 private:
  void loop() {
    std::unique_ptr<pg::connection> conn;
    while (!stop_) {
      try {
        if (!conn) {
          pg::connect_options o;
          o.conninfo = conninfo_;
          o.application_name = "sluice-test-sampler";
          o.connect_timeout = 2s;
          conn = std::make_unique<pg::connection>(pg::connection::open(o));
        }
        const auto res = conn->query(
            "SELECT split_part(application_name, '/', 1), count(*)::bigint,"
            " count(*) FILTER (WHERE state = 'active' AND $2 <> '' AND"
            "   strpos(query, $2) > 0)::bigint"
            " FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'rel%/%'"
            " GROUP BY 1",
            datname_, marker_);
        const std::scoped_lock lock(mutex_);
        for (const auto r : res) {
          const auto name = r.get<std::string>(0);
          peak_[name] = std::max(peak_[name], static_cast<int>(r.get<std::int64_t>(1)));
          peak_marked_[name] =
              std::max(peak_marked_[name], static_cast<int>(r.get<std::int64_t>(2)));
        }
        ++samples_;
      } catch (const std::exception&) {
        conn.reset();  // the server restarts or refuses: try again at the next sample
      }
      std::this_thread::sleep_for(20ms);
    }
  }

  std::string conninfo_, datname_, marker_;
  mutable std::mutex mutex_;
  std::map<std::string, int> peak_;         // guarded by mutex_
  std::map<std::string, int> peak_marked_;  // guarded by mutex_
  std::atomic<int> samples_{0};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class Reliability : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
  }

  // The scenario's database: a fresh one on the test cluster, or (temp) one on a private
  // throwaway cluster that the scenario may stop, restart and exhaust.
  void open_database(bool temp = false, test::temp_cluster_options o = {}) {
    if (temp) {
      ASSERT_TRUE(test::can_run_temp_cluster()) << "this scenario needs a private PostgreSQL 15: "
                                                << test::temp_cluster_unavailable_reason();
      cluster_ = std::make_unique<test::temp_cluster>(o);
      cluster_->connect().exec("CREATE DATABASE sluice_rel");
      datname_ = "sluice_rel";
      conninfo_ = cluster_->conninfo() + " dbname=sluice_rel";
    } else {
      db_ = std::make_unique<test::scoped_database>("sluice_rel");
      datname_ = db_->name();
      conninfo_ = db_->conninfo();
    }
    admin_ = connect("sluice-test-admin");
    admin_.exec(
        "CREATE TABLE public.ledger (task_id bigint NOT NULL UNIQUE, app text NOT NULL,"
        " at timestamptz NOT NULL DEFAULT clock_timestamp())");
  }

  void TearDown() override {
    if (sampler_) sampler_->stop();
    nodes_.clear();
    db_.reset();
    cluster_.reset();
  }

  [[nodiscard]] pg::connection connect(const std::string& application_name) const {
    pg::connect_options o;
    o.conninfo = conninfo_;
    o.application_name = application_name;
    o.connect_timeout = 10s;
    return pg::connection::open(o);
  }

  // Starts node `name`; the first one migrates the schema.
  test::daemon_process& start_node(const std::string& name, const node_knobs& k = {}) {
    test::daemon_options o;
    o.config = node_config(name, k);
    o.extra_args = {"--migrate"};
    o.env["DATABASE_URL"] = conninfo_;
    nodes_.push_back(std::make_unique<test::daemon_process>(o));
    return *nodes_.back();
  }

  void start_sampler(const std::string& marker = "") {
    sampler_ = std::make_unique<activity_sampler>(conninfo_, datname_, marker);
  }

  // `n` one-shot transactional sql tasks due evenly over `spread`, inserting into the ledger.
  // `sql` may replace the statement (it must insert the ledger row).
  void create_tasks(int n, milliseconds spread, const std::string& sql = "",
                    milliseconds timeout = 10s) {
    const std::string statement = sql.empty() ? "INSERT INTO public.ledger (task_id, app) VALUES"
                                                " (current_setting('sluice.task_id')::bigint,"
                                                " current_setting('application_name'))"
                                              : sql;
    const std::string payload =
        nlohmann::json({{"pool", "app"}, {"transactional", true}, {"sql", statement}}).dump();
    // Straight into the table: one INSERT is faster than thousands of API requests.
    const auto before_insert = steady_clock::now();  // no later than the server's now()
    admin_.query(
        "INSERT INTO sluice.tasks (type, payload, schedule_kind, schedule_spec, next_run_at,"
        " max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms)"
        " SELECT 'sql', $1::jsonb, 'once',"
        "   to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), t, 100, 100, 1000, $4"
        " FROM (SELECT now() + (i * $3::bigint / $2::bigint) * interval '1 millisecond' AS t"
        "       FROM generate_series(0, $2::bigint - 1) i) s",
        payload, static_cast<std::int64_t>(n), static_cast<std::int64_t>(spread.count()),
        static_cast<std::int64_t>(timeout.count()));
    tasks_ += n;
    last_due_ = std::max(last_due_, before_insert + spread);
  }

  std::int64_t scalar(const std::string& sql) { return admin_.query(sql).one<std::int64_t>(); }

  // Waits until no task is left to run (up to `settle` after the last task fell due, so that a
  // long soak's tasks due late in the phase are waited for), then checks every promise of the
  // suite.
  void expect_everything_done_exactly_once(milliseconds settle = 90s) {
    const auto started = std::max(steady_clock::now(), last_due_);
    const auto wait =
        std::chrono::duration_cast<milliseconds>(started - steady_clock::now()) + settle;
    const bool done = test::eventually(
        [&] {
          return scalar(
                     "SELECT count(*) FROM sluice.tasks WHERE state NOT IN "
                     "('succeeded', 'failed', 'cancelled')") == 0;
        },
        wait, 200ms);
    settle_time_ = std::chrono::duration_cast<milliseconds>(steady_clock::now() - started);
    if (sampler_) sampler_->stop();
    EXPECT_TRUE(done) << scalar(
                             "SELECT count(*) FROM sluice.tasks WHERE state NOT IN "
                             "('succeeded', 'failed', 'cancelled')")
                      << " tasks still not terminal";

    EXPECT_EQ(scalar("SELECT count(*) FROM sluice.tasks"), tasks_);
    EXPECT_EQ(scalar("SELECT count(*) FROM sluice.tasks WHERE state = 'succeeded'"), tasks_)
        << "lost or failed tasks";
    EXPECT_EQ(scalar("SELECT count(*) FROM sluice.tasks WHERE state = 'running'"), 0);
    EXPECT_EQ(scalar("SELECT count(*) FROM public.ledger"), tasks_) << "ledger rows != tasks";
    EXPECT_EQ(scalar("SELECT count(*) FROM public.ledger l JOIN sluice.tasks t ON t.id = "
                     "l.task_id AND t.state = 'succeeded'"),
              tasks_);
    EXPECT_EQ(scalar("SELECT count(*) FROM sluice.task_runs WHERE outcome = 'succeeded'"), tasks_)
        << "succeeded runs != tasks";
    EXPECT_EQ(scalar("SELECT count(*) FROM (SELECT task_id FROM sluice.task_runs WHERE outcome ="
                     " 'succeeded' GROUP BY task_id HAVING count(*) <> 1) d"),
              0)
        << "duplicate successes";
    // Stats equal the history, outcome by outcome and type by type.
    const auto mismatches = admin_.query(
        "SELECT coalesce(s.metric, h.metric) || '/' || coalesce(s.type, h.type) || ': stats ' ||"
        " coalesce(s.v, 0) || ' history ' || coalesce(h.v, 0)"
        " FROM (SELECT metric, type, sum(value)::bigint AS v FROM sluice.stats"
        "       WHERE metric LIKE 'runs\\_%' GROUP BY 1, 2) s"
        " FULL JOIN (SELECT 'runs_' || outcome AS metric, type, count(*)::bigint AS v"
        "            FROM sluice.task_runs GROUP BY 1, 2) h"
        " ON s.metric = h.metric AND s.type = h.type"
        " WHERE coalesce(s.v, 0) <> coalesce(h.v, 0)");
    for (const auto r : mismatches)
      ADD_FAILURE() << "stats differ from task_runs: " << r.get<std::string>(0);

    if (sampler_) {
      EXPECT_GT(sampler_->samples(), 0);
      for (const auto& [node, peak] : sampler_->peak_connections()) {
        EXPECT_LE(peak, node_budget) << node << " held more connections than its budget";
      }
    }
    report();
  }

  // One line of figures for docs/reliability.md.
  void report() {
    std::string runs;
    for (const auto r : admin_.query(
             "SELECT outcome || '=' || count(*) FROM sluice.task_runs GROUP BY outcome ORDER BY 1"))
      runs += r.get<std::string>(0) + " ";
    int peak = 0;
    if (sampler_)
      for (const auto& [node, p] : sampler_->peak_connections())
        peak = std::max(peak, p);
    std::printf(
        "[figures] %s: tasks=%lld ledger=%lld duplicate_successes=%lld lost=%lld runs: %s"
        "faults=%d peak_connections=%d/%d settle_ms=%lld recover_ms=%lld\n",
        ::testing::UnitTest::GetInstance()->current_test_info()->name(),
        static_cast<long long>(tasks_),
        static_cast<long long>(scalar("SELECT count(*) FROM public.ledger")),
        static_cast<long long>(
            scalar("SELECT count(*) FROM (SELECT task_id FROM sluice.task_runs WHERE outcome ="
                   " 'succeeded' GROUP BY task_id HAVING count(*) > 1) d")),
        static_cast<long long>(
            scalar("SELECT count(*) FROM sluice.tasks WHERE state <> 'succeeded'")),
        runs.c_str(), faults_, peak, node_budget, static_cast<long long>(settle_time_.count()),
        static_cast<long long>(recover_time_.count()));
    std::fflush(stdout);
  }

  // The tasks node `name` is running now.
  std::vector<std::int64_t> running_on(const std::string& name) {
    std::vector<std::int64_t> ids;
    for (const auto r : admin_.query(
             "SELECT id FROM sluice.tasks WHERE state = 'running' AND claimed_by = $1", name))
      ids.push_back(r.get<std::int64_t>(0));
    return ids;
  }

  std::string id_list(const std::vector<std::int64_t>& ids) {
    std::string out = "{";
    for (const auto id : ids)
      out += (out.size() > 1 ? "," : "") + std::to_string(id);
    return out + "}";
  }

  std::unique_ptr<test::temp_cluster> cluster_;  // declared first: destroyed last
  std::unique_ptr<test::scoped_database> db_;
  std::string datname_;
  std::string conninfo_;
  pg::connection admin_;
  std::vector<std::unique_ptr<test::daemon_process>> nodes_;
  std::unique_ptr<activity_sampler> sampler_;
  std::int64_t tasks_ = 0;
  int faults_ = 0;
  milliseconds settle_time_{0};  // from the later of the call and the last due time
  steady_clock::time_point last_due_{};
  milliseconds recover_time_{0};
};

// 1. pg_terminate_backend() of every sluice backend every half second while tasks run.
TEST_F(Reliability, KilledBackends) {
  open_database();
  start_node("rela");
  start_node("relb");
  start_sampler();
  const auto phase = fault_seconds();
  create_tasks(task_count(), phase);
  auto killer = connect("sluice-test-killer");
  const auto end = steady_clock::now() + phase;
  while (steady_clock::now() < end) {
    faults_ += static_cast<int>(
        killer
            .query("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::bigint FROM "
                   "pg_stat_activity WHERE datname = $1 AND application_name LIKE 'rel%/%'",
                   datname_)
            .one<std::int64_t>());
    std::this_thread::sleep_for(500ms);
  }
  EXPECT_GT(faults_, 0);
  const auto after = steady_clock::now();
  // Work resumes by itself: the next success after the last kill.
  const auto before = scalar("SELECT count(*) FROM public.ledger");
  EXPECT_TRUE(test::eventually(
      [&] {
        return scalar("SELECT count(*) FROM public.ledger") > before || before == task_count();
      },
      30s, 50ms));
  recover_time_ = std::chrono::duration_cast<milliseconds>(steady_clock::now() - after);
  expect_everything_done_exactly_once();
  for (auto& n : nodes_) {
    EXPECT_TRUE(n->running()) << "a node died:\n" << n->log();
    EXPECT_EQ(n->get("/ready").status, 200);
  }
}

// 4. kill -9 of a node with running tasks: the others run them within the heartbeat expiry.
TEST_F(Reliability, NodeDeath) {
  open_database();
  start_node("rela");
  start_node("relb");
  start_node("relc");
  start_sampler();
  const auto phase = fault_seconds();
  // Each task sleeps a little, so that a node always has some running.
  create_tasks(task_count(), phase,
               "INSERT INTO public.ledger (task_id, app) SELECT"
               " current_setting('sluice.task_id')::bigint, current_setting('application_name')"
               " FROM pg_sleep(0.02)");
  std::vector<std::int64_t> orphans;
  ASSERT_TRUE(test::eventually(
      [&] {
        orphans = running_on("rela");
        return !orphans.empty();
      },
      20s, 10ms));
  nodes_[0]->kill_now();
  ++faults_;
  const auto killed = steady_clock::now();
  // node_expiry is 2 s: rescued and finished by the others well within 2 s + a cycle + a retry.
  const std::string ids = id_list(orphans);
  EXPECT_TRUE(test::eventually(
      [&] {
        return scalar("SELECT count(*) FROM sluice.tasks WHERE id = ANY('" + ids +
                      "'::bigint[]) AND state = 'succeeded'") ==
               static_cast<std::int64_t>(orphans.size());
      },
      15s, 50ms))
      << "the dead node's tasks " << ids << " were not finished by the others";
  recover_time_ = std::chrono::duration_cast<milliseconds>(steady_clock::now() - killed);
  EXPECT_LT(recover_time_, 10s);
  EXPECT_GE(scalar("SELECT count(*) FROM sluice.task_runs WHERE outcome = 'rescued'"), 1);
  expect_everything_done_exactly_once();
}

// 5. SIGSTOP a node past its lease: another rescues and finishes its tasks; after SIGCONT its
// stale completions are refused by the claim token and nothing succeeds twice.
TEST_F(Reliability, StalledNode) {
  open_database();
  start_node("rela");
  start_node("relb");
  start_sampler();
  const auto phase = fault_seconds();
  create_tasks(task_count(), phase,
               "INSERT INTO public.ledger (task_id, app) SELECT"
               " current_setting('sluice.task_id')::bigint, current_setting('application_name')"
               " FROM pg_sleep(0.02)");
  std::vector<std::int64_t> held;
  ASSERT_TRUE(test::eventually(
      [&] {
        held = running_on("rela");
        return !held.empty();
      },
      20s, 5ms));
  nodes_[0]->send_signal(SIGSTOP);
  ++faults_;
  const auto stopped = steady_clock::now();
  const std::string ids = id_list(held);
  // Rescued: no longer running under the stopped node's claim.
  const bool rescued = test::eventually(
      [&] {
        return scalar("SELECT count(*) FROM sluice.tasks WHERE id = ANY('" + ids +
                      "'::bigint[]) AND state = 'running' AND claimed_by = 'rela'") == 0;
      },
      15s, 50ms);
  recover_time_ = std::chrono::duration_cast<milliseconds>(steady_clock::now() - stopped);
  EXPECT_TRUE(rescued) << "the stalled node's tasks " << ids << " were not rescued";
  // Stay stopped past the rescue so that its stale work is really stale, then wake it.
  std::this_thread::sleep_for(1s);
  nodes_[0]->send_signal(SIGCONT);
  expect_everything_done_exactly_once();
  EXPECT_GE(scalar("SELECT count(*) FROM sluice.task_runs WHERE outcome = 'rescued'"), 1);
  EXPECT_TRUE(nodes_[0]->running());
}

// 6. Slow handlers overrunning their timeout under load: stopped, retried, and never more
// than the per-type concurrency at once on a node (sampled from pg_stat_activity).
TEST_F(Reliability, SlowHandlersAndTimeouts) {
  open_database();
  node_knobs k;
  k.workers = 4;
  k.extra = "[scheduler.concurrency]\nsql = 2\n";
  start_node("rela", k);
  start_node("relb", k);
  start_sampler("rel-slow-marker");
  const int n = std::max(1, task_count() / 8);  // slow tasks: fewer
  // Every third task sleeps 1.5 s on its first attempt, past its 400 ms timeout.
  create_tasks(n, fault_seconds(),
               "INSERT INTO public.ledger (task_id, app) SELECT"
               " current_setting('sluice.task_id')::bigint, current_setting('application_name')"
               " FROM pg_sleep(CASE WHEN current_setting('sluice.task_id')::bigint % 3 = 0 AND"
               " (SELECT attempt FROM sluice.tasks WHERE id ="
               " current_setting('sluice.task_id')::bigint) = 1 THEN 1.5 ELSE 0.01 END)"
               " /* rel-slow-marker */",
               400ms);
  expect_everything_done_exactly_once();
  EXPECT_GE(scalar("SELECT count(*) FROM sluice.task_runs WHERE outcome IN ('timed_out',"
                   " 'failed')"),
            n / 3 - 1)
      << "the slow first attempts did not time out";
  const auto marked = sampler_->peak_marked();
  int seen = 0;
  for (const auto& [node, peak] : marked) {
    EXPECT_LE(peak, 2) << node << " ran more sql handlers at once than [scheduler.concurrency]";
    seen = std::max(seen, peak);
  }
  EXPECT_GE(seen, 1) << "the sampler never saw a handler running";
  std::printf("[figures] SlowHandlersAndTimeouts: peak concurrent sql handlers per node=%d/2\n",
              seen);
}

// 7. Rolling SIGTERM of each node in turn while tasks run: nothing lost or stuck in running.
TEST_F(Reliability, RollingRestart) {
  open_database();
  start_node("rela");
  start_node("relb");
  start_node("relc");
  start_sampler();
  const auto phase = fault_seconds();
  create_tasks(task_count(), phase,
               "INSERT INTO public.ledger (task_id, app) SELECT"
               " current_setting('sluice.task_id')::bigint, current_setting('application_name')"
               " FROM pg_sleep(0.01)");
  const auto step = phase / 4;
  const std::vector<std::string> next = {"reld", "rele", "relf"};
  for (std::size_t i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(step);
    const auto code = nodes_[i]->stop(20s);
    ++faults_;
    EXPECT_EQ(code, 0) << "node " << i << " did not drain and exit cleanly:\n" << nodes_[i]->log();
    EXPECT_TRUE(running_on(i == 0 ? "rela" : i == 1 ? "relb" : "relc").empty());
    start_node(next[i]);
  }
  expect_everything_done_exactly_once();
}

// Polls `/ready` of every running node until each answers `status`; false after `timeout`.
// `last` gets the answer that did not match.
bool all_ready_status(std::vector<std::unique_ptr<test::daemon_process>>& nodes, int status,
                      milliseconds timeout, std::string* last = nullptr) {
  return test::eventually(
      [&] {
        for (auto& n : nodes) {
          if (!n->running()) continue;
          const auto r = test::http_request("GET", n->url("/ready"), {}, {}, 3s);
          if (r.status != status) {
            if (last != nullptr)
              *last = n->url("/ready") + " " + std::to_string(r.status) + " " + r.body + r.error;
            return false;
          }
        }
        return true;
      },
      timeout, 50ms);
}

// 2. Database restart: the server stops (fast) for a few seconds mid-run and starts again. The
// daemons stay up, /ready answers 503 while it is gone and 200 within seconds after, and the
// work resumes by itself. On a private cluster: the shared one must never be stopped.
TEST_F(Reliability, DatabaseRestart) {
  test::temp_cluster_options co;
  co.max_connections = 40;
  open_database(true, co);
  start_node("rela");
  start_node("relb");
  start_sampler();
  const auto phase = fault_seconds();
  create_tasks(task_count(), phase);
  std::this_thread::sleep_for(phase / 3);
  cluster_->stop(test::shutdown_mode::fast);
  ++faults_;
  std::string last;
  EXPECT_TRUE(all_ready_status(nodes_, 503, 10s, &last))
      << "/ready did not report the database gone: " << last;
  std::this_thread::sleep_for(std::chrono::seconds(env_int("SLUICE_REL_DOWN_SECONDS", 4)));
  for (auto& n : nodes_)
    EXPECT_TRUE(n->running()) << "a node exited while the database was down:\n" << n->log();
  EXPECT_EQ(nodes_[0]->get("/ready").status, 503);
  cluster_->start();
  const auto back = steady_clock::now();
  EXPECT_TRUE(all_ready_status(nodes_, 200, 15s, &last)) << "/ready did not recover: " << last;
  recover_time_ = std::chrono::duration_cast<milliseconds>(steady_clock::now() - back);
  EXPECT_LT(recover_time_, 10s);
  admin_ = connect("sluice-test-admin");
  expect_everything_done_exactly_once();
  for (auto& n : nodes_)
    EXPECT_TRUE(n->running());
}

// 3. Connection exhaustion: another process takes every free connection slot. sluice keeps
// working on the connections it holds, reports back-pressure in /ready and /metrics, keeps
// logging its check cycles, and returns to full speed once the slots are free.
TEST_F(Reliability, ConnectionExhaustion) {
  test::temp_cluster_options co;
  co.max_connections = 30;
  co.superuser_reserved_connections = 3;
  open_database(true, co);
  // The hog is no superuser, so the reserved slots stay for the test's admin connections.
  admin_.exec("CREATE ROLE hog LOGIN");
  node_knobs k;
  k.workers = 6;  // more workers than pools.app holds without overflow: it wants to grow
  start_node("rela", k);
  start_node("relb", k);
  start_sampler();
  const auto phase = fault_seconds();
  create_tasks(task_count(), phase * 2,
               "INSERT INTO public.ledger (task_id, app) SELECT"
               " current_setting('sluice.task_id')::bigint, current_setting('application_name')"
               " FROM pg_sleep(0.005)");
  std::this_thread::sleep_for(phase / 4);  // the pools are warm

  std::vector<pg::connection> hog;
  for (;;) {
    try {
      pg::connect_options o;
      o.conninfo = cluster_->conninfo("hog");
      o.application_name = "sluice-test-hog";
      o.connect_timeout = 5s;
      hog.push_back(pg::connection::open(o));
    } catch (const pg::error&) {
      break;  // every slot a non-superuser may take is taken
    }
  }
  faults_ = static_cast<int>(hog.size());
  ASSERT_GT(hog.size(), 0U);
  // A burst due at once: every worker wants a connection, more than the pools hold open, so
  // they try to grow into slots the hog has taken.
  create_tasks(300, 0ms,
               "INSERT INTO public.ledger (task_id, app) SELECT"
               " current_setting('sluice.task_id')::bigint, current_setting('application_name')"
               " FROM pg_sleep(0.1)");
  const auto cycles_at = [&](const std::string& node) {
    return scalar("SELECT count(*) FROM sluice.cycles WHERE node = '" + node + "'");
  };
  const auto ledger_before = scalar("SELECT count(*) FROM public.ledger");
  const auto cycles_a = cycles_at("rela");
  const auto cycles_b = cycles_at("relb");
  bool ready_saturated = false;
  bool metrics_saturated = false;
  bool api_saturated = false;  // what the dashboard's pool cards are drawn from
  std::vector<double> cpu_before;
  for (auto& n : nodes_)
    cpu_before.push_back(cpu_seconds(n->pid()));
  const auto held_from = steady_clock::now();
  const auto held_until = held_from + phase;
  while (steady_clock::now() < held_until) {
    for (auto& n : nodes_) {
      const auto p = n->get("/api/v1/pools");
      const auto pools = nlohmann::json::parse(p.body, nullptr, false);
      if (p.status == 200 && pools.is_object() && pools["pools"].is_array()) {
        for (const auto& pool : pools["pools"]) {
          if (pool.value("saturated", false) || pool.value("waiting", 0) > 0 ||
              pool.value("server_refusals", 0) > 0)
            api_saturated = true;
        }
      }
      const auto r = n->get("/ready");
      if (r.status == 503 && (r.body.find("saturated") != std::string::npos ||
                              r.body.find("exhausted") != std::string::npos))
        ready_saturated = true;
      const auto m = n->get("/metrics");
      std::istringstream lines(m.body);
      for (std::string line; std::getline(lines, line);) {
        const bool saturated = line.rfind("sluice_pool_saturated", 0) == 0;
        const bool refused = line.rfind("sluice_pool_server_refusals_total", 0) == 0;
        const bool waiting = line.rfind("sluice_pool_waiting_borrowers", 0) == 0;
        if ((saturated || refused || waiting) && line.size() > 2 &&
            line.substr(line.size() - 2) != " 0")
          metrics_saturated = true;
      }
    }
    std::this_thread::sleep_for(200ms);
  }
  const auto ledger_during = scalar("SELECT count(*) FROM public.ledger");
  EXPECT_GT(ledger_during, ledger_before) << "no work was done on the held connections";
  EXPECT_GT(cycles_at("rela"), cycles_a) << "rela stopped logging its check cycles";
  EXPECT_GT(cycles_at("relb"), cycles_b) << "relb stopped logging its check cycles";
  EXPECT_TRUE(ready_saturated) << "/ready never reported a saturated or exhausted pool";
  EXPECT_TRUE(metrics_saturated)
      << "/metrics never reported saturation, refusals or waiting borrowers";
  EXPECT_TRUE(api_saturated)
      << "/api/v1/pools (the dashboard's source) never showed saturation, refusals or waiting";
  // No spinning: a node that retried connects in a loop would burn a core. Working on its held
  // connections (handlers that sleep 0.1 s) and backing off costs a few percent of one.
  const double held_s = std::chrono::duration<double>(steady_clock::now() - held_from).count();
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const double share = (cpu_seconds(nodes_[i]->pid()) - cpu_before[i]) / held_s;
    std::printf("[figures] ConnectionExhaustion: node %zu used %.1f %% of one core while held\n", i,
                100 * share);
    EXPECT_LT(share, 0.5) << "node " << i << " used " << 100 * share
                          << " % of a core while the server was full: spinning?";
  }
  for (auto& n : nodes_)
    EXPECT_TRUE(n->running()) << n->log();

  hog.clear();
  const auto freed = steady_clock::now();
  std::string last;
  EXPECT_TRUE(all_ready_status(nodes_, 200, 20s, &last))
      << "/ready did not recover after the release: " << last;
  recover_time_ = std::chrono::duration_cast<milliseconds>(steady_clock::now() - freed);
  expect_everything_done_exactly_once();
}

}  // namespace
