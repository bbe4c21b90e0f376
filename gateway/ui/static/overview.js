// The overview: counts by status and health (GET /api/ingest/stats), the running jobs
// (GET /api/ingest/running), throughput and failures over time, and the workers seen, all
// refreshed every 2 s without reloading the page.
//
// The API keeps no history, so throughput is computed here: the change in the SUCCEEDED and
// FAILED counts between two polls, kept for the last 5 minutes this page has been open.

import {
  api,
  cell,
  duration,
  h,
  jobLink,
  plural,
  poll,
  progressBar,
  source,
  startPage,
  syncRows,
} from "./common.js";

const POLL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;
const BIN_MS = 10 * 1000;
const WORKER_MEMORY_MS = 5 * 60 * 1000;
const SVG = "http://www.w3.org/2000/svg";

const samples = []; // {t, done, failed, span}: what finished between two polls
let previous = null; // {t, succeeded, failed} at the last poll
const workers = new Map(); // locked_by -> {lastSeen, jobs}

function renderStats(answer) {
  const counts = answer.stats.by_status;
  for (const link of document.querySelectorAll("#counts [data-status]")) {
    const status = link.dataset.status;
    const value = status === "total" ? answer.stats.total : counts[status];
    link.querySelector(".count-value").textContent = String(value);
  }
  const summary = answer.summary;
  const badge = document.getElementById("health");
  badge.textContent = answer.health;
  badge.className = `badge health-${answer.health}`;

  const reasons = [];
  if (summary.stale_running > 0) {
    const n = summary.stale_running;
    reasons.push(
      `${n} running ${plural(n, "job")} with an overdue heartbeat: its worker is gone; the ` +
        "queue service releases it for a retry.",
    );
  } else if (answer.health === "unhealthy") {
    reasons.push(
      `The oldest runnable job has waited ${duration(summary.oldest_runnable_age_seconds)}, ` +
        "longer than GATEWAY_HEALTH_MAX_WAIT_SECONDS: no worker, or too few.",
    );
  }
  if (summary.has_dead_letter) {
    const n = summary.failed;
    const verb = n === 1 ? "needs" : "need";
    reasons.push(`${n} ${plural(n, "job")} in the dead letter (FAILED) ${verb} an operator.`);
  }
  if (!reasons.length) reasons.push("Work flows and the dead letter is empty.");
  document.getElementById("health-reasons").replaceChildren(...reasons.map((r) => h("li", {}, r)));

  document.getElementById("pending").textContent = `${summary.pending} (QUEUED + RETRY)`;
  document.getElementById("oldest-waiting").textContent =
    summary.oldest_runnable_age_seconds > 0
      ? duration(summary.oldest_runnable_age_seconds)
      : "none runnable";
  document.getElementById("dead-letter-count").textContent =
    `${summary.failed} FAILED ${plural(summary.failed, "job")}`;
}

function record(counts, t) {
  if (previous) {
    samples.push({
      t,
      span: t - previous.t,
      // A retried FAILED job lowers the count: that is not negative throughput.
      done: Math.max(0, counts.SUCCEEDED - previous.succeeded),
      failed: Math.max(0, counts.FAILED - previous.failed),
    });
  }
  previous = { t, succeeded: counts.SUCCEEDED, failed: counts.FAILED };
  while (samples.length && samples[0].t < t - WINDOW_MS) samples.shift();
}

function renderThroughput(now) {
  const summary = document.getElementById("throughput-summary");
  const chart = document.getElementById("sparkline");
  if (!samples.length) {
    summary.textContent = "Collecting: the first rate appears after the second poll.";
    return;
  }
  const span = samples.reduce((sum, s) => sum + s.span, 0);
  const done = samples.reduce((sum, s) => sum + s.done, 0);
  const failed = samples.reduce((sum, s) => sum + s.failed, 0);
  const minutes = span / 60000;
  const finished = done + failed;
  const failureRate = finished ? `${((100 * failed) / finished).toFixed(1)}%` : "–";
  summary.textContent =
    `Last ${duration(span / 1000)}: ${done} completed (${(done / minutes).toFixed(1)} per minute), ` +
    `${failed} failed; failure rate ${failureRate}.`;

  // Per-minute rates in 10-second bins, oldest on the left.
  const bins = Math.ceil(WINDOW_MS / BIN_MS);
  const doneBins = new Array(bins).fill(0);
  const failedBins = new Array(bins).fill(0);
  for (const s of samples) {
    const index = bins - 1 - Math.floor((now - s.t) / BIN_MS);
    if (index < 0) continue;
    doneBins[index] += (s.done * 60000) / BIN_MS;
    failedBins[index] += (s.failed * 60000) / BIN_MS;
  }
  const width = 300;
  const height = 60;
  const top = Math.max(1, ...doneBins, ...failedBins);
  const line = (values, name) => {
    const points = values
      .map((v, i) => `${((i * width) / (bins - 1)).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`)
      .join(" ");
    const polyline = document.createElementNS(SVG, "polyline");
    polyline.setAttribute("points", points);
    polyline.setAttribute("class", name);
    return polyline;
  };
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `Completed and failed jobs per minute. ${summary.textContent}`);
  svg.append(line(doneBins, "done"), line(failedBins, "failed"));
  chart.replaceChildren(svg, h("span", { class: "scale" }, `max ${top.toFixed(0)}/min`));
}

function renderWorkers(running, now) {
  const holding = new Map();
  for (const { job } of running) {
    if (job.locked_by) holding.set(job.locked_by, (holding.get(job.locked_by) || 0) + 1);
  }
  for (const [name, jobs] of holding) workers.set(name, { lastSeen: now, jobs });
  for (const [name, seen] of workers) {
    if (!holding.has(name)) seen.jobs = 0;
    if (seen.lastSeen < now - WORKER_MEMORY_MS) workers.delete(name);
  }
  const list = document.getElementById("workers");
  if (!workers.size) {
    list.replaceChildren(h("li", { class: "empty" }, "None seen yet."));
    return;
  }
  const names = [...workers.keys()].sort();
  list.replaceChildren(
    ...names.map((name) => {
      const seen = workers.get(name);
      const state = seen.jobs
        ? `${seen.jobs} running ${plural(seen.jobs, "job")}`
        : `idle or gone, last seen ${duration((now - seen.lastSeen) / 1000)} ago`;
      return h(
        "li",
        { class: seen.jobs ? "busy" : "idle" },
        h("code", {}, name),
        " ",
        h("span", { class: "muted" }, state),
      );
    }),
  );
}

function fillRunning(item, row) {
  const { job } = item;
  if (!row.cells.length) {
    row.append(
      cell("Job", jobLink(job.id), h("span", { class: "sub" })),
      cell("Worker"),
      cell("Stage"),
      cell("Progress", progressBar(0, `Progress of job ${job.id.slice(0, 8)}`)),
      cell("Running for"),
      cell("Last heartbeat"),
    );
  }
  const [jobCell, worker, stage, progress, runningFor, heartbeat] = row.cells;
  jobCell.querySelector(".sub").textContent = source(job.input);
  worker.textContent = job.locked_by || "–";
  stage.dataset.stage = job.stage || "";
  stage.replaceChildren(
    h(
      "span",
      {},
      job.stage || "–",
      job.cancel_requested ? [" ", h("span", { class: "badge status-cancelled" }, "cancelling")] : null,
    ),
  );
  const value = Math.max(0, Math.min(1, job.progress || 0));
  progress.querySelector("progress").value = value;
  progress.querySelector(".percent").textContent = `${Math.round(value * 100)}%`;
  runningFor.textContent = duration(item.running_seconds);
  heartbeat.textContent = `${duration(item.heartbeat_age_seconds)} ago`;
}

function renderRunning(running) {
  const table = document.getElementById("running");
  syncRows(table.tBodies[0], running, (item) => item.job.id, fillRunning);
  document.getElementById("running-empty").hidden = running.length > 0;
  table.hidden = running.length === 0;
  document.getElementById("running-count").textContent = `(${running.length})`;
}

async function refresh() {
  const [stats, running] = await Promise.all([
    api("/api/ingest/stats"),
    api("/api/ingest/running"),
  ]);
  const now = Date.now();
  renderStats(stats);
  record(stats.stats.by_status, now);
  renderThroughput(now);
  renderRunning(running.jobs);
  renderWorkers(running.jobs, now);
}

startPage(() => poll(refresh, POLL_MS, document.getElementById("live")));
