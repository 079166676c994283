SELECT
  -- @include task_columns
  -- After row_to_task()'s columns: the store reads it, the engine (claim.sql) does not.
  , unique_key
FROM {s}.tasks
WHERE ($1::text IS NULL OR type = $1)
  AND ($2::text IS NULL OR state = $2)
  AND ($3::text IS NULL OR strpos(name, $3) > 0)
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5;
