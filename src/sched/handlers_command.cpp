// The `command` handler: an allow-listed executable started with posix_spawn (no shell) in its
// own process group, its output captured through pipes, SIGTERM then SIGKILL to the group when
// the task is cancelled or times out, and the child always reaped.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sched/handlers_common.hpp"
#include "sluice/sched/handlers.hpp"

namespace sluice::sched {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t read_chunk = 64 * 1024;
// After the command exits, what is still in its pipes is read, up to this much: a process
// outside its group could otherwise keep a pipe open and writing forever.
constexpr std::size_t max_drain_bytes = 16 * 1024 * 1024;
// Without a pidfd to wake on the child's exit (kernels before 5.3), poll this often.
constexpr milliseconds exit_poll_fallback = 20ms;

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& o) noexcept {
    if (this != &o) reset(std::exchange(o.fd_, -1));
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool open() const noexcept { return fd_ >= 0; }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

// A descriptor numbered 3 or above, so that the child's dup2 into 0, 1 and 2 can never
// overwrite another of its pipes (possible when the daemon runs with stdio closed).
unique_fd above_stdio(int fd) {
  unique_fd owned(fd);
  if (fd > 2) return owned;
  const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (moved < 0) throw_errno("fcntl(F_DUPFD_CLOEXEC)");
  return unique_fd(moved);
}

struct pipe_ends {
  unique_fd read;
  unique_fd write;
};

// Both ends close-on-exec: the child gets only what dup2 puts at 0, 1 and 2, and commands
// started concurrently on other threads never inherit each other's pipes (which would delay
// end-of-file until the other command exits).
pipe_ends make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("pipe2");
  pipe_ends p;
  p.read = above_stdio(fds[0]);
  p.write = above_stdio(fds[1]);
  return p;
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) throw_errno("fcntl(O_NONBLOCK)");
}

// Writing to a pipe whose reader has exited raises SIGPIPE, which would end the whole daemon
// unless it happens to ignore the signal. Block it on this thread for the write and consume the
// one the write raised (it is directed at the writing thread).
ssize_t write_without_sigpipe(int fd, const char* data, std::size_t size) {
  sigset_t pipe_set;
  sigset_t old_mask;
  sigemptyset(&pipe_set);
  sigaddset(&pipe_set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_set, &old_mask);
  sigset_t pending;
  sigpending(&pending);
  const bool was_pending = sigismember(&pending, SIGPIPE) == 1;
  const ssize_t n = ::write(fd, data, size);
  const int saved = errno;
  if (n < 0 && saved == EPIPE && !was_pending) {
    const timespec no_wait{};
    while (sigtimedwait(&pipe_set, nullptr, &no_wait) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  errno = saved;
  return n;
}

// A posix_spawn attribute or file-actions object: initialised on construction (throwing
// std::system_error naming `InitName` when that fails), destroyed with it.
template <class T, int (*Init)(T*), int (*Destroy)(T*), const char* InitName>
class spawn_object {
 public:
  spawn_object() {
    if (const int rc = Init(&value_); rc != 0)
      throw std::system_error(rc, std::generic_category(), InitName);
  }
  spawn_object(const spawn_object&) = delete;
  spawn_object& operator=(const spawn_object&) = delete;
  spawn_object(spawn_object&&) = delete;
  spawn_object& operator=(spawn_object&&) = delete;
  ~spawn_object() { Destroy(&value_); }
  T* get() noexcept { return &value_; }

 private:
  T value_;
};

constexpr char attr_init_name[] = "posix_spawnattr_init";
constexpr char actions_init_name[] = "posix_spawn_file_actions_init";
using spawn_attributes =
    spawn_object<posix_spawnattr_t, posix_spawnattr_init, posix_spawnattr_destroy, attr_init_name>;
using spawn_actions = spawn_object<posix_spawn_file_actions_t, posix_spawn_file_actions_init,
                                   posix_spawn_file_actions_destroy, actions_init_name>;

void check_spawn(int rc, const char* what) {
  if (rc != 0) throw std::system_error(rc, std::generic_category(), what);
}

// The started command. Until wait() has reaped it, destroying this kills the process group and
// reaps the child, so no exit path (an exception included) leaves a process or a zombie behind.
class child_process {
 public:
  explicit child_process(pid_t pid) noexcept : pid_(pid) {}
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  child_process(child_process&&) = delete;
  child_process& operator=(child_process&&) = delete;
  ~child_process() {
    if (reaped_) return;
    signal_group(SIGKILL);
    static_cast<void>(wait());
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  // The group id is the child's pid. Only signalled before the child is reaped: while the
  // leader exists (a zombie included) its pid cannot be reused, so the signal cannot reach an
  // unrelated group that later got the same number.
  void signal_group(int sig) const noexcept {
    if (!reaped_) ::kill(-pid_, sig);
  }

  // True once the child has exited (without reaping it, so the group stays safe to signal).
  [[nodiscard]] bool exited() const noexcept {
    siginfo_t info{};
    return ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           info.si_pid != 0;
  }

  // Reaps the child, waiting for it to exit; returns its wait status.
  int wait() noexcept {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    reaped_ = true;
    return status;
  }

 private:
  pid_t pid_;
  bool reaped_ = false;
};

// Wakes the poll loop when the token is cancelled. The token keeps its callbacks after the
// handler returns, so the callback holds a weak pointer to the eventfd.
struct cancel_wakeup {
  unique_fd fd;
};

// One of the child's output streams: the first `limit` bytes kept, the rest read and dropped.
struct capture {
  unique_fd fd;
  std::string data;
  std::uint64_t total = 0;

  // Reads what is available now. Returns false at end of file (the descriptor is then closed).
  bool read_available(std::vector<char>& buffer, std::size_t limit, std::size_t max_bytes) {
    std::size_t taken = 0;
    while (fd.open() && taken < max_bytes) {
      const ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
      if (n > 0) {
        const auto got = static_cast<std::size_t>(n);
        taken += got;
        total += got;
        if (data.size() < limit) data.append(buffer.data(), std::min(got, limit - data.size()));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
      fd.reset();  // end of file, or an error that will not go away
      return false;
    }
    return fd.open();
  }
};

// A descriptor that becomes readable when the child exits; -1 where the kernel has none (before
// 5.3). Through syscall(): glibc 2.36's <sys/pidfd.h> lacks the extern "C" a C++ caller needs.
int pidfd_for(pid_t pid) noexcept {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
#else
  static_cast<void>(pid);
  return -1;
#endif
}

std::string signal_name(int sig) {
  if (const char* abbrev = sigabbrev_np(sig)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(sig);
}

class command_runner {
 public:
  explicit command_runner(command_policy policy) : policy_(std::move(policy)) {}

  handler_result operator()(task_context& ctx) const {
    detail::command_payload p;
    try {
      p = detail::parse_command_payload(ctx.payload(), policy_);
    } catch (const schedule_error& e) {
      return handler_result::failure(e.what());
    }
    try {
      return run(ctx, p);
    } catch (const std::system_error& e) {
      return handler_result::failure(std::string("cannot run ") + p.argv[0] + ": " + e.what());
    }
  }

 private:
  handler_result run(task_context& ctx, const detail::command_payload& p) const {
    const cancel_token& token = ctx.cancel();
    const auto started = steady_clock::now();
    std::optional<steady_clock::time_point> deadline = detail::deadline_of(token);
    if (!deadline && policy_.default_timeout > 0ms) deadline = started + policy_.default_timeout;
    if (token.cancelled()) return handler_result::failure("cancelled before the command started");
    if (deadline && started >= *deadline)
      return handler_result::failure("timed out before the command started");

    // Registered before the child exists, so a cancellation can never fall between the two.
    auto wakeup = std::make_shared<cancel_wakeup>();
    wakeup->fd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wakeup->fd.open()) throw_errno("eventfd");
    token.on_cancel([weak = std::weak_ptr<cancel_wakeup>(wakeup)] {
      if (const auto w = weak.lock()) {
        const std::uint64_t one = 1;
        static_cast<void>(::write(w->fd.get(), &one, sizeof one));
      }
    });

    std::optional<pipe_ends> in;
    if (p.stdin_data) in = make_pipe();
    pipe_ends out = make_pipe();
    pipe_ends err = make_pipe();

    spawn_actions actions;
    if (in) {
      check_spawn(posix_spawn_file_actions_adddup2(actions.get(), in->read.get(), 0), "stdin");
    } else {
      check_spawn(posix_spawn_file_actions_addopen(actions.get(), 0, "/dev/null", O_RDONLY, 0),
                  "stdin");
    }
    check_spawn(posix_spawn_file_actions_adddup2(actions.get(), out.write.get(), 1), "stdout");
    check_spawn(posix_spawn_file_actions_adddup2(actions.get(), err.write.get(), 2), "stderr");
    if (p.cwd)
      check_spawn(posix_spawn_file_actions_addchdir_np(actions.get(), p.cwd->c_str()), "cwd");
    // Whatever else the daemon has open (sockets, files of other libraries that did not ask for
    // close-on-exec) stays out of the command.
    check_spawn(posix_spawn_file_actions_addclosefrom_np(actions.get(), 3), "closefrom");

    spawn_attributes attr;
    sigset_t none;
    sigset_t all;
    sigemptyset(&none);
    sigfillset(&all);
    // Own process group (so the whole tree can be signalled), no blocked signals and default
    // dispositions: an ignored SIGPIPE or SIGTERM in the daemon must not carry over.
    check_spawn(
        posix_spawnattr_setflags(
            attr.get(), POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF),
        "attributes");
    check_spawn(posix_spawnattr_setpgroup(attr.get(), 0), "attributes");
    check_spawn(posix_spawnattr_setsigmask(attr.get(), &none), "attributes");
    check_spawn(posix_spawnattr_setsigdefault(attr.get(), &all), "attributes");

    std::vector<std::string> argv_storage = p.argv;
    std::vector<char*> argv;
    for (auto& a : argv_storage)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    // The payload was checked when it was parsed; each name is checked once more right where
    // the environment is built, so no other path to posix_spawn can skip the rules.
    std::vector<std::string> env_storage;
    for (const auto& [name, value] : p.env) {
      if (const auto problem = command_env_problem(name, policy_))
        return handler_result::failure("command payload: 'env." + name + "' " + *problem);
      env_storage.push_back(name + "=" + value);
    }
    env_storage.push_back("PATH=" + policy_.path);
    std::vector<char*> envp;
    for (auto& e : env_storage)
      envp.push_back(e.data());
    envp.push_back(nullptr);

    pid_t pid = -1;
    const int spawn_rc =
        posix_spawn(&pid, p.argv[0].c_str(), actions.get(), attr.get(), argv.data(), envp.data());
    if (spawn_rc != 0) {
      std::string why = "cannot start " + p.argv[0];
      if (p.cwd) why += " in " + *p.cwd;
      why += std::string(": ") + std::strerror(spawn_rc);
      ctx.set_detail(detail::dump_detail({{"error", why}}));
      return handler_result::failure(why);
    }
    child_process child(pid);

    // The child has its copies; ours would keep the pipes open and hide end of file.
    out.write.reset();
    err.write.reset();
    unique_fd stdin_fd;
    std::size_t stdin_written = 0;
    if (in) {
      in->read.reset();
      stdin_fd = std::move(in->write);
      set_nonblocking(stdin_fd.get());
      if (p.stdin_data->empty()) stdin_fd.reset();
    }
    capture out_cap{std::move(out.read), {}, 0};
    capture err_cap{std::move(err.read), {}, 0};
    set_nonblocking(out_cap.fd.get());
    set_nonblocking(err_cap.fd.get());
    const unique_fd exit_fd(pidfd_for(pid));  // readable once the child exits

    std::vector<char> buffer(read_chunk);
    const std::size_t limit = policy_.max_output_bytes;
    bool terminating = false;
    bool killed = false;
    steady_clock::time_point kill_at{};

    for (;;) {
      const auto now = steady_clock::now();
      if (!terminating && (token.cancelled() || (deadline && now >= *deadline))) {
        terminating = true;
        child.signal_group(SIGTERM);
        kill_at = now + policy_.kill_grace;
        stdin_fd.reset();
      }
      if (terminating && !killed && now >= kill_at) {
        child.signal_group(SIGKILL);
        killed = true;
      }
      if (child.exited()) break;

      pollfd fds[5];
      nfds_t count = 0;
      const auto add = [&](int fd, short events) {
        if (fd >= 0) fds[count++] = pollfd{fd, events, 0};
      };
      add(out_cap.fd.get(), POLLIN);
      add(err_cap.fd.get(), POLLIN);
      add(stdin_fd.get(), POLLOUT);
      add(exit_fd.get(), POLLIN);
      if (!terminating) add(wakeup->fd.get(), POLLIN);

      std::optional<steady_clock::time_point> wake_at;
      if (!terminating) {
        wake_at = deadline;
      } else if (!killed) {
        wake_at = kill_at;
      }
      int timeout_ms = -1;
      if (wake_at) {
        timeout_ms = static_cast<int>(std::clamp<milliseconds::rep>(
            std::chrono::ceil<milliseconds>(*wake_at - now).count(), 0, 60'000));
      }
      if (!exit_fd.open())
        timeout_ms = timeout_ms < 0
                         ? static_cast<int>(exit_poll_fallback.count())
                         : std::min(timeout_ms, static_cast<int>(exit_poll_fallback.count()));

      if (::poll(fds, count, timeout_ms) < 0) {
        if (errno == EINTR) continue;
        throw_errno("poll");
      }
      for (nfds_t i = 0; i < count; ++i) {
        if (fds[i].revents == 0) continue;
        const int fd = fds[i].fd;
        if (fd == out_cap.fd.get()) {
          out_cap.read_available(buffer, limit, read_chunk * 4);
        } else if (fd == err_cap.fd.get()) {
          err_cap.read_available(buffer, limit, read_chunk * 4);
        } else if (fd == stdin_fd.get()) {
          write_stdin(stdin_fd, *p.stdin_data, stdin_written);
        } else if (fd == wakeup->fd.get()) {
          std::uint64_t ignored = 0;
          static_cast<void>(::read(fd, &ignored, sizeof ignored));
        }
      }
    }

    // The leader has exited. Whatever it left running in its group is killed now, while the
    // zombie leader still reserves the group id; then its last output is read and it is reaped.
    child.signal_group(SIGKILL);
    out_cap.read_available(buffer, limit, max_drain_bytes);
    err_cap.read_available(buffer, limit, max_drain_bytes);
    const int status = child.wait();
    const auto elapsed_ms =
        std::chrono::duration_cast<milliseconds>(steady_clock::now() - started).count();

    nlohmann::json detail = {{"pid", pid},
                             {"exit_code", nullptr},
                             {"signal", nullptr},
                             {"stdout", out_cap.data},
                             {"stderr", err_cap.data},
                             {"stdout_bytes", out_cap.total},
                             {"stderr_bytes", err_cap.total},
                             {"timed_out", terminating},
                             {"elapsed_ms", elapsed_ms}};
    if (WIFEXITED(status)) detail["exit_code"] = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) detail["signal"] = WTERMSIG(status);
    ctx.set_detail(detail::dump_detail(detail));

    if (terminating) {
      const bool timed_out = deadline && steady_clock::now() >= *deadline;
      std::string why = timed_out ? "timed out after " + std::to_string(elapsed_ms) + " ms"
                                  : std::string("cancelled");
      why += killed ? ": process group killed (SIGKILL) after ignoring SIGTERM for " +
                          std::to_string(policy_.kill_grace.count()) + " ms"
                    : ": process group terminated (SIGTERM)";
      return handler_result::failure(why);
    }
    if (WIFEXITED(status)) {
      if (WEXITSTATUS(status) == 0) return handler_result::success();
      return handler_result::failure("exit code " + std::to_string(WEXITSTATUS(status)));
    }
    if (WIFSIGNALED(status))
      return handler_result::failure("killed by " + signal_name(WTERMSIG(status)));
    return handler_result::failure("ended with wait status " + std::to_string(status));
  }

  // Writes as much of the payload's stdin as the pipe takes now; closes it when all is written
  // or the command stopped reading.
  static void write_stdin(unique_fd& fd, const std::string& data, std::size_t& written) {
    while (fd.open() && written < data.size()) {
      const ssize_t n = write_without_sigpipe(fd.get(), data.data() + written,
                                              std::min(data.size() - written, read_chunk));
      if (n > 0) {
        written += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      fd.reset();  // EPIPE: the command closed its stdin
      return;
    }
    fd.reset();
  }

  command_policy policy_;
};

}  // namespace

handler make_command_handler(command_policy policy) {
  return command_runner(std::move(policy));
}

}  // namespace sluice::sched
