-- Claims this process holds in the database ($1: node, $2: incarnation). After a cycle whose
-- COMMIT outcome was unknown, those the node does not know about are orphans and are handed back.
SELECT id, claim_token
FROM {s}.tasks
WHERE claimed_by = $1
  AND claimed_incarnation = $2
  AND state = 'running';
