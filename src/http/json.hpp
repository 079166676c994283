#pragma once

// JSON in and out of the HTTP API: parsing request bodies with limits, and the JSON form of
// every object the API returns. Field names and units are documented in docs/api.md.
//
// Timestamps are RFC 3339 in UTC ("2026-11-26T15:49:20.25Z"); absent times are null.
// Thread-safety: every function is thread-safe.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "http/errors.hpp"
#include "sluice/pool/pool.hpp"
#include "sluice/sched/scheduler.hpp"
#include "sluice/sched/store.hpp"
#include "sluice/sched/task.hpp"

namespace sluice::http {

// Insertion-ordered, so responses list fields in the order the code (and docs/api.md) gives
// them rather than alphabetically.
using json = nlohmann::ordered_json;

// Request bodies may nest arrays and objects at most this deep: deeper documents are refused
// before they are built, so no recursive walk over them (dump, destruction) can exhaust the
// stack.
inline constexpr int max_json_depth = 64;

// Parses a request body. Throws api_error(bad_request) for malformed JSON (with the parser's
// message, which gives the byte position), an empty body, or nesting deeper than max_json_depth.
[[nodiscard]] json parse_json_body(std::string_view text);

// True when `value` nests arrays/objects deeper than `limit` (the value itself is depth 1).
// Iterative, so safe on any document.
[[nodiscard]] bool nesting_exceeds(const json& value, int limit);

// Serializes a response. Invalid UTF-8 in strings (a handler's error text, say) is replaced
// with U+FFFD instead of failing the request.
[[nodiscard]] std::string dump(const json& value);

// {"error": {"code": "...", "message": "..."}}
[[nodiscard]] json error_json(error_code code, std::string_view message);

// An RFC 3339 UTC timestamp, or null.
[[nodiscard]] json timestamp_json(const std::optional<sched::time_point>& t);
// Stored JSON text (payload, run detail, cycle by_type) as a JSON value; text that does not
// parse is returned as a string so the response is still valid JSON.
[[nodiscard]] json embedded_json(const std::string& text);

// The task JSON, one form for the API, the CLI (`sluice task show --json`) and the dashboard,
// with the names POST /api/v1/tasks takes (task_spec_json.hpp), so it can be posted back as is.
// Its schedule is schedule_json()'s object.
[[nodiscard]] json json_of(const sched::task& t);
// {"kind":"once","at":...} | {"kind":"interval","every":"1h30m"[,"anchor":...]} |
// {"kind":"cron","expr":...,"tz":...}, each with "text", the one-string form.
[[nodiscard]] json schedule_json(const sched::schedule& s);
[[nodiscard]] json json_of(const sched::task_run& r);
[[nodiscard]] json json_of(const sched::cycle_record& c);
[[nodiscard]] json json_of(const sched::node_info& n);
[[nodiscard]] json json_of(const sched::queue_depth& q);
[[nodiscard]] json json_of(const sched::cumulative_stats& s);
// Every pool_stats field, plus the acquire-wait histogram as
// [{"le_ms": 0.05, "count": n}, ..., {"le_ms": null, "count": n}] (per bucket, not cumulative;
// null is +Inf).
[[nodiscard]] json json_of(const pool::pool_stats& s);
// Steady-clock instants become wall-clock timestamps relative to the two "now"s given.
[[nodiscard]] json json_of(const sched::scheduler_status& s,
                           std::chrono::steady_clock::time_point steady_now,
                           sched::time_point wall_now);

// The wall-clock time of a steady-clock instant; nullopt for the steady clock's epoch, which the
// scheduler uses for "never".
[[nodiscard]] std::optional<sched::time_point> wall_time_of(
    std::chrono::steady_clock::time_point t, std::chrono::steady_clock::time_point steady_now,
    sched::time_point wall_now);

}  // namespace sluice::http
