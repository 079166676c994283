-- Each limited type: its limit, how many of it run now and how many starts the current rate
-- window counts (the slots engine_claim counts).
SELECT f.type, f.key_path, f.max_running, f.rate_limit, f.rate_period_ms,
       (SELECT count(*) FROM {s}.tasks x WHERE x.type = f.type AND x.state = 'running')
         AS running,
       (SELECT coalesce(sum(s.n), 0)::int8 FROM {s}.flow_starts s
        WHERE f.rate_limit IS NOT NULL AND s.type = f.type
          AND s.slot > now() - (f.rate_period_ms + greatest(f.rate_period_ms / 20, 1))
                               * interval '1 millisecond') AS started
FROM {s}.flow_limits f
ORDER BY f.type;
