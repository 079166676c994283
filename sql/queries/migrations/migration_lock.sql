-- Serializes concurrent migrators on the schema name, for the transaction only.
SELECT pg_advisory_xact_lock(hashtext($1));
