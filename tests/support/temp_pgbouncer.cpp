#include "temp_pgbouncer.hpp"

#include <cerrno>
#include <csignal>
#include <deque>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <libpq-fe.h>
#include <pwd.h>
#include <unistd.h>

#include "pg_test_env.hpp"
#include "support/eventually.hpp"
#include "temp_cluster.hpp"

namespace sluice::test {
namespace {

namespace fs = std::filesystem;

constexpr const char* pgbouncer_bin = "/usr/sbin/pgbouncer";
constexpr int start_attempts = 5;

std::string text_or(const char* s, std::string_view fallback) {
  return (s == nullptr || *s == '\0') ? std::string(fallback) : std::string(s);
}

// A zombie counts as gone: PgBouncer detached from us, so whoever reaps it may take a while.
bool process_alive(int pid) {
  if (pid <= 0 || (::kill(pid, 0) != 0 && errno != EPERM)) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  const auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z';
}

}  // namespace

std::string temp_pgbouncer_unavailable_reason() {
  if (::access(pgbouncer_bin, X_OK) != 0) {
    return std::string(pgbouncer_bin) +
           " not found: install the Debian package pgbouncer (apt-get install pgbouncer)";
  }
  if (::getpwnam("postgres") == nullptr) {
    return "no 'postgres' OS user to run PgBouncer as (install postgresql-15: scripts/bootstrap)";
  }
  if (::geteuid() != 0 && ::geteuid() != ::getpwnam("postgres")->pw_uid) {
    return "a temp_pgbouncer must be started by root or by the postgres OS user";
  }
  return {};
}

temp_pgbouncer::temp_pgbouncer(const pg::connection& backend, temp_pgbouncer_options options)
    : options_(std::move(options)) {
  if (const std::string why = temp_pgbouncer_unavailable_reason(); !why.empty()) {
    throw std::runtime_error("temp_pgbouncer: cannot run PgBouncer here: " + why);
  }
  if (!backend.valid()) throw std::runtime_error("temp_pgbouncer: no backend connection");
  PGconn* c = backend.native();
  backend_host_ = text_or(PQhost(c), "127.0.0.1");
  backend_port_ = text_or(PQport(c), "5432");
  user_ = text_or(PQuser(c), "postgres");
  dbname_ = text_or(PQdb(c), user_);

  dir_ = make_postgres_dir("sluice-pgbouncer");
  try {
    // trust still wants the user listed; the password is not checked.
    std::ofstream users(dir_ + "/userlist.txt", std::ios::trunc);
    users << '"' << user_ << "\" \"\"\n";
    users.close();
    if (!users) throw std::runtime_error("temp_pgbouncer: cannot write " + dir_ + "/userlist.txt");
    std::string failure;
    for (int attempt = 0; attempt < start_attempts; ++attempt) {
      port_ = unused_local_port();
      if (try_start(failure)) return;
    }
    throw std::runtime_error("temp_pgbouncer: could not start after " +
                             std::to_string(start_attempts) + " attempts; last: " + failure);
  } catch (...) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
    throw;
  }
}

temp_pgbouncer::~temp_pgbouncer() {
  stop();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string temp_pgbouncer::conninfo(std::string_view dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=" + user_ +
         " dbname=" + (dbname.empty() ? dbname_ : std::string(dbname));
}

bool temp_pgbouncer::try_start(std::string& failure) {
  const std::string ini = dir_ + "/pgbouncer.ini";
  {
    std::ofstream conf(ini, std::ios::trunc);
    conf << "[databases]\n"
         << "* = host=" << backend_host_ << " port=" << backend_port_ << "\n"
         << "[pgbouncer]\n"
         << "listen_addr = 127.0.0.1\n"
         << "listen_port = " << port_ << "\n"
         << "unix_socket_dir =\n"
         << "auth_type = trust\n"
         << "auth_file = " << dir_ << "/userlist.txt\n"
         << "admin_users = " << user_ << "\n"
         << "pool_mode = " << options_.pool_mode << "\n"
         << "default_pool_size = " << options_.default_pool_size << "\n"
         << "max_client_conn = 200\n"
         << "ignore_startup_parameters = extra_float_digits,options\n"
         << "logfile = " << dir_ << "/pgbouncer.log\n"
         << "pidfile = " << dir_ << "/pgbouncer.pid\n";
    conf.close();
    if (!conf) throw std::runtime_error("temp_pgbouncer: cannot write " + ini);
  }
  std::error_code ec;
  fs::remove(dir_ + "/pgbouncer.pid", ec);  // a failed attempt's
  // -d: PgBouncer detaches (closing the output we read) once it listens, and writes its pid.
  const command_result r = run_as_postgres({pgbouncer_bin, "-d", ini}, dir_);
  if (r.exit_code != 0) {
    failure = std::string(pgbouncer_bin) + " -d " + ini + " failed (exit " +
              std::to_string(r.exit_code) + "):\n" + r.output + "\nlog:\n" + log_tail();
    return false;
  }
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  for (;;) {
    if (pid_ == 0) {
      std::ifstream pid_file(dir_ + "/pgbouncer.pid");
      int pid = 0;
      if (pid_file >> pid && pid > 0) pid_ = pid;
    }
    if (pid_ != 0) {
      try {
        pg::connect_options o;
        o.conninfo = conninfo();
        o.application_name = "sluice-test-pgbouncer-probe";
        o.connect_timeout = std::chrono::seconds(5);
        pg::connection probe = pg::connection::open(o);
        if (probe.exec("SELECT 1").one<int>() == 1) return true;
      } catch (const std::exception& e) {
        failure = e.what();
      }
      if (!process_alive(pid_)) {
        failure = "PgBouncer exited: " + failure + "\nlog:\n" + log_tail();
        pid_ = 0;
        return false;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      failure =
          "PgBouncer did not accept connections in time: " + failure + "\nlog:\n" + log_tail();
      stop();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void temp_pgbouncer::stop() noexcept {
  if (pid_ == 0) return;
  // SIGTERM is PgBouncer's immediate shutdown (SIGINT would wait for clients to leave).
  ::kill(pid_, SIGTERM);
  if (!eventually([&] { return !process_alive(pid_); }, options_.timeout)) ::kill(pid_, SIGKILL);
  pid_ = 0;
}

std::string temp_pgbouncer::log_tail() const {
  std::ifstream in(dir_ + "/pgbouncer.log");
  std::deque<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    lines.push_back(std::move(line));
    if (lines.size() > 20) lines.pop_front();
  }
  std::string out;
  for (const auto& l : lines)
    out += l + "\n";
  return out;
}

}  // namespace sluice::test
