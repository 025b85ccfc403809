#!/usr/bin/env node
// Checks the page and the client scripts against the reference server, no
// Ferry involved: starts reference-server.mjs on free ports, runs
// grpc-js-client.mjs (cleartext, and over TLS and mutual TLS with
// certificates made by openssl when it is installed), connect-node-client.mjs
// (Connect, gRPC-Web, gRPC) and page-test.mjs against it, and ends with
// `N passed, N failed`. Needs `npm ci && npm run build` first;
// `npm run test:reference` runs this.
//
//   node scripts/check-reference.mjs [--log]   (--log: the servers' request logs on stderr)
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { nodeDir } from "../lib/proto.mjs";

const log = process.argv.includes("--log");
const servers = [];

async function startServer(...args) {
  const proc = spawn(process.execPath, [join(nodeDir, "reference-server.mjs"), ...args, ...(log ? ["--log"] : [])], {
    cwd: nodeDir,
    stdio: ["ignore", "pipe", "inherit"],
  });
  servers.push(proc);
  return new Promise((resolve, reject) => {
    createInterface({ input: proc.stdout }).on("line", (line) => {
      const m = /^listening: (https?:\/\/\S+)/.exec(line);
      if (m) resolve(m[1]);
    });
    proc.on("exit", (code) => reject(new Error(`reference server ${args.join(" ")} exited with ${code}`)));
  });
}

let passed = 0;
let failed = 0;

// Runs one script; `expectFailure` turns a run whose checks fail (exit 1)
// into the one passing check `name`.
async function run(args, { expectFailure, name } = {}) {
  console.log(`== node ${args.join(" ")}${expectFailure ? "   (must fail)" : ""}`);
  let fails = 0;
  const code = await new Promise((resolve) => {
    const child = spawn(process.execPath, args, { cwd: nodeDir, stdio: ["ignore", "pipe", "inherit"] });
    createInterface({ input: child.stdout }).on("line", (line) => {
      console.log(`   ${line}`);
      if (line.startsWith("ok: ") && !expectFailure) passed++;
      if (line.startsWith("FAIL: ")) fails++;
    });
    child.on("exit", resolve);
  });
  if (expectFailure) {
    if (code === 1 && fails > 0) {
      passed++;
      console.log(`ok: ${name}`);
    } else {
      failed++;
      console.log(`FAIL: ${name}: exit code ${code}, ${fails} failed check(s)`);
    }
    return;
  }
  failed += fails;
  if (code !== 0) {
    console.log(`   (exit code ${code})`);
    if (fails === 0) failed++; // crashed or usage error rather than a failed check
  }
}

// A CA, a server certificate for 127.0.0.1/localhost and a client
// certificate, all short-lived, in a temporary directory.
function makeCerts() {
  const dir = mkdtempSync(join(tmpdir(), "ferry-certs-"));
  const ssl = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  ssl("req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=ferry test CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  for (const [name, ext] of [
    ["server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"],
    ["client", "extendedKeyUsage=clientAuth\n"],
  ]) {
    writeFileSync(join(dir, `${name}.ext`), ext);
    ssl("req", ...ec, "-keyout", `${name}.key`, "-out", `${name}.csr`, "-subj", `/CN=ferry test ${name}`);
    ssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
      "-out", `${name}.crt`, "-days", "2", "-extfile", `${name}.ext`);
  }
  return dir;
}

let certs;
try {
  const base = await startServer();
  const hostPort = base.replace(/^http:\/\//, "");
  await run(["grpc-js-client.mjs", hostPort, "--echo"]);
  await run(["connect-node-client.mjs", base, "--echo"]);
  await run(["connect-node-client.mjs", base, "--protocol", "grpc-web", "--echo"]);
  await run(["connect-node-client.mjs", base, "--protocol", "grpc", "--echo"]);
  await run(["page-test.mjs", base]);

  let haveOpenssl = true;
  try {
    execFileSync("openssl", ["version"], { stdio: "ignore" });
  } catch {
    haveOpenssl = false;
    console.log("(openssl not found: the TLS runs of grpc-js-client.mjs are skipped)");
  }
  if (haveOpenssl) {
    certs = makeCerts();
    const f = (name) => join(certs, name);
    // By name: a TLS server name may not be an IP address (grpc-js warns).
    const byName = (url) => url.replace(/^https:\/\/127\.0\.0\.1/, "localhost");
    const tlsBase = await startServer("--tls-cert", f("server.crt"), "--tls-key", f("server.key"));
    await run(["grpc-js-client.mjs", byName(tlsBase), "--tls", "--ca", f("ca.crt")]);
    const mtlsBase = await startServer("--tls-cert", f("server.crt"), "--tls-key", f("server.key"), "--client-ca", f("ca.crt"));
    const mtls = byName(mtlsBase);
    await run(["grpc-js-client.mjs", mtls, "--tls", "--ca", f("ca.crt"), "--cert", f("client.crt"), "--key", f("client.key")]);
    await run(["grpc-js-client.mjs", mtls, "--tls", "--ca", f("ca.crt")], {
      expectFailure: true,
      name: "grpc-js without a client certificate is refused by the mutual-TLS server",
    });
  }
} finally {
  for (const s of servers) s.kill("SIGTERM");
  if (certs) rmSync(certs, { recursive: true, force: true });
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
