SELECT
  -- @include task_columns
FROM {s}.tasks
WHERE id = $1;
