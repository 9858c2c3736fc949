/**
 * Random page-table trees for the walk properties: every page size, random flags and reserved
 * bits, cycles and shared tables, both paging modes, random processor state, and addresses that
 * follow the tree's entries (so most walks go deep).
 */

import fc from "fast-check";
import { Cpu, CR0_WP, CR4_PGE, CR4_PKE, CR4_PKS, CR4_SMAP, CR4_SMEP, EFER_NXE } from "../../src/x86/cpu.js";
import { PhysicalMemory } from "../../src/x86/memory.js";
import { ACC_FETCH, ACC_IMPLICIT, ACC_USER, ACC_WRITE } from "../../src/x86/walk.js";

export type ArbType<A> = A extends fc.Arbitrary<infer T> ? T : never;

/** Table frames live at 1..TABLES; data frames anywhere (lazily allocated). */
export const TABLES = 12;
/** The few indices used at each level, so random addresses hit populated entries. */
export const INDICES = [0, 1, 7, 256, 511];

export const frameArb = fc.oneof(
  { weight: 20, arbitrary: fc.integer({ min: 1, max: TABLES }) }, // a table (cycles and sharing included)
  { weight: 2, arbitrary: fc.constantFrom(512, 1024, 0x40000, 0x80000) }, // 2 MiB / 1 GiB aligned
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 0xfffff }) },
);

export const entryArb = fc.record({
  frame: frameArb,
  // Low flags: biased towards present.
  flags: fc.integer({ min: 0, max: 0xfff }).map((f) => (f | 1) & ~0x80),
  ps: fc.noBias(fc.integer({ min: 0, max: 5 })).map((n) => n === 0),
  notPresent: fc.noBias(fc.integer({ min: 0, max: 9 })).map((n) => n === 0),
  nx: fc.noBias(fc.integer({ min: 0, max: 3 })).map((n) => n === 0),
  pkey: fc.integer({ min: 0, max: 15 }),
  avlHigh: fc.integer({ min: 0, max: 0x7f }),
  highAddr: fc.oneof(
    { weight: 20, arbitrary: fc.constant(0) },
    { weight: 1, arbitrary: fc.constantFrom(1, 0x800, 0x80000) }, // address bits 32+ (some above MAXPHYADDR)
  ),
});

export const treeArb = fc.array(
  fc.record({
    table: fc.integer({ min: 1, max: TABLES }),
    index: fc.constantFrom(...INDICES),
    entry: entryArb,
  }),
  { minLength: 20, maxLength: 80 },
);

export const cfgArb = fc.record({
  la57: fc.boolean(),
  root: fc.integer({ min: 1, max: TABLES }),
  maxPhysAddr: fc.constantFrom(36, 40, 46, 52),
  nxe: fc.noBias(fc.integer({ min: 0, max: 3 })).map((n) => n !== 0),
  wp: fc.boolean(),
  smep: fc.boolean(),
  smap: fc.boolean(),
  ac: fc.boolean(),
  pke: fc.boolean(),
  pks: fc.boolean(),
  pkru: fc.integer({ min: 0, max: 0xffffffff }),
  pkrs: fc.integer({ min: 0, max: 0xffffffff }),
  gbPages: fc.boolean(),
  pge: fc.boolean(),
});

export const vaArb = fc.record({
  /** At each level, which populated entry of the current table to follow (or a random index). */
  choices: fc.array(fc.noBias(fc.nat()), { minLength: 5, maxLength: 5 }),
  offset: fc.integer({ min: 0, max: 0xfff }),
  nonCanonical: fc.integer({ min: 0, max: 20 }).map((n) => n === 0),
});

export const accessArb = fc.record({
  kind: fc.constantFrom("read", "write", "fetch"),
  user: fc.boolean(),
  implicit: fc.boolean(),
});

export type Tree = ArbType<typeof treeArb>;

export function entryValue(e: Tree[number]["entry"]): { lo: number; hi: number } {
  const flags = (e.notPresent ? e.flags & ~1 : e.flags) | (e.ps ? 0x80 : 0);
  const lo = ((e.frame % 0x100000) * 4096 + flags) >>> 0;
  const hi =
    (Math.floor(e.frame / 0x100000) |
      e.highAddr |
      (e.avlHigh << 20) |
      (e.pkey << 27) |
      (e.nx ? 1 << 31 : 0)) >>>
    0;
  return { lo, hi };
}

export function buildMemory(tree: Tree, maxPhysAddr: number): PhysicalMemory {
  const mem = new PhysicalMemory({ sizeBytes: 2 ** 36, maxPhysAddrBits: maxPhysAddr });
  for (let t = 1; t <= TABLES; t++) mem.frameForWrite(t);
  for (const { table, index, entry } of tree) {
    const f = mem.frameForWrite(table);
    const { lo, hi } = entryValue(entry);
    f[index * 2] = lo;
    f[index * 2 + 1] = hi;
  }
  return mem;
}

/** An address that follows the tree's entries from `root` (so most walks go deep). */
export function vaOf(v: ArbType<typeof vaArb>, la57: boolean, tree: Tree, root: number): bigint {
  const levels = la57 ? 5 : 4;
  let va = BigInt(v.offset);
  let table = root;
  for (let l = levels; l >= 1; l--) {
    // The entries of this table as last written.
    const here = [...new Map(tree.filter((e) => e.table === table).map((e) => [e.index, e])).values()].filter(
      (e) => !e.entry.notPresent,
    );
    const c = v.choices[l - 1];
    const pick = here.length > 0 && c % 8 !== 0 ? here[c % here.length] : undefined;
    const index = pick ? pick.index : INDICES[c % INDICES.length];
    va |= BigInt(index) << BigInt(12 + 9 * (l - 1));
    if (pick) table = pick.entry.frame;
  }
  const bits = la57 ? 57 : 48;
  va = BigInt.asUintN(64, BigInt.asIntN(bits, va)); // canonical
  if (v.nonCanonical) va ^= 1n << 60n;
  return va;
}

/** A CPU over `mem` in the processor state `c` describes. */
export function cpuFor(mem: PhysicalMemory, c: ArbType<typeof cfgArb>): Cpu {
  const cpu = new Cpu(mem, {
    la57: c.la57,
    gbPages: c.gbPages,
    cr0: (1n << 31n) | (c.wp ? CR0_WP : 0n) | 1n,
    cr4:
      (1n << 5n) |
      (c.pge ? CR4_PGE : 0n) |
      (c.smep ? CR4_SMEP : 0n) |
      (c.smap ? CR4_SMAP : 0n) |
      (c.pke ? CR4_PKE : 0n) |
      (c.pks ? CR4_PKS : 0n),
    efer: (1n << 8n) | (1n << 10n) | (c.nxe ? EFER_NXE : 0n),
  });
  cpu.setAc(c.ac);
  cpu.setPkru(c.pkru);
  cpu.setPkrs(c.pkrs);
  return cpu;
}

/** The ACC_* bits of a drawn access. */
export function accessBitsOf(a: ArbType<typeof accessArb>): number {
  const user = a.user;
  return (
    (a.kind === "write" ? ACC_WRITE : 0) |
    (a.kind === "fetch" ? ACC_FETCH : 0) |
    (user ? ACC_USER : 0) |
    (a.implicit && !user ? ACC_IMPLICIT : 0)
  );
}
