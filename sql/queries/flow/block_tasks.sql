-- Tasks $1[i] of a graph being added wait for their upstream tasks, with policy $2[i].
UPDATE {s}.tasks t
SET state = 'blocked', on_dependency_failure = d.policy
FROM unnest($1::int8[], $2::text[]) AS d (id, policy)
WHERE t.id = d.id;
