-- Records that task $1[i] runs after task $2[i], and marks the upstream tasks so that their
-- final state change fires the dependents trigger (migration 6).
WITH deps AS (
  INSERT INTO {s}.task_deps (task_id, depends_on)
  SELECT * FROM unnest($1::int8[], $2::int8[])
  RETURNING depends_on
)
UPDATE {s}.tasks
SET has_dependents = true
WHERE id IN (SELECT depends_on FROM deps) AND NOT has_dependents;
