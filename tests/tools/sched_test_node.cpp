// One scheduler node as a process of its own, for the multi-process integration tests (exactly
// once across nodes, rescue after kill -9). The database comes from DATABASE_URL / PG*, or from
// --conninfo (pools) and --listen-conninfo (the LISTEN connection), e.g. a PgBouncer in front.
//
//   sched_test_node --schema S [--node-id ID] [--workers N] [--types a,b] [--handler H]
//                   [--lane-size N] [--heartbeat-ms N] [--node-expiry-ms N] [--poll-ms N]
//                   [--app-name PREFIX] [--conninfo C] [--listen-conninfo C]
//                   [--commit-log FILE]
//
// Handlers (registered for every type in --types, default "test"):
//   noop                succeeds at once
//   ledger[:ms]         inserts (task id, node) into <schema>.ledger and completes the task in
//                       the same transaction (ctx.complete_in); rolls back when the claim is stale.
//                       With :ms the transaction first holds the task that long (pg_sleep), so a
//                       server that dies meanwhile catches it open. With --commit-log the row
//                       also gets a run_key (unique per run) and, once COMMIT has returned, the
//                       line "<run_key> <task id> <CLOCK_MONOTONIC ns>" is appended to FILE: what
//                       the server acknowledged, for tests that check a failover lost none of it
//   dag                 the ledger, but tasks whose payload holds "fail": true fail at once
//   sleep:<ms>          sleeps, stopping early when cancelled (then reports failure)
//   fail                always fails
//   ignore-cancel[:ms]  sleeps (default 5000 ms) without looking at the cancel token
//
// Prints "ready" on stdout once started. SIGTERM or SIGINT stops it gracefully (exit code 0);
// errors exit with 1, bad arguments with 2. Logs go to stderr.

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include "sluice/pg/connection.hpp"
#include "sluice/pool/manager.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/scheduler.hpp"

namespace pg = sluice::pg;
namespace pool = sluice::pool;
namespace sched = sluice::sched;
using namespace std::chrono_literals;

namespace {

struct options {
  std::string schema;
  std::string node_id;
  int workers = 4;
  std::vector<std::string> types{"test"};
  std::string handler = "noop";
  int lane_size = 4;
  std::optional<int> heartbeat_ms;
  std::optional<int> node_expiry_ms;
  std::optional<int> poll_ms;
  std::string app_name = "sched-test-node";
  std::string conninfo;         // empty: DATABASE_URL / PG*
  std::string listen_conninfo;  // empty: the pools'
  std::string commit_log;       // empty: none
};

class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

int to_int(std::string_view flag, const std::string& text) {
  try {
    std::size_t used = 0;
    const int v = std::stoi(text, &used);
    if (used != text.size()) throw std::invalid_argument(text);
    return v;
  } catch (const std::exception&) {
    throw usage_error(std::string(flag) + ": not a number: '" + text + "'");
  }
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = text.find(',', start);
    const std::size_t end = comma == std::string::npos ? text.size() : comma;
    if (end > start) out.push_back(text.substr(start, end - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw usage_error(flag + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--schema") {
      o.schema = value;
    } else if (flag == "--node-id") {
      o.node_id = value;
    } else if (flag == "--workers") {
      o.workers = to_int(flag, value);
    } else if (flag == "--types") {
      o.types = split(value);
    } else if (flag == "--handler") {
      o.handler = value;
    } else if (flag == "--lane-size") {
      o.lane_size = to_int(flag, value);
    } else if (flag == "--heartbeat-ms") {
      o.heartbeat_ms = to_int(flag, value);
    } else if (flag == "--node-expiry-ms") {
      o.node_expiry_ms = to_int(flag, value);
    } else if (flag == "--poll-ms") {
      o.poll_ms = to_int(flag, value);
    } else if (flag == "--conninfo") {
      o.conninfo = value;
    } else if (flag == "--listen-conninfo") {
      o.listen_conninfo = value;
    } else if (flag == "--commit-log") {
      o.commit_log = value;
    } else if (flag == "--app-name") {
      o.app_name = value;
    } else {
      throw usage_error("unknown argument " + flag);
    }
  }
  if (o.schema.empty()) throw usage_error("--schema is required");
  if (o.types.empty()) throw usage_error("--types needs at least one type");
  if (o.workers < 1) throw usage_error("--workers must be >= 1");
  return o;
}

// The --commit-log file: one line per run whose COMMIT the server acknowledged, appended with a
// single write() (O_APPEND), so lines of concurrent workers never interleave.
class commit_log {
 public:
  explicit commit_log(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)) {
    if (fd_ < 0) {
      throw std::system_error(errno, std::generic_category(), "--commit-log " + path);
    }
  }
  commit_log(const commit_log&) = delete;
  commit_log& operator=(const commit_log&) = delete;
  ~commit_log() { ::close(fd_); }

  // Unique across the processes of one machine that run at the same time: the pid in the high
  // bits, a counter in the low ones.
  std::int64_t next_key() {
    return (static_cast<std::int64_t>(::getpid()) << 32) | (++counter_ & 0xFFFFFFFF);
  }

  void acknowledged(std::int64_t run_key, std::int64_t task_id) const {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC, &now);
    const long long ns = static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec;
    const std::string line =
        std::to_string(run_key) + " " + std::to_string(task_id) + " " + std::to_string(ns) + "\n";
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
      std::fprintf(stderr, "sched_test_node: cannot append to the commit log: %s\n",
                   std::strerror(errno));
      std::abort();  // a test reading the log must not see a partial record
    }
  }

 private:
  int fd_;
  std::atomic<std::int64_t> counter_{0};
};

// The handler named on the command line. `work` is the pool handlers borrow from.
sched::handler make_handler(const options& o, const std::string& node_id) {
  const std::string& h = o.handler;
  if (h == "noop") {
    return [](sched::task_context&) { return sched::handler_result::success(); };
  }
  if (h == "fail") {
    return [](sched::task_context&) {
      return sched::handler_result::failure("sched_test_node: failing as asked");
    };
  }
  if (h == "ledger" || h == "dag" || h.rfind("ledger:", 0) == 0) {
    const int hold_ms = h.rfind("ledger:", 0) == 0 ? to_int("--handler ledger", h.substr(7)) : 0;
    if (hold_ms < 0) throw usage_error("--handler ledger:<ms> needs ms >= 0");
    const bool may_fail = h == "dag";
    std::shared_ptr<commit_log> log;
    if (!o.commit_log.empty()) log = std::make_shared<commit_log>(o.commit_log);
    const std::string insert =
        log ? "INSERT INTO " + o.schema + ".ledger (task_id, node, run_key) VALUES ($1, $2, $3)"
            : "INSERT INTO " + o.schema + ".ledger (task_id, node) VALUES ($1, $2)";
    return [insert, node_id, hold_ms, log, may_fail](sched::task_context& ctx) {
      if (may_fail && ctx.info().payload.find("\"fail\": true") != std::string::npos)
        return sched::handler_result::failure("sched_test_node: this task fails by design");
      pool::lease l = ctx.pools().get("work").acquire();
      pg::transaction tx(*l);
      if (hold_ms > 0) l->query("SELECT pg_sleep($1::float8 / 1000)", hold_ms);
      const std::int64_t run_key = log ? log->next_key() : 0;
      if (log) {
        l->query(insert, ctx.info().id, node_id, run_key);
      } else {
        l->query(insert, ctx.info().id, node_id);
      }
      if (!ctx.complete_in(*l)) {
        tx.rollback();
        return sched::handler_result::failure("claim is stale; ledger row rolled back");
      }
      tx.commit();
      if (log) log->acknowledged(run_key, ctx.info().id);
      return sched::handler_result::success();
    };
  }
  if (h.rfind("sleep:", 0) == 0) {
    const auto ms = std::chrono::milliseconds(to_int("--handler sleep", h.substr(6)));
    return [ms](sched::task_context& ctx) {
      if (!ctx.cancel().sleep_for(ms)) return sched::handler_result::failure("cancelled");
      return sched::handler_result::success();
    };
  }
  if (h == "ignore-cancel" || h.rfind("ignore-cancel:", 0) == 0) {
    const auto ms = std::chrono::milliseconds(
        h == "ignore-cancel" ? 5000 : to_int("--handler ignore-cancel", h.substr(14)));
    return [ms](sched::task_context&) {
      std::this_thread::sleep_for(ms);  // deliberately deaf to the cancel token
      return sched::handler_result::success();
    };
  }
  throw usage_error("unknown handler '" + h + "'");
}

int run(const options& o) {
  // Block the stop signals in every thread (the scheduler's inherit this mask) and take them
  // with sigwait() on the main thread, so stopping happens outside a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  pool::pool_manager pools;
  pool::settings work;
  work.name = "work";
  work.size = o.workers;
  work.max_overflow = 0;
  work.application_name = o.app_name + "-work";
  work.conninfo = o.conninfo;
  pools.add(work);

  pool::settings lane_settings;
  lane_settings.name = "lane";
  lane_settings.size = o.lane_size;
  lane_settings.max_overflow = 0;
  lane_settings.application_name = o.app_name + "-lane";
  lane_settings.conninfo = o.conninfo;
  pool::pool lane(lane_settings);

  sched::scheduler_settings s;
  s.schema = o.schema;
  s.node_id = o.node_id;
  s.workers = o.workers;
  s.listen_conninfo = o.listen_conninfo;
  if (o.heartbeat_ms) s.heartbeat_interval = std::chrono::milliseconds(*o.heartbeat_ms);
  if (o.node_expiry_ms) s.node_expiry = std::chrono::milliseconds(*o.node_expiry_ms);
  if (o.poll_ms) {
    s.poll_interval = std::chrono::milliseconds(*o.poll_ms);
    s.idle_poll_max = 3 * s.poll_interval;
  }
  sched::scheduler node(s, lane, &pools);
  const sched::handler h = make_handler(o, node.node_id());
  for (const std::string& type : o.types)
    node.handle(type, h);
  node.start();

  std::fputs("ready\n", stdout);
  std::fflush(stdout);
  std::fprintf(stderr, "sched_test_node %s: running (schema %s, %d workers, handler %s)\n",
               node.node_id().c_str(), o.schema.c_str(), o.workers, o.handler.c_str());

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "sched_test_node %s: signal %d, stopping\n", node.node_id().c_str(), sig);
  node.stop();
  const sched::scheduler_status st = node.status();
  std::fprintf(stderr, "sched_test_node %s: stopped (succeeded %llu, failed %llu, fenced %llu)\n",
               node.node_id().c_str(), static_cast<unsigned long long>(st.succeeded),
               static_cast<unsigned long long>(st.failed),
               static_cast<unsigned long long>(st.fenced));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const usage_error& e) {
    std::fprintf(stderr, "sched_test_node: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sched_test_node: %s\n", e.what());
    return 1;
  }
}
