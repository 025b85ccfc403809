#!/usr/bin/env node
// Checks the page and the client scripts against the reference server, no
// Ferry involved: starts reference-server.mjs on a free port, runs
// grpc-js-client.mjs, connect-node-client.mjs (Connect, gRPC-Web, gRPC) and
// page-test.mjs against it, and ends with `N passed, N failed`.
// Needs `npm ci && npm run build` first. `npm run test:reference` runs this.
//
//   node scripts/check-reference.mjs [--log]   (--log: the server's request log on stderr)
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { nodeDir } from "../lib/proto.mjs";

const log = process.argv.includes("--log");
const server = spawn(process.execPath, [join(nodeDir, "reference-server.mjs"), ...(log ? ["--log"] : [])], {
  cwd: nodeDir,
  stdio: ["ignore", "pipe", "inherit"],
});
const base = await new Promise((resolve, reject) => {
  const lines = createInterface({ input: server.stdout });
  lines.on("line", (line) => {
    const m = /^listening: (http:\/\/\S+)/.exec(line);
    if (m) resolve(m[1]);
  });
  server.on("exit", (code) => reject(new Error(`reference server exited with ${code}`)));
});
const hostPort = base.replace(/^http:\/\//, "");

const runs = [
  ["grpc-js-client.mjs", hostPort, "--echo"],
  ["connect-node-client.mjs", base, "--echo"],
  ["connect-node-client.mjs", base, "--protocol", "grpc-web", "--echo"],
  ["connect-node-client.mjs", base, "--protocol", "grpc", "--echo"],
  ["page-test.mjs", base],
];
let passed = 0;
let failed = 0;
for (const args of runs) {
  console.log(`== node ${args.join(" ")}`);
  const code = await new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: nodeDir, stdio: ["ignore", "pipe", "inherit"] });
    createInterface({ input: child.stdout }).on("line", (line) => {
      console.log(line);
      if (line.startsWith("ok: ")) passed++;
      if (line.startsWith("FAIL: ")) failed++;
    });
    child.on("exit", resolve);
  });
  if (code !== 0) {
    console.log(`(exit code ${code})`);
    if (code !== 1) failed++; // crashed or usage error rather than a failed check
  }
}
server.kill("SIGTERM");
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
