-- sluice schema, version 4: the SQL API for producers, and unique keys (docs/producers.md).
--
-- Applications add work with `SELECT sluice.add_task('email.send', '{"to": "a@b.c"}')` inside
-- their own transaction: the task exists, and the nodes are woken, only when that transaction
-- commits. The functions validate as the HTTP API does, with its messages, raised as SQL errors
-- (SQLSTATE 22023 for a bad field, 23505 for a taken name, 0A000 for what SQL cannot do). They
-- run as their owner (SECURITY DEFINER, search_path pinned to this schema with pg_temp last), so
-- the role sluice_producer needs EXECUTE on them and nothing else.
--
-- The engine's statements are unchanged: it never reads unique_key. Adding a nullable column
-- without a default does not rewrite the table; the partial index below is built by one scan.

-- A key that at most one live task holds at a time (dedup); NULL for most tasks.
ALTER TABLE tasks ADD COLUMN unique_key text;
-- Live = not final: once a task has succeeded, failed or been cancelled its key is free again.
-- add_task's INSERT ... ON CONFLICT relies on this index; rows without a key are not in it.
CREATE UNIQUE INDEX tasks_unique_key ON tasks (unique_key)
  WHERE unique_key IS NOT NULL
    AND state IN ('scheduled', 'available', 'running', 'retryable', 'paused');

-- One validated task, as the columns it is inserted with.
CREATE TYPE task_input AS (
  type                  text,
  name                  text,
  payload               jsonb,
  schedule_kind         text,
  schedule_spec         text,
  next_run_at           timestamptz,
  misfire_policy        text,
  misfire_grace_s       integer,
  catch_up_limit        integer,
  priority              integer,
  max_attempts          integer,
  backoff_base_ms       bigint,
  backoff_cap_ms        bigint,
  timeout_ms            bigint,
  pause_after_failures  integer,
  unique_key            text,
  on_conflict           text
);

-- ---- helpers (not granted to anyone; called by the API functions below) ---------------------

CREATE FUNCTION api_fail(message text, code text DEFAULT '22023') RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
END $$;

-- The engine's timestamp text (sched::format_timestamp): UTC, fraction without trailing zeros.
CREATE FUNCTION format_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
      || coalesce('.' || nullif(rtrim(to_char(t AT TIME ZONE 'UTC', 'US'), '0'), ''), '')
      || 'Z'
$$;

-- The engine's duration text (sched::format_duration): 1d2h3m4s, units that are zero left out.
CREATE FUNCTION format_seconds(secs bigint) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN secs = 0 THEN '0s' ELSE
       coalesce(nullif(secs / 86400, 0) || 'd', '')
    || coalesce(nullif(secs % 86400 / 3600, 0) || 'h', '')
    || coalesce(nullif(secs % 3600 / 60, 0) || 'm', '')
    || coalesce(nullif(secs % 60, 0) || 's', '') END
$$;

-- The engine reads times in the years 1678-2261 only (its clock counts nanoseconds in 64 bits).
CREATE FUNCTION check_time(prefix text, field text, t timestamptz) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF t IS NULL OR NOT isfinite(t) THEN
    PERFORM api_fail(prefix || field || ': must be a finite time');
  END IF;
  IF extract(year FROM t AT TIME ZONE 'UTC') NOT BETWEEN 1678 AND 2261 THEN
    PERFORM api_fail(format('%s%s: time ''%s'' is outside the years 1678-2261', prefix, field,
                            to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')));
  END IF;
END $$;

CREATE FUNCTION check_range(prefix text, field text, v bigint, lo bigint, hi bigint)
RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF v IS NULL THEN
    PERFORM api_fail(prefix || field || ': expected an integer, got null');
  END IF;
  IF v < lo OR v > hi THEN
    PERFORM api_fail(format('%s%s: must be between %s and %s', prefix, field, lo, hi));
  END IF;
END $$;

-- Validates one task the way the HTTP API does (src/http/task_spec_json.cpp and
-- task_spec::validate, same messages) and returns the row to insert. Integers arrive as bigint
-- so that the range check, not a cast, refuses a too large value.
CREATE FUNCTION task_input_of(
  prefix text, type text, payload jsonb, run_at timestamptz, every interval, name text,
  priority bigint, max_attempts bigint, backoff_base_ms bigint, backoff_cap_ms bigint,
  timeout_ms bigint, misfire_policy text, misfire_grace_s bigint, catch_up_limit bigint,
  pause_after_failures bigint, unique_key text, on_conflict text, cron text)
RETURNS task_input LANGUAGE plpgsql STABLE AS $$
DECLARE
  max_ms constant bigint := 366::bigint * 24 * 3600 * 1000;  -- max_task_duration_ms
  max_every constant bigint := 36500::bigint * 86400;         -- schedule::max_interval
  kind text;
  spec text;
  first timestamptz;
  secs numeric;
  policy text;
BEGIN
  IF type IS NULL THEN
    PERFORM api_fail(prefix || 'type: required (the handler to run, e.g. "sql" or "http")');
  END IF;
  IF type !~ '^[A-Za-z0-9_.:-]{1,100}$' THEN
    IF octet_length(type) BETWEEN 1 AND 100 THEN
      PERFORM api_fail(format('%stype: ''%s'' must be 1-100 characters of A-Z a-z 0-9 _ . : -',
                              prefix, type));
    END IF;
    PERFORM api_fail(prefix || 'type: must be 1-100 characters of A-Z a-z 0-9 _ . : -');
  END IF;
  IF name IS NOT NULL AND octet_length(name) NOT BETWEEN 1 AND 200 THEN
    PERFORM api_fail(prefix || 'name: must be 1-200 characters');
  END IF;
  IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
    PERFORM api_fail(prefix || 'payload: expected a JSON object, got ' ||
                     CASE coalesce(jsonb_typeof(payload), 'null')
                       WHEN 'array' THEN 'an array' WHEN 'string' THEN 'a string'
                       WHEN 'number' THEN 'a number' WHEN 'boolean' THEN 'a boolean'
                       ELSE 'null' END);
  END IF;

  -- The schedule. Cron needs the daemon's cron parser and time-zone rules, which the database
  -- does not have: refused rather than accepted and failing when the engine reads it.
  IF cron IS NOT NULL THEN
    PERFORM api_fail(prefix || 'cron: cron schedules cannot be added through SQL (the database '
                     || 'cannot check an expression and time zone as the daemon does); create '
                     || 'them with POST /api/v1/tasks', '0A000');
  END IF;
  run_at := coalesce(run_at, now());
  PERFORM check_time(prefix, 'run_at', run_at);
  IF every IS NULL THEN
    kind := 'once';
    spec := format_time(run_at);
    first := run_at;
  ELSE
    IF extract(year FROM every) <> 0 OR extract(month FROM every) <> 0 THEN
      PERFORM api_fail(prefix || 'every: months and years have no fixed length (use days, '
                       || 'e.g. ''30 days'')');
    END IF;
    secs := extract(epoch FROM every);
    IF secs <= 0 THEN
      PERFORM api_fail(prefix || 'every: must be positive (at least 1 second)');
    END IF;
    IF secs <> trunc(secs) THEN
      PERFORM api_fail(prefix || 'every: must be a whole number of seconds');
    END IF;
    IF secs > max_every THEN
      PERFORM api_fail(format('%severy: interval %s is longer than the maximum of 36500d', prefix,
                              format_seconds(secs::bigint)));
    END IF;
    -- run_at anchors the grid (the engine's "<period>@<anchor>"); the first run is the first
    -- point of it at or after now, so a run_at in the past does not fire a backlog.
    kind := 'interval';
    spec := format_seconds(secs::bigint) || '@' || format_time(run_at);
    first := run_at;
    IF first < now() THEN
      first := run_at + ceil(extract(epoch FROM now() - run_at) / secs) * secs
                        * interval '1 second';
    END IF;
  END IF;

  PERFORM check_range(prefix, 'priority', priority, -1000, 1000);
  PERFORM check_range(prefix, 'max_attempts', max_attempts, 1, 1000);
  PERFORM check_range(prefix, 'backoff_base_ms', backoff_base_ms, 0, max_ms);
  PERFORM check_range(prefix, 'backoff_cap_ms', backoff_cap_ms, 0, max_ms);
  IF backoff_cap_ms < backoff_base_ms THEN
    PERFORM api_fail(format('%sbackoff_cap_ms: must be at least backoff_base_ms (%s)', prefix,
                            backoff_base_ms));
  END IF;
  PERFORM check_range(prefix, 'timeout_ms', timeout_ms, 1, max_ms);
  policy := lower(misfire_policy);
  IF policy = 'catch-up' THEN
    policy := 'catch_up';
  END IF;
  IF policy IS NULL OR policy NOT IN ('coalesce', 'catch_up', 'skip') THEN
    PERFORM api_fail(format('%smisfire_policy: misfire policy ''%s'' is not one of coalesce, '
                            || 'catch_up, skip', prefix, misfire_policy));
  END IF;
  PERFORM check_range(prefix, 'misfire_grace_s', misfire_grace_s, 0, max_ms / 1000);
  PERFORM check_range(prefix, 'catch_up_limit', catch_up_limit, 1, 10000);
  PERFORM check_range(prefix, 'pause_after_failures', pause_after_failures, 0, 1000000);

  IF unique_key IS NOT NULL AND octet_length(unique_key) NOT BETWEEN 1 AND 200 THEN
    PERFORM api_fail(prefix || 'unique_key: must be 1-200 characters');
  END IF;
  IF on_conflict IS NULL OR on_conflict NOT IN ('keep', 'replace') THEN
    PERFORM api_fail(format('%son_conflict: ''%s'' is not one of keep, replace', prefix,
                            on_conflict));
  END IF;

  RETURN ROW(type, name, payload, kind, spec, first, policy, misfire_grace_s, catch_up_limit,
             priority, max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms,
             pause_after_failures, unique_key, on_conflict)::task_input;
END $$;

-- ---- JSON fields of add_tasks --------------------------------------------------------------

CREATE FUNCTION json_kind(v jsonb) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE jsonb_typeof(v)
    WHEN 'number' THEN CASE WHEN v::numeric = trunc(v::numeric) THEN 'a number'
                            ELSE 'a non-integer number' END
    WHEN 'string' THEN 'a string' WHEN 'boolean' THEN 'a boolean' WHEN 'array' THEN 'an array'
    WHEN 'object' THEN 'an object' ELSE 'null' END
$$;

-- A string field; NULL when absent or null.
CREATE FUNCTION json_text(obj jsonb, field text, prefix text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
  IF obj->field IS NULL OR jsonb_typeof(obj->field) = 'null' THEN
    RETURN NULL;
  END IF;
  IF jsonb_typeof(obj->field) <> 'string' THEN
    PERFORM api_fail(format('%s%s: expected a string, got %s', prefix, field,
                            json_kind(obj->field)));
  END IF;
  RETURN obj->>field;
END $$;

-- An integer field; `dflt` when absent.
CREATE FUNCTION json_int(obj jsonb, field text, prefix text, lo bigint, hi bigint, dflt bigint)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  n numeric;
BEGIN
  IF NOT obj ? field THEN
    RETURN dflt;
  END IF;
  IF jsonb_typeof(obj->field) <> 'number' OR (obj->field)::numeric <> trunc((obj->field)::numeric)
  THEN
    PERFORM api_fail(format('%s%s: expected an integer, got %s', prefix, field,
                            json_kind(obj->field)));
  END IF;
  n := (obj->field)::numeric;
  IF n < lo OR n > hi THEN
    PERFORM api_fail(format('%s%s: must be between %s and %s', prefix, field, lo, hi));
  END IF;
  RETURN n::bigint;
END $$;

CREATE FUNCTION json_time(obj jsonb, field text, prefix text) RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
  text_value text := json_text(obj, field, prefix);
BEGIN
  RETURN text_value::timestamptz;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow THEN
  PERFORM api_fail(format('%s%s: ''%s'' is not a time (expected RFC 3339, like '
                          || '2026-11-26T15:49:20Z)', prefix, field, text_value));
END $$;

-- Seconds as a number, or interval text ("30s", "5 minutes", "1 day").
CREATE FUNCTION json_interval(obj jsonb, field text, prefix text) RETURNS interval
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  text_value text;
BEGIN
  IF jsonb_typeof(obj->field) = 'number' THEN
    RETURN (obj->field)::numeric * interval '1 second';
  END IF;
  text_value := json_text(obj, field, prefix);
  RETURN text_value::interval;
EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow THEN
  PERFORM api_fail(format('%s%s: ''%s'' is not an interval (e.g. "30s", "5 minutes", "1 day")',
                          prefix, field, text_value));
END $$;

CREATE FUNCTION json_task_input(obj jsonb, idx bigint) RETURNS task_input
LANGUAGE plpgsql STABLE AS $$
DECLARE
  prefix constant text := format('tasks[%s]: ', idx);
  known constant text[] := ARRAY['type', 'payload', 'run_at', 'every', 'name', 'priority',
    'max_attempts', 'backoff_base_ms', 'backoff_cap_ms', 'timeout_ms', 'misfire_policy',
    'misfire_grace_s', 'catch_up_limit', 'pause_after_failures', 'unique_key', 'on_conflict',
    'cron'];
  max_ms constant bigint := 366::bigint * 24 * 3600 * 1000;
  unknown text;
BEGIN
  IF jsonb_typeof(obj) <> 'object' THEN
    PERFORM api_fail(prefix || 'expected a JSON object, got ' || json_kind(obj));
  END IF;
  SELECT k INTO unknown FROM jsonb_object_keys(obj) AS k WHERE k <> ALL (known) LIMIT 1;
  IF unknown IS NOT NULL THEN
    PERFORM api_fail(format('%sunknown field ''%s'' (known: %s)', prefix, left(unknown, 64),
                            array_to_string(known, ', ')));
  END IF;
  RETURN task_input_of(prefix,
    json_text(obj, 'type', prefix),
    coalesce(obj->'payload', '{}'),
    json_time(obj, 'run_at', prefix),
    json_interval(obj, 'every', prefix),
    json_text(obj, 'name', prefix),
    json_int(obj, 'priority', prefix, -1000, 1000, 0),
    json_int(obj, 'max_attempts', prefix, 1, 1000, 3),
    json_int(obj, 'backoff_base_ms', prefix, 0, max_ms, 1000),
    json_int(obj, 'backoff_cap_ms', prefix, 0, max_ms, 3600000),
    json_int(obj, 'timeout_ms', prefix, 1, max_ms, 60000),
    coalesce(json_text(obj, 'misfire_policy', prefix), 'coalesce'),
    json_int(obj, 'misfire_grace_s', prefix, 0, max_ms / 1000, 60),
    json_int(obj, 'catch_up_limit', prefix, 1, 10000, 10),
    json_int(obj, 'pause_after_failures', prefix, 0, 1000000, 0),
    json_text(obj, 'unique_key', prefix),
    coalesce(json_text(obj, 'on_conflict', prefix), 'keep'),
    json_text(obj, 'cron', prefix));
END $$;

-- Inserts validated tasks in one INSERT statement (one NOTIFY from the statement trigger) and
-- returns their ids in order. A task whose unique_key a live task holds gets that task's id
-- ('keep'), after its payload and run time were replaced ('replace').
--
-- ON CONFLICT DO NOTHING without a target covers both the unique_key index (with its predicate)
-- and the name index: a row that another transaction is inserting makes this one wait for its
-- outcome, so racing producers never both insert. Skipped rows are then told apart by reading:
-- a live holder of the key is the answer; a taken name is an error; neither (the holder finished
-- or rolled back meanwhile) means insert again.
CREATE FUNCTION insert_tasks(items task_input[]) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  n constant integer := coalesce(cardinality(items), 0);
  ids bigint[];
  result bigint[];
  pending integer[];
  still integer[];
  rounds integer := 0;
  replaced boolean := false;
  r record;
  got bigint;
  holder_state text;
BEGIN
  IF n = 0 THEN
    RETURN '{}';
  END IF;
  ids := ARRAY(SELECT nextval('tasks_id_seq') FROM generate_series(1, n));
  result := array_fill(NULL::bigint, ARRAY[n]);
  pending := ARRAY(SELECT generate_series(1, n));
  LOOP
    rounds := rounds + 1;
    IF rounds > 20 THEN
      PERFORM api_fail('unique_key: the key''s holder kept changing; retry the transaction',
                       '40001');
    END IF;
    WITH inserted AS (
      INSERT INTO tasks (id, type, name, payload, state, schedule_kind, schedule_spec,
                         misfire_policy, misfire_grace_s, catch_up_limit, next_run_at, priority,
                         max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms,
                         pause_after_failures, unique_key)
      SELECT ids[i.ordinality], i.type, i.name, i.payload, 'scheduled', i.schedule_kind,
             i.schedule_spec, i.misfire_policy, i.misfire_grace_s, i.catch_up_limit,
             i.next_run_at, i.priority, i.max_attempts, i.backoff_base_ms, i.backoff_cap_ms,
             i.timeout_ms, i.pause_after_failures, i.unique_key
      FROM unnest(items) WITH ORDINALITY AS i
      WHERE i.ordinality = ANY (pending)
      ORDER BY i.ordinality
      ON CONFLICT DO NOTHING
      RETURNING id
    )
    SELECT ARRAY(SELECT p FROM unnest(pending) AS p
                 WHERE NOT EXISTS (SELECT 1 FROM inserted WHERE inserted.id = ids[p]))
      INTO still;
    FOR r IN SELECT p FROM unnest(pending) AS p WHERE p <> ALL (still) LOOP
      result[r.p] := ids[r.p];
    END LOOP;
    pending := '{}';
    EXIT WHEN cardinality(still) = 0;

    FOR r IN
      SELECT p, i.*, h.id AS holder
      FROM unnest(still) AS p
      JOIN unnest(items) WITH ORDINALITY AS i ON i.ordinality = p
      LEFT JOIN tasks h ON h.unique_key = i.unique_key
        AND h.state IN ('scheduled', 'available', 'running', 'retryable', 'paused')
      ORDER BY p
    LOOP
      IF r.holder IS NOT NULL THEN
        IF r.on_conflict = 'replace' THEN
          got := NULL;
          UPDATE tasks t
             SET payload = r.payload, schedule_kind = r.schedule_kind,
                 schedule_spec = r.schedule_spec, timezone = 'UTC', next_run_at = r.next_run_at,
                 state = CASE WHEN t.state = 'paused' THEN 'paused' ELSE 'scheduled' END,
                 attempt = 0, updated_at = now()
           WHERE t.id = r.holder AND t.state IN ('scheduled', 'available', 'retryable', 'paused')
          RETURNING t.id INTO got;
          IF got IS NULL THEN
            SELECT t.state INTO holder_state FROM tasks t WHERE t.id = r.holder;
            IF holder_state = 'running' THEN
              PERFORM api_fail(format('unique_key: task %s holding ''%s'' is running; its '
                                      || 'payload and run time cannot be replaced now',
                                      r.holder, r.unique_key), '55000');
            END IF;
            pending := pending || r.p;  -- it finished meanwhile: the key is free
            CONTINUE;
          END IF;
          replaced := true;
        END IF;
        result[r.p] := r.holder;
      ELSIF r.name IS NOT NULL AND EXISTS (SELECT 1 FROM tasks t WHERE t.name = r.name) THEN
        PERFORM api_fail(format('a task named ''%s'' already exists', r.name), '23505');
      ELSE
        pending := pending || r.p;
      END IF;
    END LOOP;
    EXIT WHEN cardinality(pending) = 0;
  END LOOP;
  IF replaced THEN
    PERFORM pg_notify(current_schema() || '.tasks', '');
  END IF;
  RETURN result;
END $$;

-- ---- the API ---------------------------------------------------------------------------------

CREATE FUNCTION add_task(
  type                  text,
  payload               jsonb       DEFAULT '{}',
  run_at                timestamptz DEFAULT now(),
  every                 interval    DEFAULT NULL,
  name                  text        DEFAULT NULL,
  priority              integer     DEFAULT 0,
  max_attempts          integer     DEFAULT 3,
  backoff_base_ms       bigint      DEFAULT 1000,
  backoff_cap_ms        bigint      DEFAULT 3600000,
  timeout_ms            bigint      DEFAULT 60000,
  misfire_policy        text        DEFAULT 'coalesce',
  misfire_grace_s       integer     DEFAULT 60,
  catch_up_limit        integer     DEFAULT 10,
  pause_after_failures  integer     DEFAULT 0,
  unique_key            text        DEFAULT NULL,
  on_conflict           text        DEFAULT 'keep',
  cron                  text        DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  RETURN (insert_tasks(ARRAY[task_input_of('', type, payload, run_at, every, name, priority,
    max_attempts, backoff_base_ms, backoff_cap_ms, timeout_ms, misfire_policy, misfire_grace_s,
    catch_up_limit, pause_after_failures, unique_key, on_conflict, cron)]))[1];
END $$;

-- `tasks`: a JSON array of objects with add_task's parameter names as keys (type required; run_at
-- RFC 3339 text; every as seconds or interval text). All or nothing; ids in the array's order.
CREATE FUNCTION add_tasks(tasks jsonb) RETURNS bigint[]
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  IF tasks IS NULL OR jsonb_typeof(tasks) <> 'array' THEN
    PERFORM api_fail('tasks: expected a JSON array, got ' || json_kind(tasks));
  END IF;
  RETURN insert_tasks(ARRAY(SELECT json_task_input(e, o - 1)
                            FROM jsonb_array_elements(tasks) WITH ORDINALITY AS x(e, o)
                            ORDER BY o));
END $$;

-- The operator changes of src/sched/queries.hpp, with the same state rules. True when applied;
-- false when the task does not exist or is in a state the change does not apply to
-- (task_state() tells which).
CREATE FUNCTION cancel_task(id bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  UPDATE tasks t SET state = 'cancelled', next_run_at = NULL, updated_at = now()
   WHERE t.id = cancel_task.id
     AND t.state IN ('scheduled', 'available', 'retryable', 'paused', 'failed');
  RETURN FOUND;
END $$;

CREATE FUNCTION reschedule_task(id bigint, run_at timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  PERFORM check_time('', 'run_at', run_at);
  UPDATE tasks t
     SET state = CASE WHEN t.state = 'paused' THEN 'paused' ELSE 'scheduled' END,
         next_run_at = reschedule_task.run_at, updated_at = now()
   WHERE t.id = reschedule_task.id
     AND t.state IN ('scheduled', 'available', 'retryable', 'paused');
  IF FOUND THEN
    PERFORM pg_notify(current_schema() || '.tasks', '');
  END IF;
  RETURN FOUND;
END $$;

-- NULL when there is no such task.
CREATE FUNCTION task_state(id bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER AS $$
  SELECT t.state FROM tasks t WHERE t.id = task_state.id
$$;

-- ---- privileges --------------------------------------------------------------------------------

-- Functions are executable by PUBLIC unless revoked; the SECURITY DEFINER ones must not be.
DO $$
DECLARE
  f regprocedure;
  schema_name constant text := current_schema();
BEGIN
  FOR f IN
    SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = schema_name::regnamespace
      AND p.proname IN ('api_fail', 'format_time', 'format_seconds', 'check_time', 'check_range',
                        'task_input_of', 'json_kind', 'json_text', 'json_int', 'json_time',
                        'json_interval', 'json_task_input', 'insert_tasks', 'add_task',
                        'add_tasks', 'cancel_task', 'reschedule_task', 'task_state')
  LOOP
    EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    -- Pinned: a caller's search_path (or a temporary table named tasks) cannot redirect them.
    EXECUTE format('ALTER FUNCTION %s SET search_path = %I, pg_temp', f, schema_name);
  END LOOP;

  -- Roles are cluster-wide: another schema's migration may have created it, or be creating it
  -- right now.
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sluice_producer') THEN
    BEGIN
      CREATE ROLE sluice_producer NOLOGIN;
    EXCEPTION
      WHEN duplicate_object OR unique_violation THEN
        NULL;
      WHEN insufficient_privilege THEN
        RAISE WARNING 'role sluice_producer does not exist and this user may not create it; a superuser can run the statements under "Privileges" in docs/producers.md';
        RETURN;
    END;
  END IF;
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO sluice_producer', schema_name);
  GRANT EXECUTE ON FUNCTION add_task(text, jsonb, timestamptz, interval, text, integer, integer,
    bigint, bigint, bigint, text, integer, integer, integer, text, text, text) TO sluice_producer;
  GRANT EXECUTE ON FUNCTION add_tasks(jsonb) TO sluice_producer;
  GRANT EXECUTE ON FUNCTION cancel_task(bigint) TO sluice_producer;
  GRANT EXECUTE ON FUNCTION reschedule_task(bigint, timestamptz) TO sluice_producer;
  GRANT EXECUTE ON FUNCTION task_state(bigint) TO sluice_producer;
END $$;
