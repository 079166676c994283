#pragma once

// The body of POST /api/v1/tasks turned into a sched::task_spec. Strict: unknown fields, wrong
// JSON types, out-of-range numbers and malformed schedules are refused with a message that
// names the field ("schedule.expr: cron: minute field '61' is out of range 0-59"), so a typo
// never silently becomes a default.
//
// Accepted fields (all but "type" optional; docs/api.md has examples):
//   type (string), name (string | null), unique_key (string | null), on_conflict ("keep" |
//   "replace"), payload (object),
//   schedule: {"kind":"once","at":"<RFC 3339>"} (no "at": due now)
//           | {"kind":"interval","every":"30s" | <seconds>, "anchor":"<RFC 3339>"}
//           | {"kind":"cron","expr":"*/5 * * * *","tz":"Europe/Berlin"}
//             (each may carry "text", the one-string form, which must then agree)
//           | "<one-string form>" ("every:30s", "cron:0 9 * * MON-FRI@Europe/Berlin", ...),
//   priority, max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms, misfire_policy
//   ("coalesce" | "catch_up" | "skip"), misfire_grace_s, catch_up_limit, pause_after_failures
//   (integers).
// These are the names of the task JSON the API returns (json_of(sched::task) in json.hpp); its
// other fields (id, state, next_run_at, attempt, runs, created_at, ...: what the scheduler
// writes) are accepted and ignored, so that a task's JSON can be posted back as it is.
//
// Thread-safety: pure functions. Throws: api_error(bad_request) for every input it refuses, and
// nothing else (std::bad_alloc aside) whatever the input, so it can be fuzzed directly.

#include <functional>
#include <string_view>

#include "http/json.hpp"
#include "sluice/sched/task.hpp"

namespace sluice::http {

// Longest accepted backoff_base_ms, backoff_cap_ms and timeout_ms, and misfire_grace_s: one
// year. Beyond that the database's time arithmetic on them could overflow.
inline constexpr std::int64_t max_task_duration_ms = 366LL * 24 * 3600 * 1000;

// `defaults`, when set, is given the new spec as soon as its type is known, before the body's
// own settings: the daemon's per-type defaults. The returned spec has passed
// task_spec::validate().
using spec_defaults = std::function<void(sched::task_spec&)>;
[[nodiscard]] sched::task_spec task_spec_from_json(const json& body,
                                                   const spec_defaults& defaults = {});
// parse_json_body(text), then the above.
[[nodiscard]] sched::task_spec task_spec_from_json(std::string_view text,
                                                   const spec_defaults& defaults = {});

// The body of POST /api/v1/tasks/{id}/reschedule: {"at": "<RFC 3339>"}. Same error contract.
[[nodiscard]] sched::time_point reschedule_time_from_json(const json& body);

}  // namespace sluice::http
