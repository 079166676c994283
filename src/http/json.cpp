#include "http/json.hpp"

#include <cmath>
#include <utility>

namespace sluice::http {

namespace {

// Thrown from the parser callback to stop at the first level that is too deep.
struct too_deep {};

}  // namespace

json parse_json_body(std::string_view text) {
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    throw api_error(error_code::bad_request, "request body is empty; expected a JSON object");
  }
  try {
    // The callback sees every opening bracket with its depth (0 for the outermost), before the
    // nested value exists.
    return json::parse(text, [](int depth, json::parse_event_t event, json&) {
      if ((event == json::parse_event_t::object_start ||
           event == json::parse_event_t::array_start) &&
          depth >= max_json_depth) {
        throw too_deep{};
      }
      return true;
    });
  } catch (const too_deep&) {
    throw api_error(error_code::bad_request, "malformed JSON: nested deeper than " +
                                                 std::to_string(max_json_depth) + " levels");
  } catch (const json::exception& e) {
    throw api_error(error_code::bad_request, std::string("malformed JSON: ") + e.what());
  }
}

bool nesting_exceeds(const json& value, int limit) {
  std::vector<std::pair<const json*, int>> todo{{&value, 1}};
  while (!todo.empty()) {
    const auto [v, depth] = todo.back();
    todo.pop_back();
    if (!v->is_structured()) continue;
    if (depth > limit) return true;
    for (const auto& child : *v) {
      if (child.is_structured()) todo.emplace_back(&child, depth + 1);
    }
  }
  return false;
}

std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

json error_json(error_code code, std::string_view message) {
  return {{"error", {{"code", to_string(code)}, {"message", message}}}};
}

json timestamp_json(const std::optional<sched::time_point>& t) {
  if (!t) return nullptr;
  return sched::format_timestamp(*t);
}

json embedded_json(const std::string& text) {
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded()) return text;
  return parsed;
}

namespace {

json optional_string(const std::optional<std::string>& s) {
  if (!s) return nullptr;
  return *s;
}

}  // namespace

json schedule_json(const sched::schedule& s) {
  json out = {{"kind", s.kind_name()}};
  switch (s.kind()) {
    case sched::schedule_kind::once:
      out["at"] = sched::format_timestamp(s.at());
      break;
    case sched::schedule_kind::interval:
      out["every"] = sched::format_duration(s.period());
      if (const auto anchor = s.anchor()) out["anchor"] = sched::format_timestamp(*anchor);
      break;
    case sched::schedule_kind::cron:
      out["expr"] = s.spec();
      out["tz"] = s.tz();
      break;
  }
  out["text"] = s.to_string();
  return out;
}

json json_of(const sched::task& t) {
  json schedule;
  try {
    schedule = schedule_json(t.parsed_schedule());
  } catch (const std::exception&) {
    // A row edited into nonsense: still show what it holds, as the columns have it.
    schedule = {{"kind", t.schedule_kind},
                {"spec", t.schedule_spec},
                {"tz", t.timezone},
                {"text", nullptr}};
  }
  return {
      {"id", t.id},
      {"type", t.type},
      {"name", optional_string(t.name)},
      {"unique_key", optional_string(t.unique_key)},
      {"payload", embedded_json(t.payload)},
      {"state", sched::to_string(t.state)},
      {"schedule", std::move(schedule)},
      {"misfire_policy", t.misfire_policy},
      {"misfire_grace_s", t.misfire_grace_s},
      {"catch_up_limit", t.catch_up_limit},
      {"next_run_at", timestamp_json(t.next_run_at)},
      {"priority", t.priority},
      {"attempt", t.attempt},
      {"max_attempts", t.max_attempts},
      {"backoff_base_ms", t.backoff_base_ms},
      {"backoff_cap_ms", t.backoff_cap_ms},
      {"timeout_ms", t.timeout_ms},
      {"pause_after_failures", t.pause_after_failures},
      {"claim_token", t.claim_token},
      {"claimed_by", optional_string(t.claimed_by)},
      {"claimed_at", timestamp_json(t.claimed_at)},
      {"lease_until", timestamp_json(t.lease_until)},
      {"fire_time", timestamp_json(t.fire_time)},
      {"last_error", optional_string(t.last_error)},
      {"last_run_at", timestamp_json(t.last_run_at)},
      {"last_success_at", timestamp_json(t.last_success_at)},
      {"consecutive_failures", t.consecutive_failures},
      {"runs", t.runs},
      {"created_at", timestamp_json(t.created_at)},
      {"updated_at", timestamp_json(t.updated_at)},
  };
}

json json_of(const sched::task_run& r) {
  return {
      {"id", r.id},
      {"task_id", r.task_id},
      {"type", r.type},
      {"attempt", r.attempt},
      {"claim_token", r.claim_token},
      {"node", r.node},
      {"fire_time", timestamp_json(r.fire_time)},
      {"started_at", timestamp_json(r.started_at)},
      {"finished_at", timestamp_json(r.finished_at)},
      {"duration_ms", r.duration_ms()},
      {"outcome", r.outcome},
      {"error", optional_string(r.error)},
      {"detail", r.detail ? embedded_json(*r.detail) : json(nullptr)},
      {"recorded_by", r.recorded_by},
  };
}

json json_of(const sched::cycle_record& c) {
  return {
      {"id", c.id},
      {"node", c.node},
      {"started_at", timestamp_json(c.started_at)},
      {"duration_ms", c.duration_ms},
      {"claimed", c.claimed},
      {"succeeded", c.succeeded},
      {"failed", c.failed},
      {"skipped", c.skipped},
      {"rescued", c.rescued},
      {"fenced", c.fenced},
      {"by_type", embedded_json(c.by_type)},
      {"error", optional_string(c.error)},
  };
}

json json_of(const sched::node_info& n) {
  return {
      {"id", n.id},
      {"host", n.host},
      {"pid", n.pid},
      {"version", n.version},
      {"state", n.state},
      {"alive", n.alive},
      {"connection_budget", n.connection_budget},
      {"started_at", timestamp_json(n.started_at)},
      {"heartbeat_at", timestamp_json(n.heartbeat_at)},
      {"expires_at", timestamp_json(n.expires_at)},
  };
}

json json_of(const sched::queue_depth& q) {
  return {{"type", q.type}, {"by_state", q.by_state}, {"lag_s", q.lag_s}};
}

json json_of(const sched::cumulative_stats& s) {
  return {{"totals", s.totals}, {"by_type", s.by_type}};
}

json json_of(const pool::pool_stats& s) {
  json buckets = json::array();
  for (std::size_t i = 0; i < std::size(s.wait_bucket_counts); ++i) {
    const double bound = pool::wait_bucket_bounds_ms[i];
    buckets.push_back({{"le_ms", std::isinf(bound) ? json(nullptr) : json(bound)},
                       {"count", s.wait_bucket_counts[i]}});
  }
  return {
      {"name", s.name},
      {"size", s.size},
      {"max_overflow", s.max_overflow},
      {"max", s.max},
      {"open", s.open},
      {"checked_in", s.checked_in},
      {"checked_out", s.checked_out},
      {"overflow", s.overflow},
      {"waiting", s.waiting},
      {"peak_checked_out", s.peak_checked_out},
      {"saturated", s.saturated},
      {"closed", s.closed},
      {"connects", s.connects},
      {"connect_failures", s.connect_failures},
      {"server_refusals", s.server_refusals},
      {"checkouts", s.checkouts},
      {"timeouts", s.timeouts},
      {"invalidations", s.invalidations},
      {"recycles", s.recycles},
      {"idle_closes", s.idle_closes},
      {"pings_failed", s.pings_failed},
      {"leaks", s.leaks},
      {"wait_p50_ms", s.wait_p50_ms},
      {"wait_p99_ms", s.wait_p99_ms},
      {"wait_max_ms", s.wait_max_ms},
      {"wait_sum_ms", s.wait_sum_ms},
      {"wait_histogram", std::move(buckets)},
      {"last_connect_error",
       s.last_connect_error.empty() ? json(nullptr) : json(s.last_connect_error)},
  };
}

std::optional<sched::time_point> wall_time_of(std::chrono::steady_clock::time_point t,
                                              std::chrono::steady_clock::time_point steady_now,
                                              sched::time_point wall_now) {
  if (t == std::chrono::steady_clock::time_point{}) return std::nullopt;
  return wall_now - std::chrono::duration_cast<sched::time_point::duration>(steady_now - t);
}

json json_of(const sched::scheduler_status& s, std::chrono::steady_clock::time_point steady_now,
             sched::time_point wall_now) {
  const auto last_cycle = wall_time_of(s.last_cycle_at, steady_now, wall_now);
  json age = nullptr;
  if (last_cycle) age = std::chrono::duration<double>(steady_now - s.last_cycle_at).count();
  return {
      {"state", sched::to_string(s.state)},
      {"node_id", s.node_id},
      {"leader", s.leader},
      {"started_at", timestamp_json(wall_time_of(s.started_at, steady_now, wall_now))},
      {"last_cycle_at", timestamp_json(last_cycle)},
      {"last_cycle_age_s", age},
      {"current_poll_ms", s.current_poll.count()},
      {"cycles", s.cycles},
      {"cycle_errors", s.cycle_errors},
      {"last_error", s.last_error.empty() ? json(nullptr) : json(s.last_error)},
      {"workers", s.workers},
      {"running", s.running},
      {"stuck", s.stuck},
      {"running_by_type", s.running_by_type},
      {"succeeded", s.succeeded},
      {"failed", s.failed},
      {"timed_out", s.timed_out},
      {"fenced", s.fenced},
      {"rescued", s.rescued},
      {"skipped", s.skipped},
      {"claimed", s.claimed},
  };
}

}  // namespace sluice::http
