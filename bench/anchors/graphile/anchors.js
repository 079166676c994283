#!/usr/bin/env node
// graphile-worker's side of scripts/bench-anchors: the phases of `sluice bench scheduler`
// (src/cli/bench_scheduler.cpp), measured the same way, with graphile-worker's own run() API in
// this one Node process and its documented batched settings
// (https://worker.graphile.org/docs/performance):
//   concurrentJobs 24, maxPoolSize 25, localQueue { size: 500 }, completeJobBatchDelay 0,
//   failJobBatchDelay 0; a task that does nothing.
//
//   drain    N jobs added up front with one add_jobs() call, before the clock starts; then run()
//            and the clock runs until the task has started N times and the jobs table is empty
//            (graphile-worker deletes a job when its completion is committed). The worker's
//            start-up (pool, migration check, LISTEN) is inside the time. Peak server
//            connections of the worker's pool (application_name anchors-graphile), sampled
//            from pg_stat_activity every 50 ms.
//   latency  add_job() one at a time at a steady rate on a connection of its own; for each, the
//            time from add_job() returning to the task function starting (and from the call).
//   idle     the worker with nothing to do: transactions per second in the database, from
//            pg_stat_database (xact_commit + xact_rollback), less the meter's own reading.
//
// Usage (the database must exist and be empty; scripts/bench-anchors creates one per run):
//   node anchors.js --url postgresql://... [--tasks 100000] [--latency-rate 100]
//        [--latency-seconds 10] [--idle-seconds 30] [--idle-settle-seconds 12]
// Prints one JSON object on stdout; progress and errors go to stderr. Exit status 1 on failure.
"use strict";

// Before graphile-worker is loaded: it reads this once. Without it every completed job is an
// info line on the console, which would be most of the drain's cost (graphile-worker's own
// perfTest sets it too).
process.env.NO_LOG_SUCCESS = "1";
// Environment the preset would otherwise pick up instead of the options below.
delete process.env.GRAPHILE_WORKER_SCHEMA;

const { performance } = require("node:perf_hooks");
const { setTimeout: sleep } = require("node:timers/promises");
const { Client } = require("pg");
const { run, runMigrations, Logger } = require("graphile-worker");
const graphileVersion = require("graphile-worker/package.json").version;

const APP = "anchors-graphile";
const SCHEMA = "graphile_worker";
const TASK = "noop";
const STALL_MS = 30000;

// The same reading as `sluice bench scheduler`'s meter (PostgreSQL 15+).
const METER_SQL = `SELECT (SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database
                            WHERE datname = current_database()) AS transactions,
  (SELECT coalesce(sum(autovacuum_count + autoanalyze_count), 0)::bigint
     FROM pg_stat_all_tables) AS autovacuums,
  (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
     AND backend_type = 'autovacuum worker') AS autovacuum_workers,
  pg_stat_force_next_flush()`;
const CONNECTIONS_SQL = `SELECT count(*)::int AS n FROM pg_stat_activity
  WHERE datname = current_database() AND application_name = $1`;
const OTHER_CLIENTS_SQL = `SELECT count(*)::int AS n FROM pg_stat_activity
  WHERE datname = current_database() AND backend_type = 'client backend'
    AND application_name NOT LIKE 'anchors-%'`;

function fail(message) {
  process.stderr.write(`bench/anchors/graphile/anchors.js: error: ${message}\n`);
  process.exit(1);
}
function note(message) {
  process.stderr.write(`bench/anchors/graphile/anchors.js: ${message}\n`);
}

function parseArgs(argv) {
  const opt = {
    url: "",
    tasks: 100000,
    latencyRate: 100,
    latencySeconds: 10,
    idleSeconds: 30,
    idleSettleSeconds: 12,
  };
  const numeric = {
    "--tasks": "tasks",
    "--latency-rate": "latencyRate",
    "--latency-seconds": "latencySeconds",
    "--idle-seconds": "idleSeconds",
    "--idle-settle-seconds": "idleSettleSeconds",
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--url") {
      opt.url = argv[++i] ?? fail("--url needs a value");
    } else if (a in numeric) {
      const v = Number(argv[++i]);
      if (!Number.isFinite(v) || v < 0) fail(`${a} needs a number >= 0`);
      opt[numeric[a]] = v;
    } else {
      fail(`unknown argument '${a}'`);
    }
  }
  if (!opt.url) fail("--url is required");
  if (!Number.isInteger(opt.tasks) || opt.tasks < 1) fail("--tasks must be a whole number >= 1");
  return opt;
}

function withAppName(url, app) {
  const u = new URL(url);
  u.searchParams.set("application_name", app);
  return u.toString();
}

// Nearest-rank quantile of sorted values, as bench_scheduler.cpp.
function quantile(sorted, q) {
  if (sorted.length === 0) return 0;
  const rank = Math.min(Math.max(Math.ceil(q * sorted.length), 1), sorted.length);
  return sorted[rank - 1];
}

// Only warnings and errors: graphile-worker's info lines are not wanted on the console.
const quietLogger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") {
    process.stderr.write(`graphile-worker ${level}: ${message}\n`);
  }
});

async function connect(url, app) {
  const c = new Client({ connectionString: withAppName(url, app) });
  await c.connect();
  return c;
}

async function main() {
  const opt = parseArgs(process.argv.slice(2));
  const workerUrl = withAppName(opt.url, APP);
  const workerSettings = {
    concurrentJobs: 24,
    maxPoolSize: 25,
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  };
  const preset = {
    worker: {
      connectionString: workerUrl,
      schema: SCHEMA,
      logger: quietLogger,
      ...workerSettings,
    },
  };

  const admin = await connect(opt.url, "anchors-admin");
  const server = (
    await admin.query(`SELECT current_setting('server_version') AS version,
      current_database() AS database, current_setting('max_connections')::int AS max_connections,
      current_setting('fsync') AS fsync, current_setting('synchronous_commit') AS synchronous_commit,
      current_setting('full_page_writes') AS full_page_writes`)
  ).rows[0];
  const out = {
    graphile_worker: graphileVersion,
    node: process.version,
    server,
    settings: { ...workerSettings, pollInterval: 2000, task: `${TASK} (async () => {})` },
  };

  // The schema first, so that neither the insert nor the drain includes the migrations.
  await runMigrations({ preset });

  // Task starts: counted always, timed by payload during the latency phase.
  let started = 0;
  let recording = false;
  const starts = new Map();
  const taskList = {
    [TASK]: async (payload) => {
      started++;
      if (recording && payload && payload.i !== undefined) starts.set(payload.i, performance.now());
    },
  };

  // ---- drain ----
  let t = performance.now();
  await admin.query(
    `SELECT count(*) FROM ${SCHEMA}.add_jobs(ARRAY(
       SELECT json_populate_record(NULL::${SCHEMA}.job_spec, json_build_object('identifier', $1::text))
       FROM generate_series(1, $2::int)))`,
    [TASK, opt.tasks],
  );
  const insertS = (performance.now() - t) / 1000;
  const queued = Number(
    (await admin.query(`SELECT count(*) FROM ${SCHEMA}._private_jobs`)).rows[0].count,
  );
  if (queued !== opt.tasks) fail(`drain: ${queued} jobs queued instead of ${opt.tasks}`);

  const sampler = await connect(opt.url, "anchors-sampler");
  let peak = 0;
  let samples = 0;
  let sampling = true;
  const sampleLoop = (async () => {
    while (sampling) {
      const n = (await sampler.query(CONNECTIONS_SQL, [APP])).rows[0].n;
      peak = Math.max(peak, n);
      samples++;
      await sleep(50);
    }
  })();

  const drainStart = performance.now();
  const runner = await run({ preset, noHandleSignals: true }, taskList);
  const startupS = (performance.now() - drainStart) / 1000;
  const failures = [];
  runner.events.on("job:error", ({ error }) => failures.push(String(error)));

  // Waits until the task has started `target` times and no job is left: graphile-worker deletes
  // a job when its completion is committed. Fails when nothing moved for STALL_MS.
  async function waitForDrain(target, pollMs) {
    let last = -1;
    let lastProgress = performance.now();
    while (started < target) {
      if (started !== last) {
        last = started;
        lastProgress = performance.now();
      } else if (performance.now() - lastProgress > STALL_MS) {
        fail(`no progress for ${STALL_MS / 1000} s (${started} of ${target} jobs started` +
             `${failures.length ? `; last error: ${failures[failures.length - 1]}` : ""})`);
      }
      if (failures.length) fail(`a job failed: ${failures[0]}`);
      await sleep(pollMs);
    }
    const deadline = performance.now() + STALL_MS;
    for (;;) {
      const left = (
        await admin.query(`SELECT EXISTS (SELECT 1 FROM ${SCHEMA}._private_jobs) AS left`)
      ).rows[0].left;
      if (!left) return;
      if (performance.now() > deadline) {
        fail(`all ${target} jobs started but the jobs table still holds some after ${STALL_MS / 1000} s`);
      }
      await sleep(pollMs);
    }
  }

  await waitForDrain(opt.tasks, 5);
  const drainS = (performance.now() - drainStart) / 1000;
  sampling = false;
  await sampleLoop;
  if (failures.length) fail(`a job failed: ${failures[0]}`);
  out.drain = {
    tasks: opt.tasks,
    insert_s: insertS,
    seconds: drainS,
    tasks_per_s: opt.tasks / drainS,
    startup_s: startupS,
    connections_peak: peak,
    connection_samples: samples,
  };
  note(`drain: ${opt.tasks} jobs in ${drainS.toFixed(3)} s = ${(opt.tasks / drainS).toFixed(0)} jobs/s, ` +
       `peak ${peak} connections`);
  let done = opt.tasks;

  // ---- latency ----
  out.latency = null;
  if (opt.latencySeconds > 0 && opt.latencyRate > 0) {
    const inserter = await connect(opt.url, "anchors-insert");
    const addJob = {
      name: "anchors_add_job",
      text: `SELECT ${SCHEMA}.add_job($1::text, json_build_object('i', $2::int))`,
    };
    // Warm-up: the connection and its prepared statement exist before the first measured job.
    await inserter.query({ ...addJob, values: [TASK, -1] });
    await waitForDrain(++done, 1);

    const count = Math.round(opt.latencyRate * opt.latencySeconds);
    const periodMs = 1000 / opt.latencyRate;
    const sent = [];
    recording = true;
    const phaseStart = performance.now();
    for (let i = 0; i < count; i++) {
      // Pacing: the arrival rate is what is being set, so the loop sleeps to its next slot.
      const wait = phaseStart + i * periodMs - performance.now();
      if (wait > 0) await sleep(wait);
      const called = performance.now();
      await inserter.query({ ...addJob, values: [TASK, i] });
      sent.push({ i, called, returned: performance.now() });
    }
    const sendingS = (performance.now() - phaseStart) / 1000;
    done += count;
    await waitForDrain(done, 1);
    recording = false;
    await inserter.end();

    const latency = [];
    const fromCall = [];
    const insert = [];
    let missing = 0;
    let beforeReturn = 0;
    for (const s of sent) {
      insert.push(s.returned - s.called);
      const at = starts.get(s.i);
      if (at === undefined) {
        missing++;
        continue;
      }
      if (at < s.returned) beforeReturn++;
      latency.push(Math.max(0, at - s.returned));
      fromCall.push(at - s.called);
    }
    const asc = (a, b) => a - b;
    latency.sort(asc);
    fromCall.sort(asc);
    insert.sort(asc);
    out.latency = {
      rate_per_s: opt.latencyRate,
      seconds: sendingS,
      tasks: count,
      p50_ms: quantile(latency, 0.5),
      p99_ms: quantile(latency, 0.99),
      max_ms: latency.length ? latency[latency.length - 1] : 0,
      mean_ms: latency.length ? latency.reduce((x, y) => x + y, 0) / latency.length : 0,
      started_before_insert_returned: beforeReturn,
      missing,
      from_call_p50_ms: quantile(fromCall, 0.5),
      from_call_p99_ms: quantile(fromCall, 0.99),
      insert_p50_ms: quantile(insert, 0.5),
      insert_p99_ms: quantile(insert, 0.99),
    };
    note(`latency: ${count} jobs at ${opt.latencyRate}/s, add_job() returned -> task started: ` +
         `p50 ${out.latency.p50_ms.toFixed(3)} ms, p99 ${out.latency.p99_ms.toFixed(3)} ms`);
  }

  // ---- idle ----
  out.idle = null;
  if (opt.idleSeconds > 0) {
    const meter = await connect(opt.url, "anchors-meter");
    const read = async () => {
      const r = (await meter.query(METER_SQL)).rows[0];
      return {
        transactions: Number(r.transactions),
        autovacuums: Number(r.autovacuums),
        workers: Number(r.autovacuum_workers),
      };
    };
    // As bench_scheduler.cpp: vacuumed now, the drain's dead rows cannot bring autovacuum into
    // the window; the whole database, so graphile-worker's tables and the catalogs.
    await meter.query("VACUUM (ANALYZE)");
    await sleep(opt.idleSettleSeconds * 1000);
    const vacuumWaitStart = performance.now();
    while ((await read()).workers > 0 && performance.now() - vacuumWaitStart < 120000) {
      await sleep(250);
    }
    const vacuumWaitS = (performance.now() - vacuumWaitStart) / 1000;
    const windowStart = performance.now();
    const first = await read();
    await sleep(opt.idleSeconds * 1000);
    const last = await read();
    const windowS = (performance.now() - windowStart) / 1000;
    const others = (await meter.query(OTHER_CLIENTS_SQL)).rows[0].n;
    const transactions = Math.max(0, last.transactions - first.transactions - 1);
    out.idle = {
      seconds: windowS,
      settle_seconds: opt.idleSettleSeconds,
      autovacuum_wait_s: vacuumWaitS,
      transactions,
      tx_per_s: transactions / windowS,
      autovacuum_runs: last.autovacuums - first.autovacuums,
      other_clients: others,
    };
    note(`idle: ${transactions} transactions in ${windowS.toFixed(1)} s = ` +
         `${out.idle.tx_per_s.toFixed(2)} tx/s`);
    await meter.end();
  }

  await runner.stop();
  await sampler.end();
  await admin.end();
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().catch((e) => fail(e && e.stack ? e.stack : String(e)));
