-- Only for this incarnation ($2): a superseded process must not stop its successor's row.
DELETE FROM {s}.leader
WHERE node = $1
  AND EXISTS (SELECT 1 FROM {s}.nodes WHERE id = $1 AND incarnation = $2);
