#!/usr/bin/env node
// Calls the calculator with @connectrpc/connect-node, by default over the
// Connect protocol: unary, server and client streaming over HTTP/1.1, bidi
// over HTTP/2 (cleartext, prior knowledge), gzip-compressed requests, and
// Connect GET for Add.
//
//   node connect-node-client.mjs http://HOST:PORT [--protocol connect|grpc-web|grpc] [--echo]
//
// --protocol grpc-web runs the same calls over gRPC-Web (HTTP/1.1, bidi over
// HTTP/2), --protocol grpc over gRPC (HTTP/2 throughout); the JSON and GET
// checks are Connect-only. --echo also checks that request header
// `x-ferry-echo` comes back as response header `x-ferry-echo` and trailer
// `x-ferry-echo-trailer` (the reference server does this).
//
// Prints `ok: <check>` per passing check and exits non-zero if any failed.
import diagnostics from "node:diagnostics_channel";
import { parseArgs } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createWritableIterable } from "@connectrpc/connect/protocol";
import {
  compressionGzip,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { Calculator } from "./lib/calculator.mjs";
import { CheckError, check, expectEqual, finish } from "./lib/checks.mjs";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    protocol: { type: "string", default: "connect" },
    echo: { type: "boolean", default: false },
  },
});
const protocols = { connect: createConnectTransport, "grpc-web": createGrpcWebTransport, grpc: createGrpcTransport };
if (positionals.length !== 1 || !/^https?:\/\//.test(positionals[0]) || !protocols[opts.protocol]) {
  console.error("usage: connect-node-client.mjs http://HOST:PORT [--protocol connect|grpc-web|grpc] [--echo]");
  process.exit(2);
}
const baseUrl = positionals[0].replace(/\/+$/, "");
const protocol = opts.protocol;
const isConnect = protocol === "connect";
// gRPC needs HTTP/2 for everything; Connect and gRPC-Web work over HTTP/1.1
// except for bidi.
const h1 = protocol === "grpc" ? "2" : "1.1";
const label = { connect: "Connect", "grpc-web": "gRPC-Web", grpc: "gRPC" }[protocol];
const ver = (v) => (v === "2" ? "HTTP/2" : "HTTP/1.1");

function client(options) {
  const transport = protocols[protocol]({ baseUrl, httpVersion: h1, ...options });
  return createClient(Calculator, transport);
}

// The request headers of HTTP/1.1 requests as they went out (Node's
// diagnostics channel; HTTP/2 has none on Node 20), to check that gzip and
// GET were really used.
const sent = [];
diagnostics.subscribe("http.client.request.start", ({ request }) => {
  sent.push({ method: request.method, path: request.path, headers: request.getHeaders() });
});
function lastSent(pathPart) {
  const r = sent.findLast((r) => r.path.includes(pathPart));
  if (!r) throw new CheckError(`no HTTP/1.1 request to ${pathPart} was seen`);
  return r;
}

const jsonH1 = client({ useBinaryFormat: false });
const binaryGzipH1 = client({ useBinaryFormat: true, sendCompression: compressionGzip, compressMinBytes: 0 });
const binaryH2 = client({ httpVersion: "2", useBinaryFormat: true, sendCompression: compressionGzip, compressMinBytes: 0 });

if (isConnect) {
  await check("add (Connect JSON, HTTP/1.1)", async () => {
    const res = await jsonH1.add({ a: 1, b: 2 });
    expectEqual(res.result, 3, "Add(1, 2)");
    expectEqual(lastSent("/Add").headers["content-type"], "application/json", "content-type");
  });
}

await check(`add (${label} binary, ${ver(h1)}, gzip request)`, async () => {
  let encoding;
  const res = await binaryGzipH1.add({ a: 1, b: 2 }, { onHeader: (h) => (encoding = h.get("content-encoding") ?? h.get("grpc-encoding")) });
  expectEqual(res.result, 3, "Add(1, 2)");
  if (h1 === "1.1") {
    const h = lastSent("/Add").headers;
    const got = isConnect ? h["content-encoding"] : h["grpc-encoding"];
    expectEqual(got, "gzip", isConnect ? "request content-encoding" : "request grpc-encoding");
  }
  return `response encoding: ${encoding ?? "identity"}`;
});

if (isConnect) {
  for (const binary of [false, true]) {
    await check(`add (Connect GET, ${binary ? "binary" : "JSON"}, HTTP/1.1)`, async () => {
      const c = client({ useBinaryFormat: binary, useHttpGet: true });
      const res = await c.add({ a: 1, b: 2 });
      expectEqual(res.result, 3, "Add(1, 2)");
      const r = lastSent("/Add");
      expectEqual(r.method, "GET", "HTTP method");
      return r.path;
    });
  }
}

await check(`divide by zero is invalid_argument with a message (${label})`, async () => {
  try {
    const res = await binaryGzipH1.divide({ a: 1, b: 0 });
    throw new CheckError(`expected an error, got ${JSON.stringify(res)}`);
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    expectEqual(Code[e.code], "InvalidArgument", "code");
    if (!/zero/.test(e.rawMessage)) throw new CheckError(`message should mention zero: ${JSON.stringify(e.rawMessage)}`);
    return `message: ${e.rawMessage}`;
  }
});

async function collect(stream) {
  const got = [];
  for await (const n of stream) got.push(n.value);
  return got;
}

if (isConnect) {
  await check("count 1..=5 (server streaming, Connect JSON, HTTP/1.1)", async () => {
    const got = await collect(jsonH1.count({ from: 1n, to: 5n }));
    expectEqual(got, [1, 2, 3, 4, 5], "Count(1, 5)");
    expectEqual(lastSent("/Count").headers["content-type"], "application/connect+json", "content-type");
    return got.join(",");
  });
}

await check(`count 1..=5 (server streaming, ${label} binary, ${ver(h1)}, gzip request)`, async () => {
  const got = await collect(binaryGzipH1.count({ from: 1n, to: 5n }));
  expectEqual(got, [1, 2, 3, 4, 5], "Count(1, 5)");
  return got.join(",");
});

await check(`count with delay_ms arrives message by message (${ver(h1)})`, async () => {
  const started = Date.now();
  const at = [];
  for await (const n of binaryGzipH1.count({ from: 1n, to: 3n, delayMs: 150n })) at.push([n.value, Date.now() - started]);
  expectEqual(at.map(([v]) => v), [1, 2, 3], "Count(1, 3)");
  if (at[0][1] >= 250) throw new CheckError(`first number after ${at[0][1]} ms: the stream is buffered`);
  if (at[2][1] < 250) throw new CheckError(`last number after ${at[2][1]} ms: delay_ms ignored`);
  return at.map(([v, t]) => `${v}@${t}ms`).join(" ");
});

await check(`sum 1+2+3+4 (client streaming, ${label} binary, ${ver(h1)}, gzip request)`, async () => {
  async function* numbers() {
    for (const value of [1, 2, 3, 4]) yield { value };
  }
  const res = await binaryGzipH1.sum(numbers());
  expectEqual(res.result, 10, "Sum(1, 2, 3, 4)");
  if (h1 === "1.1") {
    const h = lastSent("/Sum").headers;
    const got = isConnect ? h["connect-content-encoding"] : h["grpc-encoding"];
    expectEqual(got, "gzip", isConnect ? "request connect-content-encoding" : "request grpc-encoding");
  }
  return "10";
});

await check(`running sum (bidi, ${label} binary, HTTP/2, gzip request, each answer before the next request)`, async () => {
  const requests = createWritableIterable();
  const responses = binaryH2.runningSum(requests)[Symbol.asyncIterator]();
  const got = [];
  for (const value of [1, 2, 3, 4]) {
    await Promise.race([
      requests.write({ value }),
      new Promise((r) => setTimeout(r, 0)), // write() resolves once read; don't wait for that
    ]);
    const { value: n, done } = await responses.next();
    if (done) throw new CheckError(`stream ended after ${got.length} answers`);
    got.push(n.value);
  }
  requests.close();
  const last = await responses.next();
  if (!last.done) throw new CheckError(`unexpected extra answer ${JSON.stringify(last.value)}`);
  expectEqual(got, [1, 3, 6, 10], "RunningSum(1, 2, 3, 4)");
  return got.join(",");
});

if (opts.echo) {
  await check(`metadata echo, header and trailer (${label})`, async () => {
    let header, trailer;
    await binaryGzipH1.add(
      { a: 1, b: 2 },
      { headers: { "x-ferry-echo": "hello ferry" }, onHeader: (h) => (header = h), onTrailer: (t) => (trailer = t) },
    );
    expectEqual(header?.get("x-ferry-echo"), "hello ferry", "response header x-ferry-echo");
    expectEqual(trailer?.get("x-ferry-echo-trailer"), "hello ferry", "trailer x-ferry-echo-trailer");
  });
}

finish();
