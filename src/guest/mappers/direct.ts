/**
 * Strategies 1a and 1b of seed 002: a direct map.
 *  - "direct-mfn": every machine frame the guest owns mapped at
 *    DIRECT_MAP_BASE + mfn·4 KiB. A table's VA comes straight from the frame
 *    number in its parent entry; but machine frames are scattered, so the map
 *    has gaps and its page tables cover frames the guest does not own.
 *  - "direct-pfn" (Linux): RAM mapped by pseudo-physical frame number, so the
 *    map is dense; every step from a parent entry (an mfn) to the child's VA
 *    is an M2P lookup, and every entry written a P2M lookup.
 * Unvalidated tables are written through the same mapping (writable until the
 * table is registered with Xen, read-only after).
 */

import type { AddressSpace, Kernel } from "../kernel.js";
import { Kernel as K } from "../kernel.js";
import { DIRECT_MAP_BASE, SLOT_SIZE } from "../layout.js";
import type { MapperState, PageTableMapper } from "../mapper.js";

export class DirectMapper implements PageTableMapper {
  readonly perAsSlots: readonly number[] = [];
  readonly directMap = true;

  constructor(readonly name: "direct-mfn" | "direct-pfn") {}

  /** Direct-map VA of a frame. */
  va(_k: Kernel, mfn: number, pfn: number): number {
    return DIRECT_MAP_BASE + (this.name === "direct-mfn" ? mfn : pfn) * 4096;
  }

  vaSlots(k: Kernel): number {
    const span = this.name === "direct-mfn" ? k.h.frames.frames : k.pages;
    return Math.ceil((span * 4096) / SLOT_SIZE);
  }

  setup(): void {}

  saveState(): MapperState {
    return {};
  }

  loadState(): void {}

  initialVa(k: Kernel, pfn: number): number {
    return this.va(k, this.name === "direct-mfn" ? k.mfnOf(pfn) : 0, pfn);
  }

  initRoot(): void {}

  open(k: Kernel, as: AddressSpace): number {
    return this.childVa(k, as, 0, 4, 0, as.l4);
  }

  childVa(
    k: Kernel,
    _as: AddressSpace,
    _parentVa: number,
    _level: number,
    _index: number,
    child: number,
  ): number {
    return DIRECT_MAP_BASE + (this.name === "direct-mfn" ? child : k.pfnOf(child)) * 4096;
  }

  close(): void {}
  closeAll(): void {}

  kva(k: Kernel, mfn: number, pfn: number): number {
    return this.va(k, mfn, pfn);
  }

  tableAllocated(): void {}
  linked(): void {}

  protect(k: Kernel, mfn: number, pfn: number, flush: boolean): void {
    const [lo, hi] = K.kernelPte(mfn, false);
    k.remap(this.va(k, mfn, pfn), lo, hi, flush ? "all" : "none");
  }

  unprotect(k: Kernel, mfn: number, pfn: number): void {
    const [lo, hi] = K.kernelPte(mfn, true);
    k.remap(this.va(k, mfn, pfn), lo, hi, "none");
  }

  tableFreed(): void {}
  release(): void {}
}
