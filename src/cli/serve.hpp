#pragma once

// Private to `sluice serve` (src/cli/serve_*.cpp, cmd_serve.cpp). The daemon in parts:
//
//   cmd_serve.cpp      the subcommand and its options
//   serve_startup.cpp  serve(): the start-up sequence, the wait for signals, the drain
//   serve_signals.cpp  signal_watcher (SIGTERM, SIGINT, SIGHUP from a signalfd) and reload()
//   serve_banner.cpp   the lines the daemon logs about itself at start
//   serve_log.cpp      daemon_log: the text and JSON log formats on stderr
//
// docs/operations.md#start-up-order lists the start-up sequence step by step.

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <spdlog/common.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "cli/config.hpp"
#include "sluice/sched/handlers.hpp"

namespace sluice::cli::serve_detail {

inline constexpr int exit_start_failed = 1;
inline constexpr int exit_bad_config = 2;

struct serve_options {
  std::string config_file;
  bool migrate = false;
  std::string log_format;  // empty: the configuration's log.format
  bool print_config = false;
  std::string port_file;
};

// Runs the daemon until it is stopped; returns the process's exit code.
int serve(const serve_options& opt);

// ---- serve_log.cpp --------------------------------------------------------------------------

// The daemon's log: one spdlog sink on stderr (the service manager's journal), whose level and
// format can change while other threads write. Every line names the component it comes from;
// the library's own messages (pool, scheduler, http, ...) arrive through sluice::set_log_sink().
// Thread-safety: every member is thread-safe (the sink has its own mutex).
class daemon_log {
 public:
  daemon_log(log_format format, log_level level);

  void set_format(log_format f);
  void set_level(log_level l);

  void write(spdlog::level::level_enum level, std::string_view component, std::string_view message);
  void write(log_level level, std::string_view component, std::string_view message);
  void info(std::string_view message) { write(spdlog::level::info, "serve", message); }
  void warn(std::string_view message) { write(spdlog::level::warn, "serve", message); }
  void error(std::string_view message) { write(spdlog::level::err, "serve", message); }

 private:
  std::shared_ptr<spdlog::sinks::stderr_sink_mt> sink_;
};

// Routes the library's log into `log` while alive; restores the default sink afterwards.
class library_log_route {
 public:
  explicit library_log_route(daemon_log& log);
  library_log_route(const library_log_route&) = delete;
  library_log_route& operator=(const library_log_route&) = delete;
  ~library_log_route();
};

// ---- serve_signals.cpp ----------------------------------------------------------------------

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread started after it
// (construct it in the main thread before any other thread exists), then reads them from a
// signalfd on a thread of its own and turns them into events for the main thread. The second
// stop signal does not wait for the main thread: it ends the process at once.
class signal_watcher {
 public:
  enum class event { stop, reload };

  explicit signal_watcher(daemon_log& log);
  signal_watcher(const signal_watcher&) = delete;
  signal_watcher& operator=(const signal_watcher&) = delete;
  // The signals stay blocked: a stop signal that arrives while the process winds down must not
  // kill it with the default action and turn a clean exit into a signal death.
  ~signal_watcher();

  // `drain_note` completes the sentence logged for the first stop signal.
  void start(std::string config_file, std::string drain_note);

  // Blocks until the next event. Once a stop was requested, every call returns stop.
  event wait();
  [[nodiscard]] bool stop_requested() const;

 private:
  void loop();
  void on_signal(int signo, pid_t sender);

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

// The command policy, replaceable while handlers run: the command handler and the API's payload
// check read the current one for each task. Thread-safe.
class command_settings {
 public:
  explicit command_settings(const commands_config& c) { set(c); }

  void set(const commands_config& c);
  [[nodiscard]] std::shared_ptr<const sched::command_policy> get() const;

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const sched::command_policy> policy_;  // guarded by mutex_
};

// The dotted keys whose values differ between two configurations, as to_json_redacted()
// names them ("http.token" for a changed token).
[[nodiscard]] std::vector<std::string> changed_keys(const daemon_config& before,
                                                    const daemon_config& after);

// SIGHUP: loads the file again and applies what can change at once (the keys the
// configuration table marks reloadable); logs the rest as needing a restart. A file that no
// longer loads leaves `running` as it is.
void reload(const serve_options& opt, daemon_config& running, daemon_log& log,
            command_settings& commands, sched::store& store);

// ---- serve_banner.cpp -----------------------------------------------------------------------

[[nodiscard]] std::string join(const std::vector<std::string>& items, std::string_view sep = ", ");
// "http://127.0.0.1:8080/", with brackets around an IPv6 address.
[[nodiscard]] std::string url_of(const std::string& address, int port);
// "platform 5+10, scheduler lane 2+1, LISTEN 1 = up to 19 connections"
[[nodiscard]] std::string describe_pools(const daemon_config& cfg);

// The first lines: version, file, pid, the environment overrides.
void log_starting(daemon_log& log, const serve_options& opt, const daemon_config& cfg);
// What the configuration leaves open or shut: command tasks, the API token.
void log_policies(daemon_log& log, const daemon_config& cfg);
// The line that says the daemon is up, and where.
void log_serving(daemon_log& log, const daemon_config& cfg, int port, const std::string& node_id,
                 long long ready_ms);

}  // namespace sluice::cli::serve_detail
