// The web UI in a real browser: Debian's Chromium driven by playwright-core, against a real
// `stepwise serve` on 127.0.0.1 with API keys on. Run by .ci/run (`npm test` here) after
// `cargo build`; `cargo test` does not need Chromium. Screenshots go to target/ui-screenshots/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, existsSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "../..");
const bin = process.env.STEPWISE_BIN || join(repo, "target/debug/stepwise");
const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";
const shots = join(repo, "target/ui-screenshots");
const TIMEOUT = 15000;

let work, server, base, browser, keyA, keyB, keyOps, evil, evilBase;

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

function createKey(db, workspace) {
  const out = execFileSync(bin, ["keys", "create", "--workspace", workspace, "--db", db], { encoding: "utf8" });
  return out.trim().split(/\s+/)[0];
}

async function api(key, method, path, body) {
  const r = await fetch(base + path, {
    method,
    headers: { "x-api-key": key, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await r.json();
  assert.ok(r.status < 300, `${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json.data;
}

async function startRun(definitionId, input, wait = "10s") {
  return api(keyA, "POST", `/v1/workflow-runs?wait=${wait}`, { definitionId, input });
}

async function signedInPage(key) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(base + "/ui/runs");
  assert.match(page.url(), /\/ui\/sign-in/);
  await page.getByLabel("API key").fill(key);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/ui\/runs/);
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: false });
}

before(async () => {
  assert.ok(existsSync(bin), `build stepwise first (cargo build): ${bin} is missing`);
  mkdirSync(shots, { recursive: true });
  work = mkdtempSync(join(tmpdir(), "stepwise-ui-"));
  const db = join(work, "ui.db");
  keyA = createKey(db, "alpha");
  keyB = createKey(db, "beta");
  keyOps = createKey(db, "default"); // the workspace --definitions loads triggers into
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  server = spawn(bin, ["serve", "--addr", `127.0.0.1:${port}`, "--db", db, "--definitions", join(here, "workflows")], {
    stdio: ["ignore", "inherit", "pipe"],
  });
  let log = "";
  server.stderr.on("data", (d) => { log += d; });
  for (let i = 0; i < 150; i++) {
    try { if ((await fetch(base + "/healthz")).ok) break; } catch { /* not yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  // --definitions loads into the default workspace; the keys act in their own: apply there.
  for (const f of ["expense", "quick-approval", "flaky", "fan-out", "long-names"]) {
    const { readFileSync } = await import("node:fs");
    const r = await fetch(base + "/v1/workflow-definitions", {
      method: "POST",
      headers: { "x-api-key": keyA, "content-type": "application/yaml" },
      body: readFileSync(join(here, "workflows", `${f}.yaml`), "utf8"),
    });
    assert.ok(r.status < 300, `apply ${f}: ${r.status} ${await r.text()} ${log}`);
  }
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
  });
  // A foreign page on another port of this machine: same site (so the session cookie goes
  // along), another origin.
  const evilPort = await freePort();
  evilBase = `http://127.0.0.1:${evilPort}`;
  evil = createServer((req, res) => {
    const target = new URL(req.url, evilBase).searchParams.get("target");
    res.setHeader("content-type", "text/html");
    res.end(`<!doctype html><form id="f" method="post" action="${target}"><input name="_csrf" value="guess"></form>
      <script>document.getElementById("f").submit()</script>`);
  });
  await new Promise((ok) => evil.listen(evilPort, "127.0.0.1", ok));
});

after(async () => {
  await browser?.close();
  evil?.close();
  if (server) {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  }
  if (work) rmSync(work, { recursive: true, force: true });
});

test("sign in with a key and filter History by status, in the URL", async () => {
  const paused = await startRun("quick-approval", {});
  const other = await startRun("expense", { employee: "Ada", amount: 12 });
  await api(keyA, "POST", `/v1/workflow-runs/${other.id}/resume`, { step: "review", input: "approve" });
  const page = await signedInPage(keyA);
  await page.getByRole("link", { name: paused.id }).waitFor();
  await shot(page, "history");
  await page.getByLabel("Status").selectOption("PAUSED");
  await page.waitForURL(/status=PAUSED/);
  await page.locator(`tr[data-run="${other.id}"]`).waitFor({ state: "detached" });
  const badges = await page.locator("#runs tbody .badge").allTextContents();
  assert.ok(badges.length >= 1 && badges.every((b) => b === "Waiting for approval"), badges.join(","));
  await shot(page, "history-paused");
  await page.goBack();
  await page.waitForURL((u) => !u.search.includes("status="));
  await page.reload();
  await page.locator(`tr[data-run="${other.id}"]`).waitFor();
  assert.equal(await page.locator(`tr[data-run="${other.id}"] .badge`).textContent(), "Waiting on hook");
  await page.context().close();
});

test("open a run and switch every tab", async () => {
  const run = await startRun("expense", { employee: "Grace", amount: 99 });
  const page = await signedInPage(keyA);
  await page.getByRole("link", { name: run.id }).click();
  await page.waitForURL(new RegExp(`/ui/runs/${run.id}`));
  await page.getByRole("heading", { name: "Input" }).waitFor();
  await page.getByRole("button", { name: "YAML", exact: true }).click();
  assert.ok(await page.locator("#input-yaml").isVisible());
  assert.match(await page.locator("#input-yaml").textContent(), /employee: Grace/);
  await shot(page, "run-overview");
  for (const [tab, expect] of [["Graph", "svg"], ["Timeline", ".wf"], ["Metadata", "dl.meta"], ["Trace", "ol.trace"]]) {
    await page.getByRole("tab", { name: tab }).click();
    await page.locator(`#panel ${expect}`).first().waitFor();
    assert.equal(await page.getByRole("tab", { name: tab }).getAttribute("aria-selected"), "true");
    await shot(page, `run-${tab.toLowerCase()}`);
  }
  // Graph: a step's attempts.
  await page.getByRole("tab", { name: "Graph" }).click();
  await page.locator('a[data-step="summary"]').click();
  await page.getByRole("heading", { name: /Attempts of/ }).waitFor();
  assert.match(await page.locator("#attempts").textContent(), /Grace asks for 99 EUR/);
  await shot(page, "graph");
  // Keyboard: the tabs are links a keyboard reaches.
  await page.getByRole("tab", { name: "Overview" }).focus();
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: "Input" }).waitFor();
  await page.context().close();
});

test("approve a PAUSED run and watch it complete without reloading", async () => {
  const run = await startRun("quick-approval", {});
  const page = await signedInPage(keyA);
  await page.goto(`${base}/ui/runs/${run.id}`);
  await page.evaluate(() => { window.__sameDocument = true; });
  assert.equal(await page.locator("#live .runhead .badge").textContent(), "Waiting for approval");
  // Decided elsewhere (the API): the open page follows over server-sent events.
  await api(keyA, "POST", `/v1/workflow-runs/${run.id}/resume`, { step: "review", input: "yes" });
  await page.locator("#live .runhead .badge", { hasText: "Completed" }).waitFor();
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "the page was not reloaded");

  // And from the page itself, with the buttons the approval's options make.
  const second = await startRun("quick-approval", {});
  await page.goto(`${base}/ui/runs/${second.id}`);
  await page.evaluate(() => { window.__sameDocument = true; });
  assert.match(await page.locator(".message").textContent(), /Ship it\?/);
  await page.getByRole("button", { name: "yes" }).click();
  await page.locator("#live .runhead .badge", { hasText: "Completed" }).waitFor();
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "htmx swapped the page in place");
  await page.getByRole("tab", { name: "Trace" }).click();
  await page.locator("ol.trace", { hasText: "approval.decided" }).waitFor();
  assert.match(await page.locator("ol.trace").textContent(), /key:stw_\w+ \(ui\)/);
  await page.context().close();
});

test("send an invalid then a valid signal", async () => {
  const run = await startRun("expense", { employee: "Lin", amount: 5 });
  await api(keyA, "POST", `/v1/workflow-runs/${run.id}/resume`, { step: "review", input: "approve" });
  const page = await signedInPage(keyA);
  await page.goto(`${base}/ui/runs/${run.id}`);
  await page.getByRole("heading", { name: /Waiting on hook/ }).waitFor();
  await page.getByLabel("reference").fill("P");
  await page.getByLabel("fee").fill("2");
  await page.getByRole("button", { name: "Send signal" }).click();
  await page.locator(".error", { hasText: "shorter than 3" }).waitFor();
  await shot(page, "signal-invalid");
  const signals = await api(keyA, "GET", `/v1/workflow-runs/${run.id}`);
  assert.equal(signals.status, "WAITING", "nothing was sent");
  await page.getByLabel("reference").fill("PO-77");
  await page.getByRole("button", { name: "Send signal" }).click();
  await page.locator("#live .runhead .badge", { hasText: "Completed" }).waitFor();
  await page.context().close();
});

test("cancel a run, and retry a failed one", async () => {
  const run = await startRun("quick-approval", {});
  const failed = await startRun("flaky", {}, "60s");
  assert.equal(failed.status, "FAILED");
  const page = await signedInPage(keyA);
  await page.goto(`${base}/ui/runs/${run.id}`);
  await page.getByRole("button", { name: "Cancel run" }).click();
  await page.locator("#live .runhead .badge", { hasText: "Cancelled" }).waitFor();

  await page.goto(`${base}/ui/runs/${failed.id}?tab=trace`);
  await page.getByRole("button", { name: /Retry/ }).click();
  await page.locator("ol.trace", { hasText: "run.retried" }).waitFor();
  const after = await api(keyA, "GET", `/v1/workflow-runs/${failed.id}`);
  assert.equal(after.attempt, 2);
  await page.context().close();
});

test("run a workflow from its input form", async () => {
  const page = await signedInPage(keyA);
  await page.getByRole("link", { name: "Workflows" }).click();
  await page.getByRole("link", { name: "expense", exact: true }).click();
  await page.locator(".source").waitFor();
  await shot(page, "definition");
  await page.getByLabel("amount").fill("7");
  await page.getByRole("button", { name: "Run expense" }).click();
  await page.locator(".error").first().waitFor();
  assert.match(await page.locator("main").textContent(), /employee/);
  const seen = [];
  page.on("request", (r) => seen.push(["REQ", Date.now() % 100000, r.method(), r.url(), r.headers()["hx-request"] || ""].join(" ")));
  page.on("response", (r) => seen.push(["RESP", Date.now() % 100000, r.status(), r.url()].join(" ")));
  page.on("console", (m) => seen.push("CONSOLE " + m.text()));
  await page.getByLabel("employee").fill("Ines");
  await page.getByRole("button", { name: "Run expense" }).click();
  await page.waitForURL(/\/ui\/runs\/wfrun_/);
  try {
    await page.locator("#live .runhead .badge", { hasText: "Waiting for approval" }).waitFor();
  } catch (e) {
    console.log(seen.join("\n"), await page.locator("#live .runhead.card").textContent());
    throw e;
  }
  assert.match(await page.locator("#input-json").textContent(), /"employee": "Ines"/);
  await page.goto(base + "/ui/approvals");
  await page.getByRole("heading", { name: "Approvals" }).waitFor();
  await shot(page, "approvals");
  await page.goto(base + "/ui/triggers");
  await shot(page, "triggers");
  await page.context().close();
});

test("a second workspace's key sees none of the first's runs", async () => {
  const run = await startRun("quick-approval", {});
  const page = await signedInPage(keyB);
  await page.locator("#runs", { hasText: "No runs yet" }).waitFor();
  assert.equal(await page.getByRole("link", { name: run.id }).count(), 0);
  const r = await page.goto(`${base}/ui/runs/${run.id}`);
  assert.equal(r.status(), 404);
  await page.context().close();
});

test("a cross-origin POST is refused", async () => {
  const run = await startRun("quick-approval", {});
  const page = await signedInPage(keyA);
  const target = `${base}/ui/runs/${run.id}/cancel`;
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url() === target),
    page.goto(`${evilBase}/?target=${encodeURIComponent(target)}`),
  ]);
  assert.equal(response.status(), 403);
  const still = await api(keyA, "GET", `/v1/workflow-runs/${run.id}`);
  assert.equal(still.status, "PAUSED", "the foreign page changed nothing");
  await page.context().close();
});

test("phone-sized screens and long ids keep the layout", async () => {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  await page.goto(base + "/ui/sign-in");
  await page.getByLabel("API key").fill(keyA);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/ui\/runs/);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  const wide = await page.evaluate(() => [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > window.innerWidth + 1)
    .slice(0, 5).map((e) => `${e.tagName}.${e.className}: ${e.textContent.slice(0, 60)}`));
  assert.ok(width <= 392, `no sideways scrolling on a phone (page is ${width}px wide): ${wide.join(" | ")}`);
  await shot(page, "history-phone");
  await context.close();
});

test("the Triggers page shows a webhook's last firing and last error", async () => {
  const post = (body) => fetch(base + "/v1/webhooks/orders", {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  assert.equal((await post({ nope: 1 })).status, 400);
  assert.equal((await post({ order: "o-1" })).status, 202);
  const page = await signedInPage(keyOps);
  await page.getByRole("link", { name: "Triggers" }).click();
  const row = page.locator('tr[data-trigger="orders-hook"]');
  await row.waitFor();
  const cells = await row.locator("td").allTextContents();
  assert.equal(cells[1].trim(), "webhook");
  assert.equal(cells[3].trim(), "—", "a webhook has no next firing");
  assert.match(cells[4], /^\d{4}-\d\d-\d\dT/, `last firing: ${cells[4]}`);
  assert.match(cells[5], /does not match the schema/, `last error: ${cells[5]}`);
  await shot(page, "triggers-webhook");
  await page.context().close();
});

test("screenshots for the docs: History and a run's Graph", async () => {
  const run = await startRun("fan-out", {});
  const page = await signedInPage(keyA);
  await page.setViewportSize({ width: 1280, height: 720 });
  await page.locator(`tr[data-run="${run.id}"]`).waitFor();
  await page.screenshot({ path: join(shots, "docs-history.png") });
  await page.goto(`${base}/ui/runs/${run.id}?tab=graph`);
  await page.locator('a[data-step="approve_order"]').waitFor();
  await page.screenshot({ path: join(shots, "docs-graph.png") });
  await page.context().close();
});

test("large payloads fold, long names wrap, and the keyboard reaches everything", async () => {
  const lines = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`field_${i}`, "x".repeat(i)]));
  const run = await startRun("a-workflow-with-a-rather-long-name-that-goes-on-and-on-and-on", { blob: lines, word: "y".repeat(400) });
  const page = await signedInPage(keyA);
  await page.goto(`${base}/ui/runs/${run.id}`);
  const fold = page.locator('section[aria-label="Input"] details');
  await fold.waitFor();
  assert.match(await fold.locator("summary").textContent(), /Show \d+ lines/);
  assert.equal(await page.locator("#input-json").isVisible(), false, "folded until asked");
  await fold.locator("summary").click();
  assert.ok(await page.locator("#input-json").isVisible());
  const noSideways = async () => page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
  assert.ok(await noSideways(), "the run page does not scroll sideways");
  // On a phone too, in every tab: long names wrap, the graph scrolls inside its box.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const tab of ["overview", "graph", "timeline", "metadata", "trace"]) {
    await page.goto(`${base}/ui/runs/${run.id}?tab=${tab}`);
    await page.locator("#panel").waitFor();
    assert.ok(await noSideways(), `the ${tab} tab does not scroll sideways on a phone`);
  }
  await shot(page, "long-names-phone");
  await page.setViewportSize({ width: 1280, height: 860 });
  await page.goto(`${base}/ui/runs`);
  assert.ok(await noSideways(), "History does not scroll sideways");
  // Every control has a label.
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll("input:not([type=hidden]), select, button, textarea")]
    .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label") && !el.textContent.trim())
    .map((el) => el.outerHTML));
  assert.deepEqual(unlabelled, []);
  // The keyboard: the skip link first, then into the page; Tab reaches the Status filter.
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  let reached = false;
  for (let i = 0; i < 15 && !reached; i++) {
    await page.keyboard.press("Tab");
    reached = await page.evaluate(() => document.activeElement.name === "status");
  }
  assert.ok(reached, "Tab reaches the status filter");
  await shot(page, "long-names");
  await page.context().close();
});
