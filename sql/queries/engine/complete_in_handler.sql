-- The same as complete.sql for one task inside a handler's own transaction (transactional
-- completion).
WITH applied AS (
  UPDATE {s}.tasks t
  SET state = $4,
      next_run_at = $5,
      attempt = CASE WHEN $6 THEN 0 ELSE t.attempt END,
      claimed_by = NULL,
      claimed_incarnation = NULL,
      claimed_at = NULL,
      lease_until = NULL,
      last_success_at = now(),
      consecutive_failures = 0,
      runs = t.runs + 1,
      updated_at = now()
  WHERE t.id = $1
    AND t.claim_token = $2
    AND t.state = 'running'
  RETURNING t.id, t.type, t.attempt, t.fire_time
), recorded AS (
  INSERT INTO {s}.task_runs (task_id, type, attempt, claim_token, node, fire_time, started_at,
                             finished_at, outcome, detail, recorded_by)
  SELECT a.id, a.type, a.attempt, $2, $3, a.fire_time, $7, now(), 'succeeded', $8::jsonb, 'handler'
  FROM applied a
  RETURNING type
), counted AS (
  INSERT INTO {s}.stats (metric, type, shard, value)
  SELECT 'runs_succeeded', type, $9, count(*)
  FROM recorded
  GROUP BY type
  ORDER BY type
  ON CONFLICT (metric, type, shard) DO UPDATE SET value = stats.value + EXCLUDED.value
)
SELECT count(*)::int
FROM recorded;
