// Runs the page of docs/WEB_CLIENTS.md, as written there, in headless Chromium against a real server:
//   node e2e/doc-example.mjs WS_URL
// The example's server address becomes WS_URL. Prints the page's log as one JSON line; exits 1 unless the
// page joined a group and sent its broadcast within 30 s.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { echoPage, launchChromium, packageRoot, pageLog, servePages } from "./harness.mjs";

const [ws] = process.argv.slice(2);
if (ws === undefined) {
  console.error("usage: node e2e/doc-example.mjs WS_URL");
  process.exit(2);
}
const doc = await readFile(join(packageRoot, "..", "..", "docs", "WEB_CLIENTS.md"), "utf8");
const example = doc.match(/```html\n([\s\S]*?)```/)?.[1];
if (example === undefined || !example.includes("ws://127.0.0.1:7200")) {
  console.error("docs/WEB_CLIENTS.md has no html example that connects to ws://127.0.0.1:7200");
  process.exit(1);
}
const html = example.replace("ws://127.0.0.1:7200", ws).replace('"./dist/index.js"', '"/dist/index.js"');
const site = await servePages(new Map([["/example.html", html]]));
const browser = await launchChromium();
let ok = false;
const page = await browser.newPage();
try {
  echoPage(page, "example");
  await page.goto(`${site.origin}/example.html`);
  await page.waitForFunction(() => document.querySelectorAll("#log li").length >= 1, null, { timeout: 30_000 });
  const log = await pageLog(page);
  ok = log.some((line) => /^in group [!-~]{52}$/.test(line)) && !log.some((line) => line.startsWith("not sent"));
} catch (error) {
  console.error(`doc example: ${error}`);
}
console.log(JSON.stringify({ log: await pageLog(page) }));
await browser.close().catch(() => undefined);
site.close();
process.exit(ok ? 0 : 1);
