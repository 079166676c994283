-- A claim whose node is gone (dead, or restarted as a new incarnation) goes back to the queue:
-- a one-shot task out of attempts fails, anything else is retryable now; the token bump fences
-- the old claim. Shared by the leader's rescue (engine/heartbeat.sql) and the takeover at start
-- (nodes/take_over_claims.sql): the first assignments of their SET list, `t` being the task.
state = CASE WHEN t.attempt >= t.max_attempts AND t.schedule_kind = 'once' THEN 'failed' ELSE 'retryable' END,
claim_token = t.claim_token + 1,
claimed_by = NULL,
claimed_incarnation = NULL,
claimed_at = NULL,
lease_until = NULL,
next_run_at = CASE WHEN t.attempt >= t.max_attempts AND t.schedule_kind = 'once' THEN NULL ELSE now() END,
