-- sluice schema, version 5: the engine's hot path.
--
-- The engine now claims on one connection and completes on another (src/sched/claimer.cpp,
-- src/sched/completer.cpp), each in one autocommit statement, so both of the server's cores work
-- and neither waits for the other. This migration gives those statements tables that stay small
-- and cheap to write. Every statement here changes catalog settings or indexes only: no table is
-- rewritten, so it upgrades a populated database in milliseconds. Nodes of version 4 keep
-- working on it (their cycle rows get kind 'cycle').

-- Which lane wrote a cycle row: a claim cycle, a batch of completions, a rescue, or (rows from
-- before version 5) the single combined cycle. The dashboard and `sluice cycles` show it.
ALTER TABLE cycles ADD COLUMN kind text NOT NULL DEFAULT 'cycle'
  CHECK (kind IN ('cycle', 'claim', 'complete', 'rescue'));

-- Room on each page for the updated version of a row, so that updates which touch no indexed
-- column stay on the page (HOT) and write no index entry. Applies to pages written from now on.
ALTER TABLE tasks SET (fillfactor = 80);
-- The counters are a handful of rows updated by every batch: keep them on their pages.
ALTER TABLE stats SET (fillfactor = 50);
ALTER TABLE nodes SET (fillfactor = 50);
ALTER TABLE leader SET (fillfactor = 50);

-- Vacuum the queue as soon as a small share of it is dead, at full speed: a claim walks dead
-- index entries at the head of the claim index until vacuum removes them, so a lazy vacuum is
-- what makes pick-up slow after a burst (the defaults wait for 20 % of the table).
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
                       autovacuum_vacuum_cost_delay = 0, autovacuum_vacuum_cost_limit = 10000,
                       autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE stats SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                       autovacuum_vacuum_cost_delay = 0);
ALTER TABLE nodes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200,
                       autovacuum_vacuum_cost_delay = 0);
ALTER TABLE leader SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200,
                        autovacuum_vacuum_cost_delay = 0);
-- The history tables are insert-mostly: vacuum them for the visibility map (index-only scans,
-- cheap pruning) after 5 % new rows rather than 20 %.
ALTER TABLE task_runs SET (autovacuum_vacuum_insert_scale_factor = 0.05,
                           autovacuum_vacuum_cost_delay = 0);
ALTER TABLE cycles SET (autovacuum_vacuum_insert_scale_factor = 0.05,
                        autovacuum_vacuum_cost_delay = 0);

-- tasks_state (state, id) took an entry for every version of every task row: three per run
-- (insert, claim, completion), the largest index of a busy queue. What used it has narrower
-- indexes: the waiting states have tasks_claim and tasks_next_due, running has tasks_running,
-- and pruning finds finished one-shot tasks through tasks_finished, which only a finished row
-- enters (one entry per task). Listings by state go through the primary key (newest first).
DROP INDEX tasks_state;
CREATE INDEX tasks_finished ON tasks (updated_at)
  WHERE state IN ('succeeded', 'failed', 'cancelled') AND schedule_kind = 'once';

-- The history is written in time order and read by time only when it is pruned: a BRIN index
-- (one entry per range of pages, kept up to date almost for free) replaces the b-tree that took
-- one entry per run and per cycle.
DROP INDEX task_runs_finished;
CREATE INDEX task_runs_finished ON task_runs USING brin (finished_at);
DROP INDEX cycles_started;
CREATE INDEX cycles_started ON cycles USING brin (started_at);

-- The claimer's cycle (src/sched/scheduler.cpp, run_cycle): claims due tasks for node p_node
-- (incarnation p_incarnation), p_room at most and at most p_counts[k] of type p_types[k] (past the watermark
-- p_after_*[k] when it is set: the priority, due time and id of the last task the previous claim
-- of that type took), records the cycle (a
-- cycles row of kind 'claim') and bumps the counters (stats shard p_shard), in one statement.
--  - SKIP LOCKED lets nodes, and this node's completer, work side by side without waiting on
--    each other; the token bump fences every earlier claim.
--  - The claim commits without waiting for its WAL to reach disk (synchronous_commit off for this
--    transaction only): a server crash can lose the latest claims, and those tasks then simply
--    run (again), while the completion of the run begun before the crash, which is synchronous
--    and flushes the WAL written before it, is refused by the claim token.
--  - A function so that its plan is made once per connection (force_generic_plan): planned
--    afresh, this statement took longer to plan (about 0.7 ms) than to run, which is what an
--    idle engine's pick-up latency consists of.
--  - Counter rows are written in (metric, type) order, as every statement that writes them does.
CREATE FUNCTION engine_claim(p_node text, p_types text[], p_counts int4[], p_incarnation bigint,
                             p_shard integer, p_after_priority int4[], p_after_run_at timestamptz[],
                             p_after_id int8[], p_room integer)
RETURNS SETOF tasks LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  due_ids int8[] := '{}';
  got int8[];
  types integer := coalesce(array_length(p_types, 1), 0);
  room integer := p_room;
  n integer;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- The room is shared: each type asks for its fair share of what is left, and what a type does
  -- not use (fewer tasks due, or its limit p_counts[k]) passes on to the types after it.
  FOR k IN 1 .. types LOOP
    EXIT WHEN room <= 0;
    n := least(p_counts[k], greatest(1, (room + types - k) / (types - k + 1)));
    IF p_after_id[k] IS NULL THEN
      got := ARRAY(
        SELECT x.id FROM tasks x
        WHERE x.type = p_types[k] AND x.state IN ('scheduled', 'available', 'retryable')
          AND x.next_run_at <= now()
        ORDER BY x.priority DESC, x.next_run_at, x.id LIMIT n FOR UPDATE SKIP LOCKED);
    ELSE
      -- Past the watermark: the index scan starts where the last claim of this type ended,
      -- instead of walking the entries that claims left behind at the head of tasks_claim
      -- (dead until vacuum removes them; hundreds of thousands after a large burst).
      got := ARRAY(
        SELECT x.id FROM tasks x
        WHERE x.type = p_types[k] AND x.state IN ('scheduled', 'available', 'retryable')
          AND x.priority = p_after_priority[k]
          AND (x.next_run_at, x.id) > (p_after_run_at[k], p_after_id[k])
          AND x.next_run_at <= now()
        ORDER BY x.priority DESC, x.next_run_at, x.id LIMIT n FOR UPDATE SKIP LOCKED);
    END IF;
    due_ids := due_ids || got;
    room := room - coalesce(array_length(got, 1), 0);
  END LOOP;
  RETURN QUERY
  WITH claimed AS (
    UPDATE tasks t SET state = 'running', attempt = t.attempt + 1,
      claim_token = t.claim_token + 1, claimed_by = p_node, claimed_incarnation = p_incarnation,
      claimed_at = now(),
      fire_time = CASE WHEN t.state = 'retryable' THEN coalesce(t.fire_time, t.next_run_at)
                  ELSE t.next_run_at END,
      lease_until = now() + t.timeout_ms * interval '1 millisecond', last_run_at = now(),
      updated_at = now()
    -- An id list rather than a join: each claimed row is found through the primary key, whatever
    -- the generic plan guesses about how many rows a LIMIT lets through (a join was planned as a
    -- hash join over the whole table once the statistics knew its size).
    WHERE t.id = ANY (due_ids)
    RETURNING t.*
  ), per_type AS (
    SELECT c.type, count(*) AS n FROM claimed c GROUP BY c.type
  ), counted AS (
    INSERT INTO stats AS s (metric, type, shard, value)
    SELECT m.metric, m.type, p_shard, m.value FROM (
      SELECT 'claimed' AS metric, p.type, p.n AS value FROM per_type p
      UNION ALL SELECT 'cycles', '', 1) m
    ORDER BY m.metric, m.type
    ON CONFLICT (metric, type, shard) DO UPDATE SET value = s.value + EXCLUDED.value
  ), logged AS (
    INSERT INTO cycles (node, started_at, duration_ms, claimed, by_type, kind)
    SELECT p_node, now(), extract(epoch FROM clock_timestamp() - now()) * 1000,
      coalesce(sum(p.n), 0),
      coalesce(jsonb_object_agg(p.type, jsonb_build_object('claimed', p.n)) FILTER (WHERE p.n > 0),
               '{}'),
      'claim'
    FROM per_type p
  )
  SELECT * FROM claimed;
END $$;
-- Pinned: a caller's search_path (or a temporary table named tasks) cannot redirect it.
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION engine_claim(text, text[], int4[], bigint, integer, int4[],'
                 ' timestamptz[], int8[], integer)'
                 ' SET search_path = %I, pg_temp', current_schema());
END $$;
