-- sluice schema, version 3: node incarnations.
--
-- A node id is often stable across restarts (systemd units, Kubernetes StatefulSets). Before
-- this version a node killed with SIGKILL and started again under the same id within its expiry
-- looked alive the whole time, so the tasks its previous process had claimed stayed 'running'
-- for good. Now every process start is a new incarnation: claims name it, a starting node rescues
-- the claims of its earlier incarnations at once, the leader rescues any claim whose incarnation
-- is not its node's live one, and a heartbeat only renews the row of its own incarnation, so a
-- superseded process learns that it was superseded instead of silently merging with the new one.
--
-- All three columns are added without a table rewrite (PostgreSQL 11+ stores a constant default
-- in the catalog), so this runs in milliseconds on a populated database. Claims made before the
-- upgrade have no incarnation; they keep the old rule (alive while their node id is alive).

-- A random number chosen by each process start; 0 for rows written by an older version.
ALTER TABLE nodes ADD COLUMN incarnation bigint NOT NULL DEFAULT 0;
-- Where the process runs, precisely enough to tell from the same machine whether it still runs:
-- "<kernel boot id>:<pid namespace>:<pid>:<process start time>"; NULL when unknown.
ALTER TABLE nodes ADD COLUMN process_key text;
-- The incarnation that claimed the task (NULL: claimed before version 3, or not claimed).
ALTER TABLE tasks ADD COLUMN claimed_incarnation bigint;
