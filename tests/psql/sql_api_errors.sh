#!/usr/bin/env bash
# The SQL API's refusals as a producer sees them in psql: the API's message and its SQLSTATE
# (VERBOSITY verbose shows "ERROR:  22023: ..."), a refused call adds nothing, and the caller's
# transaction is rolled back by psql's ON_ERROR_STOP as by any client. Usage: SLUICE_BIN=... $0
# The database comes from DATABASE_URL or the PG* variables, as for the other integration tests.
set -euo pipefail
bin="${SLUICE_BIN:?SLUICE_BIN must name the sluice binary}"
schema="psql_api_$$_$RANDOM"
db=()
[[ -n "${DATABASE_URL:-}" ]] && db=(-d "$DATABASE_URL")
sql() { psql -qXtA "${db[@]}" -v ON_ERROR_STOP=1 -v VERBOSITY=verbose "$@"; }
cleanup() { sql -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$bin" migrate --schema "$schema" >/dev/null
fail() { echo "sql_api_errors: FAIL: $*" >&2; exit 1; }

# refused SQL SQLSTATE FRAGMENT
refused() {
  local out
  if out=$(sql -c "$1" 2>&1); then fail "accepted: $1 (printed: $out)"; fi
  grep -qF -- "ERROR:  $2: " <<<"$out" || fail "$1: expected SQLSTATE $2 in: $out"
  grep -qF -- "$3" <<<"$out" || fail "$1: expected '$3' in: $out"
  echo "ok - $1 -> $2"
}
refused "SELECT $schema.add_task('bad type', '{}')" 22023 \
  "type: 'bad type' must be 1-100 characters of A-Z a-z 0-9 _ . : -"
refused "SELECT $schema.add_task('x', '[1]')" 22023 "payload: expected a JSON object, got an array"
refused "SELECT $schema.add_task('x', '{}', priority => 1001)" 22023 \
  "priority: must be between -1000 and 1000"
refused "SELECT $schema.add_task('x', '{}', every => '0s')" 22023 \
  "every: must be positive (at least 1 second)"
refused "SELECT $schema.add_task('x', '{}', cron => '*/5 * * * *')" 0A000 \
  "cron: cron schedules cannot be added through SQL"

# A refusal inside a transaction: the good call before it is rolled back with it.
out=$(sql -c "BEGIN" -c "SELECT $schema.add_task('x', '{}')" \
  -c "SELECT $schema.add_task('x', '{}', max_attempts => 0)" -c "COMMIT" 2>&1) &&
  fail "a transaction with a refused call committed: $out"
grep -qF "ERROR:  22023: max_attempts: must be between 1 and 1000" <<<"$out" ||
  fail "max_attempts: unexpected output: $out"
left=$(sql -c "SELECT count(*) FROM $schema.tasks")
[[ "$left" == 0 ]] || fail "$left tasks left after refused calls"
echo "ok - refused calls added nothing; the transaction around one was rolled back"

# And an accepted call returns the id of a task due now.
id=$(sql -c "SELECT $schema.add_task('noop', '{}')")
[[ "$id" =~ ^[0-9]+$ ]] || fail "add_task returned '$id'"
state=$(sql -c "SELECT state FROM $schema.tasks WHERE id = $id")
[[ "$state" == scheduled ]] || fail "task $id is '$state'"
echo "ok - add_task('noop', '{}') returned $id"
