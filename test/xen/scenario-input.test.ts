/**
 * Bad scenario input gets a clear error (ScenarioError, naming the line) or a
 * result — never another exception. Random JSON values, random field
 * mutations of real scenario lines, and truncated lines.
 */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseScenario, ScenarioError } from "../../src/scenario/parse.js";
import { runScenario } from "../../src/scenario/run.js";

const real = readFileSync(join(__dirname, "..", "..", "scenarios", "grants", "b7-unmap.jsonl"), "utf8")
  .split("\n")
  .filter((l) => l.trim() && !l.startsWith("#"));

function runsCleanly(text: string): void {
  try {
    const r = runScenario(text);
    expect(typeof r.ok).toBe("boolean");
    // An exception inside an operation is reported as a result ({exception}); for bad input it
    // must not happen at all: the input is refused or the operation returns Xen's answer.
    const crashed = r.lines.filter((l) => (l.actual as { exception?: string })?.exception !== undefined);
    expect(crashed.map((l) => `line ${l.line}: ${(l.actual as { exception: string }).exception}`)).toEqual(
      [],
    );
  } catch (e) {
    expect(e, String((e as Error)?.stack)).toBeInstanceOf(ScenarioError);
    expect((e as Error).message).toMatch(/^line \d+: /);
  }
}

describe("scenario input", () => {
  it("random JSON values on any line", () => {
    fc.assert(
      fc.property(fc.array(fc.jsonValue(), { minLength: 1, maxLength: 4 }), (vals) => {
        runsCleanly(vals.map((v) => JSON.stringify(v)).join("\n"));
      }),
      { numRuns: 300, seed: 3 },
    );
  });

  it("real scenario lines with a field replaced by garbage", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: real.length - 1 }),
        fc.constantFrom(
          "op",
          "dom",
          "reqs",
          "ops",
          "ptr",
          "val",
          "frame",
          "index",
          "expect",
          "cmd",
          "pfn",
          "handle",
        ),
        fc.jsonValue(),
        (line, field, garbage) => {
          const lines = [...real];
          const o = JSON.parse(lines[line]);
          if (field in o) o[field] = garbage;
          else if (Array.isArray(o.ops) && o.ops[0]) o.ops[0][field] = garbage;
          else if (Array.isArray(o.reqs) && o.reqs[0]) o.reqs[0][field] = garbage;
          lines[line] = JSON.stringify(o);
          runsCleanly(lines.join("\n"));
        },
      ),
      { numRuns: 400, seed: 4 },
    );
  });

  it("truncated lines are refused before anything runs", () => {
    for (let cut = 1; cut < real[2].length; cut += 7) {
      expect(() => parseScenario(`${real[0]}\n${real[2].slice(0, cut)}`)).toThrow(/^line 2: /);
    }
  });
});
