// The command handler against real executables: output and exit codes, the exact environment
// (and the variables no task may set), stdin, truncation, the allow-list, and that a command past
// its deadline is terminated (or killed, when it ignores SIGTERM) together with its whole process
// group and reaped.

#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>

#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sluice/pg/connection.hpp"
#include "sluice/sched/handlers.hpp"

namespace sched = sluice::sched;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;
using testing::HasSubstr;
using testing::StartsWith;

namespace {

sched::command_policy test_policy() {
  sched::command_policy policy;
  policy.allow = {"/bin/echo", "/bin/sh",       "/bin/sleep", "/usr/bin/env",        "/bin/pwd",
                  "/bin/cat",  "/usr/bin/head", "/bin/ls",    "/nonexistent/program"};
  policy.kill_grace = 500ms;
  return policy;
}

struct outcome {
  sched::handler_result result;
  nlohmann::json detail;
  milliseconds elapsed{};
};

// Runs the handler on `payload` with a token whose deadline is `timeout` away. `while_running`
// (if given) runs on another thread with the token, e.g. to cancel it.
outcome run(const sched::command_policy& policy, const nlohmann::json& payload,
            milliseconds timeout = 10s,
            const std::function<void(sched::cancel_token&)>& while_running = {}) {
  sched::task t;
  t.id = 1;
  t.type = "command";
  t.payload = payload.dump();
  t.timeout_ms = timeout.count();
  sched::cancel_token token;
  const auto started = steady_clock::now();
  token.set_deadline(started + timeout);
  std::thread helper;
  if (while_running) helper = std::thread([&] { while_running(token); });
  sched::task_context ctx(t, std::chrono::system_clock::now(), token, nullptr,
                          [](sluice::pg::connection&) { return false; });
  outcome o;
  o.result = sched::make_command_handler(policy)(ctx);
  o.elapsed = std::chrono::duration_cast<milliseconds>(steady_clock::now() - started);
  if (helper.joinable()) helper.join();
  o.detail = ctx.detail().empty() ? nlohmann::json() : nlohmann::json::parse(ctx.detail());
  return o;
}

// True when no process of group `pgid` is left. This test process is a child subreaper (see
// main), so members orphaned by the handler's kill are re-parented here and reaped here, as
// init would; without that, a PID 1 that never reaps keeps their zombies in the group.
bool group_gone(pid_t pgid, milliseconds timeout = 2s) {
  const auto deadline = steady_clock::now() + timeout;
  for (;;) {
    while (::waitpid(-pgid, nullptr, WNOHANG) > 0) {
    }
    if (::kill(-pgid, 0) != 0 && errno == ESRCH) return true;
    if (steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);  // dying processes give no signal to wait on
  }
}

// The handler reaped its child: waiting for it again finds no such child.
bool reaped(pid_t pid) {
  return ::waitpid(pid, nullptr, WNOHANG) < 0 && errno == ECHILD;
}

}  // namespace

TEST(HandlersCommand, EchoSucceedsWithItsOutput) {
  const auto o = run(test_policy(), {{"argv", {"/bin/echo", "hi", "there"}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stdout"], "hi there\n");
  EXPECT_EQ(o.detail["stderr"], "");
  EXPECT_EQ(o.detail["exit_code"], 0);
  EXPECT_TRUE(o.detail["signal"].is_null());
  EXPECT_EQ(o.detail["timed_out"], false);
  EXPECT_TRUE(reaped(o.detail["pid"].get<pid_t>()));
}

TEST(HandlersCommand, NonZeroExitIsAFailureWithTheCode) {
  const auto o =
      run(test_policy(), {{"argv", {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error, "exit code 3");
  EXPECT_EQ(o.detail["exit_code"], 3);
  EXPECT_EQ(o.detail["stdout"], "out\n");
  EXPECT_EQ(o.detail["stderr"], "err\n");
  EXPECT_TRUE(reaped(o.detail["pid"].get<pid_t>()));
}

TEST(HandlersCommand, EnvironmentIsExactlyThePayloadsPlusPath) {
  auto o = run(test_policy(), {{"argv", {"/usr/bin/env"}}, {"env", {{"K", "V"}, {"A", "b c"}}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  // nlohmann orders object keys; env prints the environment in the order it was given.
  EXPECT_EQ(o.detail["stdout"], "A=b c\nK=V\nPATH=/usr/bin:/bin\n");

  // PATH is the operator's (policy.path), never the task's.
  sched::command_policy policy = test_policy();
  policy.path = "/opt/tools/bin:/usr/bin";
  o = run(policy, {{"argv", {"/usr/bin/env"}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stdout"], "PATH=/opt/tools/bin:/usr/bin\n");
}

TEST(HandlersCommand, LoaderAndInterpreterVariablesAreRefusedAtRunTime) {
  // The task would run an allowed program with a library of its choosing preloaded. The run
  // fails before anything starts: the marker the shell would create never appears.
  const std::filesystem::path marker =
      std::filesystem::temp_directory_path() / ("sluice_preload_" + std::to_string(getpid()));
  for (const char* name : {"LD_PRELOAD", "LD_LIBRARY_PATH", "ld_audit", "PATH", "BASH_ENV",
                           "GCONV_PATH", "PYTHONPATH", "NODE_OPTIONS"}) {
    const auto o = run(test_policy(), {{"argv", {"/bin/sh", "-c", ": > " + marker.string()}},
                                       {"env", {{name, "/tmp/evil.so"}}}});
    EXPECT_FALSE(o.result.ok) << name;
    EXPECT_THAT(o.result.error,
                StartsWith(std::string("command payload: 'env.") + name + "' is not allowed: "));
    EXPECT_TRUE(o.detail.is_null()) << name << ": " << o.detail.dump();
    EXPECT_FALSE(std::filesystem::exists(marker)) << name;
  }
}

TEST(HandlersCommand, WithAnAllowedEnvListOnlyThoseNamesMaySet) {
  sched::command_policy policy = test_policy();
  policy.allowed_env = {"LOG_DIR", "TZ"};
  auto o = run(policy, {{"argv", {"/usr/bin/env"}}, {"env", {{"LOG_DIR", "/var/log/app"}}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stdout"], "LOG_DIR=/var/log/app\nPATH=/usr/bin:/bin\n");

  o = run(policy, {{"argv", {"/usr/bin/env"}}, {"env", {{"HOME", "/root"}}}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error,
            "command payload: 'env.HOME' is not allowed: not one of the variables the operator "
            "allows (allowed_env: LOG_DIR, TZ)");
}

TEST(HandlersCommand, RunsInTheGivenDirectory) {
  const auto o = run(test_policy(), {{"argv", {"/bin/pwd"}}, {"cwd", "/tmp"}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stdout"], "/tmp\n");

  const auto missing = run(test_policy(), {{"argv", {"/bin/pwd"}}, {"cwd", "/no/such/dir"}});
  EXPECT_FALSE(missing.result.ok);
  EXPECT_EQ(missing.result.error,
            "cannot start /bin/pwd in /no/such/dir: No such file or directory");
}

TEST(HandlersCommand, StdinIsFedAndEmptyWithoutIt) {
  auto o = run(test_policy(), {{"argv", {"/bin/cat"}}, {"stdin", "line 1\nline 2\n"}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stdout"], "line 1\nline 2\n");

  o = run(test_policy(), {{"argv", {"/bin/cat"}}});  // /dev/null: cat ends at once
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stdout"], "");
}

TEST(HandlersCommand, OutputBeyondTheLimitIsReadAndDropped) {
  sched::command_policy policy = test_policy();
  policy.max_output_bytes = 1000;
  // 4 MiB through stdin and back: far more than a pipe holds, so this also checks that writing
  // stdin and reading stdout interleave instead of deadlocking.
  const std::string input(4 * 1024 * 1024, 'x');
  auto o = run(policy, {{"argv", {"/bin/cat"}}, {"stdin", input}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stdout"], std::string(1000, 'x'));
  EXPECT_EQ(o.detail["stdout_bytes"], input.size());

  o = run(policy,
          {{"argv", {"/bin/sh", "-c", "/usr/bin/head -c 300000 /dev/zero >&2; echo done"}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stderr"].get<std::string>().size(), 1000U);
  EXPECT_EQ(o.detail["stderr_bytes"], 300000);
  EXPECT_EQ(o.detail["stdout"], "done\n");
}

TEST(HandlersCommand, ACommandThatStopsReadingStdinDoesNotHurtTheDaemon) {
  // head exits after one line while megabytes of stdin are still unwritten: the write fails
  // with EPIPE, and the SIGPIPE it raises must not reach this process.
  const std::string input(2 * 1024 * 1024, '\n');
  const auto o = run(test_policy(), {{"argv", {"/usr/bin/head", "-n", "1"}}, {"stdin", input}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_EQ(o.detail["stdout"], "\n");
}

TEST(HandlersCommand, NotAllowedCommandsDoNotRun) {
  const std::filesystem::path marker =
      std::filesystem::temp_directory_path() / ("sluice_not_allowed_" + std::to_string(getpid()));
  const auto o = run(test_policy(), {{"argv", {"/usr/bin/touch", marker.string()}}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, HasSubstr("command not allowed: /usr/bin/touch"));
  EXPECT_FALSE(std::filesystem::exists(marker));
}

TEST(HandlersCommand, AMissingExecutableFailsToStart) {
  const auto o = run(test_policy(), {{"argv", {"/nonexistent/program"}}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error, "cannot start /nonexistent/program: No such file or directory");
}

TEST(HandlersCommand, TheChildInheritsOnlyStdio) {
  // Descriptors this process opened without close-on-exec, as careless library code would:
  // one with the next free number and one far above it.
  const int leaked = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaked, 0);
  const int leaked_high = ::dup2(leaked, 900);
  ASSERT_EQ(leaked_high, 900);
  const auto o = run(test_policy(), {{"argv", {"/bin/ls", "/proc/self/fd"}}});
  ::close(leaked);
  ::close(leaked_high);
  ASSERT_TRUE(o.result.ok) << o.result.error;
  // 0, 1, 2 and the directory ls itself opened to list /proc/self/fd.
  EXPECT_EQ(o.detail["stdout"], "0\n1\n2\n3\n");
}

TEST(HandlersCommand, ASignalledCommandFailsNamingTheSignal) {
  const auto o = run(test_policy(), {{"argv", {"/bin/sh", "-c", "kill -KILL $$"}}});
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error, "killed by SIGKILL");
  EXPECT_TRUE(o.detail["exit_code"].is_null());
  EXPECT_EQ(o.detail["signal"], SIGKILL);
  EXPECT_EQ(o.detail["timed_out"], false);
}

TEST(HandlersCommand, PastTheDeadlineTheProcessGroupIsTerminated) {
  const sched::command_policy policy = test_policy();
  const milliseconds timeout = 300ms;
  const auto o = run(policy, {{"argv", {"/bin/sleep", "10"}}}, timeout);
  EXPECT_FALSE(o.result.ok);
  EXPECT_THAT(o.result.error, StartsWith("timed out after "));
  EXPECT_THAT(o.result.error, HasSubstr("process group terminated (SIGTERM)"));
  EXPECT_EQ(o.detail["timed_out"], true);
  EXPECT_EQ(o.detail["signal"], SIGTERM);
  EXPECT_GE(o.elapsed, timeout);
  EXPECT_LT(o.elapsed, timeout + policy.kill_grace + 1s);
  const auto pid = o.detail["pid"].get<pid_t>();
  EXPECT_TRUE(reaped(pid));
  EXPECT_TRUE(group_gone(pid));
}

TEST(HandlersCommand, AGroupIgnoringSigtermIsKilledAfterTheGrace) {
  const sched::command_policy policy = test_policy();
  const std::filesystem::path ready =
      std::filesystem::temp_directory_path() / ("sluice_trap_ready_" + std::to_string(getpid()));
  std::filesystem::remove(ready);
  steady_clock::time_point cancelled_at{};
  // The shell and its sleep both ignore SIGTERM. The token is cancelled once the trap is set.
  const auto o = run(
      policy,
      {{"argv",
        {"/bin/sh", "-c", "trap '' TERM; : > " + ready.string() + "; /bin/sleep 30; echo after"}}},
      30s, [&](sched::cancel_token& token) {
        const auto give_up = steady_clock::now() + 10s;
        while (!std::filesystem::exists(ready) && steady_clock::now() < give_up)
          std::this_thread::sleep_for(5ms);  // no signal to wait on
        cancelled_at = steady_clock::now();
        token.cancel();
      });
  std::filesystem::remove(ready);
  const auto finished_at = steady_clock::now();
  EXPECT_FALSE(o.result.ok);
  EXPECT_EQ(o.result.error,
            "cancelled: process group killed (SIGKILL) after ignoring SIGTERM for 500 ms");
  EXPECT_EQ(o.detail["signal"], SIGKILL);
  EXPECT_EQ(o.detail["stdout"], "");
  EXPECT_GE(finished_at - cancelled_at, policy.kill_grace);
  EXPECT_LT(finished_at - cancelled_at, policy.kill_grace + 1s);
  const auto pid = o.detail["pid"].get<pid_t>();
  EXPECT_TRUE(reaped(pid));
  EXPECT_TRUE(group_gone(pid));
}

TEST(HandlersCommand, LeftoverProcessesInTheGroupAreKilledWhenTheCommandExits) {
  // The shell exits at once and leaves a sleep behind holding its stdout open.
  const auto started = steady_clock::now();
  const auto o = run(test_policy(), {{"argv", {"/bin/sh", "-c", "/bin/sleep 30 & echo started"}}});
  ASSERT_TRUE(o.result.ok) << o.result.error;
  EXPECT_LT(steady_clock::now() - started, 5s);
  EXPECT_EQ(o.detail["stdout"], "started\n");
  EXPECT_TRUE(group_gone(o.detail["pid"].get<pid_t>()));
}

TEST(HandlersCommand, ACancelledTokenStopsTheCommandBeforeItStarts) {
  sched::task t;
  t.payload = R"({"argv": ["/bin/echo", "hi"]})";
  sched::cancel_token token;
  token.set_deadline(steady_clock::now() + 10s);
  token.cancel();
  sched::task_context ctx(t, std::chrono::system_clock::now(), token, nullptr,
                          [](sluice::pg::connection&) { return false; });
  const auto r = sched::make_command_handler(test_policy())(ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.error, "cancelled before the command started");
}

TEST(HandlersCommand, WithoutADeadlineThePolicysDefaultTimeoutApplies) {
  sched::command_policy policy = test_policy();
  policy.default_timeout = 200ms;
  sched::task t;
  t.payload = R"({"argv": ["/bin/sleep", "10"]})";
  const sched::cancel_token token;  // no deadline: a handler called outside the scheduler
  sched::task_context ctx(t, std::chrono::system_clock::now(), token, nullptr,
                          [](sluice::pg::connection&) { return false; });
  const auto started = steady_clock::now();
  const auto r = sched::make_command_handler(policy)(ctx);
  EXPECT_FALSE(r.ok);
  EXPECT_THAT(r.error, StartsWith("timed out after "));
  EXPECT_LT(steady_clock::now() - started, 200ms + policy.kill_grace + 1s);
}

int main(int argc, char** argv) {
  // Orphans of the killed process groups are re-parented to this process and reaped by
  // group_gone(); see there.
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
