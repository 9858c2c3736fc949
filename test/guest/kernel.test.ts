/**
 * The guest kernel's behaviour, the same for every page-table strategy and
 * pinning policy: mapping, demand-zero and copy-on-write faults, protection,
 * unmapping, fork, exec and exit — with the hypervisor's auditor clean after
 * every step and every frame accounted for at the end.
 */

import { describe, expect, it } from "vitest";
import { bootGuest } from "../../src/guest/boot.js";
import { GuestError, type Kernel } from "../../src/guest/kernel.js";
import { makeMapper } from "../../src/guest/mappers/index.js";
import { Process } from "../../src/guest/process.js";
import {
  PINNING_POLICIES,
  type PinningPolicy,
  STRATEGIES,
  type StrategyName,
} from "../../src/guest/report.js";
import { Host, type LinearPolicy } from "../../src/xen/host.js";

const MiB = 2 ** 20;
const PAGE = 4096;

function guest(strategy: StrategyName, pinning: PinningPolicy, mib = 64, linearPolicy?: LinearPolicy) {
  const h = new Host({ memoryMiB: mib + 64, linearPolicy });
  h.createDomain({ domid: 1, pages: mib * 256 });
  const { kernel } = bootGuest(h, 1, { mapper: makeMapper(strategy), pinning, method: "top-down" });
  return { h, k: kernel };
}

function clean(h: Host): void {
  const a = h.audit();
  expect(a.problems).toEqual([]);
  expect(a.ok).toBe(true);
}

/** Frames the guest kernel has in use (its own accounting). */
const inUse = (k: Kernel) => k.alloc.inUse;

describe.each(STRATEGIES.flatMap((s) => PINNING_POLICIES.map((p) => [s, p] as const)))(
  "%s, %s pinning",
  (strategy, pinning) => {
    it("maps on demand, protects, unmaps and frees the tables", () => {
      const { h, k } = guest(strategy, pinning);
      clean(h);
      const p = new Process(k);
      p.switchTo();
      const base0 = inUse(k);
      // 3 MiB starting 1 MiB into a 2 MiB window: two L1 tables.
      const a = p.mmap(3 * MiB, true, false, 0x4010_0000);
      expect(a).toBe(0x4010_0000);
      expect(p.touch(a, false)).toBe(0); // demand-zero
      p.touch(a, true, 0xdead);
      p.touch(a + 3 * MiB - PAGE, true, 7);
      expect(p.touch(a, false)).toBe(0xdead);
      expect(p.touch(a + 3 * MiB - PAGE, false)).toBe(7);
      clean(h);
      p.mprotect(a, PAGE, false, false);
      expect(() => p.touch(a, true, 1)).toThrow(/SIGSEGV/);
      expect(p.touch(a, false)).toBe(0xdead);
      p.mprotect(a, PAGE, true, false);
      p.touch(a, true, 0xbeef);
      expect(p.touch(a, false)).toBe(0xbeef);
      clean(h);
      const tablesBefore = k.tableCount[0];
      p.munmap(a, 3 * MiB);
      expect(() => p.touch(a, false)).toThrow(/SIGSEGV/);
      expect(k.tableCount[0]).toBe(tablesBefore - 2); // both L1s went with the last VMA on them
      clean(h);
      // Only the L3/L2 of the region stay (and their companions, with shadow tables).
      expect(inUse(k) - base0).toBeLessThanOrEqual(strategy === "shadow" ? 4 : 2);
      p.exit();
      clean(h);
    });

    it("boots at several sizes with either method, the auditor clean, all RAM reachable", () => {
      for (const mib of [64, 1088]) {
        for (const method of ["top-down", "linear"] as const) {
          const h = new Host({ memoryMiB: mib + 128 });
          h.createDomain({ domid: 1, pages: mib * 256 });
          const { kernel: k, boot } = bootGuest(h, 1, { mapper: makeMapper(strategy), pinning, method });
          clean(h);
          if (k.mapper.directMap) {
            expect(boot.mappedPages).toBe(k.pages);
            for (const pfn of [0, k.pages >> 1, k.pages - 1]) {
              k.read64(k.mapper.kva(k, k.mfnOf(pfn), pfn, 0)); // reachable through the direct map
            }
          }
          const p = new Process(k);
          p.switchTo();
          p.touch(p.mmap(PAGE), true, 9);
          p.exit();
          clean(h);
        }
      }
    });

    it("fork shares pages copy-on-write, exec replaces the space, exit frees everything", () => {
      const { h, k } = guest(strategy, pinning);
      const base0 = inUse(k);
      const parent = new Process(k);
      parent.switchTo();
      const a = parent.mmap(64 * PAGE);
      for (let i = 0; i < 64; i++) parent.touch(a + i * PAGE, true, 1000 + i);
      clean(h);
      const child = parent.fork();
      clean(h);
      // The parent's pages are now shared read-only: a write copies.
      for (let i = 0; i < 64; i++) expect(k.mapcount[k.pfnOf(mfnAt(k, parent, a + i * PAGE))]).toBe(2);
      child.switchTo();
      for (let i = 0; i < 64; i++) expect(child.touch(a + i * PAGE, false)).toBe(1000 + i);
      child.touch(a, true, 1);
      expect(child.touch(a, false)).toBe(1);
      expect(k.ops["fault:cow"]?.count).toBe(1);
      clean(h);
      parent.switchTo();
      expect(parent.touch(a, false)).toBe(1000);
      parent.touch(a, true, 2); // the parent's copy is its last mapping now: reused in place
      expect(k.ops["fault:reuse"]?.count).toBe(1);
      child.switchTo();
      expect(child.touch(a, false)).toBe(1);
      expect(child.touch(a + PAGE, false)).toBe(1001);
      clean(h);
      child.exec();
      expect(() => child.touch(a, false)).toThrow(/SIGSEGV/);
      expect(child.touch(child.vmas[0].start, false)).toBe(0);
      clean(h);
      child.exit();
      parent.switchTo();
      for (let i = 1; i < 64; i++) expect(parent.touch(a + i * PAGE, false)).toBe(1000 + i);
      parent.exit();
      clean(h);
      expect(inUse(k)).toBe(base0);
      expect(() => parent.exit()).toThrow(GuestError);
    });
  },
);

/** The mfn `va` maps in `p` (through the kernel's own walk). */
function mfnAt(k: Kernel, p: Process, va: number): number {
  let mfn = -1;
  p.forEachPte(va, va + PAGE, (_v, _l1, _i, lo, hi) => {
    mfn = (hi & 0xfffff) * 0x100000 + (lo >>> 12);
  });
  k.mapper.closeAll(k);
  return mfn;
}

describe("linear page-table policies (seed 000)", () => {
  it("NetBSD's alternate slot needs L4-to-L4 linear entries: Xen's rule allows them, the 2004 rule does not", () => {
    for (const policy of ["xen", "split-count"] as const) {
      const { h, k } = guest("netbsd", "eager", 64, policy);
      const p = new Process(k);
      p.switchTo();
      const a = p.mmap(PAGE);
      p.touch(a, true, 5);
      const c = p.fork(); // the child's tables are reached through the alternate slot
      c.switchTo();
      expect(c.touch(a, false)).toBe(5);
      clean(h);
    }
    const { k } = guest("netbsd", "eager", 64, "self-only");
    const p = new Process(k);
    p.switchTo();
    const a = p.mmap(PAGE);
    p.touch(a, true, 5);
    expect(() => p.fork()).toThrow(/-EINVAL/);
  });

  it("a recursive slot alone is a self-map, allowed by every policy", () => {
    for (const policy of ["xen", "self-only", "split-count"] as const) {
      const { h, k } = guest("recursive", "eager", 64, policy);
      const p = new Process(k);
      p.switchTo();
      const a = p.mmap(PAGE);
      p.touch(a, true, 5);
      const c = p.fork(); // reached by switching CR3 instead
      c.switchTo();
      expect(c.touch(a, false)).toBe(5);
      clean(h);
    }
  });
});
