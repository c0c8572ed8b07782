// End-to-end test of the dashboard in headless Chromium (Debian's package), driven with
// playwright-core. Run by scripts/browser-test, which starts redis-server and the service.
//
// Usage: node dashboard.mjs <service base URL> <api token> <webhook target URL> <artifacts dir>
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, token, target, artifacts] = process.argv.slice(2);
mkdirSync(artifacts, { recursive: true });
const fail = (message) => { console.error("FAIL: " + message); process.exitCode = 1; };

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(base + "/", { waitUntil: "load" });
  await page.screenshot({ path: artifacts + "/1-opened.png", fullPage: true });

  // Without the token the page asks for it; with it, health shows.
  await page.getByText("Enter the API token").waitFor({ timeout: 10000 });
  await page.fill("#token", token);
  await page.dispatchEvent("#token", "change");
  await page.locator("#status", { hasText: "healthy" }).waitFor({ timeout: 10000 });

  // Create a webhook in the page.
  await page.fill("#f-url", target);
  await page.fill("#f-events", "complete_job, job.*");
  await page.click("#f-save");
  await page.locator("#message", { hasText: "Created wh_" }).waitFor({ timeout: 10000 });
  const row = page.locator("#webhooks tbody tr", { hasText: target });
  await row.waitFor({ timeout: 10000 });
  await page.screenshot({ path: artifacts + "/2-created.png", fullPage: true });

  // Send a test delivery from the page and see it appear among recent deliveries.
  await row.locator("[data-test=test]").click();
  await page.locator("#message", { hasText: "complete_job: delivered (200" }).waitFor({ timeout: 15000 });
  const delivered = page.locator("#deliveries tbody tr", { hasText: "delivered 200" }).first();
  await delivered.waitFor({ timeout: 15000 });
  await delivered.click();
  await page.locator("#attempts pre", { hasText: "delivered" }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: artifacts + "/3-delivered.png", fullPage: true });

  // Pause it, then rotate its secret.
  await row.locator("[data-test=pause]").click();
  await page.locator("#webhooks tbody tr", { hasText: "paused" }).waitFor({ timeout: 10000 });
  await row.locator("[data-test=rotate]").click();
  await page.locator("#message", { hasText: "New secret for wh_" }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: artifacts + "/4-paused-rotated.png", fullPage: true });

  // Delete it.
  page.once("dialog", (dialog) => dialog.accept());
  await row.locator("[data-test=delete]").click();
  await page.locator("#message", { hasText: "Deleted wh_" }).waitFor({ timeout: 10000 });
  await page.screenshot({ path: artifacts + "/5-deleted.png", fullPage: true });

  if (errors.length) fail("page errors: " + errors.join("; "));
  if (!process.exitCode) console.log("dashboard: 1 passed, 0 failed");
} catch (e) {
  fail(e.message);
  try { const pages = browser.contexts()[0]?.pages() || []; if (pages[0]) await pages[0].screenshot({ path: artifacts + "/failure.png", fullPage: true }); } catch (_) {}
} finally {
  await browser.close();
}
