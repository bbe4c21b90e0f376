// The job list (/ui/jobs) and the dead letter (/ui/dead-letter: the same list, FAILED only):
// filters, pages, and retry or cancel of the selected jobs after a confirmation.
//
// GET /api/ingest/jobs filters by status and queue and pages with `cursor`; the text filter on
// the source (S3 key or path) has no API behind it, so it filters the page already fetched and
// says so. The filters (never the key) are kept in the URL, so a filtered list can be linked.

import {
  CANCELLABLE,
  RETRYABLE,
  act,
  ago,
  api,
  cell,
  confirmAction,
  describe,
  clock,
  h,
  jobLink,
  plural,
  progressBar,
  shortId,
  source,
  startPage,
  statusBadge,
  summarise,
  syncRows,
  toast,
} from "./common.js";

const form = document.getElementById("filters");
const fixedStatus = form.dataset.fixedStatus || "";
const field = (id) => document.getElementById(id);
const statusSelect = field("filter-status");
const queueInput = field("filter-queue");
const textInput = field("filter-text");
const limitSelect = field("filter-limit");
const tbody = field("jobs").tBodies[0];
const selectAll = field("select-all");
const retryButton = field("retry-selected");
const cancelButton = field("cancel-selected");

const state = {
  cursors: [""], // cursors[n] fetches page n; "" is the first page
  page: 0,
  next: null,
  jobs: [],
  selected: new Set(),
};

function readUrl() {
  const params = new URLSearchParams(location.search);
  if (statusSelect) statusSelect.value = params.get("status") || "";
  queueInput.value = params.get("queue") || "";
  textInput.value = params.get("q") || "";
  if (params.get("limit")) limitSelect.value = params.get("limit");
}

function writeUrl() {
  const params = new URLSearchParams();
  if (statusSelect && statusSelect.value) params.set("status", statusSelect.value);
  if (queueInput.value.trim()) params.set("queue", queueInput.value.trim());
  if (textInput.value.trim()) params.set("q", textInput.value.trim());
  if (limitSelect.value !== "50") params.set("limit", limitSelect.value);
  const query = params.toString();
  history.replaceState(null, "", query ? `?${query}` : location.pathname);
}

async function load() {
  const params = new URLSearchParams({ limit: limitSelect.value });
  const status = fixedStatus || (statusSelect && statusSelect.value);
  if (status) params.set("status", status);
  if (queueInput.value.trim()) params.set("queue", queueInput.value.trim());
  const cursor = state.cursors[state.page];
  if (cursor) params.set("cursor", cursor);
  const live = field("live");
  try {
    const answer = await api(`/api/ingest/jobs?${params}`);
    state.jobs = answer.jobs;
    state.next = answer.next_cursor;
    live.textContent = `Updated ${clock(new Date())}`;
    live.classList.remove("stale");
  } catch (error) {
    live.textContent = `Could not load the jobs: ${describe(error)}`;
    live.classList.add("stale");
    return;
  }
  const onPage = new Set(state.jobs.map((job) => job.id));
  for (const id of state.selected) if (!onPage.has(id)) state.selected.delete(id);
  render();
}

function shown() {
  const text = textInput.value.trim().toLowerCase();
  if (!text) return state.jobs;
  return state.jobs.filter((job) => source(job.input).toLowerCase().includes(text));
}

function fillRow(job, row) {
  const checkbox = h("input", {
    type: "checkbox",
    class: "select",
    "aria-label": `Select job ${shortId(job.id)}`,
    onchange: (event) => {
      if (event.target.checked) state.selected.add(job.id);
      else state.selected.delete(job.id);
      renderSelection();
    },
  });
  checkbox.checked = state.selected.has(job.id);
  const stage =
    job.status === "RUNNING"
      ? [h("span", {}, job.stage || "–"), progressBar(job.progress, `Progress of job ${shortId(job.id)}`)]
      : [job.stage || "–"];
  const error = job.last_error
    ? h("span", { class: "error-text", title: job.last_error }, [
        job.error_code ? h("code", {}, job.error_code) : null,
        " ",
        job.last_error.length > 140 ? `${job.last_error.slice(0, 140)}…` : job.last_error,
      ])
    : h("span", { class: "muted" }, "–");
  row.dataset.status = job.status;
  row.replaceChildren(
    cell("Select", checkbox),
    cell("Job", jobLink(job.id)),
    cell("Status", statusBadge(job.status)),
    cell("Queue", job.queue),
    cell("Source", h("span", { class: "source" }, source(job.input))),
    cell("Attempts", `${job.attempts}/${job.max_attempts}`),
    cell("Stage", ...stage),
    cell("Updated", ago(job.updated_at)),
    cell("Last error", error),
  );
}

function render() {
  const jobs = shown();
  syncRows(tbody, jobs, (job) => job.id, fillRow);
  field("jobs-empty").hidden = jobs.length > 0;
  const note = field("filtered-note");
  const text = textInput.value.trim();
  note.hidden = !text;
  note.textContent = text
    ? `Showing ${jobs.length} of the ${state.jobs.length} jobs on this page whose source ` +
      `contains “${text}” (the text filter applies to this page only).`
    : "";
  field("page-number").textContent = `Page ${state.page + 1}`;
  field("first-page").disabled = state.page === 0;
  field("previous-page").disabled = state.page === 0;
  field("next-page").disabled = !state.next;
  renderSelection();
}

function selectedJobs() {
  return state.jobs.filter((job) => state.selected.has(job.id));
}

function renderSelection() {
  const selected = selectedJobs();
  field("selection").textContent = `${selected.length} selected`;
  const retryable = selected.filter((job) => RETRYABLE.has(job.status)).length;
  retryButton.disabled = retryable === 0;
  retryButton.textContent = retryable ? `Retry ${retryable} selected` : "Retry selected";
  if (cancelButton) {
    const cancellable = selected.filter((job) => CANCELLABLE.has(job.status)).length;
    cancelButton.disabled = cancellable === 0;
    cancelButton.textContent = cancellable ? `Cancel ${cancellable} selected` : "Cancel selected";
  }
  const visible = shown();
  selectAll.checked = visible.length > 0 && visible.every((job) => state.selected.has(job.id));
  selectAll.indeterminate = !selectAll.checked && visible.some((job) => state.selected.has(job.id));
}

async function bulk(action) {
  const selected = selectedJobs();
  const allowed = action === "retry" ? RETRYABLE : CANCELLABLE;
  const targets = selected.filter((job) => allowed.has(job.status));
  const skipped = selected.length - targets.length;
  const n = targets.length;
  const verb = action === "retry" ? "Retry" : "Cancel";
  const text =
    action === "retry"
      ? "They go back to QUEUED with a fresh set of attempts; their error history stays."
      : "QUEUED and RETRY jobs are cancelled at once; a RUNNING job stops at its worker's next heartbeat.";
  const skippedText = skipped
    ? ` ${skipped} other selected ${plural(skipped, "job")} ${skipped === 1 ? "is" : "are"} ` +
      `not ${[...allowed].join(", ")} and ${skipped === 1 ? "is" : "are"} left alone.`
    : "";
  const ok = await confirmAction({
    title: `${verb} ${n} ${plural(n, "job")}?`,
    text: text + skippedText,
    items: targets.map((job) => `${shortId(job.id)} · ${job.status} · ${source(job.input)}`),
    confirmLabel: `${verb} ${n} ${plural(n, "job")}`,
    danger: action === "cancel",
  });
  if (!ok) {
    toast("Nothing changed.");
    return;
  }
  const results = await act(targets, action);
  const { message, kind } = summarise(
    results,
    action === "retry" ? "queued for retry" : "cancelled or being cancelled",
  );
  toast(message, kind);
  state.selected.clear();
  await load();
}

function start() {
  readUrl();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    state.cursors = [""];
    state.page = 0;
    state.selected.clear();
    writeUrl();
    load();
  });
  textInput.addEventListener("input", () => {
    writeUrl();
    render();
  });
  field("refresh").addEventListener("click", load);
  field("next-page").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors = state.cursors.slice(0, state.page + 1);
    state.cursors.push(state.next);
    state.page += 1;
    load();
  });
  field("previous-page").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    load();
  });
  field("first-page").addEventListener("click", () => {
    state.page = 0;
    load();
  });
  selectAll.addEventListener("change", () => {
    for (const job of shown()) {
      if (selectAll.checked) state.selected.add(job.id);
      else state.selected.delete(job.id);
    }
    for (const box of tbody.querySelectorAll("input.select")) box.checked = selectAll.checked;
    renderSelection();
  });
  retryButton.addEventListener("click", () => bulk("retry"));
  if (cancelButton) cancelButton.addEventListener("click", () => bulk("cancel"));
  load();
}

startPage(start);
