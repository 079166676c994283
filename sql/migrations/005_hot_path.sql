-- sluice schema, version 5: the engine's hot path.
--
-- The engine now claims on one connection and completes on another (src/sched/claimer.cpp,
-- src/sched/completer.cpp), each in one autocommit statement, so both of the server's cores work
-- and neither waits for the other. This migration gives those statements tables that stay small
-- and cheap to write. Every statement here changes catalog settings or indexes only: no table is
-- rewritten, so it upgrades a populated database in milliseconds. Nodes of version 4 keep
-- working on it (their cycle rows get kind 'cycle').

-- Which lane wrote a cycle row: a claim cycle, a batch of completions, a rescue, or (rows from
-- before version 5) the single combined cycle. The dashboard and `sluice cycles` show it.
ALTER TABLE cycles ADD COLUMN kind text NOT NULL DEFAULT 'cycle'
  CHECK (kind IN ('cycle', 'claim', 'complete', 'rescue'));

-- Room on each page for the updated version of a row, so that updates which touch no indexed
-- column stay on the page (HOT) and write no index entry. Applies to pages written from now on.
ALTER TABLE tasks SET (fillfactor = 80);
-- The counters are a handful of rows updated by every batch: keep them on their pages.
ALTER TABLE stats SET (fillfactor = 50);
ALTER TABLE nodes SET (fillfactor = 50);
ALTER TABLE leader SET (fillfactor = 50);

-- Vacuum the queue as soon as a small share of it is dead, at full speed: a claim walks dead
-- index entries at the head of the claim index until vacuum removes them, so a lazy vacuum is
-- what makes pick-up slow after a burst (the defaults wait for 20 % of the table).
ALTER TABLE tasks SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
                       autovacuum_vacuum_cost_delay = 0, autovacuum_vacuum_cost_limit = 10000,
                       autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE stats SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                       autovacuum_vacuum_cost_delay = 0);
ALTER TABLE nodes SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200,
                       autovacuum_vacuum_cost_delay = 0);
ALTER TABLE leader SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 200,
                        autovacuum_vacuum_cost_delay = 0);
-- The history tables are insert-mostly: vacuum them for the visibility map (index-only scans,
-- cheap pruning) after 5 % new rows rather than 20 %.
ALTER TABLE task_runs SET (autovacuum_vacuum_insert_scale_factor = 0.05,
                           autovacuum_vacuum_cost_delay = 0);
ALTER TABLE cycles SET (autovacuum_vacuum_insert_scale_factor = 0.05,
                        autovacuum_vacuum_cost_delay = 0);

-- The history is written in time order and read by time only when it is pruned: a BRIN index
-- (one entry per range of pages, kept up to date almost for free) replaces the b-tree that took
-- one entry per run and per cycle.
DROP INDEX task_runs_finished;
CREATE INDEX task_runs_finished ON task_runs USING brin (finished_at);
DROP INDEX cycles_started;
CREATE INDEX cycles_started ON cycles USING brin (started_at);
