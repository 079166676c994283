-- Node rows stopped or dead for more than a day.
DELETE FROM {s}.nodes
WHERE expires_at < now() - interval '1 day'
  AND state IN ('stopped', 'dead');
