// The HTTP server in-process against the real database: every endpoint's success path, a table
// of bad requests that are each answered with the right status and write nothing, /metrics
// checked as an exposition, /ready turning 503 when the lane closes or the scheduler stops, and
// the server's lifecycle (ephemeral port, port taken, no token configured, dashboard hook).

#include <cctype>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/json.hpp"
#include "http/server.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/sched/scheduler.hpp"
#include "support/sched_test_env.hpp"
#include "unit/http_exposition_check.hpp"

namespace http = sluice::http;
namespace pool = sluice::pool;
namespace sched = sluice::sched;
namespace test = sluice::test;
using namespace std::chrono_literals;
using http::json;
using std::chrono::system_clock;

namespace {

constexpr const char* token = "test-token-0123456789abcdef";

class HttpApi : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    env_ = std::make_unique<test::sched_env>(true, 3, 0);
    pools_ = std::make_unique<pool::pool_manager>();
    pools_->add(test::test_pool_settings("work", env_->app_prefix() + "-work", 2, 1));
    scheduler_ = std::make_unique<sched::scheduler>(env_->settings(2), env_->lane(), pools_.get());
    scheduler_->handle("noop",
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
    app_->validate_payload = [](std::string_view type, std::string_view payload) {
      if (type == "refused") throw std::invalid_argument("type 'refused' has no handler");
      if (payload.find("forbidden") != std::string_view::npos) {
        throw std::invalid_argument("payload: 'forbidden' is not allowed");
      }
    };
    // Per-type defaults, as the daemon's [types.slow.report] would give them.
    app_->type_defaults = [](sched::task_spec& spec) {
      if (spec.type != "slow.report") return;
      spec.timeout = 5min;
      spec.max_attempts = 9;
    };
    server_ = start_server(token);
    client_ = client_for(*server_);
  }

  void TearDown() override {
    client_.reset();
    for (auto& s : extra_servers_)
      s.reset();
    server_.reset();
    scheduler_.reset();
    pools_.reset();
    env_.reset();
  }

  std::unique_ptr<http::server> start_server(const std::string& api_token,
                                             http::static_handler handler = {}) {
    http::server_settings s;
    s.port = 0;
    s.token = api_token;
    s.max_body_bytes = 64 * 1024;
    s.sample_interval = 100ms;
    s.history = 10s;
    auto srv = std::make_unique<http::server>(s, *app_);
    if (handler) srv->set_static_handler(std::move(handler));
    srv->start();
    return srv;
  }

  static std::unique_ptr<httplib::Client> client_for(const http::server& s) {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", s.port());
    c->set_read_timeout(20, 0);
    c->set_connection_timeout(5, 0);
    return c;
  }

  // The response, checked to exist; every body seen is kept to look for secrets at the end.
  httplib::Response get(const std::string& path) {
    auto r = client_->Get(path.c_str());
    EXPECT_TRUE(r) << "GET " << path << ": " << httplib::to_string(r.error());
    if (!r) return {};
    bodies_.push_back(r->body);
    return *r;
  }

  httplib::Response post(const std::string& path, const std::string& body,
                         std::optional<std::string> authorization = std::string("Bearer ") +
                                                                    token) {
    httplib::Headers headers;
    if (authorization) headers.emplace("Authorization", *authorization);
    auto r = client_->Post(path.c_str(), headers, body, "application/json");
    EXPECT_TRUE(r) << "POST " << path << ": " << httplib::to_string(r.error());
    if (!r) return {};
    bodies_.push_back(r->body);
    return *r;
  }

  static json body(const httplib::Response& r) {
    json j = json::parse(r.body, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.body;
    return j;
  }

  std::int64_t task_count() { return env_->scalar("SELECT count(*) FROM " + env_->q("tasks")); }

  std::int64_t create(const json& spec) {
    const auto r = post("/api/v1/tasks", spec.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return body(r).value("id", std::int64_t{0});
  }

  static std::string in_an_hour() {
    return sched::format_timestamp(std::chrono::floor<std::chrono::seconds>(system_clock::now()) +
                                   1h);
  }

  std::unique_ptr<test::sched_env> env_;
  std::unique_ptr<pool::pool_manager> pools_;
  std::unique_ptr<sched::scheduler> scheduler_;
  std::unique_ptr<http::app> app_;
  std::unique_ptr<http::server> server_;
  std::vector<std::unique_ptr<http::server>> extra_servers_;
  std::unique_ptr<httplib::Client> client_;
  std::vector<std::string> bodies_;
};

std::string percent_encoded(const std::string& text) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// One raw HTTP/1.1 exchange (Connection: close), for requests httplib::Client never makes, such
// as a POST without Content-Length. The write side stays open, as a real client's does. Returns
// everything the server sent.
std::string raw_exchange(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return {};
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return out;
}

void expect_error(const httplib::Response& r, int status, const std::string& code,
                  const std::string& mentions = "") {
  EXPECT_EQ(r.status, status) << r.body;
  const json j = json::parse(r.body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.body;
  EXPECT_EQ(j["error"]["code"], code) << r.body;
  EXPECT_TRUE(j["error"]["message"].is_string()) << r.body;
  if (!mentions.empty()) {
    EXPECT_NE(j["error"]["message"].get<std::string>().find(mentions), std::string::npos)
        << r.body << "\nexpected to mention: " << mentions;
  }
}

// POST /api/v1/graphs adds tasks that run after others in one transaction: the downstream task
// waits blocked and runs after its upstream succeeded; a cycle, an unknown ref or id and a bad
// task are 400s that name the problem and add nothing.
TEST_F(HttpApi, GraphsAreAddedInOneGoAndRunInOrder) {
  const json graph = {{"tasks",
                       {{{"ref", "first"}, {"type", "noop"}},
                        {{"ref", "second"}, {"type", "noop"}, {"after", {"first"}}}}}};
  const auto r = post("/api/v1/graphs", graph.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  const json ids = body(r)["tasks"];
  const auto first = ids.value("first", std::int64_t{0});
  const auto second = ids.value("second", std::int64_t{0});
  ASSERT_GT(first, 0);
  ASSERT_GT(second, 0);
  ASSERT_TRUE(test::wait_for_state(env_->store(), second, sched::task_state::succeeded, 20s));
  const auto runs_first = test::runs_oldest_first(env_->store(), first);
  const auto runs_second = test::runs_oldest_first(env_->store(), second);
  ASSERT_EQ(runs_first.size(), 1U);
  ASSERT_EQ(runs_second.size(), 1U);
  EXPECT_LE(runs_first[0].finished_at, runs_second[0].started_at);

  const auto before = task_count();
  expect_error(post("/api/v1/graphs", json{{"tasks",
                                            {{{"ref", "a"}, {"type", "noop"}, {"after", {"b"}}},
                                             {{"ref", "b"}, {"type", "noop"}, {"after", {"a"}}}}}}
                                          .dump()),
               400, "bad_request", "cycle");
  expect_error(post("/api/v1/graphs",
                    json{{"tasks", {{{"ref", "a"}, {"type", "noop"}, {"after", {"zz"}}}}}}.dump()),
               400, "bad_request", "'zz', which is not in the graph");
  expect_error(
      post("/api/v1/graphs",
           json{{"tasks", {{{"ref", "a"}, {"type", "noop"}, {"after_ids", {987654321}}}}}}.dump()),
      400, "bad_request", "987654321, which does not exist");
  expect_error(post("/api/v1/graphs",
                    json{{"tasks", {{{"ref", "a"}, {"type", "noop"}, {"priority", 5000}}}}}.dump()),
               400, "bad_request", "tasks[0]: ");
  expect_error(post("/api/v1/graphs", json{{"tasks", json::array()}}.dump()), 400, "bad_request",
               "1 to 10000 tasks");
  expect_error(post("/api/v1/graphs", json{{"nodes", json::array()}}.dump()), 400, "bad_request");
  EXPECT_EQ(task_count(), before);
}

// GET /api/v1/tasks/{id} names the tasks a task runs after ("upstream") and the tasks that run
// after it ("downstream"), each with its id, name, type and state.
TEST_F(HttpApi, TaskDetailShowsUpstreamAndDownstream) {
  // "root" is due in a day, so the other two stay blocked while the test looks.
  const json graph = {
      {"tasks",
       {{{"ref", "root"},
         {"type", "noop"},
         {"name", "flow-root"},
         {"schedule", {{"kind", "once"}, {"at", "2099-01-01T00:00:00Z"}}}},
        {{"ref", "left"}, {"type", "noop"}, {"name", "flow-left"}, {"after", {"root"}}},
        {{"ref", "join"}, {"type", "noop"}, {"after", {"root", "left"}}}}}};
  const auto r = post("/api/v1/graphs", graph.dump());
  ASSERT_EQ(r.status, 201) << r.body;
  const json ids = body(r)["tasks"];
  const auto root = ids.value("root", std::int64_t{0});
  const auto left = ids.value("left", std::int64_t{0});
  const auto join = ids.value("join", std::int64_t{0});
  ASSERT_GT(root, 0);

  const json root_json = body(get("/api/v1/tasks/" + std::to_string(root)));
  EXPECT_EQ(root_json["upstream"], json::array());
  ASSERT_EQ(root_json["downstream"].size(), 2U) << root_json.dump();
  EXPECT_EQ(root_json["downstream"][0],
            (json{{"id", left}, {"name", "flow-left"}, {"type", "noop"}, {"state", "blocked"}}));
  EXPECT_EQ(root_json["downstream"][1],
            (json{{"id", join}, {"name", nullptr}, {"type", "noop"}, {"state", "blocked"}}));

  const json join_json = body(get("/api/v1/tasks/" + std::to_string(join)));
  EXPECT_EQ(join_json["downstream"], json::array());
  ASSERT_EQ(join_json["upstream"].size(), 2U) << join_json.dump();
  EXPECT_EQ(join_json["upstream"][0]["id"], root);
  EXPECT_EQ(join_json["upstream"][0]["name"], "flow-root");
  EXPECT_EQ(join_json["upstream"][0]["state"], "scheduled");
  EXPECT_EQ(join_json["upstream"][1]["id"], left);
  EXPECT_EQ(join_json["upstream"][1]["state"], "blocked");

  // A task outside any graph has empty lists, not missing ones.
  const auto plain = post("/api/v1/tasks", json{{"type", "noop"}}.dump());
  ASSERT_EQ(plain.status, 201) << plain.body;
  const json plain_json =
      body(get("/api/v1/tasks/" + std::to_string(body(plain)["id"].get<std::int64_t>())));
  EXPECT_EQ(plain_json["upstream"], json::array());
  EXPECT_EQ(plain_json["downstream"], json::array());
}

}  // namespace

TEST_F(HttpApi, HealthIsAlwaysAnsweredWithoutTheDatabase) {
  const auto r = get("/health");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(r.get_header_value("Cache-Control"), "no-store");
  const json j = body(r);
  EXPECT_EQ(j["status"], "healthy");
  EXPECT_EQ(j["version"], "9.9.9-test");
  EXPECT_GE(j["uptime_s"].get<double>(), 0.0);
  EXPECT_EQ(j["node_id"], scheduler_->node_id());

  // With the lane closed, /health still answers at once.
  env_->lane().close(0ms);
  EXPECT_EQ(get("/health").status, 200);
}

TEST_F(HttpApi, ReadyWhenHealthy) {
  ASSERT_TRUE(test::wait_for_cycles(*scheduler_, 1));
  const auto r = get("/ready");
  EXPECT_EQ(r.status, 200) << r.body;
  const json j = body(r);
  EXPECT_EQ(j["status"], "ready");
  for (const char* check : {"database", "pools", "scheduler"}) {
    EXPECT_EQ(j["checks"][check]["ok"], true) << check;
  }
  EXPECT_EQ(j["checks"]["pools"]["pools"]["work"], "ok");
  EXPECT_EQ(j["checks"]["pools"]["pools"]["lane"], "ok");
}

TEST_F(HttpApi, NotReadyWhenTheSchedulerStops) {
  ASSERT_TRUE(test::wait_for_cycles(*scheduler_, 1));
  scheduler_->stop();
  const auto r = get("/ready");
  EXPECT_EQ(r.status, 503);
  const json j = body(r);
  EXPECT_EQ(j["status"], "not_ready");
  EXPECT_EQ(j["checks"]["scheduler"]["ok"], false);
  EXPECT_EQ(j["checks"]["scheduler"]["reason"], "scheduler is stopped");
  EXPECT_EQ(j["checks"]["database"]["ok"], true);
}

TEST_F(HttpApi, NotReadyWhenTheLanePoolIsClosed) {
  ASSERT_TRUE(test::wait_for_cycles(*scheduler_, 1));
  env_->lane().close(0ms);
  const auto r = get("/ready");
  EXPECT_EQ(r.status, 503);
  const json j = body(r);
  EXPECT_EQ(j["status"], "not_ready");
  EXPECT_EQ(j["checks"]["database"]["ok"], false);
  EXPECT_NE(j["checks"]["database"]["reason"].get<std::string>().find("closed"), std::string::npos);
  EXPECT_EQ(j["checks"]["pools"]["ok"], false);
  EXPECT_NE(j["checks"]["pools"]["reason"].get<std::string>().find("pool 'lane' is closed"),
            std::string::npos);

  // /metrics does not wait for the closed lane: the in-process families are still served.
  const auto m = get("/metrics");
  EXPECT_EQ(m.status, 200);
  test::exposition e;
  const auto problems = test::check_exposition(m.body, &e);
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems);
  EXPECT_EQ(e.value("sluice_metrics_database_ok"), 0);
  EXPECT_EQ(e.value("sluice_pool_closed", {{"pool", "lane"}}), 1);
}

TEST_F(HttpApi, MetricsExposition) {
  const auto id = create({{"type", "noop"}, {"name", "metrics-run"}});
  ASSERT_TRUE(test::wait_for_state(env_->store(), id, sched::task_state::succeeded, 20s));
  create({{"type", "noop"}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  ASSERT_TRUE(test::eventually(
      [&] {
        const auto s = server_->history().latest();
        return s && s->max_connections;
      },
      10s));

  const auto r = get("/metrics");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  test::exposition e;
  const auto problems = test::check_exposition(r.body, &e);
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems) << "\n" << r.body;

  EXPECT_EQ(e.value("sluice_build_info", {{"version", "9.9.9-test"}}), 1);
  EXPECT_EQ(e.value("sluice_metrics_database_ok"), 1);
  for (const char* p : {"work", "lane"}) {
    EXPECT_TRUE(e.value("sluice_pool_connections", {{"pool", p}, {"state", "idle"}})) << p;
    EXPECT_TRUE(e.value("sluice_pool_connections", {{"pool", p}, {"state", "in_use"}})) << p;
    EXPECT_TRUE(e.value("sluice_pool_max_connections", {{"pool", p}})) << p;
    EXPECT_TRUE(e.value("sluice_pool_waiting_borrowers", {{"pool", p}})) << p;
    EXPECT_TRUE(e.value("sluice_pool_peak_in_use_connections", {{"pool", p}})) << p;
    EXPECT_TRUE(e.value("sluice_pool_saturated", {{"pool", p}})) << p;
    EXPECT_TRUE(e.value("sluice_pool_acquire_wait_seconds_bucket", {{"pool", p}, {"le", "+Inf"}}))
        << p;
    for (const char* c :
         {"checkouts", "acquire_timeouts", "server_refusals", "connects", "invalidations"}) {
      EXPECT_TRUE(e.value(std::string("sluice_pool_") + c + "_total", {{"pool", p}})) << c;
    }
  }
  EXPECT_EQ(e.value("sluice_pool_max_connections", {{"pool", "work"}}), 3);
  EXPECT_GT(*e.value("sluice_pool_checkouts_total", {{"pool", "lane"}}), 0);
  EXPECT_EQ(e.types["sluice_pool_acquire_wait_seconds"], "histogram");

  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "noop"}, {"outcome", "succeeded"}}), 1);
  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "noop"}, {"outcome", "failed"}}), 0);
  EXPECT_EQ(e.value("sluice_queue_tasks", {{"type", "noop"}, {"state", "scheduled"}}), 1);
  EXPECT_EQ(e.value("sluice_queue_tasks", {{"type", "noop"}, {"state", "succeeded"}}), 1);
  EXPECT_TRUE(e.value("sluice_queue_lag_seconds", {{"type", "noop"}}));
  EXPECT_GE(*e.value("sluice_task_claims_total", {{"type", "noop"}}), 1);
  EXPECT_GT(*e.value("sluice_scheduler_cycles_total"), 0);
  EXPECT_TRUE(e.value("sluice_scheduler_cycle_errors_total"));
  EXPECT_TRUE(e.value("sluice_scheduler_running_handlers"));
  EXPECT_TRUE(e.value("sluice_scheduler_stuck_handlers"));
  EXPECT_TRUE(e.value("sluice_scheduler_leader"));
  EXPECT_EQ(e.value("sluice_scheduler_state", {{"state", "running"}}), 1);
  EXPECT_EQ(e.value("sluice_cluster_nodes_alive"), 1);
  EXPECT_GT(*e.value("sluice_server_max_connections"), 0);
  EXPECT_GE(*e.value("sluice_server_connections", {{"application", env_->app_prefix() + "-lane"}}),
            1);
}

TEST_F(HttpApi, Pools) {
  const auto r = get("/api/v1/pools");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.get_header_value("Cache-Control"), "no-store");
  const json pools = body(r)["pools"];
  ASSERT_EQ(pools.size(), 2U);
  EXPECT_EQ(pools[0]["name"], "work");
  EXPECT_EQ(pools[0]["lane"], false);
  EXPECT_EQ(pools[0]["size"], 2);
  EXPECT_EQ(pools[0]["max_overflow"], 1);
  EXPECT_EQ(pools[1]["name"], "lane");
  EXPECT_EQ(pools[1]["lane"], true);
  for (const auto& p : pools) {
    for (const char* k : {"size", "checked_in", "checked_out", "overflow", "waiting", "checkouts",
                          "timeouts", "peak_checked_out", "wait_histogram", "saturated"}) {
      EXPECT_TRUE(p.contains(k)) << k;
    }
    EXPECT_FALSE(p.contains("conninfo"));
  }
}

TEST_F(HttpApi, PoolHistory) {
  ASSERT_TRUE(test::eventually([&] { return server_->history().samples().size() >= 3; }, 10s));
  const json j = body(get("/api/v1/pools/history"));
  EXPECT_EQ(j["interval_ms"], 100);
  EXPECT_EQ(j["capacity"], 100);
  ASSERT_GE(j["samples"].size(), 3U);
  const json& last = j["samples"].back();
  EXPECT_EQ(last["pools"].size(), 2U);
  EXPECT_EQ(last["pools"][0]["name"], "work");
  EXPECT_EQ(last["pools"][0]["max"], 3);
  ASSERT_TRUE(last["server"].is_object()) << last.dump();
  EXPECT_GT(last["server"]["max_connections"].get<int>(), 0);
  EXPECT_GE(last["server"]["connections"][env_->app_prefix() + "-lane"].get<int>(), 1);

  const std::string since = j["samples"][j["samples"].size() - 2]["at"];
  const json newer = body(get("/api/v1/pools/history?since=" + since));
  ASSERT_GE(newer["samples"].size(), 1U);
  for (const auto& s : newer["samples"]) {
    EXPECT_GT(sched::parse_timestamp(s["at"].get<std::string>()), sched::parse_timestamp(since));
  }
  expect_error(get("/api/v1/pools/history?since=yesterday"), 400, "bad_request", "since:");
}

TEST_F(HttpApi, Scheduler) {
  ASSERT_TRUE(test::eventually([&] { return scheduler_->status().leader; }, 10s));
  ASSERT_TRUE(test::wait_for_cycles(*scheduler_, 1));
  const json j = body(get("/api/v1/scheduler"));
  EXPECT_EQ(j["node"]["state"], "running");
  EXPECT_EQ(j["node"]["node_id"], scheduler_->node_id());
  EXPECT_EQ(j["node"]["leader"], true);
  EXPECT_EQ(j["node"]["workers"], 2);
  EXPECT_TRUE(j["node"]["last_cycle_at"].is_string());
  EXPECT_TRUE(j["stats"]["totals"].is_object());
  EXPECT_GE(j["stats"]["totals"]["cycles"].get<int>(), 1);
  EXPECT_EQ(j["leader"], scheduler_->node_id());
  ASSERT_EQ(j["nodes"].size(), 1U);
  EXPECT_EQ(j["nodes"][0]["id"], scheduler_->node_id());
  EXPECT_EQ(j["nodes"][0]["alive"], true);
  EXPECT_TRUE(j["queues"].is_array());
}

// GET /api/v1/scheduler's flow: each limit with its use, and for a limit counted per key the
// use of each key.
TEST_F(HttpApi, SchedulerShowsFlowUsagePerKey) {
  env_->store().set_flow_limits({{"noop", sched::flow_limit::starts(100, 1h, "customer")},
                                 {"slow.report", sched::flow_limit::running(7)}});
  std::vector<std::int64_t> ids;
  for (const auto* customer : {"acme", "acme", "bolt"}) {
    const auto r =
        post("/api/v1/tasks", json{{"type", "noop"}, {"payload", {{"customer", customer}}}}.dump());
    ASSERT_EQ(r.status, 201) << r.body;
    ids.push_back(body(r)["id"].get<std::int64_t>());
  }
  for (const auto id : ids)
    ASSERT_TRUE(test::wait_for_state(env_->store(), id, sched::task_state::succeeded, 20s));

  const json flow = body(get("/api/v1/scheduler"))["flow"];
  ASSERT_EQ(flow.size(), 2U) << flow.dump();
  EXPECT_EQ(flow[0], (json{{"type", "noop"},
                           {"running", 0},
                           {"max_running", nullptr},
                           {"rate", 100},
                           {"rate_period_ms", 3600000},
                           {"started_in_window", 3},
                           {"key", "customer"},
                           {"by_key",
                            {{{"key", "acme"}, {"running", 0}, {"started_in_window", 2}},
                             {{"key", "bolt"}, {"running", 0}, {"started_in_window", 1}}}}}));
  // A limit per type has no by_key.
  EXPECT_EQ(flow[1], (json{{"type", "slow.report"},
                           {"running", 0},
                           {"max_running", 7},
                           {"rate", nullptr},
                           {"rate_period_ms", nullptr},
                           {"started_in_window", 0},
                           {"key", nullptr}}));
}

TEST_F(HttpApi, CyclesArePaged) {
  ASSERT_TRUE(test::eventually(
      [&] { return env_->scalar("SELECT count(*) FROM " + env_->q("cycles")) >= 5; }, 20s));
  const json first = body(get("/api/v1/cycles?limit=2"));
  ASSERT_EQ(first["cycles"].size(), 2U);
  const auto id0 = first["cycles"][0]["id"].get<std::int64_t>();
  const auto id1 = first["cycles"][1]["id"].get<std::int64_t>();
  EXPECT_GT(id0, id1);  // newest first
  EXPECT_EQ(first["next"], id1);
  EXPECT_EQ(first["cycles"][0]["node"], scheduler_->node_id());
  EXPECT_TRUE(first["cycles"][0]["by_type"].is_object());
  EXPECT_EQ(first["cycles"][0]["started_at"].get<std::string>().back(), 'Z');

  const json second = body(get("/api/v1/cycles?limit=2&before=" + std::to_string(id1)));
  ASSERT_EQ(second["cycles"].size(), 2U);
  EXPECT_LT(second["cycles"][0]["id"].get<std::int64_t>(), id1);

  // The last page has no next cursor.
  const json tail = body(get("/api/v1/cycles?limit=1000&before=" + std::to_string(id1)));
  EXPECT_TRUE(tail["next"].is_null());

  expect_error(get("/api/v1/cycles?limit=0"), 400, "bad_request", "limit:");
  expect_error(get("/api/v1/cycles?limit=1001"), 400, "bad_request", "limit:");
  expect_error(get("/api/v1/cycles?limit=ten"), 400, "bad_request", "limit:");
  expect_error(get("/api/v1/cycles?before=-3"), 400, "bad_request", "before:");
}

TEST_F(HttpApi, TaskLifecycle) {
  const std::string at = in_an_hour();
  const auto r = post("/api/v1/tasks", json{{"type", "noop"},
                                            {"name", "life"},
                                            {"payload", {{"k", "v"}}},
                                            {"schedule", {{"kind", "once"}, {"at", at}}},
                                            {"priority", 5},
                                            {"max_attempts", 2}}
                                           .dump());
  ASSERT_EQ(r.status, 201) << r.body;
  const json created = body(r);
  const auto id = created["id"].get<std::int64_t>();
  EXPECT_EQ(r.get_header_value("Location"), "/api/v1/tasks/" + std::to_string(id));
  EXPECT_EQ(created["type"], "noop");
  EXPECT_EQ(created["name"], "life");
  EXPECT_EQ(created["payload"], json({{"k", "v"}}));
  EXPECT_EQ(created["state"], "scheduled");
  EXPECT_EQ(created["schedule"]["kind"], "once");
  EXPECT_EQ(created["next_run_at"], at);
  EXPECT_EQ(created["priority"], 5);
  EXPECT_EQ(created["max_attempts"], 2);
  EXPECT_EQ(created["created_at"].get<std::string>().back(), 'Z');

  const std::string path = "/api/v1/tasks/" + std::to_string(id);
  // GET adds the task's place in a graph (none here) to what POST answered.
  json detail = body(get(path));
  EXPECT_EQ(detail["upstream"], json::array());
  EXPECT_EQ(detail["downstream"], json::array());
  detail.erase("upstream");
  detail.erase("downstream");
  EXPECT_EQ(detail, created);

  auto changed = post(path + "/pause", "");
  ASSERT_EQ(changed.status, 200) << changed.body;
  EXPECT_EQ(body(changed)["state"], "paused");
  expect_error(post(path + "/pause", ""), 409, "conflict", "is paused");

  const std::string later =
      sched::format_timestamp(std::chrono::floor<std::chrono::seconds>(system_clock::now()) + 2h);
  changed = post(path + "/reschedule", json{{"at", later}}.dump());
  ASSERT_EQ(changed.status, 200) << changed.body;
  EXPECT_EQ(body(changed)["next_run_at"], later);
  EXPECT_EQ(body(changed)["state"], "paused");

  changed = post(path + "/resume", "{}");
  ASSERT_EQ(changed.status, 200) << changed.body;
  EXPECT_EQ(body(changed)["state"], "scheduled");

  changed = post(path + "/run-now", "");
  ASSERT_EQ(changed.status, 200) << changed.body;
  ASSERT_TRUE(test::wait_for_state(env_->store(), id, sched::task_state::succeeded, 20s));

  const json runs = body(get(path + "/runs"));
  ASSERT_EQ(runs["runs"].size(), 1U);
  EXPECT_EQ(runs["runs"][0]["task_id"], id);
  EXPECT_EQ(runs["runs"][0]["outcome"], "succeeded");
  EXPECT_EQ(runs["runs"][0]["node"], scheduler_->node_id());
  EXPECT_TRUE(runs["next"].is_null());
  EXPECT_GE(runs["runs"][0]["duration_ms"].get<double>(), 0.0);

  expect_error(post(path + "/cancel", ""), 409, "conflict", "is succeeded");
  expect_error(post(path + "/reschedule", json{{"at", later}}.dump()), 409, "conflict");

  // A second task to cancel.
  const auto other = create({{"type", "noop"}, {"schedule", {{"kind", "once"}, {"at", at}}}});
  changed = post("/api/v1/tasks/" + std::to_string(other) + "/cancel", "");
  ASSERT_EQ(changed.status, 200) << changed.body;
  EXPECT_EQ(body(changed)["state"], "cancelled");
}

// curl -X POST sends no Content-Length: the request has an empty body (RFC 9112) and must be
// served at once, not after a read timeout.
// DNS rebinding: a request under a host name the server does not answer to is refused before
// it reaches any route, the dashboard's included, and writes nothing even with the token.
TEST_F(HttpApi, ForeignHostNamesAreRefused) {
  const int port = server_->port();
  const auto get_with_host = [&](const std::string& path, const std::string& host) {
    return raw_exchange(
        port, "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n");
  };
  for (const std::string path : {"/api/v1/scheduler", "/api/v1/tasks", "/metrics", "/"}) {
    const std::string reply =
        get_with_host(path, "rebind.attacker.example:" + std::to_string(port));
    EXPECT_EQ(reply.rfind("HTTP/1.1 403", 0), 0U) << path << "\n" << reply;
    EXPECT_NE(reply.find("\"code\":\"forbidden\""), std::string::npos) << reply;
    EXPECT_NE(reply.find("http.allowed_hosts"), std::string::npos) << reply;
  }
  const std::vector<std::string> local_hosts = {
      "localhost:" + std::to_string(port), "127.0.0.1:" + std::to_string(port),
      "[::1]:" + std::to_string(port), "LOCALHOST", "dash.localhost"};
  for (const std::string& host : local_hosts) {
    const std::string reply = get_with_host("/api/v1/scheduler", host);
    EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0U) << host << "\n" << reply;
  }

  const auto before = body(get("/api/v1/tasks"))["tasks"].size();
  const std::string create_body =
      R"({"type": "noop", "schedule": {"kind": "once", "at": ")" + in_an_hour() + R"("}})";
  const std::string refused = raw_exchange(
      port, std::string("POST /api/v1/tasks HTTP/1.1\r\nHost: rebind.attacker.example\r\n") +
                "Authorization: Bearer " + token +
                "\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(create_body.size()) + "\r\nConnection: close\r\n\r\n" + create_body);
  EXPECT_EQ(refused.rfind("HTTP/1.1 403", 0), 0U) << refused;
  EXPECT_EQ(body(get("/api/v1/tasks"))["tasks"].size(), before);
}

// Per-type defaults ([types.NAME] in the daemon) fill in what the body leaves out; what the body
// gives wins.
TEST_F(HttpApi, TypeDefaultsFillWhatTheBodyLeavesOut) {
  const auto defaulted =
      create({{"type", "slow.report"}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  const json d = body(get("/api/v1/tasks/" + std::to_string(defaulted)));
  EXPECT_EQ(d["timeout_ms"], 300000) << d;
  EXPECT_EQ(d["max_attempts"], 9) << d;

  const auto given = create({{"type", "slow.report"},
                             {"max_attempts", 2},
                             {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  const json g = body(get("/api/v1/tasks/" + std::to_string(given)));
  EXPECT_EQ(g["timeout_ms"], 300000) << g;
  EXPECT_EQ(g["max_attempts"], 2) << g;

  const auto other =
      create({{"type", "noop"}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  EXPECT_EQ(body(get("/api/v1/tasks/" + std::to_string(other)))["timeout_ms"], 60000);
}

TEST_F(HttpApi, PostWithoutContentLength) {
  const auto id =
      create({{"type", "noop"}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  const auto started = std::chrono::steady_clock::now();
  const std::string reply = raw_exchange(
      server_->port(), "POST /api/v1/tasks/" + std::to_string(id) +
                           "/pause HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + token +
                           "\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(reply.rfind("HTTP/1.1 200", 0), 0U) << reply;
  EXPECT_NE(reply.find("\"state\":\"paused\""), std::string::npos) << reply;
  // httplib's read timeout is 5 s; an answer after it would mean the body was waited for.
  EXPECT_LT(std::chrono::steady_clock::now() - started, 4s);

  // Without the token it is refused the same way as any other mutating call.
  const std::string refused = raw_exchange(
      server_->port(), "POST /api/v1/tasks/" + std::to_string(id) +
                           "/resume HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(refused.rfind("HTTP/1.1 401", 0), 0U) << refused;
  EXPECT_EQ(body(get("/api/v1/tasks/" + std::to_string(id)))["state"], "paused");
}

TEST_F(HttpApi, TaskListFiltersAndPages) {
  const std::string at = in_an_hour();
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(create({{"type", i < 3 ? "alpha" : "beta"},
                          {"name", "list-" + std::to_string(i)},
                          {"schedule", {{"kind", "once"}, {"at", at}}}}));
  }
  ASSERT_EQ(post("/api/v1/tasks/" + std::to_string(ids[1]) + "/pause", "").status, 200);

  json j = body(get("/api/v1/tasks"));
  EXPECT_EQ(j["tasks"].size(), 5U);
  EXPECT_EQ(j["tasks"][0]["id"], ids[4]);  // newest first
  EXPECT_TRUE(j["next"].is_null());

  j = body(get("/api/v1/tasks?type=alpha"));
  EXPECT_EQ(j["tasks"].size(), 3U);
  j = body(get("/api/v1/tasks?state=paused"));
  ASSERT_EQ(j["tasks"].size(), 1U);
  EXPECT_EQ(j["tasks"][0]["id"], ids[1]);
  j = body(get("/api/v1/tasks?name=list-3"));
  ASSERT_EQ(j["tasks"].size(), 1U);
  EXPECT_EQ(j["tasks"][0]["id"], ids[3]);

  j = body(get("/api/v1/tasks?limit=2"));
  ASSERT_EQ(j["tasks"].size(), 2U);
  EXPECT_EQ(j["next"], ids[3]);
  j = body(get("/api/v1/tasks?limit=2&before=" + std::to_string(ids[3])));
  ASSERT_EQ(j["tasks"].size(), 2U);
  EXPECT_EQ(j["tasks"][0]["id"], ids[2]);
  EXPECT_EQ(j["tasks"][1]["id"], ids[1]);

  expect_error(get("/api/v1/tasks?state=sleeping"), 400, "bad_request", "state:");
}

TEST_F(HttpApi, SqlLookingTextIsStoredVerbatim) {
  const std::string name = "x'; DROP TABLE tasks; --";
  const auto id = create({{"type", "noop"},
                          {"name", name},
                          {"payload", {{"q", "'); DELETE FROM tasks; --"}}},
                          {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  const json t = body(get("/api/v1/tasks/" + std::to_string(id)));
  EXPECT_EQ(t["name"], name);
  EXPECT_EQ(t["payload"]["q"], "'); DELETE FROM tasks; --");
  EXPECT_EQ(task_count(), 1);  // the table is still there, with the one task
  const json found = body(get("/api/v1/tasks?name=" + percent_encoded(name)));
  ASSERT_EQ(found["tasks"].size(), 1U);
  EXPECT_EQ(found["tasks"][0]["id"], id);
}

struct bad_request_case {
  const char* what;
  std::string path;
  std::string body;
  std::optional<std::string> authorization;
  int status;
  const char* code;
  const char* mentions;
};

TEST_F(HttpApi, BadRequestsAreRefusedAndWriteNothing) {
  const std::string bearer = std::string("Bearer ") + token;
  create({{"type", "noop"},
          {"name", "taken"},
          {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  const auto existing = body(get("/api/v1/tasks?name=taken"))["tasks"][0]["id"].get<std::int64_t>();
  const std::string big(100 * 1024, ' ');
  const std::vector<bad_request_case> cases = {
      {"malformed JSON", "/api/v1/tasks", R"({"type":)", bearer, 400, "bad_request",
       "malformed JSON"},
      {"not an object", "/api/v1/tasks", "[1,2]", bearer, 400, "bad_request", "JSON object"},
      {"empty body", "/api/v1/tasks", "", bearer, 400, "bad_request", "empty"},
      {"wrong type", "/api/v1/tasks", R"({"type":"noop","priority":"high"})", bearer, 400,
       "bad_request", "priority: expected an integer"},
      {"unknown field", "/api/v1/tasks", R"({"type":"noop","colour":"red"})", bearer, 400,
       "bad_request", "unknown field 'colour'"},
      {"body over the limit", "/api/v1/tasks", R"({"type":"noop","payload":{"x":")" + big + "\"}}",
       bearer, 413, "payload_too_large", "larger than"},
      {"invalid cron", "/api/v1/tasks",
       R"({"type":"noop","schedule":{"kind":"cron","expr":"61 * * * *"}})", bearer, 400,
       "bad_request", "minute field"},
      {"negative interval", "/api/v1/tasks",
       R"({"type":"noop","schedule":{"kind":"interval","every":"-30s"}})", bearer, 400,
       "bad_request", "schedule.every: must be positive"},
      {"invalid type", "/api/v1/tasks", R"({"type":"x'; DROP TABLE tasks; --"})", bearer, 400,
       "bad_request", "type:"},
      {"refused by the payload validator", "/api/v1/tasks", R"({"type":"refused"})", bearer, 400,
       "bad_request", "has no handler"},
      {"payload refused by the validator", "/api/v1/tasks",
       R"({"type":"noop","payload":{"x":"forbidden"}})", bearer, 400, "bad_request", "not allowed"},
      {"duplicate name", "/api/v1/tasks", R"({"type":"noop","name":"taken"})", bearer, 409,
       "conflict", "already exists"},
      {"missing token", "/api/v1/tasks", R"({"type":"noop"})", std::nullopt, 401, "unauthorized",
       "missing bearer token"},
      {"wrong token", "/api/v1/tasks", R"({"type":"noop"})", "Bearer not-the-token", 401,
       "unauthorized", "wrong bearer token"},
      {"token prefix", "/api/v1/tasks", R"({"type":"noop"})", "Bearer test-token", 401,
       "unauthorized", "wrong bearer token"},
      {"other scheme", "/api/v1/tasks", R"({"type":"noop"})", std::string("Basic ") + token, 401,
       "unauthorized", "missing bearer token"},
      {"unknown id", "/api/v1/tasks/999999999/pause", "", bearer, 404, "not_found",
       "no task with id 999999999"},
      {"id out of range", "/api/v1/tasks/99999999999999999999/run-now", "", bearer, 404,
       "not_found", "no task"},
      {"unauthenticated change of an unknown id", "/api/v1/tasks/999999999/pause", "", std::nullopt,
       401, "unauthorized", ""},
      {"action with a body", "/api/v1/tasks/" + std::to_string(existing) + "/pause",
       R"({"now":true})", bearer, 400, "bad_request", "no request body"},
      {"reschedule without at", "/api/v1/tasks/" + std::to_string(existing) + "/reschedule", "{}",
       bearer, 400, "bad_request", "at: required"},
      {"reschedule to nonsense", "/api/v1/tasks/" + std::to_string(existing) + "/reschedule",
       R"({"at":"next tuesday"})", bearer, 400, "bad_request", "at:"},
      {"POST to a read-only endpoint", "/api/v1/pools", "{}", bearer, 405, "method_not_allowed",
       "GET"},
      {"unknown endpoint", "/api/v1/nothing", "{}", bearer, 404, "not_found", ""},
  };
  const auto before = task_count();
  const auto existing_row = body(get("/api/v1/tasks/" + std::to_string(existing)));
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto r = post(c.path, c.body, c.authorization);
    expect_error(r, c.status, c.code, c.mentions);
    if (c.status == 401) {
      EXPECT_EQ(r.get_header_value("WWW-Authenticate"), "Bearer realm=\"sluice\"");
    }
    if (c.status == 405) {
      EXPECT_EQ(r.get_header_value("Allow"), "GET, HEAD");
    }
  }
  EXPECT_EQ(task_count(), before);
  EXPECT_EQ(body(get("/api/v1/tasks/" + std::to_string(existing))), existing_row);

  expect_error(get("/api/v1/tasks/424242"), 404, "not_found", "no task with id 424242");
  expect_error(get("/api/v1/tasks/424242/runs"), 404, "not_found", "no task with id 424242");
  expect_error(get("/api/v1/nothing"), 404, "not_found");
  expect_error(get("/api/v1/tasks/abc"), 404, "not_found");
}

TEST_F(HttpApi, NoSecretInAnyResponse) {
  create({{"type", "noop"}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  ASSERT_TRUE(test::eventually([&] { return server_->history().samples().size() >= 1; }, 10s));
  for (const char* path :
       {"/health", "/ready", "/metrics", "/api/v1/pools", "/api/v1/pools/history",
        "/api/v1/scheduler", "/api/v1/cycles", "/api/v1/tasks"}) {
    EXPECT_EQ(get(path).status, 200) << path;
  }
  post("/api/v1/tasks", "{", std::string("Bearer ") + token);
  for (const auto& b : bodies_) {
    EXPECT_EQ(b.find(token), std::string::npos) << b;
    EXPECT_EQ(b.find("conninfo"), std::string::npos) << b;
    EXPECT_EQ(b.find("postgresql://"), std::string::npos) << b;
    EXPECT_EQ(b.find("password"), std::string::npos) << b;
  }
}

TEST_F(HttpApi, WithoutATokenMutatingCallsAreForbidden) {
  extra_servers_.push_back(start_server(""));
  auto c = client_for(*extra_servers_.back());
  const auto before = task_count();
  for (const auto& auth : {std::optional<std::string>(), std::optional<std::string>("Bearer ")}) {
    httplib::Headers h;
    if (auth) h.emplace("Authorization", *auth);
    auto r = c->Post("/api/v1/tasks", h, R"({"type":"noop"})", "application/json");
    ASSERT_TRUE(r);
    expect_error(*r, 403, "forbidden", "no API token configured");
  }
  EXPECT_EQ(task_count(), before);
  auto r = c->Get("/api/v1/tasks");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpApi, PortTakenIsAClearError) {
  http::server_settings s;
  s.port = server_->port();
  http::server second(s, *app_);
  try {
    second.start();
    FAIL() << "a second server bound the same port";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("cannot listen on 127.0.0.1:" + std::to_string(s.port)),
              std::string::npos)
        << message;
    EXPECT_NE(message.find("in use"), std::string::npos) << message;
  }
  second.stop();
  EXPECT_EQ(get("/health").status, 200);  // the first server is unaffected
}

TEST_F(HttpApi, StaticHandlerServesTheRest) {
  extra_servers_.push_back(start_server(token, [](const http::static_request& req) {
    if (req.path != "/") return std::optional<http::static_response>();
    http::static_response r;
    r.content_type = "text/html; charset=utf-8";
    r.body = "<h1>dashboard</h1>" + (req.query.count("x") != 0 ? req.query.at("x") : "");
    r.headers.emplace_back("ETag", "\"v1\"");
    return std::optional<http::static_response>(r);
  }));
  auto c = client_for(*extra_servers_.back());
  auto r = c->Get("/?x=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "<h1>dashboard</h1>1");
  EXPECT_EQ(r->get_header_value("ETag"), "\"v1\"");
  r = c->Get("/missing.css");
  ASSERT_TRUE(r);
  expect_error(*r, 404, "not_found");
  r = c->Get("/api/v1/unknown");  // never offered to the dashboard
  ASSERT_TRUE(r);
  expect_error(*r, 404, "not_found");
  r = c->Get("/health");  // the API still wins
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(HttpApi, StopIsIdempotentAndSafeBeforeStart) {
  http::server_settings s;
  s.port = 0;
  http::server never_started(s, *app_);
  never_started.stop();
  never_started.stop();
  server_->stop();
  server_->stop();
  EXPECT_FALSE(client_->Get("/health"));
}
