/**
 * The fuzz engine: deterministic runs, a generator that reaches the interesting parts of the
 * errno space, interpretation that never produces a malformed line for long, and shrinking that
 * keeps the violated invariant.
 */

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ACTION_LEN, FuzzMemory, Interpreter, PARAM_MAX } from "../../src/fuzz/actions.js";
import { Coverage, rcName } from "../../src/fuzz/coverage.js";
import { fuzz, mixSeed } from "../../src/fuzz/engine.js";
import { DEFAULT_WORLD, worldLines } from "../../src/fuzz/world.js";
import { ScenarioStepper } from "../../src/scenario/run.js";

describe("fuzz engine", () => {
  it("is deterministic: the same seed gives the same steps, coverage and findings", () => {
    const a = fuzz({ seed: 42, steps: 8000 });
    const b = fuzz({ seed: 42, steps: 8000 });
    expect(b.steps).toBe(a.steps);
    expect(b.episodes).toBe(a.episodes);
    expect(JSON.stringify(b.coverage.toJSON())).toBe(JSON.stringify(a.coverage.toJSON()));
    const c = fuzz({ seed: 43, steps: 8000 });
    expect(JSON.stringify(c.coverage.toJSON())).not.toBe(JSON.stringify(a.coverage.toJSON()));
    const x = fuzz({ seed: 3, steps: 5000, injectBugs: ["validation-leak"] });
    const y = fuzz({ seed: 3, steps: 5000, injectBugs: ["validation-leak"] });
    expect(x.findings[0].scenario).toBe(y.findings[0].scenario);
  });

  it("reaches successes and failures of every hypercall family", () => {
    const r = fuzz({ seed: 5, steps: 60_000 });
    const cov = r.coverage.toJSON();
    expect(r.coverage.pairs).toBeGreaterThanOrEqual(60);
    for (const rc of ["0", "-EINVAL", "-EBUSY", "-EPERM", "-ENOSYS"])
      expect(cov.mmu_update).toHaveProperty(rc);
    for (const rc of ["0", "-EINVAL", "-EBUSY", "-EPERM", "-EOPNOTSUPP"])
      expect(cov.mmuext_op).toHaveProperty(rc);
    for (const rc of ["0", "-EINVAL"]) expect(cov.update_va_mapping).toHaveProperty(rc);
    for (const st of ["GNTST_okay", "GNTST_general_error"])
      expect(cov["grant_table_op/map_grant_ref"]).toHaveProperty(st);
    for (const st of ["GNTST_okay", "GNTST_bad_handle", "GNTST_general_error"]) {
      expect(cov["grant_table_op/unmap_grant_ref"]).toHaveProperty(st);
    }
    expect(cov["access/write"]).toHaveProperty("ok");
    expect(Object.keys(cov["access/write"]).some((k) => k.startsWith("#PF"))).toBe(true);
    expect(cov["memory_op/decrease_reservation"]).toHaveProperty("ok");
    expect(cov.multicall !== undefined || cov["multicall/mmu_update"] !== undefined).toBe(true);
    // Interpretation almost always names things that exist.
    expect(r.skipped / r.steps).toBeLessThan(0.02);
  });

  it("every action, however mangled, becomes well-formed lines the runner accepts", () => {
    const action = fc.array(fc.nat({ max: PARAM_MAX }), { minLength: ACTION_LEN, maxLength: ACTION_LEN });
    fc.assert(
      fc.property(fc.array(action, { maxLength: 60 }), (actions) => {
        const lines = worldLines(DEFAULT_WORLD).map((obj, i) => ({ line: i + 1, text: "", obj }));
        const s = new ScenarioStepper(lines);
        while (s.step());
        const it = new Interpreter(DEFAULT_WORLD, new FuzzMemory());
        for (const a of actions) {
          for (const line of it.lines(a, s.host)) {
            const r = s.run(line); // throws ScenarioError if malformed
            expect((r.actual as { exception?: string }).exception).toBeUndefined();
            it.note(line, r.actual);
          }
        }
      }),
      { numRuns: 60, seed: 11 },
    );
  });

  it("names results as Xen does", () => {
    expect(rcName(-22)).toBe("-EINVAL");
    expect(rcName(0)).toBe("0");
    expect(rcName(3)).toBe("ok");
    const c = new Coverage();
    c.record({ op: "grant_table_op", cmd: 0 }, { rc: 0, status: [0, -4] });
    c.record({ op: "access", kind: "write" }, { fault: "0x7" });
    expect(c.toJSON()).toEqual({
      "access/write": { "#PF 0x7": 1 },
      "grant_table_op/map_grant_ref": { GNTST_bad_handle: 1, GNTST_okay: 1 },
    });
    expect(Coverage.fromJSON(c.toJSON()).pairs).toBe(3);
  });

  it("derives distinct seed streams", () => {
    const seen = new Set<number>();
    for (let w = 0; w < 64; w++) seen.add(mixSeed(1, w));
    expect(seen.size).toBe(64);
  });

  it("rejects a world that makes no sense", () => {
    expect(() => fuzz({ seed: 1, steps: 10, world: { domains: 1 } })).toThrow(/domains/);
    expect(() => fuzz({ seed: 1, steps: 0 })).toThrow(/steps/);
    expect(() => fuzz({ seed: 1, steps: 10, world: { policy: "bogus" as never } })).toThrow(/policy/);
  });
});
