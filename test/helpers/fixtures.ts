/** Fixtures several test files share: the scenario files, and a small booted guest. */

import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import type { StrategyName } from "../../src/guest/report.js";
import { bootOnHost } from "../../src/guest/run.js";

/** The scenarios folder. */
export const SCENARIOS = join(__dirname, "..", "..", "scenarios");

/** Every `.jsonl` file below `dir`, sorted. */
export function scenarioFiles(dir = SCENARIOS): string[] {
  return readdirSync(dir)
    .flatMap((n) => (statSync(join(dir, n)).isDirectory() ? scenarioFiles(join(dir, n)) : [join(dir, n)]))
    .filter((f) => f.endsWith(".jsonl"))
    .sort();
}

/** A 64 MiB guest of `strategy`, Linux pinning, booted and idle (seed 1). */
export function bootedGuest(strategy: StrategyName) {
  return bootOnHost({ strategy, pinning: "linux", workload: "boot", memoryBytes: 64 * 2 ** 20, seed: 1 });
}
