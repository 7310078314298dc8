// bench/graphile.cjs - graphile-worker on the same PostgreSQL, for the
// side-by-side rows of scripts/bench (BENCH_PEERS=1).
//
// usage: node bench/graphile.cjs MODULES_DIR JOBS LABEL={SETTINGS_JSON}...
//
// SETTINGS_JSON: run()'s options (concurrency, maxPoolSize), with the
// preset-only ones (localQueue, completeJobBatchDelay) under "worker".
//
// MODULES_DIR holds node_modules with graphile-worker (scripts/bench
// installs it into a cache outside the tree). PG* environment: the
// database. For each setting: JOBS no-op jobs are pre-loaded with
// graphile_worker.add_jobs (one statement) and vacuumed, then the worker
// starts; the figure is JOBS divided by the time from starting the worker
// to the last completion (the moment the last job's row is gone: graphile
// deletes a job when it completes). Prints one "LABEL jobs/s seconds" line
// per setting; never fails on a figure.
"use strict";
const path = require("path");
const [modDir, jobsArg, ...settings] = process.argv.slice(2);
const need = (m) => require(path.join(modDir, "node_modules", m));
const { run, runMigrations, Logger } = need("graphile-worker");
const { Pool } = need("pg");

const quiet = new Logger(() => () => {});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// A pool whose idle clients' errors are ignored (graphile asks for both).
function mkPool(max) {
  const p = new Pool({ max });
  p.on("error", () => {});
  p.on("connect", (c) => c.on("error", () => {}));
  return p;
}

async function preload(pool, n) {
  await pool.query("DELETE FROM graphile_worker._private_jobs");
  await pool.query(
    "SELECT graphile_worker.add_jobs(array(SELECT ROW('noop', '{}'::json," +
      " NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec" +
      " FROM generate_series(1, $1::int)))",
    [n],
  );
  await pool.query("VACUUM ANALYZE graphile_worker._private_jobs");
  await pool.query("VACUUM ANALYZE graphile_worker._private_tasks");
}

async function one(label, opts, n) {
  const { worker, ...top } = opts;
  const pool = mkPool((top.maxPoolSize || 10) + 2);
  await preload(pool, n);
  const probe = mkPool(1);
  let done = 0;
  let finished;
  const allDone = new Promise((r) => (finished = r));
  const t0 = process.hrtime.bigint();
  const runner = await run({
    pgPool: pool,
    logger: quiet,
    noHandleSignals: true,
    taskList: { noop: async () => {} },
    ...top,
    preset: { worker: worker || {} },
  });
  runner.events.on("job:complete", () => {
    if (++done === n) finished();
  });
  await allDone;
  // Completions may be batched after the handler returns: the last one is
  // when the table is empty.
  for (;;) {
    const r = await probe.query(
      "SELECT count(*)::int AS n FROM graphile_worker._private_jobs",
    );
    if (r.rows[0].n === 0) break;
    await sleep(1);
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await runner.stop();
  await probe.end();
  await pool.end();
  console.log(`${label} ${(n / secs).toFixed(0)} ${secs.toFixed(3)}`);
}

async function main() {
  const n = parseInt(jobsArg, 10);
  const setup = mkPool(1);
  await runMigrations({ pgPool: setup, logger: quiet });
  await setup.end();
  for (const s of settings) {
    const eq = s.indexOf("={");
    await one(s.slice(0, eq), JSON.parse(s.slice(eq + 1)), n);
  }
}

main().catch((e) => {
  console.error("graphile bench:", e.message);
  process.exit(1);
});
