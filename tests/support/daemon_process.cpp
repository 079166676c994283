#include "support/daemon_process.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/child_process.hpp"
#include "support/eventually.hpp"
#include "support/pg_test_env.hpp"

namespace sluice::test {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// ---- scoped_database ------------------------------------------------------------------------

namespace {

// A conninfo value quoted for key=value syntax.
std::string quote_value(std::string_view v) {
  std::string out = "'";
  for (const char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

// `base` (a URI, key=value string or empty) as key=value with dbname replaced.
std::string with_dbname(const std::string& base, const std::string& dbname) {
  char* error = nullptr;
  PQconninfoOption* options = PQconninfoParse(base.c_str(), &error);
  if (options == nullptr) {
    const std::string why = error != nullptr ? error : "out of memory";
    PQfreemem(error);
    throw std::runtime_error("scoped_database: cannot parse the test conninfo: " + why);
  }
  std::string out;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr || std::string_view(o->keyword) == "dbname") continue;
    out += std::string(o->keyword) + "=" + quote_value(o->val) + " ";
  }
  PQconninfoFree(options);
  return out + "dbname=" + quote_value(dbname);
}

}  // namespace

scoped_database::scoped_database(std::string_view prefix)
    : name_(std::string(prefix) + "_" + unique_suffix()),
      conninfo_(with_dbname(test_conninfo(), name_)) {
  pg::connection admin = test_connect("sluice-test-database");
  admin.exec("CREATE DATABASE " + name_);
}

scoped_database::~scoped_database() {
  try {
    pg::connection admin = test_connect("sluice-test-database");
    // FORCE (PostgreSQL 13+) ends the sessions of a daemon that was killed a moment ago.
    const bool force = admin.server_version() >= 130000;
    admin.exec("DROP DATABASE IF EXISTS " + name_ + (force ? " WITH (FORCE)" : ""));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scoped_database: could not drop %s: %s\n", name_.c_str(), e.what());
  }
}

pg::connection scoped_database::connect(std::string application_name) const {
  pg::connect_options o;
  o.conninfo = conninfo_;
  o.application_name = std::move(application_name);
  o.connect_timeout = std::chrono::seconds(10);
  return pg::connection::open(o);
}

// ---- http_request ---------------------------------------------------------------------------

std::string http_reply::header(std::string_view lower_case_name) const {
  const auto it = headers.find(std::string(lower_case_name));
  return it == headers.end() ? std::string() : it->second;
}

namespace {

struct curl_deleter {
  void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
struct slist_deleter {
  void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
};

std::size_t on_body(char* data, std::size_t size, std::size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

std::size_t on_header(char* data, std::size_t size, std::size_t count, void* out) {
  const std::string_view line(data, size * count);
  const auto colon = line.find(':');
  if (colon != std::string_view::npos) {
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
      value.remove_suffix(1);
    (*static_cast<std::map<std::string, std::string>*>(out))[name] = std::string(value);
  }
  return size * count;
}

}  // namespace

http_reply http_request(const std::string& method, const std::string& url, const std::string& body,
                        const http_headers& headers, milliseconds timeout) {
  static const bool initialised = [] {
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  }();
  http_reply reply;
  if (!initialised) {
    reply.error = "curl_global_init failed";
    return reply;
  }
  std::unique_ptr<CURL, curl_deleter> curl(curl_easy_init());
  if (!curl) {
    reply.error = "curl_easy_init failed";
    return reply;
  }
  std::unique_ptr<curl_slist, slist_deleter> list;
  const auto add_header = [&](const std::string& line) {
    curl_slist* next = curl_slist_append(list.get(), line.c_str());
    if (next != nullptr) {
      (void)list.release();
      list.reset(next);
    }
  };
  for (const auto& [name, value] : headers)
    add_header(name + ": " + value);
  add_header("Expect:");  // no 100-continue round trip for larger bodies
  if (!body.empty() && std::none_of(headers.begin(), headers.end(),
                                    [](const auto& h) { return h.first == "Content-Type"; })) {
    add_header("Content-Type: application/json");
  }

  char error[CURL_ERROR_SIZE] = {};
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &reply.headers);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list.get());
  if (method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (method != "GET" || !body.empty()) {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    reply.error = method + " " + url + ": " +
                  (error[0] != '\0' ? std::string(error) : curl_easy_strerror(rc));
    reply.status = 0;
    return reply;
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  reply.status = static_cast<int>(status);
  return reply;
}

// ---- daemon_process -------------------------------------------------------------------------

namespace {

std::string read_whole(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string default_binary() {
#ifdef SLUICE_BINARY_DIR
  return std::string(SLUICE_BINARY_DIR) + "/sluice";
#else
  return "sluice";
#endif
}

// Variables that would override the config file the test wrote.
const std::set<std::string>& overriding_variables() {
  static const std::set<std::string> names = {"SLUICE_API_TOKEN", "SLUICE_HTTP_PORT",
                                              "DB_POOL_SIZE",     "DB_MAX_OVERFLOW",
                                              "DB_POOL_RECYCLE",  "DB_POOL_TIMEOUT"};
  return names;
}

std::string status_text(int code) {
  return code > 128 ? "was killed by signal " + std::to_string(code - 128)
                    : "exited with code " + std::to_string(code);
}

}  // namespace

daemon_process::daemon_process(daemon_options options) {
  char dir_template[] = "/tmp/sluice-daemon-test.XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "daemon_process: mkdtemp");
  }
  dir_ = dir_template;
  config_ = dir_ / "sluice.toml";
  log_ = dir_ / "daemon.log";
  port_file_ = dir_ / "port";
  write_config(options.config);

  const std::string binary = options.binary.empty() ? default_binary() : options.binary;
  std::vector<std::string> args = {binary,           "serve",       "--config",
                                   config_.string(), "--port-file", port_file_.string()};
  args.insert(args.end(), options.extra_args.begin(), options.extra_args.end());

  auto env = options.env;
  if (options.database != nullptr && env.count("DATABASE_URL") == 0) {
    env["DATABASE_URL"] = options.database->conninfo();
  }
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const std::string name = entry.substr(0, entry.find('='));
    if (env.count(name) != 0 || overriding_variables().count(name) != 0) continue;
    env_storage.push_back(entry);
  }
  for (const auto& [name, value] : env) {
    if (value) env_storage.push_back(name + "=" + *value);
  }

  // Everything the child needs is prepared before fork(): after it, only async-signal-safe
  // calls (the test process has threads).
  std::vector<char*> argv;
  argv.reserve(args.size() + 1);
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  envp.reserve(env_storage.size() + 1);
  for (auto& e : env_storage)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  const int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int exec_pipe[2] = {-1, -1};  // reports a failed exec; closed by a successful one
  if (log_fd < 0 || null_fd < 0 || ::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    const int err = errno;
    if (log_fd >= 0) ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    throw std::system_error(err, std::generic_category(), "daemon_process: open");
  }
  const pid_t parent = ::getpid();
  sigset_t none;
  sigemptyset(&none);

  pid_ = ::fork();
  if (pid_ == 0) {
    // The daemon dies with the test (PDEATHSIG follows the thread that forked: the test's).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);  // NOLINT(concurrency-mt-unsafe): one thread here
    ::execve(argv[0], argv.data(), envp.data());
    const int err = errno;
    [[maybe_unused]] const auto n = ::write(exec_pipe[1], &err, sizeof err);
    ::_exit(127);
  }
  const int fork_errno = errno;
  ::close(exec_pipe[1]);
  ::close(log_fd);
  ::close(null_fd);
  if (pid_ < 0) {
    ::close(exec_pipe[0]);
    throw std::system_error(fork_errno, std::generic_category(), "daemon_process: fork");
  }
  int exec_errno = 0;
  const ssize_t got = ::read(exec_pipe[0], &exec_errno, sizeof exec_errno);
  ::close(exec_pipe[0]);
  if (got == static_cast<ssize_t>(sizeof exec_errno)) {
    reap(true);
    throw std::system_error(exec_errno, std::generic_category(),
                            "daemon_process: cannot run " + binary);
  }
  // A descriptor that becomes readable when the child exits (Linux 5.3+); -1 where the kernel
  // has none, and wait_exit() then polls.
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));

  if (!options.wait_until_serving) return;
  // The port file is the daemon's only "serving" signal that a test can see: poll for it.
  const auto deadline = steady_clock::now() + options.start_timeout;
  for (;;) {
    std::error_code ec;
    if (std::filesystem::exists(port_file_, ec)) {
      const std::string text = read_whole(port_file_);
      if (!text.empty() && text.back() == '\n') {
        port_ = std::stoi(text);
        return;
      }
    }
    if (!running()) {
      const auto code = wait_exit(milliseconds(0));
      throw std::runtime_error("sluice serve " + status_text(code.value_or(-1)) +
                               " before it served; its log:\n" + log());
    }
    if (steady_clock::now() > deadline) {
      kill_now();
      throw std::runtime_error("sluice serve did not start serving within " +
                               std::to_string(options.start_timeout.count()) + " ms; its log:\n" +
                               log());
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
}

daemon_process::~daemon_process() {
  try {
    kill_now();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "daemon_process: %s\n", e.what());
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  std::error_code ec;
  if (::testing::Test::HasFailure()) {
    // The daemon's side of a failure: the end of its log, where the test's output shows it.
    std::string text = log();
    constexpr std::size_t keep = std::size_t{16} * 1024;
    if (text.size() > keep) text = "...\n" + text.substr(text.size() - keep);
    std::fprintf(stderr, "---- log of sluice serve (pid %d, %s) ----\n%s---- end of log ----\n",
                 static_cast<int>(pid_), dir_.c_str(), text.c_str());
    return;  // the directory stays for a closer look
  }
  std::filesystem::remove_all(dir_, ec);
}

std::string daemon_process::url(std::string_view path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + std::string(path);
}

void daemon_process::write_config(const std::string& toml) const {
  // Written whole and renamed into place: a reload never reads half a file.
  const auto tmp = dir_ / "sluice.toml.tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << toml;
    if (!out) throw std::runtime_error("daemon_process: cannot write " + tmp.string());
  }
  std::filesystem::rename(tmp, config_);
}

std::string daemon_process::log() const {
  return read_whole(log_);
}

bool daemon_process::wait_for_log(std::string_view text, milliseconds timeout) const {
  return eventually([&] { return log().find(text) != std::string::npos; }, timeout,
                    milliseconds(20));
}

bool daemon_process::reap(bool block) {
  if (reaped_ || pid_ <= 0) return true;
  reaped_ = reap_child(pid_, status_, block, "daemon_process");
  return reaped_;
}

bool daemon_process::running() {
  return !reap(false);
}

void daemon_process::send_signal(int signo) {
  if (reaped_ || pid_ <= 0) return;
  ::kill(pid_, signo);
}

std::optional<int> daemon_process::wait_exit(milliseconds timeout) {
  const auto deadline = steady_clock::now() + timeout;
  while (!reap(false)) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
    if (left <= milliseconds(0)) return std::nullopt;
    if (pidfd_ >= 0) {
      // Readable once the child has exited.
      pollfd p{pidfd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) < 0 && errno != EINTR) {
        throw std::system_error(errno, std::generic_category(), "daemon_process: poll");
      }
    } else {
      std::this_thread::sleep_for(std::min(left, milliseconds(10)));  // no pidfd: poll waitpid
    }
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

std::optional<int> daemon_process::stop(milliseconds timeout) {
  send_signal(SIGTERM);
  const auto code = wait_exit(timeout);
  if (!code) kill_now();
  return code;
}

void daemon_process::kill_now() {
  if (reaped_ || pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  reap(true);
}

http_reply daemon_process::get(const std::string& path) const {
  return http_request("GET", url(path));
}

http_reply daemon_process::post(const std::string& path, const std::string& body,
                                const std::optional<std::string>& token) const {
  http_headers headers;
  if (token) headers.emplace_back("Authorization", "Bearer " + *token);
  return http_request("POST", url(path), body, headers);
}

}  // namespace sluice::test
