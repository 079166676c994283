SELECT type, state, count(*)::bigint,
       coalesce(extract(epoch FROM now() - min(next_run_at) FILTER (WHERE next_run_at <= now()
         AND state IN ('scheduled', 'available', 'retryable'))), 0)::float8
FROM {s}.tasks
GROUP BY type, state
ORDER BY type, state;
