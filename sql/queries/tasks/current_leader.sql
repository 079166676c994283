SELECT node
FROM {s}.leader
WHERE expires_at >= now();
