-- A task with a unique_key, through the SQL API's insert_tasks() (sql/migrations/004_sql_api.sql)
-- so that the C++ API and the SQL API share one implementation of the key's semantics: keep or
-- replace the live task holding the key, wait for a producer inserting it concurrently, refuse a
-- replace while the holder runs (55000), a taken name (23505). The values arrive validated
-- (task_spec::validate); insert_tasks() does not check them again.
--
-- insert_tasks() takes one id from tasks_id_seq for the row and returns either that id (it
-- inserted the row) or the holder's id, which is an older value: `created` tells them apart.
-- MATERIALIZED keeps the function to one call, made before currval() is read.
WITH added AS MATERIALIZED (
  SELECT ({s}.insert_tasks(ARRAY[ROW(
    $1::text, $2::text, $3::jsonb, $4::text, $5::text, $6::timestamptz, $7::text, $8::integer,
    $9::integer, $10::integer, $11::integer, $12::bigint, $13::bigint, $14::bigint, $15::integer,
    $16::text, $17::text
  )::{s}.task_input]))[1] AS id
)
SELECT id, id = currval('{s}.tasks_id_seq') AS created FROM added;
