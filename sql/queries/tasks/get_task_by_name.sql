SELECT
  -- @include task_columns
FROM {s}.tasks
WHERE name = $1;
