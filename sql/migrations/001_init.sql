-- sluice schema, version 1. Applied by `sluice migrate` inside one transaction, with
-- search_path set to the sluice schema (default "sluice"), so names here are unqualified.

CREATE TABLE tasks (
  id                    bigserial PRIMARY KEY,
  type                  text NOT NULL CHECK (type ~ '^[A-Za-z0-9_.:-]{1,100}$'),
  name                  text UNIQUE CHECK (name IS NULL OR length(name) BETWEEN 1 AND 200),
  payload               jsonb NOT NULL DEFAULT '{}',
  state                 text NOT NULL DEFAULT 'scheduled' CHECK (state IN
                          ('scheduled', 'available', 'running', 'retryable', 'succeeded',
                           'failed', 'cancelled', 'paused')),
  schedule_kind         text NOT NULL CHECK (schedule_kind IN ('once', 'interval', 'cron')),
  schedule_spec         text NOT NULL,
  timezone              text NOT NULL DEFAULT 'UTC',
  misfire_policy        text NOT NULL DEFAULT 'coalesce' CHECK (misfire_policy IN ('coalesce', 'catch_up', 'skip')),
  misfire_grace_s       integer NOT NULL DEFAULT 60 CHECK (misfire_grace_s >= 0),
  catch_up_limit        integer NOT NULL DEFAULT 10 CHECK (catch_up_limit BETWEEN 1 AND 10000),
  next_run_at           timestamptz,
  priority              integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
  attempt               integer NOT NULL DEFAULT 0,
  max_attempts          integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 1000),
  backoff_base_ms       bigint NOT NULL DEFAULT 1000 CHECK (backoff_base_ms >= 0),
  backoff_cap_ms        bigint NOT NULL DEFAULT 3600000 CHECK (backoff_cap_ms >= backoff_base_ms),
  timeout_ms            bigint NOT NULL DEFAULT 60000 CHECK (timeout_ms > 0),
  pause_after_failures  integer NOT NULL DEFAULT 0 CHECK (pause_after_failures >= 0),
  -- Fencing: bumped by every claim and every rescue. A completion applies only with the token
  -- its claim returned, so a worker that stalled past its lease cannot finish a rescued task.
  claim_token           bigint NOT NULL DEFAULT 0,
  claimed_by            text,
  claimed_at            timestamptz,
  lease_until           timestamptz,
  fire_time             timestamptz,  -- the scheduled time the current or last run is for
  last_error            text,
  last_run_at           timestamptz,
  last_success_at       timestamptz,
  consecutive_failures  integer NOT NULL DEFAULT 0,
  runs                  bigint NOT NULL DEFAULT 0,
  created_at            timestamptz NOT NULL DEFAULT now(),
  updated_at            timestamptz NOT NULL DEFAULT now()
);

-- The claim: due tasks of one type, highest priority first, oldest due time first.
CREATE INDEX tasks_claim ON tasks (type, priority DESC, next_run_at, id)
  WHERE state IN ('scheduled', 'available', 'retryable');
-- When is the next task due (the engine sleeps until then)?
CREATE INDEX tasks_next_due ON tasks (next_run_at)
  WHERE state IN ('scheduled', 'available', 'retryable');
-- Rescue of a dead node's running tasks, and the dashboard's running list.
CREATE INDEX tasks_running ON tasks (claimed_by) WHERE state = 'running';
-- Dashboard and API listings by state.
CREATE INDEX tasks_state ON tasks (state, id);

CREATE TABLE task_runs (
  id            bigserial PRIMARY KEY,
  task_id       bigint NOT NULL,  -- no foreign key: history outlives deleted tasks
  type          text NOT NULL,
  attempt       integer NOT NULL,
  claim_token   bigint NOT NULL,
  node          text NOT NULL,
  fire_time     timestamptz,
  started_at    timestamptz NOT NULL,
  finished_at   timestamptz NOT NULL,
  outcome       text NOT NULL CHECK (outcome IN
                  ('succeeded', 'failed', 'timed_out', 'rescued', 'fenced', 'cancelled')),
  error         text,
  detail        jsonb,
  -- 'cycle': recorded by the node's check cycle; 'handler': in the handler's own transaction.
  recorded_by   text NOT NULL DEFAULT 'cycle'
);
CREATE INDEX task_runs_task ON task_runs (task_id, id DESC);
CREATE INDEX task_runs_finished ON task_runs (finished_at);

-- The check-cycle event log: one row per cycle of each node.
CREATE TABLE cycles (
  id            bigserial PRIMARY KEY,
  node          text NOT NULL,
  started_at    timestamptz NOT NULL,
  duration_ms   double precision NOT NULL,
  claimed       integer NOT NULL DEFAULT 0,
  succeeded     integer NOT NULL DEFAULT 0,
  failed        integer NOT NULL DEFAULT 0,
  skipped       integer NOT NULL DEFAULT 0,   -- fire times dropped by a misfire policy
  rescued       integer NOT NULL DEFAULT 0,
  fenced        integer NOT NULL DEFAULT 0,   -- completions refused: the claim was stale
  by_type       jsonb NOT NULL DEFAULT '{}',  -- {"type": {"claimed": n, "succeeded": n, ...}}
  error         text
);
CREATE INDEX cycles_started ON cycles (started_at);

-- Cumulative counters. Updated in the same transaction as the events they count, so they
-- always equal the history; pruning history never lowers them. Sharded per node so nodes do
-- not queue behind one row lock; read with sum().
CREATE TABLE stats (
  metric        text NOT NULL,
  type          text NOT NULL DEFAULT '',
  shard         integer NOT NULL DEFAULT 0,
  value         bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (metric, type, shard)
);

CREATE TABLE nodes (
  id                  text PRIMARY KEY,
  host                text NOT NULL,
  pid                 integer NOT NULL,
  version             text NOT NULL,
  started_at          timestamptz NOT NULL DEFAULT now(),
  heartbeat_at        timestamptz NOT NULL DEFAULT now(),
  expires_at          timestamptz NOT NULL,
  connection_budget   integer NOT NULL,
  state               text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'draining', 'stopped', 'dead'))
);

-- The leader lease: one row. A lease with an expiry (not an advisory lock), so it works through
-- PgBouncer's transaction pooling.
CREATE TABLE leader (
  singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  node          text NOT NULL,
  acquired_at   timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL
);

-- New or rescheduled due work wakes the nodes at once instead of at their next poll.
CREATE FUNCTION notify_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(TG_TABLE_SCHEMA || '.tasks', '');
  RETURN NULL;
END $$;
CREATE TRIGGER tasks_notify AFTER INSERT ON tasks FOR EACH STATEMENT EXECUTE FUNCTION notify_tasks();
