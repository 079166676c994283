-- Pruning, in batches ($2 rows at most) so that each statement is a short transaction.
-- Finished one-shot tasks, found through tasks_finished, with their dependency rows (version 6).
-- FOR UPDATE SKIP LOCKED: a task an operator is changing right now is left for the next round.
WITH doomed AS (
  SELECT id
  FROM {s}.tasks
  WHERE state IN ('succeeded', 'failed', 'cancelled')
    AND schedule_kind = 'once'
    AND updated_at < now() - $1 * interval '1 hour'
  LIMIT $2
  FOR UPDATE SKIP LOCKED
), deps AS (
  DELETE FROM {s}.task_deps d
  USING doomed
  WHERE d.task_id = doomed.id OR d.depends_on = doomed.id
)
DELETE FROM {s}.tasks
WHERE id IN (SELECT id FROM doomed);
