#include "sched_test_env.hpp"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/child_process.hpp"

extern char** environ;

namespace sluice::test {

using namespace std::chrono_literals;
using std::chrono::steady_clock;

std::string conninfo_with_application(const std::string& application_name) {
  const std::string base = test_conninfo();
  const bool uri = base.rfind("postgresql://", 0) == 0 || base.rfind("postgres://", 0) == 0;
  if (uri) {
    return base + (base.find('?') == std::string::npos ? "?" : "&") +
           "application_name=" + application_name;
  }
  return base + (base.empty() ? "" : " ") + "application_name=" + application_name;
}

pool::settings test_pool_settings(const std::string& name, const std::string& application_name,
                                  int size, int max_overflow) {
  pool::settings s;
  s.name = name;
  s.conninfo = test_conninfo();
  s.application_name = application_name;
  s.size = size;
  s.max_overflow = max_overflow;
  s.timeout = 30s;
  s.connect_backoff_initial = 20ms;
  s.connect_backoff_max = 500ms;
  return s;
}

sched_env::sched_env(bool migrate, int lane_size, int lane_overflow)
    : schema_("sched_t"), app_prefix_("st-" + unique_suffix()) {
  lane_ = std::make_unique<pool::pool>(
      test_pool_settings("lane", app_prefix_ + "-lane", lane_size, lane_overflow));
  store_ = std::make_unique<sched::store>(*lane_, schema_.name());
  if (migrate) store_->migrate();
  sql_ = test_connect(app_prefix_ + "-test");
  schema_.use(sql_);
}

sched_env::~sched_env() {
  // The pool first: DROP SCHEMA must not wait behind one of its connections.
  store_.reset();
  lane_.reset();
  sql_ = pg::connection();
}

sched::scheduler_settings sched_env::settings(int workers) const {
  sched::scheduler_settings s;
  s.schema = schema_.name();
  s.node_id = "node-" + unique_suffix();
  s.workers = workers;
  s.poll_interval = 100ms;
  s.idle_poll_max = 300ms;
  s.heartbeat_interval = 500ms;
  s.node_expiry = 3s;
  s.stop_grace = 2s;
  s.stuck_grace = 500ms;
  s.listen = true;
  s.listen_conninfo = conninfo_with_application(app_prefix_ + "-listen");
  return s;
}

bool wait_for_state(sched::store& store, std::int64_t id, sched::task_state state,
                    std::chrono::milliseconds timeout) {
  return eventually(
      [&] {
        const std::optional<sched::task> t = store.get(id);
        return t && t->state == state;
      },
      timeout);
}

bool wait_for_cycles(const sched::scheduler& node, int n, std::chrono::milliseconds timeout) {
  const std::uint64_t target = node.status().cycles + static_cast<std::uint64_t>(n);
  return eventually([&] { return node.status().cycles >= target; }, timeout);
}

std::vector<sched::task_run> runs_oldest_first(sched::store& store, std::int64_t id) {
  std::vector<sched::task_run> runs = store.runs(id, 1000);
  std::reverse(runs.begin(), runs.end());
  return runs;
}

sched::task_spec due_now(std::string type) {
  sched::task_spec spec;
  spec.type = std::move(type);
  return spec;
}

// ---- node_process -------------------------------------------------------------------------

namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), "node_process: " + what);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace

node_process::node_process(const std::string& executable, const std::vector<std::string>& args,
                           std::chrono::milliseconds ready_timeout) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno(errno, "pipe");

  // The child's stdout is the pipe (dup2 clears O_CLOEXEC on the copy); its stderr is ours, so
  // its log lands in the test's output.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);

  std::vector<std::string> argv_storage;
  argv_storage.push_back(executable);
  argv_storage.insert(argv_storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(argv_storage.size() + 1);
  for (std::string& a : argv_storage)
    argv.push_back(a.data());
  argv.push_back(nullptr);

  const int rc = ::posix_spawn(&pid_, executable.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    pid_ = -1;
    throw_errno(rc, "spawn " + executable);
  }
  stdout_fd_ = fds[0];

  // Read until a line "ready", the child exits (EOF), or the deadline.
  std::string seen;
  const auto deadline = steady_clock::now() + ready_timeout;
  for (;;) {
    if (seen.find("ready\n") != std::string::npos) return;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - steady_clock::now());
    if (left <= 0ms) {
      kill_now();
      throw std::runtime_error("node_process: no \"ready\" from " + executable + " within " +
                               std::to_string(ready_timeout.count()) + " ms (stdout: '" + seen +
                               "')");
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left.count()));
    if (n < 0 && errno != EINTR) throw_errno(errno, "poll");
    if (n <= 0) continue;
    char buf[256];
    const ssize_t got = ::read(stdout_fd_, buf, sizeof buf);
    if (got > 0) {
      seen.append(buf, static_cast<std::size_t>(got));
      continue;
    }
    if (got < 0 && errno == EINTR) continue;
    // EOF: the child closed stdout, which means it is exiting.
    reap(true);
    throw std::runtime_error("node_process: " + executable + " " + describe_status(status_) +
                             " before it was ready (stdout: '" + seen + "')");
  }
}

node_process::~node_process() {
  if (pid_ > 0 && !reaped_) kill_now();
  if (stdout_fd_ >= 0) ::close(stdout_fd_);
}

bool node_process::reap(bool block) {
  if (reaped_ || pid_ <= 0) return true;
  reaped_ = reap_child(pid_, status_, block, "node_process");
  return reaped_;
}

bool node_process::running() {
  return !reap(false);
}

void node_process::kill_now() {
  if (reaped_ || pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  reap(true);
}

int node_process::terminate(std::chrono::milliseconds timeout) {
  if (!reaped_ && pid_ > 0) {
    ::kill(pid_, SIGTERM);
    const bool exited = eventually([this] { return reap(false); }, timeout, 10ms);
    if (!exited) {
      kill_now();
      return -1;
    }
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

}  // namespace sluice::test
