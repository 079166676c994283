SELECT coalesce(sum(connection_budget), 0)::int
FROM {s}.nodes
WHERE id <> $1
  AND expires_at >= now()
  AND state IN ('running', 'draining');
