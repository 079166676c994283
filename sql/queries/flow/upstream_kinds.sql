-- The existing tasks a graph names in after_ids ($1), with their schedule kind: each must exist
-- and be one-shot. Locked, so that none finishes before the graph's dependencies are recorded
-- (its completion waits for this transaction and then fires the dependents trigger).
SELECT id, schedule_kind
FROM {s}.tasks
WHERE id = ANY ($1::int8[])
ORDER BY id
FOR UPDATE;
