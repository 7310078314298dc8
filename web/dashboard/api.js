// api.js - the dashboard's link to the server: the operator token (kept in
// sessionStorage, sent as a Bearer token), JSON requests, and the live
// feed (GET /api/events, or polling where the server has no such route),
// paused while the tab is hidden.

const KEY = "sluice.token", ROLE = "sluice.role";

export const auth = {
  get token() { return sessionStorage.getItem(KEY); },
  get role() { return sessionStorage.getItem(ROLE) || "read"; },
  get admin() { return this.role === "admin"; },
  set(token, role) {
    sessionStorage.setItem(KEY, token);
    sessionStorage.setItem(ROLE, role);
  },
  clear() { sessionStorage.removeItem(KEY); sessionStorage.removeItem(ROLE); },
};

// An answer the UI can show: ok, status, data (parsed JSON or null),
// missing (the server has no such route: 404 with code not_found on a
// route, or any 404 where missingOk), and error (a message, as text).
export async function call(method, path, body, token = auth.token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let r;
  try {
    r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    return { ok: false, status: 0, data: null, error: "the server cannot be reached" };
  }
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  // The stored token is no longer accepted (the server's tokens changed):
  // back to the sign-in form.
  if (r.status === 401 && token && token === auth.token) {
    auth.clear();
    dispatchEvent(new Event("sluice-signed-out"));
  }
  const err = data && data.error;
  return {
    ok: r.ok, status: r.status, data,
    missing: r.status === 404 && err && /^no route/.test(err.message || ""),
    error: r.ok ? null : (err ? `${err.code}: ${err.message}` : `HTTP ${r.status}`),
  };
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);

// Checks a token: a read on /api/pipelines, then an action the server
// refuses before doing anything (an empty body): the read token gets 403
// forbidden, the admin token 400 bad_request. Nothing is changed and
// nothing audited.
export async function login(token) {
  const r = await call("GET", "/api/pipelines", undefined, token);
  if (!r.ok) return { error: r.status === 401 ? "This token is not accepted." : r.error };
  const p = await call("POST", "/api/jobs/retry", {}, token);
  const role = p.status === 403 ? "read" : "admin";
  auth.set(token, role);
  return { role };
}

// The live feed: listeners get ("counts", pipelines) and ("job", event)
// and ("tick") on every change. Uses /api/events when the server has it,
// else polls /api/pipelines every POLL_MS. Nothing runs while the tab is
// hidden; on coming back it catches up at once.
const POLL_MS = 2000;
const listeners = new Set();
let es = null, timer = null, mode = "off", sseFailed = false;

export function liveMode() { return mode; }

function emit(kind, data) {
  for (const f of listeners) f(kind, data);
}

// Pages re-read on a tick: at most one a second however many events
// arrive (a busy server sends a job event per transition).
let tickTimer = null, lastTick = 0;
function tick() {
  if (tickTimer || document.hidden) return;
  const wait = Math.max(0, lastTick + 1000 - Date.now());
  tickTimer = setTimeout(() => {
    tickTimer = null;
    if (document.hidden) return; // caught up when shown again
    lastTick = Date.now();
    emit("tick");
  }, wait);
}

let lastCounts = "";
// One chain of polls at a time: a chain whose generation is no longer
// current (stopped, restarted) ends at its next step.
let gen = 0;
async function poll(g) {
  timer = null;
  const r = await get("/api/pipelines");
  if (g !== gen) return;
  if (r.ok) {
    emit("counts", r.data);
    // A tick (pages re-read) only when something changed.
    const now = JSON.stringify(r.data);
    if (now !== lastCounts) { lastCounts = now; tick(); }
  }
  if (mode === "poll" && !document.hidden) timer = setTimeout(() => poll(g), POLL_MS);
}

function start() {
  stop();
  lastCounts = ""; // the first read after a pause always re-reads the page
  if (!auth.token || document.hidden) { mode = "paused"; emit("mode"); return; }
  if (sseFailed || typeof EventSource === "undefined") {
    mode = "poll"; emit("mode"); poll(gen); return;
  }
  let opened = false;
  es = new EventSource("/api/events?token=" + encodeURIComponent(auth.token));
  es.onopen = () => { opened = true; mode = "sse"; emit("mode"); };
  es.addEventListener("counts", (e) => { emit("counts", JSON.parse(e.data)); tick(); });
  es.addEventListener("job", (e) => { emit("job", JSON.parse(e.data)); tick(); });
  es.onerror = () => {
    // Never opened: the server has no /api/events (or refuses it): poll.
    if (!opened) { sseFailed = true; start(); }
  };
  poll(gen); // the counts now, not at the first change
}

function stop() {
  gen++;
  if (es) { es.close(); es = null; }
  if (timer) { clearTimeout(timer); timer = null; }
  if (tickTimer) { clearTimeout(tickTimer); tickTimer = null; }
}

export function subscribe(f) {
  listeners.add(f);
  if (listeners.size === 1) start();
  return () => { listeners.delete(f); if (!listeners.size) { stop(); mode = "off"; } };
}

export function restartLive() { if (listeners.size) start(); }

document.addEventListener("visibilitychange", () => {
  if (!listeners.size) return;
  if (document.hidden) { stop(); mode = "paused"; emit("mode"); } else start();
});
