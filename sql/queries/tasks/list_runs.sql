SELECT id, task_id, type, attempt, claim_token, node, fire_time, started_at, finished_at, outcome,
       error, detail::text, recorded_by
FROM {s}.task_runs
WHERE task_id = $1
  AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3;
