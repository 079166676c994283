#include "temp_cluster.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pg_test_env.hpp"

extern char** environ;

namespace sluice::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* pg_bin = "/usr/lib/postgresql/15/bin";
constexpr const char* pg_user = "postgres";
constexpr int start_attempts = 5;

std::string bin(const char* program) {
  return std::string(pg_bin) + "/" + program;
}

std::string find_runuser() {
  for (const char* path : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return {};
}

}  // namespace

// Removes the PG* variables from the environment: the test runner's PGPORT, PGHOST or PGDATA
// must not leak into the private server or its tools.
command_result run_as_postgres(const std::vector<std::string>& command, const std::string& cwd) {
  std::vector<std::string> args;
  if (::geteuid() == 0) {
    const std::string runuser = find_runuser();
    if (runuser.empty()) throw std::runtime_error("temp_cluster: runuser not found");
    args = {runuser, "-u", pg_user, "--"};
  }
  args.insert(args.end(), command.begin(), command.end());

  // Everything the child needs is built before fork(): after it, only async-signal-safe calls.
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, "PG", 2) == 0 || std::strncmp(*e, "DATABASE_URL=", 13) == 0) continue;
    envp.push_back(*e);
  }
  envp.push_back(nullptr);

  std::array<int, 2> fds{};
  if (::pipe2(fds.data(), O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "temp_cluster: pipe2");
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(fds[0]);
    ::close(fds[1]);
    throw std::system_error(err, std::generic_category(), "temp_cluster: fork");
  }
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    // The server pg_ctl starts must not inherit the test's sockets and files.
    ::close_range(3, ~0U, 0);
    if (::chdir(cwd.c_str()) != 0) ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  command_result result;
  std::array<char, 4096> buf{};
  for (;;) {
    const ssize_t n = ::read(fds[0], buf.data(), buf.size());
    if (n > 0) {
      result.output.append(buf.data(), static_cast<std::size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

namespace {

std::string describe_command(const std::vector<std::string>& command) {
  std::string s;
  for (const auto& a : command)
    s += (s.empty() ? "" : " ") + a;
  return s;
}

// Where clusters and the initdb template live: /dev/shm when it is a roomy tmpfs, else the temp
// directory. On a busy CI machine, copying a data directory to ext4 and starting a server on it
// takes several seconds (page cache write-back competing with compilers); on tmpfs, a fraction
// of one. Docker's default 64 MB /dev/shm is too small, hence the check.
fs::path base_dir() {
  struct statvfs st {};
  if (::statvfs("/dev/shm", &st) == 0 && ::access("/dev/shm", W_OK | X_OK) == 0 &&
      static_cast<unsigned long long>(st.f_bavail) * st.f_frsize >= (1ULL << 30)) {
    return "/dev/shm";
  }
  return fs::temp_directory_path();
}

}  // namespace

std::string make_postgres_dir(const std::string& prefix) {
  std::string pattern = (base_dir() / (prefix + ".XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "temp_cluster: mkdtemp " + pattern);
  }
  if (::geteuid() == 0) {
    const passwd* pw = ::getpwnam(pg_user);
    if (pw == nullptr || ::chown(pattern.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      const int err = errno;
      std::error_code ec;
      fs::remove_all(pattern, ec);
      throw std::system_error(err, std::generic_category(), "temp_cluster: chown " + pattern);
    }
  }
  return pattern;
}

namespace {

// initdb takes one to several seconds (far more on a loaded machine), and ctest runs each test
// in a process of its own. So initdb runs once per machine and user: its result is kept in
// <base_dir>/sluice-pg15-template-v1-u<uid>/data (v1: the initdb options below; change it with
// them), and each cluster starts from a copy. A file lock
// serializes the processes that would make it; the folder is renamed into place only once
// complete, so a run killed halfway leaves nothing that looks usable.
bool template_complete(const fs::path& data) {
  for (const char* file : {"PG_VERSION", "global/pg_control", "base/1/PG_VERSION", "pg_hba.conf"}) {
    if (!fs::exists(data / file)) return false;
  }
  return true;
}

std::string template_data_dir() {
  static std::mutex mutex;  // flock() does not exclude threads sharing one open file
  const std::scoped_lock guard(mutex);
  const std::string name = "sluice-pg15-template-v1-u" + std::to_string(::geteuid());
  const fs::path root = base_dir() / name;
  if (template_complete(root / "data")) return (root / "data").string();

  const std::string lock_path = root.string() + ".lock";
  const int fd = ::open(lock_path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "temp_cluster: " + lock_path);
  struct closer {
    explicit closer(int f) : fd(f) {}
    closer(const closer&) = delete;
    closer& operator=(const closer&) = delete;
    ~closer() { ::close(fd); }  // also releases the lock
    int fd;
  } const unlock_on_exit(fd);
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "temp_cluster: flock " + lock_path);
    }
  }
  if (template_complete(root / "data")) return (root / "data").string();  // made meanwhile

  std::error_code ec;
  fs::remove_all(root, ec);  // a damaged one (a /tmp cleaner took some files)
  const std::string dir = make_postgres_dir(name + "-new");
  try {
    const std::vector<std::string> initdb = {bin("initdb"),
                                             "-D",
                                             dir + "/data",
                                             "-A",
                                             "trust",
                                             "-U",
                                             pg_user,
                                             "--no-sync",
                                             "--no-instructions",
                                             "--encoding=UTF8",
                                             "--locale=C",
                                             "--wal-segsize=1"};  // 1 MB of WAL to copy, not 16
    const command_result r = run_as_postgres(initdb, dir);
    if (r.exit_code != 0) {
      throw std::runtime_error("temp_cluster: " + describe_command(initdb) + " failed (exit " +
                               std::to_string(r.exit_code) + "):\n" + r.output);
    }
    fs::rename(dir, root);
  } catch (...) {
    fs::remove_all(dir, ec);
    throw;
  }
  return (root / "data").string();
}

}  // namespace

std::string temp_cluster_unavailable_reason() {
  const passwd* pw = ::getpwnam(pg_user);
  if (pw == nullptr) return "no 'postgres' OS user (install postgresql-15: scripts/bootstrap)";
  for (const char* program : {"initdb", "pg_ctl", "postgres"}) {
    if (::access(bin(program).c_str(), X_OK) != 0) {
      return bin(program) + " not found (install postgresql-15: scripts/bootstrap)";
    }
  }
  if (::geteuid() == 0) {
    if (find_runuser().empty()) return "runuser not found (util-linux)";
  } else if (::geteuid() != pw->pw_uid) {
    return "a temp_cluster must be started by root or by the postgres OS user (PostgreSQL refuses "
           "to run as root, and only those two can run it as postgres)";
  }
  return {};
}

temp_cluster::temp_cluster(temp_cluster_options options) : options_(std::move(options)) {
  if (const std::string why = temp_cluster_unavailable_reason(); !why.empty()) {
    throw std::runtime_error("temp_cluster: cannot run a private PostgreSQL here: " + why);
  }
  const std::string template_data = options_.standby_of ? "" : template_data_dir();
  dir_ = make_postgres_dir("sluice-cluster");
  data_dir_ = dir_ + "/data";
  log_file_ = dir_ + "/postgresql.log";
  try {
    if (options_.standby_of != nullptr) {
      make_standby_data(*options_.standby_of);
    } else {
      const std::vector<std::string> copy = {"/bin/cp", "-a", template_data, data_dir_};
      const command_result r = run_as_postgres(copy, dir_);
      if (r.exit_code != 0) {
        throw std::runtime_error("temp_cluster: " + describe_command(copy) + " failed (exit " +
                                 std::to_string(r.exit_code) + "):\n" + r.output);
      }
      // Our settings live in a file we rewrite at each start (the port may change); the server
      // reads it last, so it overrides initdb's defaults.
      std::ofstream conf(data_dir_ + "/postgresql.conf", std::ios::app);
      conf << "\ninclude '" << dir_ << "/sluice_test.conf'\n";
      conf.close();
      if (!conf) throw std::runtime_error("temp_cluster: cannot append to postgresql.conf");
    }
    start();
  } catch (...) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    throw;
  }
}

temp_cluster::~temp_cluster() {
  if (running_) {
    try {
      stop(shutdown_mode::immediate);
    } catch (const std::exception&) {
      // Last resort: SIGQUIT is the postmaster's own immediate shutdown.
      std::ifstream pid_file(data_dir_ + "/postmaster.pid");
      long pid = 0;
      if (pid_file >> pid && pid > 0) ::kill(static_cast<pid_t>(pid), SIGQUIT);
    }
  }
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string temp_cluster::conninfo(std::string_view user) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + std::string(user) +
         " dbname=postgres";
}

pg::connection temp_cluster::connect(std::string application_name, std::string_view user) const {
  pg::connect_options options;
  options.conninfo = conninfo(user);
  options.application_name = std::move(application_name);
  options.connect_timeout = std::chrono::seconds(10);
  return pg::connection::open(options);
}

// A base backup of the running primary through a replication slot of its own (so the primary
// keeps the WAL the standby has not received yet), its postgresql.conf pointed at this
// cluster's settings file instead of the primary's, and standby.signal. primary_conninfo goes
// into our settings file rather than postgresql.auto.conf (pg_basebackup -R), so that it names
// standby_name as application_name.
void temp_cluster::make_standby_data(const temp_cluster& primary) {
  if (!primary.running()) throw std::runtime_error("temp_cluster: the primary is not running");
  options_.max_connections = std::max(options_.max_connections, primary.options_.max_connections);
  const std::string& name = options_.standby_name;
  if (name.empty() ||
      name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos) {
    throw std::invalid_argument(
        "temp_cluster: standby_name must be lower-case letters, digits "
        "and '_' (it names a replication slot), got '" +
        name + "'");
  }
  const std::vector<std::string> backup = {bin("pg_basebackup"),
                                           "-D",
                                           data_dir_,
                                           "-h",
                                           "127.0.0.1",
                                           "-p",
                                           std::to_string(primary.port()),
                                           "-U",
                                           pg_user,
                                           "-X",
                                           "stream",
                                           "-C",
                                           "-S",
                                           name,
                                           "-c",
                                           "fast",
                                           "--no-sync"};
  const command_result r = run_as_postgres(backup, dir_);
  if (r.exit_code != 0) {
    throw std::runtime_error("temp_cluster: " + describe_command(backup) + " failed (exit " +
                             std::to_string(r.exit_code) + "):\n" + r.output);
  }
  // The copied postgresql.conf includes the primary's settings file: include ours instead.
  const std::string conf_path = data_dir_ + "/postgresql.conf";
  std::string conf;
  {
    std::ifstream in(conf_path);
    conf.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const std::string from = "include '" + primary.directory() + "/sluice_test.conf'";
  const std::size_t at = conf.find(from);
  if (at == std::string::npos) {
    throw std::runtime_error("temp_cluster: the primary's postgresql.conf has no " + from);
  }
  conf.replace(at, from.size(), "include '" + dir_ + "/sluice_test.conf'");
  std::ofstream out(conf_path, std::ios::trunc);
  out << conf;
  out.close();
  const command_result signal =
      run_as_postgres({"/usr/bin/touch", data_dir_ + "/standby.signal"}, dir_);
  if (!out || signal.exit_code != 0) {
    throw std::runtime_error("temp_cluster: cannot write the standby's configuration: " +
                             signal.output);
  }
  primary_conninfo_ = "host=127.0.0.1 port=" + std::to_string(primary.port()) + " user=" + pg_user +
                      " application_name=" + name;
}

void temp_cluster::require_standby(const std::string& standby_name, replication_mode mode) {
  pg::connection c = connect();
  const bool sync = mode == replication_mode::synchronous;
  c.exec("ALTER SYSTEM SET synchronous_commit = 'on'");
  if (sync) {
    // ALTER SYSTEM takes no parameters: the server quotes the name into the statement.
    c.exec(c.query("SELECT format('ALTER SYSTEM SET synchronous_standby_names = %L',"
                   " 'FIRST 1 (' || quote_ident($1) || ')')",
                   standby_name)
               .one<std::string>());
  } else {
    c.exec("ALTER SYSTEM RESET synchronous_standby_names");
  }
  c.exec("SELECT pg_catalog.pg_reload_conf()");
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  const std::string wanted = sync ? "sync" : "async";
  std::string seen = "(not connected)";
  for (;;) {
    const auto res = c.query(
        "SELECT state || '/' || sync_state, (state = 'streaming' AND sync_state = $2 AND"
        " current_setting('synchronous_commit') = 'on')"
        " FROM pg_catalog.pg_stat_replication WHERE application_name = $1",
        standby_name, wanted);
    if (!res.empty()) {
      seen = res[0].get<std::string>(0);
      if (res[0].get<bool>(1)) return;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("temp_cluster: standby '" + standby_name + "' is not streaming " +
                               wanted + "hronously after " +
                               std::to_string(options_.timeout.count()) + " s (seen: " + seen +
                               ")\nserver log:\n" + log_tail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void temp_cluster::promote() {
  const std::vector<std::string> command = {
      bin("pg_ctl"), "-D", data_dir_, "-w", "-t", std::to_string(options_.timeout.count()),
      "promote"};
  const command_result r = run_as_postgres(command, dir_);
  if (r.exit_code != 0) {
    throw std::runtime_error("temp_cluster: " + describe_command(command) + " failed (exit " +
                             std::to_string(r.exit_code) + "):\n" + r.output + "\nserver log:\n" +
                             log_tail());
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  while (in_recovery()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error("temp_cluster: still in recovery after promotion\nserver log:\n" +
                               log_tail());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

bool temp_cluster::in_recovery() const {
  return connect("sluice-test-probe").exec("SELECT pg_catalog.pg_is_in_recovery()").one<bool>();
}

void temp_cluster::write_port_settings() const {
  std::ofstream conf(dir_ + "/sluice_test.conf", std::ios::trunc);
  conf << "listen_addresses = '127.0.0.1'\n"
       << "port = " << port_ << "\n"
       << "unix_socket_directories = '" << dir_ << "'\n"
       << "max_connections = " << options_.max_connections << "\n"
       << "superuser_reserved_connections = " << options_.superuser_reserved_connections
       << "\n"
       // Throwaway data: durability buys nothing and costs seconds.
       << "fsync = off\n"
       << "synchronous_commit = off\n"
       << "full_page_writes = off\n"
       << "shared_buffers = '16MB'\n"
       << "max_wal_size = '64MB'\n";
  if (!primary_conninfo_.empty()) {
    conf << "primary_conninfo = '" << primary_conninfo_ << "'\n"
         << "primary_slot_name = '" << options_.standby_name << "'\n"
         << "hot_standby = on\n"
         << "wal_receiver_status_interval = '1s'\n";
  }
  for (const auto& [name, value] : options_.settings)
    conf << name << " = " << value << "\n";
  conf.close();
  if (!conf) throw std::runtime_error("temp_cluster: cannot write " + dir_ + "/sluice_test.conf");
}

bool temp_cluster::try_start(std::string& failure) {
  write_port_settings();
  const std::vector<std::string> command = {
      bin("pg_ctl"), "-D", data_dir_, "-l",
      log_file_,     "-w", "-t",      std::to_string(options_.timeout.count()),
      "start"};
  const command_result r = run_as_postgres(command, dir_);
  if (r.exit_code != 0) {
    failure = describe_command(command) + " failed (exit " + std::to_string(r.exit_code) + "):\n" +
              r.output + "\nserver log:\n" + log_tail();
    // A server that did not come up in time may still be starting: make sure it is gone.
    run_as_postgres({bin("pg_ctl"), "-D", data_dir_, "-m", "immediate", "-w", "stop"}, dir_);
    return false;
  }
  // pg_ctl -w returns once the postmaster reports itself ready; a connection proves that the
  // port really is ours (another process may have taken it between our probe and the bind).
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  for (;;) {
    try {
      pg::connection probe = connect("sluice-test-probe");
      if (probe.exec("SELECT 1").one<int>() == 1) return true;
    } catch (const std::exception& e) {
      if (std::chrono::steady_clock::now() >= deadline) {
        failure = std::string("server started but does not accept connections: ") + e.what();
        run_as_postgres({bin("pg_ctl"), "-D", data_dir_, "-m", "immediate", "-w", "stop"}, dir_);
        return false;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void temp_cluster::start() {
  if (running_) return;
  std::string failure;
  if (port_ != 0) {
    // Keep the port: clients (a pool under test) hold conninfo strings naming it.
    if (!try_start(failure)) throw std::runtime_error("temp_cluster: restart failed: " + failure);
    running_ = true;
    return;
  }
  for (int attempt = 0; attempt < start_attempts; ++attempt) {
    port_ = unused_local_port();
    if (try_start(failure)) {
      running_ = true;
      return;
    }
  }
  port_ = 0;
  throw std::runtime_error("temp_cluster: could not start after " + std::to_string(start_attempts) +
                           " attempts; last: " + failure);
}

void temp_cluster::stop(shutdown_mode mode) {
  if (!running_) return;
  const char* mode_name = mode == shutdown_mode::smart  ? "smart"
                          : mode == shutdown_mode::fast ? "fast"
                                                        : "immediate";
  const std::vector<std::string> command = {
      bin("pg_ctl"), "-D", data_dir_, "-m",
      mode_name,     "-w", "-t",      std::to_string(options_.timeout.count()),
      "stop"};
  const command_result r = run_as_postgres(command, dir_);
  if (r.exit_code != 0) {
    throw std::runtime_error("temp_cluster: " + describe_command(command) + " failed (exit " +
                             std::to_string(r.exit_code) + "):\n" + r.output);
  }
  running_ = false;
}

void temp_cluster::restart(shutdown_mode mode) {
  stop(mode);
  start();
}

std::string temp_cluster::log_tail() const {
  std::ifstream in(log_file_);
  std::deque<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(std::move(line));
    if (lines.size() > 30) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines)
    out += l + "\n";
  return out;
}

}  // namespace sluice::test
