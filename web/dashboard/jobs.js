// jobs.js - the job list (filters, bulk actions), a job's detail and a
// subject's page (its stages as a flow with live progress).
import { useEffect, useRef, useState } from "/ui/vendor/hooks.module.js";
import { auth, get, post } from "/ui/api.js";
import { html, useGet, useTick, Loading, Status, Link, when, age, enc, STATUSES } from "/ui/ui.js";

const FILTERS = ["pipeline", "stage", "status", "error_class", "q"];

function query(f) {
  return FILTERS.filter((k) => f[k]).map((k) => `${k}=${enc(f[k])}`).join("&");
}

export function Jobs({ params, go }) {
  const f = Object.fromEntries(FILTERS.map((k) => [k, params.get(k) || ""]));
  const [draft, setDraft] = useState(f);
  const [pages, setPages] = useState({ jobs: null, next: null, error: null });
  const [sel, setSel] = useState(new Set());
  const [msg, setMsg] = useState(null);
  const tick = useTick();
  const q = query(f);
  // Reads are numbered: an answer older than the latest read is dropped,
  // and a live refresh re-reads as many rows as are shown ("Load more"
  // kept) but waits while "Load more" is on its way.
  const seq = useRef(0), shown = useRef(0), loadingMore = useRef(false);
  const reload = async () => {
    const my = ++seq.current;
    const limit = Math.min(500, Math.max(50, shown.current));
    const r = await get(`/api/jobs?limit=${limit}${q ? "&" + q : ""}`);
    if (my !== seq.current) return;
    shown.current = r.ok ? r.data.jobs.length : 0;
    setPages(r.ok ? { jobs: r.data.jobs, next: r.data.next_cursor } : { jobs: [], error: r.error });
  };
  useEffect(() => {
    setDraft(f); setSel(new Set()); setMsg(null); setPages({ jobs: null, next: null });
    shown.current = 0;
    reload();
  }, [q]);
  useEffect(() => { if (tick && !loadingMore.current) reload(); }, [tick]);
  const more = async () => {
    loadingMore.current = true;
    const my = ++seq.current;
    const r = await get(`/api/jobs?limit=50${q ? "&" + q : ""}&cursor=${enc(pages.next)}`);
    loadingMore.current = false;
    if (my !== seq.current) return;
    if (!r.ok) { setMsg(`Load more failed: ${r.error}`); return; }
    shown.current = pages.jobs.length + r.data.jobs.length;
    setPages({ jobs: pages.jobs.concat(r.data.jobs), next: r.data.next_cursor });
  };
  const act = async (what, byFilter) => {
    // Destructive or wide actions are confirmed first.
    if ((what === "delete" || byFilter) &&
        !confirm(byFilter ? `${what} every job matching these filters?` : `Delete ${sel.size} job${sel.size === 1 ? "" : "s"}? This cannot be undone.`))
      return;
    const body = byFilter ? { filter: Object.fromEntries(FILTERS.filter((k) => f[k]).map((k) => [k, f[k]])) } : { ids: [...sel] };
    const r = await post(`/api/jobs/${what}`, body);
    if (r.ok) { setMsg(`${what}: ${r.data.changed} job${r.data.changed === 1 ? "" : "s"} changed.`); setSel(new Set()); }
    else setMsg(r.status === 404 || r.status === 400 && byFilter ? `${what}${byFilter ? " by filter" : ""} is not available on this server.` : r.error);
    await reload();
  };
  const toggle = (id) => { const s = new Set(sel); s.has(id) ? s.delete(id) : s.add(id); setSel(s); };
  const jobs = pages.jobs || [];
  const all = jobs.length > 0 && jobs.every((j) => sel.has(j.id));
  const submit = (e) => { e.preventDefault(); const s = query(draft); go("/jobs" + (s ? "?" + s : "")); };
  return html`<h1>Jobs</h1>
    <form class="filters" onSubmit=${submit}>
      ${["pipeline", "stage"].map((k) => html`<label>${k}<input name=${k} value=${draft[k]} onInput=${(e) => setDraft({ ...draft, [k]: e.target.value })} /></label>`)}
      <label>status<select name="status" value=${draft.status} onChange=${(e) => setDraft({ ...draft, status: e.target.value })}>
        <option value="">any</option>${STATUSES.map((s) => html`<option value=${s}>${s}</option>`)}</select></label>
      <label>error class<input name="error_class" value=${draft.error_class} onInput=${(e) => setDraft({ ...draft, error_class: e.target.value })} /></label>
      <label>error text<input name="q" value=${draft.q} onInput=${(e) => setDraft({ ...draft, q: e.target.value })} /></label>
      <button class="btn" type="submit">Filter</button></form>
    ${auth.admin ? html`<div class="bulk"><span class="muted">${sel.size} selected</span>
      <button class="btn" data-action="retry" disabled=${!sel.size} onClick=${() => act("retry")}>Retry</button>
      <button class="btn" data-action="cancel" disabled=${!sel.size} onClick=${() => act("cancel")}>Cancel</button>
      <button class="btn danger" data-action="delete" disabled=${!sel.size} onClick=${() => act("delete")}>Delete</button>
      <span class="sep"></span>
      <button class="btn ghost" data-action="retry-filter" onClick=${() => act("retry", true)}>Retry all matching</button>
      <button class="btn ghost" data-action="cancel-filter" onClick=${() => act("cancel", true)}>Cancel all matching</button></div>` : null}
    ${msg ? html`<p class="note" role="status">${msg}</p>` : null}
    ${pages.error ? html`<p class="error-text">${pages.error}</p>` : null}
    <section class="card flush">${pages.jobs === null ? html`<p class="muted pad">Loading…</p>` : jobs.length ? html`<table class="list jobs">
      <thead><tr>${auth.admin ? html`<th><input type="checkbox" aria-label="select all" checked=${all}
        onChange=${() => setSel(all ? new Set() : new Set(jobs.map((j) => j.id)))} /></th>` : null}
        <th>job</th><th>stage</th><th>status</th><th>attempts</th><th>error</th><th>created</th></tr></thead>
      <tbody>${jobs.map((j) => html`<tr data-job=${j.id}>
        ${auth.admin ? html`<td><input type="checkbox" aria-label="select" checked=${sel.has(j.id)} onChange=${() => toggle(j.id)} /></td>` : null}
        <td class="mono"><${Link} to=${`/job/${enc(j.queue)}/${enc(j.id)}`}>${j.id.slice(0, 8)}<//></td>
        <td>${j.pipeline} › ${j.stage}${j.subject ? html`<div class="small"><${Link} to=${`/subject/${enc(j.pipeline)}/${enc(j.subject)}`}>subject<//></div>` : null}</td><td><${Status} s=${j.status} /></td><td class="num">${j.attempts}/${j.max_attempts}</td>
        <td class="clip"><span class="muted">${j.error_class || ""}</span> <span class="mono last-error">${j.last_error || ""}</span></td>
        <td>${when(j.created_at)}</td></tr>`)}</tbody></table>` : html`<p class="muted pad">No jobs match.</p>`}</section>
    ${pages.next ? html`<button class="btn ghost" onClick=${more}>Load more</button>` : null}`;
}

export function Job({ queue, id }) {
  const st = useGet(`/api/jobs/${enc(queue)}/${enc(id)}?inputs=1`, true, 2000);
  const [msg, setMsg] = useState(null);
  if (!st.data) return html`<${Loading} st=${st} />`;
  const j = st.data;
  const act = async (what) => {
    const r = await post(`/api/jobs/${what}`, { ids: [j.id] });
    setMsg(r.ok ? `${what}: ${r.data.changed ? "done" : "nothing to change"}.` : r.error);
  };
  const facts = [["pipeline", j.pipeline], ["stage", j.stage], ["queue", j.queue], ["attempts", j.attempts], ["error class", j.error_class],
    ["created", when(j.created_at)], ["started", when(j.started_at)], ["finished", when(j.finished_at)], ["took", age(j.took_s)],
    ["runs at", when(j.run_at)], ["progress", j.progress === null || j.progress === undefined ? "—" : j.progress + " %"], ["locked by", j.locked_by]];
  return html`<h1>Job <span class="mono">${j.id}</span> <${Status} s=${j.status} /></h1>
    ${auth.admin ? html`<div class="bulk">
      ${["error", "cancelled"].includes(j.status) ? html`<button class="btn" data-action="retry" onClick=${() => act("retry")}>Retry</button>` : null}
      ${["pending", "retry", "in_progress"].includes(j.status) ? html`<button class="btn" data-action="cancel" onClick=${() => act("cancel")}>Cancel</button>` : null}</div>` : null}
    ${msg ? html`<p class="note">${msg}</p>` : null}
    <section class="card"><dl class="facts">${facts.map(([k, v]) => html`<dt>${k}</dt><dd>${v === null || v === undefined ? "—" : String(v)}</dd>`)}
      <dt>subject</dt><dd>${j.subject ? html`<${Link} to=${`/subject/${enc(j.pipeline)}/${enc(j.subject)}`}>${j.subject}<//>` : "—"}</dd></dl></section>
    <section class="card"><h2>Last error</h2><pre class="text last-error">${j.last_error || "—"}</pre></section>
    <section class="card"><h2>Detail</h2><pre class="text detail">${j.detail || "—"}</pre></section>
    <section class="card"><h2>Inputs</h2><pre class="text inputs">${j.inputs ? JSON.stringify(j.inputs, null, 2) : "—"}</pre></section>`;
}

export function Subject({ pipeline, id }) {
  const st = useGet(`/api/subjects/${enc(pipeline)}/${enc(id)}`, true, 1000);
  if (!st.data) return html`<${Loading} st=${st} />`;
  const s = st.data;
  const pct = Math.max(0, Math.min(100, s.progress || 0));
  return html`<h1>${pipeline} › <span class="mono">${s.id}</span></h1>
    <section class="card subject-head"><div class="row"><span class="subject-status">${s.status || "—"}</span>
      <span class="pct">${s.progress === null || s.progress === undefined ? "" : s.progress + " %"}</span></div>
      <div class="track"><div class="bar" style=${{ width: pct + "%" }}></div></div>
      <div class="muted subject-detail">${s.detail || ""}</div></section>
    <section class="flow">${(s.stages || []).map((g, i) => html`${i ? html`<div class="arrow" aria-hidden="true">→</div>` : null}
      <div class=${"card step s-" + stepStatus(g.jobs)}><h3>${g.name}</h3><div class="muted small">${g.queue}</div>
        ${g.jobs.length ? g.jobs.map((j) => html`<div class="step-job"><${Link} to=${`/job/${enc(g.queue)}/${enc(j.id)}`}><${Status} s=${j.status} /><//>
          ${j.progress !== null && j.progress !== undefined ? html`<div class="track small"><div class="bar" style=${{ width: j.progress + "%" }}></div></div>` : null}
          ${j.detail ? html`<div class="muted small">${j.detail}</div>` : null}
          ${j.last_error ? html`<div class="mono small error-text">${j.last_error}</div>` : null}</div>`)
          : html`<p class="muted small">not reached</p>`}</div>`)}</section>`;
}

function stepStatus(jobs) {
  if (!jobs.length) return "none";
  return jobs[jobs.length - 1].status;
}
