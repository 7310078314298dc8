// app.js - the sluice operator dashboard: asks for a token, then routes
// #/..., keeps the live feed running (paused while the tab is hidden) and
// draws the page. No build step: Preact + htm + uPlot as ES modules.
import { render } from "/ui/vendor/preact.module.js";
import { useEffect, useState } from "/ui/vendor/hooks.module.js";
import { auth, login, subscribe, liveMode, restartLive } from "/ui/api.js";
import { html, recordCounts } from "/ui/ui.js";
import { Overview, Stage, Workers, Stats } from "/ui/pages.js";
import { Jobs, Job, Subject } from "/ui/jobs.js";

function Login({ onDone }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    const r = await login(token.trim());
    setBusy(false);
    if (r.error) setError(r.error); else onDone();
  };
  return html`<div class="login"><form class="card" onSubmit=${submit}>
    <div class="brand big"><span class="logo" aria-hidden="true"></span>sluice</div>
    <p class="muted">Enter an operator token: the read token (SLUICE_READ_TOKEN) to look, the admin token (SLUICE_ADMIN_TOKEN) to act.
      It is kept in this tab only (sessionStorage).</p>
    <label>Token<input type="password" name="token" autocomplete="off" value=${token} onInput=${(e) => setToken(e.target.value)} /></label>
    ${error ? html`<p class="error-text" role="alert">${error}</p>` : null}
    <button class="btn" type="submit" disabled=${busy || !token.trim()}>Sign in</button></form></div>`;
}

function parse(hash) {
  const h = (hash || "").replace(/^#/, "") || "/";
  const [path, qs] = h.split("?");
  const seg = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { seg, params: new URLSearchParams(qs || "") };
}

const NAV = [["/", "Overview"], ["/jobs", "Jobs"], ["/workers", "Workers"], ["/stats", "Statistics"]];

function Page({ route, go }) {
  const [a, b, c] = route.seg;
  if (!a) return html`<${Overview} />`;
  if (a === "stage" && c) return html`<${Stage} pipeline=${b} stage=${c} />`;
  if (a === "jobs") return html`<${Jobs} params=${route.params} go=${go} />`;
  if (a === "job" && c) return html`<${Job} queue=${b} id=${c} />`;
  if (a === "subject" && c) return html`<${Subject} pipeline=${b} id=${c} />`;
  if (a === "workers") return html`<${Workers} />`;
  if (a === "stats") return html`<${Stats} />`;
  return html`<div class="card notice">No such page.</div>`;
}

function Shell({ onLogout }) {
  const [route, setRoute] = useState(parse(location.hash));
  const [mode, setMode] = useState(liveMode());
  useEffect(() => {
    const on = () => setRoute(parse(location.hash));
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  useEffect(() => subscribe((kind, data) => {
    if (kind === "counts") recordCounts(data);
    if (kind === "mode") setMode(liveMode());
  }), []);
  const go = (to) => { location.hash = to; };
  const here = "/" + (route.seg[0] || "");
  const label = { sse: "live", poll: "live (polling)", paused: "paused", off: "" }[mode];
  return html`<header class="top"><div class="brand"><span class="logo" aria-hidden="true"></span>sluice</div>
      <nav>${NAV.map(([to, name]) => html`<a href=${"#" + to} class=${here === to ? "on" : ""}>${name}</a>`)}</nav>
      <span class=${"live " + mode} title="updates">${label}</span>
      <span class="role">${auth.admin ? "admin" : "read only"}</span>
      <button class="btn ghost" onClick=${onLogout}>Sign out</button></header>
    <main><${Page} route=${route} go=${go} /></main>`;
}

function App() {
  const [signed, setSigned] = useState(!!auth.token);
  useEffect(() => {
    const out = () => setSigned(false);
    addEventListener("sluice-signed-out", out);
    return () => removeEventListener("sluice-signed-out", out);
  }, []);
  if (!signed) return html`<${Login} onDone=${() => { setSigned(true); restartLive(); }} />`;
  return html`<${Shell} onLogout=${() => { auth.clear(); setSigned(false); }} />`;
}

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
