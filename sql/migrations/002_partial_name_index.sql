-- sluice schema, version 2.
--
-- Task names are optional and most tasks have none, but the UNIQUE constraint of version 1
-- indexed every row, NULL names included. Every new row version (a claim, a completion) then
-- added an entry to that index for nothing. A partial unique index enforces the same rule
-- (two tasks cannot share a name; any number may have none) and holds only named tasks.
-- Lookups by name (`WHERE name = $1`) use it, since `=` implies NOT NULL.
--
-- On a large table this builds the index under a lock that blocks writes to tasks while it
-- runs (about a second per million named tasks); run `sluice migrate` before starting the new
-- version, as docs/operations.md says.
CREATE UNIQUE INDEX tasks_name_unique ON tasks (name) WHERE name IS NOT NULL;
ALTER TABLE tasks DROP CONSTRAINT tasks_name_key;
