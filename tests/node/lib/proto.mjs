// Where the calculator proto comes from, for code generation (scripts/build.mjs)
// and for @grpc/proto-loader (grpc-js-client.mjs).
//
// The real file is examples/calculator/proto/calculator/v1/calculator.proto.
// Until it declares the streaming methods (Count, Sum, RunningSum), the
// temporary copy in tests/node/proto is used instead; delete that copy once
// the methods have landed.
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const nodeDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const repoDir = resolve(nodeDir, "../..");

const FILE = "calculator/v1/calculator.proto";
const realRoot = join(repoDir, "examples/calculator/proto");
const tempRoot = join(nodeDir, "proto");

function hasStreamingMethods(root) {
  const path = join(root, FILE);
  return existsSync(path) && /\brpc\s+RunningSum\s*\(/.test(readFileSync(path, "utf8"));
}

/** True while the real proto lacks the streaming methods. */
export const usingTemporaryCopy = !hasStreamingMethods(realRoot);
/** The directory that `calculator/v1/calculator.proto` is relative to. */
export const protoRoot = usingTemporaryCopy ? tempRoot : realRoot;
/** The calculator proto, relative to protoRoot. */
export const protoFile = FILE;
/** google/api/annotations.proto and http.proto, bundled with ferry-build. */
export const googleApiRoot = join(repoDir, "ferry-build/proto");
/** Import paths for the calculator proto. */
export const includeDirs = [protoRoot, googleApiRoot];

if (usingTemporaryCopy && !existsSync(join(tempRoot, FILE))) {
  throw new Error(`${join(realRoot, FILE)} lacks RunningSum and the temporary copy is gone`);
}
