// The Node peers of bench/peers.py: graphile-worker and pg-boss, each as producer or worker.
//
//   node bench/peer_node.mjs setup   --system graphile|pgboss --db URL
//   node bench/peer_node.mjs enqueue --system S --db URL --mode single|bulk|trickle --count N
//                                    [--start I] [--batch B] [--gap-ms G] [--timings]
//   node bench/peer_node.mjs work    --system S --db URL --concurrency C --starts FILE
//
// Run with Node 22 (bench/.peers/node) and the packages of bench/.peers/js, which setup_peers.sh
// installs. `enqueue` prints `RESULT {json}` last; `work` prints `READY` once it is working and,
// on SIGTERM, stops gracefully, writes the handler start times ([[i, epoch seconds], ...]) to
// FILE and exits 0. The handler does nothing else: it records when it started.
import { createRequire } from "node:module";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";

const HERE = dirname(fileURLToPath(import.meta.url));
const JS = process.env.BENCH_PEERS_JS || join(HERE, ".peers", "js");
const requireFromPeers = createRequire(join(JS, "package.json"));

async function load(name) {
  return import(pathToFileURL(requireFromPeers.resolve(name)).href);
}

const now = () => (performance.timeOrigin + performance.now()) / 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const TASK = "noop";

const { positionals, values: opts } = parseArgs({
  allowPositionals: true,
  options: {
    system: { type: "string" },
    db: { type: "string" },
    mode: { type: "string", default: "single" },
    count: { type: "string", default: "0" },
    start: { type: "string", default: "0" },
    batch: { type: "string", default: "1000" },
    "gap-ms": { type: "string", default: "5" },
    timings: { type: "boolean", default: false },
    concurrency: { type: "string", default: "1" },
    starts: { type: "string" },
  },
});
const command = positionals[0];
const count = Number(opts.count);
const first = Number(opts.start);
const batch = Number(opts.batch);
const gap = Number(opts["gap-ms"]);
const concurrency = Number(opts.concurrency);

// A producer is a uniform interface over both systems: add one job, add a batch, close.
async function graphileProducer() {
  const gw = await load("graphile-worker");
  const utils = await gw.makeWorkerUtils({ connectionString: opts.db, logger: quietLogger(gw) });
  return {
    one: (i) => utils.addJob(TASK, { i }),
    many: (is) => utils.addJobs(is.map((i) => ({ identifier: TASK, payload: { i } }))),
    close: () => utils.release(),
  };
}

async function pgbossProducer() {
  const { PgBoss } = await load("pg-boss");
  const boss = new PgBoss({
    connectionString: opts.db,
    supervise: false,
    schedule: false,
    migrate: false,
  });
  boss.on("error", (error) => console.error("pg-boss error:", error.message));
  await boss.start();
  return {
    one: (i) => boss.send(TASK, { i }),
    many: (is) => boss.insert(TASK, is.map((i) => ({ data: { i } }))),
    close: () => boss.stop({ graceful: false, close: true }),
  };
}

function quietLogger(gw) {
  return new gw.Logger(() => (level, message) => {
    if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
  });
}

async function setup() {
  if (opts.system === "graphile") {
    const gw = await load("graphile-worker");
    await gw.runMigrations({ connectionString: opts.db, logger: quietLogger(gw) });
  } else {
    const { PgBoss } = await load("pg-boss");
    const boss = new PgBoss({ connectionString: opts.db, supervise: false, schedule: false });
    boss.on("error", (error) => console.error("pg-boss error:", error.message));
    await boss.start();
    // notify: workers are woken by LISTEN/NOTIFY rather than only by their polling interval.
    await boss.createQueue(TASK, { notify: true });
    await boss.stop({ graceful: false, close: true });
  }
  console.log("RESULT {}");
}

async function enqueue() {
  const producer = opts.system === "graphile" ? await graphileProducer() : await pgbossProducer();
  const calls = [];
  const timings = [];
  const end = first + count;
  const started = performance.now();
  if (opts.mode === "single") {
    for (let i = first; i < end; i++) {
      const t = performance.now();
      await producer.one(i);
      if (opts.timings) timings.push((performance.now() - t) / 1000);
    }
  } else if (opts.mode === "bulk") {
    for (let i = first; i < end; i += batch) {
      const ids = [];
      for (let j = i; j < Math.min(i + batch, end); j++) ids.push(j);
      await producer.many(ids);
    }
  } else {
    // trickle: call k starts at t0 + k * gap (or at once when the previous one ran late)
    const t0 = performance.now();
    for (let k = 0; k < count; k++) {
      const delay = t0 + k * gap - performance.now();
      if (delay > 0) await sleep(delay);
      calls.push([first + k, now()]);
      await producer.one(first + k);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  await producer.close();
  console.log("RESULT " + JSON.stringify({ seconds, count, calls, timings }));
}

async function work() {
  const starts = [];
  const record = (i) => starts.push([i, now()]);
  let stop;
  if (opts.system === "graphile") {
    const gw = await load("graphile-worker");
    const runner = await gw.run({
      connectionString: opts.db,
      concurrency,
      noHandleSignals: true,
      logger: quietLogger(gw),
      taskList: { [TASK]: async (payload) => record(payload.i) },
      preset: {
        worker: {
          concurrentJobs: concurrency,
          maxPoolSize: Math.max(10, concurrency + 2),
          localQueue: { size: 500 },
          completeJobBatchDelay: 0,
        },
      },
    });
    stop = () => runner.stop();
  } else {
    const { PgBoss } = await load("pg-boss");
    const boss = new PgBoss({
      connectionString: opts.db,
      useListenNotify: true,
      schedule: false,
      max: concurrency + 4,
    });
    boss.on("error", (error) => console.error("pg-boss error:", error.message));
    await boss.start();
    // pg-boss waits out its polling interval after every fetch unless the fetch came back full
    // (burst mode), so one job per fetch drains at a few jobs per second. Its way to throughput is
    // batching: one poller fetches up to `concurrency` jobs and the handler runs them at once, so
    // at most `concurrency` jobs are in flight, as with the other systems.
    await boss.work(
      TASK,
      {
        localConcurrency: 1,
        batchSize: concurrency,
        burstWhenBatchFull: true,
        pollingIntervalSeconds: 0.5,
      },
      async (jobs) => {
        await Promise.all(jobs.map(async (job) => record(job.data.i)));
      },
    );
    stop = () => boss.stop({ graceful: true, close: true, timeout: 10000 });
  }
  let stopping = false;
  const finish = async () => {
    if (stopping) return;
    stopping = true;
    try {
      await Promise.race([stop(), sleep(15000)]);
    } finally {
      writeFileSync(opts.starts, JSON.stringify(starts));
      process.exit(0);
    }
  };
  process.on("SIGTERM", finish);
  process.on("SIGINT", finish);
  console.log("READY");
}

const commands = { setup, enqueue, work };
if (!commands[command] || !["graphile", "pgboss"].includes(opts.system)) {
  console.error("usage: peer_node.mjs setup|enqueue|work --system graphile|pgboss --db URL ...");
  process.exit(2);
}
commands[command]().catch((error) => {
  console.error(`${opts.system} ${command} failed: ${error.stack || error}`);
  process.exit(1);
});
