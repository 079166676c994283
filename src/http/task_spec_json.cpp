#include "http/task_spec_json.hpp"

#include <array>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "sluice/sched/cron.hpp"
#include "sluice/sched/schedule.hpp"

namespace sluice::http {

namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

[[noreturn]] void bad(const std::string& message) {
  throw api_error(error_code::bad_request, message);
}

// Field names echoed in messages are cut short: a client may send a megabyte-long key.
std::string shown(std::string_view text) {
  constexpr std::size_t limit = 64;
  if (text.size() <= limit) return std::string(text);
  return std::string(text.substr(0, limit)) + "...";
}

std::string kind_of(const json& v) {
  if (v.is_number_float()) return "a non-integer number";
  if (v.is_number()) return "a number";
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

// The schedule layer's messages start with "schedule: "; under a field name that is noise.
std::string under(std::string_view field, std::string_view message) {
  constexpr std::string_view prefix = "schedule: ";
  if (message.substr(0, prefix.size()) == prefix) message.remove_prefix(prefix.size());
  return std::string(field) + ": " + std::string(message);
}

std::int64_t integer(const json& v, std::string_view field, std::int64_t lo, std::int64_t hi) {
  const auto range = [&] {
    bad(std::string(field) + ": must be between " + std::to_string(lo) + " and " +
        std::to_string(hi));
  };
  if (!v.is_number_integer()) bad(std::string(field) + ": expected an integer, got " + kind_of(v));
  // nlohmann keeps non-negative integers as unsigned: compare before narrowing.
  if (v.is_number_unsigned() && v.get<std::uint64_t>() > static_cast<std::uint64_t>(hi)) range();
  const auto i = v.get<std::int64_t>();
  if (i < lo || i > hi) range();
  return i;
}

int small_integer(const json& v, std::string_view field, int lo, int hi) {
  return static_cast<int>(integer(v, field, lo, hi));
}

// Text the database stores as text or jsonb cannot hold NUL: libpq would cut the string short
// and jsonb refuses \u0000.
bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

// A string field; NUL is refused here, for every field, so that no message quoting the value
// (or the database) ever sees it.
const std::string& string_field(const json& v, std::string_view field) {
  if (!v.is_string()) bad(std::string(field) + ": expected a string, got " + kind_of(v));
  const auto& text = v.get_ref<const std::string&>();
  if (has_nul(text)) bad(std::string(field) + ": must not contain NUL characters (\\u0000)");
  return text;
}

bool any_nul(const json& value) {
  std::vector<const json*> todo{&value};
  while (!todo.empty()) {
    const json* v = todo.back();
    todo.pop_back();
    if (v->is_string() && has_nul(v->get_ref<const std::string&>())) return true;
    if (v->is_object()) {
      for (const auto& [key, child] : v->items()) {
        if (has_nul(key)) return true;
        todo.push_back(&child);
      }
    } else if (v->is_array()) {
      for (const auto& child : *v)
        todo.push_back(&child);
    }
  }
  return false;
}

sched::time_point timestamp(const json& v, std::string_view field) {
  const std::string& text = string_field(v, field);
  try {
    return sched::parse_timestamp(text);
  } catch (const sched::schedule_error& e) {
    bad(under(field, e.what()));
  }
}

// `ignored`: names that are accepted but not listed as known (the read-only fields of a task's
// JSON, see task_spec_json.hpp).
void refuse_unknown_keys(const json& object, std::string_view prefix,
                         std::initializer_list<std::string_view> allowed, std::string_view context,
                         std::initializer_list<std::string_view> ignored = {}) {
  for (const auto& [key, value] : object.items()) {
    bool known = false;
    for (const auto a : allowed)
      known = known || key == a;
    for (const auto a : ignored)
      known = known || key == a;
    if (known) continue;
    std::string list;
    for (const auto a : allowed)
      list += (list.empty() ? "" : ", ") + std::string(a);
    bad("unknown field '" + std::string(prefix) + shown(key) + "'" + std::string(context) +
        " (known: " + list + ")");
  }
}

sched::schedule interval_schedule(const json& s) {
  const auto every = s.find("every");
  if (every == s.end()) bad("schedule.every: required for an interval schedule (e.g. \"30s\")");
  seconds period{};
  if (every->is_number()) {
    const bool non_positive = every->is_number_unsigned()
                                  ? every->get<std::uint64_t>() == 0
                                  : every->is_number_integer() && every->get<std::int64_t>() <= 0;
    if (non_positive) {
      bad("schedule.every: must be positive (at least 1 second)");
    }
    period = seconds{integer(*every, "schedule.every", 1, sched::schedule::max_interval.count())};
  } else {
    const std::string& text = string_field(*every, "schedule.every");
    if (!text.empty() && text.front() == '-') {
      bad("schedule.every: must be positive (at least 1 second)");
    }
    try {
      period = sched::parse_duration(text);
    } catch (const sched::schedule_error& e) {
      bad(under("schedule.every", e.what()));
    }
  }
  std::optional<sched::time_point> anchor;
  if (const auto a = s.find("anchor"); a != s.end()) anchor = timestamp(*a, "schedule.anchor");
  try {
    return sched::schedule::every(period, anchor);
  } catch (const sched::schedule_error& e) {
    bad(under("schedule.every", e.what()));
  }
}

sched::schedule structured_schedule(const json& s);

// The object form may carry "text", the one-string form the task's JSON shows beside the fields:
// then it must describe the same schedule, so that editing one and not the other is caught.
sched::schedule schedule_from(const json& s) {
  sched::schedule out = structured_schedule(s);
  if (!s.is_object()) return out;
  const auto text = s.find("text");
  if (text == s.end() || text->is_null()) return out;
  const std::string& given = string_field(*text, "schedule.text");
  std::optional<sched::schedule> parsed;
  try {
    parsed = sched::schedule::parse(given);
  } catch (const sched::schedule_error& e) {
    bad(under("schedule.text", e.what()));
  }
  if (!(*parsed == out)) {
    bad("schedule.text: '" + shown(given) + "' is not the schedule the other fields give ('" +
        shown(out.to_string()) + "'); change both, or leave \"text\" out");
  }
  return out;
}

sched::schedule structured_schedule(const json& s) {
  if (s.is_string()) {
    try {
      return sched::schedule::parse(string_field(s, "schedule"));
    } catch (const sched::schedule_error& e) {
      bad(under("schedule", e.what()));
    }
  }
  if (!s.is_object()) {
    bad("schedule: expected an object such as {\"kind\":\"interval\",\"every\":\"30s\"} or a "
        "string such as \"every:30s\", got " +
        kind_of(s));
  }
  const auto kind_field = s.find("kind");
  if (kind_field == s.end()) bad("schedule.kind: required (once, interval or cron)");
  sched::schedule_kind kind{};
  try {
    kind = sched::parse_schedule_kind(string_field(*kind_field, "schedule.kind"));
  } catch (const sched::schedule_error& e) {
    bad(under("schedule.kind", e.what()));
  }
  switch (kind) {
    case sched::schedule_kind::once: {
      refuse_unknown_keys(s, "schedule.", {"kind", "at", "text"}, " for a once schedule");
      const auto at = s.find("at");
      // No time: due now (the epoch sorts before every real time).
      return sched::schedule::once(at == s.end() ? sched::time_point{}
                                                 : timestamp(*at, "schedule.at"));
    }
    case sched::schedule_kind::interval:
      refuse_unknown_keys(s, "schedule.", {"kind", "every", "anchor", "text"},
                          " for an interval schedule");
      return interval_schedule(s);
    case sched::schedule_kind::cron: {
      refuse_unknown_keys(s, "schedule.", {"kind", "expr", "tz", "text"}, " for a cron schedule");
      const auto expr = s.find("expr");
      if (expr == s.end())
        bad("schedule.expr: required for a cron schedule (e.g. \"*/5 * * * *\")");
      const std::string& text = string_field(*expr, "schedule.expr");
      std::string tz = "UTC";
      if (const auto z = s.find("tz"); z != s.end()) tz = string_field(*z, "schedule.tz");
      try {
        return sched::schedule::cron(text, tz);
      } catch (const sched::schedule_error& e) {
        bad(under("schedule.expr", e.what()));
      }
    }
  }
  bad("schedule.kind: unsupported");
}

}  // namespace

sched::task_spec task_spec_from_json(const json& body, const spec_defaults& defaults) {
  if (!body.is_object()) bad("request body: expected a JSON object, got " + kind_of(body));
  refuse_unknown_keys(
      body, "",
      {"type", "name", "unique_key", "on_conflict", "payload", "schedule", "priority",
       "max_attempts", "backoff_base_ms", "backoff_cap_ms", "timeout_ms", "misfire_policy",
       "misfire_grace_s", "catch_up_limit", "pause_after_failures"},
      "",
      {"id", "state", "next_run_at", "attempt", "claim_token", "claimed_by", "claimed_at",
       "lease_until", "fire_time", "last_error", "last_run_at", "last_success_at",
       "consecutive_failures", "runs", "created_at", "updated_at", "upstream", "downstream"});
  sched::task_spec spec;
  const auto type = body.find("type");
  if (type == body.end()) bad("type: required (the handler to run, e.g. \"sql\" or \"http\")");
  spec.type = string_field(*type, "type");
  if (spec.type.empty() || spec.type.size() > 100) {
    bad("type: must be 1-100 characters of A-Z a-z 0-9 _ . : -");
  }
  if (defaults) defaults(spec);

  if (const auto name = body.find("name"); name != body.end() && !name->is_null()) {
    spec.name = string_field(*name, "name");
  }

  if (const auto key = body.find("unique_key"); key != body.end() && !key->is_null()) {
    spec.unique_key = string_field(*key, "unique_key");
    if (spec.unique_key->empty() || spec.unique_key->size() > 200) {
      bad("unique_key: must be 1-200 characters");
    }
  }
  if (const auto mode = body.find("on_conflict"); mode != body.end()) {
    try {
      spec.on_conflict = sched::parse_conflict_mode(string_field(*mode, "on_conflict"));
    } catch (const sched::schedule_error& e) {
      bad(e.what());
    }
  }

  if (const auto payload = body.find("payload"); payload != body.end()) {
    if (!payload->is_object()) bad("payload: expected a JSON object, got " + kind_of(*payload));
    if (nesting_exceeds(*payload, max_json_depth)) {
      bad("payload: nested deeper than " + std::to_string(max_json_depth) + " levels");
    }
    if (any_nul(*payload)) {
      bad("payload: strings must not contain \\u0000 (PostgreSQL's jsonb cannot store it)");
    }
    spec.payload = dump(*payload);
  }

  if (const auto s = body.find("schedule"); s != body.end()) spec.when = schedule_from(*s);
  if (spec.when.recurring() && !spec.when.next_after(std::chrono::system_clock::now())) {
    bad("schedule: '" + shown(spec.when.to_string()) + "' never fires after now");
  }

  const auto field = [&](const char* name) -> const json* {
    const auto it = body.find(name);
    return it == body.end() ? nullptr : &*it;
  };
  if (const json* v = field("priority")) spec.priority = small_integer(*v, "priority", -1000, 1000);
  if (const json* v = field("max_attempts")) {
    spec.max_attempts = small_integer(*v, "max_attempts", 1, 1000);
  }
  if (const json* v = field("backoff_base_ms")) {
    spec.backoff_base = milliseconds{integer(*v, "backoff_base_ms", 0, max_task_duration_ms)};
  }
  if (const json* v = field("backoff_cap_ms")) {
    spec.backoff_cap = milliseconds{integer(*v, "backoff_cap_ms", 0, max_task_duration_ms)};
  }
  if (spec.backoff_cap < spec.backoff_base) {
    bad("backoff_cap_ms: must be at least backoff_base_ms (" +
        std::to_string(spec.backoff_base.count()) + ")");
  }
  if (const json* v = field("timeout_ms")) {
    spec.timeout = milliseconds{integer(*v, "timeout_ms", 1, max_task_duration_ms)};
  }
  if (const json* v = field("misfire_policy")) {
    try {
      spec.misfire = sched::parse_misfire_policy(string_field(*v, "misfire_policy"));
    } catch (const sched::schedule_error& e) {
      bad(under("misfire_policy", e.what()));
    }
  }
  if (const json* v = field("misfire_grace_s")) {
    spec.misfire_grace = seconds{integer(*v, "misfire_grace_s", 0, max_task_duration_ms / 1000)};
  }
  if (const json* v = field("catch_up_limit")) {
    spec.catch_up_limit = small_integer(*v, "catch_up_limit", 1, 10000);
  }
  if (const json* v = field("pause_after_failures")) {
    spec.pause_after_failures = small_integer(*v, "pause_after_failures", 0, 1'000'000);
  }

  try {
    spec.validate();
  } catch (const sched::schedule_error& e) {
    bad(e.what());
  }
  return spec;
}

sched::task_spec task_spec_from_json(std::string_view text, const spec_defaults& defaults) {
  return task_spec_from_json(parse_json_body(text), defaults);
}

sched::time_point reschedule_time_from_json(const json& body) {
  if (!body.is_object()) bad("request body: expected a JSON object, got " + kind_of(body));
  refuse_unknown_keys(body, "", {"at"}, "");
  const auto at = body.find("at");
  if (at == body.end()) bad("at: required (the new next run time, RFC 3339)");
  return timestamp(*at, "at");
}

}  // namespace sluice::http
