// The generated calculator service (gen/es, made by `npm run build`), and a
// clear message when the build has not run yet.
let mod;
try {
  mod = await import("../gen/es/calculator/v1/calculator_pb.js");
} catch (e) {
  if (e?.code === "ERR_MODULE_NOT_FOUND") {
    console.error("error: gen/es is missing: run `npm ci && npm run build` in tests/node first");
    process.exit(2);
  }
  throw e;
}
export const { Calculator, CalculateRequestSchema, CountRequestSchema, NumberSchema } = mod;
