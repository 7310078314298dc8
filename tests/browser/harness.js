// harness.js - what the browser tests share: Chromium through
// playwright-core, SQL through psql (libpq's environment), waiting, and
// screenshots (written to $SLUICE_BROWSER_OUT, and to docs/img/ with
// SLUICE_UPDATE_SCREENSHOTS=1).
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { copyFileSync } from "node:fs";
import { join } from "node:path";

export const URL = process.env.SLUICE_URL;
export const ADMIN = process.env.SLUICE_ADMIN_TOKEN;
export const READ = process.env.SLUICE_READ_TOKEN;

export function sql(q) {
  return execFileSync("psql", ["-XqAt", "-v", "ON_ERROR_STOP=1", "-c", q], { encoding: "utf8" }).trim();
}

// A new interview (the reference design's table, from sql/base.sql) of
// one test account; its id.
export function newInterview() {
  const account = sql("INSERT INTO accounts (name) VALUES ('browser test') RETURNING id");
  return sql(`INSERT INTO interviews (account_id) VALUES ('${account}') RETURNING id`);
}

export function sluice(...args) {
  return execFileSync(process.env.SLUICE_BIN, args, { encoding: "utf8" }).trim();
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls f until it returns a truthy value; fails with what after limitMs.
export async function until(what, f, limitMs = 60000) {
  const end = Date.now() + limitMs;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

export function check(ok, msg) {
  if (!ok) throw new Error("check failed: " + msg);
  console.log("ok - " + msg);
}

export async function browser() {
  return chromium.launch({ executablePath: process.env.SLUICE_CHROMIUM, args: ["--no-sandbox"] });
}

// A page that records console errors, CSP violations and dialogs (an
// alert would mean injected script ran).
export async function newPage(b, opts = {}) {
  const ctx = await b.newContext({ viewport: { width: 1280, height: 800 }, reducedMotion: "reduce", ...opts });
  const page = await ctx.newPage();
  page.setDefaultTimeout(60000); // a loaded machine: generous, never a measure
  page.problems = [];
  // A dialog is a problem (an injected alert), unless the test said it
  // expects one (page.expectDialog(regexp)): that one is accepted.
  page.expected = null;
  page.expectDialog = (re) => { page.expected = re; };
  page.on("dialog", (d) => {
    if (page.expected && page.expected.test(d.message())) { page.expected = null; d.accept(); return; }
    page.problems.push("dialog: " + d.message());
    d.dismiss();
  });
  page.on("pageerror", (e) => page.problems.push("page error: " + e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource|EventSource/.test(m.text())) page.problems.push("console: " + m.text());
  });
  return page;
}

export async function shot(page, name, opts = {}) {
  const file = join(process.env.SLUICE_BROWSER_OUT, name);
  await page.screenshot({ path: file, ...opts });
  if (process.env.SLUICE_UPDATE_SCREENSHOTS === "1")
    copyFileSync(file, join(process.env.SLUICE_ROOT, "docs", "img", name));
  console.log("screenshot " + file);
}

// The page down to the end of its content (no empty viewport below).
export async function shotContent(page, name) {
  const bottom = await page.evaluate(() => Math.ceil(document.querySelector("main").getBoundingClientRect().bottom + scrollY));
  const width = page.viewportSize().width;
  await shot(page, name, { fullPage: true, clip: { x: 0, y: 0, width, height: Math.max(200, bottom) } });
}

export async function signIn(page, token) {
  await page.goto(URL + "/");
  await page.fill("input[name=token]", token);
  await page.click("button[type=submit]");
  await page.waitForSelector("header.top");
}

// Runs main, reports, closes the browser, exits 1 on a failure.
export async function run(main) {
  const b = await browser();
  try {
    await main(b);
    console.log("passed");
  } catch (e) {
    console.error(e.stack || String(e));
    process.exitCode = 1;
  } finally {
    await b.close();
  }
}
