/**
 * Model-based test: random but structured hypercall sequences from three
 * domains (0 privileged, 1 and 2 not), grants included. After every step the auditor recomputes every count
 * and checks every invariant (write exclusivity, no stale writable TLB entry
 * of a table, level discipline, ownership, …); every call must return a
 * result — an exception is a finding. At the end both domains are destroyed
 * and every frame they had must be free.
 */

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MMUEXT } from "../../src/xen/abi.js";
import { Host } from "../../src/xen/host.js";

const PAGES = 24;
const FLAGS = [0x1, 0x3, 0x5, 0x7, 0x27, 0x67, 0x107, 0xf, 0x87, 0x0, 0x6];
const HI_FLAGS = [0, 0, 0, 0x80000000, 0x40000000, 0x00100000];
const INDICES = [0, 1, 2, 255, 256, 258, 300, 511];
const VAS = [
  0x0n,
  0x1000n,
  0x2000n,
  0x4000n,
  0x4000n,
  0x5000n,
  0x200000n,
  0x8000000000n,
  0x8040201000n,
  0xffff800000000000n,
  0xffff880000000000n,
];

interface World {
  h: Host;
}

/** What the runs reached, to show the generator is not trivial. */
const reached = {
  calls: 0,
  ok: 0,
  validatedTables: 0,
  upperTables: 0,
  baseptr: 0,
  linear: 0,
  ptwr: 0,
  writableTlbHits: 0,
  grantMaps: 0,
  memoryOps: 0,
};

type Target = { kind: "own" | "other"; pfn: number } | { kind: "raw"; mfn: number };

const targetArb: fc.Arbitrary<Target> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({ kind: fc.constant("own" as const), pfn: fc.integer({ min: 0, max: 10 }) }),
  },
  {
    weight: 4,
    arbitrary: fc.record({ kind: fc.constant("own" as const), pfn: fc.integer({ min: 0, max: PAGES - 1 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("other" as const),
      pfn: fc.integer({ min: 0, max: PAGES - 1 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("raw" as const),
      mfn: fc.constantFrom(0x10, 0x100000, 0xffffffffff),
    }),
  },
);

/** A domain's frame for a pfn, or an I/O frame if the pfn was given back (ballooned out). */
function pm(w: World, dom: number, pfn: number): number {
  return w.h.domain(dom)?.p2m[pfn] ?? 0x10;
}

function mfnOf(w: World, dom: number, t: Target): number {
  if (t.kind === "raw") return t.mfn;
  const d = w.h.domain(t.kind === "own" ? dom : (dom + 1 + (t.pfn & 1)) % 3);
  return d?.p2m[t.pfn] ?? 0x10;
}

const valueArb = fc.record({
  target: targetArb,
  lo: fc.constantFrom(...FLAGS),
  hi: fc.constantFrom(...HI_FLAGS),
});

function value(w: World, dom: number, v: { target: Target; lo: number; hi: number }): bigint {
  return (BigInt(mfnOf(w, dom, v.target)) << 12n) | BigInt(v.lo) | (BigInt(v.hi) << 32n);
}

abstract class Step implements fc.Command<object, World> {
  check(): boolean {
    return true;
  }
  abstract exec(w: World): void;
  run(_m: object, w: World): void {
    let failure: unknown;
    try {
      this.exec(w);
    } catch (e) {
      failure = e;
    }
    expect(failure, `${this.toString()} threw`).toBeUndefined();
    reached.calls++;
    const f = w.h.frames;
    for (const d of w.h.domains.values()) {
      for (const m of d.pages) {
        if (f.flags[m] & 1 && f.type[m] >= 1 && f.type[m] <= 4) reached.validatedTables++;
        if (f.flags[m] & 1 && f.type[m] >= 2 && f.type[m] <= 4) reached.upperTables++;
        if (f.linear[m] !== 0 || f.tableUses[m] !== 0) reached.linear++;
      }
      for (const v of d.vcpus) if (v.guestTable) reached.baseptr++;
    }
    const a = w.h.audit();
    expect(
      a.problems.map((p) => p.message),
      `after ${this.toString()}`,
    ).toEqual([]);
  }
  abstract toString(): string;
}

class MmuUpdate extends Step {
  constructor(
    readonly dom: number,
    readonly table: Target,
    readonly index: number,
    readonly cmd: number,
    readonly val: { target: Target; lo: number; hi: number },
    readonly foreign: number,
  ) {
    super();
  }
  exec(w: World) {
    const ptr = (BigInt(mfnOf(w, this.dom, this.table)) << 12n) + BigInt(this.index * 8 + this.cmd);
    const fd = this.foreign < 0 ? 0x7ff0 : this.foreign;
    const r = w.h.mmuUpdate(this.dom, [{ ptr, val: value(w, this.dom, this.val) }], fd);
    expect(r.rc).toBeLessThanOrEqual(0);
    if (r.rc === 0) reached.ok++;
  }
  toString() {
    return `mmu_update(d${this.dom}, fd ${this.foreign}, ${JSON.stringify(this.table)}[${this.index}] cmd ${this.cmd} = ${JSON.stringify(this.val)})`;
  }
}

class Mmuext extends Step {
  constructor(
    readonly dom: number,
    readonly cmd: number,
    readonly target: Target,
    readonly src: Target,
  ) {
    super();
  }
  exec(w: World) {
    const r = w.h.mmuextOp(this.dom, [
      {
        cmd: this.cmd,
        arg1: BigInt(mfnOf(w, this.dom, this.target)),
        arg2: BigInt(mfnOf(w, this.dom, this.src)),
      },
    ]);
    expect(r.rc).toBeLessThanOrEqual(0);
  }
  toString() {
    return `mmuext_op(d${this.dom}, cmd ${this.cmd}, ${JSON.stringify(this.target)})`;
  }
}

class Uvm extends Step {
  constructor(
    readonly dom: number,
    readonly vcpu: number,
    readonly va: bigint,
    readonly val: { target: Target; lo: number; hi: number },
    readonly flags: number,
  ) {
    super();
  }
  exec(w: World) {
    w.h.updateVaMapping(this.dom, this.vcpu, this.va, value(w, this.dom, this.val), BigInt(this.flags));
  }
  toString() {
    return `update_va_mapping(d${this.dom}/${this.vcpu}, ${this.va.toString(16)}, ${JSON.stringify(this.val)}, ${this.flags})`;
  }
}

class Access extends Step {
  constructor(
    readonly dom: number,
    readonly vcpu: number,
    readonly va: bigint,
    readonly kind: "read" | "write" | "fetch",
    readonly user: boolean,
    readonly val: { target: Target; lo: number; hi: number },
  ) {
    super();
  }
  exec(w: World) {
    const r = w.h.access(
      this.dom,
      this.vcpu,
      this.va + 0x20n,
      this.kind,
      this.user,
      value(w, this.dom, this.val),
    );
    if (!r.fault && r.emulated) reached.ptwr++;
    if (!r.fault && this.kind === "write") reached.writableTlbHits++;
  }
  toString() {
    return `access(d${this.dom}/${this.vcpu}, ${this.va.toString(16)}, ${this.kind}, user=${this.user})`;
  }
}

class Assist extends Step {
  constructor(
    readonly dom: number,
    readonly on: boolean,
  ) {
    super();
  }
  exec(w: World) {
    w.h.vmAssist(this.dom, this.on ? 0 : 1, 2);
  }
  toString() {
    return `vm_assist(d${this.dom}, writable_pagetables ${this.on})`;
  }
}

class Poke extends Step {
  constructor(
    readonly dom: number,
    readonly pfn: number,
    readonly index: number,
    readonly val: { target: Target; lo: number; hi: number },
  ) {
    super();
  }
  exec(w: World) {
    w.h.poke(this.dom, pm(w, this.dom, this.pfn), this.index, value(w, this.dom, this.val));
  }
  toString() {
    return `poke(d${this.dom}, pfn ${this.pfn}[${this.index}], ${JSON.stringify(this.val)})`;
  }
}

/**
 * Each domain starts live: pfn 0 = L4 -> 1 = L3 -> 2 = L2 -> 3 = L1 (and 8 = a second L1 at L2[1]);
 * va 0x0..0x3000 map pfns 4..7 read/write, va 0x4000 maps the L1 itself read-only (for writable
 * page-table emulation); the L4 is pinned and is both vCPUs' kernel base pointer; pfn 9 (an L2) and
 * pfn 10 (an L4) are pinned spares.
 */
function buildTree(h: Host, domid: number): void {
  const d = h.domain(domid)!;
  const pte = (pfn: number, f: number) => (BigInt(d.p2m[pfn]) << 12n) | BigInt(f);
  h.poke(domid, d.p2m[0], 0, pte(1, 7));
  h.poke(domid, d.p2m[1], 0, pte(2, 7));
  h.poke(domid, d.p2m[2], 0, pte(3, 7));
  h.poke(domid, d.p2m[2], 1, pte(8, 7));
  for (let i = 0; i < 4; i++) h.poke(domid, d.p2m[3], i, pte(4 + i, 7));
  h.poke(domid, d.p2m[3], 4, pte(3, 5));
  expect(h.mmuextOp(domid, [{ cmd: MMUEXT.MMUEXT_PIN_L4_TABLE, arg1: BigInt(d.p2m[0]) }]).rc).toBe(0);
  // Spare same-level tables, so that linear entries between tables can arise.
  expect(h.mmuextOp(domid, [{ cmd: MMUEXT.MMUEXT_PIN_L2_TABLE, arg1: BigInt(d.p2m[9]) }]).rc).toBe(0);
  expect(h.mmuextOp(domid, [{ cmd: MMUEXT.MMUEXT_PIN_L4_TABLE, arg1: BigInt(d.p2m[10]) }]).rc).toBe(0);
  for (const v of [0, 1]) {
    expect(
      h.mmuextOp(domid, [{ cmd: MMUEXT.MMUEXT_NEW_BASEPTR, arg1: BigInt(d.p2m[0]) }], 0x7ff0, v).rc,
    ).toBe(0);
  }
}

/**
 * A hostile compound step: write through va (caching a writable translation), unmap the frame
 * without flushing (the guest's own business), then make the frame a page table. Only Xen's
 * flush on the type change keeps the stale writable translation from outliving it.
 */
class StaleRetype extends Step {
  constructor(
    readonly dom: number,
    readonly vcpu: number,
    readonly slot: number,
    readonly level: number,
  ) {
    super();
  }
  exec(w: World) {
    w.h.access(this.dom, this.vcpu, BigInt(this.slot * 0x1000), "write", false, 0n);
    const ptr = (BigInt(pm(w, this.dom, 3)) << 12n) + BigInt(this.slot * 8);
    const victim = w.h.mem.read64(Number(ptr & ~7n)) >> 12n;
    w.h.mmuUpdate(this.dom, [{ ptr, val: 0n }]);
    w.h.mmuextOp(this.dom, [{ cmd: this.level - 1, arg1: victim & 0xffffffffffn }]);
  }
  toString() {
    return `stale_retype(d${this.dom}/${this.vcpu}, slot ${this.slot}, as L${this.level})`;
  }
}

/** The granter writes (or revokes) an entry granting one of its pages to another domain. */
class Grant extends Step {
  constructor(
    readonly dom: number,
    readonly ref: number,
    readonly to: number,
    readonly pfn: number,
    readonly readonly: boolean,
    readonly revoke: boolean,
  ) {
    super();
  }
  exec(w: World) {
    w.h.grantWrite(
      this.dom,
      this.ref,
      this.revoke ? "revoke" : { to: this.to, frame: pm(w, this.dom, this.pfn), readonly: this.readonly },
    );
  }
  toString() {
    return `grant(d${this.dom} ref ${this.ref} -> d${this.to}, pfn ${this.pfn}${this.readonly ? " ro" : ""}${this.revoke ? " revoke" : ""})`;
  }
}

/** Map a grant (into one of the mapper's L1 slots, by machine address or linear address, or for a device). */
class MapGrant extends Step {
  constructor(
    readonly dom: number,
    readonly granter: number,
    readonly ref: number,
    readonly flags: number,
    readonly slot: Target,
    readonly index: number,
  ) {
    super();
  }
  exec(w: World) {
    const addr =
      this.flags & 16
        ? BigInt(mfnOf(w, this.dom, this.slot) * 4096 + this.index * 8)
        : BigInt(this.index) * 0x1000n;
    const r = w.h.grantTableOp(this.dom, 0, 0, [
      { host_addr: addr, flags: this.flags, ref: this.ref, dom: this.granter },
    ]);
    expect(r.rc).toBe(0);
    if (r.results[0].status === 0) reached.grantMaps++;
  }
  toString() {
    return `map_grant(d${this.dom} <- d${this.granter} ref ${this.ref}, flags ${this.flags}, ${JSON.stringify(this.slot)}[${this.index}])`;
  }
}

/** Unmap a grant handle (its recorded PTE address, or a wrong one). */
class UnmapGrant extends Step {
  constructor(
    readonly dom: number,
    readonly handle: number,
    readonly right: boolean,
    readonly replace: boolean,
  ) {
    super();
  }
  exec(w: World) {
    const mt = w.h.domain(this.dom)?.grants;
    if (!mt) return;
    const addr = this.right && this.handle < mt.mtAddr.length ? mt.mtAddr[this.handle] : 0x2000;
    const rd = w.h.domain(mt.mtDom[this.handle] ?? 0);
    const dev = rd ? BigInt(rd.grants.actMfn[mt.mtRef[this.handle] ?? 0] ?? 0) << 12n : 0n;
    w.h.grantTableOp(this.dom, 0, this.replace ? 7 : 1, [
      {
        host_addr: BigInt(addr),
        dev_bus_addr: this.right ? dev : 0n,
        handle: this.handle,
        new_addr: this.replace ? 0x3000n : 0n,
      },
    ]);
  }
  toString() {
    return `unmap_grant(d${this.dom} handle ${this.handle}${this.right ? "" : " wrong addr"}${this.replace ? " replace" : ""})`;
  }
}

/**
 * A hostile compound step: a grant mapped into an L1 slot, the slot then overwritten by
 * mmu_update (an implicit unmap), then the handle unmapped explicitly — which must fail the
 * PTE check rather than drop the grant's references a second time.
 */
class GrantOverwrite extends Step {
  constructor(
    readonly dom: number,
    readonly index: number,
    readonly val: { target: Target; lo: number; hi: number },
  ) {
    super();
  }
  exec(w: World) {
    const g = (this.dom + 1) % 3;
    const ref = 11;
    w.h.grantWrite(g, ref, { to: this.dom, frame: pm(w, g, 5) });
    const pte = BigInt(pm(w, this.dom, 3) * 4096 + this.index * 8);
    const r = w.h.grantTableOp(this.dom, 0, 0, [{ host_addr: pte, flags: 0x12, ref, dom: g }]);
    const handle = r.results[0].handle as number;
    w.h.mmuUpdate(this.dom, [{ ptr: pte, val: value(w, this.dom, this.val) }]);
    w.h.grantTableOp(this.dom, 0, 1, [{ host_addr: pte, dev_bus_addr: 0n, handle }]);
  }
  toString() {
    return `grant_overwrite(d${this.dom}, L1[${this.index}] := ${JSON.stringify(this.val)})`;
  }
}

/** A same-level entry: the live L2 (pfn 2) or L4 (pfn 0) pointing at the spare L2 (pfn 9) or L4 (pfn 10). */
class LinearEntry extends Step {
  constructor(
    readonly dom: number,
    readonly l4: boolean,
    readonly index: number,
    readonly flags: number,
    readonly reverse: boolean,
  ) {
    super();
  }
  exec(w: World) {
    const [a, b] = this.l4 ? [0, 10] : [2, 9];
    const [from, to] = this.reverse ? [b, a] : [a, b];
    w.h.mmuUpdate(this.dom, [
      {
        ptr: BigInt(pm(w, this.dom, from) * 4096 + this.index * 8),
        val: (BigInt(pm(w, this.dom, to)) << 12n) | BigInt(this.flags),
      },
    ]);
  }
  toString() {
    return `linear(d${this.dom}, ${this.l4 ? "L4" : "L2"}${this.reverse ? " reverse" : ""}[${this.index}] flags ${this.flags})`;
  }
}

/** A kernel store into the read-only mapping of the L1 (va 0x4000) with writable page tables on. */
class PtwrWrite extends Step {
  constructor(
    readonly dom: number,
    readonly slot: number,
    readonly val: { target: Target; lo: number; hi: number },
  ) {
    super();
  }
  exec(w: World) {
    w.h.vmAssist(this.dom, 0, 2);
    const r = w.h.access(
      this.dom,
      0,
      0x4000n + BigInt(this.slot * 8),
      "write",
      false,
      value(w, this.dom, this.val),
    );
    if (!r.fault && r.emulated) reached.ptwr++;
  }
  toString() {
    return `ptwr(d${this.dom}, L1[${this.slot}] := ${JSON.stringify(this.val)})`;
  }
}

/** memory_op: give a page back (possibly one still mapped, pinned or granted), or take pages. */
class Memory extends Step {
  constructor(
    readonly dom: number,
    readonly cmd: number,
    readonly pfn: number,
    readonly target: number,
  ) {
    super();
  }
  exec(w: World) {
    const extents = this.cmd === 1 ? [pm(w, this.target, this.pfn)] : [this.pfn];
    const r = w.h.memoryOp(this.dom, this.cmd, {
      extents,
      domid: this.target === this.dom ? undefined : this.target,
    });
    if (r.rc > 0) reached.memoryOps++;
  }
  toString() {
    return `memory_op(d${this.dom}, cmd ${this.cmd}, pfn ${this.pfn}, for d${this.target})`;
  }
}

const dom = fc.constantFrom(0, 1, 2);
const own = fc.record({ kind: fc.constant("own" as const), pfn: fc.integer({ min: 0, max: PAGES - 1 }) });
const commands = [
  fc
    .tuple(
      dom,
      targetArb,
      fc.constantFrom(...INDICES),
      fc.constantFrom(0, 0, 0, 1, 2, 3, 5),
      valueArb,
      fc.constantFrom(-1, -1, -1, 0, 1, 2),
    )
    .map(([d, t, i, c, v, fd]) => new MmuUpdate(d, t, i, c, v, fd)),
  fc
    .tuple(
      dom,
      fc.constantFrom(0, 1, 2, 3, 3, 4, 4, 5, 5, 15, 16, 17, 6, 10, 14, 19),
      fc.oneof({ weight: 5, arbitrary: own }, { weight: 1, arbitrary: targetArb }),
      targetArb,
    )
    .map(([d, c, t, s]) => new Mmuext(d, c, t, s)),
  fc
    .tuple(
      dom,
      fc.constantFrom(0, 1),
      fc.constantFrom(...VAS),
      valueArb,
      fc.constantFrom(0, 1, 2, 4, 6, 0x7002),
    )
    .map(([d, v, va, val, f]) => new Uvm(d, v, va, val, f)),
  fc
    .tuple(
      dom,
      fc.constantFrom(0, 1),
      fc.constantFrom(...VAS),
      fc.constantFrom("read", "write", "fetch"),
      fc.boolean(),
      valueArb,
    )
    .map(([d, v, va, k, u, val]) => new Access(d, v, va, k as "read" | "write" | "fetch", u, val)),
  fc.tuple(dom, fc.boolean()).map(([d, on]) => new Assist(d, on)),
  fc
    .tuple(
      dom,
      fc.constantFrom(8, 9, 10),
      fc.integer({ min: 0, max: 4 }),
      fc.integer({ min: 0, max: 12 }),
      fc.boolean(),
      fc.integer({ min: 0, max: 5 }),
    )
    .map(([d, ref, to, pfn, ro, rv]) => new Grant(d, ref, to === 0 ? d : (d + 2) % 3, pfn, ro, rv === 0)),
  fc
    .tuple(
      dom,
      fc.integer({ min: 0, max: 4 }),
      fc.constantFrom(8, 9, 10),
      fc.constantFrom(0x12, 0x16, 0x1a, 0x13, 0x2, 0x6, 0x1, 0x5, 0x0),
      fc.oneof(
        { weight: 4, arbitrary: fc.constant({ kind: "own" as const, pfn: 3 }) },
        { weight: 1, arbitrary: targetArb },
      ),
      fc.integer({ min: 0, max: 8 }),
    )
    .map(([d, g, ref, fl, slot, i]) => new MapGrant(d, g === 0 ? d : (d + 1) % 3, ref, fl, slot, i)),
  fc
    .tuple(dom, fc.integer({ min: 0, max: 4 }), fc.boolean(), fc.integer({ min: 0, max: 4 }))
    .map(([d, hnd, right, rep]) => new UnmapGrant(d, hnd, right, rep === 0)),
  fc.tuple(dom, fc.integer({ min: 0, max: 6 }), valueArb).map(([d, i, v]) => new GrantOverwrite(d, i, v)),
  fc.tuple(dom, fc.integer({ min: 0, max: 8 }), valueArb).map(([d, i, v]) => new PtwrWrite(d, i, v)),
  fc
    .tuple(
      dom,
      fc.constantFrom(0, 1, 1, 6),
      fc.integer({ min: 0, max: PAGES + 4 }),
      fc.integer({ min: 0, max: 5 }),
    )
    .map(([d, c, p, t]) => new Memory(d, c, p, t < 4 ? d : t % 3)),
  fc
    .tuple(dom, fc.boolean(), fc.constantFrom(5, 6, 300), fc.constantFrom(0x5, 0x5, 0x7, 0x0), fc.boolean())
    .map(([d, l4, i, f, r]) => new LinearEntry(d, l4, i, f, r)),
  fc
    .tuple(dom, fc.constantFrom(0, 1), fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 4 }))
    .map(([d, v, slot, l]) => new StaleRetype(d, v, slot, l)),
  fc
    .tuple(dom, fc.integer({ min: 0, max: PAGES - 1 }), fc.constantFrom(...INDICES), valueArb)
    .map(([d, p, i, v]) => new Poke(d, p, i, v)),
];

describe("hypervisor invariants under random hypercall sequences", () => {
  for (const policy of ["xen", "self-only", "split-count"] as const) {
    it(`holds every invariant (linear policy ${policy})`, () => {
      fc.assert(
        fc.property(fc.commands(commands, { maxCommands: 80, size: "large" }), (cmds) => {
          const h = new Host({ memoryMiB: 16, linearPolicy: policy });
          const owned: number[] = [];
          for (const domid of [0, 1, 2]) {
            const d = h.createDomain({ domid, pages: PAGES, vcpus: 2, privileged: domid === 0 });
            owned.push(...d.pages, ...d.xenPages);
            buildTree(h, domid);
          }
          fc.modelRun(() => ({ model: {}, real: { h } }), cmds);
          expect(h.destroyDomain(1)).toBe(0);
          expect(h.destroyDomain(2)).toBe(0);
          expect(h.destroyDomain(0)).toBe(0);
          expect(h.checkFree(owned)).toEqual([]);
          expect(h.audit().problems).toEqual([]);
        }),
        { numRuns: 200, seed: 7 },
      );
    });
  }

  it("reached the states where rules interact (the runs above were not trivial)", () => {
    expect(reached.calls).toBeGreaterThan(10_000);
    expect(reached.ok).toBeGreaterThan(300);
    expect(reached.upperTables).toBeGreaterThan(10_000);
    expect(reached.baseptr).toBeGreaterThan(10_000);
    expect(reached.linear).toBeGreaterThan(10);
    expect(reached.ptwr).toBeGreaterThan(20);
    expect(reached.writableTlbHits).toBeGreaterThan(30);
    expect(reached.grantMaps).toBeGreaterThan(50);
    expect(reached.memoryOps).toBeGreaterThan(100);
  });

  it("reaches pinned, validated multi-level trees (the generator is not trivial)", () => {
    const h = new Host({ memoryMiB: 16 });
    const d = h.createDomain({ domid: 1, pages: PAGES });
    const pte = (pfn: number, f: number) => (BigInt(d.p2m[pfn]) << 12n) | BigInt(f);
    h.poke(1, d.p2m[0], 0, pte(1, 7));
    h.poke(1, d.p2m[1], 0, pte(2, 7));
    expect(h.mmuextOp(1, [{ cmd: MMUEXT.MMUEXT_PIN_L4_TABLE, arg1: BigInt(d.p2m[0]) }]).rc).toBe(0);
    expect(h.frames.type[d.p2m[2]]).toBe(2);
  });
});
