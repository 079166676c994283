SELECT id, node, started_at, duration_ms, claimed, succeeded, failed, skipped, rescued, fenced,
       by_type::text, error
FROM {s}.cycles
WHERE ($1::bigint IS NULL OR id < $1)
ORDER BY id DESC
LIMIT $2;
