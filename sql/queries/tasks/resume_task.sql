-- State changes return the new state, or nothing when the task does not exist or is in a state
-- the change does not apply to (the caller tells which by looking the task up).
UPDATE {s}.tasks
SET state = 'scheduled',
    consecutive_failures = 0,
    attempt = 0,
    next_run_at = greatest(coalesce(next_run_at, now()), now()),
    updated_at = now()
WHERE id = $1
  AND state = 'paused'
RETURNING id;
