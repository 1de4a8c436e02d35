// What the browser scripts share: a loopback HTTP server for the pages and dist/, and Debian's Chromium
// started with the flags that keep it off the network.
import { readFile } from "node:fs/promises";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const packageRoot = fileURLToPath(new URL("..", import.meta.url));

const types = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };

/** Serves `pages` (path to HTML text) and the files under dist/ on 127.0.0.1; resolves to the origin. */
export async function servePages(pages) {
  const server = createServer(async (request, response) => {
    const path = normalize(new URL(request.url, "http://localhost").pathname);
    try {
      if (path === "/favicon.ico") {
        response.writeHead(204).end();
        return;
      }
      if (pages.has(path)) {
        response.writeHead(200, { "content-type": "text/html" }).end(pages.get(path));
        return;
      }
      if (!path.startsWith("/dist/")) throw new Error("not served");
      const body = await readFile(join(packageRoot, path));
      response.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" }).end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { origin: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

/** Headless Chromium: /usr/bin/chromium (Debian's package) or $CHROMIUM. */
export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    timeout: 30_000,
  });
}

/** Forwards a page's errors and console lines to stderr, named, for a failure's post-mortem. */
export function echoPage(page, name) {
  page.on("pageerror", (error) => console.error(`[${name}] page error: ${error.message}`));
  page.on("console", (message) => console.error(`[${name}] console: ${message.text()}`));
}

/** The texts of the page's `#log li` items. */
export function pageLog(page) {
  return page.$$eval("#log li", (items) => items.map((item) => item.textContent)).catch(() => []);
}
