// `sluice serve` end to end: the built binary in a child process (tests/support/daemon_process),
// each test against a database of its own, spoken to over HTTP on the port it chose and stopped
// with signals. Covers every endpoint's success path, a table of bad requests that write
// nothing, the command allow-list, sql failures with their SQLSTATE, http tasks against a local
// server (a timeout included), /metrics (with promtool), draining on SIGTERM, the second signal,
// SIGHUP, JSON logs without secrets, and start-up failures that name their cause.

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/wait.h>

#include "sluice/sched/cron.hpp"
#include "sluice/sched/handlers.hpp"
#include "support/daemon_process.hpp"
#include "support/sched_test_env.hpp"
#include "unit/http_exposition_check.hpp"

namespace test = sluice::test;
namespace sched = sluice::sched;
using namespace std::chrono_literals;
using json = nlohmann::json;
using test::daemon_process;
using test::http_reply;

namespace {

constexpr const char* token = "e2e-token-0123456789abcdef";
// Sent in the daemon's DATABASE_URL. The test cluster trusts local connections, so libpq never
// sends it; it is there to show that no log line or response ever repeats it.
constexpr const char* db_password = "e2e-password-never-shown";

// The parts of the configuration a test changes; the rest is fixed test-sized timing.
struct knobs {
  std::string stop_grace = "10s";
  std::string allow = R"(["/usr/bin/echo", "/usr/bin/sleep"])";
  std::string log_level = "debug";
  int workers = 4;
  std::string extra;           // appended as is (whole tables only)
  std::string commands_extra;  // more lines of [commands]
  // The test receivers listen on loopback, which HTTP tasks may call only when allowed.
  std::string http_tasks = "allow_networks = [\"127.0.0.1/32\"]\n";  // lines of [http_tasks]
};

std::string config_toml(const knobs& k) {
  std::ostringstream s;
  s << "[database]\n"
       "connect_timeout = \"5s\"\n"
       "\n"
       "[pools.work]\n"
       "size = 2\n"
       "max_overflow = 1\n"
       "timeout = \"5s\"\n"
       "\n"
       "[pools.other]\n"
       "size = 1\n"
       "max_overflow = 0\n"
       "\n"
       "[scheduler]\n"
       "workers = "
    << k.workers
    << "\n"
       "poll_interval = \"100ms\"\n"
       "idle_poll_max = \"300ms\"\n"
       "heartbeat_interval = \"500ms\"\n"
       "node_expiry = \"3s\"\n"
       "stop_grace = \""
    << k.stop_grace
    << "\"\n"
       "stuck_grace = \"1s\"\n"
       "\n"
       "[http]\n"
       "address = \"127.0.0.1\"\n"
       "port = 0\n"
       "token = \""
    << token
    << "\"\n"
       "max_body_bytes = \"16KiB\"\n"
       "history = \"1m\"\n"
       "sample_interval = \"200ms\"\n"
       "\n"
       "[commands]\n"
       "allow = "
    << k.allow << "\n"
    << k.commands_extra
    << "\n"
       "[http_tasks]\n"
    << k.http_tasks
    << "\n"
       "[log]\n"
       "level = \""
    << k.log_level << "\"\n"
    << k.extra;
  return s.str();
}

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

json body_of(const http_reply& r) {
  json j = json::parse(r.body, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON (HTTP " << r.status << ", " << r.error
                                 << "): " << r.body;
  return j;
}

class Daemon : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(test::database_available())
        << "no PostgreSQL reachable through DATABASE_URL / PG*; run through scripts/test";
    db_ = std::make_unique<test::scoped_database>("sluice_e2e");
  }

  void TearDown() override {
    daemon_.reset();  // before the database it uses
    db_.reset();
  }

  test::daemon_options options(const knobs& k = {}, std::vector<std::string> args = {"--migrate"}) {
    test::daemon_options o;
    o.config = config_toml(k);
    o.extra_args = std::move(args);
    o.database = db_.get();
    o.env["DATABASE_URL"] = db_->conninfo() + " password=" + db_password;
    return o;
  }

  daemon_process& start(const knobs& k = {}, std::vector<std::string> args = {"--migrate"}) {
    daemon_ = std::make_unique<daemon_process>(options(k, std::move(args)));
    return *daemon_;
  }

  http_reply get(const std::string& path) {
    auto r = daemon_->get(path);
    EXPECT_NE(r.status, 0) << r.error;
    bodies_.push_back(r.body);
    return r;
  }

  http_reply post(const std::string& path, const std::string& body,
                  const std::optional<std::string>& bearer = std::string(token)) {
    auto r = daemon_->post(path, body, bearer);
    EXPECT_NE(r.status, 0) << r.error;
    bodies_.push_back(r.body);
    return r;
  }

  std::int64_t create(const json& spec) {
    const auto r = post("/api/v1/tasks", spec.dump());
    EXPECT_EQ(r.status, 201) << r.body;
    return body_of(r).value("id", std::int64_t{0});
  }

  json task(std::int64_t id) { return body_of(get("/api/v1/tasks/" + std::to_string(id))); }

  json runs(std::int64_t id) {
    return body_of(get("/api/v1/tasks/" + std::to_string(id) + "/runs"))["runs"];
  }

  // Polls the task through the API until it is in `state`.
  bool wait_for_state(std::int64_t id, const std::string& state,
                      std::chrono::milliseconds timeout = 20s) {
    return test::eventually([&] { return task(id).value("state", "") == state; }, timeout, 50ms);
  }

  // One value from the daemon's database, through a connection of the test's own.
  std::int64_t scalar(const std::string& sql) {
    auto conn = db_->connect();
    return conn.query(sql).one<std::int64_t>();
  }

  static std::string in_an_hour() {
    return sluice::sched::format_timestamp(
        std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()) + 1h);
  }

  // Every response body and the daemon's whole log are free of the token and the password.
  void expect_no_secret_anywhere() {
    const std::string log = daemon_->log();
    for (const char* secret : {token, db_password}) {
      EXPECT_EQ(log.find(secret), std::string::npos) << "the log holds a secret:\n" << log;
      for (const auto& b : bodies_)
        EXPECT_EQ(b.find(secret), std::string::npos) << "a response holds a secret: " << b;
    }
  }

  std::unique_ptr<test::scoped_database> db_;
  std::unique_ptr<daemon_process> daemon_;
  std::vector<std::string> bodies_;
};

void expect_error(const http_reply& r, int status, const std::string& code,
                  const std::string& mentions = "") {
  EXPECT_EQ(r.status, status) << r.body;
  const json j = json::parse(r.body, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r.body;
  EXPECT_EQ(j["error"]["code"], code) << r.body;
  if (!mentions.empty()) {
    EXPECT_NE(j["error"]["message"].get<std::string>().find(mentions), std::string::npos)
        << r.body << "\nexpected to mention: " << mentions;
  }
}

// ---- the API ----------------------------------------------------------------------------------

TEST_F(Daemon, EveryEndpointAnswers) {
  start({}, {"--migrate", "--log-format", "json"});

  const auto health = get("/health");
  ASSERT_EQ(health.status, 200) << health.body;
  const json h = body_of(health);
  EXPECT_EQ(h["status"], "healthy");
  EXPECT_TRUE(h["version"].is_string());
  EXPECT_TRUE(h["uptime_s"].is_number());
  const std::string node = h["node_id"].get<std::string>();

  ASSERT_TRUE(test::eventually([&] { return get("/ready").status == 200; }, 10s))
      << get("/ready").body;
  EXPECT_EQ(body_of(get("/ready"))["status"], "ready");

  // The pools of the file plus the scheduler's lane, by name.
  const json pools = body_of(get("/api/v1/pools"))["pools"];
  std::vector<std::string> names;
  for (const auto& p : pools) {
    names.push_back(p["name"].get<std::string>());
    EXPECT_EQ(p["lane"], p["name"] == "scheduler") << p.dump();
  }
  EXPECT_EQ(names, (std::vector<std::string>{"other", "scheduler", "work"}));

  ASSERT_TRUE(test::eventually(
      [&] { return !body_of(get("/api/v1/pools/history"))["samples"].empty(); }, 10s));

  const json sched = body_of(get("/api/v1/scheduler"));
  EXPECT_EQ(sched["node"]["state"], "running");
  EXPECT_EQ(sched["node"]["node_id"], node);
  ASSERT_EQ(sched["nodes"].size(), 1U) << sched.dump();
  EXPECT_EQ(sched["nodes"][0]["id"], node);
  ASSERT_TRUE(
      test::eventually([&] { return body_of(get("/api/v1/scheduler"))["leader"] == node; }, 10s));

  ASSERT_TRUE(test::eventually(
      [&] { return !body_of(get("/api/v1/cycles?limit=2"))["cycles"].empty(); }, 10s));
  EXPECT_EQ(body_of(get("/api/v1/cycles?limit=1"))["cycles"][0]["node"], node);

  // Tasks: create, get, list, run, runs; then every action.
  const auto created = post("/api/v1/tasks", json{{"type", "noop"}, {"name", "ping"}}.dump());
  ASSERT_EQ(created.status, 201) << created.body;
  const std::int64_t ping = body_of(created)["id"].get<std::int64_t>();
  EXPECT_EQ(created.header("location"), "/api/v1/tasks/" + std::to_string(ping));
  ASSERT_TRUE(wait_for_state(ping, "succeeded"));
  const json ping_runs = runs(ping);
  ASSERT_EQ(ping_runs.size(), 1U) << ping_runs.dump();
  EXPECT_EQ(ping_runs[0]["outcome"], "succeeded");
  EXPECT_EQ(ping_runs[0]["node"], node);
  const json listed = body_of(get("/api/v1/tasks?type=noop&name=ping"))["tasks"];
  ASSERT_EQ(listed.size(), 1U);
  EXPECT_EQ(listed[0]["id"], ping);

  const std::int64_t later =
      create({{"type", "noop"}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  const std::string base = "/api/v1/tasks/" + std::to_string(later);
  auto pause = post(base + "/pause", "");
  ASSERT_EQ(pause.status, 200) << pause.body;
  EXPECT_EQ(body_of(pause)["state"], "paused");
  auto resume = post(base + "/resume", "");
  ASSERT_EQ(resume.status, 200) << resume.body;
  EXPECT_EQ(body_of(resume)["state"], "scheduled");
  const std::string at = sluice::sched::format_timestamp(
      std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()) + 2h);
  auto resched = post(base + "/reschedule", json{{"at", at}}.dump());
  ASSERT_EQ(resched.status, 200) << resched.body;
  EXPECT_EQ(body_of(resched)["next_run_at"], at);
  auto run_now = post(base + "/run-now", "");
  ASSERT_EQ(run_now.status, 200) << run_now.body;
  ASSERT_TRUE(wait_for_state(later, "succeeded"));
  auto again = post(base + "/run-now", "{}");
  ASSERT_EQ(again.status, 200) << again.body;
  const std::int64_t doomed =
      create({{"type", "noop"}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  auto cancel = post("/api/v1/tasks/" + std::to_string(doomed) + "/cancel", "");
  ASSERT_EQ(cancel.status, 200) << cancel.body;
  EXPECT_EQ(body_of(cancel)["state"], "cancelled");

  // The dashboard behind everything else.
  const auto page = get("/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.header("content-type").find("text/html"), std::string::npos);

  const auto metrics = get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_EQ(metrics.header("content-type"), "text/plain; version=0.0.4; charset=utf-8");

  // --log-format json: every line one object with the four fields.
  const std::string log = daemon_->log();
  std::istringstream lines(log);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    const json j = json::parse(line, nullptr, false);
    ASSERT_TRUE(j.is_object()) << "not a JSON log line: " << line;
    for (const char* key : {"time", "level", "component", "message"})
      EXPECT_TRUE(j.contains(key) && j[key].is_string()) << line;
    ++n;
  }
  EXPECT_GT(n, 5) << log;
  EXPECT_NE(log.find("\"message\":\"serving http://127.0.0.1:" + std::to_string(daemon_->port())),
            std::string::npos)
      << log;
  expect_no_secret_anywhere();
}

struct bad_request_case {
  std::string what;
  std::string path;
  std::string body;
  std::optional<std::string> bearer;
  int status;
  std::string code;
  std::string mentions;
};

TEST_F(Daemon, BadRequestsAreRefusedAndWriteNothing) {
  start();
  const std::int64_t existing = create({{"type", "noop"},
                                        {"name", "taken"},
                                        {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  const std::string existing_path = "/api/v1/tasks/" + std::to_string(existing);
  const std::string big(32 * 1024, 'x');
  const std::vector<bad_request_case> cases = {
      {"malformed JSON", "/api/v1/tasks", R"({"type": "noop",)", token, 400, "bad_request",
       "malformed JSON"},
      {"wrong type", "/api/v1/tasks", R"({"type":"noop","max_attempts":"3"})", token, 400,
       "bad_request", "max_attempts"},
      {"payload not an object", "/api/v1/tasks", R"({"type":"noop","payload":[1]})", token, 400,
       "bad_request", "payload"},
      {"unknown field", "/api/v1/tasks", R"({"type":"noop","colour":"red"})", token, 400,
       "bad_request", "unknown field 'colour'"},
      {"body over the limit", "/api/v1/tasks",
       R"({"type":"noop","payload":{"x":")" + big + R"("}})", token, 413, "payload_too_large",
       "16384"},
      {"invalid cron", "/api/v1/tasks",
       R"({"type":"noop","schedule":{"kind":"cron","expr":"61 * * * *"}})", token, 400,
       "bad_request", "minute"},
      {"negative interval", "/api/v1/tasks",
       R"({"type":"noop","schedule":{"kind":"interval","every":"-5s"}})", token, 400, "bad_request",
       "schedule.every"},
      {"missing token", "/api/v1/tasks", R"({"type":"noop"})", std::nullopt, 401, "unauthorized",
       "missing bearer token"},
      {"wrong token", "/api/v1/tasks", R"({"type":"noop"})", std::string("not-") + token, 401,
       "unauthorized", "wrong bearer token"},
      {"unknown id", "/api/v1/tasks/987654321/pause", "", token, 404, "not_found",
       "no task with id 987654321"},
      {"SQL-looking type", "/api/v1/tasks", R"({"type":"noop'; DROP TABLE tasks; --"})", token, 400,
       "bad_request", "type"},
      {"type without a handler", "/api/v1/tasks", R"({"type":"report"})", token, 400, "bad_request",
       "no handler for task type 'report'"},
      {"sql payload with an unknown field", "/api/v1/tasks",
       R"({"type":"sql","payload":{"pool":"work","sql":"SELECT 1","parms":[]}})", token, 400,
       "bad_request", "unknown field 'parms'"},
      {"sql task on a pool that does not exist", "/api/v1/tasks",
       R"({"type":"sql","payload":{"pool":"reports","sql":"SELECT 1"}})", token, 400, "bad_request",
       "no pool named 'reports' (pools: other, work)"},
      {"sql task on the scheduler's lane", "/api/v1/tasks",
       R"({"type":"sql","payload":{"pool":"scheduler","sql":"SELECT 1"}})", token, 400,
       "bad_request", "lane"},
      {"http task to a file URL", "/api/v1/tasks",
       R"({"type":"http","payload":{"url":"file:///etc/passwd"}})", token, 400, "bad_request",
       "http"},
      {"duplicate name", "/api/v1/tasks", R"({"type":"noop","name":"taken"})", token, 409,
       "conflict", "already exists"},
      {"reschedule to nonsense", existing_path + "/reschedule", R"({"at":"tomorrow-ish"})", token,
       400, "bad_request", "at"},
      {"resume of a task that is not paused", existing_path + "/resume", "", token, 409, "conflict",
       "resume applies to paused"},
  };
  const auto count_before = scalar("SELECT count(*) FROM sluice.tasks");
  const json row_before = task(existing);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const auto r = post(c.path, c.body, c.bearer);
    expect_error(r, c.status, c.code, c.mentions);
    if (c.status == 401) {
      EXPECT_EQ(r.header("www-authenticate"), "Bearer realm=\"sluice\"");
    }
  }
  EXPECT_EQ(scalar("SELECT count(*) FROM sluice.tasks"), count_before);
  EXPECT_EQ(task(existing), row_before);
  expect_error(get("/api/v1/tasks/987654321"), 404, "not_found", "no task with id 987654321");
  expect_error(get("/api/v1/tasks/987654321/runs"), 404, "not_found");

  // SQL-looking text in a name is a name: stored and found verbatim, nothing else happens.
  const std::string sly = "x'); DROP TABLE sluice.tasks; --";
  const std::int64_t id = create(
      {{"type", "noop"}, {"name", sly}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  EXPECT_EQ(task(id)["name"], sly);
  const json found = body_of(get("/api/v1/tasks?name=" + percent_encoded(sly)))["tasks"];
  ASSERT_EQ(found.size(), 1U) << found.dump();
  EXPECT_EQ(found[0]["id"], id);
  EXPECT_EQ(scalar("SELECT count(*) FROM sluice.tasks"), count_before + 1);
  expect_no_secret_anywhere();
}

// ---- the handlers -----------------------------------------------------------------------------

TEST_F(Daemon, CommandsRunOnlyFromTheAllowList) {
  start();
  const auto before = scalar("SELECT count(*) FROM sluice.tasks");
  const auto refused =
      post("/api/v1/tasks",
           json{{"type", "command"}, {"payload", {{"argv", {"/usr/bin/id", "-u"}}}}}.dump());
  expect_error(refused, 400, "bad_request", "command not allowed: /usr/bin/id");
  // The same program by another spelling is not on the list either.
  const auto spelled = post(
      "/api/v1/tasks",
      json{{"type", "command"}, {"payload", {{"argv", {"/bin/../usr/bin/echo", "hi"}}}}}.dump());
  expect_error(spelled, 400, "bad_request", "command not allowed");
  EXPECT_EQ(scalar("SELECT count(*) FROM sluice.tasks"), before);

  const std::int64_t ok = create(
      {{"type", "command"}, {"payload", {{"argv", {"/usr/bin/echo", "hello", "; rm -rf /"}}}}});
  ASSERT_TRUE(wait_for_state(ok, "succeeded")) << task(ok).dump();
  const json run = runs(ok)[0];
  EXPECT_EQ(run["detail"]["exit_code"], 0) << run.dump();
  EXPECT_EQ(run["detail"]["stdout"], "hello ; rm -rf /\n") << run.dump();

  // A task that reached the table another way (here: written directly) is refused when it runs.
  auto conn = db_->connect();
  const auto direct =
      conn.query(
              "INSERT INTO sluice.tasks (type, payload, schedule_kind, schedule_spec, "
              "next_run_at, max_attempts) VALUES ('command', '{\"argv\": [\"/usr/bin/id\"]}', "
              "'once', '1970-01-01T00:00:00Z', now(), 1) RETURNING id")
          .one<std::int64_t>();
  conn.exec("NOTIFY \"sluice.tasks\"");
  ASSERT_TRUE(wait_for_state(direct, "failed")) << task(direct).dump();
  const json failed = runs(direct)[0];
  EXPECT_EQ(failed["outcome"], "failed");
  EXPECT_NE(failed["error"].get<std::string>().find("command not allowed"), std::string::npos)
      << failed.dump();
}

TEST_F(Daemon, CommandTasksCannotSetLoaderVariables) {
  knobs k;
  k.commands_extra = "allowed_env = [\"GREETING\"]\n";
  start(k);
  const auto before = scalar("SELECT count(*) FROM sluice.tasks");
  // LD_PRELOAD would make the allowed echo run a library of the task's choosing.
  const auto preload =
      post("/api/v1/tasks",
           json{{"type", "command"},
                {"payload",
                 {{"argv", {"/usr/bin/echo", "hi"}}, {"env", {{"LD_PRELOAD", "/tmp/evil.so"}}}}}}
               .dump());
  expect_error(preload, 400, "bad_request",
               "command payload: 'env.LD_PRELOAD' is not allowed: the dynamic loader reads it");
  const auto unlisted =
      post("/api/v1/tasks",
           json{{"type", "command"},
                {"payload", {{"argv", {"/usr/bin/echo", "hi"}}, {"env", {{"HOME", "/root"}}}}}}
               .dump());
  expect_error(unlisted, 400, "bad_request", "(allowed_env: GREETING)");
  EXPECT_EQ(scalar("SELECT count(*) FROM sluice.tasks"), before);

  const std::int64_t ok =
      create({{"type", "command"},
              {"payload", {{"argv", {"/usr/bin/echo", "hello"}}, {"env", {{"GREETING", "hi"}}}}}});
  ASSERT_TRUE(wait_for_state(ok, "succeeded")) << task(ok).dump();

  // Written to the table directly, past the API: refused when it runs.
  auto conn = db_->connect();
  const auto direct = conn.query(
                              "INSERT INTO sluice.tasks (type, payload, schedule_kind, "
                              "schedule_spec, next_run_at, max_attempts) VALUES ('command', "
                              "'{\"argv\": [\"/usr/bin/echo\"], \"env\": {\"LD_PRELOAD\": "
                              "\"/tmp/evil.so\"}}', 'once', '1970-01-01T00:00:00Z', now(), 1) "
                              "RETURNING id")
                          .one<std::int64_t>();
  conn.exec("NOTIFY \"sluice.tasks\"");
  ASSERT_TRUE(wait_for_state(direct, "failed")) << task(direct).dump();
  EXPECT_NE(runs(direct)[0]["error"].get<std::string>().find("'env.LD_PRELOAD' is not allowed"),
            std::string::npos)
      << runs(direct)[0].dump();
}

TEST_F(Daemon, SqlTasksRecordRowsAndSqlstate) {
  start();
  {
    auto conn = db_->connect();
    conn.exec("CREATE TABLE public.e2e_items (v text NOT NULL)");
  }
  const std::int64_t insert =
      create({{"type", "sql"},
              {"payload",
               {{"pool", "work"},
                {"sql", "INSERT INTO public.e2e_items (v) VALUES ($1), ($2)"},
                {"params", {"a", "b'); DROP TABLE public.e2e_items; --"}}}}});
  ASSERT_TRUE(wait_for_state(insert, "succeeded")) << task(insert).dump();
  EXPECT_EQ(runs(insert)[0]["detail"]["rows_affected"], 2) << runs(insert).dump();
  EXPECT_EQ(scalar("SELECT count(*) FROM public.e2e_items"), 2);

  const std::int64_t failing =
      create({{"type", "sql"},
              {"max_attempts", 1},
              {"payload",
               {{"pool", "other"}, {"sql", "INSERT INTO public.e2e_items (v) VALUES (NULL)"}}}});
  ASSERT_TRUE(wait_for_state(failing, "failed")) << task(failing).dump();
  const json run = runs(failing)[0];
  EXPECT_EQ(run["outcome"], "failed");
  EXPECT_EQ(run["detail"]["sqlstate"], "23502") << run.dump();
  EXPECT_EQ(run["error"].get<std::string>().rfind("SQLSTATE 23502", 0), 0U) << run.dump();
  EXPECT_EQ(task(failing)["last_error"], run["error"]);
}

// A local webhook target: /hook answers 202 and remembers the body; /slow answers only when the
// test lets it (or after 20 s), to be cut off by a timeout.
class hook_server {
 public:
  hook_server() {
    server_.Post("/hook", [this](const httplib::Request& req, httplib::Response& res) {
      {
        const std::scoped_lock lock(mutex_);
        bodies_.push_back(req.body);
        timestamps_.push_back(req.get_header_value("Sluice-Timestamp"));
        signatures_.push_back(req.get_header_value("Sluice-Signature"));
      }
      res.status = 202;
      res.set_content("accepted", "text/plain");
    });
    // Sends the client to another loopback address, where the same port may not be allowed.
    server_.Post("/elsewhere", [this](const httplib::Request&, httplib::Response& res) {
      res.set_redirect("http://127.0.0.2:" + std::to_string(port_) + "/hook");
    });
    server_.Get("/slow", [this](const httplib::Request&, httplib::Response& res) {
      std::unique_lock lock(mutex_);
      ++slow_started_;
      cv_.notify_all();
      cv_.wait_for(lock, 20s, [this] { return released_; });
      res.set_content("late", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  hook_server(const hook_server&) = delete;
  hook_server& operator=(const hook_server&) = delete;
  ~hook_server() {
    {
      const std::scoped_lock lock(mutex_);
      released_ = true;
    }
    cv_.notify_all();
    server_.stop();
    thread_.join();
  }

  [[nodiscard]] std::string url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  [[nodiscard]] std::vector<std::string> bodies() const {
    const std::scoped_lock lock(mutex_);
    return bodies_;
  }
  [[nodiscard]] std::vector<std::string> timestamps() const {
    const std::scoped_lock lock(mutex_);
    return timestamps_;
  }
  [[nodiscard]] std::vector<std::string> signatures() const {
    const std::scoped_lock lock(mutex_);
    return signatures_;
  }
  [[nodiscard]] int slow_started() const {
    const std::scoped_lock lock(mutex_);
    return slow_started_;
  }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::string> bodies_;      // guarded by mutex_
  std::vector<std::string> timestamps_;  // guarded by mutex_
  std::vector<std::string> signatures_;  // guarded by mutex_
  int slow_started_ = 0;                 // guarded by mutex_
  bool released_ = false;                // guarded by mutex_
};

TEST_F(Daemon, HttpTasksReachALocalServerAndTimeOut) {
  hook_server hooks;
  start();
  const std::int64_t hook = create({{"type", "http"},
                                    {"payload",
                                     {{"method", "POST"},
                                      {"url", hooks.url("/hook")},
                                      {"headers", {{"Content-Type", "application/json"}}},
                                      {"body", R"({"event":"e2e"})"},
                                      {"expect_status", {202}}}}});
  ASSERT_TRUE(wait_for_state(hook, "succeeded")) << task(hook).dump();
  const json detail = runs(hook)[0]["detail"];
  EXPECT_EQ(detail["status"], 202) << detail.dump();
  EXPECT_EQ(detail["body_excerpt"], "accepted") << detail.dump();
  EXPECT_EQ(hooks.bodies(), std::vector<std::string>{R"({"event":"e2e"})"});

  // The task's own timeout cuts the request off: the run is recorded as timed out.
  const std::int64_t slow = create({{"type", "http"},
                                    {"timeout_ms", 1000},
                                    {"max_attempts", 1},
                                    {"payload", {{"url", hooks.url("/slow")}}}});
  ASSERT_TRUE(wait_for_state(slow, "failed", 30s)) << task(slow).dump();
  EXPECT_EQ(hooks.slow_started(), 1);
  const json run = runs(slow)[0];
  EXPECT_EQ(run["outcome"], "timed_out") << run.dump();
  EXPECT_LT(run["duration_ms"].get<double>(), 10000) << run.dump();

  // A shorter limit in the payload fails the run with the handler's own message.
  const std::int64_t quick =
      create({{"type", "http"},
              {"max_attempts", 1},
              {"payload", {{"url", hooks.url("/slow")}, {"timeout_ms", 300}}}});
  ASSERT_TRUE(wait_for_state(quick, "failed", 30s)) << task(quick).dump();
  const json quick_run = runs(quick)[0];
  EXPECT_NE(quick_run["error"].get<std::string>().find("timed out after"), std::string::npos)
      << quick_run.dump();
}

TEST_F(Daemon, HttpTasksAreSignedWithTheSecretFromTheEnvironment) {
  hook_server hooks;
  knobs k;
  k.http_tasks +=
      "signing_secret_env = \"SLUICE_E2E_WEBHOOK_SECRET\"\n"
      "[http_tasks.signing_keys]\npartner = \"SLUICE_E2E_PARTNER_SECRET\"\n";
  const std::string secret = "e2e-webhook-secret-0123456789";
  const std::string partner_secret = "e2e-partner-secret-0123456789";
  auto o = options(k);
  o.env["SLUICE_E2E_WEBHOOK_SECRET"] = secret;
  o.env["SLUICE_E2E_PARTNER_SECRET"] = partner_secret;
  daemon_ = std::make_unique<daemon_process>(std::move(o));
  const std::string body = R"({"event":"signed"})";
  const auto before = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  const std::int64_t id =
      create({{"type", "http"},
              {"payload", {{"method", "POST"}, {"url", hooks.url("/hook")}, {"body", body}}}});
  ASSERT_TRUE(wait_for_state(id, "succeeded")) << task(id).dump();
  ASSERT_EQ(hooks.bodies(), std::vector<std::string>{body});
  const std::string ts = hooks.timestamps().at(0);
  ASSERT_FALSE(ts.empty());
  EXPECT_NEAR(std::stoll(ts), before, 30);
  // The receiver's check: HMAC-SHA256 of "<timestamp>.<body>" under the shared secret.
  EXPECT_EQ(hooks.signatures().at(0), sched::http_signature(secret, ts, body));
  EXPECT_EQ(hooks.signatures().at(0).rfind("v1=", 0), 0U);
  // The secret is in no answer of the API.
  EXPECT_EQ(get("/api/v1/tasks/" + std::to_string(id)).body.find(secret), std::string::npos);

  // A task that names a key is signed with that key's secret.
  const std::int64_t named = create({{"type", "http"},
                                     {"payload",
                                      {{"method", "POST"},
                                       {"url", hooks.url("/hook")},
                                       {"body", "p"},
                                       {"signing_key", "partner"}}}});
  ASSERT_TRUE(wait_for_state(named, "succeeded")) << task(named).dump();
  ASSERT_EQ(hooks.signatures().size(), 2U);
  EXPECT_EQ(hooks.signatures()[1],
            sched::http_signature(partner_secret, hooks.timestamps()[1], "p"));

  // A name the configuration does not define is refused when the task is created, not at its
  // first run; the name itself is not echoed (it might be a secret pasted by mistake).
  const auto unknown =
      post("/api/v1/tasks",
           json{{"type", "http"},
                {"payload", {{"url", hooks.url("/hook")}, {"signing_key", "partner_b"}}}}
               .dump());
  EXPECT_EQ(unknown.status, 400) << unknown.body;
  EXPECT_NE(unknown.body.find("signing_key: [http_tasks.signing_keys] has no key of that name "
                              "(defined: partner)"),
            std::string::npos)
      << unknown.body;
  EXPECT_EQ(unknown.body.find("partner_b"), std::string::npos) << unknown.body;
}

TEST_F(Daemon, HttpTasksToLoopbackAndMetadataAreRefusedByDefault) {
  hook_server hooks;
  knobs k;
  k.http_tasks = "";
  start(k);
  const auto refused = [&](const std::string& url, const std::string& address) {
    const std::int64_t id =
        create({{"type", "http"},
                {"max_attempts", 1},
                {"payload", {{"method", "POST"}, {"url", url}, {"follow_redirects", true}}}});
    ASSERT_TRUE(wait_for_state(id, "failed", 30s)) << task(id).dump();
    const std::string error = task(id)["last_error"].get<std::string>();
    EXPECT_NE(error.find("refused to connect: " + address + " is a"), std::string::npos) << error;
    EXPECT_NE(error.find("[http_tasks] allow_networks"), std::string::npos) << error;
  };
  refused(hooks.url("/hook"), "127.0.0.1");
  refused("http://169.254.169.254/latest/meta-data/", "169.254.169.254");
  EXPECT_TRUE(hooks.bodies().empty());
}

TEST_F(Daemon, HttpTasksAreRefusedBehindARedirect) {
  hook_server hooks;
  start();  // 127.0.0.1/32 allowed, 127.0.0.2 not
  const std::int64_t id = create(
      {{"type", "http"},
       {"max_attempts", 1},
       {"payload",
        {{"method", "POST"}, {"url", hooks.url("/elsewhere")}, {"follow_redirects", true}}}});
  ASSERT_TRUE(wait_for_state(id, "failed", 30s)) << task(id).dump();
  const std::string error = task(id)["last_error"].get<std::string>();
  EXPECT_NE(error.find("refused to connect: 127.0.0.2 is a loopback address"), std::string::npos)
      << error;
  EXPECT_TRUE(hooks.bodies().empty());
}

// ---- /metrics ---------------------------------------------------------------------------------

// `promtool check metrics` on `text`: its exit code and what it said.
std::pair<int, std::string> promtool_check(const std::string& text) {
  char path[] = "/tmp/sluice-e2e-metrics.XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return {-1, "mkstemp failed"};
  ::close(fd);
  {
    std::FILE* f = std::fopen(path, "w");
    if (f == nullptr) return {-1, "cannot write the metrics file"};
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
  }
  const std::string command = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
  std::FILE* p = ::popen(command.c_str(), "r");
  std::string out;
  int code = -1;
  if (p != nullptr) {
    char buf[512];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, p)) > 0)
      out.append(buf, n);
    const int status = ::pclose(p);
    code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  std::remove(path);
  return {code, out};
}

TEST_F(Daemon, MetricsCarryEveryFamily) {
  start();
  const std::int64_t ok = create({{"type", "noop"}});
  const std::int64_t bad = create({{"type", "sql"},
                                   {"max_attempts", 1},
                                   {"payload", {{"pool", "work"}, {"sql", "SELECT 1/0"}}}});
  create({{"type", "noop"}, {"schedule", {{"kind", "once"}, {"at", in_an_hour()}}}});
  ASSERT_TRUE(wait_for_state(ok, "succeeded"));
  ASSERT_TRUE(wait_for_state(bad, "failed"));
  // The server-wide families come from the pool history's first sample.
  ASSERT_TRUE(test::eventually(
      [&] {
        return get("/metrics").body.find("sluice_server_max_connections") != std::string::npos;
      },
      10s));

  const std::string text = get("/metrics").body;
  test::exposition e;
  const auto problems = test::check_exposition(text, &e);
  EXPECT_TRUE(problems.empty()) << ::testing::PrintToString(problems) << "\n" << text;
  if (std::FILE* f = std::fopen("/usr/bin/promtool", "r")) {
    std::fclose(f);
    const auto [code, said] = promtool_check(text);
    EXPECT_EQ(code, 0) << "promtool check metrics: " << said;
  } else {
    ADD_FAILURE() << "/usr/bin/promtool is missing: install the Debian package prometheus "
                     "(scripts/bootstrap does)";
  }

  // The HTTP API's own connections: this scrape's at least.
  EXPECT_GE(*e.value("sluice_http_connections"), 1);
  EXPECT_EQ(e.value("sluice_http_max_connections"), 1024);
  EXPECT_GE(*e.value("sluice_http_requests_total"), 1);
  EXPECT_TRUE(e.value("sluice_http_connections_dropped_total", {{"reason", "evicted"}}));

  // Per pool: connections by state, max, waiting, the acquire-wait histogram, timeouts, refusals.
  for (const char* p : {"work", "other", "scheduler"}) {
    SCOPED_TRACE(p);
    EXPECT_TRUE(e.value("sluice_pool_connections", {{"pool", p}, {"state", "idle"}}));
    EXPECT_TRUE(e.value("sluice_pool_connections", {{"pool", p}, {"state", "in_use"}}));
    EXPECT_TRUE(e.value("sluice_pool_max_connections", {{"pool", p}}));
    EXPECT_TRUE(e.value("sluice_pool_waiting_borrowers", {{"pool", p}}));
    EXPECT_TRUE(e.value("sluice_pool_acquire_wait_seconds_bucket", {{"pool", p}, {"le", "+Inf"}}));
    EXPECT_TRUE(e.value("sluice_pool_acquire_wait_seconds_count", {{"pool", p}}));
    EXPECT_TRUE(e.value("sluice_pool_acquire_timeouts_total", {{"pool", p}}));
    EXPECT_TRUE(e.value("sluice_pool_server_refusals_total", {{"pool", p}}));
  }
  EXPECT_EQ(e.value("sluice_pool_max_connections", {{"pool", "work"}}), 3);
  EXPECT_EQ(e.types["sluice_pool_acquire_wait_seconds"], "histogram");
  EXPECT_GE(*e.value("sluice_pool_checkouts_total", {{"pool", "work"}}), 1);

  // Per task type: runs by outcome, queue depth by state, queue lag.
  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "noop"}, {"outcome", "succeeded"}}), 1);
  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "sql"}, {"outcome", "failed"}}), 1);
  EXPECT_EQ(e.value("sluice_task_runs_total", {{"type", "sql"}, {"outcome", "timed_out"}}), 0);
  EXPECT_EQ(e.value("sluice_queue_tasks", {{"type", "noop"}, {"state", "scheduled"}}), 1);
  EXPECT_EQ(e.value("sluice_queue_tasks", {{"type", "sql"}, {"state", "failed"}}), 1);
  EXPECT_TRUE(e.value("sluice_queue_lag_seconds", {{"type", "noop"}}));
  EXPECT_GE(*e.value("sluice_task_claims_total", {{"type", "sql"}}), 1);

  // Cycles, the node and the leader.
  EXPECT_GT(*e.value("sluice_scheduler_cycles_total"), 0);
  EXPECT_GT(*e.value("sluice_cluster_cycles_total"), 0);
  EXPECT_TRUE(e.value("sluice_scheduler_last_cycle_age_seconds"));
  EXPECT_EQ(e.value("sluice_scheduler_state", {{"state", "running"}}), 1);
  EXPECT_EQ(e.value("sluice_scheduler_leader"), 1);
  EXPECT_EQ(e.value("sluice_cluster_nodes_alive"), 1);
  EXPECT_EQ(e.value("sluice_metrics_database_ok"), 1);
  EXPECT_EQ(e.value("sluice_scheduler_workers"), 4);
  EXPECT_TRUE(e.value("sluice_build_info"));
  EXPECT_GE(*e.value("sluice_server_connections", {{"application", "sluice/scheduler"}}), 1);
  EXPECT_EQ(text.find(db_password), std::string::npos);
}

// ---- signals ----------------------------------------------------------------------------------

TEST_F(Daemon, SigtermLetsARunningTaskFinishAndLeavesNoClaim) {
  knobs k;
  k.stop_grace = "20s";
  start(k);
  const std::int64_t id = create({{"type", "command"},
                                  {"timeout_ms", 30000},
                                  {"payload", {{"argv", {"/usr/bin/sleep", "2"}}}}});
  ASSERT_TRUE(wait_for_state(id, "running", 20s)) << task(id).dump();

  daemon_->send_signal(SIGTERM);
  const auto code = daemon_->wait_exit(30s);
  ASSERT_TRUE(code.has_value()) << "sluice serve did not exit after SIGTERM";
  EXPECT_EQ(*code, 0);

  auto conn = db_->connect();
  const auto row = conn.query(
      "SELECT state, claimed_by IS NULL AS free, lease_until IS NULL AS no_lease "
      "FROM sluice.tasks WHERE id = $1",
      id);
  ASSERT_EQ(row.rows(), 1);
  EXPECT_EQ(row[0].text("state"), "succeeded");
  EXPECT_TRUE(row[0].get<bool>("free"));
  EXPECT_TRUE(row[0].get<bool>("no_lease"));
  const auto outcome =
      conn.query("SELECT string_agg(outcome, ',') FROM sluice.task_runs WHERE task_id = $1", id);
  EXPECT_EQ(outcome[0].text(0), "succeeded");
  // Nothing else is left claimed, and the node said goodbye.
  EXPECT_EQ(conn.query("SELECT count(*) FROM sluice.tasks WHERE claimed_by IS NOT NULL")
                .one<std::int64_t>(),
            0);
  EXPECT_EQ(conn.query("SELECT string_agg(state, ',') FROM sluice.nodes")[0].text(0), "stopped");

  const std::string log = daemon_->log();
  EXPECT_NE(log.find("received SIGTERM"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped after draining"), std::string::npos) << log;
  EXPECT_LT(log.find("received SIGTERM"), log.find("stopped after draining"));
}

TEST_F(Daemon, SigtermHandsBackATaskThatOutlivesTheGrace) {
  knobs k;
  k.stop_grace = "1s";
  start(k);
  const std::int64_t id = create({{"type", "command"},
                                  {"timeout_ms", 120000},
                                  {"payload", {{"argv", {"/usr/bin/sleep", "30"}}}}});
  ASSERT_TRUE(wait_for_state(id, "running", 20s)) << task(id).dump();
  const auto sent = std::chrono::steady_clock::now();
  daemon_->send_signal(SIGTERM);
  const auto code = daemon_->wait_exit(20s);
  ASSERT_TRUE(code.has_value()) << "sluice serve did not exit after SIGTERM";
  EXPECT_EQ(*code, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 10s);

  // Cancelled by the drain, not failed: back in the queue, unclaimed, the attempt not used up,
  // no run recorded against it.
  auto conn = db_->connect();
  const auto row = conn.query(
      "SELECT state, attempt, claimed_by IS NULL AS free FROM sluice.tasks WHERE id = $1", id);
  ASSERT_EQ(row.rows(), 1);
  EXPECT_EQ(row[0].text("state"), "available");
  EXPECT_EQ(row[0].get<int>("attempt"), 0);
  EXPECT_TRUE(row[0].get<bool>("free"));
  EXPECT_EQ(conn.query("SELECT count(*) FROM sluice.task_runs WHERE task_id = $1", id)
                .one<std::int64_t>(),
            0);
}

TEST_F(Daemon, ASecondSignalExitsAtOnce) {
  knobs k;
  k.stop_grace = "60s";
  start(k);
  const std::int64_t id = create({{"type", "command"},
                                  {"timeout_ms", 120000},
                                  {"payload", {{"argv", {"/usr/bin/sleep", "20"}}}}});
  ASSERT_TRUE(wait_for_state(id, "running", 20s)) << task(id).dump();
  daemon_->send_signal(SIGINT);
  ASSERT_TRUE(daemon_->wait_for_log("received SIGINT", 10s)) << daemon_->log();
  // Still draining: the task has most of its 20 s left (and outlives the daemon).
  EXPECT_FALSE(daemon_->wait_exit(300ms).has_value());
  const auto sent = std::chrono::steady_clock::now();
  daemon_->send_signal(SIGINT);
  const auto code = daemon_->wait_exit(10s);
  ASSERT_TRUE(code.has_value()) << daemon_->log();
  EXPECT_EQ(*code, 128 + SIGINT);
  EXPECT_LT(std::chrono::steady_clock::now() - sent, 5s);
  EXPECT_NE(daemon_->log().find("again while draining: exiting at once"), std::string::npos)
      << daemon_->log();
}

TEST_F(Daemon, SighupAppliesWhatItCanAndNamesTheRest) {
  knobs k;
  k.log_level = "info";
  start(k);
  const json probe = {{"type", "command"}, {"payload", {{"argv", {"/usr/bin/true"}}}}};
  expect_error(post("/api/v1/tasks", probe.dump()), 400, "bad_request", "command not allowed");

  knobs changed = k;
  changed.log_level = "debug";
  changed.allow = R"(["/usr/bin/echo", "/usr/bin/sleep", "/usr/bin/true"])";
  changed.workers = 6;
  daemon_->write_config(config_toml(changed));
  daemon_->send_signal(SIGHUP);
  ASSERT_TRUE(daemon_->wait_for_log("reloaded ", 10s)) << daemon_->log();
  const std::string log = daemon_->log();
  EXPECT_NE(log.find("received SIGHUP"), std::string::npos) << log;
  EXPECT_NE(log.find("applied commands.allow, log.level info -> debug"), std::string::npos) << log;
  EXPECT_NE(log.find("needs a restart to take effect: scheduler.workers"), std::string::npos)
      << log;

  // The new allow-list holds for new tasks and their runs.
  const std::int64_t id = create(probe);
  ASSERT_TRUE(wait_for_state(id, "succeeded")) << task(id).dump();
  // The new level: the HTTP layer's debug lines now appear.
  EXPECT_TRUE(daemon_->wait_for_log("GET /api/v1/tasks/" + std::to_string(id), 10s));

  // A broken file is refused and the daemon keeps running as it was.
  daemon_->write_config("[pools.work]\nsise = 1\n");
  daemon_->send_signal(SIGHUP);
  ASSERT_TRUE(daemon_->wait_for_log("reload failed", 10s)) << daemon_->log();
  EXPECT_NE(daemon_->log().find("pools.work.sise"), std::string::npos);
  EXPECT_EQ(get("/health").status, 200);
  EXPECT_EQ(daemon_->stop(), 0);
}

// [flow.TYPE] is written to the database at start and again on SIGHUP (the limits are the
// fleet's, in flow_limits); a reload without the [flow] table leaves them as they are.
TEST_F(Daemon, FlowLimitsAreWrittenAtStartAndOnSighup) {
  knobs k;
  k.extra = "[flow.sql]\nmax_running = 2\n";
  start(k);
  EXPECT_EQ(scalar("SELECT count(*) FROM sluice.flow_limits WHERE type = 'sql' AND max_running = 2"
                   " AND rate_limit IS NULL"),
            1);
  knobs changed = k;
  changed.extra = "[flow.sql]\nmax_running = 5\n[flow.http]\nrate = 30\nrate_period = \"1m\"\n";
  daemon_->write_config(config_toml(changed));
  daemon_->send_signal(SIGHUP);
  ASSERT_TRUE(daemon_->wait_for_log("flow (2 limited types)", 10s)) << daemon_->log();
  EXPECT_EQ(
      scalar("SELECT count(*) FROM sluice.flow_limits WHERE type = 'sql' AND max_running = 5"), 1);
  EXPECT_EQ(scalar("SELECT count(*) FROM sluice.flow_limits WHERE type = 'http' AND rate_limit = 30"
                   " AND rate_period_ms = 60000"),
            1);
  const auto metrics = get("/metrics");
  EXPECT_NE(metrics.body.find("sluice_flow_max_running{type=\"sql\"} 5"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("sluice_flow_rate_limit{type=\"http\"} 30"), std::string::npos);
  knobs without = k;
  without.extra.clear();
  daemon_->write_config(config_toml(without));
  daemon_->send_signal(SIGHUP);
  ASSERT_TRUE(daemon_->wait_for_log("the limits in the database stay", 10s)) << daemon_->log();
  EXPECT_EQ(scalar("SELECT count(*) FROM sluice.flow_limits"), 2);
  EXPECT_EQ(daemon_->stop(), 0);
}

// ---- start-up failures --------------------------------------------------------------------------

TEST_F(Daemon, BadConfigurationExitsNamingTheKey) {
  struct bad_config {
    std::string what;
    std::string toml;
    std::map<std::string, std::optional<std::string>> env;
    std::string mentions;
  };
  const std::vector<bad_config> cases = {
      {"unknown key", "[pools.work]\nsise = 5\n", {}, "pools.work.sise: unknown key"},
      {"wrong type", "[scheduler]\nworkers = \"many\"\n", {}, "scheduler.workers"},
      {"out of range", "[http]\nport = 70000\n", {}, "http.port"},
      {"command not on disk",
       "[commands]\nallow = [\"/no/such/program\"]\n",
       {},
       "commands.allow[0]"},
      {"bad environment variable", "", {{"DB_POOL_SIZE", "lots"}}, "DB_POOL_SIZE"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    auto o = options();
    o.config = c.toml;
    o.env.insert(c.env.begin(), c.env.end());
    o.wait_until_serving = false;
    daemon_process d(o);
    const auto code = d.wait_exit(20s);
    ASSERT_TRUE(code.has_value()) << d.log();
    EXPECT_EQ(*code, 2) << d.log();
    const std::string log = d.log();
    EXPECT_NE(log.find(c.mentions), std::string::npos) << log;
    EXPECT_NE(log.find(d.config_path().string()), std::string::npos) << log;
    // One line, and nothing connected: the database has no schema yet.
    EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 1) << log;
  }
  EXPECT_EQ(scalar("SELECT count(*) FROM pg_namespace WHERE nspname = 'sluice'"), 0);
}

TEST_F(Daemon, RefusesAnOutdatedSchemaWithoutMigrate) {
  auto o = options({}, {});
  o.wait_until_serving = false;
  daemon_ = std::make_unique<daemon_process>(o);
  const auto code = daemon_->wait_exit(30s);
  ASSERT_TRUE(code.has_value()) << daemon_->log();
  EXPECT_EQ(*code, 1);
  EXPECT_NE(daemon_->log().find("run `sluice migrate` (or start with --migrate)"),
            std::string::npos)
      << daemon_->log();
}

TEST_F(Daemon, UnreachableDatabaseFailsFast) {
  auto o = options();
  o.env["DATABASE_URL"] = "host=127.0.0.1 port=" + std::to_string(test::unused_local_port()) +
                          " dbname=nowhere user=sluice password=" + db_password;
  o.wait_until_serving = false;
  daemon_ = std::make_unique<daemon_process>(o);
  // Well before the lane's acquire timeout (30 s): the probe connection reports the refusal.
  const auto code = daemon_->wait_exit(15s);
  ASSERT_TRUE(code.has_value()) << daemon_->log();
  EXPECT_EQ(*code, 1);
  const std::string log = daemon_->log();
  EXPECT_NE(log.find("could not start: "), std::string::npos) << log;
  EXPECT_NE(log.find("Connection refused"), std::string::npos) << log;
  EXPECT_EQ(log.find(db_password), std::string::npos) << log;
}

TEST_F(Daemon, BudgetBeyondTheServerStopsTheStart) {
  auto conn = db_->connect();
  const auto max = conn.query("SELECT current_setting('max_connections')::int").one<int>();
  knobs k;
  k.extra = "\n[pools.huge]\nsize = " + std::to_string(max) + "\nmax_overflow = 0\n";
  auto o = options(k);
  o.wait_until_serving = false;
  daemon_ = std::make_unique<daemon_process>(o);
  const auto code = daemon_->wait_exit(30s);
  ASSERT_TRUE(code.has_value()) << daemon_->log();
  EXPECT_EQ(*code, 1);
  EXPECT_NE(daemon_->log().find("could not start: "), std::string::npos) << daemon_->log();
  EXPECT_NE(daemon_->log().find("max_connections " + std::to_string(max)), std::string::npos)
      << daemon_->log();
}

TEST_F(Daemon, PrintConfigShowsNoSecret) {
  auto o = options();
  o.extra_args = {"--print-config"};
  o.wait_until_serving = false;
  daemon_ = std::make_unique<daemon_process>(o);
  const auto code = daemon_->wait_exit(20s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << daemon_->log();
  const json j = json::parse(daemon_->log(), nullptr, false);
  ASSERT_TRUE(j.is_object()) << daemon_->log();
  EXPECT_EQ(j["http"]["token_set"], true);
  EXPECT_EQ(j["http"]["port"], 0);
  EXPECT_EQ(j["scheduler"]["stop_grace"], "10s");
  EXPECT_NE(j["database"]["url"].get<std::string>().find(db_->name()), std::string::npos);
  EXPECT_EQ(daemon_->log().find(token), std::string::npos);
  EXPECT_EQ(daemon_->log().find(db_password), std::string::npos);
}

TEST_F(Daemon, PrintConfigShowsNoSecretInAnyFormLibpqReads) {
  // Each url hides the same secret in another of libpq's forms; --print-config connects to
  // none of them.
  const std::string secret = "pc-secret-4711";
  knobs k;
  k.extra =
      "\n[pools.keyword_encoded]\nurl = \"postgresql://app@db.internal/prod?passwor%64=" + secret +
      "&sslmode=require\"\n" +
      "\n[pools.sslpassword]\nurl = \"postgresql://app@db.internal/prod?sslpassword=" + secret +
      "\"\n" + "\n[pools.multi_host]\nurl = \"postgresql://app:" + secret +
      "@db1:5432,db2:5433/prod?target_session_attrs=read-write\"\n" +
      "\n[pools.quoted]\nurl = \"host=db.internal password = '" + secret +
      " two' sslpassword='a\\\\'" + secret + "'\"\n";
  auto o = options(k);
  o.extra_args = {"--print-config"};
  o.wait_until_serving = false;
  daemon_ = std::make_unique<daemon_process>(o);
  const auto code = daemon_->wait_exit(20s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0) << daemon_->log();
  const std::string log = daemon_->log();
  EXPECT_EQ(log.find(secret), std::string::npos) << log;
  EXPECT_EQ(log.find("pc-secret"), std::string::npos) << log;
  const json j = json::parse(log, nullptr, false);
  ASSERT_TRUE(j.is_object()) << log;
  std::map<std::string, std::string> urls;
  for (const auto& [name, pool] : j["pools"].items())
    urls[name] = pool["url"];
  EXPECT_EQ(urls["keyword_encoded"],
            "postgresql://app@db.internal/prod?passwor%64=***&sslmode=require");
  EXPECT_EQ(urls["sslpassword"], "postgresql://app@db.internal/prod?sslpassword=***");
  EXPECT_EQ(urls["multi_host"],
            "postgresql://app:***@db1:5432,db2:5433/prod?target_session_attrs=read-write");
  EXPECT_EQ(urls["quoted"], "host=db.internal password = *** sslpassword=***");
}

}  // namespace
