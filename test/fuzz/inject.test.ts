/**
 * The fuzzer has teeth: each known bug class injected into the hypervisor (src/xen/bugs.ts) is
 * found within a fixed budget of steps, shrunk to a short scenario that names the invariant and
 * reproduces the bug (and passes on the hypervisor without it); without injection the same budget
 * finds nothing, under every linear page-table policy.
 */

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { fuzz } from "../../src/fuzz/engine.js";
import { FUZZ_POLICIES } from "../../src/fuzz/world.js";
import { runScenario, ScenarioStepper } from "../../src/scenario/run.js";
import { BUG_CLASSES, type BugClass } from "../../src/xen/bugs.js";

/** Steps the fuzzer gets to find each bug (it stops at the first finding). */
const BUDGET = 120_000;
const SEED = 1;
/** The longest shrunk scenario accepted (hypercalls and pokes after the world's lines). */
const SHORT = 20;

/** The invariants each bug class may break first. */
const KINDS: Record<BugClass, string[]> = {
  "fast-path-rw": ["write_exclusivity", "level", "type_count", "count", "stale_writable_tlb"],
  "linear-chain": ["linear_chain"],
  "no-type-flush": ["stale_writable_tlb"],
  "level-confusion": ["level", "count", "type_count", "linear_count", "exception"],
  "grant-unmap-unchecked": ["count", "type_count", "exception", "grant"],
  "validation-leak": ["count", "type_count"],
};

const ARTIFACTS = join(__dirname, "..", "..", "artifacts", "fuzz");

describe("injected bugs are found, shrunk and reproduced", () => {
  for (const bug of BUG_CLASSES) {
    it(bug, () => {
      const t0 = performance.now();
      const r = fuzz({ seed: SEED, steps: BUDGET, injectBugs: [bug] });
      const seconds = (performance.now() - t0) / 1000;
      expect(r.findings).toHaveLength(1);
      const f = r.findings[0];
      expect(KINDS[bug]).toContain(f.kind);
      expect(f.shrunkSteps).toBeLessThanOrEqual(SHORT);
      mkdirSync(ARTIFACTS, { recursive: true });
      writeFileSync(join(ARTIFACTS, `${bug}.jsonl`), f.scenario);
      console.log(
        `${bug}: found after ${r.steps} steps (${seconds.toFixed(1)} s with shrinking), ` +
          `invariant ${f.kind}; shrunk from ${f.originalSteps} to ${f.shrunkSteps} calls`,
      );
      // The file names the invariant in a comment line.
      expect(f.scenario.split("\n")[0]).toBe(`# pvmmu fuzz finding — invariant violated: ${f.kind}`);
      // Replayed on a hypervisor with the bug, it fails; on the real one, it passes.
      const buggy = new ScenarioStepper(f.scenario, { injectBugs: [bug] }).finish();
      expect(buggy.ok).toBe(false);
      if (f.kind !== "exception") expect(buggy.failures.map((x) => x.op)).toEqual(["audit"]);
      const fixed = runScenario(f.scenario);
      expect(fixed.failures).toEqual([]);
      expect(fixed.ok).toBe(true);
    });
  }

  for (const policy of FUZZ_POLICIES) {
    it(`without injection the same budget finds nothing (policy ${policy})`, () => {
      const r = fuzz({ seed: SEED, steps: BUDGET, world: { policy } });
      expect(r.findings.map((f) => f.scenario)).toEqual([]);
      expect(r.steps).toBeGreaterThanOrEqual(BUDGET);
    });
  }
});
