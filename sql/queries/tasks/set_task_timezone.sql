-- The zone of a cron task that add_unique_task.sql inserted or replaced in this transaction:
-- insert_tasks() writes 'UTC', since the SQL API adds no cron schedules.
UPDATE {s}.tasks SET timezone = $2 WHERE id = $1;
