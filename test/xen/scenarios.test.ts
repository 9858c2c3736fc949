/** Every scenario under scenarios/ holds, and the auditor is clean after each. */

import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { runScenario } from "../../src/scenario/run.js";
import { SCENARIOS, scenarioFiles } from "../helpers/fixtures.js";

describe("scenarios", () => {
  const all = scenarioFiles();
  it("covers every behaviour of reference section 10 and every linear policy", () => {
    const names = all.map((f) => f.slice(SCENARIOS.length + 1));
    for (let b = 1; b <= 39; b++) {
      expect(
        names.some((n) => n.startsWith(`xen/${String(b).padStart(2, "0")}`)),
        `behaviour ${b}`,
      ).toBe(true);
    }
    for (const p of ["xen", "self-only", "split-count"]) expect(names).toContain(`linear/seed000-${p}.jsonl`);
  });
  for (const file of all) {
    it(file.slice(SCENARIOS.length + 1), () => {
      const r = runScenario(readFileSync(file, "utf8"));
      expect(r.failures).toEqual([]);
      expect(r.audit).toEqual({ ok: true, problems: [] });
      expect(r.lines.length).toBeGreaterThan(3);
    });
  }
});
