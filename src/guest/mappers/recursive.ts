/**
 * Strategies 3 of seed 002 and NetBSD's: recursive mappings.
 *  - "recursive": L4 slot 255 holds the L4 itself (read-only, as Xen
 *    requires of a linear entry), so the L1 entry of `va` is at
 *    PTE_BASE + (va >> 12)·8 and every table at a computed address, with no
 *    page spent. Only the current address space is visible: another one's
 *    tables are reached by loading it (`MMUEXT_NEW_BASEPTR`) for the time of
 *    the access and switching back — what NetBSD's `pmap_map_ptes` does since
 *    the alternate slot was removed.
 *  - "netbsd": the same slot plus the alternate slot 510 (`APDP`): to reach
 *    another address space's tables the kernel writes that space's L4 into
 *    its own L4's slot 510 (a linear entry between two L4s, which Xen's
 *    linear-page-table rules must allow) and flushes the TLB; the window then
 *    shows the other tree. The entry is cleared when the access ends
 *    (NetBSD's `pmap_unmap_apdp` under Xen), so no L4 stays a linear target.
 * Frame contents (new tables before validation, user pages) go through the
 * temporary slots.
 */

import { LO_A, LO_P } from "../../x86/pte.js";
import { MMUEXT } from "../../xen/abi.js";
import { type AddressSpace, Kernel } from "../kernel.js";
import { APTE_SLOT, RECURSIVE_SLOT, SLOT_SIZE, vaOf } from "../layout.js";
import type { MapperState, PageTableMapper } from "../mapper.js";
import { TempSlots } from "./temp.js";

export class RecursiveMapper implements PageTableMapper {
  readonly directMap = false;
  private readonly temp = new TempSlots();
  /** netbsd: the address space the alternate slot shows. */
  private shown: AddressSpace | undefined;
  /** recursive: the space loaded for a foreign access (the kernel's `current` stays the process's). */
  private viewing: AddressSpace | undefined;
  /** Times another address space was opened (CR3 switches or APDP writes). */
  foreignOpens = 0;

  readonly perAsSlots: readonly number[];

  constructor(readonly name: "recursive" | "netbsd") {
    this.perAsSlots = name === "netbsd" ? [RECURSIVE_SLOT, APTE_SLOT] : [RECURSIVE_SLOT];
  }

  vaSlots(): number {
    return this.name === "netbsd" ? 2 : 1;
  }

  setup(k: Kernel): void {
    this.initRoot(k, k.kernelAs);
    k.hc.flush();
  }

  initialVa(_k: Kernel, pfn: number): number {
    return Kernel.kernelImageVa(pfn);
  }

  /** The self entry: the L4's own frame, present, read-only. */
  initRoot(k: Kernel, as: AddressSpace): void {
    const lo = ((as.l4 % 0x100000) * 4096 + (LO_P | LO_A)) >>> 0;
    k.setEntry(as, as.l4, RECURSIVE_SLOT, lo, Math.floor(as.l4 / 0x100000));
  }

  open(k: Kernel, as: AddressSpace): number {
    const self = vaOf(RECURSIVE_SLOT, RECURSIVE_SLOT, RECURSIVE_SLOT, RECURSIVE_SLOT);
    if (this.name === "recursive") {
      if (as === (this.viewing ?? k.current)) return self;
      // pmap_map_ptes: load the other space for the time of the access.
      k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_NEW_BASEPTR, arg1: BigInt(as.l4) }]);
      this.viewing = as === k.current ? undefined : as;
      this.foreignOpens++;
      return self;
    }
    if (as === k.current) return self;
    const alt = vaOf(APTE_SLOT, RECURSIVE_SLOT, RECURSIVE_SLOT, RECURSIVE_SLOT);
    if (this.shown === as) return alt;
    if (this.shown) this.closeAll(k);
    // APDP: the other L4, read-only, in our L4's alternate slot; then flush (pmap_apte_flush).
    const lo = ((as.l4 % 0x100000) * 4096 + (LO_P | LO_A)) >>> 0;
    k.hc.queuePte(k.current.l4 * 4096 + APTE_SLOT * 8, lo, Math.floor(as.l4 / 0x100000));
    k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_TLB_FLUSH_LOCAL }]);
    this.shown = as;
    this.foreignOpens++;
    return alt;
  }

  childVa(_k: Kernel, _as: AddressSpace, parentVa: number, _level: number, index: number): number {
    // Drop the top index of the window path and append `index`: one level further down.
    const top = Math.floor(parentVa / SLOT_SIZE);
    return top * SLOT_SIZE + (((parentVa % SLOT_SIZE) * 512) % SLOT_SIZE) + index * 4096;
  }

  close(k: Kernel, as: AddressSpace): void {
    if (as === this.shown || as === this.viewing) this.closeAll(k);
  }

  /** Back to the loaded space's own view: switch back, or clear the alternate slot. */
  closeAll(k: Kernel): void {
    if (this.viewing !== undefined) {
      this.viewing = undefined;
      k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_NEW_BASEPTR, arg1: BigInt(k.current.l4) }]);
    }
    if (this.shown !== undefined) {
      this.shown = undefined;
      k.hc.queuePte(k.current.l4 * 4096 + APTE_SLOT * 8, 0, 0);
      k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_TLB_FLUSH_LOCAL }]);
    }
  }

  kva(k: Kernel, mfn: number, _pfn: number, slot: number): number {
    return this.temp.map(k, mfn, slot);
  }

  tableAllocated(): void {}
  linked(): void {}

  protect(k: Kernel, mfn: number): void {
    this.temp.drop(k, mfn);
  }

  unprotect(): void {}
  tableFreed(): void {}

  release(k: Kernel, as: AddressSpace): void {
    if (as === this.shown || as === this.viewing || as === k.current) this.closeAll(k);
  }

  saveState(k: Kernel): MapperState {
    return { temp: this.temp.save(k), foreignOpens: this.foreignOpens };
  }

  loadState(k: Kernel, s: MapperState): void {
    this.temp.load(k, s.temp as number[]);
    this.foreignOpens = s.foreignOpens as number;
  }
}
