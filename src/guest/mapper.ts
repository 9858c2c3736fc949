/**
 * One interface for "reach and change a page-table entry", one
 * implementation per way of reaching page-table frames — the shape of the
 * Rust `x86_64` crate's `Mapper` (offset, recursive, mapped page tables),
 * applied to a PV guest under Xen's rules: page-table frames are read-only to
 * the guest, so every strategy only *reads* tables through its mappings;
 * validated tables change through `mmu_update` (by machine address), and a
 * table not yet registered with Xen is written through a writable kernel
 * mapping (`kva`).
 *
 * The generic walk (in `kernel.ts`) goes top-down: the strategy gives the VA
 * of the root table, then the VA of each child table from its parent's VA,
 * the index and the child's machine frame (read from the parent entry).
 * Entry `i` of a table at VA `t` is at `t + 8i` in every strategy; they differ
 * in what finding `t` costs:
 *  - direct-mfn: all machine frames the guest owns at a fixed offset by mfn;
 *  - direct-pfn: RAM at a fixed offset by pfn (Linux): an M2P lookup per level;
 *  - shadow: a companion page beside each L4/L3/L2 holding its children's VAs;
 *  - recursive: one L4 slot maps the L4 itself; other address spaces by
 *    switching CR3 (NetBSD since 2012);
 *  - netbsd: recursive slot plus the alternate slot (APDP) for other address
 *    spaces (NetBSD ≤ 5).
 */

import type { AddressSpace, Kernel } from "./kernel.js";
import type { StrategyName } from "./report.js";

export interface PageTableMapper {
  readonly name: StrategyName;
  /** L4 slots of kernel VA the strategy takes beyond the kernel image (reported). */
  vaSlots(k: Kernel): number;
  /** Whether the kernel has a direct map of RAM (built at boot) under this strategy. */
  readonly directMap: boolean;
  /** L4 slots that belong to each address space (recursive, alternate), not copied from the kernel's. */
  readonly perAsSlots: readonly number[];

  /** Boot-time setup once the kernel's own (pinned) address space exists. */
  setup(k: Kernel): void;
  /** The kernel VA at which the domain builder maps pfn `pfn` (kernel image, initial tables). */
  initialVa(k: Kernel, pfn: number): number;
  /** Per-address-space slots written into a new, still unvalidated L4 (e.g. the recursive entry). */
  initRoot(k: Kernel, as: AddressSpace): void;

  /** Make `as`'s validated tables readable; returns the VA of its L4. */
  open(k: Kernel, as: AddressSpace): number;
  /** The VA of a child table (`level` is the child's) of the table at `parentVa`. */
  childVa(
    k: Kernel,
    as: AddressSpace,
    parentVa: number,
    level: number,
    index: number,
    childMfn: number,
  ): number;
  /** Done reading another address space's tables. */
  close(k: Kernel, as: AddressSpace): void;
  /** Back to the current address space's own view (end of a kernel operation, context switch). */
  closeAll(k: Kernel): void;

  /** A writable kernel VA for frame `mfn`: its direct-map address or a temporary slot (0 or 1). */
  kva(k: Kernel, mfn: number, pfn: number, slot: number): number;
  /** A page-table frame was allocated (shadow: map it and its companion into the window). */
  tableAllocated(k: Kernel, mfn: number, pfn: number, level: number): void;
  /** A child table was linked into `parentMfn` (shadow: record its VA in the companion). */
  linked(k: Kernel, parentMfn: number, index: number, childMfn: number, level: number): void;
  /** The frame is about to become a validated table: no writable kernel mapping may remain. */
  protect(k: Kernel, mfn: number, pfn: number, flush: boolean): void;
  /** The frame stopped being a table: give the kernel write access again. */
  unprotect(k: Kernel, mfn: number, pfn: number): void;
  /** The table frame is being freed. */
  tableFreed(k: Kernel, mfn: number, pfn: number, level: number): void;
  /** An address space is being destroyed (netbsd: drop an alternate-slot entry naming it). */
  release(k: Kernel, as: AddressSpace): void;

  /**
   * The strategy's own bookkeeping for a suspend, with every frame as a pfn (no machine frame
   * number survives a save); between kernel operations (nothing open).
   */
  saveState(k: Kernel): MapperState;
  /** Take `saveState`'s result back on a resumed kernel, pfns turned into its new frames. */
  loadState(k: Kernel, s: MapperState): void;
}

/** A strategy's saved bookkeeping: plain data, frames as pfns. */
export type MapperState = Record<string, number | number[] | [number, number][]>;
