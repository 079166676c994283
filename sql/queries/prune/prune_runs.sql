-- Pruning, in batches ($2 rows at most) so that each statement is a short transaction.
DELETE FROM {s}.task_runs
WHERE id IN (
  SELECT id
  FROM {s}.task_runs
  WHERE finished_at < now() - $1 * interval '1 hour'
  LIMIT $2
);
