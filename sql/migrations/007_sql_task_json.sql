-- sluice schema, version 7: add_tasks() reads the task JSON of the HTTP API (issue 18: one set
-- of names). Besides run_at / every / cron, an element may give the API's "schedule":
--   {"kind": "once", "at": "<RFC 3339>"} (no "at": now)
--   {"kind": "interval", "every": "1h30m" | <seconds>, "anchor": "<RFC 3339>"}
--     (without "anchor", as in the API: every period from now, the first run one period from now)
--   "once:<time>", "every:<duration>[@<anchor>]" (the one-string forms)
-- each object optionally with "text", the one-string form, which must then agree. Cron (kind
-- "cron", "cron:...") stays refused with 0A000, as for the cron parameter. The fields the
-- scheduler writes (id, state, next_run_at, attempt, ...) are accepted and ignored, so a task's
-- JSON from GET /api/v1/tasks/{id} or `sluice task show --json` can be given as it is.
-- Only json_task_input() changes; the engine's statements do not.

CREATE OR REPLACE FUNCTION json_task_input(obj jsonb, idx bigint) RETURNS task_input
LANGUAGE plpgsql STABLE AS $$
DECLARE
  prefix constant text := format('tasks[%s]: ', idx);
  sp constant text := prefix || 'schedule.';
  known constant text[] := ARRAY['type', 'payload', 'schedule', 'run_at', 'every', 'name',
    'priority', 'max_attempts', 'backoff_base_ms', 'backoff_cap_ms', 'timeout_ms',
    'misfire_policy', 'misfire_grace_s', 'catch_up_limit', 'pause_after_failures', 'unique_key',
    'on_conflict', 'cron'];
  -- What the scheduler writes: a task's JSON carries them; they are not the producer's to set.
  read_only constant text[] := ARRAY['id', 'state', 'next_run_at', 'attempt', 'claim_token',
    'claimed_by', 'claimed_at', 'lease_until', 'fire_time', 'last_error', 'last_run_at',
    'last_success_at', 'consecutive_failures', 'runs', 'created_at', 'updated_at'];
  max_ms constant bigint := 366::bigint * 24 * 3600 * 1000;
  unknown text;
  s jsonb := obj->'schedule';
  kind text;
  allowed text[];
  one_string text;
  rest text;
  v_run_at timestamptz;
  v_every interval;
  v_cron text;
  anchored boolean := true;
  given_text text;
  expected_text text;
  result task_input;
BEGIN
  IF jsonb_typeof(obj) <> 'object' THEN
    PERFORM api_fail(prefix || 'expected a JSON object, got ' || json_kind(obj));
  END IF;
  SELECT k INTO unknown FROM jsonb_object_keys(obj) AS k
   WHERE k <> ALL (known) AND k <> ALL (read_only) LIMIT 1;
  IF unknown IS NOT NULL THEN
    PERFORM api_fail(format('%sunknown field ''%s'' (known: %s)', prefix, left(unknown, 64),
                            array_to_string(known, ', ')));
  END IF;

  IF s IS NULL OR jsonb_typeof(s) = 'null' THEN
    v_run_at := json_time(obj, 'run_at', prefix);
    v_every := json_interval(obj, 'every', prefix);
    v_cron := json_text(obj, 'cron', prefix);
  ELSE
    IF obj ? 'run_at' OR obj ? 'every' OR obj ? 'cron' THEN
      PERFORM api_fail(prefix || 'schedule: give either schedule or run_at / every / cron');
    END IF;
    IF jsonb_typeof(s) = 'string' THEN
      one_string := s #>> '{}';
      kind := lower(split_part(one_string, ':', 1));
      rest := substr(one_string, length(split_part(one_string, ':', 1)) + 2);
      IF position(':' IN one_string) = 0 OR kind NOT IN ('once', 'every', 'interval', 'cron') THEN
        PERFORM api_fail(format('%sschedule: ''%s'' is not a schedule (once:<time>, '
                                || 'every:<duration>[@<anchor>], cron:<expression>)', prefix,
                                left(one_string, 64)));
      END IF;
      IF kind = 'once' THEN
        v_run_at := json_time(jsonb_build_object('at', rest), 'at', sp);
      ELSIF kind = 'cron' THEN
        v_cron := rest;
      ELSE
        v_every := json_interval(jsonb_build_object('every', split_part(rest, '@', 1)), 'every',
                                 sp);
        IF position('@' IN rest) > 0 THEN
          v_run_at := json_time(jsonb_build_object('anchor', substr(rest, position('@' IN rest) + 1)),
                                'anchor', sp);
        ELSE
          anchored := false;
        END IF;
      END IF;
    ELSIF jsonb_typeof(s) = 'object' THEN
      kind := json_text(s, 'kind', sp);
      IF kind IS NULL THEN
        PERFORM api_fail(sp || 'kind: required (once, interval or cron)');
      END IF;
      kind := lower(kind);
      allowed := CASE kind WHEN 'once' THEN ARRAY['kind', 'at', 'text']
                           WHEN 'interval' THEN ARRAY['kind', 'every', 'anchor', 'text']
                           WHEN 'every' THEN ARRAY['kind', 'every', 'anchor', 'text']
                           WHEN 'cron' THEN ARRAY['kind', 'expr', 'tz', 'text'] END;
      IF allowed IS NULL THEN
        PERFORM api_fail(format('%skind: ''%s'' is not one of once, interval, cron', sp,
                                left(kind, 64)));
      END IF;
      SELECT k INTO unknown FROM jsonb_object_keys(s) AS k WHERE k <> ALL (allowed) LIMIT 1;
      IF unknown IS NOT NULL THEN
        PERFORM api_fail(format('%sunknown field ''schedule.%s'' for a %s schedule (known: %s)',
                                prefix, left(unknown, 64), kind,
                                array_to_string(allowed, ', ')));
      END IF;
      IF kind = 'once' THEN
        v_run_at := json_time(s, 'at', sp);
      ELSIF kind = 'cron' THEN
        v_cron := coalesce(json_text(s, 'expr', sp), '');
      ELSE
        IF NOT s ? 'every' THEN
          PERFORM api_fail(sp || 'every: required for an interval schedule (e.g. "30s")');
        END IF;
        v_every := json_interval(s, 'every', sp);
        v_run_at := json_time(s, 'anchor', sp);
        anchored := v_run_at IS NOT NULL;
      END IF;
      given_text := json_text(s, 'text', sp);
    ELSE
      PERFORM api_fail(prefix || 'schedule: expected an object such as {"kind":"interval",'
                       || '"every":"30s"} or a string such as "every:30s", got ' || json_kind(s));
    END IF;
  END IF;

  result := task_input_of(prefix,
    json_text(obj, 'type', prefix),
    coalesce(obj->'payload', '{}'),
    v_run_at,
    v_every,
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
    v_cron);
  IF NOT anchored THEN
    -- The API's unanchored interval (sched::schedule::every without an anchor): each run one
    -- period after the previous, the first one period from now.
    result.schedule_spec := split_part(result.schedule_spec, '@', 1);
    result.next_run_at := now() + v_every;
  END IF;
  IF given_text IS NOT NULL THEN
    expected_text := CASE result.schedule_kind WHEN 'once' THEN 'once:' ELSE 'every:' END
                     || result.schedule_spec;
    IF given_text <> expected_text THEN
      PERFORM api_fail(format('%stext: ''%s'' is not the schedule the other fields give (''%s'');'
                              || ' change both, or leave "text" out', sp, left(given_text, 64),
                              expected_text));
    END IF;
  END IF;
  RETURN result;
END $$;

-- CREATE OR REPLACE keeps the function's privileges; its settings come from the new definition,
-- so the search_path pin of version 4 is set again.
DO $$
BEGIN
  EXECUTE 'REVOKE EXECUTE ON FUNCTION json_task_input(jsonb, bigint) FROM PUBLIC';
  EXECUTE format('ALTER FUNCTION json_task_input(jsonb, bigint) SET search_path = %I, pg_temp',
                 current_schema());
END $$;
