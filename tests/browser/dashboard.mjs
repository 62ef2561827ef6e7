// Drives the chit dashboard in Debian's chromium, as a person would, for
// tests/dashboard_browser.rs: enter the key, publish a task through the
// gateway, watch it reach `succeeded`, open its receipt chain and that of
// a task that succeeds on its retry, then dead-letter a task, replay it from the dead-letter page and see it
// succeed, and purge another (after saying no once). A screenshot is taken
// at each step. Every wait is on a condition, with a deadline.
//
// Environment:
//   DASHBOARD_URL   the gateway, e.g. http://127.0.0.1:8080 (required)
//   DASHBOARD_KEY   a bearer key with the `*` and `admin` scopes (required)
//   SCREENSHOT_DIR  where the PNGs go (required; created)
//   REPLAY_FLAG     a path that does not exist yet: the dead-lettered task
//                   runs `test -e REPLAY_FLAG`, and this script creates the
//                   file before replaying, so the replay succeeds (required)
//   CHROMIUM        the browser (default /usr/bin/chromium)
//   TASK_TYPE       the capability the worker serves (default command.execute)
//
// Exits 0 when every step passed; otherwise prints the failed step, saves
// failure.png and exits 1.

import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === "") {
    console.error(`dashboard.mjs: ${name} is required`);
    process.exit(2);
  }
  return v;
};

const base = env("DASHBOARD_URL").replace(/\/$/, "");
const apiKey = env("DASHBOARD_KEY");
const outDir = env("SCREENSHOT_DIR");
const replayFlag = env("REPLAY_FLAG");
const executablePath = env("CHROMIUM", "/usr/bin/chromium");
const taskType = env("TASK_TYPE", "command.execute");

const STEP = 30_000; // most steps: the page polls every 2 s
const RUN = 90_000; // a task's whole run, through worker and sink

fs.mkdirSync(outDir, { recursive: true });

let page;
let shot = 0;
const problems = [];

function log(msg) {
  console.log(`[dashboard] ${msg}`);
}

async function screenshot(name) {
  shot += 1;
  const file = path.join(outDir, `${String(shot).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  log(`screenshot ${file}`);
}

function fail(message) {
  throw new Error(message);
}

/** The visible text of a test id, trimmed. */
async function text(testid) {
  return (await page.getByTestId(testid).first().textContent())?.trim() ?? "";
}

/** Publishes through the gateway's API, as a client would. */
async function publish(payload, extra = {}) {
  const res = await page.request.post(`${base}/v1/tasks`, {
    headers: { Authorization: `Bearer ${apiKey}` },
    data: { task_type: taskType, payload, ...extra },
  });
  const body = await res.text();
  if (res.status() !== 202) fail(`POST /v1/tasks answered ${res.status()}: ${body}`);
  const { task_id: id } = JSON.parse(body);
  if (!id) fail(`POST /v1/tasks gave no task_id: ${body}`);
  log(`published ${id} ${JSON.stringify(payload)}`);
  return id;
}

/** The receipt types of the timeline on screen, in order. */
async function timelineTypes() {
  return page.getByTestId("timeline-item").evaluateAll((els) => els.map((e) => e.dataset.receiptType));
}

/**
 * Waits until the timeline on screen holds `want` in this order (other
 * receipts may come between); returns its types.
 */
async function waitForTimeline(what, want, timeout = RUN) {
  const handle = await page.waitForFunction(
    (want) => {
      const types = [...document.querySelectorAll('[data-testid="timeline-item"]')].map((e) => e.dataset.receiptType);
      let i = 0;
      for (const t of types) if (t === want[i]) i += 1;
      return i === want.length ? types : null;
    },
    want,
    { timeout, polling: 250 },
  ).catch(async (e) => fail(`${what}: wanted ${want.join(" → ")}: ${e.message}; timeline was ${JSON.stringify(await timelineTypes())}`));
  return handle.jsonValue();
}

const row = (testid, id) => page.locator(`[data-testid="${testid}"][data-task-id="${id}"]`);

async function main() {
  const args = ["--disable-dev-shm-usage"];
  // Chromium's own sandbox needs user namespaces, which a root CI
  // container does not give; the page is our own.
  if (process.getuid && process.getuid() === 0) args.push("--no-sandbox");
  const browser = await chromium.launch({ executablePath, headless: true, args });
  try {
    const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, colorScheme: "light" });
    page = await context.newPage();
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      // A failed request is judged by the response listener below, which
      // knows its URL; the console only says "status of 404".
      if (m.type() === "error" && !/status of (401|404)/.test(m.text())) problems.push(`console error: ${m.text()}`);
    });
    // Every failed request is a problem, but two: 401 (the key prompt), and
    // 404 for a task opened right after its publish, before the sink stored
    // its first receipt; the page shows "Waiting for them" and polls on.
    const taskGet = (url) => url.startsWith(`${base}/v1/tasks/`) && /^[^/?]+$/.test(url.slice(base.length + 10));
    page.on("response", (r) => {
      const s = r.status();
      if (s < 400 || s === 401) return;
      if (s === 404 && r.request().method() === "GET" && taskGet(r.url())) return;
      problems.push(`HTTP ${s} for ${r.request().method()} ${r.url()}`);
    });
    page.setDefaultTimeout(STEP);

    // 1. The page asks for the key, once.
    log(`opening ${base}/`);
    const res = await page.goto(`${base}/`);
    if (!res || res.status() !== 200) fail(`GET / answered ${res && res.status()}`);
    await page.getByTestId("key-dialog").waitFor({ state: "visible" });
    await page.getByLabel("Key", { exact: true }).fill(apiKey);
    await screenshot("key-prompt");
    await page.getByTestId("key-submit").click();
    await page.getByTestId("key-dialog").waitFor({ state: "hidden" });
    await page.locator('[data-testid="live-status"][data-state="live"]').waitFor();
    log(`key accepted; status: ${await text("live-status")}`);

    // 2. A task published through the gateway shows up and succeeds.
    const okId = await publish({ command: "echo hello from the dashboard test" });
    await row("task-row", okId).waitFor({ timeout: RUN });
    await page.locator(`[data-testid="task-row"][data-task-id="${okId}"][data-state="succeeded"]`).waitFor({ timeout: RUN });
    log(`task ${okId} is succeeded in the list`);
    await screenshot("task-succeeded");

    // 3. Its chain, as a timeline: queued, accepted, success.
    await row("task-row", okId).getByTestId("task-link").click();
    await page.getByTestId("view-task").waitFor();
    const okTypes = await waitForTimeline("the chain of the succeeded task", ["queued", "accepted", "success"]);
    if ((await text("task-id")) !== okId) fail(`the chain page shows task ${await text("task-id")}`);
    if ((await text("summary-state")) !== "succeeded") fail(`summary state ${await text("summary-state")}`);
    log(`timeline of ${okId}: ${okTypes.join(" → ")}`);
    await screenshot("task-chain");

    // 3b. A task that fails once and succeeds on its retry: the timeline
    // shows the retry and the second attempt.
    const counter = path.join(path.dirname(replayFlag), "retry-count");
    const retryId = await publish(
      { command: `n=$(cat '${counter}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '${counter}'; test $n -ge 2` },
      { max_attempts: 2 },
    );
    await page.goto(`${base}/#/task/${encodeURIComponent(retryId)}`);
    const retryTypes = await waitForTimeline("the chain of the retried task",
      ["queued", "accepted", "failure", "retry_scheduled", "accepted", "success"]);
    await page.getByTestId("note-retry").first().waitFor();
    await page.getByTestId("timeline-attempt").nth(1).waitFor();
    log(`timeline of ${retryId}: ${retryTypes.join(" → ")}`);
    await screenshot("retried-chain");

    // 4. The worker is live, and the queue figures come from the management API.
    await page.getByTestId("nav-workers").click();
    await page.getByTestId("worker-row").first().waitFor();
    const caps = await page.getByTestId("worker-row").first().textContent();
    if (!caps.includes(taskType)) fail(`the worker row does not list ${taskType}: ${caps}`);
    await screenshot("workers");
    await page.getByTestId("nav-queues").click();
    await page.locator(`[data-testid="queue-row"][data-task-type="${taskType}"]`).waitFor();
    if (await page.getByTestId("queues-notice").isVisible()) fail(`queues notice: ${await text("queues-notice")}`);
    await screenshot("queues");

    // 5. A task that fails with one attempt is dead-lettered.
    const deadId = await publish({ command: `test -e '${replayFlag}'` }, { max_attempts: 1 });
    await page.getByTestId("nav-tasks").click();
    await page.getByTestId("filter-state").selectOption("dead_lettered");
    await page.locator(`[data-testid="task-row"][data-task-id="${deadId}"][data-state="dead_lettered"]`).waitFor({ timeout: RUN });
    log(`task ${deadId} is dead-lettered`);
    await screenshot("dead-lettered-filter");

    // 6. The dead-letter page lists it; replay it (its command now succeeds).
    await page.getByTestId("nav-dlq").click();
    const summary = page.locator(`[data-testid="dlq-summary-row"][data-task-type="${taskType}"]`);
    await summary.waitFor();
    await page.waitForFunction(
      (t) => Number(document.querySelector(`[data-testid="dlq-summary-row"][data-task-type="${t}"] [data-testid="dlq-count"]`)?.textContent) >= 1,
      taskType,
      { timeout: RUN },
    );
    await summary.getByTestId("dlq-open").click();
    await row("dlq-row", deadId).waitFor({ timeout: RUN });
    await screenshot("dlq");
    fs.writeFileSync(replayFlag, "");
    await row("dlq-row", deadId).getByTestId("dlq-replay-one").click();
    await page.getByTestId("dlq-result").filter({ hasText: "Replayed 1 task" }).waitFor();
    await row("dlq-row", deadId).waitFor({ state: "detached" });
    log(`replayed ${deadId}: ${await text("dlq-result")}`);
    await screenshot("dlq-replayed");

    // 7. Its chain goes on: dead-lettered, then replayed, run again, success.
    await page.goto(`${base}/#/task/${encodeURIComponent(deadId)}`);
    const deadTypes = await waitForTimeline("the chain of the replayed task",
      ["queued", "accepted", "failure", "dead_lettered", "queued", "accepted", "success"]);
    await page.getByTestId("note-replay").first().waitFor();
    await page.locator('[data-testid="summary-state"]', { hasText: "succeeded" }).waitFor({ timeout: RUN });
    log(`timeline of ${deadId}: ${deadTypes.join(" → ")}`);
    await screenshot("replayed-chain");

    // 8. Purge asks first: "Cancel" keeps the dead letter, "Purge" deletes it.
    const purgeId = await publish({ command: "exit 3" }, { max_attempts: 1 });
    await page.goto(`${base}/#/dlq?type=${encodeURIComponent(taskType)}`);
    await row("dlq-row", purgeId).waitFor({ timeout: RUN });
    await page.getByTestId("dlq-purge-all").click();
    await page.getByTestId("confirm-dialog").waitFor({ state: "visible" });
    await screenshot("purge-confirm");
    await page.getByTestId("confirm-cancel").click();
    await page.getByTestId("confirm-dialog").waitFor({ state: "hidden" });
    await page.getByTestId("dlq-result").filter({ hasText: "Purge cancelled" }).waitFor();
    if (!(await row("dlq-row", purgeId).isVisible())) fail("the dead letter went away though the purge was cancelled");
    await page.getByTestId("dlq-purge-all").click();
    await page.getByTestId("confirm-ok").click();
    await page.getByTestId("dlq-result").filter({ hasText: "Purged 1 dead letter" }).waitFor();
    await page.getByTestId("dlq-empty").waitFor();
    log(`purged ${purgeId}: ${await text("dlq-result")}`);
    await screenshot("dlq-purged");

    // 9. A refused key brings the prompt back.
    await page.getByTestId("change-key").click();
    await page.getByTestId("key-input").fill("not-a-key");
    await page.getByTestId("key-submit").click();
    await page.getByTestId("key-error").filter({ hasText: "401" }).waitFor();
    await screenshot("key-refused");

    if (problems.length) fail(`the page reported errors:\n  ${problems.join("\n  ")}`);
    log("all steps passed");
  } catch (e) {
    if (page) {
      await page.screenshot({ path: path.join(outDir, "failure.png"), fullPage: true }).catch(() => {});
    }
    throw e;
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`[dashboard] FAILED: ${e.stack || e}`);
    if (problems.length) console.error(`[dashboard] page problems:\n  ${problems.join("\n  ")}`);
    process.exit(1);
  },
);
