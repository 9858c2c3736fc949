/**
 * The minimum guest-kernel plumbing for seed 003: a PV kernel that runs only
 * through the hypervisor's interface (its own memory writes, mmu_update,
 * mmuext_op, grant_table_op), and a process whose page tables can hold grant
 * mappings of another domain's pages. (The guest-kernel layer of the next
 * issue extends this.)
 *
 * Linux builds a process's tables unpinned, pins the L4 when the process is
 * first activated, and at exit "unpins early": it switches to the kernel's own
 * L4 and unpins the process's before clearing the PTEs. An L1 that loses its
 * last type reference releases every entry implicitly — a grant PTE too, which
 * leaves the grant pinned forever (reference B8). Seed 003's designs:
 *  - "tracked": a side array per page-table page (one grant handle per entry,
 *    -1 where the entry is not a grant mapping); before a table is unpinned or
 *    freed, its grants are unmapped with `unmap_grant_ref` (batched); normal
 *    unmaps use the same record;
 *  - "skip-early-unpin": a process with foreign mappings keeps its tables
 *    pinned until its mappings are torn down by the driver that made them
 *    (XenLinux's `has_foreign_mappings`);
 *  - "none": the naive early unpin, to show what goes wrong.
 */

import { DOMID_SELF, MMUEXT } from "../xen/abi.js";
import {
  GNTMAP_contains_pte,
  GNTMAP_host_map,
  GNTMAP_readonly,
  GNTTABOP_map_grant_ref,
  GNTTABOP_unmap_grant_ref,
} from "../xen/grant.js";
import type { Host } from "../xen/host.js";
import { GuestError } from "./kernel.js";

export { GuestError };

export type GrantTeardown = "none" | "tracked" | "skip-early-unpin";

const PTE_TABLE = 0x7n; // P | RW | US for entries pointing at tables
const UNMAP_BATCH = 32; // GNTTAB_UNMAP_BATCH_SIZE

/** A PV guest kernel: its frame allocator and its own (kernel) L4. */
export class GuestKernel {
  private readonly freePfns: number[];
  /** The pfn of each frame the kernel handed out (its own record; no P2M scan to free one). */
  private readonly pfnOf = new Map<number, number>();
  /** The kernel's own L4 (init_mm's), pinned and loaded at boot. */
  readonly initL4: number;

  constructor(
    readonly h: Host,
    readonly domid: number,
  ) {
    const d = h.domain(domid);
    if (!d) throw new GuestError(`no domain ${domid}`);
    this.freePfns = d.p2m.map((_m, pfn) => pfn).reverse();
    this.initL4 = this.allocFrame();
    this.ext(MMUEXT.MMUEXT_PIN_L4_TABLE, this.initL4);
    this.ext(MMUEXT.MMUEXT_NEW_BASEPTR, this.initL4);
  }

  /** A free frame (mfn) of the guest, zeroed. */
  allocFrame(): number {
    const pfn = this.freePfns.pop();
    if (pfn === undefined) throw new GuestError("guest out of memory");
    const mfn = this.h.domain(this.domid)!.p2m[pfn];
    for (let i = 0; i < 512; i++) this.h.poke(this.domid, mfn, i, 0n);
    this.pfnOf.set(mfn, pfn);
    return mfn;
  }

  freeFrame(mfn: number): void {
    const pfn = this.pfnOf.get(mfn);
    if (pfn === undefined) return;
    this.pfnOf.delete(mfn);
    this.freePfns.push(pfn);
  }

  ext(cmd: number, mfn: number): void {
    const r = this.h.mmuextOp(this.domid, [{ cmd, arg1: BigInt(mfn) }]);
    if (r.rc !== 0) throw new GuestError(`mmuext_op ${cmd} on 0x${mfn.toString(16)} failed: ${r.rc}`);
  }

  /** Write a page-table entry: directly while the table is not validated, else by mmu_update. */
  setEntry(table: number, index: number, val: bigint, pinned: boolean): void {
    if (!pinned) {
      if (!this.h.poke(this.domid, table, index, val)) throw new GuestError("write to a validated table");
      return;
    }
    const r = this.h.mmuUpdate(this.domid, [{ ptr: BigInt(table * 4096 + index * 8), val }], DOMID_SELF);
    if (r.rc !== 0) throw new GuestError(`mmu_update failed: ${r.rc}`);
  }
}

/** A user process's address space. */
export class Process {
  readonly l4: number;
  private pinned = false;
  /** Page-table frames by level, for teardown. */
  private readonly tables: number[] = [];
  /** "tracked": per L1, the grant handle of each entry (-1: not a grant mapping). */
  private readonly grantHandles = new Map<number, Int32Array>();
  /** "skip-early-unpin": the driver's record of its grant mappings (PTE address, handle). */
  private readonly driverMaps: { pte: number; handle: number }[] = [];
  hasForeignMappings = false;

  constructor(
    readonly k: GuestKernel,
    readonly design: GrantTeardown,
  ) {
    this.l4 = k.allocFrame();
  }

  private index(va: bigint, level: number): number {
    return Number((va >> BigInt(12 + 9 * (level - 1))) & 511n);
  }

  /** The L1 for `va`, creating L3/L2/L1 tables as needed. */
  private l1For(va: bigint): number {
    let table = this.l4;
    for (let level = 4; level > 1; level--) {
      const i = this.index(va, level);
      const e = this.k.h.mem.read64(table * 4096 + i * 8);
      if (e & 1n) {
        table = Number((e >> 12n) & 0xff_ffff_ffffn);
        continue;
      }
      const child = this.k.allocFrame();
      this.tables.push(child);
      this.k.setEntry(table, i, (BigInt(child) << 12n) | PTE_TABLE, this.pinned);
      table = child;
    }
    return table;
  }

  /** Map one of the guest's own frames at `va`. */
  mapPage(va: bigint, mfn: number, writable = true): void {
    const l1 = this.l1For(va);
    this.k.setEntry(l1, this.index(va, 1), (BigInt(mfn) << 12n) | (writable ? 0x7n : 0x5n), this.pinned);
  }

  /** Linux pins a process's L4 when it is first activated, and loads it. */
  activate(): void {
    if (!this.pinned) {
      this.k.ext(MMUEXT.MMUEXT_PIN_L4_TABLE, this.l4);
      this.pinned = true;
    }
    this.k.ext(MMUEXT.MMUEXT_NEW_BASEPTR, this.l4);
  }

  /** gntdev-style: map another domain's granted page into this process's PTE for `va`. */
  mapGrant(va: bigint, granter: number, ref: number, readonly = false): number {
    if (!this.pinned) throw new GuestError("grant PTEs can only go into pinned page tables");
    const l1 = this.l1For(va);
    const idx = this.index(va, 1);
    const pte = l1 * 4096 + idx * 8;
    const flags = GNTMAP_host_map | GNTMAP_contains_pte | (readonly ? GNTMAP_readonly : 0);
    const r = this.k.h.grantTableOp(this.k.domid, 0, GNTTABOP_map_grant_ref, [
      { host_addr: BigInt(pte), flags, ref, dom: granter },
    ]);
    const res = r.results[0];
    if (res.status !== 0) throw new GuestError(`map_grant_ref failed: ${res.status}`);
    const handle = res.handle as number;
    this.hasForeignMappings = true;
    if (this.design === "tracked") {
      let side = this.grantHandles.get(l1);
      if (!side) {
        side = new Int32Array(512).fill(-1);
        this.grantHandles.set(l1, side);
      }
      side[idx] = handle;
    } else this.driverMaps.push({ pte, handle });
    return handle;
  }

  /** Unmap the grant at `va` (through the same record the design keeps). */
  unmapGrant(va: bigint): void {
    const l1 = this.l1For(va);
    const idx = this.index(va, 1);
    if (this.design === "tracked") {
      const side = this.grantHandles.get(l1);
      if (!side || side[idx] < 0) throw new GuestError("no grant mapped there");
      this.unmapBatch([{ pte: l1 * 4096 + idx * 8, handle: side[idx] }]);
      side[idx] = -1;
      return;
    }
    const pte = l1 * 4096 + idx * 8;
    const i = this.driverMaps.findIndex((m) => m.pte === pte);
    if (i < 0) throw new GuestError("no grant mapped there");
    this.unmapBatch(this.driverMaps.splice(i, 1));
  }

  private unmapBatch(maps: { pte: number; handle: number }[]): void {
    for (let i = 0; i < maps.length; i += UNMAP_BATCH) {
      const ops = maps
        .slice(i, i + UNMAP_BATCH)
        .map((m) => ({ host_addr: BigInt(m.pte), dev_bus_addr: 0n, handle: m.handle }));
      const r = this.k.h.grantTableOp(this.k.domid, 0, GNTTABOP_unmap_grant_ref, ops);
      const bad = r.results.find((x) => x.status !== 0);
      if (bad) throw new GuestError(`unmap_grant_ref failed: ${bad.status}`);
    }
  }

  /**
   * Process exit (`exit_mmap`): switch to the kernel's L4, tear the address space down and
   * free its page-table pages, with the chosen design's handling of grant PTEs.
   */
  exit(): void {
    const k = this.k;
    k.ext(MMUEXT.MMUEXT_NEW_BASEPTR, k.initL4); // xen_drop_mm_ref: nobody runs on it any more
    if (this.design === "tracked") {
      // Before the tables go, every grant PTE recorded in a side array is unmapped.
      const maps: { pte: number; handle: number }[] = [];
      for (const [l1, side] of this.grantHandles) {
        for (let i = 0; i < 512; i++)
          if (side[i] >= 0) maps.push({ pte: l1 * 4096 + i * 8, handle: side[i] });
      }
      this.unmapBatch(maps);
      this.grantHandles.clear();
    }
    const earlyUnpin = !(this.design === "skip-early-unpin" && this.hasForeignMappings);
    if (this.pinned && earlyUnpin) {
      k.ext(MMUEXT.MMUEXT_UNPIN_TABLE, this.l4); // xen_exit_mmap: the whole tree is devalidated now
      this.pinned = false;
    }
    if (!earlyUnpin) {
      // The driver's own unmap path runs while the tables are still pinned, then they go.
      this.unmapBatch(this.driverMaps.splice(0));
      k.ext(MMUEXT.MMUEXT_UNPIN_TABLE, this.l4);
      this.pinned = false;
    }
    // unmap_vmas + free_pgtables: plain memory writes now that nothing is validated.
    for (const t of [this.l4, ...this.tables]) {
      for (let i = 0; i < 512; i++) k.h.poke(k.domid, t, i, 0n);
      k.freeFrame(t);
    }
  }
}
