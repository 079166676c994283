#include "sched/listener.hpp"

#include <algorithm>
#include <charconv>

#include "sched/queries.hpp"
#include "sluice/log.hpp"

namespace sluice::sched::detail {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

constexpr milliseconds probe_wait{2000};
constexpr milliseconds recheck_after{60000};  // while LISTEN does not deliver
constexpr milliseconds wait_step{250};        // how soon stop() is noticed

}  // namespace

listener::listener(pool::pool& lane, settings s, hooks h)
    : lane_(lane), settings_(std::move(s)), hooks_(std::move(h)) {}

listener::~listener() {
  stop();
}

void listener::start() {
  thread_ = std::thread([this] { loop(); });
}

void listener::stop() {
  {
    const std::scoped_lock lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string listener::problem() const {
  const std::scoped_lock lock(mutex_);
  return problem_;
}

bool listener::wait_stop(milliseconds d) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, d, [this] { return stop_; });
}

// A notification on the tasks channel means work; one on the nodes channel is a heartbeat
// ("hb <expiry ms> <node id>") or a listener's probe ("probe ...").
void listener::dispatch(const pg::notification& n) {
  if (n.channel != settings_.nodes_channel) {
    if (hooks_.wake) hooks_.wake();
    return;
  }
  const std::string_view p = n.payload;
  if (!probe_.empty() && p == probe_) {
    probe_seen_ = true;
    return;
  }
  if (p.rfind("hb ", 0) != 0) return;
  const auto rest = p.substr(3);
  const auto space = rest.find(' ');
  if (space == std::string_view::npos) return;
  std::int64_t ms = 0;
  const auto [end, ec] = std::from_chars(rest.data(), rest.data() + space, ms);
  if (ec != std::errc() || end != rest.data() + space || ms <= 0) return;
  if (hooks_.heartbeat) hooks_.heartbeat(std::string(rest.substr(space + 1)), milliseconds(ms));
}

bool listener::check_delivery(pg::connection& c) {
  probe_ = "probe " + std::to_string(settings_.incarnation) + " " + std::to_string(++probes_);
  probe_seen_ = false;
  try {
    auto lease = lane_.acquire_for(probe_wait);
    lease->query_cached(queries::notify_probe, settings_.nodes_channel, probe_);
  } catch (const std::exception& e) {
    log(log_level::warn, "scheduler",
        std::string("could not check the LISTEN connection: ") + e.what());
    probe_.clear();
    return true;  // cannot tell now; the heartbeat's next-due check bounds the cost of being wrong
  }
  const auto deadline = steady_clock::now() + probe_wait;
  while (!probe_seen_) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - steady_clock::now());
    if (left.count() <= 0) break;
    const auto n = c.wait_notification(left);
    if (!n) continue;
    dispatch(*n);
    for (const auto& more : c.drain_notifications())
      dispatch(more);
  }
  const bool delivered = probe_seen_;
  probe_.clear();
  const std::string problem =
      delivered ? std::string()
                : "the LISTEN connection (" + c.describe() +
                      ") did not receive a notification this node sent within " +
                      std::to_string(probe_wait.count()) +
                      " ms: it probably goes through PgBouncer in transaction mode, which "
                      "cannot carry LISTEN, so new tasks are found only by polling (every " +
                      std::to_string(settings_.poll_interval.count()) +
                      " ms). Set scheduler.listen_url (listen_conninfo in the library) to a "
                      "direct connection to PostgreSQL";
  bool changed = false;
  {
    const std::scoped_lock lock(mutex_);
    changed = problem != problem_;
    problem_ = problem;
  }
  if (changed) {
    log(delivered ? log_level::info : log_level::warn, "scheduler",
        delivered ? std::string("the LISTEN connection delivers notifications") : problem);
  }
  return delivered;
}

void listener::loop() {
  milliseconds backoff{100};
  for (;;) {
    {
      const std::scoped_lock lock(mutex_);
      if (stop_) return;
    }
    try {
      pg::connect_options o;
      o.conninfo = settings_.conninfo;
      o.application_name = settings_.application_name;
      o.connect_timeout = settings_.connect_timeout;
      pg::connection c = pg::connection::open(o);
      c.listen(settings_.tasks_channel);
      c.listen(settings_.nodes_channel);
      backoff = milliseconds(100);
      if (hooks_.wake) hooks_.wake();  // anything inserted while we were not listening
      if (!check_delivery(c)) {
        // Polling does the work meanwhile, at poll_interval. Probed again later: the path to
        // the server may change.
        if (wait_stop(recheck_after)) return;
        continue;
      }
      delivering_ = true;
      for (;;) {
        {
          const std::scoped_lock lock(mutex_);
          if (stop_) return;
        }
        if (const auto n = c.wait_notification(wait_step)) {
          dispatch(*n);
          for (const auto& more : c.drain_notifications())
            dispatch(more);
        }
      }
    } catch (const std::exception& e) {
      if (delivering_.exchange(false)) {
        log(log_level::warn, "scheduler",
            std::string("LISTEN connection lost, polling meanwhile: ") + e.what());
      }
    }
    if (wait_stop(backoff)) return;
    backoff = std::min(backoff * 2, milliseconds(5000));
  }
}

}  // namespace sluice::sched::detail
