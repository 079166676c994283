-- sluice schema, version 6: flow control across the fleet (docs/flow-control.md).
--  - flow_limits: per task type, at most N running and at most N starts per period, counted over
--    every node, optionally per value of a payload key. Enforced by engine_claim, in the
--    database, so they hold whatever the number of nodes.
--  - flow_starts: the starts of rate-limited types, counted in slots of a twentieth of the period.
--  - task_deps and the state 'blocked': a task may run after other tasks; it is claimable only
--    once they succeeded, and follows its on_dependency_failure policy when one fails for good.
-- Applied in one transaction with search_path set to the schema; it upgrades a live database:
-- the new columns have constant defaults (no table rewrite), the state constraint is replaced
-- and validated in place.

ALTER TABLE tasks DROP CONSTRAINT tasks_state_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_state_check CHECK (state IN
  ('scheduled', 'available', 'running', 'retryable', 'succeeded', 'failed', 'cancelled', 'paused',
   'blocked')) NOT VALID;
ALTER TABLE tasks VALIDATE CONSTRAINT tasks_state_check;

-- Set on a task once another task depends on it: only such rows fire the dependents trigger.
ALTER TABLE tasks ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;
-- What a blocked task does when a task it depends on fails or is cancelled: 'cancel' (it is
-- cancelled, and so, transitively, are its own blocked dependents) or 'run' (it runs once every
-- task it depends on has finished, whatever the outcome).
ALTER TABLE tasks ADD COLUMN on_dependency_failure text NOT NULL DEFAULT 'cancel'
  CHECK (on_dependency_failure IN ('cancel', 'run'));

-- Running tasks by type, for the fleet-wide concurrency limit's count. It replaces the index on
-- claimed_by alone: the rescue and the takeover read every running entry anyway, and a claim
-- still writes one entry into one running index.
CREATE INDEX tasks_running_by_type ON tasks (type, claimed_by) WHERE state = 'running';
DROP INDEX tasks_running;

-- No foreign keys: they would make `TRUNCATE tasks` fail and add a check to every delete of a
-- task. Pruning deletes a task's rows here with the task (queries::prune_tasks); a missing
-- upstream row counts as succeeded, which is what it was (a blocked task's upstream is never
-- pruned: only finished tasks are, and a failed one has cancelled what runs after it).
CREATE TABLE task_deps (
  task_id     bigint NOT NULL,
  depends_on  bigint NOT NULL,
  PRIMARY KEY (task_id, depends_on),
  CHECK (task_id <> depends_on)
);
CREATE INDEX task_deps_depends_on ON task_deps (depends_on);

CREATE TABLE flow_limits (
  type            text PRIMARY KEY CHECK (type ~ '^[A-Za-z0-9_.:-]{1,100}$'),
  -- Counted per distinct value of payload->>key_path when set (a missing key counts as ''),
  -- else per type.
  key_path        text CHECK (key_path IS NULL OR length(key_path) BETWEEN 1 AND 200),
  max_running     integer CHECK (max_running IS NULL OR max_running >= 1),
  rate_limit      integer CHECK (rate_limit IS NULL OR rate_limit >= 1),
  rate_period_ms  bigint CHECK (rate_period_ms IS NULL OR rate_period_ms BETWEEN 1000 AND 86400000),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CHECK ((rate_limit IS NULL) = (rate_period_ms IS NULL)),
  CHECK (max_running IS NOT NULL OR rate_limit IS NOT NULL)
);

-- Starts of rate-limited types, summed per slot of period / 20. A claim counts every slot that
-- overlaps the window (now - period, now], so it never undercounts: the limit holds in every
-- window, at the price of up to a twentieth of the rate left unused at the window's edge.
CREATE TABLE flow_starts (
  type   text NOT NULL,
  key    text NOT NULL DEFAULT '',
  slot   timestamptz NOT NULL,
  n      integer NOT NULL,
  PRIMARY KEY (type, key, slot)
);

-- A task that reaches a final state releases or cancels the blocked tasks that depend on it.
-- A trigger, so that every path that finishes a task (the completer, a rescue out of attempts, a
-- takeover, the API's and the SQL API's cancel) does it in the same transaction.
CREATE FUNCTION tasks_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  released integer;
BEGIN
  -- Blocked dependents whose every upstream task has succeeded (or, for 'run', finished).
  UPDATE tasks t
  SET state = CASE WHEN t.next_run_at <= now() THEN 'available' ELSE 'scheduled' END,
      updated_at = now()
  WHERE t.state = 'blocked'
    AND t.id IN (SELECT d.task_id FROM task_deps d WHERE d.depends_on = NEW.id)
    AND NOT EXISTS (
      SELECT 1 FROM task_deps d JOIN tasks u ON u.id = d.depends_on
      WHERE d.task_id = t.id
        AND u.state <> 'succeeded'
        AND (t.on_dependency_failure = 'cancel' OR u.state NOT IN ('failed', 'cancelled')));
  GET DIAGNOSTICS released = ROW_COUNT;
  IF released > 0 THEN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.tasks', '');
  END IF;
  IF NEW.state IN ('failed', 'cancelled') THEN
    -- Every blocked task downstream that cancels on failure, in one statement (a chain of a
    -- thousand tasks does not nest a thousand triggers). A task with the 'run' policy stops the
    -- walk; it is released above once all its upstream tasks are final.
    WITH RECURSIVE down (id) AS (
      SELECT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id
      WHERE d.depends_on = NEW.id AND t.state = 'blocked' AND t.on_dependency_failure = 'cancel'
      UNION
      SELECT d.task_id FROM down JOIN task_deps d ON d.depends_on = down.id
      JOIN tasks t ON t.id = d.task_id
      WHERE t.state = 'blocked' AND t.on_dependency_failure = 'cancel'
    )
    UPDATE tasks t
    SET state = 'cancelled', next_run_at = NULL, updated_at = now(),
        last_error = 'cancelled: task ' || NEW.id || ', which it runs after, ' ||
                     CASE NEW.state WHEN 'failed' THEN 'failed' ELSE 'was cancelled' END
    WHERE t.id IN (SELECT id FROM down) AND t.state = 'blocked';
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER tasks_dependents AFTER UPDATE OF state ON tasks FOR EACH ROW
  WHEN (NEW.has_dependents AND OLD.state IS DISTINCT FROM NEW.state
        AND NEW.state IN ('succeeded', 'failed', 'cancelled'))
  EXECUTE FUNCTION tasks_dependents();

-- The claim of version 5 with the flow limits: a type with a flow_limits row claims under a
-- transaction-scoped advisory lock of its own (claims of that type wait for each other across
-- the fleet, for a few milliseconds; every other type never takes it), counts what runs and what
-- started in the window, and takes at most what is left. Near its limit (less than twice this
-- claim's share left) it claims only for the node's free workers (p_free[k]): a claim counts
-- against the limit from its commit, so it must start at once rather than wait in the node's
-- queue, and a rate then holds for the handlers' starts as well as for the claims. Far from the
-- limit it claims like any type, prefetch included. Unlimited types claim as in version 5.
DROP FUNCTION IF EXISTS engine_claim(text, text[], int4[], bigint, integer, int4[],
                                     timestamptz[], int8[], integer);
CREATE FUNCTION engine_claim(p_node text, p_types text[], p_counts int4[], p_incarnation bigint,
                             p_shard integer, p_after_priority int4[], p_after_run_at timestamptz[],
                             p_after_id int8[], p_room integer, p_free int4[])
RETURNS SETOF tasks LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
  due_ids int8[] := '{}';
  got int8[];
  types integer := coalesce(array_length(p_types, 1), 0);
  room integer := p_room;
  n integer;
  lim flow_limits%ROWTYPE;
  limited boolean;
  busy integer;
  headroom integer;
  slot_ms bigint;
  c_now timestamptz;
BEGIN
  PERFORM set_config('synchronous_commit', 'off', true);
  -- The room is shared: each type asks for its fair share of what is left, and what a type does
  -- not use (fewer tasks due, or its limit p_counts[k]) passes on to the types after it.
  FOR k IN 1 .. types LOOP
    EXIT WHEN room <= 0;
    n := least(p_counts[k], greatest(1, (room + types - k) / (types - k + 1)));
    SELECT * INTO lim FROM flow_limits f WHERE f.type = p_types[k];
    limited := FOUND;
    IF limited THEN
      PERFORM pg_advisory_xact_lock(hashtextextended('sluice.flow:' || current_schema() || ':' ||
                                                     p_types[k], 0));
      -- Taken after the lock: every start committed by an earlier claim of this type is older,
      -- and every start this claim makes (last_run_at = clock_timestamp()) is newer.
      c_now := clock_timestamp();
      slot_ms := greatest(coalesce(lim.rate_period_ms, 0) / 20, 1);
      IF lim.rate_limit IS NOT NULL THEN
        DELETE FROM flow_starts s
        WHERE s.type = p_types[k]
          AND s.slot <= c_now - (lim.rate_period_ms + slot_ms) * interval '1 millisecond';
      END IF;
    END IF;
    IF limited AND lim.key_path IS NULL THEN
      headroom := 2147483647;
      IF lim.max_running IS NOT NULL THEN
        SELECT count(*) INTO busy FROM tasks x WHERE x.type = p_types[k] AND x.state = 'running';
        headroom := least(headroom, lim.max_running - busy);
      END IF;
      IF lim.rate_limit IS NOT NULL THEN
        SELECT coalesce(sum(s.n), 0) INTO busy FROM flow_starts s
        WHERE s.type = p_types[k]
          AND s.slot > c_now - (lim.rate_period_ms + slot_ms) * interval '1 millisecond';
        headroom := least(headroom, lim.rate_limit - busy);
      END IF;
      IF headroom < 2 * n THEN
        n := least(n, headroom, coalesce(p_free[k], 0));
      END IF;
    ELSIF limited THEN
      -- Per key: what is left per key is only known inside the claim below; never prefetch.
      n := least(n, coalesce(p_free[k], 0));
    END IF;
    IF n <= 0 THEN
      got := '{}';
    ELSIF limited AND lim.key_path IS NOT NULL THEN
      -- Per key: candidates from the head of the queue (twenty times the share, so one busy key
      -- does not hide the others), numbered within their key, kept while the key's running
      -- tasks and recent starts leave room.
      got := ARRAY(
        WITH cand AS (
          SELECT x.id, x.priority, x.next_run_at, coalesce(x.payload ->> lim.key_path, '') AS k
          FROM tasks x
          WHERE x.type = p_types[k] AND x.state IN ('scheduled', 'available', 'retryable')
            AND x.next_run_at <= now()
          ORDER BY x.priority DESC, x.next_run_at, x.id LIMIT n * 20 FOR UPDATE SKIP LOCKED
        ), ranked AS (
          SELECT c.*, row_number() OVER (PARTITION BY c.k
                                         ORDER BY c.priority DESC, c.next_run_at, c.id) AS rn
          FROM cand c
        ), running AS (
          SELECT coalesce(x.payload ->> lim.key_path, '') AS k, count(*) AS c
          FROM tasks x WHERE x.type = p_types[k] AND x.state = 'running'
          GROUP BY 1
        ), started AS (
          SELECT s.key AS k, sum(s.n) AS c FROM flow_starts s
          WHERE lim.rate_limit IS NOT NULL AND s.type = p_types[k]
            AND s.slot > c_now - (lim.rate_period_ms + slot_ms) * interval '1 millisecond'
          GROUP BY 1
        )
        SELECT r.id FROM ranked r
        LEFT JOIN running ru ON ru.k = r.k
        LEFT JOIN started st ON st.k = r.k
        WHERE (lim.max_running IS NULL OR r.rn + coalesce(ru.c, 0) <= lim.max_running)
          AND (lim.rate_limit IS NULL OR r.rn + coalesce(st.c, 0) <= lim.rate_limit)
        ORDER BY r.priority DESC, r.next_run_at, r.id LIMIT n);
    ELSIF p_after_id[k] IS NULL THEN
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
      lease_until = now() + t.timeout_ms * interval '1 millisecond',
      -- The start as the rate limits count it: after the lock of a limited type (see c_now).
      last_run_at = clock_timestamp(),
      updated_at = now()
    -- An id list rather than a join: each claimed row is found through the primary key, whatever
    -- the generic plan guesses about how many rows a LIMIT lets through (a join was planned as a
    -- hash join over the whole table once the statistics knew its size).
    WHERE t.id = ANY (due_ids)
    RETURNING t.*
  ), per_type AS (
    SELECT c.type, count(*) AS n FROM claimed c GROUP BY c.type
  ), started AS (
    -- The starts of rate-limited types, in slots of a twentieth of the period.
    INSERT INTO flow_starts AS s (type, key, slot, n)
    SELECT c.type, CASE WHEN f.key_path IS NULL THEN '' ELSE coalesce(c.payload ->> f.key_path, '') END,
           to_timestamp(floor(extract(epoch FROM c.last_run_at) * 1000 / (f.rate_period_ms / 20))
                        * (f.rate_period_ms / 20) / 1000.0),
           count(*)
    FROM claimed c JOIN flow_limits f ON f.type = c.type AND f.rate_limit IS NOT NULL
    GROUP BY 1, 2, 3
    ON CONFLICT (type, key, slot) DO UPDATE SET n = s.n + EXCLUDED.n
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
-- Pinned, as in version 5: a caller's search_path (or a temporary table named tasks) cannot
-- redirect it.
DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION engine_claim(text, text[], int4[], bigint, integer, int4[],'
                 ' timestamptz[], int8[], integer, int4[])'
                 ' SET search_path = %I, pg_temp', current_schema());
  EXECUTE format('ALTER FUNCTION tasks_dependents() SET search_path = %I, pg_temp',
                 current_schema());
END $$;
