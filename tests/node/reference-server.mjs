#!/usr/bin/env node
// A reference calculator server with @connectrpc/connect-node: Connect, gRPC
// and gRPC-Web on one cleartext port, HTTP/1.1 and HTTP/2 (prior knowledge,
// h2c) told apart by the connection preface, with CORS for browsers. It stands
// in for Ferry so that the browser page and the client scripts can be checked
// before Ferry speaks these protocols.
//
//   node reference-server.mjs [--host 127.0.0.1] [--port 0] [--log] [--no-cors]
//                             [--tls-cert FILE --tls-key FILE [--client-ca FILE]]
//
// With --tls-cert/--tls-key it serves TLS instead (HTTP/2 by ALPN, HTTP/1.1
// allowed); --client-ca then requires a client certificate signed by that CA.
// Prints `listening: http://HOST:PORT` (or https://) on stdout once ready. --log prints one
// line per request on stderr (method, path, protocol-relevant headers).
import { readFileSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import * as http from "node:http";
import * as http2 from "node:http2";
import { parseArgs } from "node:util";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, cors } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Calculator } from "./lib/calculator.mjs";

const { values: opts } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    log: { type: "boolean", default: false },
    // Answer no preflight and send no CORS headers: to see how the page fails.
    "no-cors": { type: "boolean", default: false },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    "client-ca": { type: "string" },
  },
});

// The same message as examples/calculator's Divide.
const divideByZero = (a) =>
  new ConnectError(`cannot divide ${a} by zero: the divisor \`b\` must be non-zero`, Code.InvalidArgument);

// Echo a request header `x-ferry-echo` as a response header and trailer, to
// check that metadata crosses in both directions.
function echo(ctx) {
  const v = ctx.requestHeader.get("x-ferry-echo");
  if (v !== null) {
    ctx.responseHeader.set("x-ferry-echo", v);
    ctx.responseTrailer.set("x-ferry-echo-trailer", v);
  }
}

const MAX_COUNT = 10_000;

const calculator = {
  add: (req, ctx) => (echo(ctx), { result: req.a + req.b }),
  subtract: (req, ctx) => (echo(ctx), { result: req.a - req.b }),
  multiply: (req, ctx) => (echo(ctx), { result: req.a * req.b }),
  divide(req, ctx) {
    echo(ctx);
    if (req.b === 0) throw divideByZero(req.a);
    return { result: req.a / req.b };
  },
  async *count(req, ctx) {
    echo(ctx);
    if (req.to - req.from >= MAX_COUNT) {
      throw new ConnectError(`at most ${MAX_COUNT} numbers per Count`, Code.InvalidArgument);
    }
    for (let i = req.from; i <= req.to; i++) {
      if (i > req.from && req.delayMs > 0n) await sleep(Number(req.delayMs), undefined, { signal: ctx.signal });
      yield { value: Number(i) };
    }
  },
  async sum(reqs, ctx) {
    echo(ctx);
    let total = 0;
    for await (const n of reqs) total += n.value;
    return { result: total };
  },
  async *runningSum(reqs, ctx) {
    echo(ctx);
    let total = 0;
    for await (const n of reqs) {
      total += n.value;
      yield { value: total };
    }
  },
};

const rpc = connectNodeAdapter({
  routes: (router) => router.service(Calculator, calculator),
  connect: true,
  grpc: true,
  grpcWeb: true,
});

const allowedHeaders = new Set(cors.allowedHeaders.map((h) => h.toLowerCase()).concat(["x-ferry-echo"]));
const exposedHeaders = cors.exposedHeaders.concat(["X-Ferry-Echo", "X-Ferry-Echo-Trailer", "Trailer-X-Ferry-Echo-Trailer"]);

function log(req, note = "") {
  if (!opts.log) return;
  const h = req.headers;
  const pick = [
    "origin", "content-type", "content-encoding", "accept-encoding", "connect-protocol-version", "connect-content-encoding",
    "connect-accept-encoding", "connect-timeout-ms", "grpc-encoding", "grpc-accept-encoding", "grpc-timeout",
    "x-grpc-web", "x-user-agent", "te", "access-control-request-method", "access-control-request-headers",
  ]
    .filter((k) => h[k] !== undefined)
    .map((k) => `${k}=${JSON.stringify(h[k])}`);
  console.error(`[HTTP/${req.httpVersion}] ${req.method} ${req.url} ${pick.join(" ")}${note ? " " + note : ""}`);
}

function handle(req, res) {
  const origin = opts["no-cors"] ? undefined : req.headers.origin;
  if (origin !== undefined) {
    res.setHeader("Access-Control-Allow-Origin", "*");
    res.setHeader("Access-Control-Expose-Headers", exposedHeaders.join(", "));
  }
  if (req.method === "OPTIONS" && origin !== undefined && req.headers["access-control-request-method"]) {
    // A CORS preflight: allow exactly what connect-web needs, and say so
    // when the browser asks for more.
    const method = req.headers["access-control-request-method"];
    const asked = (req.headers["access-control-request-headers"] ?? "")
      .split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
    const refused = asked.filter((h) => !allowedHeaders.has(h));
    if (!cors.allowedMethods.includes(method) || refused.length > 0) {
      log(req, `preflight REFUSED method=${method} headers=${refused.join(",")}`);
      res.writeHead(403).end();
      return;
    }
    log(req, "preflight ok");
    res.writeHead(204, {
      "Access-Control-Allow-Methods": cors.allowedMethods.join(", "),
      "Access-Control-Allow-Headers": [...allowedHeaders].join(", "),
      "Access-Control-Max-Age": "7200",
    });
    res.end();
    return;
  }
  log(req);
  rpc(req, res);
}

const h1 = http.createServer(handle);
const h2 = http2.createServer({}, handle);

// One port for both: an HTTP/2 connection starts with the client preface
// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", anything else is HTTP/1.1.
const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
function cleartextServer() {
  return createNetServer((socket) => {
    socket.on("error", () => socket.destroy());
    let seen = Buffer.alloc(0);
    const onData = (chunk) => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, PREFACE.length);
      const isH2 = seen.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isH2 && seen.length < PREFACE.length) return; // need more bytes to decide
      socket.off("data", onData);
      socket.pause();
      socket.unshift(seen);
      // The HTTP/2 session reads what is buffered itself; HTTP/1.1 needs the
      // socket flowing again.
      (isH2 ? h2 : h1).emit("connection", socket);
      if (!isH2) socket.resume();
    };
    socket.on("data", onData);
  });
}

// TLS: HTTP/2 or HTTP/1.1 by ALPN.
function tlsServer() {
  return http2.createSecureServer(
    {
      cert: readFileSync(opts["tls-cert"]),
      key: readFileSync(opts["tls-key"]),
      allowHTTP1: true,
      ...(opts["client-ca"] ? { ca: readFileSync(opts["client-ca"]), requestCert: true, rejectUnauthorized: true } : {}),
    },
    handle,
  );
}

const tls = opts["tls-cert"] !== undefined;
if (tls !== (opts["tls-key"] !== undefined) || (opts["client-ca"] && !tls)) {
  console.error("--tls-cert and --tls-key go together; --client-ca needs them");
  process.exit(2);
}
const server = tls ? tlsServer() : cleartextServer();

server.listen(Number(opts.port), opts.host, () => {
  const { address, port } = server.address();
  const host = address.includes(":") ? `[${address}]` : address;
  console.log(`listening: ${tls ? "https" : "http"}://${host}:${port}`);
});

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
