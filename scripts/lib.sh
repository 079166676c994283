# shellcheck shell=bash
# Shared shell functions for the scripts in this folder. Sourced, never run:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# After sourcing, SLUICE_ROOT is the repository root and SLUICE_SCRIPT the calling script's
# name, which prefixes every message so interleaved output says where it came from.

SLUICE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
SLUICE_SCRIPT="scripts/$(basename "${BASH_SOURCE[1]:-$0}")"

msg() { printf '%s: %s\n' "$SLUICE_SCRIPT" "$*"; }
warn() { printf '%s: %s\n' "$SLUICE_SCRIPT" "$*" >&2; }
die() {
  printf '%s: error: %s\n' "$SLUICE_SCRIPT" "$*" >&2
  exit 1
}

# The CMake preset the scripts build and test with: release unless SLUICE_PRESET names another
# one from CMakePresets.json. Each preset builds into build/<preset>.
sluice_preset() {
  local preset="${SLUICE_PRESET:-release}"
  case "$preset" in
    release | debug | asan | tsan) printf '%s\n' "$preset" ;;
    *) die "unknown SLUICE_PRESET '$preset' (use release, debug, asan or tsan)" ;;
  esac
}

# Configures (when needed: CMake skips work that is up to date) and builds one preset.
# Further arguments go to `cmake --build`, e.g. `--target sluice_cli`.
sluice_build() {
  local preset="$1"
  shift
  local jobs="${SLUICE_JOBS:-$(nproc)}"
  msg "configuring (cmake --preset $preset)"
  (cd "$SLUICE_ROOT" && cmake --preset "$preset" >/dev/null) ||
    die "cmake configure failed for preset '$preset' (rerun: cmake --preset $preset)"
  msg "building (cmake --build --preset $preset -j$jobs $*)"
  (cd "$SLUICE_ROOT" && cmake --build --preset "$preset" -j "$jobs" "$@") ||
    die "build failed for preset '$preset'"
}

# One drain of `sluice serve` as a user runs it, for scripts/bench-serve and scripts/bench-anchors:
#   sluice_serve_drain BIN DB TASKS WORK_DIR [EXTRA_TOML] [COUNT_CONNECTIONS]
# On the server that PGHOST, PGPORT and PGUSER name, database DB is dropped and created again
# and migrated, TASKS no-op tasks are inserted due now (then VACUUM ANALYZE), and BIN serve runs
# with a configuration of only the database URL, http.port = 0 and EXTRA_TOML until every task
# is seen succeeded (polled every 200 ms through the state index); then it is stopped. Sets
# SERVE_DRAIN_NS: nanoseconds from the first task's start to the last task's finish, as the run
# history records them (the daemon's start-up, about 0.2 s, and the poll's granularity are left
# out, as `sluice bench scheduler` leaves them out), and SERVE_WALL_NS: from the daemon's start
# to the poll that saw every task done. With
# COUNT_CONNECTIONS=1 each poll also counts the client connections to DB other than its own, and
# SERVE_PEAK_CONNECTIONS is the most seen (else it stays empty). While the daemon runs its pid is
# in SLUICE_SERVE_PID (0 otherwise), for the caller's exit trap. On failure it dies; the daemon's
# log stays in WORK_DIR/serve.log, and SLUICE_SERVE_KEEP_WORK=1 asks the caller to keep WORK_DIR.
SLUICE_SERVE_PID=0
SLUICE_SERVE_KEEP_WORK=0
sluice_serve_drain() {
  local bin="$1" db="$2" tasks="$3" work="$4" extra_toml="${5:-}" count_connections="${6:-0}"
  local url="postgresql://$PGUSER@$PGHOST:$PGPORT/$db"
  local poll="SELECT count(*) FROM (SELECT 1 FROM sluice.tasks
             WHERE state IN ('scheduled', 'available', 'retryable', 'running') LIMIT 1) x"
  if ((count_connections)); then
    poll="SELECT ($poll), (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
             AND backend_type = 'client backend' AND pid <> pg_backend_pid())"
  fi
  psql -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
  cat >"$work/serve.toml" <<TOML
[database]
url = "$url"
[http]
port = 0
$extra_toml
TOML
  # DATABASE_URL would override the configured url in the daemon.
  env -u DATABASE_URL "$bin" migrate --config "$work/serve.toml" >/dev/null
  psql -q -d "$db" -c "INSERT INTO sluice.tasks (type, schedule_kind, schedule_spec, next_run_at)
                      SELECT 'noop', 'once', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                             now() FROM generate_series(1, $tasks)" \
    -c "VACUUM ANALYZE sluice.tasks" >/dev/null
  local start_ns end_ns left="$tasks" row connections peak=0
  start_ns=$(date +%s%N)
  env -u DATABASE_URL "$bin" serve --config "$work/serve.toml" >"$work/serve.log" 2>&1 &
  SLUICE_SERVE_PID=$!
  while ((left > 0)); do
    kill -0 "$SLUICE_SERVE_PID" 2>/dev/null || die "sluice serve exited early; its log: $(tail -5 "$work/serve.log")"
    sleep 0.2
    # Through the state index: cheap while the daemon works.
    row=$(psql -qtA -F ' ' -d "$db" -c "$poll")
    read -r left connections <<<"$row"
    if ((count_connections && connections > peak)); then peak=$connections; fi
  done
  end_ns=$(date +%s%N)
  local succeeded
  succeeded=$(psql -qtA -d "$db" -c "SELECT count(*) FROM sluice.tasks WHERE state = 'succeeded'")
  ((succeeded == tasks)) || {
    # shellcheck disable=SC2034 # read by the caller's exit trap
    SLUICE_SERVE_KEEP_WORK=1
    die "only $succeeded of $tasks tasks succeeded; the daemon's log: $work/serve.log"
  }
  kill "$SLUICE_SERVE_PID"
  wait "$SLUICE_SERVE_PID" || true
  SLUICE_SERVE_PID=0
  local history_ns
  history_ns=$(psql -qtA -d "$db" -c "SELECT round(extract(epoch FROM max(finished_at) - min(started_at)) * 1e9)::int8
                                      FROM sluice.task_runs WHERE outcome = 'succeeded'")
  # shellcheck disable=SC2034 # the results, read by the caller
  {
    SERVE_WALL_NS=$((end_ns - start_ns))
    SERVE_DRAIN_NS=$history_ns
    SERVE_PEAK_CONNECTIONS=""
    if ((count_connections)); then SERVE_PEAK_CONNECTIONS=$peak; fi
  }
}
