#!/usr/bin/env node
// The pvmmu command: runs the compiled CLI (built by `npm install` through the `prepare` script).
import { existsSync } from "node:fs";

const entry = new URL("../dist/src/cli/main.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write(
    "pvmmu: not built yet — run `npm install` (or `npm run build`) in the pvmmu checkout\n",
  );
  process.exit(2);
}
// A closed pipe (e.g. `| head`) ends the output quietly.
process.stdout.on("error", (e) => {
  if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw e;
});
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
