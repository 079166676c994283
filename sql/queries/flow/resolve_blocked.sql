-- Right after a graph is added: blocked tasks among $1 whose upstream tasks were already final.
-- Those that cancel on failure and have an upstream task that failed or was cancelled are
-- cancelled (the dependents trigger carries it downstream); then those whose upstream tasks all
-- succeeded (or, for 'run', all finished) become ready. The same rules as the trigger's.
WITH cancelled AS (
  UPDATE {s}.tasks t
  SET state = 'cancelled', next_run_at = NULL, updated_at = now(),
      last_error = 'cancelled: task ' || u.id || ', which it runs after, ' ||
                   CASE u.state WHEN 'failed' THEN 'failed' ELSE 'was cancelled' END
  FROM (SELECT DISTINCT ON (d.task_id) d.task_id, x.id, x.state
        FROM {s}.task_deps d JOIN {s}.tasks x ON x.id = d.depends_on
        WHERE d.task_id = ANY ($1::int8[]) AND x.state IN ('failed', 'cancelled')
        ORDER BY d.task_id, x.id) u
  WHERE t.id = u.task_id AND t.state = 'blocked' AND t.on_dependency_failure = 'cancel'
  RETURNING t.id
)
SELECT count(*)::int FROM cancelled;
