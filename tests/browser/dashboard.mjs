// dashboard.mjs - the operator dashboard in headless Chromium against a
// live `sluice serve` + `sluice run` (tests/browser/run): counts that
// change while the workers run, a bulk retry from the job list, the read
// token sees no action buttons and its forged POST is refused, a hostile
// last_error renders as text, the CSP the server sends, screenshots of
// the overview and a subject page.
import { URL, newInterview, ADMIN, READ, sql, until, check, newPage, shot, shotContent, signIn, run, sleep } from "./harness.js";

const XSS = "<img src=x onerror=alert(1)>";

// The done count of batch.work as the overview shows it.
async function doneShown(page) {
  const t = await page.locator("tr[data-stage=work] .chip.s-done b").first().textContent({ timeout: 1000 }).catch(() => null);
  return t === null ? 0 : Number(t);
}

await run(async (b) => {
  // The served page: CSP, ETag, Content-Type.
  const res = await fetch(URL + "/");
  const csp = res.headers.get("content-security-policy") || "";
  check(res.status === 200 && /text\/html/.test(res.headers.get("content-type")), "GET / serves the dashboard as text/html");
  check(/script-src 'self'/.test(csp) && !/unsafe-inline/.test(csp), "the CSP allows this server's scripts only: " + csp);
  const etag = res.headers.get("etag");
  const again = await fetch(URL + "/ui/app.js", { headers: { "If-None-Match": "x" } });
  const et2 = again.headers.get("etag");
  check(again.status === 200 && /text\/javascript/.test(again.headers.get("content-type")) && et2, "/ui/app.js is JavaScript with an ETag");
  check((await fetch(URL + "/ui/app.js", { headers: { "If-None-Match": et2 } })).status === 304, "the ETag answers 304");
  check(etag && (await fetch(URL + "/ui/vendor/uPlot.min.css")).headers.get("content-type").startsWith("text/css"), "vendored CSS is text/css");

  // The hostile error, before the workers get busy.
  const bad = sql(`INSERT INTO batch_jobs (n, status, last_error, error_class, attempts, finished_at)
                   VALUES (1, 'error', '${XSS}', 'invalid_input', 1, now()) RETURNING id`);

  const page = await newPage(b);
  await signIn(page, ADMIN);
  await page.waitForSelector("section.pipeline[data-pipeline=batch]");
  check(await page.locator("text=admin").count() > 0, "the admin token is recognised");
  // Live updates: the /api/events stream where the server has it, else
  // polling (the header says which).
  const ac = new AbortController();
  const ev = await fetch(URL + "/api/events", { headers: { Authorization: "Bearer " + ADMIN }, signal: ac.signal });
  ac.abort();
  const mode = ev.status === 200 ? "live" : "live (polling)";
  await page.waitForSelector(`.live:text-is("${mode}")`, { timeout: 30000 });
  console.log(`ok - the dashboard follows the server ${mode === "live" ? "over /api/events" : "by polling (no /api/events: " + ev.status + ")"}`);

  // Counts change while the workers run: 500 batch jobs (100 fail), and a
  // few interviews (one fails) for the overview's picture.
  for (const fail of [null, null, null, "corrupt upload"])
    sql(`INSERT INTO upload_jobs (interview_id, fail) VALUES ('${newInterview()}', ${fail ? `'${fail}'` : "NULL"})`);
  sql("INSERT INTO batch_jobs (n) SELECT g FROM generate_series(2, 501) g");
  const first = await until("the first done jobs on the overview", async () => { const n = await doneShown(page); return n > 0 && n; });
  const later = await until("the done count to grow without a reload", async () => { const n = await doneShown(page); return n > first && n; });
  check(later > first, `the overview's done count went ${first} -> ${later} while the workers ran`);
  await sleep(8000); // throughput samples for the sparkline
  await shotContent(page, "dashboard-overview.png");
  // Hidden tab: no requests while hidden, caught up on coming back.
  const hide = (hidden) => page.evaluate((h) => {
    Object.defineProperty(document, "hidden", { value: h, configurable: true });
    Object.defineProperty(document, "visibilityState", { value: h ? "hidden" : "visible", configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
  let asked = 0;
  const urls = [];
  const count = (req) => { if (req.url().includes("/api/")) { asked++; urls.push(req.url()); } };
  await hide(true);
  await page.waitForSelector('.live:text-is("paused")');
  page.on("request", count);
  await sleep(5000);
  check(asked === 0, `no API request in 5 s while the tab is hidden (${urls.join(" ")})`);
  const doneNow = Number(sql("SELECT count(*) FROM batch_jobs WHERE status = 'done'"));
  await hide(false);
  await until(`the counts to catch up with the ${doneNow} jobs done`, async () => (await doneShown(page)) >= doneNow, 30000);
  page.off("request", count);
  check(asked > 0, "the tab shown again reads the counts at once");
  await until("the batch to finish", async () => sql("SELECT count(*) FROM batch_jobs WHERE status IN ('pending','in_progress','retry')") === "0", 120000);

  // A hostile last_error is text.
  await page.goto(`${URL}/#/job/batch_jobs/${bad}`);
  await page.waitForSelector("pre.last-error");
  check((await page.textContent("pre.last-error")) === XSS, "the job page shows the hostile last_error as text");
  check(await page.locator("main img").count() === 0, "no img element was made from it");
  await page.goto(`${URL}/#/jobs?pipeline=batch&status=error&q=${encodeURIComponent("<img")}`);
  await page.waitForSelector(`tr[data-job="${bad}"] .last-error`);
  check((await page.textContent(`tr[data-job="${bad}"] .last-error`)) === XSS, "the job list shows it as text too");
  check(await page.locator("main img").count() === 0, "no img element in the list");

  // Bulk retry: select every failed batch job on the page, retry them.
  await page.goto(`${URL}/#/jobs?pipeline=batch&status=error&error_class=invalid_input`);
  const rows = await until("the failed batch jobs in the list", async () => {
    const n = await page.locator("tr[data-job]").count();
    return n >= 50 && n;
  }, 30000);
  check(rows === 50, "the first page holds 50 jobs");
  await page.evaluate(() => scrollTo(0, 0));
  await shot(page, "dashboard-jobs.png");
  // Bulk retry of the page: select all, Retry.
  const ids = await page.locator("tr[data-job]").evaluateAll((trs) => trs.map((t) => t.dataset.job));
  await page.check("th input[type=checkbox]");
  check((await page.textContent(".bulk .muted")) === `${rows} selected`, "select-all selects every row");
  const audits = Number(sql("SELECT count(*) FROM sluice.audit WHERE what = 'retry'"));
  await page.click("button[data-action=retry]");
  await page.waitForSelector("p.note");
  const note = await page.textContent("p.note");
  check(note === `retry: ${rows} jobs changed.`, "the UI reports the bulk retry: " + note);
  check(Number(sql("SELECT count(*) FROM sluice.audit WHERE what = 'retry'")) === audits + 1, "one audit row for the bulk retry");
  check(Number(sql("SELECT count FROM sluice.audit WHERE what = 'retry' ORDER BY at DESC LIMIT 1")) === rows, `the audit row counts ${rows} jobs`);
  check(!ids.includes(bad), "the hostile job (the oldest) was not on the first page");
  // The rest by filter ("Retry all matching", confirmed first): the 51
  // left on the later pages, the hostile one among them, and those of
  // the first 50 that already failed again.
  page.expectDialog(/^retry every job matching these filters\?$/);
  await page.click("button[data-action=retry-filter]");
  await page.waitForSelector('p.note:text-matches("^retry: [0-9]+ jobs? changed")');
  const byFilter = Number((await page.textContent("p.note")).match(/[0-9]+/)[0]);
  check(page.expected === null, "Retry all matching asked for a confirmation first");
  check(byFilter >= 51, `Retry all matching retried the rest: ${byFilter} (at least 51)`);
  check(sql(`SELECT status FROM batch_jobs WHERE id = '${bad}'`) !== "error", "the hostile job was among them");
  await until("the retried hostile job (n = 1) to run again and succeed", async () => sql(`SELECT status FROM batch_jobs WHERE id = '${bad}'`) === "done", 60000);
  console.log("ok - a retried job ran again");

  // Delete (confirmed first): done, or "not available" on a server
  // without the route.
  const victim = await page.locator("tr[data-job]").first().getAttribute("data-job");
  await page.locator(`tr[data-job="${victim}"] input[type=checkbox]`).check();
  page.expectDialog(/^Delete 1 job\? This cannot be undone\.$/);
  await page.click("button[data-action=delete]");
  await page.waitForSelector('p.note:text-matches("^delete")');
  const deleted = await page.textContent("p.note");
  check(page.expected === null, "Delete asked for a confirmation first");
  check(deleted === "delete: 1 job changed." || deleted === "delete is not available on this server.", "delete answers: " + deleted);

  // A subject page: an interview on its way.
  const subject = newInterview();
  sql(`INSERT INTO upload_jobs (interview_id) VALUES ('${subject}')`);
  await page.goto(`${URL}/#/subject/interview/${subject}`);
  await page.waitForSelector(".flow .step");
  // The picture: a stage at work if the page catches one (the page reads
  // every second, a stage takes about as long), else the end.
  const state = await until("the last stage at work or the end", async () => {
    const now = await page.textContent(".subject-status");
    const pct = await page.textContent(".subject-head .pct");
    if (now === "processing" && pct !== "70 %" && await page.locator(".flow .step.s-in_progress").count()) return "working";
    return now === "ready" ? "ready" : null;
  }, 60000);
  if (state === "working") await shotContent(page, "dashboard-subject.png");
  await until("the subject page to follow the interview to ready", async () =>
    (await page.textContent(".subject-status")) === "ready", 60000);
  if (state !== "working") await shotContent(page, "dashboard-subject.png");
  check((await page.locator(".flow .step").count()) === 3, "the subject page shows its three stages as a flow");
  check((await page.locator(".flow .step.s-done").count()) === 3, "every stage is done");

  // The other pages answer (or say "not available").
  // Workers and statistics: drawn from the server's answer, or "not
  // available" where the server has no such route (404).
  for (const [route, hash, drawn, none] of [["/api/workers", "#/workers", "table.list", "No workers."],
    ["/api/stats?minutes=60", "#/stats", ".uplot", "No jobs finished in this range."]]) {
    const r = await fetch(URL + route, { headers: { Authorization: "Bearer " + ADMIN } });
    await page.goto(URL + "/" + hash);
    const shown = r.status === 404 ? page.getByText("is not available on this server")
      : page.locator(drawn).or(page.getByText(none));
    await shown.first().waitFor({ timeout: 30000 });
    console.log(`ok - ${hash}: ${r.status === 404 ? "not available (404)" : "drawn"}`);
  }
  for (const [hash, what, name] of [["#/workers", "Workers"], ["#/stats", "Statistics"], ["#/stage/batch/work", "Recent failures", "dashboard-stage.png"]]) {
    await page.goto(URL + "/" + hash);
    await page.waitForSelector(`text=${what}`);
    await until(`${hash} to load`, async () => !(await page.locator("text=Loading…").count()), 30000);
    if (name) await shotContent(page, name);
  }
  // Pause and resume (admin): done, or "not available" on a server
  // without the route.
  await page.click("button[data-action=pause]");
  const said = await (await page.waitForSelector("p.note")).textContent();
  check(said === "Paused." || said === "Pausing a stage is not available on this server.", "pause answers: " + said);
  if (said === "Paused.") {
    await page.waitForSelector('button[data-action=pause]:text-is("Resume")');
    await page.click("button[data-action=pause]");
    await page.waitForSelector('p.note:text-is("Resumed.")');
    console.log("ok - resumed");
  }
  check(page.problems.length === 0, "no script errors, CSP violations or dialogs: " + page.problems.join("; "));

  // The read token: no action buttons; a forged POST is refused.
  const ro = await newPage(b);
  await signIn(ro, READ);
  await ro.waitForSelector("section.pipeline");
  check(await ro.locator("text=read only").count() > 0, "the read token is recognised");
  const failed = sql("SELECT id FROM batch_jobs WHERE status = 'error' LIMIT 1");
  const actions = "button[data-action], tbody input[type=checkbox]";
  for (const hash of ["#/jobs?pipeline=batch&status=error", "#/stage/batch/work", `#/job/batch_jobs/${failed}`]) {
    // The same page with the admin token has them (so the check can fail).
    await page.goto(URL + "/" + hash);
    await page.waitForSelector("main h1");
    await page.locator(actions).first().waitFor();
    await ro.goto(URL + "/" + hash);
    await ro.waitForSelector("main h1");
    await ro.waitForSelector("main tbody tr, main dl.facts");
    check(await ro.locator(actions).count() === 0, `no action buttons on ${hash} with the read token (the admin sees them)`);
  }
  const forged = await ro.evaluate(async ([bad, token]) => {
    const r = await fetch("/api/jobs/cancel", { method: "POST", headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" }, body: JSON.stringify({ ids: [bad] }) });
    return { status: r.status, body: await r.json() };
  }, [bad, READ]);
  check(forged.status === 403 && forged.body.error.code === "forbidden", "a forged POST with the read token is refused (403 forbidden)");
  check(ro.problems.length === 0, "no script errors for the read-only user: " + ro.problems.join("; "));
});
