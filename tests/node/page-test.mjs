#!/usr/bin/env node
// Loads the built page (dist/, from `npm run build`) in headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core) against an RPC
// server, waits for #status, and checks every result the page wrote.
//
//   node page-test.mjs http://HOST:PORT [--origin http|file|both] [--screenshot FILE]
//                      [--chromium /usr/bin/chromium] [--timeout-ms 30000]
//
// The page is loaded from another origin than the server's: from a static
// file server on 127.0.0.1 with its own port (--origin http), from file://
// (--origin file, Origin: null), or both (the default). Prints
// `ok: <check>` per passing check and exits non-zero if any failed.
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, normalize } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";
import { nodeDir } from "./lib/proto.mjs";
import { CheckError, check, finish } from "./lib/checks.mjs";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    origin: { type: "string", default: "both" },
    screenshot: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
    "timeout-ms": { type: "string", default: "30000" },
  },
});
if (positionals.length !== 1 || !/^https?:\/\//.test(positionals[0]) || !["http", "file", "both"].includes(opts.origin)) {
  console.error("usage: page-test.mjs http://HOST:PORT [--origin http|file|both] [--screenshot FILE] [--chromium PATH]");
  process.exit(2);
}
const server = positionals[0];
const dist = join(nodeDir, "dist");
if (!existsSync(join(dist, "app.js"))) {
  console.error("error: dist/app.js is missing: run `npm ci && npm run build` in tests/node first");
  process.exit(2);
}
const timeout = Number(opts["timeout-ms"]);

// What the page must show, by element id.
const expected = {
  "connect-add": "3",
  "connect-binary-add": "3",
  "connect-get-add": "3",
  "grpcweb-add": "3",
  "connect-count": "1,2,3,4,5",
  "connect-binary-count": "1,2,3,4,5",
  "grpcweb-count": "1,2,3,4,5",
  "connect-divide": /^invalid_argument: .*zero/,
  "grpcweb-divide": /^invalid_argument: .*zero/,
};

// A static file server for dist/, on its own port: another origin.
const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };
const statics = createServer((req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^(\.\.[/\\])+/, "");
  const file = join(dist, path === "/" ? "index.html" : path);
  if (!file.startsWith(dist) || !existsSync(file)) return res.writeHead(404).end();
  res.writeHead(200, { "content-type": types[file.slice(file.lastIndexOf("."))] ?? "application/octet-stream" });
  res.end(readFileSync(file));
});
await new Promise((r) => statics.listen(0, "127.0.0.1", r));
const staticBase = `http://127.0.0.1:${statics.address().port}`;

const pages = [];
if (opts.origin !== "file") pages.push([staticBase, `${staticBase}/index.html`]);
if (opts.origin !== "http") pages.push(["file://", `${pathToFileURL(join(dist, "index.html"))}`]);

const userDataDir = mkdtempSync(join(tmpdir(), "ferry-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: opts.chromium,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

try {
  for (const [origin, base] of pages) {
    const url = `${base}?server=${encodeURIComponent(server)}`;
    const page = await context.newPage();
    const console_ = [];
    page.on("console", (m) => console_.push(`console.${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => console_.push(`pageerror: ${e.message}`));
    page.on("requestfailed", (r) => console_.push(`requestfailed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`));

    let status = "";
    await check(`page from ${origin} finishes (status done)`, async () => {
      await page.goto(url);
      await page.waitForFunction(
        () => {
          const s = document.getElementById("status")?.textContent ?? "";
          return s === "done" || s.startsWith("error");
        },
        null,
        { timeout },
      );
      status = await page.locator("#status").textContent();
      if (status !== "done") throw new CheckError(`#status: ${status}\n${console_.join("\n")}`);
    }, timeout + 5000);

    const got = await page.evaluate((ids) => Object.fromEntries(ids.map((id) => [id, document.getElementById(id)?.textContent ?? null])), Object.keys(expected));
    for (const [id, want] of Object.entries(expected)) {
      await check(`page from ${origin}: #${id}`, async () => {
        const ok = want instanceof RegExp ? want.test(got[id] ?? "") : got[id] === want;
        if (!ok) throw new CheckError(`expected ${want}, got ${JSON.stringify(got[id])}`);
        return got[id];
      });
    }
    if (opts.screenshot && origin !== "file://") await page.screenshot({ path: opts.screenshot, fullPage: true });
    await page.close();
  }
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
  statics.close();
}
finish();
