/**
 * `BatchWalker` against `PageWalker.walk` called once per address in order: on random trees
 * (every page size, random flags and reserved bits, cycles and shared tables, both paging
 * modes) and random processor state, the same result for every address and the same
 * accessed/dirty bits left in every table — with addresses repeated within a call, so that
 * one walk's flag writes matter to a later walk of the same call.
 */

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { canonicalize } from "../../src/x86/address.js";
import { BumpAllocator, PageTableBuilder } from "../../src/x86/builder.js";
import { PhysicalMemory } from "../../src/x86/memory.js";
import {
  HI_NX,
  HI_PK_SHIFT,
  LO_A,
  LO_D,
  LO_G,
  LO_P,
  LO_PCD,
  LO_PWT,
  LO_RW,
  LO_US,
} from "../../src/x86/pte.js";
import {
  ACC_PROBE,
  ACC_USER,
  ACC_WRITE,
  FAULT_GP,
  FAULT_NONE,
  FAULT_PF,
  PageWalker,
  PagingMode,
  PERM_D,
} from "../../src/x86/walk.js";
import { BatchWalker, WalkResults } from "../../src/x86/walk-many.js";
import {
  type ArbType,
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

const bytes = (f: Uint32Array): Buffer => Buffer.from(f.buffer, f.byteOffset, f.byteLength);

/** One `BatchWalker.walk` call: an access, and which addresses of the pool, in order. */
const callArb = fc.record({
  access: accessArb,
  probe: fc.noBias(fc.integer({ min: 0, max: 4 })).map((n) => n === 0),
  /** Indices into the pool: repeats within a group (256 walks) and across groups. */
  picks: fc.array(fc.nat(), { minLength: 1, maxLength: 600, size: "max" }),
});
type Call = ArbType<typeof callArb>;

/** Tallies over a property's runs, so that it can assert that each path was taken. */
const tally = () => ({ fast: 0, handed: 0, faults: 0 });

/**
 * Make each call with a `BatchWalker` over `batchMem` and, address by address, with
 * `PageWalker.walk` over `oneMem` (the same tables): the same results, and after each call
 * the same bytes in every frame of `frames`.
 */
function sameAsInOrder(
  batchMem: PhysicalMemory,
  oneMem: PhysicalMemory,
  m: PagingMode,
  pool: readonly bigint[],
  calls: readonly Call[],
  frames: readonly number[],
  t: ReturnType<typeof tally>,
): void {
  const batch = new BatchWalker(batchMem);
  const one = new PageWalker(oneMem);
  for (const call of calls) {
    const n = call.picks.length;
    const his = new Uint32Array(n);
    const los = new Uint32Array(n);
    call.picks.forEach((p, i) => {
      const va = pool[p % pool.length];
      his[i] = Number(va >> 32n);
      los[i] = Number(va & 0xffffffffn);
    });
    const access = accessBitsOf(call.access) | (call.probe ? ACC_PROBE : 0);
    // Results reused from an earlier call: every field of every walk must be written.
    const out = new WalkResults(n);
    out.paddr.fill(0x1234_5000);
    for (const f of [out.perm, out.leafLevel, out.fault, out.errorCode]) f.fill(0xff);
    const before = batch.fastWalks;
    const ok = batch.walk(m, his, los, access, out);
    t.fast += batch.fastWalks - before;
    t.handed += n - (batch.fastWalks - before);
    // Walk by walk, as "fault errorCode paddr perm leafLevel".
    const got: string[] = [];
    const want: string[] = [];
    let oks = 0;
    for (let i = 0; i < n; i++) {
      got.push(`${out.fault[i]} ${out.errorCode[i]} ${out.paddr[i]} ${out.perm[i]} ${out.leafLevel[i]}`);
      if (one.walk(m, his[i], los[i], access)) {
        oks++;
        want.push(`${FAULT_NONE} 0 ${one.paddr} ${one.perm} ${one.leafLevel}`);
      } else {
        t.faults++;
        want.push(`${one.fault} ${one.errorCode} 0 0 0`);
      }
    }
    expect(got).toEqual(want);
    expect(ok).toBe(oks);
    for (const f of frames) {
      expect(Buffer.compare(bytes(batchMem.frame(f)), bytes(oneMem.frame(f))), `frame ${f}`).toBe(0);
    }
  }
}

/** Leaf flags a builder tree draws from (P is the builder's). */
const LEAF_FLAGS = [LO_RW, LO_US, LO_A, LO_D, LO_G, LO_PWT, LO_PCD];

/**
 * A regular tree: 4 KiB pages in two 2 MiB windows (one L1 table each) and 2 MiB pages in a
 * third, random leaf flags, protection keys, NX, a rare reserved address bit; then some
 * table entries on the way lose accessed, writable or user, or gain NX.
 */
const regularArb = fc.record({
  cfg: cfgArb,
  pages: fc.array(
    fc.record({
      slot: fc.integer({ min: 0, max: 1023 }),
      large: fc.noBias(fc.integer({ min: 0, max: 9 })).map((n) => n === 0),
      flags: fc.subarray(LEAF_FLAGS),
      nx: fc.boolean(),
      pkey: fc.integer({ min: 0, max: 15 }),
      reserved: fc.noBias(fc.integer({ min: 0, max: 19 })).map((n) => n === 0),
    }),
    { minLength: 1, maxLength: 40 },
  ),
  tweaks: fc.array(
    fc.record({
      page: fc.nat(),
      level: fc.integer({ min: 2, max: 5 }),
      change: fc.constantFrom("noA", "noRW", "noUS", "nx"),
    }),
    { maxLength: 4 },
  ),
  /** Addresses: a mapped page (or, now and then, an unmapped one next to it) and an offset. */
  picks: fc.array(
    fc.record({
      page: fc.nat(),
      unmapped: fc.noBias(fc.integer({ min: 0, max: 9 })).map((n) => n === 0),
      offset: fc.integer({ min: 0, max: 0xfff }),
    }),
    { minLength: 1, maxLength: 12 },
  ),
  calls: fc.array(callArb, { minLength: 1, maxLength: 5 }),
});

describe("BatchWalker", () => {
  it("on random trees, gives what PageWalker.walk gives address by address, and writes the same flags", () => {
    const t = tally();
    fc.assert(
      fc.property(
        treeArb,
        cfgArb,
        fc.array(vaArb, { minLength: 1, maxLength: 8 }),
        fc.array(callArb, { minLength: 1, maxLength: 4 }),
        (tree, c, vas, calls) => {
          const batchMem = buildMemory(tree, c.maxPhysAddr);
          const oneMem = buildMemory(tree, c.maxPhysAddr);
          const cpu = cpuFor(batchMem, c);
          cpu.loadRoot(c.root * 4096);
          const pool = vas.map((v) => vaOf(v, c.la57, tree, c.root));
          const tables = Array.from({ length: TABLES }, (_, i) => i + 1);
          sameAsInOrder(batchMem, oneMem, cpu.mode, pool, calls, tables, t);
        },
      ),
      { numRuns: 300, seed: 0xba7c4 },
    );
    expect(t.handed).toBeGreaterThan(5000);
    expect(t.faults).toBeGreaterThan(5000);
    expect(t.fast).toBeGreaterThan(200);
  });

  it("on regular trees with random flags, gives what PageWalker.walk gives address by address, and writes the same flags", () => {
    const t = tally();
    fc.assert(
      fc.property(regularArb, (r) => {
        const c = r.cfg;
        const levels = c.la57 ? 5 : 4;
        const trees = [0, 1].map(() => {
          const mem = new PhysicalMemory({ sizeBytes: 2 ** 36, maxPhysAddrBits: c.maxPhysAddr });
          const alloc = new BumpAllocator(0x10);
          return { mem, alloc, b: new PageTableBuilder(mem, alloc, levels) };
        });
        // Two windows of 4 KiB pages (one low, one high half) and one of 2 MiB pages.
        const small = [0x4000_0000n, canonicalize(0xffffn << BigInt(levels === 5 ? 48 : 39), levels)];
        const largeBase = 0x80_0000_0000n;
        const mapped: bigint[] = [];
        for (const p of r.pages) {
          const va = p.large
            ? largeBase + BigInt(p.slot) * 0x20_0000n
            : small[p.slot & 1] + BigInt(p.slot >>> 1) * 0x1000n;
          const size = p.large ? 0x20_0000 : 0x1000;
          const pa = (0x100 + p.slot) * size;
          let lo = 0;
          for (const f of p.flags) lo |= f;
          const hi = (p.nx ? HI_NX : 0) | (p.pkey << HI_PK_SHIFT) | (p.reserved ? 1 << 19 : 0);
          for (const { b } of trees) b.map(va, pa, size, { lo, hi });
          mapped.push(va);
        }
        const probe = new PageWalker(trees[0].mem);
        const m = new PagingMode();
        m.levels = levels;
        m.rootFrame = trees[0].b.root;
        for (const tw of r.tweaks) {
          const va = mapped[tw.page % mapped.length];
          probe.walk(m, Number(va >> 32n), Number(va & 0xffffffffn), ACC_PROBE);
          const k = levels - tw.level; // step of the entry at that level
          if (k < 0 || k >= probe.depth - 1) continue; // tables only
          const at = probe.stepEntryAddress(k);
          for (const { mem } of trees) {
            const e = mem.read64(at);
            const v =
              tw.change === "nx"
                ? e | (1n << 63n)
                : e & ~BigInt(tw.change === "noA" ? LO_A : tw.change === "noRW" ? LO_RW : LO_US);
            mem.write64(at, v);
          }
        }
        const pool = r.picks.map(
          (p) => mapped[p.page % mapped.length] + BigInt(p.offset) + (p.unmapped ? 0x1000n : 0n),
        );
        const cpu = cpuFor(trees[0].mem, c);
        cpu.loadRoot(trees[0].b.root * 4096);
        const frames = Array.from({ length: trees[0].alloc.next - 0x10 }, (_, i) => 0x10 + i);
        sameAsInOrder(trees[0].mem, trees[1].mem, cpu.mode, pool, r.calls, frames, t);
      }),
      { numRuns: 300, seed: 0x7e9 },
    );
    expect(t.fast).toBeGreaterThan(10000);
    expect(t.handed).toBeGreaterThan(5000);
    expect(t.faults).toBeGreaterThan(5000);
  });

  it("keeps each 1 GiB region's upper levels apart: many regions, each behind an L3 entry of its own flags", () => {
    // More regions than the memo has entries, so that regions share entries and evict each other.
    const regionArb = fc.record({
      l4: fc.constantFrom(0, 1, 255, 256, 511),
      l3: fc.integer({ min: 0, max: 511 }),
      change: fc.constantFrom("none", "none", "noA", "noRW", "noUS", "nx", "absent"),
      dirty: fc.boolean(),
    });
    const t = tally();
    fc.assert(
      fc.property(
        fc.uniqueArray(regionArb, { minLength: 9, maxLength: 24, selector: (g) => `${g.l4}/${g.l3}` }),
        fc.array(callArb, { minLength: 1, maxLength: 3 }),
        cfgArb,
        (regions, calls, c) => {
          const trees = [0, 1].map(() => {
            const mem = new PhysicalMemory({ sizeBytes: 2 ** 36, maxPhysAddrBits: c.maxPhysAddr });
            const alloc = new BumpAllocator(0x10);
            return { mem, alloc, b: new PageTableBuilder(mem, alloc, 4) };
          });
          const m = new PagingMode();
          m.rootFrame = trees[0].b.root;
          const probe = new PageWalker(trees[0].mem);
          const pool: bigint[] = [];
          regions.forEach((g, n) => {
            const va = canonicalize((BigInt(g.l4) << 39n) | (BigInt(g.l3) << 30n), 4);
            const lo = LO_RW | LO_US | LO_A | (g.dirty ? LO_D : 0);
            for (const { b } of trees) b.mapRange(va, (0x1000 + n * 4) * 4096, 4 * 4096, 4096, { lo, hi: 0 });
            for (let p = 0; p < 4; p++) pool.push(va + BigInt(p * 4096 + n * 8));
            if (g.change === "none") return;
            probe.walk(m, Number(va >> 32n), Number(va & 0xffffffffn), ACC_PROBE);
            const at = probe.stepEntryAddress(1); // the L3 entry
            for (const { mem } of trees) {
              const e = mem.read64(at);
              const bit =
                g.change === "nx"
                  ? 1n << 63n
                  : BigInt({ noA: LO_A, noRW: LO_RW, noUS: LO_US, absent: LO_P }[g.change] ?? 0);
              mem.write64(at, g.change === "nx" ? e | bit : e & ~bit);
            }
          });
          const cpu = cpuFor(trees[0].mem, c);
          cpu.loadRoot(trees[0].b.root * 4096);
          const frames = Array.from({ length: trees[0].alloc.next - 0x10 }, (_, i) => 0x10 + i);
          sameAsInOrder(trees[0].mem, trees[1].mem, cpu.mode, pool, calls, frames, t);
        },
      ),
      { numRuns: 100, seed: 0x3e30 },
    );
    expect(t.fast).toBeGreaterThan(5000);
    expect(t.handed).toBeGreaterThan(1000);
    expect(t.faults).toBeGreaterThan(1000);
  });

  /** A 4-level tree of 4 KiB user pages from va 0 to pa 1 MiB, no accessed or dirty flags set. */
  function userPages(pages: number) {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 30 });
    const b = new PageTableBuilder(mem, new BumpAllocator(0x1000));
    b.mapRange(0n, 0x100000, pages * 4096, 4096, { lo: LO_RW | LO_US, hi: 0 });
    const m = new PagingMode();
    m.rootFrame = b.root;
    return { mem, m, b };
  }

  it("sets accessed and dirty flags as walks in order do: a later read of a page written earlier sees it dirty", () => {
    const { mem, m } = userPages(4);
    const batch = new BatchWalker(mem);
    const his = new Uint32Array(3);
    const los = Uint32Array.of(0x1008, 0x1010, 0x2000);
    const out = new WalkResults(3);
    // First pass: reads set accessed flags (handed over, they write).
    expect(batch.walk(m, his, los, ACC_USER, out)).toBe(3);
    expect(batch.fastWalks).toBe(0);
    expect(Array.from(out.paddr)).toEqual([0x101008, 0x101010, 0x102000]);
    // A write to page 1 (dirty flag to set), then a read of it in the same call.
    const wlos = Uint32Array.of(0x1000, 0x1ff8);
    const wout = new WalkResults(2);
    expect(batch.walk(m, new Uint32Array(2), wlos, ACC_USER | ACC_WRITE, wout, 1)).toBe(1);
    expect(wout.perm[0] & PERM_D).toBe(PERM_D);
    expect(batch.walk(m, his, los, ACC_USER, out)).toBe(3);
    expect(out.perm[0] & PERM_D).toBe(PERM_D); // page 1 dirty
    expect(out.perm[2] & PERM_D).toBe(0); // page 2 clean
    expect(batch.fastWalks).toBe(3);
    // In one call: write page 2 (handed over: D to set), then read it: the read sees D.
    const mixed = new WalkResults(2);
    const two = Uint32Array.of(0x2000, 0x2000);
    expect(batch.walk(m, new Uint32Array(2), two, ACC_USER | ACC_WRITE, mixed)).toBe(2);
    expect(mixed.perm[1] & PERM_D).toBe(PERM_D);
  });

  it("reads the tables afresh in each call: a table remapped or made read-only between calls is seen", () => {
    const { mem, m } = userPages(1024); // two L1 tables: va 0–2 MiB and 2–4 MiB
    const batch = new BatchWalker(mem);
    const n = 600; // more than a group
    const his = new Uint32Array(n);
    const los = Uint32Array.from({ length: n }, (_, i) => (i % 2) * 0x20_0000 + (i % 512) * 0x1000);
    const out = new WalkResults(n);
    const one = new PageWalker(mem);
    const check = (access: number) => {
      batch.walk(m, his, los, access, out);
      for (let i = 0; i < n; i++) {
        const okOne = one.walk(m, 0, los[i], access);
        expect([out.fault[i], out.paddr[i], out.perm[i]]).toEqual(
          okOne ? [FAULT_NONE, one.paddr, one.perm] : [one.fault, 0, 0],
        );
      }
    };
    check(ACC_USER); // sets the accessed flags
    check(ACC_USER);
    expect(batch.fastWalks).toBeGreaterThan(n / 2);
    // The L2 entry of the second 2 MiB now points to the first's L1 table, read-only.
    one.walk(m, 0, 0, ACC_PROBE);
    const l2 = one.stepEntryAddress(2);
    const first = mem.read64(l2);
    mem.write64(l2 + 8, first & ~BigInt(LO_RW));
    check(ACC_USER);
    expect(out.paddr[1]).toBe(0x100000 + los[1] - 0x20_0000); // where the first 2 MiB's page is
    check(ACC_USER | ACC_WRITE); // the second 2 MiB: a write to a read-only table's pages faults
    expect(out.fault[1]).toBe(FAULT_PF);
    expect(out.fault[0]).toBe(FAULT_NONE);
    // Not present: every walk of that region faults.
    mem.write64(l2 + 8, 0n);
    check(ACC_USER);
    expect(out.fault[1]).toBe(FAULT_PF);
  });

  it("reports faults: not present, rights, non-canonical", () => {
    const { mem, m } = userPages(2);
    const batch = new BatchWalker(mem);
    const his = Uint32Array.of(0, 0, 0, 0x8000);
    const los = Uint32Array.of(0x1000, 0x5000, 0x1000, 0);
    const out = new WalkResults(4);
    batch.walk(m, his, los, 0, out); // set accessed flags
    expect(batch.walk(m, his, los, ACC_USER | ACC_WRITE, out, 3)).toBe(2);
    expect(Array.from(out.fault.subarray(0, 3))).toEqual([FAULT_NONE, FAULT_PF, FAULT_NONE]);
    expect(out.errorCode[1]).toBe(ACC_USER | ACC_WRITE); // not present
    expect(batch.walk(m, his, los, ACC_USER, out)).toBe(2);
    expect(out.fault[3]).toBe(FAULT_GP);
    // A read-only page: a user write faults with P=1, W=1, U=1.
    const ro = userPages(1);
    ro.b.mapRange(0x1000n, 0x200000, 4096, 4096, { lo: LO_US | LO_A | LO_D, hi: 0 });
    const rb = new BatchWalker(ro.mem);
    const o = new WalkResults(1);
    expect(rb.walk(ro.m, new Uint32Array(1), Uint32Array.of(0x1000), ACC_USER | ACC_WRITE, o)).toBe(0);
    expect(o.errorCode[0]).toBe(7);
  });

  it("refuses a count beyond the addresses or the results, walking nothing", () => {
    const { mem, m } = userPages(1);
    const batch = new BatchWalker(mem);
    const before = Array.from(mem.frame(m.rootFrame));
    expect(() => batch.walk(m, new Uint32Array(2), new Uint32Array(2), 0, new WalkResults(1))).toThrow(
      /do not fit 1 results/,
    );
    expect(() => batch.walk(m, new Uint32Array(2), new Uint32Array(1), 0, new WalkResults(2), 2)).toThrow(
      /not within the 1 addresses/,
    );
    expect(() => new WalkResults(-1)).toThrow(RangeError);
    expect(Array.from(mem.frame(m.rootFrame))).toEqual(before);
    expect(batch.fastWalks).toBe(0);
  });
});
