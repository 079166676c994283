SELECT min(next_run_at)
FROM {s}.tasks
WHERE state IN ('scheduled', 'available', 'retryable')
  AND type = ANY($1::text[]);
