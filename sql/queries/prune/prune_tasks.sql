-- Pruning, in batches ($2 rows at most) so that each statement is a short transaction.
-- Finished one-shot tasks, found through tasks_finished. FOR UPDATE SKIP LOCKED: a task an operator
-- is changing right now is left for the next round.
DELETE FROM {s}.tasks
WHERE id IN (
  SELECT id
  FROM {s}.tasks
  WHERE state IN ('succeeded', 'failed', 'cancelled')
    AND schedule_kind = 'once'
    AND updated_at < now() - $1 * interval '1 hour'
  LIMIT $2
  FOR UPDATE SKIP LOCKED
);
