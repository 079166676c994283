-- State changes return the new state, or nothing when the task does not exist or is in a state
-- the change does not apply to (the caller tells which by looking the task up).
UPDATE {s}.tasks
SET state = 'cancelled',
    next_run_at = NULL,
    updated_at = now()
WHERE id = $1
  AND state IN ('scheduled', 'available', 'retryable', 'paused', 'failed', 'blocked')
RETURNING id;
