-- Columns read into sched::task, in the order row_to_task() expects. Included with
-- `-- @include task_columns`; also embedded on its own as queries::task_columns.
id, type, name, payload::text, state, schedule_kind, schedule_spec, timezone, misfire_policy,
misfire_grace_s, catch_up_limit, next_run_at, priority, attempt, max_attempts,
backoff_base_ms, backoff_cap_ms, timeout_ms, pause_after_failures, claim_token, claimed_by,
claimed_at, lease_until, fire_time, last_error, last_run_at, last_success_at,
consecutive_failures, runs, created_at, updated_at
