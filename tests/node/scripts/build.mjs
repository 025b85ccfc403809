#!/usr/bin/env node
// Build step for tests/node (run after `npm ci`; `npm run build` runs this):
//  1. stage the calculator proto and google/api/*.proto in gen/proto,
//  2. generate JS + .d.ts with buf and protoc-gen-es (both from node_modules)
//     into gen/es,
//  3. bundle browser/app.ts with esbuild into dist/app.js and copy
//     browser/index.html to dist/index.html.
// gen/ and dist/ are git-ignored.
import { execFileSync } from "node:child_process";
import { cpSync, mkdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import * as esbuild from "esbuild";
import { googleApiRoot, nodeDir, protoFile, protoRoot, usingTemporaryCopy } from "../lib/proto.mjs";

const started = Date.now();
const gen = join(nodeDir, "gen");
const dist = join(nodeDir, "dist");
rmSync(gen, { recursive: true, force: true });
rmSync(dist, { recursive: true, force: true });

const staged = join(gen, "proto");
mkdirSync(join(staged, "calculator/v1"), { recursive: true });
cpSync(join(protoRoot, protoFile), join(staged, protoFile));
cpSync(join(googleApiRoot, "google"), join(staged, "google"), { recursive: true });
console.log(`proto: ${join(protoRoot, protoFile)}${usingTemporaryCopy ? " (TEMPORARY COPY: the real proto lacks the streaming methods)" : ""}`);

const bin = join(nodeDir, "node_modules/.bin");
const template = {
  version: "v2",
  plugins: [
    {
      local: join(bin, "protoc-gen-es"),
      out: join(gen, "es"),
      opt: ["target=js+dts", "import_extension=js"],
      include_imports: true,
    },
  ],
};
execFileSync(join(bin, "buf"), ["generate", staged, "--template", JSON.stringify(template)], {
  cwd: nodeDir,
  stdio: "inherit",
});
console.log(`generated: ${join(gen, "es")}`);

await esbuild.build({
  entryPoints: [join(nodeDir, "browser/app.ts")],
  outfile: join(dist, "app.js"),
  bundle: true,
  format: "iife",
  platform: "browser",
  target: "es2020",
  logLevel: "warning",
});
cpSync(join(nodeDir, "browser/index.html"), join(dist, "index.html"));
console.log(`bundled: ${join(dist, "app.js")}, ${join(dist, "index.html")} (${Date.now() - started} ms)`);
