// widget.js - <sluice-progress subject="..." token="..." pipeline="...">:
// a framework-free custom element that follows one subject live over
// server-sent events (GET /api/subjects/PIPELINE/ID/events?token=...).
// Every text from the server is set with textContent, never as HTML.
(() => {
  "use strict";
  const base = (document.currentScript && document.currentScript.src)
    ? new URL(".", document.currentScript.src).href : "/";
  const NS = "http://www.w3.org/2000/svg";
  // Icons drawn for sluice (no third-party artwork): 24x24, stroke only.
  const ICONS = {
    upload: ["M12 16V4", "M7 9l5-5 5 5", "M4 20h16"],
    waveform: ["M3 12h2", "M7 8v8", "M11 4v16", "M15 7v10", "M19 10v4"],
    sparkles: ["M12 3l2 5 5 2-5 2-2 5-2-5-5-2 5-2z", "M19 16l1 2 2 1-2 1-1 2-1-2-2-1 2-1z"],
    check: ["M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z", "M8 12l3 3 5-6"],
    alert: ["M12 3l10 18H2z", "M12 10v5", "M12 18v.5"],
  };
  function icon(name) {
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("aria-hidden", "true");
    for (const d of ICONS[name]) {
      const p = document.createElementNS(NS, "path");
      p.setAttribute("d", d);
      p.setAttribute("fill", "none");
      p.setAttribute("stroke", "currentColor");
      p.setAttribute("stroke-width", "2");
      p.setAttribute("stroke-linecap", "round");
      p.setAttribute("stroke-linejoin", "round");
      svg.appendChild(p);
    }
    return svg;
  }
  const CSS = `
:host{display:block;font:14px/1.4 system-ui,sans-serif;color:#171717}
.card{border:1px solid #e5e5e5;border-radius:12px;padding:16px;background:#fff;
 box-shadow:0 1px 2px rgba(0,0,0,.05)}
.head{display:flex;align-items:center;gap:8px;color:#0d9488}
.label{font-weight:600;color:#171717;transition:opacity .3s,transform .3s}
.label.step{opacity:0;transform:translateY(4px)}
.pct{margin-left:auto;color:#525252;font-variant-numeric:tabular-nums}
.track{height:8px;border-radius:4px;background:#f5f5f5;margin-top:12px;overflow:hidden}
.bar{height:100%;width:0;background:#0d9488;transition:width .4s ease}
.detail{margin-top:8px;color:#525252;font-size:13px}
.banner{display:none;margin-top:12px;padding:8px 12px;border-radius:8px;
 background:#fef2f2;color:#b91c1c;border:1px solid #fecaca;align-items:center;gap:8px}
:host([state=error]) .banner{display:flex}
:host([state=error]) .bar{background:#dc2626}
:host([state=error]) .head{color:#dc2626}
:host([state=done]) .head{color:#16a34a}
@media (prefers-reduced-motion:reduce){.bar,.label{transition:none}}`;
  const FINAL_OK = ["done", "ready", "complete", "completed"];
  const FINAL_ERR = ["error", "failed", "cancelled"];

  class SluiceProgress extends HTMLElement {
    static get observedAttributes() { return ["subject", "token", "pipeline"]; }
    constructor() {
      super();
      const root = this.attachShadow({ mode: "open" });
      const style = document.createElement("style");
      style.textContent = CSS;
      root.appendChild(style);
      const card = document.createElement("div");
      card.className = "card";
      card.setAttribute("role", "status");
      card.setAttribute("aria-live", "polite");
      this._head = document.createElement("div");
      this._head.className = "head";
      this._icon = icon("upload");
      this._label = document.createElement("span");
      this._label.className = "label";
      this._label.textContent = "Waiting…";
      this._pct = document.createElement("span");
      this._pct.className = "pct";
      this._head.append(this._icon, this._label, this._pct);
      const track = document.createElement("div");
      track.className = "track";
      this._bar = document.createElement("div");
      this._bar.className = "bar";
      track.appendChild(this._bar);
      this._detail = document.createElement("div");
      this._detail.className = "detail";
      this._banner = document.createElement("div");
      this._banner.className = "banner";
      this._bannerText = document.createElement("span");
      this._banner.append(icon("alert"), this._bannerText);
      card.append(this._head, track, this._detail, this._banner);
      root.appendChild(card);
      this._es = null;
    }
    connectedCallback() { this._open(); }
    disconnectedCallback() { this._close(); }
    attributeChangedCallback() { if (this.isConnected) this._open(); }
    _close() { if (this._es) { this._es.close(); this._es = null; } }
    _open() {
      this._close();
      const subject = this.getAttribute("subject");
      const pipeline = this.getAttribute("pipeline") || "interview";
      const token = this.getAttribute("token") || "";
      if (!subject) return;
      const url = new URL("api/subjects/" + encodeURIComponent(pipeline) + "/" +
        encodeURIComponent(subject) + "/events", base);
      url.searchParams.set("token", token);
      this._es = new EventSource(url.href);
      this._es.addEventListener("status", (e) => {
        let s;
        try { s = JSON.parse(e.data); } catch (_) { return; }
        this._show(s);
      });
      this._es.addEventListener("error", (e) => {
        if (e.data) this._fail("This item is no longer available.");
      });
    }
    _show(s) {
      const status = String(s.status == null ? "" : s.status);
      const pct = Math.max(0, Math.min(100, Number(s.progress) || 0));
      const label = status.replace(/_/g, " ");
      if (this._label.textContent !== label) {
        this._label.classList.add("step");
        requestAnimationFrame(() => this._label.classList.remove("step"));
      }
      this._label.textContent = label;
      this._pct.textContent = pct + " %";
      this._bar.style.width = pct + "%";
      this._detail.textContent = s.detail == null ? "" : String(s.detail);
      let name = pct >= 100 ? "check" : pct >= 60 ? "sparkles" : pct > 0 ? "waveform" : "upload";
      if (FINAL_ERR.includes(status)) {
        this.setAttribute("state", "error");
        this._bannerText.textContent = s.detail == null ? "Processing failed." : String(s.detail);
        name = "alert";
      } else if (FINAL_OK.includes(status)) {
        this.setAttribute("state", "done");
        name = "check";
      } else {
        this.setAttribute("state", "running");
      }
      const fresh = icon(name);
      this._icon.replaceWith(fresh);
      this._icon = fresh;
      this.dispatchEvent(new CustomEvent("sluice-status", { detail: s }));
      if (FINAL_OK.includes(status) || FINAL_ERR.includes(status)) this._close();
    }
    _fail(text) {
      this.setAttribute("state", "error");
      this._bannerText.textContent = text;
    }
  }
  if (!customElements.get("sluice-progress"))
    customElements.define("sluice-progress", SluiceProgress);
})();
