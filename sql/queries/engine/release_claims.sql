-- Hands claims back untouched (stop() before the handler started, or cancelled at shutdown).
UPDATE {s}.tasks t
SET state = 'available',
    attempt = greatest(t.attempt - 1, 0),
    claim_token = t.claim_token + 1,
    claimed_by = NULL,
    claimed_incarnation = NULL,
    claimed_at = NULL,
    lease_until = NULL,
    next_run_at = least(coalesce(t.next_run_at, now()), now()),
    updated_at = now()
FROM unnest($1::int8[], $2::int8[]) AS x(id, token)
WHERE t.id = x.id
  AND t.claim_token = x.token
  AND (t.state = 'running') IS TRUE;
