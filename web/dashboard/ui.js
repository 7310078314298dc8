// ui.js - what the dashboard's pages share: the htm binding, hooks for
// live data, and small components (status badges, count chips, the
// throughput sparkline, "not available"). Every text from the server is
// rendered as a text node: nothing here or in the pages sets HTML.
import { h } from "/ui/vendor/preact.module.js";
import { useEffect, useState, useRef } from "/ui/vendor/hooks.module.js";
import htm from "/ui/vendor/htm.module.js";
import { get, subscribe } from "/ui/api.js";

export const html = htm.bind(h);
export const STATUSES = ["pending", "in_progress", "retry", "done", "error", "cancelled"];

// Increments on every live change (counts or job events).
export function useTick() {
  const [tick, setTick] = useState(0);
  useEffect(() => subscribe((kind) => { if (kind === "tick") setTick((t) => t + 1); }), []);
  return tick;
}

// GET path again on every live tick, and every everyMs while the tab is
// visible (for what moves without changing the counts: a job's progress);
// {data, error, missing, loading}.
export function useGet(path, live = true, everyMs = 0) {
  const tick = live ? useTick() : 0;
  const [beat, setBeat] = useState(0);
  useEffect(() => {
    if (!everyMs) return undefined;
    const t = setInterval(() => { if (!document.hidden) setBeat((b) => b + 1); }, everyMs);
    return () => clearInterval(t);
  }, [everyMs]);
  const [st, setSt] = useState({ loading: true });
  const busy = useRef(false);
  useEffect(() => { setSt({ loading: true }); }, [path]);
  useEffect(() => {
    if (!path || busy.current) return;
    busy.current = true;
    let gone = false;
    get(path).then((r) => {
      busy.current = false;
      if (!gone) setSt({ data: r.ok ? r.data : null, error: r.error, missing: r.missing || r.status === 404 && !r.data, status: r.status });
    });
    return () => { gone = true; busy.current = false; };
  }, [path, tick, beat]);
  return st;
}

export function Loading({ st, what }) {
  if (st.loading) return html`<p class="muted">Loading…</p>`;
  if (st.missing) return html`<${NotAvailable} what=${what} />`;
  if (st.error) return html`<p class="error-text">${st.error}</p>`;
  return null;
}

export function NotAvailable({ what }) {
  return html`<div class="card notice">${what || "This view"} is not available on this server.</div>`;
}

export function Status({ s }) {
  return html`<span class=${"badge s-" + (s || "none")}>${s ? s.replace("_", " ") : "—"}</span>`;
}

export function Counts({ counts }) {
  if (!counts) return html`<span class="muted">no jobs yet</span>`;
  return html`<span class="counts">${STATUSES.filter((s) => counts[s]).map((s) =>
    html`<span class=${"chip s-" + s} title=${s}>${s.replace("_", " ")} <b>${counts[s]}</b></span>`)}
    ${STATUSES.every((s) => !counts[s]) ? html`<span class="muted">empty</span>` : null}</span>`;
}

export function age(s) {
  if (s === null || s === undefined) return "—";
  if (s < 1) return "<1 s";
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

export function ms(x) {
  if (x === null || x === undefined) return "—";
  return x < 1000 ? `${Math.round(x)} ms` : `${(x / 1000).toFixed(1)} s`;
}

// A throughput sparkline: values are jobs/min samples, newest last.
export function Sparkline({ values, width = 120, height = 28 }) {
  if (!values || values.length < 2)
    return html`<svg class="spark" width=${width} height=${height} aria-label="throughput"><line x1="0" y1=${height - 1} x2=${width} y2=${height - 1} class="spark-base" /></svg>`;
  const max = Math.max(1, ...values), n = values.length;
  const pts = values.map((v, i) => `${(i * (width - 2)) / (n - 1) + 1},${height - 2 - (v / max) * (height - 4)}`);
  return html`<svg class="spark" width=${width} height=${height} aria-label="throughput">
    <polyline points=${`1,${height - 1} ${pts.join(" ")} ${width - 1},${height - 1}`} class="spark-fill" />
    <polyline points=${pts.join(" ")} class="spark-line" /></svg>`;
}

export function Link({ to, children, cls }) {
  return html`<a href=${"#" + to} class=${cls || ""}>${children}</a>`;
}

export const enc = encodeURIComponent;

// Throughput history per queue, from the counts the live feed brings:
// samples of done + error at least 2 s apart, the last 40 kept; the rate
// between two samples in jobs per minute.
const hist = new Map();
export function recordCounts(body) {
  const now = Date.now();
  for (const p of (body && body.pipelines) || [])
    for (const s of p.stages || []) {
      if (!s.counts) continue;
      const n = (s.counts.done || 0) + (s.counts.error || 0);
      const a = hist.get(s.queue) || [];
      if (a.length && now - a[a.length - 1].t < 2000) continue;
      a.push({ t: now, n });
      if (a.length > 40) a.shift();
      hist.set(s.queue, a);
    }
}
export function rates(queue) {
  const a = hist.get(queue) || [];
  const out = [];
  for (let i = 1; i < a.length; i++)
    out.push(Math.max(0, ((a[i].n - a[i - 1].n) * 60000) / (a[i].t - a[i - 1].t)));
  return out;
}
