SELECT
  -- @include task_columns
  -- After row_to_task()'s columns: the store reads it, the engine (claim.sql) does not.
  , unique_key
FROM {s}.tasks
WHERE name = $1;
