// Builds a JavaScript `burncache:host/udf` component with componentize-js.
//
//   node build.mjs [OUT.wasm] [SOURCE.js]
//
// First regenerates the WIT's TypeScript typings (types/generated) with jco and
// type-checks the example against them with tsc, then componentizes SOURCE
// (udf.js by default) against the `udf` world in ../../wit.
import { componentize } from "@bytecodealliance/componentize-js";
import { execFileSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const out = process.argv[2] ?? here("js_udf.wasm");
const source = process.argv[3] ?? here("udf.js");
const bin = (name) => here(`node_modules/.bin/${name}`);

if (!process.argv[3]) {
  const run = (tool, args) =>
    execFileSync(bin(tool), args, { cwd: here("."), stdio: ["ignore", "ignore", "inherit"] });
  run("jco", [
    "guest-types", "../../wit", "--world-name", "burncache:host/udf", "--all-features",
    "-o", "types/generated",
  ]);
  run("tsc", ["-p", "."]);
}

const { component } = await componentize({
  sourcePath: source,
  witPath: here("../../wit"),
  worldName: "burncache:host/udf",
  // A function needs neither; leaving them out keeps the component's imports to
  // what burncache provides every guest.
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
console.error(`wrote ${out} (${component.length} bytes)`);
