-- Registers this incarnation under the id, replacing whatever row was there.
-- $1 node, $2 host, $3 pid, $4 version, $5 expiry (ms), $6 budget, $7 incarnation, $8 process key.
INSERT INTO {s}.nodes (id, host, pid, version, started_at, heartbeat_at, expires_at,
                       connection_budget, state, incarnation, process_key)
VALUES ($1, $2, $3, $4, now(), now(), now() + $5 * interval '1 millisecond', $6, 'running', $7, $8)
ON CONFLICT (id) DO UPDATE
SET host = EXCLUDED.host,
    pid = EXCLUDED.pid,
    version = EXCLUDED.version,
    started_at = now(),
    heartbeat_at = now(),
    expires_at = EXCLUDED.expires_at,
    connection_budget = EXCLUDED.connection_budget,
    state = 'running',
    incarnation = EXCLUDED.incarnation,
    process_key = EXCLUDED.process_key;
