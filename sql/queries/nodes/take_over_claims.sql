-- A starting process takes over the claims its node id still holds from earlier incarnations
-- (a process that was killed and restarted at once): they go back to the queue as if their node
-- had died, with a 'rescued' run, the counters and a cycle row, in the registration's
-- transaction. $1 node, $2 incarnation, $3 stats shard.
WITH rescued AS (
  UPDATE {s}.tasks t
  SET
    -- @include rescue_set
    last_error = 'node ' || $1 || ' was restarted while running this task',
    updated_at = now()
  WHERE t.claimed_by = $1
    AND t.state = 'running'
    AND t.claimed_incarnation IS DISTINCT FROM $2
  RETURNING t.id, t.type, t.attempt, t.claim_token - 1 AS token, t.fire_time, t.last_run_at,
            t.last_error
), recorded AS (
  INSERT INTO {s}.task_runs (task_id, type, attempt, claim_token, node, fire_time, started_at,
                             finished_at, outcome, error, recorded_by)
  SELECT id, type, attempt, token, $1, fire_time, coalesce(last_run_at, now()), now(), 'rescued',
         last_error, 'cycle'
  FROM rescued
  RETURNING type
), counted AS (
  INSERT INTO {s}.stats (metric, type, shard, value)
  SELECT 'runs_rescued', type, $3, count(*)
  FROM recorded
  GROUP BY type
  ORDER BY type
  ON CONFLICT (metric, type, shard) DO UPDATE SET value = stats.value + EXCLUDED.value
), logged AS (
  INSERT INTO {s}.cycles (node, started_at, duration_ms, rescued, by_type, kind)
  SELECT $1, now(), 0, count(*), jsonb_build_object('rescue', true, 'restart', true), 'rescue'
  FROM rescued
  HAVING count(*) > 0
)
SELECT count(*)::int
FROM rescued;
