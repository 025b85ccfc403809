// The browser page: calls the calculator at `?server=BASE_URL` over the
// Connect protocol (JSON, binary, GET) and over gRPC-Web with connect-web,
// and writes each result into <pre id="…">. #status ends as `done` when
// every call came back (Divide by zero is expected to fail), or
// `error: <id>: <why>` otherwise.
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { Calculator } from "../gen/es/calculator/v1/calculator_pb.js";

type CalculatorClient = Client<typeof Calculator>;

function out(id: string, text: string): void {
  let el = document.getElementById(id);
  if (!el) {
    el = document.createElement("pre");
    el.id = id;
    document.body.appendChild(el);
  }
  el.textContent = text;
}

// "InvalidArgument" -> "invalid_argument", as the Connect protocol spells codes.
function codeName(code: Code): string {
  return Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}

function describe(e: unknown): string {
  if (e instanceof ConnectError) return `${codeName(e.code)}: ${e.rawMessage}`;
  return String(e instanceof Error ? e.message : e);
}

async function main(): Promise<void> {
  const server = new URLSearchParams(location.search).get("server");
  out("server", server ?? "(none)");
  if (!server) {
    out("status", "error: no ?server=http://HOST:PORT in the page's URL");
    return;
  }
  out("status", "running");
  const baseUrl = server.replace(/\/+$/, "");
  const common = { baseUrl, defaultTimeoutMs: 10_000 };
  const transports: Record<string, Transport> = {
    connect: createConnectTransport({ ...common, useBinaryFormat: false }),
    "connect-binary": createConnectTransport({ ...common, useBinaryFormat: true }),
    "connect-get": createConnectTransport({ ...common, useBinaryFormat: false, useHttpGet: true }),
    grpcweb: createGrpcWebTransport({ ...common, useBinaryFormat: true }),
  };
  const plan: Array<[string, string, (c: CalculatorClient) => Promise<string>, boolean?]> = [];
  for (const name of ["connect", "connect-binary", "connect-get", "grpcweb"]) {
    plan.push([name, "add", async (c) => String((await c.add({ a: 1, b: 2 })).result)]);
    if (name === "connect-get") continue; // Connect GET is for unary calls only
    plan.push([
      name,
      "count",
      async (c) => {
        const got: number[] = [];
        for await (const n of c.count({ from: 1n, to: 5n })) got.push(n.value);
        return got.join(",");
      },
    ]);
    if (name === "connect" || name === "grpcweb") {
      // Expected to fail: the error is the result.
      plan.push([name, "divide", async (c) => String((await c.divide({ a: 1, b: 0 })).result), true]);
    }
  }

  const failures: string[] = [];
  for (const [transport, call, run, expectError] of plan) {
    const id = `${transport}-${call}`;
    const client = createClient(Calculator, transports[transport]);
    out(id, "…");
    try {
      const result = await run(client);
      out(id, result);
      if (expectError) failures.push(`${id}: expected an error, got ${result}`);
    } catch (e) {
      out(id, `${expectError ? "" : "error: "}${describe(e)}`);
      if (!expectError || !(e instanceof ConnectError)) failures.push(`${id}: ${describe(e)}`);
    }
  }
  out("status", failures.length === 0 ? "done" : `error: ${failures.join("; ")}`);
}

main().catch((e) => out("status", `error: ${describe(e)}`));
