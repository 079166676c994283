#pragma once

// Every SQL statement of the scheduler, in one place. `{s}` stands for the quoted schema name and
// is substituted once when the store or engine is built; values are always bound parameters.

namespace sluice::sched::queries {

// Columns read into sched::task, in the order row_to_task() expects.
#define SLUICE_TASK_COLUMNS                                                                        \
  "id, type, name, payload::text, state, schedule_kind, schedule_spec, timezone, misfire_policy, " \
  "misfire_grace_s, catch_up_limit, next_run_at, priority, attempt, max_attempts, "                \
  "backoff_base_ms, backoff_cap_ms, timeout_ms, pause_after_failures, claim_token, claimed_by, "   \
  "claimed_at, lease_until, fire_time, last_error, last_run_at, last_success_at, "                 \
  "consecutive_failures, runs, created_at, updated_at"

inline constexpr const char* task_columns = SLUICE_TASK_COLUMNS;

// ---- migrations --------------------------------------------------------------------------

inline constexpr const char* create_migrations_table =
    "CREATE TABLE IF NOT EXISTS {s}.schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT "
    "now())";
inline constexpr const char* migrations_table_exists = "SELECT to_regclass($1) IS NOT NULL";
inline constexpr const char* current_version =
    "SELECT coalesce(max(version), 0) FROM {s}.schema_migrations";
// Serializes concurrent migrators on the schema name, for the transaction only.
inline constexpr const char* migration_lock = "SELECT pg_advisory_xact_lock(hashtext($1))";
inline constexpr const char* record_migration =
    "INSERT INTO {s}.schema_migrations (version, name) VALUES ($1, $2)";

// ---- tasks (operator / API) ---------------------------------------------------------------

inline constexpr const char* insert_task =
    "INSERT INTO {s}.tasks (type, name, payload, state, schedule_kind, schedule_spec, timezone,"
    " misfire_policy, misfire_grace_s, catch_up_limit, next_run_at, priority, max_attempts,"
    " backoff_base_ms, backoff_cap_ms, timeout_ms, pause_after_failures)"
    " VALUES ($1, $2, $3::jsonb, 'scheduled', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, "
    "$15, $16)"
    " RETURNING id";
inline constexpr const char* get_task =
    "SELECT " SLUICE_TASK_COLUMNS " FROM {s}.tasks WHERE id = $1";
inline constexpr const char* get_task_by_name =
    "SELECT " SLUICE_TASK_COLUMNS " FROM {s}.tasks WHERE name = $1";
inline constexpr const char* list_tasks =
    "SELECT " SLUICE_TASK_COLUMNS
    " FROM {s}.tasks"
    " WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR state = $2)"
    "   AND ($3::text IS NULL OR strpos(name, $3) > 0) AND ($4::bigint IS NULL OR id < $4)"
    " ORDER BY id DESC LIMIT $5";

// State changes return the new state, or nothing when the task does not exist or is in a state
// the change does not apply to (the caller tells which by looking the task up).
inline constexpr const char* pause_task =
    "UPDATE {s}.tasks SET state = 'paused', updated_at = now()"
    " WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable') RETURNING id";
inline constexpr const char* resume_task =
    "UPDATE {s}.tasks SET state = 'scheduled', consecutive_failures = 0, attempt = 0,"
    " next_run_at = greatest(coalesce(next_run_at, now()), now()), updated_at = now()"
    " WHERE id = $1 AND state = 'paused' RETURNING id";
inline constexpr const char* cancel_task =
    "UPDATE {s}.tasks SET state = 'cancelled', next_run_at = NULL, updated_at = now()"
    " WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable', 'paused', 'failed') "
    "RETURNING id";
inline constexpr const char* run_now_task =
    "UPDATE {s}.tasks SET state = 'available', next_run_at = now(), attempt = 0, updated_at = now()"
    " WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable', 'paused', 'failed', "
    "'succeeded')"
    " RETURNING id";
inline constexpr const char* reschedule_task =
    "UPDATE {s}.tasks SET state = CASE WHEN state = 'paused' THEN 'paused' ELSE 'scheduled' END,"
    " next_run_at = $2, updated_at = now()"
    " WHERE id = $1 AND state IN ('scheduled', 'available', 'retryable', 'paused') RETURNING id";
inline constexpr const char* notify_tasks = "SELECT pg_notify($1, '')";
// The listener's check that notifications reach it ($2: a payload of its own).
inline constexpr const char* notify_probe = "SELECT pg_notify($1, $2)";

inline constexpr const char* list_runs =
    "SELECT id, task_id, type, attempt, claim_token, node, fire_time, started_at, finished_at, "
    "outcome,"
    " error, detail::text, recorded_by FROM {s}.task_runs"
    " WHERE task_id = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3";
inline constexpr const char* list_cycles =
    "SELECT id, node, started_at, duration_ms, claimed, succeeded, failed, skipped, rescued, "
    "fenced,"
    " by_type::text, error FROM {s}.cycles WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC "
    "LIMIT $2";
inline constexpr const char* read_stats =
    "SELECT metric, type, sum(value)::bigint FROM {s}.stats GROUP BY metric, type";
inline constexpr const char* list_nodes =
    "SELECT id, host, pid, version, started_at, heartbeat_at, expires_at, connection_budget, state,"
    " expires_at >= now() AND state IN ('running', 'draining') AS alive FROM {s}.nodes ORDER BY "
    "started_at";
inline constexpr const char* current_leader =
    "SELECT node FROM {s}.leader WHERE expires_at >= now()";
inline constexpr const char* queue_depths =
    "SELECT type, state, count(*)::bigint,"
    " coalesce(extract(epoch FROM now() - min(next_run_at) FILTER (WHERE next_run_at <= now()"
    "   AND state IN ('scheduled', 'available', 'retryable'))), 0)::float8"
    " FROM {s}.tasks GROUP BY type, state ORDER BY type, state";
inline constexpr const char* other_nodes_budget =
    "SELECT coalesce(sum(connection_budget), 0)::int FROM {s}.nodes"
    " WHERE id <> $1 AND expires_at >= now() AND state IN ('running', 'draining')";

// ---- engine -------------------------------------------------------------------------------

// The claimer's cycle: claims up to $3[k] due tasks of type $2[k] for node $1 (incarnation $4),
// with its cycle row and counters (stats shard $5), in one statement; $6-$8: per type, where the
// last claim ended (priority, due time, id), or NULL to claim from the head of the queue. The
// SQL is the function engine_claim in sql/migrations/005_hot_path.sql (planned once per
// connection there).
inline constexpr const char* claim =
    "SELECT " SLUICE_TASK_COLUMNS
    " FROM {s}.engine_claim($1, $2::text[], $3::int4[], $4, $5, $6::int4[], $7::timestamptz[],"
    " $8::int8[])";

// The completer's batch, one autocommit statement: applies the outcomes in the arrays $1-$15
// (one element per task), fenced by claim token, writes one run row per outcome ('fenced' when
// the claim was stale), the batch's cycle row (kind 'complete', node $16) and the counters
// (shard $17), with the fire times dropped by misfire policies ($18 types, $19 counts). With $20
// (a retry of a batch whose commit was not confirmed), outcomes already recorded are left out,
// so a batch that did commit is not applied twice. Returns the per-type count of each recorded
// outcome. Arrays instead of JSON: the server reads N rows without parsing a document per row.
inline constexpr const char* complete =
    "WITH input AS ("
    "  SELECT x.* FROM unnest($1::int8[], $2::int8[], $3::text[], $4::int4[], $5::text[],"
    "    $6::text[], $7::timestamptz[], $8::bool[], $9::text[], $10::int4[], $11::timestamptz[],"
    "    $12::timestamptz[], $13::timestamptz[], $14::jsonb[], $15::bool[])"
    "    AS x(id, token, type, attempt, outcome, new_state, next_run_at, reset_attempt, error,"
    "         consecutive_failures, fire_time, started_at, finished_at, detail, counts_run)"
    "  WHERE NOT ($20::bool AND ("
    "    EXISTS (SELECT 1 FROM {s}.task_runs r WHERE r.task_id = x.id AND r.claim_token = x.token"
    "            AND r.recorded_by = 'cycle' AND r.outcome <> 'rescued')"
    "    OR (NOT x.counts_run AND NOT EXISTS (SELECT 1 FROM {s}.tasks y WHERE y.id = x.id"
    "            AND y.claim_token = x.token AND y.state = 'running'))))"
    "), applied AS ("
    "  UPDATE {s}.tasks t SET state = i.new_state, next_run_at = i.next_run_at,"
    "    attempt = CASE WHEN i.reset_attempt THEN 0 ELSE t.attempt END,"
    "    claimed_by = NULL, claimed_incarnation = NULL, claimed_at = NULL, lease_until = NULL,"
    "    last_error = CASE WHEN i.outcome = 'succeeded' THEN t.last_error ELSE i.error END,"
    "    last_success_at = CASE WHEN i.outcome = 'succeeded' THEN i.finished_at"
    "                      ELSE t.last_success_at END,"
    "    consecutive_failures = i.consecutive_failures,"
    "    runs = t.runs + CASE WHEN i.counts_run THEN 1 ELSE 0 END, updated_at = now()"
    // Each input row finds its task through the primary key (a nested loop driven by the
    // input, never by a guess of how many tasks are running, which statistics get wrong).
    "  FROM input i WHERE t.id = i.id AND t.claim_token = i.token"
    "    AND (t.state = 'running') IS TRUE"
    "  RETURNING t.id"
    "), recorded AS ("
    "  INSERT INTO {s}.task_runs (task_id, type, attempt, claim_token, node, fire_time, started_at,"
    "    finished_at, outcome, error, detail, recorded_by)"
    "  SELECT i.id, i.type, i.attempt, i.token, $16, i.fire_time, i.started_at, i.finished_at,"
    "    CASE WHEN a.id IS NULL THEN 'fenced' ELSE i.outcome END, i.error, i.detail, 'cycle'"
    "  FROM input i LEFT JOIN applied a ON a.id = i.id WHERE i.counts_run OR a.id IS NULL"
    "  RETURNING type, outcome"
    "), per_type AS ("
    "  SELECT type, count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,"
    "    count(*) FILTER (WHERE outcome IN ('failed', 'timed_out')) AS failed,"
    "    count(*) FILTER (WHERE outcome = 'fenced') AS fenced"
    "  FROM recorded GROUP BY type"
    "), skips AS ("
    "  SELECT type, sum(n)::bigint AS n FROM unnest($18::text[], $19::int4[]) AS s(type, n)"
    "  GROUP BY type"
    "), merged AS ("
    "  SELECT coalesce(p.type, k.type) AS type, coalesce(p.succeeded, 0) AS succeeded,"
    "    coalesce(p.failed, 0) AS failed, coalesce(p.fenced, 0) AS fenced,"
    "    coalesce(k.n, 0) AS skipped"
    "  FROM per_type p FULL JOIN skips k ON k.type = p.type"
    "), counted AS ("
    "  INSERT INTO {s}.stats (metric, type, shard, value)"
    "  SELECT metric, type, $17, value FROM ("
    "    SELECT 'runs_' || outcome AS metric, type, count(*) AS value FROM recorded"
    "    GROUP BY outcome, type"
    "    UNION ALL SELECT 'skipped', type, n FROM skips WHERE n > 0"
    "    UNION ALL SELECT 'cycles', '', 1) m"
    "  ORDER BY metric, type"
    "  ON CONFLICT (metric, type, shard) DO UPDATE SET value = stats.value + EXCLUDED.value"
    "), logged AS ("
    "  INSERT INTO {s}.cycles (node, started_at, duration_ms, succeeded, failed, skipped, fenced,"
    "    by_type, kind)"
    "  SELECT $16, now(), extract(epoch FROM clock_timestamp() - now()) * 1000,"
    "    coalesce(sum(succeeded), 0), coalesce(sum(failed), 0), coalesce(sum(skipped), 0),"
    "    coalesce(sum(fenced), 0),"
    "    coalesce(jsonb_object_agg(type, jsonb_build_object('succeeded', succeeded,"
    "      'failed', failed, 'skipped', skipped, 'fenced', fenced)), '{}'),"
    "    'complete'"
    "  FROM merged"
    ")"
    " SELECT type, outcome, count(*)::int FROM recorded GROUP BY type, outcome";

// The same for one task inside a handler's own transaction (transactional completion).
inline constexpr const char* complete_in_handler =
    "WITH applied AS ("
    "  UPDATE {s}.tasks t SET state = $4, next_run_at = $5, attempt = CASE WHEN $6 THEN 0 ELSE "
    "t.attempt END,"
    "    claimed_by = NULL, claimed_incarnation = NULL, claimed_at = NULL, lease_until = NULL,"
    "    last_success_at = now(),"
    "    consecutive_failures = 0, runs = t.runs + 1, updated_at = now()"
    "  WHERE t.id = $1 AND t.claim_token = $2 AND t.state = 'running' RETURNING t.id, t.type, "
    "t.attempt, t.fire_time"
    "), recorded AS ("
    "  INSERT INTO {s}.task_runs (task_id, type, attempt, claim_token, node, fire_time, started_at,"
    "    finished_at, outcome, detail, recorded_by)"
    "  SELECT a.id, a.type, a.attempt, $2, $3, a.fire_time, $7, now(), 'succeeded', $8::jsonb, "
    "'handler'"
    "  FROM applied a RETURNING type"
    "), counted AS ("
    "  INSERT INTO {s}.stats (metric, type, shard, value)"
    "  SELECT 'runs_succeeded', type, $9, count(*) FROM recorded GROUP BY type ORDER BY type"
    "  ON CONFLICT (metric, type, shard) DO UPDATE SET value = stats.value + EXCLUDED.value"
    ")"
    " SELECT count(*)::int FROM recorded";

// Hands claims back untouched (stop() before the handler started, or cancelled at shutdown).
inline constexpr const char* release_claims =
    "UPDATE {s}.tasks t SET state = 'available', attempt = greatest(t.attempt - 1, 0),"
    " claim_token = t.claim_token + 1, claimed_by = NULL, claimed_incarnation = NULL,"
    " claimed_at = NULL, lease_until = NULL, next_run_at = least(coalesce(t.next_run_at, now()), "
    "now()), updated_at = now()"
    " FROM unnest($1::int8[], $2::int8[]) AS x(id, token)"
    " WHERE t.id = x.id AND t.claim_token = x.token AND (t.state = 'running') IS TRUE";

// Claims this process holds in the database ($1: node, $2: incarnation). After a cycle whose
// COMMIT outcome was unknown, those the node does not know about are orphans and are handed back.
inline constexpr const char* own_claims =
    "SELECT id, claim_token FROM {s}.tasks"
    " WHERE claimed_by = $1 AND claimed_incarnation = $2 AND state = 'running'";

inline constexpr const char* next_due =
    "SELECT min(next_run_at) FROM {s}.tasks"
    " WHERE state IN ('scheduled', 'available', 'retryable') AND type = ANY($1::text[])";

// A claim whose node is gone (dead, or restarted as a new incarnation) goes back to the queue:
// a one-shot task out of attempts fails, anything else is retryable now; the token bump fences
// the old claim. Shared by the leader's rescue (heartbeat) and the takeover at start.
#define SLUICE_RESCUE_SET                                                                         \
  "    state = CASE WHEN t.attempt >= t.max_attempts AND t.schedule_kind = 'once' THEN 'failed' " \
  "ELSE 'retryable' END,"                                                                         \
  "    claim_token = t.claim_token + 1, claimed_by = NULL, claimed_incarnation = NULL,"           \
  "    claimed_at = NULL, lease_until = NULL,"                                                    \
  "    next_run_at = CASE WHEN t.attempt >= t.max_attempts AND t.schedule_kind = 'once' THEN "    \
  "NULL ELSE now() END,"

// Heartbeat, leader lease and (for the leader) rescue of dead nodes' tasks, in one statement.
// $1 node, $2 host, $3 pid, $4 version, $5 expiry (ms), $6 budget, $7 state, $8 stats shard,
// $9 incarnation, $10 process key. The node row is renewed only while it names this incarnation:
// when another process has taken the id over, `registered` is 0 and nothing else happens.
inline constexpr const char* heartbeat =
    "WITH me AS ("
    "  INSERT INTO {s}.nodes (id, host, pid, version, heartbeat_at, expires_at, connection_budget, "
    "state, incarnation, process_key)"
    "  VALUES ($1, $2, $3, $4, now(), now() + $5 * interval '1 millisecond', $6, $7, $9, $10)"
    "  ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), expires_at = EXCLUDED.expires_at,"
    "    connection_budget = EXCLUDED.connection_budget, state = EXCLUDED.state"
    "  WHERE nodes.incarnation = EXCLUDED.incarnation"
    "  RETURNING id"
    "), lead AS ("
    "  INSERT INTO {s}.leader (singleton, node, expires_at) VALUES (true, $1, now() + $5 * "
    "interval '1 millisecond')"
    "  ON CONFLICT (singleton) DO UPDATE SET node = EXCLUDED.node, expires_at = "
    "EXCLUDED.expires_at,"
    "    acquired_at = CASE WHEN leader.node = EXCLUDED.node THEN leader.acquired_at ELSE now() END"
    "  WHERE (leader.node = EXCLUDED.node OR leader.expires_at < now()) AND EXISTS (SELECT 1 FROM "
    "me)"
    "  RETURNING node"
    "), dead AS ("
    "  UPDATE {s}.nodes SET state = 'dead' WHERE EXISTS (SELECT 1 FROM lead)"
    "   AND id <> $1 AND expires_at < now() AND state IN ('running', 'draining') RETURNING id"
    "), rescued AS ("
    "  UPDATE {s}.tasks t SET" SLUICE_RESCUE_SET
    "    last_error = 'node ' || o.old_node || CASE WHEN o.restarted"
    "      THEN ' was restarted while running this task' ELSE ' stopped responding while running "
    "this task' END,"
    "    updated_at = now()"
    // A claim is live while its node is alive in the incarnation that claimed it (claims from
    // before schema version 3 have none and follow the node id alone). This node's own claims
    // are never its to rescue, even if its own row looks expired to this statement's snapshot.
    "  FROM (SELECT x.id, x.claimed_by AS old_node,"
    "          EXISTS (SELECT 1 FROM {s}.nodes n WHERE n.id = x.claimed_by"
    "                  AND n.incarnation <> x.claimed_incarnation) AS restarted"
    "        FROM {s}.tasks x"
    "        WHERE EXISTS (SELECT 1 FROM lead) AND x.state = 'running'"
    "          AND NOT (x.claimed_by = $1 AND x.claimed_incarnation = $9)"
    "          AND NOT EXISTS (SELECT 1 FROM {s}.nodes n WHERE n.id = x.claimed_by"
    "                          AND n.expires_at >= now() AND n.state IN ('running', 'draining')"
    "                          AND (x.claimed_incarnation IS NULL"
    "                               OR n.incarnation = x.claimed_incarnation))"
    "        FOR UPDATE OF x SKIP LOCKED) o"
    "  WHERE t.id = o.id"
    "  RETURNING t.id, t.type, t.attempt, t.claim_token - 1 AS token, t.fire_time, t.last_run_at, "
    "t.last_error,"
    "    o.old_node AS node"

    "), recorded AS ("
    "  INSERT INTO {s}.task_runs (task_id, type, attempt, claim_token, node, fire_time, started_at,"
    "    finished_at, outcome, error, recorded_by)"
    "  SELECT id, type, attempt, token, node, fire_time, coalesce(last_run_at, now()), now(), "
    "'rescued',"
    "    last_error, 'cycle' FROM rescued RETURNING type"
    "), counted AS ("
    "  INSERT INTO {s}.stats (metric, type, shard, value)"
    "  SELECT 'runs_rescued', type, $8, count(*) FROM recorded GROUP BY type ORDER BY type"
    "  ON CONFLICT (metric, type, shard) DO UPDATE SET value = stats.value + EXCLUDED.value"
    "), logged AS ("
    "  INSERT INTO {s}.cycles (node, started_at, duration_ms, rescued, by_type, kind)"
    "  SELECT $1, now(), 0, count(*), jsonb_build_object('rescue', true), 'rescue' FROM rescued "
    "HAVING "
    "count(*) > 0"
    ")"
    " SELECT (SELECT count(*) FROM lead)::int AS leader, (SELECT count(*) FROM rescued)::int AS "
    "rescued,"
    "        (SELECT count(*) FROM dead)::int AS dead, (SELECT count(*) FROM me)::int AS "
    "registered";

// ---- node registration (a process start) ----------------------------------------------------

// Serializes the start of processes that use the same node id (transaction-scoped, so it works
// through PgBouncer's transaction pooling too).
inline constexpr const char* node_start_lock = "SELECT pg_advisory_xact_lock(hashtext($1))";
// The row a starting process finds under its id ($1), locked for the registration.
inline constexpr const char* node_row =
    "SELECT incarnation, host, pid, process_key, heartbeat_at,"
    " expires_at >= now() AND state IN ('running', 'draining') AS alive,"
    " (extract(epoch FROM now() - heartbeat_at) * 1000)::bigint AS heartbeat_age_ms,"
    " greatest(0, (extract(epoch FROM expires_at - now()) * 1000))::bigint AS expires_in_ms"
    " FROM {s}.nodes WHERE id = $1 FOR UPDATE";
// Registers this incarnation under the id, replacing whatever row was there.
// $1 node, $2 host, $3 pid, $4 version, $5 expiry (ms), $6 budget, $7 incarnation, $8 process key.
inline constexpr const char* register_node =
    "INSERT INTO {s}.nodes (id, host, pid, version, started_at, heartbeat_at, expires_at,"
    " connection_budget, state, incarnation, process_key)"
    " VALUES ($1, $2, $3, $4, now(), now(), now() + $5 * interval '1 millisecond', $6, 'running', "
    "$7, $8)"
    " ON CONFLICT (id) DO UPDATE SET host = EXCLUDED.host, pid = EXCLUDED.pid,"
    "   version = EXCLUDED.version, started_at = now(), heartbeat_at = now(),"
    "   expires_at = EXCLUDED.expires_at, connection_budget = EXCLUDED.connection_budget,"
    "   state = 'running', incarnation = EXCLUDED.incarnation, process_key = EXCLUDED.process_key";
// A starting process takes over the claims its node id still holds from earlier incarnations
// (a process that was killed and restarted at once): they go back to the queue as if their node
// had died, with a 'rescued' run, the counters and a cycle row, in the registration's
// transaction. $1 node, $2 incarnation, $3 stats shard.
inline constexpr const char* take_over_claims =
    "WITH rescued AS ("
    "  UPDATE {s}.tasks t SET" SLUICE_RESCUE_SET
    "    last_error = 'node ' || $1 || ' was restarted while running this task', updated_at = now()"
    "  WHERE t.claimed_by = $1 AND t.state = 'running' AND t.claimed_incarnation IS DISTINCT FROM "
    "$2"
    "  RETURNING t.id, t.type, t.attempt, t.claim_token - 1 AS token, t.fire_time, t.last_run_at,"
    "    t.last_error"
    "), recorded AS ("
    "  INSERT INTO {s}.task_runs (task_id, type, attempt, claim_token, node, fire_time, started_at,"
    "    finished_at, outcome, error, recorded_by)"
    "  SELECT id, type, attempt, token, $1, fire_time, coalesce(last_run_at, now()), now(), "
    "'rescued',"
    "    last_error, 'cycle' FROM rescued RETURNING type"
    "), counted AS ("
    "  INSERT INTO {s}.stats (metric, type, shard, value)"
    "  SELECT 'runs_rescued', type, $3, count(*) FROM recorded GROUP BY type ORDER BY type"
    "  ON CONFLICT (metric, type, shard) DO UPDATE SET value = stats.value + EXCLUDED.value"
    "), logged AS ("
    "  INSERT INTO {s}.cycles (node, started_at, duration_ms, rescued, by_type, kind)"
    "  SELECT $1, now(), 0, count(*), jsonb_build_object('rescue', true, 'restart', true), "
    "'rescue'"
    "  FROM rescued HAVING count(*) > 0"
    ")"
    " SELECT count(*)::int FROM rescued";

// Both only for this incarnation ($2): a superseded process must not stop its successor's row.
inline constexpr const char* deregister_node =
    "UPDATE {s}.nodes SET state = 'stopped', expires_at = now() WHERE id = $1 AND incarnation = $2";
inline constexpr const char* resign_leader =
    "DELETE FROM {s}.leader WHERE node = $1"
    " AND EXISTS (SELECT 1 FROM {s}.nodes WHERE id = $1 AND incarnation = $2)";
// Pruning, in batches ($2 rows at most) so that each statement is a short transaction.
inline constexpr const char* prune_runs =
    "DELETE FROM {s}.task_runs WHERE id IN (SELECT id FROM {s}.task_runs"
    " WHERE finished_at < now() - $1 * interval '1 hour' LIMIT $2)";
inline constexpr const char* prune_cycles =
    "DELETE FROM {s}.cycles WHERE id IN (SELECT id FROM {s}.cycles"
    " WHERE started_at < now() - $1 * interval '1 hour' LIMIT $2)";
// Finished one-shot tasks, found through tasks_state. FOR UPDATE SKIP LOCKED: a task an operator
// is changing right now is left for the next round.
inline constexpr const char* prune_tasks =
    "DELETE FROM {s}.tasks WHERE id IN (SELECT id FROM {s}.tasks"
    " WHERE state IN ('succeeded', 'failed', 'cancelled') AND schedule_kind = 'once'"
    " AND updated_at < now() - $1 * interval '1 hour' LIMIT $2 FOR UPDATE SKIP LOCKED)";
inline constexpr const char* prune_nodes =
    "DELETE FROM {s}.nodes WHERE expires_at < now() - interval '1 day' AND state IN ('stopped', "
    "'dead')";

#undef SLUICE_TASK_COLUMNS
#undef SLUICE_RESCUE_SET

}  // namespace sluice::sched::queries
