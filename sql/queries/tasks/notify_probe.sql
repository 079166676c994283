-- The listener's check that notifications reach it ($2: a payload of its own).
SELECT pg_notify($1, $2);
