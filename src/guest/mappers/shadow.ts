/**
 * Strategy 2 of seed 002: a shadow table of virtual addresses. Every page
 * table is mapped somewhere in the kernel's table window, and every L4, L3
 * and L2 has a companion page beside it whose entry `i` holds the VA of the
 * child table entry `i` points at ("for the L1 page tables you don't need"
 * one). Reaching a child costs one extra load (the companion), and linking a
 * table one extra store; no direct map and no recursive slot are needed, but
 * each directory costs a second page.
 *
 * Window slots are two pages (table, companion). The window's own L1s are
 * tables too: each is mapped into the last slot of the range before it,
 * which is kept free for that purpose.
 */

import { MMUEXT } from "../../xen/abi.js";
import type { AddressSpace, Kernel } from "../kernel.js";
import { GuestError, Kernel as K } from "../kernel.js";
import { indexAt, TABLE_WINDOW_BASE } from "../layout.js";
import type { MapperState, PageTableMapper } from "../mapper.js";
import { TempSlots } from "./temp.js";

/** Two-page slots per window L1 (a window L1 maps 512 pages). */
const SLOTS_PER_L1 = 256;
/** The window spans one L2 (1 GiB): 512 L1s. */
const MAX_SLOTS = SLOTS_PER_L1 * 512;

export class ShadowMapper implements PageTableMapper {
  readonly name = "shadow" as const;
  readonly perAsSlots: readonly number[] = [];
  readonly directMap = false;
  private readonly temp = new TempSlots();
  /** Window slot of each table frame (by mfn). */
  private readonly slotOf = new Map<number, number>();
  /** Companion pfn of each slot (-1: none, i.e. an L1). */
  private readonly companion = new Map<number, number>();
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  /** Window L1s by index (mfn), once they exist. */
  private readonly windowL1: number[] = [];
  private windowL2 = 0;
  companionPages = 0;

  vaSlots(): number {
    return 1;
  }

  saveState(k: Kernel): MapperState {
    return {
      temp: this.temp.save(k),
      slotOf: [...this.slotOf].map(([m, slot]) => [k.pfnOf(m), slot] as [number, number]),
      companion: [...this.companion],
      freeSlots: [...this.freeSlots],
      nextSlot: this.nextSlot,
      windowL1: this.windowL1.map((m) => k.pfnOf(m)),
      windowL2: k.pfnOf(this.windowL2),
      companionPages: this.companionPages,
    };
  }

  loadState(k: Kernel, s: MapperState): void {
    this.temp.load(k, s.temp as number[]);
    this.slotOf.clear();
    for (const [p, slot] of s.slotOf as [number, number][]) this.slotOf.set(k.mfnOf(p), slot);
    this.companion.clear();
    for (const [slot, c] of s.companion as [number, number][]) this.companion.set(slot, c);
    this.freeSlots.splice(0, this.freeSlots.length, ...(s.freeSlots as number[]));
    this.nextSlot = s.nextSlot as number;
    this.windowL1.splice(0, this.windowL1.length, ...(s.windowL1 as number[]).map((p) => k.mfnOf(p)));
    this.windowL2 = k.mfnOf(s.windowL2 as number);
    this.companionPages = s.companionPages as number;
  }

  slotVa(slot: number): number {
    return TABLE_WINDOW_BASE + slot * 8192;
  }

  /**
   * Build the window: its L3, L2 and first L1 in the kernel's tree, then give every table the
   * kernel has (the builder's and the window's) a slot and a companion describing its children.
   */
  setup(k: Kernel): void {
    const as = k.kernelAs;
    // The window's tables are written while the kernel tree is already validated: mmu_update.
    const known: [number, number][] = [];
    const collect = (mfn: number, level: number) => {
      known.push([mfn, level]);
      if (level === 1) return;
      const t = k.readPage(k.mapper.initialVa(k, k.pfnOf(mfn)));
      for (let i = 0; i < 512; i++) {
        if ((t[i * 2] & 1) === 0) continue;
        if (level === 4 && (i < 272 || i === 400)) continue; // Xen's slots and user space
        collect((t[i * 2 + 1] & 0xfffff) * 0x100000 + (t[i * 2] >>> 12), level - 1);
      }
    };
    collect(as.l4, 4);
    // Window tables, linked under the kernel L4 without going through slots yet.
    const l3 = this.rawTable(k, 3);
    const l2 = this.rawTable(k, 2);
    const l1 = this.rawTable(k, 1);
    k.hc.flush();
    k.link(as, l2, 1, 0, l1);
    k.link(as, l3, 2, 0, l2);
    k.link(as, as.l4, 3, indexAt(TABLE_WINDOW_BASE, 4), l3);
    k.hc.flush();
    this.windowL2 = l2;
    this.windowL1.push(l1);
    for (const [mfn, level] of [
      ...known,
      [l3, 3] as [number, number],
      [l2, 2] as [number, number],
      [l1, 1] as [number, number],
    ]) {
      this.place(k, mfn, level, true);
    }
    k.hc.flush();
    // Companions: each directory's children, by VA.
    for (const [mfn, level] of [...known, [l3, 3] as [number, number], [l2, 2] as [number, number]]) {
      if (level === 1) continue;
      const t = k.readPage(this.slotVa(this.slotOf.get(mfn)!));
      for (let i = 0; i < 512; i++) {
        if ((t[i * 2] & 1) === 0) continue;
        const child = (t[i * 2 + 1] & 0xfffff) * 0x100000 + (t[i * 2] >>> 12);
        if (this.slotOf.has(child)) this.linked(k, mfn, i, child);
      }
    }
    as.rootVa = this.slotVa(this.slotOf.get(as.l4)!);
  }

  /** A validated kernel table made directly (for the window's own tree). */
  private rawTable(k: Kernel, level: number): number {
    const pfn = k.allocPfn();
    const mfn = k.mfnOf(pfn);
    k.noteTable(pfn, level);
    // Never mapped by the kernel before: zero it through a temporary slot, then drop the slot.
    k.zeroPage(this.temp.map(k, mfn, 0));
    this.temp.drop(k, mfn);
    k.hc.flush();
    return mfn;
  }

  initialVa(_k: Kernel, pfn: number): number {
    return K.kernelImageVa(pfn);
  }

  initRoot(k: Kernel, as: AddressSpace): void {
    as.rootVa = this.slotVa(this.slotOf.get(as.l4)!);
    const src = k.kernelAs;
    if (!src || src === as) return;
    // The kernel half's children are shared: copy their VAs into the new L4's companion.
    const from = k.readPage(src.rootVa + 4096);
    const to = as.rootVa + 4096;
    for (let i = 256; i < 512; i++) {
      if (from[i * 2] !== 0 || from[i * 2 + 1] !== 0) k.write64(to + i * 8, from[i * 2], from[i * 2 + 1]);
    }
  }

  open(_k: Kernel, as: AddressSpace): number {
    return as.rootVa;
  }

  childVa(
    k: Kernel,
    _as: AddressSpace,
    parentVa: number,
    level: number,
    index: number,
    child: number,
  ): number {
    if (level === 0) return 0;
    k.read64(parentVa + 4096 + index * 8);
    const va = k.hi * 2 ** 32 + k.lo;
    if (va === 0) throw new GuestError(`shadow: no companion entry for table 0x${child.toString(16)}`);
    return va;
  }

  close(): void {}
  closeAll(): void {}

  kva(k: Kernel, mfn: number, _pfn: number, slot: number): number {
    const s = this.slotOf.get(mfn);
    return s === undefined ? this.temp.map(k, mfn, slot) : this.slotVa(s);
  }

  /** Give table `mfn` a window slot (mapped writable unless `validated`) and a companion. */
  private place(k: Kernel, mfn: number, level: number, validated: boolean): void {
    const slot = this.takeSlot(k);
    this.slotOf.set(mfn, slot);
    this.mapAt(k, slot * 2, mfn, !validated);
    if (level > 1) {
      const cpfn = k.allocPfn();
      const cmfn = k.mfnOf(cpfn);
      this.companionPages++;
      this.companion.set(slot, cpfn);
      this.mapAt(k, slot * 2 + 1, cmfn, true);
      k.hc.flush();
      k.zeroPage(this.slotVa(slot) + 4096);
    } else {
      this.companion.set(slot, -1);
    }
  }

  /** Point window page `page` at `mfn` (an entry of a validated kernel L1: mmu_update). */
  private mapAt(k: Kernel, page: number, mfn: number, writable: boolean): void {
    const l1 = this.windowL1[Math.floor(page / 512)];
    const [lo, hi] = mfn < 0 ? [0, 0] : K.kernelPte(mfn, writable);
    k.hc.queuePte(l1 * 4096 + (page % 512) * 8, lo, hi);
  }

  private takeSlot(k: Kernel): number {
    const reused = this.freeSlots.pop();
    if (reused !== undefined) return reused;
    const slot = this.nextSlot++;
    if (slot >= MAX_SLOTS - 1) throw new GuestError("shadow: the table window is full");
    // The last slot of each window L1's range maps the next window L1.
    if (slot % SLOTS_PER_L1 === SLOTS_PER_L1 - 1) {
      const n = this.windowL1.length;
      const l1 = this.rawTable(k, 1);
      this.slotOf.set(l1, slot);
      this.companion.set(slot, -1);
      this.mapAt(k, slot * 2, l1, false);
      k.link(k.kernelAs, this.windowL2, 1, n, l1);
      this.windowL1.push(l1);
      this.linked(k, this.windowL2, n, l1);
      k.hc.flush();
      return this.nextSlot++;
    }
    return slot;
  }

  tableAllocated(k: Kernel, mfn: number, _pfn: number, level: number): void {
    this.place(k, mfn, level, false);
    k.hc.flush();
  }

  linked(k: Kernel, parent: number, index: number, child: number): void {
    const ps = this.slotOf.get(parent);
    const cs = this.slotOf.get(child);
    if (ps === undefined || cs === undefined) return;
    const va = this.slotVa(cs);
    k.write64(this.slotVa(ps) + 4096 + index * 8, va >>> 0, Math.floor(va / 2 ** 32));
  }

  protect(k: Kernel, mfn: number, _pfn: number, flush: boolean): void {
    this.temp.drop(k, mfn); // a frame reused as a table may still sit in a temporary slot
    const s = this.slotOf.get(mfn);
    if (s === undefined) return;
    const [lo, hi] = K.kernelPte(mfn, false);
    k.remap(this.slotVa(s), lo, hi, flush ? "all" : "none");
  }

  unprotect(k: Kernel, mfn: number): void {
    const s = this.slotOf.get(mfn);
    if (s === undefined) return;
    const [lo, hi] = K.kernelPte(mfn, true);
    k.remap(this.slotVa(s), lo, hi, "none");
  }

  tableFreed(k: Kernel, mfn: number): void {
    const s = this.slotOf.get(mfn);
    if (s === undefined) return;
    this.slotOf.delete(mfn);
    this.mapAt(k, s * 2, -1, false);
    const c = this.companion.get(s) ?? -1;
    if (c >= 0) {
      this.mapAt(k, s * 2 + 1, -1, false);
      k.freePfn(c);
      this.companionPages--;
    }
    this.companion.delete(s);
    k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_TLB_FLUSH_LOCAL }]);
    this.freeSlots.push(s);
  }

  release(): void {}
}
