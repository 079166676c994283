-- The row a starting process finds under its id ($1), locked for the registration.
SELECT incarnation, host, pid, process_key, heartbeat_at,
       expires_at >= now() AND state IN ('running', 'draining') AS alive,
       (extract(epoch FROM now() - heartbeat_at) * 1000)::bigint AS heartbeat_age_ms,
       greatest(0, (extract(epoch FROM expires_at - now()) * 1000))::bigint AS expires_in_ms
FROM {s}.nodes
WHERE id = $1
FOR UPDATE;
