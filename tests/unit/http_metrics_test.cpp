// The /metrics exposition rendered from a synthetic snapshot: valid by the checker in
// http_exposition_check.hpp (and by promtool when it is installed), with the families, labels
// and values the snapshot implies. The checker itself is tested on broken inputs so that a
// passing check means something.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <unistd.h>

#include "http/metrics.hpp"
#include "unit/http_exposition_check.hpp"

namespace http = sluice::http;
namespace pool = sluice::pool;
namespace sched = sluice::sched;
namespace test = sluice::test;

namespace {

pool::pool_stats make_pool(const std::string& name) {
  pool::pool_stats p;
  p.name = name;
  p.size = 5;
  p.max_overflow = 10;
  p.max = 15;
  p.open = 7;
  p.checked_in = 3;
  p.checked_out = 4;
  p.overflow = 2;
  p.waiting = 1;
  p.peak_checked_out = 9;
  p.saturated = true;
  p.connects = 12;
  p.connect_failures = 3;
  p.server_refusals = 2;
  p.checkouts = 100;
  p.timeouts = 4;
  p.invalidations = 5;
  p.recycles = 6;
  p.idle_closes = 7;
  p.pings_failed = 8;
  p.leaks = 9;
  // 100 checkouts spread over a few buckets (per bucket, not cumulative).
  p.wait_bucket_counts[0] = 90;
  p.wait_bucket_counts[4] = 5;
  p.wait_bucket_counts[10] = 3;
  p.wait_bucket_counts[15] = 2;
  p.wait_sum_ms = 2500;
  return p;
}

http::metrics_snapshot make_snapshot() {
  http::metrics_snapshot m;
  m.version = "1.2.3";
  m.uptime_s = 42.5;
  m.pools = {make_pool("default"), make_pool("lane \"quoted\"\nname\\")};
  m.scheduler.state = sched::scheduler_state::running;
  m.scheduler.leader = true;
  m.scheduler.cycles = 77;
  m.scheduler.cycle_errors = 2;
  m.scheduler.workers = 8;
  m.scheduler.running = 3;
  m.scheduler.stuck = 1;
  m.last_cycle_age_s = 0.25;
  m.database_ok = true;
  sched::cumulative_stats st;
  st.totals = {{"cycles", 500}, {"runs_succeeded", 30}, {"runs_failed", 4}};
  st.by_type["runs_succeeded"] = {{"sql", 20}, {"http", 10}};
  st.by_type["runs_failed"] = {{"sql", 4}};
  st.by_type["runs_timed_out"] = {{"command", 1}};
  st.by_type["claimed"] = {{"sql", 25}, {"http", 10}};
  st.by_type["skipped"] = {{"sql", 2}};
  m.stats = st;
  m.queues = std::vector<sched::queue_depth>{{"sql", {{"scheduled", 7}, {"running", 2}}, 1.5},
                                             {"http", {{"available", 1}}, 0}};
  sched::node_info alive;
  alive.alive = true;
  sched::node_info dead;
  m.nodes = std::vector<sched::node_info>{alive, alive, dead};
  http::history_sample server;
  server.max_connections = 100;
  server.connections = {{"sluice/default", 4}, {"sluice/lane", 2}};
  m.server = server;
  http::transport_stats t;
  t.open = 12;
  t.accepted = 500;
  t.requests = 900;
  t.evicted = 7;
  t.reserved = 2;
  t.refused = 1;
  t.timed_out = 30;
  t.bad_requests = 4;
  m.http = t;
  m.http_max_connections = 1024;
  return m;
}

}  // namespace

TEST(HttpMetrics, ExpositionPassesTheChecker) {
  const std::string text = http::render_metrics(make_snapshot());
  test::exposition e;
  const auto problems = test::check_exposition(text, &e);
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems) << "\n" << text;
  EXPECT_GT(e.samples.size(), 100U);
}

TEST(HttpMetrics, CarriesTheSnapshotsValues) {
  test::exposition e;
  ASSERT_TRUE(test::check_exposition(http::render_metrics(make_snapshot()), &e).empty());

  EXPECT_EQ(e.value("sluice_build_info", {{"version", "1.2.3"}}), 1);
  EXPECT_EQ(e.value("sluice_uptime_seconds"), 42.5);
  EXPECT_EQ(e.value("sluice_metrics_database_ok"), 1);

  EXPECT_EQ(e.value("sluice_http_connections"), 12);
  EXPECT_EQ(e.value("sluice_http_max_connections"), 1024);
  EXPECT_EQ(e.value("sluice_http_connections_accepted_total"), 500);
  EXPECT_EQ(e.value("sluice_http_connections_dropped_total", {{"reason", "evicted"}}), 7);
  EXPECT_EQ(e.value("sluice_http_connections_dropped_total", {{"reason", "refused"}}), 1);
  EXPECT_EQ(e.value("sluice_http_connections_dropped_total", {{"reason", "timed_out"}}), 30);
  EXPECT_EQ(e.value("sluice_http_connections_reserved_total"), 2);
  EXPECT_EQ(e.value("sluice_http_requests_total"), 900);
  EXPECT_EQ(e.value("sluice_http_malformed_requests_total"), 4);

  EXPECT_EQ(e.value("sluice_pool_connections", {{"pool", "default"}, {"state", "idle"}}), 3);
  EXPECT_EQ(e.value("sluice_pool_connections", {{"pool", "default"}, {"state", "in_use"}}), 4);
  EXPECT_EQ(e.value("sluice_pool_max_connections", {{"pool", "default"}}), 15);
  EXPECT_EQ(e.value("sluice_pool_waiting_borrowers", {{"pool", "default"}}), 1);
  EXPECT_EQ(e.value("sluice_pool_peak_in_use_connections", {{"pool", "default"}}), 9);
  EXPECT_EQ(e.value("sluice_pool_saturated", {{"pool", "default"}}), 1);
  EXPECT_EQ(e.value("sluice_pool_checkouts_total", {{"pool", "default"}}), 100);
  EXPECT_EQ(e.value("sluice_pool_acquire_timeouts_total", {{"pool", "default"}}), 4);
  EXPECT_EQ(e.value("sluice_pool_server_refusals_total", {{"pool", "default"}}), 2);
  EXPECT_EQ(e.value("sluice_pool_connects_total", {{"pool", "default"}}), 12);
  EXPECT_EQ(e.value("sluice_pool_invalidations_total", {{"pool", "default"}}), 5);

  // Label values with quotes, newlines and backslashes survive escaping.
  EXPECT_EQ(e.value("sluice_pool_open_connections", {{"pool", "lane \"quoted\"\nname\\"}}), 7);

  // The histogram: per-bucket counts made cumulative, bounds in seconds.
  EXPECT_EQ(
      e.value("sluice_pool_acquire_wait_seconds_bucket", {{"pool", "default"}, {"le", "5e-05"}}),
      90);
  EXPECT_EQ(
      e.value("sluice_pool_acquire_wait_seconds_bucket", {{"pool", "default"}, {"le", "0.001"}}),
      95);
  EXPECT_EQ(
      e.value("sluice_pool_acquire_wait_seconds_bucket", {{"pool", "default"}, {"le", "0.1"}}), 98);
  EXPECT_EQ(
      e.value("sluice_pool_acquire_wait_seconds_bucket", {{"pool", "default"}, {"le", "+Inf"}}),
      100);
  EXPECT_EQ(e.value("sluice_pool_acquire_wait_seconds_count", {{"pool", "default"}}), 100);
  EXPECT_EQ(e.value("sluice_pool_acquire_wait_seconds_sum", {{"pool", "default"}}), 2.5);
  EXPECT_EQ(e.types["sluice_pool_acquire_wait_seconds"], "histogram");

  EXPECT_EQ(e.value("sluice_server_max_connections"), 100);
  EXPECT_EQ(e.value("sluice_server_connections", {{"application", "sluice/default"}}), 4);

  EXPECT_EQ(e.value("sluice_scheduler_state", {{"state", "running"}}), 1);
  EXPECT_EQ(e.value("sluice_scheduler_state", {{"state", "stopped"}}), 0);
  EXPECT_EQ(e.value("sluice_scheduler_leader"), 1);
  EXPECT_EQ(e.value("sluice_scheduler_cycles_total"), 77);
  EXPECT_EQ(e.value("sluice_scheduler_cycle_errors_total"), 2);
  EXPECT_EQ(e.value("sluice_scheduler_running_handlers"), 3);
  EXPECT_EQ(e.value("sluice_scheduler_stuck_handlers"), 1);
  EXPECT_EQ(e.value("sluice_scheduler_last_cycle_age_seconds"), 0.25);

  // Every outcome for every type that has any, zeros included, so series do not appear late.
  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "sql"}, {"outcome", "succeeded"}}), 20);
  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "sql"}, {"outcome", "failed"}}), 4);
  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "http"}, {"outcome", "failed"}}), 0);
  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "command"}, {"outcome", "timed_out"}}), 1);
  EXPECT_EQ(e.count("sluice_task_runs_total"), 3 * 6);
  EXPECT_EQ(e.value("sluice_task_claims_total", {{"type", "sql"}}), 25);
  EXPECT_EQ(e.value("sluice_task_fires_skipped_total", {{"type", "sql"}}), 2);
  EXPECT_EQ(e.value("sluice_cluster_cycles_total"), 500);

  EXPECT_EQ(e.value("sluice_queue_tasks", {{"type", "sql"}, {"state", "scheduled"}}), 7);
  EXPECT_EQ(e.value("sluice_queue_tasks", {{"type", "sql"}, {"state", "paused"}}), 0);
  EXPECT_EQ(e.count("sluice_queue_tasks"), 2 * 9);
  EXPECT_EQ(e.value("sluice_queue_lag_seconds", {{"type", "sql"}}), 1.5);
  EXPECT_EQ(e.value("sluice_cluster_nodes_alive"), 2);
}

TEST(HttpMetrics, WithoutTheDatabaseTheClusterFamiliesAreLeftOut) {
  auto m = make_snapshot();
  m.database_ok = false;
  m.stats.reset();
  m.queues.reset();
  m.nodes.reset();
  m.server.reset();
  m.last_cycle_age_s.reset();
  test::exposition e;
  const auto problems = test::check_exposition(http::render_metrics(m), &e);
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems);
  EXPECT_EQ(e.value("sluice_metrics_database_ok"), 0);
  EXPECT_EQ(e.types.count("sluice_task_runs_total"), 0U);
  EXPECT_EQ(e.types.count("sluice_queue_tasks"), 0U);
  EXPECT_EQ(e.types.count("sluice_server_connections"), 0U);
  EXPECT_EQ(e.types.count("sluice_scheduler_last_cycle_age_seconds"), 0U);
  // The in-process families are still there.
  EXPECT_EQ(e.value("sluice_pool_checkouts_total", {{"pool", "default"}}), 100);
  EXPECT_EQ(e.value("sluice_scheduler_cycles_total"), 77);
}

TEST(HttpMetrics, EmptySnapshotIsValid) {
  const auto problems = test::check_exposition(http::render_metrics({}));
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems);
}

TEST(HttpMetrics, ValueFormatting) {
  EXPECT_EQ(http::format_metric_value(1), "1");
  EXPECT_EQ(http::format_metric_value(0.25), "0.25");
  EXPECT_EQ(http::format_metric_value(5e-05), "5e-05");
  EXPECT_EQ(http::format_metric_value(INFINITY), "+Inf");
  EXPECT_EQ(http::format_metric_value(-INFINITY), "-Inf");
  EXPECT_EQ(http::format_metric_value(NAN), "NaN");
  EXPECT_EQ(http::escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

// The checker must catch what it claims to catch, or the tests above prove nothing.
TEST(HttpExpositionChecker, FindsBrokenExpositions) {
  const auto problems = [](const std::string& text) { return test::check_exposition(text); };
  const std::string ok =
      "# HELP sluice_x_total X.\n# TYPE sluice_x_total counter\nsluice_x_total{a=\"1\"} 3\n";
  EXPECT_TRUE(problems(ok).empty());

  EXPECT_FALSE(problems("sluice_x_total 1\n").empty()) << "sample without TYPE";
  EXPECT_FALSE(problems("# TYPE sluice_x_total counter\nsluice_x_total 1\n").empty())
      << "TYPE without HELP";
  EXPECT_FALSE(problems(ok + "sluice_x_total{a=\"1\"} 4\n").empty()) << "duplicate series";
  EXPECT_FALSE(problems("# HELP sluice_x X.\n# TYPE sluice_x counter\nsluice_x 1\n").empty())
      << "counter without _total";
  EXPECT_FALSE(
      problems("# HELP other_total X.\n# TYPE other_total counter\nother_total 1\n").empty())
      << "no sluice_ prefix";
  EXPECT_FALSE(problems(ok + "sluice_x_total{1a=\"1\"} 4\n").empty()) << "bad label name";
  EXPECT_FALSE(problems(ok + "sluice_x_total{a=\"2\"} abc\n").empty()) << "bad value";
  EXPECT_FALSE(
      problems("# HELP sluice_x_total X.\n# TYPE sluice_x_total counter\nsluice_x_total -1\n")
          .empty())
      << "negative counter";
  EXPECT_FALSE(problems(ok + "# HELP sluice_y Y.\n# TYPE sluice_y gauge\nsluice_y 1\n"
                             "sluice_x_total{a=\"2\"} 1\n")
                   .empty())
      << "family not contiguous";

  const std::string head = "# HELP sluice_h_seconds H.\n# TYPE sluice_h_seconds histogram\n";
  const std::string good_hist = head +
                                "sluice_h_seconds_bucket{le=\"0.1\"} 1\n"
                                "sluice_h_seconds_bucket{le=\"1\"} 3\n"
                                "sluice_h_seconds_bucket{le=\"+Inf\"} 4\n"
                                "sluice_h_seconds_sum 2\nsluice_h_seconds_count 4\n";
  EXPECT_TRUE(problems(good_hist).empty()) << ::testing::PrintToString(problems(good_hist));
  EXPECT_FALSE(problems(head + "sluice_h_seconds_bucket{le=\"0.1\"} 3\n"
                               "sluice_h_seconds_bucket{le=\"+Inf\"} 2\n"
                               "sluice_h_seconds_sum 2\nsluice_h_seconds_count 2\n")
                   .empty())
      << "not cumulative";
  EXPECT_FALSE(problems(head + "sluice_h_seconds_bucket{le=\"0.1\"} 1\n"
                               "sluice_h_seconds_bucket{le=\"1\"} 3\n"
                               "sluice_h_seconds_sum 2\nsluice_h_seconds_count 3\n")
                   .empty())
      << "no +Inf bucket";
  EXPECT_FALSE(problems(head + "sluice_h_seconds_bucket{le=\"+Inf\"} 3\n"
                               "sluice_h_seconds_sum 2\nsluice_h_seconds_count 4\n")
                   .empty())
      << "+Inf differs from _count";
  EXPECT_FALSE(
      problems(head + "sluice_h_seconds_bucket{le=\"+Inf\"} 3\nsluice_h_seconds_count 3\n").empty())
      << "no _sum";
}

// promtool is the reference linter. scripts/bootstrap installs it; without it this test fails
// (a suite that skips what it cannot run would pass on a machine that checked nothing).
TEST(HttpMetrics, PromtoolAcceptsTheExposition) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
    FAIL() << "promtool not found: install the Debian package prometheus (scripts/bootstrap does)";
  }
  char path[] = "/tmp/sluice_metrics_XXXXXX";
  const int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  {
    std::ofstream out(path);
    out << http::render_metrics(make_snapshot());
  }
  const std::string cmd = std::string("promtool check metrics < ") + path + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string output;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p) != nullptr)
    output += buf;
  const int status = ::pclose(p);
  std::remove(path);
  EXPECT_EQ(status, 0) << output;
}
