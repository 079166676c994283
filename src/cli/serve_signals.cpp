// `sluice serve`'s signals: SIGTERM and SIGINT drain (a second one exits at once), SIGHUP
// reloads the configuration file (serve.hpp, docs/cli.md#signals).

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli/serve.hpp"

namespace sluice::cli::serve_detail {
namespace {

std::string signal_name(int signo) {
  switch (signo) {
    case SIGTERM:
      return "SIGTERM";
    case SIGINT:
      return "SIGINT";
    case SIGHUP:
      return "SIGHUP";
    default:
      return "signal " + std::to_string(signo);
  }
}

// The dotted keys whose values differ between two to_json_redacted() documents. Objects are
// compared key by key; anything else (arrays included) as a whole.
void collect_changes(const nlohmann::json& before, const nlohmann::json& after,
                     const std::string& prefix, std::vector<std::string>& out) {
  if (before.is_object() && after.is_object()) {
    std::vector<std::string> keys;
    for (const auto& [k, v] : before.items())
      keys.push_back(k);
    for (const auto& [k, v] : after.items()) {
      if (!before.contains(k)) keys.push_back(k);
    }
    for (const auto& k : keys) {
      const std::string path = prefix.empty() ? k : prefix + "." + k;
      const nlohmann::json none;
      collect_changes(before.contains(k) ? before[k] : none, after.contains(k) ? after[k] : none,
                      path, out);
    }
    return;
  }
  if (before != after) out.push_back(prefix);
}

}  // namespace

signal_watcher::signal_watcher(daemon_log& log) : log_(log) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  if (const int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0) {
    throw std::system_error(rc, std::generic_category(), "pthread_sigmask");
  }
  signal_fd_ = ::signalfd(-1, &set, SFD_CLOEXEC);
  if (signal_fd_ < 0) throw std::system_error(errno, std::generic_category(), "signalfd");
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    const int err = errno;
    ::close(signal_fd_);
    throw std::system_error(err, std::generic_category(), "eventfd");
  }
}

signal_watcher::~signal_watcher() {
  if (thread_.joinable()) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  ::close(wake_fd_);
  ::close(signal_fd_);
}

void signal_watcher::start(std::string config_file, std::string drain_note) {
  config_file_ = std::move(config_file);
  drain_note_ = std::move(drain_note);
  thread_ = std::thread([this] { loop(); });
}

signal_watcher::event signal_watcher::wait() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [this] { return stopping_ || !events_.empty(); });
  if (stopping_) return event::stop;
  const event e = events_.front();
  events_.pop_front();
  return e;
}

bool signal_watcher::stop_requested() const {
  const std::scoped_lock lock(mutex_);
  return stopping_;
}

void signal_watcher::loop() {
  for (;;) {
    pollfd fds[2] = {{signal_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log_.error("signal watcher: poll failed: " + std::generic_category().message(errno));
      return;
    }
    if ((fds[1].revents & POLLIN) != 0) return;
    signalfd_siginfo info{};
    const ssize_t got = ::read(signal_fd_, &info, sizeof info);
    if (got != static_cast<ssize_t>(sizeof info)) continue;
    on_signal(static_cast<int>(info.ssi_signo), static_cast<pid_t>(info.ssi_pid));
  }
}

void signal_watcher::on_signal(int signo, pid_t sender) {
  const std::string from = sender > 0 ? " from pid " + std::to_string(sender) : "";
  if (signo == SIGHUP) {
    bool stopping = false;
    {
      const std::scoped_lock lock(mutex_);
      stopping = stopping_;
      if (!stopping) events_.push_back(event::reload);
    }
    if (stopping) {
      log_.info("received SIGHUP" + from + " while shutting down: ignored");
    } else {
      log_.info("received SIGHUP" + from + ": reloading " + config_file_);
      cv_.notify_all();
    }
    return;
  }
  bool again = false;
  {
    const std::scoped_lock lock(mutex_);
    again = stopping_;
    stopping_ = true;
  }
  if (again) {
    log_.warn("received " + signal_name(signo) + from +
              " again while draining: exiting at once; tasks still running are handed to the "
              "other nodes when this node's heartbeat expires");
    // Nothing of the process's state is touched from here: the claims stay in the database
    // for the leader's rescue, and the kernel closes every connection.
    std::_Exit(128 + signo);
  }
  log_.info("received " + signal_name(signo) + from + ": draining: " + drain_note_ +
            " (send it again to exit at once)");
  cv_.notify_all();
}

void command_settings::set(const commands_config& c) {
  auto p = std::make_shared<sched::command_policy>();
  p->allow = c.allow;
  p->default_timeout = c.default_timeout;
  p->max_output_bytes = c.max_output_bytes;
  p->allowed_env = c.allowed_env;
  p->path = c.path;
  const std::scoped_lock lock(mutex_);
  policy_ = std::move(p);
}

std::shared_ptr<const sched::command_policy> command_settings::get() const {
  const std::scoped_lock lock(mutex_);
  return policy_;
}

std::vector<std::string> changed_keys(const daemon_config& before, const daemon_config& after) {
  const auto b = nlohmann::json::parse(before.to_json_redacted());
  const auto a = nlohmann::json::parse(after.to_json_redacted());
  std::vector<std::string> out;
  // Derived or descriptive entries, not settings: the budget follows from the pools.
  for (const char* section : {"database", "pools", "scheduler", "http", "commands", "http_tasks",
                              "types", "flow", "log"}) {
    const nlohmann::json none;
    collect_changes(b.contains(section) ? b[section] : none,
                    a.contains(section) ? a[section] : none, section, out);
  }
  // The redacted form only says whether a secret is set; a new token or signing secret is a
  // change too.
  if (before.http.token != after.http.token &&
      std::find(out.begin(), out.end(), "http.token_set") == out.end()) {
    out.emplace_back("http.token");
  }
  if (before.http_tasks.signing_secret != after.http_tasks.signing_secret &&
      std::find(out.begin(), out.end(), "http_tasks.signing_secret_set") == out.end()) {
    out.emplace_back("http_tasks.signing_secret");
  }
  for (auto& k : out) {
    if (k == "http.token_set") k = "http.token";
    if (k == "http_tasks.signing_secret_set") k = "http_tasks.signing_secret";
  }
  return out;
}

// Applies a reloaded configuration: what can change now changes, the rest is named.
void reload(const serve_options& opt, daemon_config& running, daemon_log& log,
            command_settings& commands, sched::store& store) {
  daemon_config next;
  try {
    next = load_config(opt.config_file, process_environment());
  } catch (const std::exception& e) {
    log.error(std::string("reload failed, the running configuration stays: ") + e.what());
    return;
  }
  const auto changes = changed_keys(running, next);
  if (changes.empty()) {
    log.info("reloaded " + opt.config_file + ": nothing changed");
    return;
  }
  std::vector<std::string> applied;
  std::vector<std::string> restart;
  bool commands_changed = false;
  bool flow_changed = false;
  for (const auto& key : changes) {
    // [flow.TYPE] added or removed, or a key of it changed: the limits are written again.
    if (key == "flow" || key.rfind("flow.", 0) == 0) {
      flow_changed = true;
      continue;
    }
    if (!reloadable(key)) {
      restart.push_back(key);
      continue;
    }
    if (key == "log.level") {
      applied.push_back("log.level " + std::string(to_string(running.log.level)) + " -> " +
                        std::string(to_string(next.log.level)));
      running.log.level = next.log.level;
      log.set_level(next.log.level);
    } else if (key == "log.format") {
      if (!opt.log_format.empty()) {
        applied.push_back("log.format (--log-format " + opt.log_format + " still wins)");
      } else {
        applied.push_back("log.format " + std::string(to_string(running.log.format)) + " -> " +
                          std::string(to_string(next.log.format)));
        log.set_format(next.log.format);
      }
      running.log.format = next.log.format;
    } else {
      applied.push_back(key);
      commands_changed = true;
    }
  }
  if (commands_changed) {
    running.commands = next.commands;
    commands.set(running.commands);
  }
  if (flow_changed) {
    if (!next.flow) {
      applied.push_back("flow (the [flow] table is gone: the limits in the database stay)");
      running.flow = next.flow;
    } else {
      try {
        store.set_flow_limits(next.flow_limits());
        running.flow = next.flow;
        applied.push_back("flow (" + std::to_string(next.flow->size()) + " limited types)");
      } catch (const std::exception& e) {
        log.error(std::string("reload: the flow limits could not be written, the old ones stay: ") +
                  e.what());
      }
    }
  }
  std::string line = "reloaded " + opt.config_file + ": ";
  line += applied.empty() ? "nothing applied" : "applied " + join(applied);
  if (!restart.empty()) {
    line += "; changed but needs a restart to take effect: " + join(restart);
  }
  log.info(line);
}

}  // namespace sluice::cli::serve_detail
