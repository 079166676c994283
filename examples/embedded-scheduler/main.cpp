// embedded_scheduler: sluice's durable scheduler inside your own C++ service, with your own
// handler.
//
// It migrates the schema (idempotent), registers a C++ handler for the task type "greet",
// enqueues a few one-shot tasks and an interval task, and runs until every one-shot task has
// succeeded or SIGINT/SIGTERM arrives; then it stops cleanly (running handlers finish, claims
// are handed back, the node deregisters).
//
// Usage: embedded_scheduler [conninfo] [--once]
//   --once: exit as soon as the one-shot tasks are done (used by the test suite).
// Exits 0 on a clean stop, 1 with a one-line reason otherwise.

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <sluice/pool/manager.hpp>
#include <sluice/pool/pool.hpp>
#include <sluice/sched/schedule.hpp>
#include <sluice/sched/scheduler.hpp>
#include <sluice/sched/store.hpp>
#include <sluice/sched/task.hpp>

namespace {

using namespace std::chrono_literals;

// Blocks SIGINT and SIGTERM in every thread and waits for them with sigtimedwait() on the main
// thread: no async-signal-unsafe code in a handler.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

int main(int argc, char** argv) try {
  std::string conninfo;
  bool once = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--once")
      once = true;
    else
      conninfo = arg;
  }
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts

  // The scheduler's own pool ("lane"): claims, completions, heartbeats. Handlers get theirs
  // from the manager, so they can never starve the scheduler.
  sluice::pool::settings lane_settings;
  lane_settings.name = "scheduler";
  lane_settings.conninfo = conninfo;
  lane_settings.size = 2;
  lane_settings.max_overflow = 1;
  sluice::pool::pool lane(lane_settings);

  sluice::pool::pool_manager pools;
  sluice::pool::settings app = lane_settings;
  app.name = "app";
  pools.add(app);

  const std::string schema = "sluice_example";
  sluice::sched::store store(lane, schema);
  store.migrate();

  sluice::sched::scheduler_settings settings;
  settings.schema = schema;
  settings.workers = 4;
  settings.stop_grace = 5s;
  sluice::sched::scheduler scheduler(settings, lane, &pools);

  std::atomic<int> greeted{0};
  scheduler.handle("greet", [&greeted](sluice::sched::task_context& ctx) {
    // Work on the application's pool; the task's payload is a JSON object.
    sluice::pool::lease l = ctx.pools().get("app").acquire();
    const std::string who =
        l->query("SELECT ($1::jsonb)->>'who'", ctx.payload()).one<std::string>();
    if (who.empty()) return sluice::sched::handler_result::failure("payload has no \"who\"");
    std::printf("hello, %s (task %lld, attempt %d)\n", who.c_str(),
                static_cast<long long>(ctx.info().id), ctx.info().attempt);
    ++greeted;
    return sluice::sched::handler_result::success();
  });
  scheduler.handle("tick", [](sluice::sched::task_context& ctx) {
    std::printf("tick at fire time %lld\n",
                static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(
                                           ctx.fire_time().time_since_epoch())
                                           .count()));
    return sluice::sched::handler_result::success();
  });
  scheduler.start();

  std::vector<std::int64_t> ids;
  for (const char* who : {"ada", "grace", "edsger"}) {
    sluice::sched::task_spec spec;
    spec.type = "greet";
    spec.payload = std::string("{\"who\":\"") + who + "\"}";
    ids.push_back(store.create(spec));
  }
  sluice::sched::task_spec tick;
  tick.type = "tick";
  tick.name = "example-tick";
  tick.when = sluice::sched::schedule::every(10s);
  if (!store.get_by_name(*tick.name)) store.create(tick);

  // Wait for a signal, or (with --once) for the one-shot tasks to finish.
  int exit_code = 0;
  const auto give_up = std::chrono::steady_clock::now() + 60s;
  for (;;) {
    const timespec wait{0, 200'000'000};
    const int sig = sigtimedwait(&signals, nullptr, &wait);
    if (sig > 0) {
      std::printf("signal %d: stopping\n", sig);
      break;
    }
    if (once) {
      int done = 0;
      for (const std::int64_t id : ids) {
        const auto t = store.get(id);
        done += t && t->state == sluice::sched::task_state::succeeded ? 1 : 0;
      }
      if (done == static_cast<int>(ids.size())) break;
      if (std::chrono::steady_clock::now() > give_up) {
        std::fprintf(stderr, "embedded_scheduler: tasks not done after 60 s\n");
        exit_code = 1;
        break;
      }
    }
  }
  scheduler.stop();
  std::printf("greeted %d, scheduler %s\n", greeted.load(),
              std::string(sluice::sched::to_string(scheduler.status().state)).c_str());
  return exit_code;
} catch (const std::exception& e) {
  std::fprintf(stderr, "embedded_scheduler: %s\n", e.what());
  return 1;
}
