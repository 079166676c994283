-- Heartbeat, leader lease and (for the leader) rescue of dead nodes' tasks, in one statement.
-- $1 node, $2 host, $3 pid, $4 version, $5 expiry (ms), $6 budget, $7 state, $8 stats shard,
-- $9 incarnation, $10 process key, $11 the node's task types, $12 the nodes channel, $13 the
-- tasks channel (notified once when tasks were rescued, so idle nodes look now). The node row
-- is renewed only while it names this incarnation: when another process has taken the id over,
-- `registered` is 0 and nothing else happens.
-- Besides: it notifies the nodes channel ("hb <expiry ms> <node>"), so that the other nodes know
-- when this one would expire without asking the database; it returns the other live nodes with
-- the time each has left, the leader and its lease, and when the next task of this node's types
-- is due (the safety net for a notification that never arrived).
WITH was AS (
  -- This node's row as this statement's snapshot sees it, before `me` renews it: a row that had
  -- expired (a process stopped or cut off for longer than node_expiry) may have lost its claims
  -- to a rescue, and one marked dead has.
  SELECT state, expires_at < now() AS expired
  FROM {s}.nodes
  WHERE id = $1 AND incarnation = $9
), me AS (
  INSERT INTO {s}.nodes (id, host, pid, version, heartbeat_at, expires_at, connection_budget,
                         state, incarnation, process_key)
  VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 millisecond', $6, $7, $9, $10)
  ON CONFLICT (id) DO UPDATE
  SET heartbeat_at = now(),
      expires_at = EXCLUDED.expires_at,
      connection_budget = EXCLUDED.connection_budget,
      state = EXCLUDED.state
  WHERE nodes.incarnation = EXCLUDED.incarnation
  RETURNING id
), lead AS (
  INSERT INTO {s}.leader (singleton, node, expires_at)
  VALUES (true, $1, now() + $5 * interval '1 millisecond')
  ON CONFLICT (singleton) DO UPDATE
  SET node = EXCLUDED.node,
      expires_at = EXCLUDED.expires_at,
      acquired_at = CASE WHEN leader.node = EXCLUDED.node THEN leader.acquired_at ELSE now() END
  WHERE (leader.node = EXCLUDED.node OR leader.expires_at < now())
    AND EXISTS (SELECT 1 FROM me)
  RETURNING node
), dead AS (
  UPDATE {s}.nodes
  SET state = 'dead'
  WHERE EXISTS (SELECT 1 FROM lead)
    AND id <> $1
    AND expires_at < now()
    AND state IN ('running', 'draining')
  RETURNING id
), rescued AS (
  UPDATE {s}.tasks t
  SET
    -- @include rescue_set
    last_error = 'node ' || o.old_node || CASE WHEN o.restarted
      THEN ' was restarted while running this task' ELSE ' stopped responding while running this task' END,
    updated_at = now()
  -- A claim is live while its node is alive in the incarnation that claimed it (claims from
  -- before schema version 3 have none and follow the node id alone). This node's own claims
  -- are never its to rescue, even if its own row looks expired to this statement's snapshot.
  FROM (SELECT x.id, x.claimed_by AS old_node,
               EXISTS (SELECT 1 FROM {s}.nodes n WHERE n.id = x.claimed_by
                       AND n.incarnation <> x.claimed_incarnation) AS restarted
        FROM {s}.tasks x
        WHERE EXISTS (SELECT 1 FROM lead) AND x.state = 'running'
          AND NOT (x.claimed_by = $1 AND x.claimed_incarnation = $9)
          AND NOT EXISTS (SELECT 1 FROM {s}.nodes n WHERE n.id = x.claimed_by
                          AND n.expires_at >= now() AND n.state IN ('running', 'draining')
                          AND (x.claimed_incarnation IS NULL
                               OR n.incarnation = x.claimed_incarnation))
        FOR UPDATE OF x SKIP LOCKED) o
  WHERE t.id = o.id
  RETURNING t.id, t.type, t.attempt, t.claim_token - 1 AS token, t.fire_time, t.last_run_at,
            t.last_error, o.old_node AS node
), recorded AS (
  INSERT INTO {s}.task_runs (task_id, type, attempt, claim_token, node, fire_time, started_at,
                             finished_at, outcome, error, recorded_by)
  SELECT id, type, attempt, token, node, fire_time, coalesce(last_run_at, now()), now(), 'rescued',
         last_error, 'cycle'
  FROM rescued
  RETURNING type
), counted AS (
  INSERT INTO {s}.stats (metric, type, shard, value)
  SELECT 'runs_rescued', type, $8, count(*)
  FROM recorded
  GROUP BY type
  ORDER BY type
  ON CONFLICT (metric, type, shard) DO UPDATE SET value = stats.value + EXCLUDED.value
), logged AS (
  INSERT INTO {s}.cycles (node, started_at, duration_ms, rescued, by_type, kind)
  SELECT $1, now(), 0, count(*), jsonb_build_object('rescue', true), 'rescue'
  FROM rescued
  HAVING count(*) > 0
)
SELECT (SELECT count(*) FROM lead)::int AS leader,
       coalesce((SELECT CASE WHEN state = 'dead' THEN 'dead' WHEN expired THEN 'expired' END
                 FROM was), '') AS lapsed,
       (SELECT count(*) FROM rescued)::int AS rescued,
       (SELECT count(*) FROM dead)::int AS dead,
       (SELECT count(*) FROM me)::int AS registered,
       (SELECT count(*) FROM me CROSS JOIN LATERAL pg_notify($12, 'hb ' || $5::text || ' ' || $1)
          AS n)::int AS notified,
       (SELECT count(*) FROM (SELECT 1 FROM rescued LIMIT 1) r
          CROSS JOIN LATERAL pg_notify($13, '') AS n)::int AS woke,
       -- This statement's snapshot does not see its own changes: rows that expired before it
       -- began were just marked dead, so "live" is judged by expires_at here as well.
       (SELECT coalesce(jsonb_object_agg(id, ceil(extract(epoch FROM expires_at - now()) * 1000)),
                        '{}')::text
        FROM {s}.nodes
        WHERE id <> $1 AND state IN ('running', 'draining') AND expires_at >= now())
         AS others_expire_in_ms,
       coalesce((SELECT node FROM lead), (SELECT node FROM {s}.leader)) AS leader_node,
       CASE WHEN EXISTS (SELECT 1 FROM lead) THEN $5
            ELSE (SELECT ceil(extract(epoch FROM expires_at - now()) * 1000)::int8
                  FROM {s}.leader) END AS leader_expires_in_ms,
       (SELECT min(next_run_at) FROM {s}.tasks
        WHERE state IN ('scheduled', 'available', 'retryable') AND type = ANY($11::text[]))
         AS next_due;
