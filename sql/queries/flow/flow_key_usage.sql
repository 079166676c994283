-- Each limit counted per key: the keys in use now (running, or starts in the current rate
-- window, the same window as flow_usage), at most the 20 busiest keys of a type.
WITH lim AS (
  SELECT type, key_path, rate_limit, rate_period_ms FROM {s}.flow_limits WHERE key_path IS NOT NULL
), run AS (
  SELECT l.type, coalesce(x.payload ->> l.key_path, '') AS k, count(*)::int8 AS running
  FROM lim l JOIN {s}.tasks x ON x.type = l.type AND x.state = 'running'
  GROUP BY 1, 2
), st AS (
  SELECT l.type, s.key AS k, sum(s.n)::int8 AS started
  FROM lim l JOIN {s}.flow_starts s ON s.type = l.type
  WHERE l.rate_limit IS NOT NULL
    AND s.slot > now() - (l.rate_period_ms + greatest(l.rate_period_ms / 20, 1))
                         * interval '1 millisecond'
  GROUP BY 1, 2
), used AS (
  SELECT coalesce(r.type, st.type) AS type, coalesce(r.k, st.k) AS k,
         coalesce(r.running, 0) AS running, coalesce(st.started, 0) AS started
  FROM run r FULL JOIN st ON st.type = r.type AND st.k = r.k
), ranked AS (
  SELECT u.*, row_number() OVER (PARTITION BY u.type
                                 ORDER BY u.running DESC, u.started DESC, u.k) AS rank
  FROM used u
)
SELECT type, k, running, started FROM ranked WHERE rank <= 20 ORDER BY type, rank;
