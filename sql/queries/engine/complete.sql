-- The completer's batch, one autocommit statement: applies the outcomes in the arrays $1-$15
-- (one element per task), fenced by claim token, writes one run row per outcome ('fenced' when
-- the claim was stale), the batch's cycle row (kind 'complete', node $16) and the counters
-- (shard $17), with the fire times dropped by misfire policies ($18 types, $19 counts). With $20
-- (a retry of a batch whose commit was not confirmed), outcomes already recorded are left out,
-- so a batch that did commit is not applied twice. Returns the per-type count of each recorded
-- outcome. Arrays instead of JSON: the server reads N rows without parsing a document per row.
WITH input AS (
  SELECT x.*
  FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int4[], $5::text[],
              $6::text[], $7::timestamptz[], $8::bool[], $9::text[], $10::int4[], $11::timestamptz[],
              $12::timestamptz[], $13::timestamptz[], $14::jsonb[], $15::bool[])
       AS x(id, token, type, attempt, outcome, new_state, next_run_at, reset_attempt, error,
            consecutive_failures, fire_time, started_at, finished_at, detail, counts_run)
  WHERE NOT ($20::bool AND (
    EXISTS (SELECT 1 FROM {s}.task_runs r WHERE r.task_id = x.id AND r.claim_token = x.token
            AND r.recorded_by = 'cycle' AND r.outcome <> 'rescued')
    OR (NOT x.counts_run AND NOT EXISTS (SELECT 1 FROM {s}.tasks y WHERE y.id = x.id
            AND y.claim_token = x.token AND y.state = 'running'))))
), applied AS (
  UPDATE {s}.tasks t
  SET state = i.new_state,
      next_run_at = i.next_run_at,
      attempt = CASE WHEN i.reset_attempt THEN 0 ELSE t.attempt END,
      claimed_by = NULL,
      claimed_incarnation = NULL,
      claimed_at = NULL,
      lease_until = NULL,
      last_error = CASE WHEN i.outcome = 'succeeded' THEN t.last_error ELSE i.error END,
      last_success_at = CASE WHEN i.outcome = 'succeeded' THEN i.finished_at
                        ELSE t.last_success_at END,
      consecutive_failures = i.consecutive_failures,
      runs = t.runs + CASE WHEN i.counts_run THEN 1 ELSE 0 END,
      updated_at = now()
  -- Each input row finds its task through the primary key (a nested loop driven by the
  -- input, never by a guess of how many tasks are running, which statistics get wrong).
  FROM input i
  WHERE t.id = i.id
    AND t.claim_token = i.token
    AND (t.state = 'running') IS TRUE
  RETURNING t.id
), recorded AS (
  INSERT INTO {s}.task_runs (task_id, type, attempt, claim_token, node, fire_time, started_at,
                             finished_at, outcome, error, detail, recorded_by)
  SELECT i.id, i.type, i.attempt, i.token, $16, i.fire_time, i.started_at, i.finished_at,
         CASE WHEN a.id IS NULL THEN 'fenced' ELSE i.outcome END, i.error, i.detail, 'cycle'
  FROM input i
  LEFT JOIN applied a ON a.id = i.id
  WHERE i.counts_run OR a.id IS NULL
  RETURNING type, outcome
), per_type AS (
  SELECT type,
         count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
         count(*) FILTER (WHERE outcome IN ('failed', 'timed_out')) AS failed,
         count(*) FILTER (WHERE outcome = 'fenced') AS fenced
  FROM recorded
  GROUP BY type
), skips AS (
  SELECT type, sum(n)::bigint AS n
  FROM unnest($18::text[], $19::int4[]) AS s(type, n)
  GROUP BY type
), merged AS (
  SELECT coalesce(p.type, k.type) AS type,
         coalesce(p.succeeded, 0) AS succeeded,
         coalesce(p.failed, 0) AS failed,
         coalesce(p.fenced, 0) AS fenced,
         coalesce(k.n, 0) AS skipped
  FROM per_type p
  FULL JOIN skips k ON k.type = p.type
), counted AS (
  INSERT INTO {s}.stats (metric, type, shard, value)
  SELECT metric, type, $17, value
  FROM (
    SELECT 'runs_' || outcome AS metric, type, count(*) AS value
    FROM recorded
    GROUP BY outcome, type
    UNION ALL SELECT 'skipped', type, n FROM skips WHERE n > 0
    UNION ALL SELECT 'cycles', '', 1
  ) m
  ORDER BY metric, type
  ON CONFLICT (metric, type, shard) DO UPDATE SET value = stats.value + EXCLUDED.value
), logged AS (
  INSERT INTO {s}.cycles (node, started_at, duration_ms, succeeded, failed, skipped, fenced,
                          by_type, kind)
  SELECT $16, now(), extract(epoch FROM clock_timestamp() - now()) * 1000,
         coalesce(sum(succeeded), 0), coalesce(sum(failed), 0), coalesce(sum(skipped), 0),
         coalesce(sum(fenced), 0),
         coalesce(jsonb_object_agg(type, jsonb_build_object('succeeded', succeeded,
           'failed', failed, 'skipped', skipped, 'fenced', fenced)), '{}'),
         'complete'
  FROM merged
)
SELECT type, outcome, count(*)::int
FROM recorded
GROUP BY type, outcome;
