// The operator subcommands run as an operator runs them: the built `sluice` binary in a child
// process, against the test server (the child inherits DATABASE_URL / PG*), each test in a
// schema of its own.

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/eventually.hpp"
#include "support/pg_test_env.hpp"

namespace {

using json = nlohmann::json;
using sluice::test::scoped_schema;

struct cli_result {
  int code = -1;
  std::string out;
  std::string err;
};

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `sluice args...`, its output captured in files (no pipe to fill up), and waits for it
// up to `timeout`; a child still running then is killed and the test fails.
cli_result run_sluice(const std::vector<std::string>& args,
                      std::chrono::seconds timeout = std::chrono::seconds(60)) {
  char dir_template[] = "/tmp/sluice-cli-test.XXXXXX";
  const char* dir = mkdtemp(dir_template);
  if (dir == nullptr) throw std::runtime_error("mkdtemp failed");
  const std::filesystem::path out_path = std::filesystem::path(dir) / "stdout";
  const std::filesystem::path err_path = std::filesystem::path(dir) / "stderr";

  const std::string binary = std::string(SLUICE_BINARY_DIR) + "/sluice";
  std::vector<std::string> argv_storage{binary};
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(argv_storage.size() + 1);
  for (auto& a : argv_storage)
    argv.push_back(a.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_path.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw std::runtime_error("cannot run " + binary + ": " + std::generic_category().message(rc));
  }

  cli_result r;
  int status = 0;
  // A child's exit has no signal this thread can wait on with a deadline: poll.
  if (!sluice::test::eventually([&] { return waitpid(pid, &status, WNOHANG) != 0; }, timeout)) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    ADD_FAILURE() << "sluice did not finish within " << timeout.count() << " s";
    status = -1;
  }
  if (status != -1) r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  std::filesystem::remove_all(dir);
  return r;
}

std::vector<std::string> with_schema(std::vector<std::string> args, const scoped_schema& s) {
  args.emplace_back("--schema");
  args.push_back(s.name());
  return args;
}

json parse_json(const cli_result& r) {
  json j = json::parse(r.out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << r.out << r.err;
  return j;
}

TEST(Cli, MigrateTwiceThenUpToDate) {
  const scoped_schema schema("sluice_cli");
  auto st = run_sluice(with_schema({"migrate", "--status"}, schema));
  ASSERT_EQ(st.code, 0) << st.err;
  EXPECT_NE(st.out.find("pending"), std::string::npos) << st.out;

  auto first = run_sluice(with_schema({"migrate"}, schema));
  ASSERT_EQ(first.code, 0) << first.err;
  // "applied version 1" or "applied versions 1, 2, ..."
  EXPECT_NE(first.out.find("applied version"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find(" 1"), std::string::npos) << first.out;

  auto second = run_sluice(with_schema({"migrate"}, schema));
  ASSERT_EQ(second.code, 0) << second.err;
  EXPECT_NE(second.out.find("up to date"), std::string::npos) << second.out;

  const json j = parse_json(run_sluice(with_schema({"migrate", "--status", "--json"}, schema)));
  EXPECT_EQ(j["current"], j["latest"]);
  EXPECT_EQ(j["up_to_date"], true);
}

TEST(Cli, MigrateRefusesANewerSchema) {
  const scoped_schema schema("sluice_cli");
  ASSERT_EQ(run_sluice(with_schema({"migrate"}, schema)).code, 0);
  auto conn = sluice::test::test_connect();
  conn.exec("INSERT INTO " + schema.qualified("schema_migrations") +
            " (version, name) VALUES (999, 'from the future')");
  auto r = run_sluice(with_schema({"migrate"}, schema));
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("newer than this sluice"), std::string::npos) << r.err;
}

TEST(Cli, TaskRoundTrip) {
  const scoped_schema schema("sluice_cli");
  ASSERT_EQ(run_sluice(with_schema({"migrate"}, schema)).code, 0);

  auto added = run_sluice(
      with_schema({"task", "add", "--type", "noop", "--name", "nightly", "--cron", "0 3 * * *",
                   "--tz", "Europe/Berlin", "--payload", R"({"a":1})", "--priority", "5", "--json"},
                  schema));
  ASSERT_EQ(added.code, 0) << added.err;
  const json task = parse_json(added);
  const std::int64_t id = task["id"].get<std::int64_t>();
  const std::string id_text = std::to_string(id);
  EXPECT_EQ(task["state"], "scheduled");
  EXPECT_EQ(task["schedule"]["kind"], "cron");
  EXPECT_EQ(task["schedule"]["tz"], "Europe/Berlin");
  EXPECT_EQ(task["schedule"]["expr"], "0 3 * * *");
  EXPECT_EQ(task["payload"]["a"], 1);
  EXPECT_EQ(task["priority"], 5);
  EXPECT_FALSE(task["next_run_at"].is_null());

  auto other = run_sluice(with_schema({"task", "add", "--type", "other", "--every", "5m"}, schema));
  ASSERT_EQ(other.code, 0) << other.err;
  EXPECT_NE(other.out.find("created task"), std::string::npos) << other.out;

  const json listed =
      parse_json(run_sluice(with_schema({"task", "list", "--type", "noop", "--json"}, schema)));
  ASSERT_EQ(listed.size(), 1U) << listed.dump();
  EXPECT_EQ(listed[0]["id"], id);
  EXPECT_EQ(listed[0]["name"], "nightly");

  auto paused = run_sluice(with_schema({"task", "pause", id_text, "--json"}, schema));
  ASSERT_EQ(paused.code, 0) << paused.err;
  EXPECT_EQ(parse_json(paused)["state"], "paused");

  auto again = run_sluice(with_schema({"task", "pause", id_text}, schema));
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("task " + id_text + " is paused: cannot pause"), std::string::npos)
      << again.err;

  const json by_state =
      parse_json(run_sluice(with_schema({"task", "list", "--state", "paused", "--json"}, schema)));
  ASSERT_EQ(by_state.size(), 1U);
  EXPECT_EQ(by_state[0]["id"], id);

  auto resumed = run_sluice(with_schema({"task", "resume", id_text}, schema));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed"), std::string::npos) << resumed.out;

  ASSERT_EQ(run_sluice(with_schema({"task", "cancel", id_text}, schema)).code, 0);
  const json shown =
      parse_json(run_sluice(with_schema({"task", "show", id_text, "--json"}, schema)));
  EXPECT_EQ(shown["state"], "cancelled");
  EXPECT_TRUE(shown["next_run_at"].is_null());
  EXPECT_EQ(shown["id"], id);
  const json runs =
      parse_json(run_sluice(with_schema({"task", "runs", id_text, "--json"}, schema)));
  EXPECT_TRUE(runs.is_array()) << runs.dump();

  auto human = run_sluice(with_schema({"task", "show", id_text}, schema));
  ASSERT_EQ(human.code, 0) << human.err;
  EXPECT_NE(human.out.find("cancelled"), std::string::npos) << human.out;

  auto missing = run_sluice(with_schema({"task", "show", "987654321"}, schema));
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("task 987654321 not found"), std::string::npos) << missing.err;
  auto missing_pause = run_sluice(with_schema({"task", "pause", "987654321"}, schema));
  EXPECT_EQ(missing_pause.code, 1);
  EXPECT_NE(missing_pause.err.find("task 987654321 not found"), std::string::npos);
}

TEST(Cli, TaskAddWithAUniqueKeyKeepsOrReplacesTheLiveTask) {
  const scoped_schema schema("sluice_cli");
  ASSERT_EQ(run_sluice(with_schema({"migrate"}, schema)).code, 0);
  const std::vector<std::string> add = {"task", "add", "--type",       "mail",
                                        "--at", "now", "--unique-key", "order:42"};
  auto first_args = add;
  first_args.insert(first_args.end(), {"--payload", R"({"v":1})", "--json"});
  auto first = run_sluice(with_schema(first_args, schema));
  ASSERT_EQ(first.code, 0) << first.err;
  const json created = parse_json(first);
  EXPECT_EQ(created["unique_key"], "order:42");
  const std::string id_text = std::to_string(created["id"].get<std::int64_t>());

  auto again = run_sluice(with_schema(add, schema));
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.out.find("task " + id_text + " already holds unique key 'order:42'"),
            std::string::npos)
      << again.out;

  auto replace_args = add;
  replace_args.insert(replace_args.end(),
                      {"--on-conflict", "replace", "--payload", R"({"v":2})", "--json"});
  auto replaced = run_sluice(with_schema(replace_args, schema));
  ASSERT_EQ(replaced.code, 0) << replaced.err;
  const json t = parse_json(replaced);
  EXPECT_EQ(t["id"], created["id"]);
  EXPECT_EQ(t["payload"]["v"], 2);

  auto bad_args = add;
  bad_args.insert(bad_args.end(), {"--on-conflict", "merge"});
  auto bad = run_sluice(with_schema(bad_args, schema));
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("--on-conflict: 'merge' is not one of keep, replace"), std::string::npos)
      << bad.err;
}

TEST(Cli, BadScheduleNamesTheField) {
  const scoped_schema schema("sluice_cli");
  auto cron =
      run_sluice(with_schema({"task", "add", "--type", "noop", "--cron", "61 * * * *"}, schema));
  EXPECT_NE(cron.code, 0);
  EXPECT_NE(cron.err.find("minute"), std::string::npos) << cron.err;
  EXPECT_EQ(cron.err.find('\n'), cron.err.size() - 1) << "one line: " << cron.err;

  auto both = run_sluice(
      with_schema({"task", "add", "--type", "noop", "--every", "5m", "--at", "now"}, schema));
  EXPECT_NE(both.code, 0);
  EXPECT_NE(both.err.find("exactly one of --at, --every and --cron"), std::string::npos);

  auto payload = run_sluice(
      with_schema({"task", "add", "--type", "noop", "--at", "now", "--payload", "[1]"}, schema));
  EXPECT_NE(payload.code, 0);
  EXPECT_NE(payload.err.find("payload"), std::string::npos) << payload.err;

  // A command task may not choose what the dynamic loader loads into its program.
  auto preload =
      run_sluice(with_schema({"task", "add", "--type", "command", "--at", "now", "--payload",
                              R"({"argv": ["/usr/bin/echo"],
                                             "env": {"LD_PRELOAD": "/tmp/evil.so"}})"},
                             schema));
  EXPECT_NE(preload.code, 0);
  EXPECT_NE(preload.err.find("'env.LD_PRELOAD' is not allowed: the dynamic loader reads it"),
            std::string::npos)
      << preload.err;
}

TEST(Cli, DoctorPassesOnAHealthySchemaAndCountsProblems) {
  const scoped_schema schema("sluice_cli");
  ASSERT_EQ(run_sluice(with_schema({"migrate"}, schema)).code, 0);
  auto ok = run_sluice(with_schema({"doctor"}, schema));
  EXPECT_EQ(ok.code, 0) << ok.out << ok.err;
  EXPECT_NE(ok.out.find("\nOK\n"), std::string::npos) << ok.out;

  const scoped_schema empty("sluice_cli");
  auto bad = run_sluice(with_schema({"doctor", "--json"}, empty));
  EXPECT_EQ(bad.code, 1) << bad.out << bad.err;
  const json j = parse_json(bad);
  EXPECT_EQ(j["problems"], 1);
  EXPECT_EQ(j["verdict"], "PROBLEMS FOUND: 1");
}

TEST(Cli, CyclesAndPoolsRun) {
  const scoped_schema schema("sluice_cli");
  ASSERT_EQ(run_sluice(with_schema({"migrate"}, schema)).code, 0);
  const json cycles = parse_json(run_sluice(with_schema({"cycles", "--json"}, schema)));
  EXPECT_TRUE(cycles.is_array());
  EXPECT_TRUE(cycles.empty());

  auto pools = run_sluice(with_schema({"pools", "--json"}, schema));
  ASSERT_EQ(pools.code, 0) << pools.err;
  const json p = parse_json(pools);
  ASSERT_EQ(p["pools"].size(), 2U);  // the default pool and the scheduler's lane
  EXPECT_EQ(p["pools"][0]["name"], "default");
  EXPECT_EQ(p["budget"]["fits"], true);
  EXPECT_EQ(p["connections_needed"], p["budget"]["needed"]);
}

TEST(Cli, BenchSchedulerReportsEveryPhase) {
  auto r = run_sluice({"bench", "scheduler", "--tasks", "2000", "--latency-seconds", "1",
                       "--idle-seconds", "2", "--idle-settle-seconds", "0", "--json"},
                      std::chrono::seconds(120));
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  const json j = parse_json(r);
  EXPECT_EQ(j["drain"]["tasks"], 2000);
  EXPECT_GT(j["drain"]["tasks_per_s"].get<double>(), 0);
  EXPECT_GE(j["drain"]["connections_peak"].get<int>(), 1);
  EXPECT_LE(j["drain"]["connections_peak"].get<int>(), j["drain"]["connections_budget"].get<int>());
  EXPECT_EQ(j["latency"]["tasks"], 100);
  EXPECT_EQ(j["latency"]["missing"], 0);
  EXPECT_LE(j["latency"]["p50_ms"].get<double>(), j["latency"]["p99_ms"].get<double>());
  EXPECT_GE(j["idle"]["tx_per_s"].get<double>(), 0);
  for (const char* key : {"fsync", "synchronous_commit", "version"})
    EXPECT_TRUE(j["server"].contains(key)) << key;

  // The throwaway schema is gone.
  auto conn = sluice::test::test_connect();
  EXPECT_FALSE(conn.query("SELECT to_regnamespace($1) IS NOT NULL", j["schema"].get<std::string>())
                   .one<bool>());
}

}  // namespace
