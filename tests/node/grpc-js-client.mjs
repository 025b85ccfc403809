#!/usr/bin/env node
// Calls the calculator over gRPC with @grpc/grpc-js (HTTP/2), loading the
// proto at run time with @grpc/proto-loader (no build step needed).
//
//   node grpc-js-client.mjs HOST:PORT [--tls --ca FILE [--cert FILE --key FILE]
//                                      [--server-name NAME]] [--echo]
//
// Prints `ok: <check>` per passing check and exits non-zero if any failed.
// --echo also checks that request metadata `x-ferry-echo` comes back as
// response header `x-ferry-echo` and trailer `x-ferry-echo-trailer` (the
// reference server does this; the calculator example need not).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { includeDirs, protoFile, protoRoot } from "./lib/proto.mjs";
import { CheckError, check, expectEqual, finish } from "./lib/checks.mjs";

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    tls: { type: "boolean", default: false },
    ca: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    "server-name": { type: "string" },
    echo: { type: "boolean", default: false },
  },
});
if (positionals.length !== 1 || (!opts.tls && (opts.ca || opts.cert || opts.key)) || !!opts.cert !== !!opts.key) {
  console.error("usage: grpc-js-client.mjs HOST:PORT [--tls [--ca FILE] [--cert FILE --key FILE] [--server-name NAME]] [--echo]");
  process.exit(2);
}
const target = positionals[0];

const definition = protoLoader.loadSync(join(protoRoot, protoFile), {
  includeDirs,
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { Calculator } = grpc.loadPackageDefinition(definition).calculator.v1;

let credentials = grpc.credentials.createInsecure();
const channelOptions = {};
if (opts.tls) {
  credentials = grpc.credentials.createSsl(
    opts.ca ? readFileSync(opts.ca) : null,
    opts.key ? readFileSync(opts.key) : null,
    opts.cert ? readFileSync(opts.cert) : null,
  );
  if (opts["server-name"]) channelOptions["grpc.ssl_target_name_override"] = opts["server-name"];
}
const client = new Calculator(target, credentials, channelOptions);
const deadline = () => new Date(Date.now() + 10_000);

const unary = (method, req, metadata = new grpc.Metadata()) =>
  new Promise((resolve, reject) => {
    const call = client[method](req, metadata, { deadline: deadline() }, (err, res) => (err ? reject(err) : resolve(res)));
    return call;
  });

const mode = opts.tls ? (opts.cert ? "TLS + client cert" : "TLS") : "h2c";

await check(`add (grpc-js, ${mode})`, async () => {
  const res = await unary("add", { a: 1, b: 2 });
  expectEqual(res.result, 3, "Add(1, 2)");
  return "1 + 2 = 3";
});

await check("divide by zero is INVALID_ARGUMENT with a message", async () => {
  try {
    const res = await unary("divide", { a: 1, b: 0 });
    throw new CheckError(`expected an error, got ${JSON.stringify(res)}`);
  } catch (e) {
    if (e.code === undefined) throw e;
    expectEqual(grpc.status[e.code], "INVALID_ARGUMENT", "status code");
    if (!e.details || !/zero/.test(e.details)) throw new CheckError(`message should mention zero: ${JSON.stringify(e.details)}`);
    return `message: ${e.details}`;
  }
});

await check("count 1..=5 (server streaming)", async () => {
  const call = client.count({ from: 1, to: 5 }, { deadline: deadline() });
  const got = [];
  for await (const n of call) got.push(n.value);
  expectEqual(got, [1, 2, 3, 4, 5], "Count(1, 5)");
  return got.join(",");
});

await check("count with delay_ms arrives message by message", async () => {
  const call = client.count({ from: 1, to: 3, delayMs: 150 }, { deadline: deadline() });
  const started = Date.now();
  const at = [];
  for await (const n of call) at.push([n.value, Date.now() - started]);
  expectEqual(at.map(([v]) => v), [1, 2, 3], "Count(1, 3)");
  // The first number must not wait for the pauses before the later ones.
  if (at[0][1] >= 250) throw new CheckError(`first number after ${at[0][1]} ms: the stream is buffered`);
  if (at[2][1] < 250) throw new CheckError(`last number after ${at[2][1]} ms: delay_ms ignored`);
  return at.map(([v, t]) => `${v}@${t}ms`).join(" ");
});

await check("sum 1+2+3+4 (client streaming)", async () => {
  const res = await new Promise((resolve, reject) => {
    const call = client.sum({ deadline: deadline() }, (err, r) => (err ? reject(err) : resolve(r)));
    for (const value of [1, 2, 3, 4]) call.write({ value });
    call.end();
  });
  expectEqual(res.result, 10, "Sum(1, 2, 3, 4)");
  return "10";
});

await check("running sum (bidi, each answer before the next request)", async () => {
  const call = client.runningSum({ deadline: deadline() });
  const responses = call[Symbol.asyncIterator]();
  const got = [];
  for (const value of [1, 2, 3, 4]) {
    call.write({ value });
    const { value: n, done } = await responses.next();
    if (done) throw new CheckError(`stream ended after ${got.length} answers`);
    got.push(n.value);
  }
  call.end();
  const last = await responses.next();
  if (!last.done) throw new CheckError(`unexpected extra answer ${JSON.stringify(last.value)}`);
  expectEqual(got, [1, 3, 6, 10], "RunningSum(1, 2, 3, 4)");
  return got.join(",");
});

if (opts.echo) {
  await check("metadata echo (header and trailer)", async () => {
    const md = new grpc.Metadata();
    md.set("x-ferry-echo", "hello ferry");
    let header, trailer;
    await new Promise((resolve, reject) => {
      const call = client.add({ a: 1, b: 2 }, md, { deadline: deadline() }, (err) => (err ? reject(err) : resolve()));
      call.on("metadata", (m) => (header = m));
      call.on("status", (s) => (trailer = s.metadata));
    });
    expectEqual(header?.get("x-ferry-echo"), ["hello ferry"], "response header x-ferry-echo");
    expectEqual(trailer?.get("x-ferry-echo-trailer"), ["hello ferry"], "trailer x-ferry-echo-trailer");
  });
}

client.close();
finish();
