// What every dashboard page shares: the admin key's keeping, the API client, polling, the
// confirmation dialog, and the small builders and formatters the pages render with.
//
// The key lives in this tab's sessionStorage only: never in a URL, a cookie or localStorage, so
// it is gone when the tab closes, and it reaches the gateway only as the X-Admin-Key header.
// Everything shown comes from job inputs, outputs and errors that producers control, so it is
// always set as text (textContent), never parsed as HTML.

const KEY_NAME = "jobqueue.adminKey";
export const STATUSES = ["QUEUED", "RUNNING", "SUCCEEDED", "RETRY", "FAILED", "CANCELLED"];
export const RETRYABLE = new Set(["FAILED", "CANCELLED"]);
export const CANCELLABLE = new Set(["QUEUED", "RETRY", "RUNNING"]);

export class ApiError extends Error {
  constructor(status, code, message, reason) {
    super(message);
    this.status = status;
    this.code = code;
    this.reason = reason ?? null;
  }
}

export function adminKey() {
  return sessionStorage.getItem(KEY_NAME);
}

function request(path, key, { method = "GET", body } = {}) {
  const init = {
    method,
    headers: { "X-Admin-Key": key, Accept: "application/json" },
    cache: "no-store",
    credentials: "omit",
    referrerPolicy: "no-referrer",
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

// One call to the REST API; resolves to its JSON, or rejects with an ApiError carrying the
// API's error code and message. A 401 means the key was changed or is wrong: forget it.
export async function api(path, options) {
  const key = adminKey();
  if (!key) {
    throw new ApiError(401, "UNAUTHENTICATED", "not signed in");
  }
  let response;
  try {
    response = await request(path, key, options);
  } catch {
    throw new ApiError(0, "NETWORK", "the gateway did not answer");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (response.status === 401) {
    signOut("The gateway refused the key: sign in again.");
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(
      response.status,
      error.code || `HTTP_${response.status}`,
      error.message || response.statusText,
      error.reason,
    );
  }
  return data;
}

// -- Signing in -------------------------------------------------------------------------------

let started = false;
let onSignedIn = () => {};

function showSignIn(message) {
  document.getElementById("content").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
  document.getElementById("admin-key").focus();
}

function showPage() {
  document.getElementById("sign-in").hidden = true;
  document.getElementById("content").hidden = false;
  document.getElementById("sign-out").hidden = false;
  if (!started) {
    started = true;
    onSignedIn();
  }
}

export function signOut(message) {
  sessionStorage.removeItem(KEY_NAME);
  showSignIn(message);
}

async function signIn(event) {
  event.preventDefault();
  const input = document.getElementById("admin-key");
  const error = document.getElementById("sign-in-error");
  const key = input.value.trim();
  if (!key) {
    error.textContent = "Type the admin key.";
    return;
  }
  error.textContent = "Checking…";
  let response;
  try {
    response = await request("/api/ingest/stats", key);
  } catch {
    error.textContent = "The gateway did not answer.";
    return;
  }
  if (response.status === 401) {
    error.textContent = "That key was refused.";
    input.select();
    return;
  }
  // Any other answer (even 503 from a queue service that is down) means the key was accepted.
  sessionStorage.setItem(KEY_NAME, key);
  input.value = "";
  error.textContent = "";
  showPage();
  // The form is gone: a keyboard or screen-reader user continues at the page's content.
  document.getElementById("content").focus();
}

// Run `start` once the operator is signed in (at once when this tab already holds the key).
export function startPage(start) {
  onSignedIn = start;
  document.getElementById("sign-in-form").addEventListener("submit", signIn);
  document.getElementById("sign-out").addEventListener("click", () => signOut("Signed out."));
  if (adminKey()) {
    showPage();
  } else {
    showSignIn();
  }
}

// -- Polling ----------------------------------------------------------------------------------

// Run `task` now and then every `intervalMs` after each run ends (never two at once), skipping
// while the tab is hidden or signed out. `live` (an element) says when data last arrived.
export function poll(task, intervalMs, live) {
  let timer = null;
  let running = false;
  async function tick() {
    clearTimeout(timer);
    if (running) return;
    if (!document.hidden && adminKey()) {
      running = true;
      try {
        await task();
        if (live) {
          live.textContent = `Live · updated ${clock(new Date())}`;
          live.classList.remove("stale");
        }
      } catch (error) {
        if (live) {
          live.textContent = `Not updating: ${describe(error)} (retrying)`;
          live.classList.add("stale");
        }
      } finally {
        running = false;
      }
    }
    timer = setTimeout(tick, intervalMs);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) tick();
  });
  tick();
  return { now: tick };
}

export function describe(error) {
  if (error instanceof ApiError) {
    return error.status ? `${error.message} (${error.status} ${error.code})` : error.message;
  }
  return String(error && error.message ? error.message : error);
}

// -- Messages and confirmation ----------------------------------------------------------------

export function toast(message, kind = "info") {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.dataset.kind = kind;
  box.classList.add("shown");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => box.classList.remove("shown"), 8000);
}

// Ask before acting: resolves true only when the operator presses the confirm button.
export function confirmAction({ title, text, items = [], confirmLabel, danger = false }) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const list = document.getElementById("confirm-list");
  list.replaceChildren(...items.map((item) => h("li", {}, item)));
  const yes = document.getElementById("confirm-yes");
  yes.textContent = confirmLabel;
  yes.classList.toggle("danger", danger);
  yes.classList.toggle("primary", !danger);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), {
      once: true,
    });
    dialog.showModal();
    // The safe choice has the focus: Enter alone never confirms.
    document.getElementById("confirm-no").focus();
  });
}

// POST each job's action one after the other; returns [{job, ok, message}].
export async function act(jobs, action) {
  const results = [];
  for (const job of jobs) {
    try {
      const answer = await api(`/api/ingest/jobs/${encodeURIComponent(job.id)}`, {
        method: "POST",
        body: { action },
      });
      results.push({ job, ok: true, message: answer.message, updated: answer.job });
    } catch (error) {
      results.push({ job, ok: false, message: describe(error) });
    }
  }
  return results;
}

export function summarise(results, done) {
  const ok = results.filter((result) => result.ok).length;
  const refused = results.filter((result) => !result.ok);
  let message = `${ok} ${plural(ok, "job")} ${done}.`;
  if (refused.length) {
    const first = refused[0];
    message += ` ${refused.length} refused: ${shortId(first.job.id)}: ${first.message}`;
  }
  return { message, kind: refused.length ? "error" : "ok" };
}

// -- Building the page ------------------------------------------------------------------------

// h("a", {href: "/x", class: "y"}, "text", child): an element; strings become text nodes.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${String(status).toLowerCase()}` }, status);
}

export function progressBar(progress, label) {
  const value = Math.max(0, Math.min(1, Number(progress) || 0));
  return h(
    "span",
    { class: "progress" },
    h("progress", { max: "1", value: String(value), "aria-label": label || "Progress" }),
    h("span", { class: "percent" }, `${Math.round(value * 100)}%`),
  );
}

export function jobLink(id) {
  return h("a", { href: `/ui/jobs/${encodeURIComponent(id)}`, class: "job-link" }, shortId(id));
}

// A label for what the job ingests: "s3:videos/a.mp4" or "local:/data/a.mp4".
export function source(input) {
  if (!input || typeof input !== "object") return "";
  if (typeof input.s3_key === "string") return `s3:${input.s3_key}`;
  if (typeof input.path === "string") return `local:${input.path}`;
  return JSON.stringify(input);
}

export function shortId(id) {
  return String(id).slice(0, 8);
}

export function plural(count, word) {
  return count === 1 ? word : `${word}s`;
}

// Seconds as "0.42 s", "12.3 s", "4 min 05 s", "2 h 03 min", "3 d 4 h".
export function duration(seconds) {
  const s = Number(seconds);
  if (!Number.isFinite(s)) return "–";
  if (s < 1) return `${s.toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const pad = (n) => String(Math.floor(n)).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)} min ${pad(s % 60)} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${pad((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function two(n) {
  return String(n).padStart(2, "0");
}

export function clock(date) {
  return `${two(date.getHours())}:${two(date.getMinutes())}:${two(date.getSeconds())}`;
}

// An ISO time as "12.3 s ago", the full local time in its title: for tables.
export function ago(iso) {
  if (!iso) return h("span", { class: "muted" }, "–");
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  const text = seconds >= 0 ? `${duration(seconds)} ago` : `in ${duration(-seconds)}`;
  return h("time", { datetime: iso, title: iso }, text);
}

// An ISO time as a <time> element in local time, with how long ago it was.
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "–");
  const date = new Date(iso);
  const day = `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())}`;
  const ago = (Date.now() - date.getTime()) / 1000;
  const relative = ago >= 0 ? `${duration(ago)} ago` : `in ${duration(-ago)}`;
  return h("time", { datetime: iso, title: iso }, `${day} ${clock(date)} (${relative})`);
}

export function json(value) {
  return value === null || value === undefined ? "null" : JSON.stringify(value, null, 2);
}

// Make a table's body match `items`, one row per key, reusing rows that exist so that focus and
// selection survive a refresh. `render(item, row)` fills a row (new or reused).
export function syncRows(tbody, items, key, render) {
  const existing = new Map([...tbody.rows].map((row) => [row.dataset.key, row]));
  const wanted = items.map((item) => {
    const id = key(item);
    const row = existing.get(id) || h("tr", { dataset: { key: id } });
    existing.delete(id);
    render(item, row);
    return row;
  });
  for (const row of existing.values()) row.remove();
  wanted.forEach((row, index) => {
    if (tbody.rows[index] !== row) tbody.insertBefore(row, tbody.rows[index] || null);
  });
}

// A table cell labelled for the phone layout, where each row is shown as a card (its label,
// then its content: several children are wrapped so that they stay in the content's column).
export function cell(label, ...children) {
  const content = children.flat().filter((child) => child !== null && child !== undefined);
  return h("td", { "data-label": label }, content.length > 1 ? h("div", {}, ...content) : content);
}
