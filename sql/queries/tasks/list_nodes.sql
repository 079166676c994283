SELECT id, host, pid, version, started_at, heartbeat_at, expires_at, connection_budget, state,
       expires_at >= now() AND state IN ('running', 'draining') AS alive
FROM {s}.nodes
ORDER BY started_at;
