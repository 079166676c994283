-- Serializes the start of processes that use the same node id (transaction-scoped, so it works
-- through PgBouncer's transaction pooling too).
SELECT pg_advisory_xact_lock(hashtext($1));
