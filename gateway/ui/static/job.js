// One job's page (/ui/jobs/<job id>): its state, refreshed every 2 s; the stage timeline from the
// timings the worker writes into the output (`output.stage_timings`: seconds per stage); the
// error history; retry or cancel after a confirmation; and the advert it produced
// (GET /api/ingest/adverts/<output.ad_id>).

import {
  CANCELLABLE,
  RETRYABLE,
  act,
  api,
  cell,
  confirmAction,
  describe,
  duration,
  h,
  json,
  poll,
  shortId,
  source,
  startPage,
  summarise,
  toast,
  when,
} from "./common.js";

// The nine-stage pipeline's order. The output keeps the timings as a JSON object, whose key
// order is not kept, so a timeline can only be drawn in order for stages named here.
const PIPELINE = [
  "fetch_video",
  "probe_media",
  "extract_audio",
  "transcription",
  "keyframes",
  "llm_analysis",
  "chunking",
  "embeddings",
  "persist",
];

const jobId = document.getElementById("job-head").dataset.jobId;
const field = (id) => document.getElementById(id);
let current = null;
let shownJson = "";
let advertFor = null;

function fact(label, ...value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, ...value));
}

function renderFacts(job) {
  const facts = [
    fact("Stage", job.stage || "–"),
    fact("Attempts", `${job.attempts} of ${job.max_attempts}`),
    fact("Queue", job.queue),
    fact("Priority", String(job.priority)),
    fact("Source", source(job.input)),
    fact("Worker", job.locked_by ? h("code", {}, job.locked_by) : "–"),
    fact("Created", when(job.created_at)),
    fact("Started", when(job.processing_started_at)),
    fact("Completed", when(job.completed_at)),
    fact("Last heartbeat", when(job.last_heartbeat_at)),
  ];
  if (job.status === "RETRY" || job.status === "QUEUED") facts.push(fact("Runs after", when(job.run_after)));
  if (job.processing_started_at && job.processing_completed_at) {
    const seconds =
      (new Date(job.processing_completed_at) - new Date(job.processing_started_at)) / 1000;
    facts.push(fact("Processing time", duration(seconds)));
  }
  if (job.cancel_requested) facts.push(fact("Cancel", "requested: stops at the next heartbeat"));
  if (job.last_error) {
    facts.push(
      fact("Last error", job.error_code ? h("code", {}, job.error_code) : "", " ", job.last_error),
    );
  }
  facts.push(fact("Idempotency key", h("code", {}, job.idempotency_key || "–")));
  field("facts").replaceChildren(...facts);
}

function renderTimeline(job) {
  const list = field("timeline");
  const note = field("timeline-note");
  const timings = job.output && job.output.stage_timings;
  if (!timings || typeof timings !== "object" || !Object.keys(timings).length) {
    list.replaceChildren();
    note.textContent =
      job.status === "RUNNING"
        ? `Running: now in stage ${job.stage || "–"}. Each stage's duration is recorded when the job completes.`
        : "No stage timings: the worker records them in the output of a job that succeeds.";
    return;
  }
  const names = Object.keys(timings);
  const inOrder = names.every((name) => PIPELINE.includes(name));
  const ordered = inOrder
    ? PIPELINE.filter((name) => name in timings)
    : names.sort((a, b) => a.localeCompare(b));
  const total = ordered.reduce((sum, name) => sum + (Number(timings[name]) || 0), 0);
  let offset = 0;
  list.replaceChildren(
    ...ordered.map((name) => {
      const seconds = Number(timings[name]) || 0;
      const bar = h("span", { class: "bar" });
      // CSSOM, not a style attribute: the Content-Security-Policy allows no inline styles.
      bar.style.width = `${total ? Math.max(0.5, (100 * seconds) / total) : 0}%`;
      if (inOrder) bar.style.marginLeft = `${total ? (100 * offset) / total : 0}%`;
      offset += seconds;
      return h(
        "li",
        { dataset: { stage: name } },
        h("span", { class: "stage-name" }, name),
        h("span", { class: "track" }, bar),
        h("span", { class: "stage-time" }, duration(seconds)),
      );
    }),
  );
  note.textContent = inOrder
    ? `${ordered.length} stages, ${duration(total)} in all, in the order they ran.`
    : `${ordered.length} stages, ${duration(total)} in all. These are not the nine-stage ` +
      "pipeline's names, and the output keeps no order, so they are listed by name.";
}

function renderErrors(job) {
  const tbody = field("errors").tBodies[0];
  tbody.replaceChildren(
    ...job.errors.map((error) =>
      h(
        "tr",
        {},
        cell("Attempt", String(error.attempt)),
        cell("Time", when(error.time)),
        cell("Code", h("code", {}, error.code || "–")),
        cell("Message", h("span", { class: "error-text" }, error.message || "")),
      ),
    ),
  );
  field("errors").hidden = job.errors.length === 0;
  field("errors-empty").hidden = job.errors.length > 0;
  // The history keeps the last 20 failed attempts; errors_total counts them all.
  const older = (job.errors_total || 0) - job.errors.length;
  field("errors-older").hidden = older <= 0;
  field("errors-older").textContent =
    older > 0 ? `The last ${job.errors.length} of ${job.errors_total} failed attempts.` : "";
}

// Who enqueued, cancelled, retried or released the job (the queue service's audit trail),
// oldest first: the operator the gateway named, else the credential's name and role.
function renderAudit(job) {
  const entries = job.audit_trail || [];
  field("audit").tBodies[0].replaceChildren(
    ...entries.map((entry) =>
      h(
        "tr",
        {},
        cell("Time", when(entry.at)),
        cell("Action", entry.action),
        cell("By", entry.operator || `${entry.credential} (${entry.role})`),
        cell("Outcome", h("code", {}, entry.outcome)),
      ),
    ),
  );
  field("audit").hidden = entries.length === 0;
  field("audit-empty").hidden = entries.length > 0;
}

function render(job) {
  document.title = `Job ${shortId(job.id)} (${job.status}) · Ingestion queue`;
  const badge = field("status");
  badge.textContent = job.status;
  badge.className = `badge status-${job.status.toLowerCase()}`;
  field("retry").hidden = !RETRYABLE.has(job.status);
  field("cancel").hidden = !CANCELLABLE.has(job.status) || job.cancel_requested;
  const running = job.status === "RUNNING";
  field("now").hidden = !running;
  if (running) {
    field("now-stage").textContent = job.stage || "–";
    field("now-progress").value = Math.max(0, Math.min(1, job.progress || 0));
    field("now-percent").textContent = `${Math.round((job.progress || 0) * 100)}%`;
  }
  renderFacts(job);
  renderTimeline(job);
  renderErrors(job);
  renderAudit(job);
  field("input").textContent = json(job.input);
  field("output").textContent = json(job.output);
}

// -- The advert -------------------------------------------------------------------------------

// The facts in a reader's order; keys not named here follow, alphabetically. (A JSON object from
// the API keeps no key order.)
const MEDIA_ORDER = [
  "duration_seconds",
  "width",
  "height",
  "fps",
  "video_codec",
  "pixel_format",
  "has_audio",
  "audio_codec",
  "audio_sample_rate",
  "audio_channels",
  "format_name",
  "bit_rate",
  "size_bytes",
];
const ANALYSIS_ORDER = ["brand", "product", "category", "tone", "claims", "call_to_action"];

function label(key) {
  const text = key.replace(/_/g, " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function value(key, v) {
  if (v === null || v === undefined || v === "") return h("span", { class: "muted" }, "–");
  if (Array.isArray(v)) {
    return v.every((item) => typeof item !== "object")
      ? h("ul", { class: "plain" }, ...v.map((item) => h("li", {}, String(item))))
      : h("pre", { class: "json" }, json(v));
  }
  if (typeof v === "object") return h("pre", { class: "json" }, json(v));
  if (key === "duration_seconds") return duration(v);
  if (key === "size_bytes") return `${(v / 1e6).toFixed(2)} MB`;
  if (key === "bit_rate") return `${Math.round(v / 1000)} kbit/s`;
  return String(v);
}

// A <dl> of an object's keys and values; `raw` keeps keys as they are (stage names).
function definitions(object, order = [], raw = false) {
  const keys = Object.keys(object || {});
  if (!keys.length) return h("p", { class: "muted" }, "None.");
  const rank = (key) => (order.includes(key) ? order.indexOf(key) : order.length);
  keys.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  const name = (k) => (raw ? h("code", {}, k) : label(k));
  return h("dl", { class: "facts" }, ...keys.map((k) => fact(name(k), value(k, object[k]))));
}

function advertView(advert) {
  const provenance = advert.provenance || {};
  const skipped = provenance.skipped || {};
  const kinds = {};
  for (const chunk of advert.chunks) kinds[chunk.kind] = (kinds[chunk.kind] || 0) + 1;
  const embedded = advert.chunks.find((chunk) => chunk.embedding_dimension > 0);
  const transcript = advert.transcript
    ? h("p", { class: "transcript" }, advert.transcript)
    : h(
        "p",
        { class: "muted" },
        skipped.transcription ? `None: transcription skipped (${skipped.transcription}).` : "None.",
      );
  const analysis = advert.analysis && Object.keys(advert.analysis).length
    ? definitions(advert.analysis, ANALYSIS_ORDER)
    : h(
        "p",
        { class: "muted" },
        skipped.llm_analysis ? `None: analysis skipped (${skipped.llm_analysis}).` : "None.",
      );
  const keyframes = advert.keyframes.length
    ? h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "compact", id: "keyframes" },
          h("thead", {}, h("tr", {}, ...["Time", "Size", "Stored at"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            ...advert.keyframes.map((frame) =>
              h(
                "tr",
                {},
                cell("Time", duration(frame.timestamp_seconds)),
                cell("Size", `${frame.width}×${frame.height}`),
                cell("Stored at", frame.uri ? h("code", {}, frame.uri) : h("span", { class: "muted" }, "not kept")),
              ),
            ),
          ),
        ),
      )
    : h("p", { class: "muted" }, "None.");
  const chunkSummary = advert.chunks.length
    ? `${advert.chunks.length} chunks (${Object.entries(kinds)
        .map(([kind, n]) => `${kind} ${n}`)
        .join(", ")}); ` +
      (embedded
        ? `embedded with ${embedded.embedding_model || "?"} (${embedded.embedding_dimension} dimensions).`
        : "not embedded.")
    : "No chunks.";
  return [
    h(
      "dl",
      { class: "facts" },
      fact("Advert", h("code", {}, advert.id)),
      fact("Source", advert.source_key),
      fact("Stored", when(advert.updated_at)),
    ),
    h("h3", {}, "Media"),
    h("div", { id: "advert-media" }, definitions(advert.media, MEDIA_ORDER)),
    h("h3", {}, `Keyframes (${advert.keyframes.length})`),
    keyframes,
    h("h3", {}, "Transcript"),
    h("div", { id: "advert-transcript" }, transcript),
    h("h3", {}, "Analysis"),
    h("div", { id: "advert-analysis" }, analysis),
    h("h3", {}, "Chunks"),
    h(
      "details",
      {},
      h("summary", {}, chunkSummary),
      h(
        "ol",
        { class: "chunks" },
        ...advert.chunks.map((chunk) => h("li", {}, h("span", { class: "badge" }, chunk.kind), " ", chunk.text)),
      ),
    ),
    h("h3", {}, "Provenance"),
    h(
      "div",
      { id: "advert-provenance", class: "columns" },
      ...[
        ["Providers", provenance.providers],
        ["Skipped", provenance.skipped],
        ["Notes", provenance.notes],
      ].map(([title, entries]) => h("div", {}, h("h4", {}, title), definitions(entries, [], true))),
    ),
  ];
}

async function loadAdvert(adId) {
  const box = field("advert");
  try {
    const { advert } = await api(`/api/ingest/adverts/${encodeURIComponent(adId)}`);
    box.replaceChildren(...advertView(advert));
  } catch (error) {
    const text =
      error.status === 404
        ? `No advert is stored under ${adId}.`
        : error.status === 400
          ? `The output's ad_id (${adId}) is not an advert id: this pipeline stores none.`
          : `Could not load the advert: ${describe(error)}`;
    box.replaceChildren(h("p", { class: "muted" }, text));
  }
}

// -- Actions ----------------------------------------------------------------------------------

async function action(kind) {
  const job = current;
  const retry = kind === "retry";
  const ok = await confirmAction({
    title: `${retry ? "Retry" : "Cancel"} job ${shortId(job.id)}?`,
    text: retry
      ? "It goes back to QUEUED with a fresh set of attempts; its error history stays."
      : job.status === "RUNNING"
        ? "It is running: its worker stops it at its next heartbeat, and it ends CANCELLED."
        : "It is cancelled at once and will not run.",
    items: [`${job.status} · ${source(job.input)}`],
    confirmLabel: retry ? "Retry this job" : "Cancel this job",
    danger: !retry,
  });
  if (!ok) {
    toast("Nothing changed.");
    return;
  }
  const results = await act([job], kind);
  const { message, kind: tone } = summarise(
    results,
    retry ? "queued for retry" : "cancelled or being cancelled",
  );
  toast(results[0].ok ? results[0].message : message, tone);
  await refresh();
}

async function refresh() {
  const { job } = await api(`/api/ingest/jobs/${encodeURIComponent(jobId)}`);
  current = job;
  const text = JSON.stringify(job);
  // Re-render only on change, so text being selected or read is not replaced under the reader.
  if (text !== shownJson) {
    shownJson = text;
    render(job);
  }
  const adId = job.output && job.output.ad_id;
  if (adId && adId !== advertFor) {
    advertFor = adId;
    await loadAdvert(String(adId));
  }
}

function start() {
  field("retry").addEventListener("click", () => action("retry"));
  field("cancel").addEventListener("click", () => action("cancel"));
  const live = field("live");
  poll(
    async () => {
      try {
        await refresh();
      } catch (error) {
        if (error.status !== 404) throw error;
        field("status").textContent = "not found";
        field("facts").replaceChildren(h("p", { class: "error" }, "No job has this id."));
      }
    },
    2000,
    live,
  );
}

startPage(start);
