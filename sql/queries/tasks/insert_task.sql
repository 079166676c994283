INSERT INTO {s}.tasks (
  type, name, payload, state, schedule_kind, schedule_spec, timezone, misfire_policy,
  misfire_grace_s, catch_up_limit, next_run_at, priority, max_attempts, backoff_base_ms,
  backoff_cap_ms, timeout_ms, pause_after_failures
)
VALUES (
  $1, $2, $3::jsonb, 'scheduled', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16
)
RETURNING id;
