// pages.js - the overview, the stage page, the workers page and the
// statistics page.
import { useEffect, useRef, useState } from "/ui/vendor/hooks.module.js";
import uPlot from "/ui/vendor/uPlot.esm.js";
import { auth, post } from "/ui/api.js";
import { html, useGet, Loading, Counts, Sparkline, Status, Link, age, when, ms, rates, enc, NotAvailable } from "/ui/ui.js";

export function Overview() {
  const st = useGet("/api/pipelines");
  if (!st.data) return html`<${Loading} st=${st} />`;
  const ps = st.data.pipelines || [];
  if (!ps.length) return html`<div class="card notice">No pipelines are loaded.</div>`;
  return html`<h1>Pipelines</h1>${ps.map((p) => html`
    <section class="card pipeline" data-pipeline=${p.name}>
      <h2>${p.name}${p.subject ? html` <span class="tag">subjects</span>` : null}</h2>
      <table class="stages">
        <colgroup><col class="c-stage" /><col /><col class="c-num" /><col class="c-num" /><col class="c-spark" /></colgroup>
        <thead><tr><th>stage</th><th>jobs</th><th class="num">oldest pending</th><th class="num">mean run</th><th>throughput</th></tr></thead>
        <tbody>${(p.stages || []).map((s) => html`
          <tr data-stage=${s.name}>
            <td><${Link} to=${`/stage/${enc(p.name)}/${enc(s.name)}`}>${s.name}<//>
              ${s.paused ? html` <span class="badge s-paused">paused</span>` : null}
              <div class="muted small">${s.queue}</div></td>
            <td><${Counts} counts=${s.counts} /></td>
            <td class="num">${age(s.oldest_pending_s)}</td>
            <td class="num">${s.mean_run_s === null || s.mean_run_s === undefined ? "—" : age(s.mean_run_s)}</td>
            <td><${Sparkline} values=${rates(s.queue)} />
              <div class="muted small">${lastRate(s.queue)}</div></td>
          </tr>`)}</tbody>
      </table>
    </section>`)}`;
}

function lastRate(queue) {
  const r = rates(queue);
  return r.length ? `${r[r.length - 1].toFixed(1)} jobs/min` : "measuring…";
}

export function Stage({ pipeline, stage }) {
  const st = useGet("/api/pipelines");
  const fails = useGet(`/api/jobs?pipeline=${enc(pipeline)}&stage=${enc(stage)}&status=error&limit=200`);
  const [msg, setMsg] = useState(null);
  if (!st.data) return html`<${Loading} st=${st} />`;
  const p = (st.data.pipelines || []).find((x) => x.name === pipeline);
  const s = p && (p.stages || []).find((x) => x.name === stage);
  if (!s) return html`<div class="card notice">No stage ${stage} in pipeline ${pipeline}.</div>`;
  const toggle = async () => {
    const r = await post(`/api/stages/${enc(pipeline)}/${enc(stage)}/${s.paused ? "resume" : "pause"}`, {});
    setMsg(r.ok ? (r.data.paused ? "Paused." : "Resumed.") : r.status === 404 ? "Pausing a stage is not available on this server." : r.error);
  };
  const groups = new Map();
  for (const j of (fails.data && fails.data.jobs) || []) {
    const k = j.error_class || "(none)";
    const g = groups.get(k) || { n: 0, last: j };
    g.n++;
    groups.set(k, g);
  }
  return html`<h1><${Link} to="/">${pipeline}<//> › ${stage}
      ${s.paused ? html` <span class="badge s-paused">paused</span>` : null}</h1>
    <section class="card">
      <div class="row"><${Counts} counts=${s.counts} />
        ${auth.admin ? html`<button class="btn" data-action="pause" onClick=${toggle}>${s.paused ? "Resume" : "Pause"}</button>` : null}</div>
      ${msg ? html`<p class="note">${msg}</p>` : null}
      <dl class="facts"><dt>queue</dt><dd>${s.queue}</dd><dt>oldest pending</dt><dd>${age(s.oldest_pending_s)}</dd>
        <dt>mean run</dt><dd>${age(s.mean_run_s)}</dd></dl>
      <${Link} to=${`/jobs?pipeline=${enc(pipeline)}&stage=${enc(stage)}`}>All jobs of this stage →<//>
    </section>
    <section class="card"><h2>Recent failures by error class</h2><p class="muted small">The last 200 failed jobs of this stage, grouped.</p>
      ${fails.data ? (groups.size ? html`<table class="list"><thead><tr><th>error class</th><th class="num">jobs</th><th>latest error</th></tr></thead><tbody>
        ${[...groups].map(([k, g]) => html`<tr><td><${Link} to=${`/jobs?pipeline=${enc(pipeline)}&stage=${enc(stage)}&status=error${k === "(none)" ? "" : "&error_class=" + enc(k)}`}>${k}<//></td>
          <td class="num">${g.n}</td><td class="mono clip">${g.last.last_error || ""}</td></tr>`)}</tbody></table>`
        : html`<p class="muted">No failed jobs.</p>`) : html`<${Loading} st=${fails} />`}
    </section>`;
}

export function Workers() {
  const st = useGet("/api/workers", true, 5000);
  if (!st.data) return html`<h1>Workers</h1><${Loading} st=${st} what="The workers list" />`;
  const ws = st.data.workers || [];
  const head = ["worker", "host", "pid", "version", "stages", "concurrency", "started", "heartbeat", ""];
  const num = new Set(["pid", "concurrency"]);
  return html`<h1>Workers</h1><section class="card">${ws.length ? html`<table class="list">
    <thead><tr>${head.map((h) => html`<th class=${num.has(h) ? "num" : ""}>${h}</th>`)}</tr></thead>
    <tbody>${ws.map((w) => html`<tr>
      <td class="mono">${w.id}</td><td>${w.host}</td><td class="num">${w.pid}</td><td>${w.version}</td>
      <td>${(w.stages || []).join(", ")}</td><td class="num">${w.concurrency}</td>
      <td>${when(w.started_at)}</td><td>${when(w.heartbeat_at)}</td>
      <td>${w.alive ? html`<span class="badge s-done">alive</span>` : html`<span class="badge s-error">gone</span>`}</td></tr>`)}</tbody></table>`
    : html`<p class="muted">No workers.</p>`}</section>`;
}

const RANGES = [[15, "15 min"], [60, "1 hour"], [360, "6 hours"], [1440, "24 hours"]];

export function Stats() {
  const [minutes, setMinutes] = useState(60);
  const [sel, setSel] = useState("");
  const ps = useGet("/api/pipelines", false);
  const [pipeline, stage] = sel ? sel.split("\u0000") : ["", ""];
  const st = useGet(`/api/stats?minutes=${minutes}${pipeline ? "&pipeline=" + enc(pipeline) + "&stage=" + enc(stage) : ""}`, true, 30000);
  const opts = [];
  for (const p of (ps.data && ps.data.pipelines) || [])
    for (const s of p.stages || []) opts.push([p.name + "\u0000" + s.name, `${p.name} › ${s.name}`]);
  return html`<h1>Statistics</h1>
    <div class="filters"><label>range <select value=${minutes} onChange=${(e) => setMinutes(+e.target.value)}>
      ${RANGES.map(([m, l]) => html`<option value=${m}>${l}</option>`)}</select></label>
      <label>stage <select value=${sel} onChange=${(e) => setSel(e.target.value)}><option value="">all stages</option>
      ${opts.map(([v, l]) => html`<option value=${v}>${l}</option>`)}</select></label></div>
    ${st.data ? html`<${StatsCharts} rows=${st.data.minutes || []} />` : html`<${Loading} st=${st} what="Statistics" />`}`;
}

// Per minute: jobs done and failed summed over the selected stages; the
// percentiles are each stage's, averaged weighted by its jobs that minute
// (exact when one stage is selected).
const PCTS = ["run_p50_ms", "run_p95_ms", "wait_p50_ms", "wait_p95_ms"];

function perMinute(rows) {
  const by = new Map();
  for (const r of rows) {
    const t = Date.parse(r.minute) / 1000;
    const m = by.get(t) || { t, done: 0, failed: 0, w: 0, sums: PCTS.map(() => 0) };
    const w = (r.done || 0) + (r.failed || 0);
    m.done += r.done || 0;
    m.failed += r.failed || 0;
    if (w) {
      m.w += w;
      PCTS.forEach((k, i) => { m.sums[i] += w * (r[k] || 0); });
    }
    by.set(t, m);
  }
  const a = [...by.values()].sort((x, y) => x.t - y.t);
  const col = (i) => a.map((m) => (m.w ? m.sums[i] / m.w : null));
  return { t: a.map((m) => m.t), done: a.map((m) => m.done), failed: a.map((m) => m.failed),
    run50: col(0), run95: col(1), wait50: col(2), wait95: col(3) };
}

const TEAL = "#0d9488", TEAL_D = "#115e59", RED = "#dc2626", G400 = "#a3a3a3", G600 = "#525252";

function StatsCharts({ rows }) {
  if (!rows.length) return html`<div class="card notice">No jobs finished in this range.</div>`;
  const d = perMinute(rows);
  const sum = (a) => a.reduce((x, y) => x + y, 0);
  const worst = (a) => { const v = a.filter((x) => x !== null); return v.length ? Math.max(...v) : null; };
  return html`<div class="kpis">
      <div class="card kpi"><b>${sum(d.done)}</b>done</div>
      <div class="card kpi"><b>${sum(d.failed)}</b>failed</div>
      <div class="card kpi"><b>${ms(worst(d.run95))}</b>worst run p95</div>
      <div class="card kpi"><b>${ms(worst(d.wait95))}</b>worst wait p95</div></div>
    <section class="card"><h2>Throughput (jobs per minute)</h2>
      <${Chart} data=${[d.t, d.done, d.failed]} series=${[["done", TEAL], ["failed", RED]]} /></section>
    <section class="card"><h2>Run and wait time percentiles (ms)</h2>
      <${Chart} data=${[d.t, d.run50, d.run95, d.wait50, d.wait95]}
        series=${[["run p50", TEAL], ["run p95", TEAL_D], ["wait p50", G400], ["wait p95", G600]]} /></section>`;
}

function Chart({ data, series }) {
  const el = useRef(null);
  useEffect(() => {
    const axis = { stroke: G600, grid: { stroke: "#f0f0f0" } };
    const u = new uPlot({
      width: Math.max(300, el.current.clientWidth - 8), height: 220,
      series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: true, points: { show: false } }))],
      axes: [axis, axis],
    }, data, el.current);
    return () => u.destroy();
  }, [JSON.stringify(data)]);
  return html`<div class="chart" ref=${el}></div>`;
}

export { NotAvailable, Status };
