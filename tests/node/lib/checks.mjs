// A tiny check runner shared by the client scripts: each check prints
// `ok: <name>` or `FAIL: <name>: <why>`; the process exits 1 if any failed.
import { isDeepStrictEqual } from "node:util";

let failed = 0;

/** A failed expectation: reported by its message alone. */
export class CheckError extends Error {}

export async function check(name, fn, timeoutMs = 10_000) {
  let timer;
  try {
    const detail = await Promise.race([
      fn(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    console.log(`ok: ${name}${detail ? ` (${detail})` : ""}`);
  } catch (e) {
    failed++;
    // RPC errors (grpc-js, connect) carry a code: their message says it all;
    // anything else gets its stack.
    const why = e instanceof CheckError || e?.code !== undefined || !e?.stack ? String(e?.message ?? e) : e.stack;
    console.log(`FAIL: ${name}: ${why}`);
  } finally {
    clearTimeout(timer);
  }
}

export function expectEqual(actual, expected, what = "value") {
  if (!isDeepStrictEqual(actual, expected)) {
    throw new CheckError(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

export function finish() {
  if (failed > 0) {
    console.log(`${failed} check(s) failed`);
    process.exit(1);
  }
  process.exit(0);
}
