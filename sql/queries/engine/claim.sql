-- The claimer's cycle: claims up to $3[k] due tasks of type $2[k] for node $1 (incarnation $4),
-- with its cycle row and counters (stats shard $5), in one statement; $6-$8: per type, where the
-- last claim ended (priority, due time, id), or NULL to claim from the head of the queue; $9:
-- the room, shared between the types in order (what one does not use passes on); $10[k]: the
-- workers free for type $2[k] now (a flow-limited type near its limit claims only for those).
-- The SQL is the function engine_claim in sql/migrations/006_flow_control.sql (planned once per
-- connection there).
SELECT
  -- @include task_columns
FROM {s}.engine_claim($1, $2::text[], $3::int4[], $4, $5, $6::int4[], $7::timestamptz[], $8::int8[], $9,
                          $10::int4[]);
