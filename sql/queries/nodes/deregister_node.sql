-- Only for this incarnation ($2): a superseded process must not stop its successor's row.
UPDATE {s}.nodes
SET state = 'stopped',
    expires_at = now()
WHERE id = $1
  AND incarnation = $2;
