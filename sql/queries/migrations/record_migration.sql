INSERT INTO {s}.schema_migrations (version, name)
VALUES ($1, $2);
