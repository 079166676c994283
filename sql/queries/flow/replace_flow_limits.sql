-- Every flow limit replaced by the arrays' (type, key path, max running, rate, period ms).
WITH gone AS (
  DELETE FROM {s}.flow_limits WHERE NOT (type = ANY ($1::text[]))
)
INSERT INTO {s}.flow_limits AS f (type, key_path, max_running, rate_limit, rate_period_ms)
SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int4[], $5::int8[])
ON CONFLICT (type) DO UPDATE
SET key_path = EXCLUDED.key_path, max_running = EXCLUDED.max_running,
    rate_limit = EXCLUDED.rate_limit, rate_period_ms = EXCLUDED.rate_period_ms,
    updated_at = now()
WHERE (f.key_path, f.max_running, f.rate_limit, f.rate_period_ms) IS DISTINCT FROM
      (EXCLUDED.key_path, EXCLUDED.max_running, EXCLUDED.rate_limit, EXCLUDED.rate_period_ms);
