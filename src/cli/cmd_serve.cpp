// `sluice serve`: the daemon. Loads and checks the configuration, builds the pools under one
// budget, checks (or with --migrate brings up to date) the schema and the budget against the
// server, registers the built-in task handlers, starts the scheduler and the HTTP server, and
// then waits for signals:
//
//   SIGTERM, SIGINT  drain: no new claims, running tasks get scheduler.stop_grace to finish,
//                    the rest are cancelled and their claims handed back, then HTTP stops and
//                    the pools close; exit 0. A second one exits at once with 128 + signal.
//   SIGHUP           reload the file: log.level, log.format and [commands] take effect at
//                    once; every other changed key ([types] included: handlers are
//                    registered once, before the scheduler starts) is logged as needing a
//                    restart.
//
// Signals are blocked in every thread and read from a signalfd by one thread of their own, so
// no work happens in an asynchronous signal handler.
//
// Exit codes: 0 stopped cleanly; 1 could not start (database, schema, budget, port); 2 the
// configuration is unusable (one line naming the file, the key and the reason); 128 + n when a
// second stop signal n ended the drain. docs/cli.md has the full description.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <poll.h>
#include <signal.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/config.hpp"
#include "http/dashboard.hpp"
#include "http/server.hpp"
#include "sluice/log.hpp"
#include "sluice/pg/error.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/sched/handlers.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/version.hpp"

namespace sluice::cli {
namespace {

using json = nlohmann::ordered_json;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

constexpr int exit_start_failed = 1;
constexpr int exit_bad_config = 2;

struct serve_options {
  std::string config_file;
  bool migrate = false;
  std::string log_format;  // empty: the configuration's log.format
  bool print_config = false;
  std::string port_file;
};

// ---- logging --------------------------------------------------------------------------------

// "2026-05-01T12:00:03.123Z": UTC with milliseconds, the same in both formats.
std::string timestamp(spdlog::log_clock::time_point t) {
  const auto ms = std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count() % 1000;
  const std::time_t secs = spdlog::log_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms));
  return buf;
}

std::string_view level_name(spdlog::level::level_enum l) {
  switch (l) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    default:
      return "error";
  }
}

void append(spdlog::memory_buf_t& dest, std::string_view text) {
  dest.append(text.data(), text.data() + text.size());
}

// "2026-05-01T12:00:03.123Z info  scheduler: node web1-4121-a3f0 started ..."
class text_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string level(level_name(msg.level));
    level.resize(5, ' ');
    append(dest, timestamp(msg.time));
    append(dest, " ");
    append(dest, level);
    append(dest, " ");
    append(dest, std::string_view(msg.logger_name.data(), msg.logger_name.size()));
    append(dest, ": ");
    // One event, one line: a message with a newline (a server error's DETAIL) stays one line.
    std::string text(msg.payload.data(), msg.payload.size());
    std::replace(text.begin(), text.end(), '\n', ' ');
    append(dest, text);
    append(dest, "\n");
  }
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<text_formatter>();
  }
};

// {"time":"...","level":"info","component":"scheduler","message":"..."}, one object per line.
class json_formatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    json j;
    j["time"] = timestamp(msg.time);
    j["level"] = level_name(msg.level);
    j["component"] = std::string(msg.logger_name.data(), msg.logger_name.size());
    j["message"] = std::string(msg.payload.data(), msg.payload.size());
    append(dest, j.dump(-1, ' ', false, json::error_handler_t::replace));
    append(dest, "\n");
  }
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<json_formatter>();
  }
};

spdlog::level::level_enum to_spdlog(log_level l) {
  switch (l) {
    case log_level::debug:
      return spdlog::level::debug;
    case log_level::info:
      return spdlog::level::info;
    case log_level::warn:
      return spdlog::level::warn;
    case log_level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

spdlog::level::level_enum to_spdlog(sluice::log_level l) {
  switch (l) {
    case sluice::log_level::debug:
      return spdlog::level::debug;
    case sluice::log_level::info:
      return spdlog::level::info;
    case sluice::log_level::warn:
      return spdlog::level::warn;
    case sluice::log_level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

// The daemon's log: one spdlog sink on stderr (the service manager's journal), whose level and
// format can change while other threads write. Every line names the component it comes from;
// the library's own messages (pool, scheduler, http, ...) arrive through sluice::set_log_sink().
// Thread-safety: every member is thread-safe (the sink has its own mutex).
class daemon_log {
 public:
  daemon_log(log_format format, log_level level)
      : sink_(std::make_shared<spdlog::sinks::stderr_sink_mt>()) {
    set_format(format);
    set_level(level);
  }

  void set_format(log_format f) {
    if (f == log_format::json) {
      sink_->set_formatter(std::make_unique<json_formatter>());
    } else {
      sink_->set_formatter(std::make_unique<text_formatter>());
    }
  }
  void set_level(log_level l) { sink_->set_level(to_spdlog(l)); }

  void write(spdlog::level::level_enum level, std::string_view component,
             std::string_view message) {
    if (!sink_->should_log(level)) return;
    const spdlog::details::log_msg msg(spdlog::string_view_t(component.data(), component.size()),
                                       level,
                                       spdlog::string_view_t(message.data(), message.size()));
    try {
      sink_->log(msg);
    } catch (const std::exception&) {
      // stderr is gone (closed by the service manager): nothing left to tell.
    }
  }
  void info(std::string_view message) { write(spdlog::level::info, "serve", message); }
  void warn(std::string_view message) { write(spdlog::level::warn, "serve", message); }
  void error(std::string_view message) { write(spdlog::level::err, "serve", message); }

 private:
  std::shared_ptr<spdlog::sinks::stderr_sink_mt> sink_;
};

// Routes the library's log into `log` while alive; restores the default sink afterwards.
class library_log_route {
 public:
  explicit library_log_route(daemon_log& log) {
    set_log_sink([&log](sluice::log_level l, std::string_view component, std::string_view message) {
      log.write(to_spdlog(l), component, message);
    });
  }
  library_log_route(const library_log_route&) = delete;
  library_log_route& operator=(const library_log_route&) = delete;
  ~library_log_route() { set_log_sink({}); }
};

// ---- signals --------------------------------------------------------------------------------

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

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread started after it
// (construct it in the main thread before any other thread exists), then reads them from a
// signalfd on a thread of its own and turns them into events for the main thread. The second
// stop signal does not wait for the main thread: it ends the process at once.
class signal_watcher {
 public:
  enum class event { stop, reload };

  explicit signal_watcher(daemon_log& log) : log_(log) {
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
  signal_watcher(const signal_watcher&) = delete;
  signal_watcher& operator=(const signal_watcher&) = delete;

  // The signals stay blocked: a stop signal that arrives while the process winds down must not
  // kill it with the default action and turn a clean exit into a signal death.
  ~signal_watcher() {
    if (thread_.joinable()) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
      thread_.join();
    }
    ::close(wake_fd_);
    ::close(signal_fd_);
  }

  // `drain_note` completes the sentence logged for the first stop signal.
  void start(std::string config_file, std::string drain_note) {
    config_file_ = std::move(config_file);
    drain_note_ = std::move(drain_note);
    thread_ = std::thread([this] { loop(); });
  }

  // Blocks until the next event. Once a stop was requested, every call returns stop.
  event wait() {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return stopping_ || !events_.empty(); });
    if (stopping_) return event::stop;
    const event e = events_.front();
    events_.pop_front();
    return e;
  }

  [[nodiscard]] bool stop_requested() const {
    const std::scoped_lock lock(mutex_);
    return stopping_;
  }

 private:
  void loop() {
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

  void on_signal(int signo, pid_t sender) {
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

  daemon_log& log_;
  int signal_fd_ = -1;
  int wake_fd_ = -1;
  std::string config_file_;
  std::string drain_note_;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<event> events_;  // guarded by mutex_
  bool stopping_ = false;     // guarded by mutex_
};

// ---- what SIGHUP can change -------------------------------------------------------------------

// The command policy, replaceable while handlers run: the command handler and the API's payload
// check read the current one for each task. Thread-safe.
class command_settings {
 public:
  explicit command_settings(const commands_config& c) { set(c); }

  void set(const commands_config& c) {
    auto p = std::make_shared<sched::command_policy>();
    p->allow = c.allow;
    p->default_timeout = c.default_timeout;
    p->max_output_bytes = c.max_output_bytes;
    p->allowed_env = c.allowed_env;
    p->path = c.path;
    const std::scoped_lock lock(mutex_);
    policy_ = std::move(p);
  }
  [[nodiscard]] std::shared_ptr<const sched::command_policy> get() const {
    const std::scoped_lock lock(mutex_);
    return policy_;
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const sched::command_policy> policy_;  // guarded by mutex_
};

// Keys whose new value applies at once on SIGHUP; every other changed key needs a restart.
bool reloadable(std::string_view key) {
  return key == "log.level" || key == "log.format" || key.rfind("commands.", 0) == 0;
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

std::vector<std::string> changed_keys(const daemon_config& before, const daemon_config& after) {
  const auto b = nlohmann::json::parse(before.to_json_redacted());
  const auto a = nlohmann::json::parse(after.to_json_redacted());
  std::vector<std::string> out;
  // Derived or descriptive entries, not settings: the budget follows from the pools.
  for (const char* section :
       {"database", "pools", "scheduler", "http", "commands", "types", "log"}) {
    const nlohmann::json none;
    collect_changes(b.contains(section) ? b[section] : none,
                    a.contains(section) ? a[section] : none, section, out);
  }
  // The redacted form only says whether a token is set; a new token is a change too.
  if (before.http.token != after.http.token &&
      std::find(out.begin(), out.end(), "http.token_set") == out.end()) {
    out.emplace_back("http.token");
  }
  for (auto& k : out) {
    if (k == "http.token_set") k = "http.token";
  }
  return out;
}

std::string join(const std::vector<std::string>& items, std::string_view sep = ", ") {
  std::string out;
  for (const auto& i : items)
    out += (out.empty() ? "" : std::string(sep)) + i;
  return out;
}

// ---- the daemon -------------------------------------------------------------------------------

// Every task type this node runs (built-ins and [types] aliases), mapped to the built-in
// handler that runs it.
using type_map = std::map<std::string, std::string, std::less<>>;

// The handlers' payload checks, plus what only the daemon knows: which types it handles and
// which pools exist (an sql task naming the lane or a missing pool is refused when created).
// A task of an alias type is checked by its handler's rules.
void validate_task(std::string_view type, std::string_view payload, const type_map& types,
                   const std::vector<std::string>& pools, const command_settings& commands,
                   const std::map<std::string, std::string>& signing_keys) {
  const auto it = types.find(type);
  if (it == types.end()) {
    std::vector<std::string> names;
    for (const auto& [name, handler] : types)
      names.push_back(name);
    throw sched::schedule_error("type: no handler for task type '" + std::string(type) +
                                "' on this node (handled: " + join(names) + ")");
  }
  const std::string& handler = it->second;
  const auto policy = commands.get();
  sched::validate_payload(handler, payload, policy.get());
  if (handler == "http") {
    // A name this node's [http_tasks.signing_keys] does not define would fail every run.
    const auto j = nlohmann::json::parse(payload, nullptr, false);
    if (!j.is_object() || !j.contains("signing_key") || !j["signing_key"].is_string()) return;
    const auto key = j["signing_key"].get<std::string>();
    if (signing_keys.count(key) != 0) return;
    std::vector<std::string> names;
    for (const auto& [name, variable] : signing_keys)
      names.push_back(name);
    // The value is not echoed: someone may have put a secret there by mistake.
    throw sched::schedule_error(
        "http payload: signing_key: [http_tasks.signing_keys] has no key of that name (" +
        (names.empty() ? std::string("none is defined") : "defined: " + join(names)) + ")");
  }
  if (handler != "sql") return;
  const auto j = nlohmann::json::parse(payload, nullptr, false);
  if (!j.is_object() || !j.contains("pool") || !j["pool"].is_string()) return;
  const auto pool = j["pool"].get<std::string>();
  if (pool == lane_pool_name) {
    throw sched::schedule_error("sql payload: pool '" + pool +
                                "' is the scheduler's own lane and runs no tasks");
  }
  if (std::find(pools.begin(), pools.end(), pool) == pools.end()) {
    throw sched::schedule_error("sql payload: no pool named '" + pool + "' (pools: " + join(pools) +
                                ")");
  }
}

// The sql handler, refusing the lane at run time too (a task created before the pool existed,
// or through another path than the API).
sched::handler make_daemon_sql_handler() {
  return [inner = sched::make_sql_handler()](sched::task_context& ctx) {
    const auto j = nlohmann::json::parse(ctx.payload(), nullptr, false);
    if (j.is_object() && j.contains("pool") && j["pool"] == std::string(lane_pool_name)) {
      return sched::handler_result::failure("sql payload: pool '" + std::string(lane_pool_name) +
                                            "' is the scheduler's own lane and runs no tasks");
    }
    return inner(ctx);
  };
}

// Shares `commands` rather than referring to it: a worker stuck in a command that ignores
// cancellation is detached by the scheduler's stop() and may outlive serve().
sched::handler make_daemon_command_handler(std::shared_ptr<const command_settings> commands) {
  return [commands = std::move(commands)](sched::task_context& ctx) {
    // The handler is a stateless copy of the policy; building it per run is what lets SIGHUP
    // change the allow-list for the next run.
    return sched::make_command_handler(*commands->get())(ctx);
  };
}

void write_port_file(const std::string& path, int port) {
  // Written whole and renamed into place, so a reader never sees a partial number.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << '\n';
    if (!out) throw std::runtime_error("--port-file: cannot write " + tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("--port-file: cannot rename " + tmp + ": " + ec.message());
}

std::string url_of(const std::string& address, int port) {
  const bool v6 = address.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + address + "]" : address) + ":" + std::to_string(port) + "/";
}

std::string describe_pools(const daemon_config& cfg) {
  std::vector<std::string> parts;
  for (const auto& p : cfg.pools)
    parts.push_back(p.name + " " + std::to_string(p.size) + "+" + std::to_string(p.max_overflow));
  parts.push_back("scheduler lane " + std::to_string(cfg.lane.size) + "+" +
                  std::to_string(cfg.lane.max_overflow));
  if (cfg.scheduler.listen) parts.emplace_back("LISTEN 1");
  return join(parts) + " = up to " + std::to_string(cfg.connections_needed()) + " connections";
}

// Applies a reloaded configuration: what can change now changes, the rest is named.
void reload(const serve_options& opt, daemon_config& running, daemon_log& log,
            command_settings& commands) {
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
  for (const auto& key : changes) {
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
  std::string line = "reloaded " + opt.config_file + ": ";
  line += applied.empty() ? "nothing applied" : "applied " + join(applied);
  if (!restart.empty()) {
    line += "; changed but needs a restart to take effect: " + join(restart);
  }
  log.info(line);
}

// Everything the running daemon owns, destroyed in reverse order: server, scheduler, store,
// pools.
struct daemon_parts {
  std::unique_ptr<pool::pool_manager> pools;
  std::unique_ptr<sched::store> store;
  std::unique_ptr<sched::scheduler> scheduler;
  std::unique_ptr<http::app> app;
  std::unique_ptr<http::server> server;
};

int serve(const serve_options& opt) {
  // Before any thread exists (spdlog's sink starts none; the pools and the scheduler do), so
  // that every thread inherits the blocked signals.
  std::optional<log_format> forced_format;
  if (opt.log_format == "json") forced_format = log_format::json;
  if (opt.log_format == "text") forced_format = log_format::text;
  daemon_log log(forced_format.value_or(log_format::text), log_level::info);
  signal_watcher signals(log);
  // A reader that went away (stderr piped into a pager that quit, a client that hung up) is an
  // error on that one write, not the end of the daemon. Command tasks get the default back.
  std::signal(SIGPIPE, SIG_IGN);

  daemon_config cfg;
  try {
    cfg = load_config(opt.config_file, process_environment());
  } catch (const config_error& e) {
    log.error(e.what());
    return exit_bad_config;
  }
  if (opt.print_config) {
    std::cout << cfg.to_json_redacted() << '\n';
    return 0;
  }
  if (!forced_format) log.set_format(cfg.log.format);
  log.set_level(cfg.log.level);
  const library_log_route route(log);
  signals.start(opt.config_file, "no new tasks are claimed and running tasks get up to " +
                                     format_duration(cfg.scheduler.stop_grace) + " to finish");

  const auto started = steady_clock::now();
  log.info("sluice " + std::string(version_string) + " starting with " + opt.config_file +
           " (pid " + std::to_string(::getpid()) + ")");
  if (!cfg.environment_applied.empty()) {
    log.info("environment overrides applied: " + join(cfg.environment_applied));
  }

  const auto commands = std::make_shared<command_settings>(cfg.commands);
  std::atomic<bool> superseded{false};
  daemon_parts d;
  const auto failed = [&](const std::string& what) {
    log.error("could not start: " + what);
    d.server.reset();
    d.scheduler.reset();
    d.store.reset();
    if (d.pools) d.pools->shutdown(std::chrono::seconds(1));
    return exit_start_failed;
  };
  const auto stopped_early = [&] {
    log.info("stopped during start-up");
    d.scheduler.reset();
    if (d.pools) d.pools->shutdown(std::chrono::seconds(1));
    return 0;
  };

  try {
    // The pools, under the one budget.
    d.pools = std::make_unique<pool::pool_manager>(cfg.manager_settings());
    for (const auto& s : cfg.pool_settings())
      d.pools->add(s);
    pool::pool& lane = d.pools->get(lane_pool_name);
    log.info("pools: " + describe_pools(cfg));

    // The database: one probe connection first (the pools hold none yet), so that an
    // unreachable server is reported at once with libpq's reason rather than after the lane's
    // acquire timeout.
    {
      const pg::connection probe = open_connection(cfg, "sluice/serve");
      const int v = probe.server_version();
      log.info("database: PostgreSQL " + std::to_string(v / 10000) + "." +
               std::to_string(v % 10000) + " at " + probe.describe());
    }
    d.store = std::make_unique<sched::store>(lane, cfg.scheduler.schema);
    if (signals.stop_requested()) return stopped_early();
    const std::string& schema = cfg.scheduler.schema;
    if (opt.migrate) {
      const auto st = d.store->migrate();
      if (st.applied_now.empty()) {
        log.info("schema " + schema + ": up to date (version " + std::to_string(st.current) + ")");
      } else {
        std::vector<std::string> versions;
        for (const int v : st.applied_now)
          versions.push_back(std::to_string(v));
        log.info("schema " + schema + ": applied version" + (versions.size() > 1 ? "s " : " ") +
                 join(versions) + "; now at version " + std::to_string(st.current));
      }
    } else {
      try {
        d.store->check_schema(true);
      } catch (const sched::schema_error& e) {
        return failed(std::string(e.what()) + " (or start with --migrate)");
      }
    }

    // The scheduler and its handlers; the node id is known from here on.
    sched::scheduler_settings ss = cfg.scheduler_settings();
    // Another process took this node id over: its claims are gone, so this one drains and exits
    // with an error (through the signal path, so the drain is the usual one).
    ss.on_superseded = [&superseded](const std::string&) {
      superseded = true;
      ::kill(::getpid(), SIGTERM);
    };
    d.scheduler = std::make_unique<sched::scheduler>(std::move(ss), lane, d.pools.get());
    // Each alias of [types] runs the very handler of its built-in type, under its own name
    // (so its own concurrency limit and counters).
    const std::map<std::string, sched::handler, std::less<>> handlers = {
        {"sql", make_daemon_sql_handler()},
        {"http", sched::make_http_handler(cfg.http_tasks.policy())},
        {"command", make_daemon_command_handler(commands)},
        {"noop", sched::make_noop_handler()}};
    type_map types;
    for (const auto& [name, fn] : handlers) {
      d.scheduler->handle(name, fn);
      types.emplace(name, name);
    }
    std::vector<std::string> aliases;
    for (const auto& t : cfg.types) {
      d.scheduler->handle(t.name, handlers.at(t.handler));
      types.emplace(t.name, t.handler);
      aliases.push_back(t.name + " -> " + t.handler);
    }
    if (!aliases.empty()) log.info("task types run by built-in handlers: " + join(aliases));
    for (const auto& [type, limit] : cfg.scheduler.concurrency) {
      if (types.find(type) == types.end()) {
        log.warn("scheduler.concurrency." + type + ": no handler for task type '" + type +
                 "' on this node, so the limit has no effect (add [types." + type +
                 "] with a handler)");
      }
    }

    // The budget against the server, next to the other live nodes.
    {
      const int others = d.store->budget_of_other_nodes(d.scheduler->node_id());
      auto lease = lane.acquire();
      const auto report = d.pools->check_budget(*lease, others);
      log.info("budget: " + pool::describe(report));
    }
    if (cfg.commands.allow.empty()) {
      log.info("command tasks are disabled: commands.allow is empty");
    } else {
      log.info("command tasks may run: " + join(cfg.commands.allow));
    }
    if (cfg.http.token.empty()) {
      log.warn(
          "no API token is set (http.token, http.token_file or SLUICE_API_TOKEN): the API "
          "is read-only");
    }
    if (signals.stop_requested()) return stopped_early();

    d.scheduler->start();

    http::server_settings hs;
    hs.address = cfg.http.address;
    hs.port = cfg.http.port;
    hs.token = cfg.http.token;
    hs.max_body_bytes = cfg.http.max_body_bytes;
    hs.max_connections = cfg.http.max_connections;
    hs.max_header_bytes = cfg.http.max_header_bytes;
    hs.max_header_count = cfg.http.max_header_count;
    hs.max_buffered_body_bytes = cfg.http.max_buffered_body_bytes;
    hs.header_timeout = cfg.http.header_timeout;
    hs.body_timeout = cfg.http.body_timeout;
    hs.idle_timeout = cfg.http.idle_timeout;
    hs.write_timeout = cfg.http.write_timeout;
    hs.history = cfg.http.history;
    hs.sample_interval = cfg.http.sample_interval;
    hs.allowed_hosts = cfg.http.allowed_hosts;
    std::vector<std::string> task_pools;
    for (const auto& p : cfg.pools)
      task_pools.push_back(p.name);
    d.app = std::make_unique<http::app>(
        http::app{*d.pools, lane, *d.scheduler, *d.store,
                  [types, task_pools, commands, signing_keys = cfg.http_tasks.signing_keys_env](
                      std::string_view type, std::string_view payload) {
                    validate_task(type, payload, types, task_pools, *commands, signing_keys);
                  },
                  [aliases = cfg.types](sched::task_spec& spec) {
                    daemon_config::apply_alias_defaults(aliases, spec);
                  },
                  std::string(version_string), started});
    d.server = std::make_unique<http::server>(hs, *d.app);
    d.server->set_static_handler(http::make_dashboard_handler());
    d.server->start();
    if (!opt.port_file.empty()) write_port_file(opt.port_file, d.server->port());
  } catch (const std::exception& e) {
    return failed(e.what());
  }

  const auto ready_ms =
      std::chrono::duration_cast<milliseconds>(steady_clock::now() - started).count();
  log.info("serving " + url_of(cfg.http.address, d.server->port()) + " as node " +
           d.scheduler->node_id() + " (ready in " + std::to_string(ready_ms) +
           " ms): dashboard at /, API under /api/v1/, /health, /ready, /metrics");

  // Only this thread reads `cfg` from here on; the API's payload check has its own copies and
  // reads the command policy through `commands`.
  while (signals.wait() == signal_watcher::event::reload)
    reload(opt, cfg, log, *commands);

  // Drain: the scheduler first (no new claims, running tasks finish or are handed back), while
  // HTTP still answers (/ready says 503 during the drain); then HTTP; then the pools.
  const auto drain_start = steady_clock::now();
  d.scheduler->stop();
  d.server->stop();
  const int leases_out = d.pools->shutdown(std::chrono::seconds(5));
  if (leases_out > 0) {
    log.warn(std::to_string(leases_out) +
             " connection lease(s) were still out when the pools closed");
  }
  if (!opt.port_file.empty()) {
    std::error_code ec;
    std::filesystem::remove(opt.port_file, ec);
  }
  const auto drain_ms =
      std::chrono::duration_cast<milliseconds>(steady_clock::now() - drain_start).count();
  log.info("stopped after draining for " + std::to_string(drain_ms) + " ms");
  if (superseded) {
    log.error("exiting: another process runs as node " + d.scheduler->node_id());
    return exit_start_failed;
  }
  return 0;
}

}  // namespace

void register_serve(CLI::App& app) {
  auto opt = std::make_shared<serve_options>();
  auto* cmd = app.add_subcommand(
      "serve", "Run the daemon: the scheduler, the HTTP API, /metrics and the dashboard");
  cmd->add_option("--config", opt->config_file, "TOML configuration file (docs/configuration.md)")
      ->required();
  cmd->add_flag("--migrate", opt->migrate,
                "Create or upgrade sluice's tables before starting (else a schema that is behind "
                "stops the start)");
  cmd->add_option("--log-format", opt->log_format,
                  "text (default) or json (one object per line); overrides log.format")
      ->check(CLI::IsMember({"text", "json"}));
  cmd->add_flag("--print-config", opt->print_config,
                "Print the configuration as sluice sees it (defaults filled in, secrets removed) "
                "as JSON and exit");
  cmd->add_option("--port-file", opt->port_file,
                  "Once serving, write the HTTP port to this file (useful with http.port = 0); "
                  "removed again on a clean stop");
  cmd->callback([opt] { exit_code() = serve(*opt); });
}

}  // namespace sluice::cli
