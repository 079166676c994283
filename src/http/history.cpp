#include "http/history.hpp"

#include <algorithm>
#include <exception>
#include <utility>

#include "sluice/pg/connection.hpp"

namespace sluice::http {

namespace {

// One round trip: the server's limit and our connections, the latter as a JSON object so that
// no rows (no connection of ours) still yields max_connections.
constexpr const char* server_connections_sql =
    "SELECT current_setting('max_connections')::int,"
    " coalesce((SELECT json_object_agg(application_name, n) FROM"
    "   (SELECT application_name, count(*) AS n FROM pg_stat_activity"
    "     WHERE application_name LIKE 'sluice/%'"
    "        OR application_name IN (SELECT jsonb_array_elements_text($1::jsonb))"
    "     GROUP BY application_name) a), '{}')::text";

pool_sample sample_of(const pool::pool_stats& s) {
  return {s.name, s.checked_out, s.open, s.max, s.waiting};
}

}  // namespace

history_sample take_sample(const pool::pool_manager& pools, pool::pool& lane,
                           std::chrono::milliseconds db_timeout) {
  history_sample out;
  out.at = std::chrono::system_clock::now();
  json app_names = json::array();
  for (const auto& name : pools.names()) {
    if (const pool::pool* p = pools.find(name)) {
      out.pools.push_back(sample_of(p->stats()));
      app_names.push_back(p->config().effective_application_name());
    }
  }
  if (pools.find(lane.name()) != &lane) {
    out.pools.push_back(sample_of(lane.stats()));
    app_names.push_back(lane.config().effective_application_name());
  }
  try {
    auto lease = lane.acquire_for(db_timeout);
    const auto res = lease->query_cached(server_connections_sql, pg::json_text{dump(app_names)});
    out.max_connections = res.at(0).get<int>(0);
    const json counts = json::parse(res.at(0).get<std::string>(1));
    for (const auto& [name, n] : counts.items())
      out.connections[name] = n.get<int>();
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  return out;
}

pool_history::pool_history(std::chrono::milliseconds interval, std::size_t capacity, sampler take)
    : interval_(std::max(interval, std::chrono::milliseconds(1))),
      capacity_(std::max<std::size_t>(capacity, 1)),
      take_(std::move(take)) {}

pool_history::~pool_history() {
  stop();
}

void pool_history::start() {
  const std::scoped_lock start_lock(start_mutex_);
  if (thread_.joinable()) return;
  {
    const std::scoped_lock lock(mutex_);
    stopping_ = false;
  }
  thread_ = std::thread([this] { run(); });
}

void pool_history::stop() {
  const std::scoped_lock start_lock(start_mutex_);
  {
    const std::scoped_lock lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void pool_history::run() {
  auto next = std::chrono::steady_clock::now();
  for (;;) {
    sample_now();
    next += interval_;
    // A slow sample (database timeout) must not make the next ones bunch up.
    next = std::max(next, std::chrono::steady_clock::now());
    std::unique_lock lock(mutex_);
    if (cv_.wait_until(lock, next, [this] { return stopping_; })) return;
  }
}

void pool_history::sample_now() {
  add(take_());
}

void pool_history::add(history_sample s) {
  const std::scoped_lock lock(mutex_);
  samples_.push_back(std::move(s));
  while (samples_.size() > capacity_)
    samples_.pop_front();
}

std::vector<history_sample> pool_history::samples(std::optional<sched::time_point> since) const {
  const std::scoped_lock lock(mutex_);
  std::vector<history_sample> out;
  for (const auto& s : samples_) {
    if (!since || s.at > *since) out.push_back(s);
  }
  return out;
}

std::optional<history_sample> pool_history::latest() const {
  const std::scoped_lock lock(mutex_);
  if (samples_.empty()) return std::nullopt;
  return samples_.back();
}

json json_of(const history_sample& s) {
  json pools = json::array();
  for (const auto& p : s.pools) {
    pools.push_back({{"name", p.name},
                     {"checked_out", p.checked_out},
                     {"open", p.open},
                     {"max", p.max},
                     {"waiting", p.waiting}});
  }
  json server = nullptr;
  if (s.max_connections) {
    server = {{"max_connections", *s.max_connections}, {"connections", s.connections}};
  }
  json out = {{"at", sched::format_timestamp(s.at)},
              {"pools", std::move(pools)},
              {"server", std::move(server)}};
  if (!s.error.empty()) out["error"] = s.error;
  return out;
}

}  // namespace sluice::http
