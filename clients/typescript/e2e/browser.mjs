// The browser end of the end-to-end test (run by tests/tests/browser.rs, or by hand):
//   node e2e/browser.mjs WS_URL GROUP_ID UID... [--expect UID]
// opens e2e/page.html once per UID in headless Chromium and waits until every page has heard every other
// page and each uid given with --expect. Prints each page's log as one JSON line per page; exits 1 if a page
// failed or 60 s passed.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { echoPage, launchChromium, packageRoot, pageLog, servePages } from "./harness.mjs";

const LIMIT_MS = 60_000;
const args = process.argv.slice(2);
const extra = [];
while (args.includes("--expect")) extra.push(args.splice(args.indexOf("--expect"), 2)[1]);
const [ws, group, ...uids] = args;
if (ws === undefined || group === undefined || uids.length === 0) {
  console.error("usage: node e2e/browser.mjs WS_URL GROUP_ID UID... [--expect UID]");
  process.exit(2);
}

const html = await readFile(join(packageRoot, "e2e", "page.html"), "utf8");
const site = await servePages(new Map([["/page.html", html]]));
const browser = await launchChromium();
const deadline = setTimeout(() => finish(1, "time ran out"), LIMIT_MS);
const pages = [];
try {
  for (const uid of uids) {
    const page = await browser.newPage();
    echoPage(page, uid);
    const expect = [...uids.filter((other) => other !== uid), ...extra].join(",");
    await page.goto(`${site.origin}/page.html?${new URLSearchParams({ ws, group, uid, expect })}`);
    await page.waitForFunction(() => document.body.dataset.state !== "connecting", null, { timeout: LIMIT_MS });
    pages.push({ uid, page });
  }
  for (const { page } of pages) {
    await page.waitForFunction(() => ["done", "failed"].includes(document.body.dataset.state), null, { timeout: LIMIT_MS });
  }
  await finish(0);
} catch (error) {
  await finish(1, String(error));
}

async function finish(code, why) {
  clearTimeout(deadline);
  let failed = code !== 0;
  for (const { uid, page } of pages) {
    const state = await page.evaluate(() => document.body.dataset.state).catch(() => "gone");
    console.log(JSON.stringify({ uid, state, log: await pageLog(page) }));
    failed ||= state !== "done";
  }
  if (why !== undefined) console.error(`browser test: ${why}`);
  await browser.close().catch(() => undefined);
  site.close();
  process.exit(failed ? 1 : 0);
}
