SELECT metric, type, sum(value)::bigint
FROM {s}.stats
GROUP BY metric, type;
