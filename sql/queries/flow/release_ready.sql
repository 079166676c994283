-- Blocked tasks among $1 whose upstream tasks all succeeded (or, for 'run', all finished)
-- become ready; the rest stay blocked until the dependents trigger releases them.
UPDATE {s}.tasks t
SET state = CASE WHEN t.next_run_at <= now() THEN 'available' ELSE 'scheduled' END,
    updated_at = now()
WHERE t.id = ANY ($1::int8[]) AND t.state = 'blocked'
  AND NOT EXISTS (
    SELECT 1 FROM {s}.task_deps d JOIN {s}.tasks u ON u.id = d.depends_on
    WHERE d.task_id = t.id
      AND u.state <> 'succeeded'
      AND (t.on_dependency_failure = 'cancel' OR u.state NOT IN ('failed', 'cancelled')))
RETURNING t.id;
