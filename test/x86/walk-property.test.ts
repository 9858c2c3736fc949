/**
 * Property: on random page-table trees (every page size, random flags and
 * reserved bits, cycles and shared tables, both paging modes) and random
 * processor state, the model's translator agrees with a simple bigint
 * reference walker — same result, same physical address, same error code,
 * and the same accessed/dirty bits left in memory.
 */

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import type { PhysicalMemory } from "../../src/x86/memory.js";
import { PERM_NX, PERM_U, PERM_W } from "../../src/x86/walk.js";
import {
  accessArb,
  accessBitsOf,
  buildMemory,
  cfgArb,
  cpuFor,
  TABLES,
  treeArb,
  vaArb,
  vaOf,
} from "../helpers/random-tree.js";
import {
  type RefAccess,
  type RefConfig,
  type RefMemory,
  referenceWalk,
} from "../helpers/reference-walker.js";

function refMemory(mem: PhysicalMemory): RefMemory {
  return { read64: (pa) => mem.read64(Number(pa)), write64: (pa, v) => mem.write64(Number(pa), v) };
}

function firstDifference(a: Uint32Array, b: Uint32Array): number {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

const outcomes: Record<string, number> = { ok: 0, gp: 0, pf0: 0, pf1: 0, pf9: 0 };

describe("page walk vs. reference walker", () => {
  it("agrees on random trees, addresses, accesses and processor state", () => {
    fc.assert(
      fc.property(
        treeArb,
        cfgArb,
        fc.array(fc.tuple(vaArb, accessArb), { minLength: 4, maxLength: 10 }),
        (tree, c, probes) => {
          const model = buildMemory(tree, c.maxPhysAddr);
          const ref = buildMemory(tree, c.maxPhysAddr);
          const cpu = cpuFor(model, c);
          const cfg: RefConfig = { ...c, cr3: BigInt(c.root * 4096) };
          for (const [v, a] of probes) {
            cpu.loadRoot(c.root * 4096); // a fresh TLB for non-global entries
            cpu.tlb.flushAll();
            const va = vaOf(v, c.la57, tree, c.root);
            const acc: RefAccess = {
              write: a.kind === "write",
              fetch: a.kind === "fetch",
              user: a.user,
              implicit: a.implicit && !a.user,
            };
            const access = accessBitsOf(a);
            const expected = referenceWalk(refMemory(ref), cfg, va, acc);
            const got = cpu.translateVa(va, access);
            if (expected.kind === "ok") {
              expect(got).toMatchObject({
                ok: true,
                paddr: Number(expected.pa),
                pageSize: Number(expected.pageSize),
              });
              if (got.ok) {
                expect((got.perm & PERM_W) !== 0).toBe(expected.writable);
                expect((got.perm & PERM_U) !== 0).toBe(expected.user);
                expect((got.perm & PERM_NX) === 0).toBe(expected.executable);
              }
            } else if (expected.kind === "pf") {
              expect(got).toEqual({ ok: false, vector: 14, errorCode: expected.code, cr2: va });
            } else {
              expect(got).toEqual({ ok: false, vector: 13, errorCode: 0, cr2: undefined });
            }
            outcomes[expected.kind === "pf" ? `pf${expected.code & 9}` : expected.kind]++;
            // Same accessed/dirty bits left in every table.
            for (let t = 1; t <= TABLES; t++) expect(firstDifference(model.frame(t), ref.frame(t))).toBe(-1);
          }
        },
      ),
      { numRuns: 2000, seed: 0x5eed },
    );
    // The generator must reach every kind of outcome, often.
    expect(outcomes.ok).toBeGreaterThan(400);
    expect(outcomes.pf0).toBeGreaterThan(400); // not present
    expect(outcomes.pf1).toBeGreaterThan(400); // protection
    expect(outcomes.pf9).toBeGreaterThan(200); // reserved bit
    expect(outcomes.gp).toBeGreaterThan(50);
  });
});
