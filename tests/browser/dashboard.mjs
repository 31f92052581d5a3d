// Drives /dashboard in Debian's headless chromium (never a downloaded browser), for
// tests/api/dashboard.rs:
//
//   node tests/browser/dashboard.mjs <base url> <admin token> <screenshot path>
//
// 1. While the test's load runs: opens the page, enters the admin token, and waits until the
//    counters and charts move, the recent sagas list fills and one saga's step history opens
//    with its id shown exactly. Saves a screenshot of the page under load, prints `LIVE <json>`.
// 2. Reads a line `stopped` on stdin (the load has ended), waits until the page's numbers
//    stop changing and prints `NUMBERS <json>`: every number the page
//    shows for a metric, which the test compares with /metrics.
// Any failed expectation exits non-zero with the reason on stderr.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, token, screenshot] = process.argv.slice(2);
if (!url || !token || !screenshot) {
  console.error("usage: dashboard.mjs <base url> <admin token> <screenshot path>");
  process.exit(2);
}
const DEADLINE_MS = 60_000;

const stdinLines = createInterface({ input: process.stdin });
const stopped = new Promise((resolve) => stdinLines.on("line", (l) => l.trim() === "stopped" && resolve()));

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  // playwright-core gives every launch a fresh temporary profile (user data dir).
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.setDefaultTimeout(DEADLINE_MS);

  await page.goto(`${url}/dashboard`);
  const updates = async () => Number((await page.locator("body").getAttribute("data-updates")) || 0);
  const number = async (sel) => Number(((await page.locator(sel).textContent()) || "").replace(/[^0-9.]/g, "") || NaN);
  await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 1);

  // The admin view asks for the token, and keeps it for the tab (sessionStorage).
  await page.locator("#admin-token").fill(token);
  await page.locator("#admin-login button").click();
  await page.locator("#admin-view").waitFor({ state: "visible" });

  // Counters and charts move while the load runs.
  const started0 = await number("#t-started");
  await page.waitForFunction((s0) => {
    const started = Number(document.getElementById("t-started").textContent.replace(/[^0-9]/g, ""));
    const points = Number(document.querySelector("#chart-sagas .uplot")?.dataset.points || 0);
    return started > s0 && points >= 3;
  }, started0);
  const started1 = await number("#t-started");
  const u1 = await updates();
  await page.waitForFunction(([s1, n]) => Number(document.body.dataset.updates) > n + 1
      && Number(document.getElementById("t-started").textContent.replace(/[^0-9]/g, "")) > s1, [started1, u1]);
  const started2 = await number("#t-started");
  const rate = await number("#t-rate");
  const points = Number(await page.locator("#chart-sagas .uplot").getAttribute("data-points"));
  const stepRows = await page.locator("#steps tbody tr").count();
  if (!(rate > 0)) throw new Error(`sagas/s shows ${rate} under load`);

  // The recent sagas, newest first; one saga's history, its id exact.
  // (The list refreshes every 2 s under load: the link clicked names the saga, by its href.)
  await page.locator("#sagas tbody a").first().click();
  await page.locator("#detail-steps tbody tr").first().waitFor();
  const shownId = (await page.locator("#detail-id").textContent()).trim();
  const listedId = decodeURIComponent(await page.evaluate(() => location.hash)).replace("#saga=", "");
  const detailSteps = await page.locator("#detail-steps tbody tr").count();
  if (shownId !== listedId) throw new Error(`the detail shows ${shownId}, the link named ${listedId}`);
  if (!/^[0-9]+$/.test(shownId) || BigInt(shownId) <= 2n ** 53n) {
    throw new Error(`purchase id ${shownId} is not an exact id above 2^53`);
  }
  // The filter narrows the list to one outcome.
  await page.locator("#outcome").selectOption("succeeded");
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll("#sagas tbody td:nth-child(3)")];
    return cells.length > 0 && cells.every((c) => c.textContent.trim() === "succeeded");
  });
  await page.locator("#outcome").selectOption("all");
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(`LIVE ${JSON.stringify({ started: [started0, started1, started2], rate, points, stepRows, listedId, shownId, detailSteps })}`);

  // After the load: the numbers settle, then they are read as the page shows them.
  await stopped;
  const read = () => page.evaluate(() => [...document.querySelectorAll("[data-metric]")].map((el) => ({
    metric: el.dataset.metric,
    labels: el.dataset.labels ?? "",
    sum: el.dataset.sum === "1",
    text: el.textContent.trim(),
  })));
  let previous = null;
  const settleBy = Date.now() + DEADLINE_MS;
  for (;;) {
    const n = await updates();
    await page.waitForFunction((k) => Number(document.body.dataset.updates) > k, n);
    const now = await read();
    // Settled: no saga in flight, every result stream of the load closed, nothing moving.
    const idle = (await page.locator("#t-in-flight").textContent()).trim() === "0"
      && (await page.locator("#t-sse").textContent()).trim() === "0";
    if (previous && JSON.stringify(now) === JSON.stringify(previous) && idle) break;
    if (Date.now() > settleBy) throw new Error("the page's numbers did not settle after the load");
    previous = now;
  }
  if (errors.length) throw new Error(`the page reported errors: ${errors.join("; ")}`);
  console.log(`NUMBERS ${JSON.stringify(previous)}`);
} catch (e) {
  failed = true;
  console.error(`dashboard.mjs: ${e.stack || e}`);
} finally {
  stdinLines.close();
  await browser.close();
}
process.exit(failed ? 1 : 0);
