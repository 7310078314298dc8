// widget.mjs - <sluice-progress> on a plain HTML page of another origin
// (a page served by this test, the widget and its stream from sluice):
// it follows an interview from 0 to `ready 100 %` through the mapping's
// labels, and shows the error banner for one that fails.
import { createServer } from "node:http";
import { URL, newInterview, sql, sluice, until, check, newPage, shot, run } from "./harness.js";

function page(subject, token) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>my app</title>
<script src="${URL}/widget.js" defer></script></head>
<body style="font-family:sans-serif;background:#fafafa;padding:24px;margin:0">
<sluice-progress pipeline="interview" subject="${subject}" token="${token}" style="max-width:420px"></sluice-progress>
</body></html>`;
}

const subjects = {};
const server = createServer((req, res) => {
  const id = req.url.slice(1);
  if (!subjects[id]) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { "Content-Type": "text/html; charset=utf-8" });
  res.end(page(id, subjects[id]));
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const app = `http://127.0.0.1:${server.address().port}`;

// The widget's box and 16 px around it.
async function around(p) {
  const r = await p.locator("sluice-progress").boundingBox();
  return { x: r.x - 16, y: r.y - 16, width: r.width + 32, height: r.height + 32 };
}

async function follow(b, fail) {
  const id = newInterview();
  subjects[id] = sluice("token", id, "--ttl", "15m");
  const p = await newPage(b, { viewport: { width: 480, height: 200 } });
  await p.addInitScript(() => {
    window.seen = [];
    document.addEventListener("sluice-status", (e) => window.seen.push(e.detail), true);
  });
  await p.goto(`${app}/${id}`);
  await until("the widget's first state", () => p.evaluate(() => window.seen.length > 0), 30000);
  const first = (await p.evaluate(() => window.seen))[0];
  check(first.status === "uploading" && first.progress === 0, `the widget starts at ${first.status} ${first.progress} %`);
  sql(`INSERT INTO upload_jobs (interview_id, fail) VALUES ('${id}', ${fail ? "'corrupt upload'" : "NULL"})`);
  return { id, p };
}

await run(async (b) => {
  const { p } = await follow(b, false);
  await until("ready 100 %", () => p.evaluate(() => window.seen.some((s) => s.status === "ready" && s.progress === 100)), 60000);
  const seen = await p.evaluate(() => window.seen);
  const labels = [...new Set(seen.map((s) => s.status))];
  console.log("states: " + seen.map((s) => `${s.status} ${s.progress}% ${s.detail || ""}`).join(" | "));
  check(labels[labels.length - 1] === "ready", "the last label is ready");
  check(labels.length >= 3 && labels.every((l) => ["uploading", "uploaded", "transcribed", "processing", "ready"].includes(l)),
    "the widget showed the mapping's labels in turn: " + labels.join(" -> "));
  const progress = seen.map((s) => s.progress);
  check(progress.every((v, i) => i === 0 || v >= progress[i - 1]), "the progress never went back: " + progress.join(","));
  const shadow = await p.evaluate(() => {
    const r = document.querySelector("sluice-progress").shadowRoot;
    return { label: r.querySelector(".label").textContent, pct: r.querySelector(".pct").textContent };
  });
  check(shadow.label === "ready" && /100/.test(shadow.pct), `the card reads ${shadow.label} ${shadow.pct}`);
  await shot(p, "dashboard-widget.png", { clip: await around(p) });
  check(p.problems.length === 0, "no script errors on the page: " + p.problems.join("; "));

  const f = await follow(b, true);
  await until("the error banner", () => f.p.evaluate(() => document.querySelector("sluice-progress").getAttribute("state") === "error"), 60000);
  const banner = await f.p.evaluate(() => {
    const el = document.querySelector("sluice-progress").shadowRoot.querySelector(".banner");
    return { shown: getComputedStyle(el).display !== "none", text: el.textContent };
  });
  check(banner.shown, "the failing interview shows the error banner: " + banner.text);
  await shot(f.p, "dashboard-widget-error.png", { clip: await around(f.p) });
});
server.close();
