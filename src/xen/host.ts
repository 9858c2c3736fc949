/**
 * A host running Xen: machine memory, the frame table, the M2P, domains, and
 * the frame allocator. The hypercalls themselves live in mmu.ts (mmu_update,
 * update_va_mapping), mmuext.ts (mmuext_op) and multicall.ts; the reference
 * counting core in mm.ts.
 *
 * Frames 0..255 (the first MiB) belong to DOMID_IO, as Xen assigns them at
 * boot; a few frames belong to DOMID_XEN (what Xen installs in L4 slots
 * 256–271). Guest frames come from a deterministic scatter over all of RAM
 * (an additive sequence with a stride coprime to the frame count), so a
 * guest's pfns and mfns never line up.
 */

import { PhysicalMemory } from "../x86/memory.js";
import type { TlbOptions } from "../x86/tlb.js";
import { DOMID_IO, DOMID_SELF, DOMID_XEN, ENOSYS, ESRCH, PGT_writable_page } from "./abi.js";
import { type AccessKind, type AccessResult, guestAccess } from "./access.js";
import { type AuditReport, audit } from "./audit.js";
import { type BugClass, InjectedBugs } from "./bugs.js";
import { Domain, type DomainOptions, type Vcpu } from "./domain.js";
import { getVcpuContext, pageFrameInfo, pauseDomain, setVcpuContext, type VcpuState } from "./domctl.js";
import { F_VALIDATED, F_XEN_HEAP, FrameTable } from "./frametable.js";
import { setGdt } from "./gdt.js";
import {
  type CopyPtr,
  GNTST_okay,
  GNTTABOP_copy,
  GNTTABOP_map_grant_ref,
  GNTTABOP_query_size,
  GNTTABOP_setup_table,
  GNTTABOP_unmap_and_replace,
  GNTTABOP_unmap_grant_ref,
  GTF_permit_access,
  GTF_reading,
  GTF_readonly,
  GTF_writing,
  grantCopy,
  MAX_GRANT_FRAMES,
  type MapOp,
  mapGrantRef,
  setupTable,
  type UnmapOp,
  unmapGrantRef,
} from "./grant.js";
import { type ShadowOpResult, shadowOp } from "./logdirty.js";
import { type MemoryResult, memoryOp, type Reservation } from "./memory.js";
import { flushDomainTlbs } from "./mm.js";
import {
  getPgOwner,
  type HypercallResult,
  type MmuUpdateReq,
  mmuUpdate,
  mmuUpdateBuf,
  updateVaMapping,
  updateVaMappingHalves,
} from "./mmu.js";
import { type MmuextOp, mmuextOp } from "./mmuext.js";
import { type MulticallEntry, multicall, vmAssist } from "./multicall.js";
import { destroyDomain, finishDestroy, isUnreferenced } from "./teardown.js";

export type LinearPolicy = "xen" | "self-only" | "split-count";

export interface HostOptions {
  /** Machine memory in MiB (default 256). A 256 GiB host costs only what is touched. */
  memoryMiB?: number;
  /** Xen's `pv-linear-pt` (default true): allow linear (recursive) page-table entries at all. */
  pvLinearPt?: boolean;
  /**
   * Which linear page-table rule applies when `pvLinearPt` is on:
   *  - "xen" (default): Xen's current rules — read-only, same level, same domain, one hop
   *    (a table may contain linear entries or be the target of some, not both), self-maps
   *    hold no reference, other targets hold a type reference;
   *  - "self-only": the 2004 rule — a table may map only itself;
   *  - "split-count": seed 000's second proposal — uses of a table as a directory and as a
   *    table one level down are counted apart, so a directory others still map linearly
   *    can be reused as a table one level down once nothing uses it as a directory.
   */
  linearPolicy?: LinearPolicy;
  /** A debug build of Xen: `_PAGE_GNTTAB` (bit 62) is reserved in L1 entries. Default false. */
  debugBuild?: boolean;
  /** Entries of each vCPU's TLB for 4 KiB pages (a power of two; default 4096). */
  tlbEntries?: number;
  /** Test-only: known bug classes to inject (src/xen/bugs.ts). Never set by the CLI. */
  injectBugs?: readonly BugClass[];
}

/** Frames of the first MiB, owned by DOMID_IO. */
export const IO_FRAMES = 256;

export class Host {
  readonly mem: PhysicalMemory;
  readonly frames: FrameTable;
  readonly domains = new Map<number, Domain>();
  readonly pvLinearPt: boolean;
  readonly linearPolicy: LinearPolicy;
  readonly debugBuild: boolean;
  /** Bugs injected for tests (all false in normal use). */
  readonly bugs: InjectedBugs;
  /** TLB sizes of every vCPU created on this host. */
  readonly tlb: TlbOptions | undefined;
  /** Every frame Xen owns (DOMID_XEN), in allocation order: the RO M2P L3 first. */
  readonly xenFrames: number[] = [];
  /** Xen-owned frames installed in every validated L4's Xen slots. */
  readonly xenSlotFrames: number[] = [];
  readonly roM2pL3: number;
  /** `dom_xen`, owner of Xen's frames (a pseudo-domain with no vCPUs). */
  readonly domXen: Domain;
  /**
   * Work the hypervisor did, for cost reports: tables promoted (each examines 512 entries)
   * and single entries validated by mmu_update / update_va_mapping / ptwr.
   */
  readonly counters = { tablesValidated: 0, entriesValidated: 0 };

  private readonly freeList: number[] = [];
  private readonly stride: number;
  private readonly blocks: number;
  private scanned = 0;
  private readonly total: number;
  /** Frames owned by anyone (I/O, Xen, domains). */
  private used = 0;
  /** Where `allocExtent` looks for the next run of frames. */
  private runCursor = -1;

  constructor(opts: HostOptions = {}) {
    const mib = opts.memoryMiB ?? 256;
    if (!Number.isInteger(mib) || mib < 8 || mib > 16 * 1024 * 1024) {
      throw new RangeError(
        `host memory must be a whole number of MiB from 8 to 16777216 (16 TiB), got ${mib}`,
      );
    }
    this.mem = new PhysicalMemory({ sizeBytes: mib * 2 ** 20 });
    this.frames = new FrameTable(this.mem.frameCount);
    this.pvLinearPt = opts.pvLinearPt ?? true;
    this.linearPolicy = opts.linearPolicy ?? "xen";
    this.debugBuild = opts.debugBuild ?? false;
    this.bugs = new InjectedBugs(opts.injectBugs);
    const n = opts.tlbEntries;
    this.tlb =
      n === undefined
        ? undefined
        : { entries4k: n, entries2m: Math.max(1, n >>> 3), entries1g: Math.max(1, n >>> 6) };
    this.total = this.frames.frames;
    this.blocks = Math.ceil(this.total / 4096);
    this.stride = coprimeStride(this.blocks);
    this.used = IO_FRAMES;
    const f = this.frames;
    for (let m = 0; m < IO_FRAMES; m++) f.claim(m, DOMID_IO, -1);
    this.domXen = new Domain({ domid: DOMID_XEN, vcpus: 0 }, this.mem, this.frames.listPos);
    this.roM2pL3 = this.allocXenFrame();
    for (let s = 0; s < 16; s++) this.xenSlotFrames.push(this.allocXenFrame());
  }

  /**
   * A frame of Xen's own, shared read-only with privileged guests (`share_xen_page_with_
   * privileged_guests(…, SHARE_ro)`): type none, validated, type count 1 — so it can be mapped
   * read-only with FD = DOMID_XEN but a writable mapping fails (-EBUSY).
   */
  private allocXenFrame(): number {
    const m = this.allocFrame();
    this.used++;
    this.frames.claim(m, DOMID_XEN, -1);
    this.frames.typeCount[m] = 1;
    this.frames.flags[m] = F_VALIDATED;
    this.xenFrames.push(m);
    return m;
  }

  /**
   * A free frame, or -1 when memory is exhausted. Deterministic. Frames are handed out block
   * by block (16 MiB blocks, visited in a scattered order) and in a scattered order within
   * each block: consecutive pfns never get consecutive mfns, yet a guest's frames stay in few
   * blocks, so the frame table it touches stays compact.
   */
  allocFrame(): number {
    const f = this.frames;
    const fromList = this.freeList.pop();
    if (fromList !== undefined) return fromList;
    const slots = this.blocks * 4096;
    while (this.scanned < slots) {
      const s = this.scanned++;
      const block = ((s >>> 12) * this.stride) % this.blocks;
      const m = block * 4096 + ((((s & 4095) * 2617) >>> 0) & 4095);
      if (m < this.total && m >= IO_FRAMES && f.owner[m] === 0) return m;
    }
    return -1;
  }

  /**
   * 2^order free, naturally aligned frames (order 0: one frame from the scatter), or -1. Runs
   * are found by a cursor that moves down through memory and wraps once, so successive calls do
   * not rescan what they already passed.
   */
  allocExtent(order: number): number {
    if (order === 0) return this.allocFrame();
    const n = 2 ** order;
    const f = this.frames;
    const top = Math.floor((f.frames - n) / n) * n;
    if (this.runCursor < 0 || this.runCursor > top) this.runCursor = top;
    const runs = Math.floor(top / n) + 1;
    for (let k = 0; k < runs; k++) {
      let base = this.runCursor - k * n;
      if (base < IO_FRAMES) base += runs * n;
      if (base > top || base < IO_FRAMES) continue;
      let free = true;
      for (let j = 0; j < n && free; j++) free = f.owner[base + j] === 0;
      if (free) {
        this.runCursor = base - n;
        return base;
      }
    }
    return -1;
  }

  /** Create a domain whose pfns 0..pages-1 are populated with scattered frames. */
  createDomain(opts: DomainOptions & { pages?: number }): Domain {
    if (!Number.isInteger(opts.domid) || opts.domid < 0 || opts.domid >= 0x7ff0) {
      throw new RangeError(`domid must be an integer from 0 to 0x7fef, got ${opts.domid}`);
    }
    if (this.domains.has(opts.domid)) throw new RangeError(`domain ${opts.domid} already exists`);
    const pages = opts.pages ?? 0;
    if (!Number.isInteger(pages) || pages < 0)
      throw new RangeError(`pages must be a whole number, got ${pages}`);
    if (this.freeFrames() < pages + 1) throw new RangeError(`not enough free memory for ${pages} pages`);
    const d = new Domain({ ...opts, tlb: opts.tlb ?? this.tlb }, this.mem, this.frames.listPos);
    d.perdomainL3 = this.allocXenFrame();
    this.domains.set(d.domid, d);
    for (let pfn = 0; pfn < pages; pfn++) this.assignPage(d, this.allocFrame(), pfn);
    d.grants.grow(this, d, 1);
    return d;
  }

  /** Frames still free (for checks; not a scan). */
  freeFrames(): number {
    return this.total - this.used;
  }

  /**
   * Give frame `mfn` to `d` as its pfn `pfn` (`assign_pages` + `guest_physmap_add_page`: the
   * M2P entry, and the guest's P2M list as the guest keeps it); pfn -1: no gpfn (invalid M2P).
   */
  assignPage(d: Domain, mfn: number, pfn: number): void {
    this.mem.zeroFrame(mfn);
    this.frames.claim(mfn, d.domid, pfn);
    d.pages.add(mfn);
    if (pfn >= 0) d.setGuestP2m(this.mem, pfn, mfn);
    this.used++;
  }

  /**
   * A Xen-heap frame shared with `d` (`share_xen_page_with_guest`, SHARE_rw), e.g. a grant-table
   * frame: owned by `d`, holding one allocation reference, on `d.xenPages` rather than its page
   * list, and typed writable with a type reference of Xen's own ("the incremented type count
   * pins as writable"), so the guest can map it but never make it a page table or descriptor page.
   */
  allocSharedFrame(d: Domain): number {
    const m = this.allocFrame();
    if (m < 0) return -1;
    this.mem.zeroFrame(m);
    this.frames.claim(m, d.domid, -1);
    this.frames.listPos[m] = -1;
    this.frames.flags[m] |= F_XEN_HEAP | F_VALIDATED;
    this.frames.type[m] = PGT_writable_page;
    this.frames.typeCount[m] = 1;
    d.xenPages.push(m);
    this.used++;
    return m;
  }

  /**
   * The frame's last reference went: free it to the heap (`free_domheap_page`). A Xen-heap frame
   * shared with a domain (F_XEN_HEAP: a grant-table frame the guest gave back with
   * decrease_reservation, say) only leaves the domain's list; its grant table keeps it until the
   * domain is destroyed (`finishDestroy`).
   */
  freePage(mfn: number): void {
    const f = this.frames;
    if (f.flags[mfn] & F_XEN_HEAP) {
      const owner = this.domains.get(f.ownerOf(mfn));
      const i = owner ? owner.xenPages.indexOf(mfn) : -1;
      if (i >= 0) owner!.xenPages.splice(i, 1);
      if (owner && isUnreferenced(owner)) finishDestroy(this, owner);
      return;
    }
    const d = f.listPos[mfn] >= 0 ? this.domains.get(f.ownerOf(mfn)) : undefined;
    d?.pages.delete(mfn);
    this.used--;
    f.clear(mfn);
    this.mem.zeroFrame(mfn);
    this.freeList.push(mfn);
    if (d && isUnreferenced(d)) finishDestroy(this, d);
  }

  domain(domid: number): Domain | undefined {
    return this.domains.get(domid);
  }

  /** The domain, or a RangeError naming it (for the API edge). */
  private dom(domid: number): Domain {
    const d = this.domains.get(domid);
    if (!d) throw new RangeError(`no domain ${domid}`);
    return d;
  }

  private vcpu(domid: number, vcpu: number): Vcpu {
    const v = this.dom(domid).vcpus[vcpu];
    if (!v) throw new RangeError(`domain ${domid} has no vCPU ${vcpu}`);
    return v;
  }

  // ---- hypercalls, issued by a domain's vCPU ----

  mmuUpdate(domid: number, reqs: MmuUpdateReq[], foreigndom = DOMID_SELF): HypercallResult {
    return mmuUpdate(this, this.dom(domid), reqs, foreigndom);
  }

  /** `mmu_update` on requests as laid out in guest memory: 4 words each (ptr lo/hi, val lo/hi). */
  mmuUpdateBuf(domid: number, buf: Uint32Array, count: number, foreigndom = DOMID_SELF): HypercallResult {
    return mmuUpdateBuf(this, this.dom(domid), buf, count, foreigndom);
  }

  mmuextOp(domid: number, ops: MmuextOp[], foreigndom = DOMID_SELF, vcpu = 0): HypercallResult {
    return mmuextOp(this, this.vcpu(domid, vcpu), ops, foreigndom);
  }

  updateVaMapping(domid: number, vcpu: number, va: bigint, val: bigint, flags: bigint): number {
    const v = this.vcpu(domid, vcpu);
    return updateVaMapping(this, v, va, val, flags, { kind: "domain", d: v.domain });
  }

  /** `update_va_mapping` with the address and entry as 32-bit halves and numeric UVMF flags. */
  updateVaMappingHalves(
    domid: number,
    vcpu: number,
    vaHi: number,
    vaLo: number,
    lo: number,
    hi: number,
    flags: number,
  ): number {
    const v = this.vcpu(domid, vcpu);
    return updateVaMappingHalves(this, v, vaHi, vaLo, lo, hi, flags & 3, BigInt(flags & ~3), {
      kind: "domain",
      d: v.domain,
    });
  }

  updateVaMappingOtherdomain(
    domid: number,
    vcpu: number,
    va: bigint,
    val: bigint,
    flags: bigint,
    target: number,
  ): number {
    const v = this.vcpu(domid, vcpu);
    const pg = getPgOwner(this, v.domain, target);
    return typeof pg === "number" ? pg : updateVaMapping(this, v, va, val, flags, pg);
  }

  setGdt(domid: number, vcpu: number, frames: number[], entries: number): number {
    return setGdt(this, this.vcpu(domid, vcpu), frames, entries);
  }

  vmAssist(domid: number, cmd: number, type: number): number {
    return vmAssist(this.dom(domid), cmd, type);
  }

  multicall(domid: number, vcpu: number, calls: MulticallEntry[]): HypercallResult[] {
    return multicall(this, this.vcpu(domid, vcpu), calls);
  }

  /** A guest memory access (8 bytes) through the vCPU's MMU; writes may be emulated (ptwr). */
  access(domid: number, vcpu: number, va: bigint, kind: AccessKind, user = false, value = 0n): AccessResult {
    return guestAccess(this, this.vcpu(domid, vcpu), va, kind, user, value);
  }

  /**
   * A vCPU's memory interface: `read`, `write` and `fetch` of 8 bytes at a linear address in
   * kernel or user mode, through the vCPU's MMU and TLB (the same as `access`).
   */
  vcpuMemory(
    domid: number,
    vcpu = 0,
  ): {
    read(va: bigint, user?: boolean): AccessResult;
    write(va: bigint, value: bigint, user?: boolean): AccessResult;
    fetch(va: bigint, user?: boolean): AccessResult;
  } {
    const v = this.vcpu(domid, vcpu);
    return {
      read: (va, user = false) => guestAccess(this, v, va, "read", user),
      write: (va, value, user = false) => guestAccess(this, v, va, "write", user, value),
      fetch: (va, user = false) => guestAccess(this, v, va, "fetch", user),
    };
  }

  /**
   * The guest writes 8 bytes into its own frame through a writable mapping: possible only
   * while the frame could be typed writable (type none or writable, or a table with type
   * count 0). Returns false (nothing written) otherwise.
   */
  poke(domid: number, mfn: number, index: number, val: bigint): boolean {
    const f = this.frames;
    if (!f.valid(mfn) || f.ownerOf(mfn) !== domid || index < 0 || index > 511) return false;
    if (f.typeCount[mfn] > 0 && f.type[mfn] !== 0 && f.type[mfn] !== 7) return false;
    // Under split-count, a directory still used as a table one level down stays validated with
    // type count 0: it cannot become writable (get_page_type(writable) fails), so no poke.
    if (f.tableUses[mfn] > 0) return false;
    this.mem.write64(mfn * 4096 + index * 8, val);
    return true;
  }

  /** `memory_op(cmd, reservation)` issued by `domid`. */
  memoryOp(domid: number, cmd: number, arg: Reservation & { out_order?: number }): MemoryResult {
    return memoryOp(this, this.dom(domid), cmd, arg);
  }

  // ---- grant tables ----

  /**
   * The granter writes its shared entry `ref` (domid and frame, then flags), or with `revoke`
   * clears it, following the granter protocol (reference B1): an entry that is in use
   * (GTF_reading or GTF_writing set) is left alone and false returned — it cannot be revoked.
   * Xen never relies on the shared flags (its pin counters are authoritative).
   */
  grantWrite(
    domid: number,
    ref: number,
    entry: { to: number; frame: number; readonly?: boolean; flags?: number } | "revoke",
  ): boolean {
    const d = this.dom(domid);
    if (!Number.isInteger(ref) || ref < 0 || ref >= d.grants.nrEntries) return false;
    const [words, w] = d.grants.entryWords(this, ref);
    // The granter protocol (B1): an entry in use (reading or writing) is neither revoked nor rewritten.
    if (words[w] & (GTF_reading | GTF_writing)) return false;
    if (entry === "revoke") {
      words[w] &= 0xffff0000;
      return true;
    }
    const flags = entry.flags ?? GTF_permit_access | (entry.readonly ? GTF_readonly : 0);
    words[w + 1] = entry.frame >>> 0;
    words[w] = ((entry.to & 0xffff) << 16) | (flags & 0xffff);
    return true;
  }

  /** The shared entry and Xen's active pin counters of `ref` in `domid`'s grant table. */
  grantState(
    domid: number,
    ref: number,
  ): { flags: number; domid: number; frame: number; pin: number } | undefined {
    const d = this.dom(domid);
    if (!Number.isInteger(ref) || ref < 0 || ref >= d.grants.nrEntries) return undefined;
    const [words, w] = d.grants.entryWords(this, ref);
    return { flags: words[w] & 0xffff, domid: words[w] >>> 16, frame: words[w + 1], pin: d.grants.pin[ref] };
  }

  /**
   * `grant_table_op(cmd, ops)`: the hypercall returns 0 when only per-op statuses fail; each op's
   * result carries its GNTST status (and handle, dev_bus_addr, frame_list, … as the op defines).
   */
  grantTableOp(
    domid: number,
    vcpu: number,
    cmd: number,
    ops: Record<string, unknown>[],
  ): { rc: number; results: Record<string, unknown>[] } {
    const v = this.vcpu(domid, vcpu);
    const results: Record<string, unknown>[] = [];
    // An unmap batch ends with `gnttab_flush_tlb(current->domain)`: every CPU the mapper may have
    // run on drops its translations before the references go (modelled after the batch; nothing
    // else runs in between). Without it a stale translation outlives the grant.
    if (cmd === GNTTABOP_unmap_grant_ref || cmd === GNTTABOP_unmap_and_replace) {
      try {
        return this.grantOps(v, cmd, ops, results);
      } finally {
        if (this.domains.get(domid) === v.domain) flushDomainTlbs(this, domid);
      }
    }
    return this.grantOps(v, cmd, ops, results);
  }

  private grantOps(
    v: Vcpu,
    cmd: number,
    ops: Record<string, unknown>[],
    results: Record<string, unknown>[],
  ): { rc: number; results: Record<string, unknown>[] } {
    for (const op of ops) {
      switch (cmd) {
        case GNTTABOP_map_grant_ref:
          results.push(mapGrantRef(this, v, op as unknown as MapOp) as unknown as Record<string, unknown>);
          break;
        case GNTTABOP_unmap_grant_ref:
        case GNTTABOP_unmap_and_replace: {
          const st = unmapGrantRef(this, v, op as unknown as UnmapOp, cmd === GNTTABOP_unmap_and_replace);
          if (st === undefined) return { rc: 0, results }; // the caller was crashed
          results.push({ status: st });
          break;
        }
        case GNTTABOP_setup_table: {
          const [status, frames] = setupTable(
            this,
            v.domain,
            Number(op.dom ?? DOMID_SELF),
            Number(op.nr_frames),
          );
          results.push({ status, frame_list: frames });
          break;
        }
        case GNTTABOP_query_size: {
          const d =
            op.dom === undefined || op.dom === DOMID_SELF ? v.domain : this.domains.get(Number(op.dom));
          results.push(
            d
              ? { status: GNTST_okay, nr_frames: d.grants.frames.length, max_nr_frames: MAX_GRANT_FRAMES }
              : { status: -2, nr_frames: 0, max_nr_frames: 0 },
          );
          break;
        }
        case GNTTABOP_copy:
          results.push({
            status: grantCopy(
              this,
              v.domain,
              op.source as CopyPtr,
              op.dest as CopyPtr,
              Number(op.len),
              Number(op.flags ?? 0),
            ),
          });
          break;
        default:
          return { rc: -ENOSYS, results };
      }
    }
    return { rc: 0, results };
  }

  destroyDomain(domid: number): number {
    const d = this.domains.get(domid);
    if (!d) return -ESRCH;
    if (d.dirtyLog) shadowOp(this, undefined, d, 0);
    destroyDomain(this, d);
    return 0;
  }

  // ---- the toolstack's domain controls (save, restore, migration) ----

  /**
   * Populate pfn `pfn` of `d` with a fresh frame for the restorer (`populate_physmap` from the
   * toolstack): the M2P entry is set; the guest's own P2M list is the guest's to rebuild.
   * Returns the mfn, or -1 when memory is exhausted.
   */
  populatePfn(domid: number, pfn: number): number {
    const d = this.dom(domid);
    if (d.pages.size >= d.maxPages) return -1;
    const m = this.allocFrame();
    if (m < 0) return -1;
    this.mem.zeroFrame(m);
    this.frames.claim(m, d.domid, pfn);
    d.pages.add(m);
    this.used++;
    return m;
  }

  /** `getpageframeinfo3` on frames named by MFN (XEN_DOMCTL_PFINFO_* nibbles). */
  pageFrameInfo(
    domid: number,
    mfns: ArrayLike<number>,
    out: Uint8Array = new Uint8Array(mfns.length),
  ): Uint8Array {
    const d = this.dom(domid);
    for (let i = 0; i < mfns.length; i++) out[i] = pageFrameInfo(this, d, mfns[i]);
    return out;
  }

  /** `XEN_DOMCTL_shadow_op` from the toolstack (log-dirty: OFF, ENABLE_LOGDIRTY, CLEAN, PEEK). */
  shadowOp(domid: number, op: number, opts: { mode?: number; p2mSize?: number } = {}): ShadowOpResult {
    const d = this.domains.get(domid);
    if (!d) return { rc: -ESRCH };
    return shadowOp(this, undefined, d, op, opts);
  }

  getVcpuContext(domid: number, vcpu: number): VcpuState {
    return getVcpuContext(this.vcpu(domid, vcpu));
  }

  setVcpuContext(domid: number, vcpu: number, c: VcpuState): number {
    return setVcpuContext(this, this.vcpu(domid, vcpu), c);
  }

  pauseDomain(domid: number, pause = true): number {
    return pauseDomain(this.domains.get(domid), pause);
  }

  /** `SCHEDOP_shutdown(SHUTDOWN_suspend)` by the guest, or (false) its resume after a cancelled suspend. */
  suspendDomain(domid: number, suspended = true): void {
    this.dom(domid).suspended = suspended;
  }

  /** After destruction: every frame the domain had (a snapshot of its page list) is free with zero counts. */
  checkFree(frames: Iterable<number>): number[] {
    const f = this.frames;
    const bad: number[] = [];
    for (const m of frames) if (f.owner[m] !== 0 || f.count[m] !== 0 || f.typeCount[m] !== 0) bad.push(m);
    return bad;
  }

  audit(): AuditReport {
    return audit(this);
  }
}

function gcd(a: number, b: number): number {
  while (b) [a, b] = [b, a % b];
  return a;
}

/** A stride near 0.618·n that is coprime with n, so `k·stride mod n` visits every frame. */
function coprimeStride(n: number): number {
  if (n <= 2) return 1;
  let s = Math.floor(n * 0.6180339887) | 1;
  while (gcd(s, n) !== 1) s += 2;
  return s;
}
