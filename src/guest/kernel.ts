/**
 * A PV guest kernel that runs only through the hypervisor's interface: its
 * vCPU's memory accesses (through the MMU and TLB, in kernel or user mode),
 * the MMU hypercalls (batched, see `hypercalls.ts`) and the page faults its
 * processes take. It knows its P2M (handed over at creation), allocates its
 * own frames, and keeps the page tables of itself and its processes.
 *
 * Page tables move through two states the hypervisor cares about:
 *  - unvalidated: an ordinary writable page; the kernel fills it with plain
 *    stores through a writable kernel mapping (`mapper.kva`);
 *  - validated (a pinned tree, or linked under one): read-only to the guest;
 *    every change is an `mmu_update` by machine address, which Xen checks.
 * Pinning policies:
 *  - "linux": a process's tables stay unvalidated until its first activation,
 *    when every table page is made read-only (`update_va_mapping`, 32 per
 *    multicall) and the L4s are pinned; tables allocated later under a pinned
 *    mm are made read-only before they are linked; at exit the L4s are
 *    unpinned first ("early unpin") and the rest is plain memory work;
 *  - "eager": every table is made read-only and pinned at its level as soon
 *    as it is allocated (NetBSD's `xpq_queue_pin_table`), and unpinned one by
 *    one when freed.
 */

import { HI_NX, LO_A, LO_D, LO_P, LO_RW, LO_US } from "../x86/pte.js";
import { ACC_USER, ACC_WRITE } from "../x86/walk.js";
import { MMUEXT, UVMF_INVLPG, UVMF_TLB_FLUSH } from "../xen/abi.js";
import type { Vcpu } from "../xen/domain.js";
import type { Host } from "../xen/host.js";
import { Hypercalls } from "./hypercalls.js";
import { indexAt, KERNEL_BASE, vaHi, vaLo, XEN_SLOTS_END, XEN_SLOTS_START } from "./layout.js";
import type { PageTableMapper } from "./mapper.js";
import type { OpStats, PinningPolicy } from "./report.js";

export class GuestError extends Error {}

/** Flags of an entry pointing at a table (Xen adds US itself). */
export const TABLE_FLAGS = LO_P | LO_RW | LO_US | LO_A;
const PIN_CMD = [
  0,
  MMUEXT.MMUEXT_PIN_L1_TABLE,
  MMUEXT.MMUEXT_PIN_L2_TABLE,
  MMUEXT.MMUEXT_PIN_L3_TABLE,
  MMUEXT.MMUEXT_PIN_L4_TABLE,
];

/** An address space: a kernel L4 (with the user half) and, for processes, Xen's separate user L4. */
export class AddressSpace {
  /** Table frames of the user half (levels 1–3, this space's own), for pinning and teardown. */
  readonly tables = new Map<number, number>();
  validated = false;
  /** Shadow strategy: VA of the L4 in the table window. */
  rootVa = 0;

  constructor(
    readonly l4: number,
    readonly userL4: number,
  ) {}
}

export interface KernelOptions {
  mapper: PageTableMapper;
  pinning: PinningPolicy;
  /** mmu_update queue length (Linux 32, NetBSD 2048). */
  mmuBatch?: number;
  /** Multicall batch (Linux 32; 1 = none). */
  mcBatch?: number;
  vcpu?: number;
}

/**
 * The pfns the kernel hands out: the most recently freed first, then never-used ones in
 * ascending order; boot can take specific ones. Nothing is filled up front, so a 64 GiB
 * guest's allocator costs only what it touches.
 */
class PfnAllocator {
  private freed = new Int32Array(1024);
  private top = 0;
  private next = 0;
  /** 1 while a pfn is in use. */
  readonly used: Uint8Array;
  inUse = 0;

  constructor(readonly pages: number) {
    this.used = new Uint8Array(pages);
  }

  alloc(): number {
    while (this.top > 0) {
      const p = this.freed[--this.top];
      if (!this.used[p]) return this.mark(p);
    }
    while (this.next < this.pages && this.used[this.next]) this.next++;
    return this.next < this.pages ? this.mark(this.next++) : -1;
  }

  private mark(p: number): number {
    this.used[p] = 1;
    this.inUse++;
    return p;
  }

  /** Mark a specific pfn used (boot-time placement). */
  take(pfn: number): void {
    if (this.used[pfn]) throw new GuestError(`pfn ${pfn} is already in use`);
    this.mark(pfn);
  }

  /** The allocator's state (pfns only). */
  save(): { freed: Int32Array; next: number; inUse: number } {
    return { freed: this.freed.slice(0, this.top), next: this.next, inUse: this.inUse };
  }

  load(s: { freed: Int32Array; next: number; inUse: number }, used: Uint8Array): void {
    if (used.length !== this.pages) throw new GuestError("saved allocator does not match the guest's size");
    this.used.set(used);
    this.freed = new Int32Array(Math.max(1024, s.freed.length * 2));
    this.freed.set(s.freed);
    this.top = s.freed.length;
    this.next = s.next;
    this.inUse = s.inUse;
  }

  free(pfn: number): void {
    if (!this.used[pfn]) throw new GuestError(`double free of pfn ${pfn}`);
    this.used[pfn] = 0;
    this.inUse--;
    if (this.top === this.freed.length) {
      const bigger = new Int32Array(this.freed.length * 2);
      bigger.set(this.freed);
      this.freed = bigger;
    }
    this.freed[this.top++] = pfn;
  }
}

export class Kernel {
  readonly h: Host;
  readonly domid: number;
  readonly v: Vcpu;
  readonly mapper: PageTableMapper;
  readonly pinning: PinningPolicy;
  readonly hc: Hypercalls;
  readonly pages: number;
  /** pfn → mfn: the guest's own list, handed over at creation (the domain's `p2m`). */
  readonly p2m: ArrayLike<number>;
  readonly alloc: PfnAllocator;
  /** Page-table level (1–4) of each pfn that is a table, else 0. */
  readonly tableLevel: Uint8Array;
  /** Mappings of each user page (copy-on-write sharing). */
  readonly mapcount: Uint16Array;
  /** Table pages by level (index 0 = L1), the kernel's and all processes'. */
  readonly tableCount: [number, number, number, number] = [0, 0, 0, 0];
  /** The kernel's own address space (init_mm), pinned at boot. */
  kernelAs!: AddressSpace;
  /** The address space the vCPU's kernel base pointer holds. */
  current!: AddressSpace;
  /** Every address space (Linux's pgd_list, NetBSD's pmap list), the kernel's first. */
  readonly spaces = new Set<AddressSpace>();
  /** First pfn of the P2M list pages (in the initial mapping), and the start-info page. */
  p2mListPfn = -1;
  /** The pid the next process gets (per kernel: two guests in one process number alike). */
  nextPid = 1;
  startInfoPfn = -1;

  /** Result of the last `read64`. */
  lo = 0;
  hi = 0;
  p2mLookups = 0;
  m2pLookups = 0;
  directWrites = 0;
  ptwrWrites = 0;
  readonly ops: Record<string, OpStats> = {};
  /** The vCPU is in user mode (its user L4 loaded). */
  private userMode = false;

  constructor(h: Host, domid: number, opts: KernelOptions) {
    const d = h.domain(domid);
    if (!d) throw new GuestError(`no domain ${domid}`);
    this.h = h;
    this.domid = domid;
    this.v = d.vcpus[opts.vcpu ?? 0];
    this.mapper = opts.mapper;
    this.pinning = opts.pinning;
    this.hc = new Hypercalls(h, domid, opts.mmuBatch ?? 32, opts.mcBatch ?? 32, opts.vcpu ?? 0);
    this.pages = d.p2m.length;
    if (this.pages >= 2 ** 32) throw new GuestError("a guest of 16 TiB or more is not modelled");
    // Frame numbers fit 31 bits in the kernel's hot loops: hosts up to 8 TiB.
    if (h.frames.frames > 2 ** 31) throw new GuestError("guest kernels need a host of at most 8 TiB");
    this.p2m = d.p2m;
    this.alloc = new PfnAllocator(this.pages);
    this.tableLevel = new Uint8Array(this.pages);
    this.mapcount = new Uint16Array(this.pages);
  }

  // ---------------------------------------------------------------- timing

  /** Run `fn` as kernel operation `name`, timed; pending hypercalls are issued at the end. */
  op<T>(name: string, fn: () => T): T {
    const t0 = performance.now();
    this.enterKernel();
    const r = fn();
    this.mapper.closeAll(this);
    this.hc.flush();
    this.record(name, performance.now() - t0);
    return r;
  }

  /** Count one kernel operation `name` that took `ms`. */
  record(name: string, ms: number): void {
    const s = this.ops[name] ?? { count: 0, ms: 0 };
    s.count++;
    s.ms += ms;
    this.ops[name] = s;
  }

  // ---------------------------------------------------------------- P2M / M2P

  mfnOf(pfn: number): number {
    this.p2mLookups++;
    return this.p2m[pfn];
  }

  /** mfn → pfn through the read-only machine_to_phys table Xen maps into every PV guest. */
  pfnOf(mfn: number): number {
    this.m2pLookups++;
    const f = this.h.frames;
    return f.m2pHi[mfn] * 2 ** 32 + f.m2pLo[mfn];
  }

  // ---------------------------------------------------------------- memory access

  /** Enter guest kernel mode (Xen loads the kernel base pointer). */
  enterKernel(): void {
    if (this.userMode) {
      this.userMode = false;
      this.v.enterMode(true);
    }
  }

  private enterUser(): void {
    if (!this.userMode) {
      this.hc.flush();
      this.userMode = true;
      this.v.enterMode(false);
    }
  }

  /** Translate `va` for a kernel access; the physical address, or throws (a kernel oops). */
  private kpa(va: number, write: boolean): number {
    const cpu = this.v.cpu;
    if (!cpu.translate(vaHi(va), vaLo(va), ACC_USER | (write ? ACC_WRITE : 0))) {
      throw new GuestError(
        `kernel ${write ? "write" : "read"} fault at 0x${va.toString(16)} (error code 0x${cpu.errorCode.toString(16)})`,
      );
    }
    return cpu.paddr;
  }

  /** Read the 8 bytes at kernel VA `va` into `lo`/`hi`. */
  read64(va: number): void {
    const pa = this.kpa(va, false);
    const f = this.h.mem.frame(Math.floor(pa / 4096));
    const i = (pa & 0xfff) >>> 2;
    this.lo = f[i];
    this.hi = f[i + 1];
  }

  /** The 512 entries of the page at kernel VA `va` (read-only view: do not write to it). */
  readPage(va: number): Uint32Array {
    return this.h.mem.frame(Math.floor(this.kpa(va, false) / 4096));
  }

  /** A plain store through a writable mapping. */
  write64(va: number, lo: number, hi: number): void {
    const pa = this.kpa(va, true);
    const f = this.h.mem.frameForWrite(Math.floor(pa / 4096));
    const i = (pa & 0xfff) >>> 2;
    f[i] = lo >>> 0;
    f[i + 1] = hi >>> 0;
    this.directWrites++;
  }

  /** Write a whole page (1024 words) through a writable mapping (a string store). */
  writePage(va: number, src: Uint32Array): void {
    this.h.mem.frameForWrite(Math.floor(this.kpa(va, true) / 4096)).set(src);
    this.directWrites += 512;
  }

  zeroPage(va: number): void {
    this.h.mem.frameForWrite(Math.floor(this.kpa(va, true) / 4096)).fill(0);
  }

  copyPage(dst: number, src: number): void {
    const s = this.h.mem.frame(Math.floor(this.kpa(src, false) / 4096));
    this.h.mem.frameForWrite(Math.floor(this.kpa(dst, true) / 4096)).set(s);
  }

  /**
   * A user-mode access by the running process; faults go to `onFault` (the kernel's page-fault
   * handler), which returns false to deliver a SIGSEGV (throws). Returns the value read.
   */
  userAccess(
    va: number,
    write: boolean,
    value: number,
    onFault: (va: number, code: number) => boolean,
  ): number {
    for (let attempt = 0; attempt < 4; attempt++) {
      this.enterUser();
      const cpu = this.v.cpu;
      if (cpu.translate(vaHi(va), vaLo(va), ACC_USER | (write ? ACC_WRITE : 0))) {
        const pa = cpu.paddr;
        const mfn = Math.floor(pa / 4096);
        const i = (pa & 0xfff) >>> 2;
        if (write) {
          this.h.mem.frameForWrite(mfn)[i] = value >>> 0;
          return value;
        }
        return this.h.mem.frame(mfn)[i];
      }
      const code = cpu.errorCode;
      this.enterKernel();
      if (!onFault(va, code)) {
        throw new GuestError(
          `SIGSEGV: user ${write ? "write" : "read"} at 0x${va.toString(16)} (0x${code.toString(16)})`,
        );
      }
      this.hc.flush();
    }
    throw new GuestError(`page fault at 0x${va.toString(16)} not resolved`);
  }

  // ---------------------------------------------------------------- frames

  /** A free pfn, or throws (the guest is out of memory). */
  allocPfn(): number {
    const p = this.alloc.alloc();
    if (p < 0) throw new GuestError("guest out of memory");
    return p;
  }

  freePfn(pfn: number): void {
    this.alloc.free(pfn);
  }

  /** A zeroed data frame (its pfn); zeroed through temporary slot `slot` or the direct map. */
  allocZeroed(slot = 0): number {
    const pfn = this.allocPfn();
    const mfn = this.mfnOf(pfn);
    this.zeroPage(this.mapper.kva(this, mfn, pfn, slot));
    return pfn;
  }

  // ---------------------------------------------------------------- tables

  /** Record that `pfn` now holds a page table of `level` (every path that makes one calls this). */
  noteTable(pfn: number, level: number): void {
    this.tableLevel[pfn] = level;
    this.tableCount[level - 1]++;
  }

  /**
   * A new, zeroed page-table frame of `level` (returns its mfn), one of `as`'s tables below its
   * L4 — or, with `as` null, a new address space's L4. Under the eager policy it is made
   * read-only and pinned at once; under Linux's, read-only if `as` is already pinned (it is
   * then validated when linked).
   */
  newTable(as: AddressSpace | null, level: number): number {
    const pfn = this.allocPfn();
    const mfn = this.mfnOf(pfn);
    this.noteTable(pfn, level);
    this.mapper.tableAllocated(this, mfn, pfn, level);
    this.zeroPage(this.mapper.kva(this, mfn, pfn, 0));
    as?.tables.set(mfn, level);
    if (this.pinning === "eager") {
      this.mapper.protect(this, mfn, pfn, false);
      this.hc.queueMmuext([{ cmd: PIN_CMD[level], arg1: BigInt(mfn) }]);
    } else if (as?.validated) {
      this.mapper.protect(this, mfn, pfn, false);
    }
    return mfn;
  }

  /** Are `as`'s tables validated by Xen (so only mmu_update may change them)? */
  isValidated(as: AddressSpace): boolean {
    return as.validated || this.pinning === "eager";
  }

  /** The frame mapped writable at kernel VA `va`, for a run of plain stores into it. */
  writableFrame(va: number): Uint32Array {
    return this.h.mem.frameForWrite(Math.floor(this.kpa(va, true) / 4096));
  }

  /** Write entry `index` of table `mfn` (of `as`): mmu_update if validated, else a plain store. */
  setEntry(as: AddressSpace, mfn: number, index: number, lo: number, hi: number, cmd = 0): void {
    if (this.isValidated(as)) {
      this.hc.queuePte(mfn * 4096 + index * 8, lo, hi, cmd);
    } else {
      const pfn = this.pfnOf(mfn);
      this.write64(this.mapper.kva(this, mfn, pfn, 0) + index * 8, lo, hi);
    }
  }

  /** Link child table `child` (of `level`) at `index` of `parent`; L4 user slots go to both L4s. */
  link(as: AddressSpace, parent: number, level: number, index: number, child: number): void {
    const lo = ((child % 0x100000) * 4096 + TABLE_FLAGS) >>> 0;
    const hi = Math.floor(child / 0x100000);
    this.setEntry(as, parent, index, lo, hi);
    if (level === 3 && parent === as.l4 && as.userL4 !== 0) this.setEntry(as, as.userL4, index, lo, hi);
    this.mapper.linked(this, parent, index, child, level);
    // A kernel that goes on walking reads the parent it just changed: issue the update now.
    if (this.isValidated(as)) this.hc.flush();
  }

  // Result of the last walk: the L1 (mfn, VA for reading) covering the address.
  wMfn = 0;
  wVa = 0;

  /**
   * Walk `as` down to the L1 for `va`, creating missing tables if `create`; false if an entry
   * on the way is not present (and `create` is false). For an unvalidated space the tables are
   * read through `kva`; otherwise through the strategy's mappings (after `open`).
   */
  walkToL1(as: AddressSpace, va: number, create: boolean): boolean {
    return this.walkTo(as, va, create, 1);
  }

  /** Walk to the L2 for `va` (no creation). */
  walkToL2(as: AddressSpace, va: number): boolean {
    return this.walkTo(as, va, false, 2);
  }

  private walkTo(as: AddressSpace, va: number, create: boolean, stop: number): boolean {
    const m = this.mapper;
    const viaStrategy = this.isValidated(as);
    let t = as.l4;
    let tva = viaStrategy ? m.open(this, as) : m.kva(this, t, this.pfnOf(t), 0);
    for (let level = 4; level > stop; level--) {
      const idx = indexAt(va, level);
      this.read64(tva + idx * 8);
      let child: number;
      if ((this.lo & LO_P) === 0) {
        if (!create) return false;
        child = this.newTable(as, level - 1);
        this.link(as, t, level - 1, idx, child);
      } else {
        child = (this.hi & 0xfffff) * 0x100000 + (this.lo >>> 12);
      }
      tva = viaStrategy
        ? m.childVa(this, as, tva, level - 1, idx, child)
        : m.kva(this, child, this.pfnOf(child), 0);
      t = child;
    }
    this.wMfn = t;
    this.wVa = tva;
    return true;
  }

  /** Write entries [from, to) of `page` (present ones) into L1 `l1` of `as`, reachable at `l1va`. */
  copyEntries(as: AddressSpace, l1: number, l1va: number, page: Uint32Array, from: number, to: number): void {
    if (this.isValidated(as)) {
      for (let i = from; i < to; i++) {
        if (page[i * 2] & LO_P) this.hc.queuePte(l1 * 4096 + i * 8, page[i * 2], page[i * 2 + 1]);
      }
      return;
    }
    // Plain stores into the (still writable) table, through its writable mapping.
    const dst = this.h.mem.frameForWrite(Math.floor(this.kpa(l1va, true) / 4096));
    let n = 0;
    for (let i = from; i < to; i++) {
      const lo = page[i * 2];
      if (lo & LO_P) {
        dst[i * 2] = lo;
        dst[i * 2 + 1] = page[i * 2 + 1];
        n++;
      }
    }
    this.directWrites += n;
  }

  /** Unlink table `child` (of `level`) from `parent`'s `index` and free it (free_pgtables). */
  unlinkTable(as: AddressSpace, parent: number, index: number, child: number, level: number): void {
    const validated = this.isValidated(as);
    this.setEntry(as, parent, index, 0, 0);
    if (this.pinning === "eager")
      this.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_UNPIN_TABLE, arg1: BigInt(child) }]);
    this.hc.flush();
    if (validated) this.mapper.unprotect(this, child, this.pfnOf(child));
    this.hc.flush();
    as.tables.delete(child);
    this.freeTable(child, level);
  }

  // ---------------------------------------------------------------- address spaces

  /** Create an address space: an L4 with the kernel half copied from the kernel's, and a user L4. */
  createAs(withUserL4: boolean): AddressSpace {
    const l4 = this.newTable(null, 4);
    const user = withUserL4 ? this.newTable(null, 4) : 0;
    const as = new AddressSpace(l4, user);
    this.spaces.add(as);
    if (this.kernelAs) {
      // pgd_ctor: the kernel half points at the kernel's shared L3s.
      // Every space shares the kernel half: read it from the one loaded now.
      const kernelL4 = this.readPage(this.mapper.open(this, this.current));
      for (let i = 256; i < 512; i++) {
        if (i >= XEN_SLOTS_START && i < XEN_SLOTS_END) continue;
        const lo = kernelL4[i * 2];
        if ((lo & LO_P) === 0 || this.mapper.perAsSlots.includes(i)) continue;
        this.setEntry(as, l4, i, lo, kernelL4[i * 2 + 1]);
      }
    }
    this.mapper.initRoot(this, as);
    return as;
  }

  /** Pin `as` (Linux's xen_pgd_pin): every table read-only, then the L4s pinned. */
  pin(as: AddressSpace): void {
    if (as.validated) return;
    const m = this.mapper;
    for (const [mfn] of as.tables) m.protect(this, mfn, this.pfnOf(mfn), false);
    m.protect(this, as.l4, this.pfnOf(as.l4), true);
    this.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_PIN_L4_TABLE, arg1: BigInt(as.l4) }]);
    if (as.userL4) {
      m.protect(this, as.userL4, this.pfnOf(as.userL4), true);
      this.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_PIN_L4_TABLE, arg1: BigInt(as.userL4) }]);
    }
    this.hc.flush();
    as.validated = true;
  }

  /** Load `as` on the vCPU: NEW_BASEPTR and NEW_USER_BASEPTR in one mmuext_op (xen_write_cr3). */
  activate(as: AddressSpace): void {
    this.mapper.closeAll(this);
    if (this.pinning === "linux") this.pin(as);
    if (this.current === as) return;
    this.hc.mmuext([
      { cmd: MMUEXT.MMUEXT_NEW_BASEPTR, arg1: BigInt(as.l4) },
      { cmd: MMUEXT.MMUEXT_NEW_USER_BASEPTR, arg1: BigInt(as.userL4) },
    ]);
    this.current = as;
  }

  /**
   * Tear `as` down (exit_mmap), once the caller has released the user pages its leaf entries
   * map (while the tables were still readable): off every vCPU, unpin early (Linux) or unpin table by table
   * (eager), make the frames writable again and free them. User pages lose a mapping each.
   */
  destroyAs(as: AddressSpace): void {
    if (this.current === as) this.activate(this.kernelAs);
    this.mapper.release(this, as);
    const m = this.mapper;
    const all: [number, number][] = [[as.l4, 4], ...as.tables];
    if (as.userL4) all.push([as.userL4, 4]);
    if (this.pinning === "eager") {
      // Each table holds its own pin: unpin top-down so each drops its last reference in turn.
      all.sort((a, b) => b[1] - a[1]);
      for (const [mfn] of all) this.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_UNPIN_TABLE, arg1: BigInt(mfn) }]);
    } else if (as.validated) {
      this.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_UNPIN_TABLE, arg1: BigInt(as.l4) }]);
      if (as.userL4) this.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_UNPIN_TABLE, arg1: BigInt(as.userL4) }]);
    }
    if (this.pinning === "eager" || as.validated) {
      for (const [mfn] of all) m.unprotect(this, mfn, this.pfnOf(mfn));
    }
    this.hc.flush();
    as.validated = false;
    for (const [mfn, level] of all) this.freeTable(mfn, level);
    as.tables.clear();
    this.spaces.delete(as);
  }

  /** Free a (no longer validated, writable) table frame. */
  freeTable(mfn: number, level: number): void {
    const pfn = this.pfnOf(mfn);
    this.mapper.tableFreed(this, mfn, pfn, level);
    this.tableLevel[pfn] = 0;
    this.tableCount[level - 1]--;
    this.freePfn(pfn);
  }

  /** A user page lost a mapping; freed with its last one. */
  unmapUserPage(pfn: number): void {
    if (this.mapcount[pfn] === 0) throw new GuestError(`unmapping pfn ${pfn} with no mappings`);
    if (--this.mapcount[pfn] === 0) this.freePfn(pfn);
  }

  /** Leaf entry for a user page. */
  static userPte(mfn: number, writable: boolean, exec: boolean): [number, number] {
    const lo = (((mfn % 0x100000) * 4096 + LO_P) | LO_US | LO_A | (writable ? LO_RW | LO_D : 0)) >>> 0;
    const hi = (Math.floor(mfn / 0x100000) | (exec ? 0 : HI_NX)) >>> 0;
    return [lo, hi];
  }

  /** The kernel-image VA of pfn `pfn` (`__START_KERNEL_map` + pfn·4 KiB). */
  static kernelImageVa(pfn: number): number {
    return KERNEL_BASE + pfn * 4096;
  }

  /** Leaf entry for a kernel mapping of RAM. */
  static kernelPte(mfn: number, writable: boolean): [number, number] {
    const lo = ((mfn % 0x100000) * 4096 + (LO_P | LO_A | LO_D | (writable ? LO_RW : 0))) >>> 0;
    return [lo, (Math.floor(mfn / 0x100000) | HI_NX) >>> 0];
  }

  /** update_va_mapping of a kernel VA (RO/RW flips of table pages, temporary slots). */
  remap(va: number, lo: number, hi: number, flush: "none" | "invlpg" | "all"): void {
    this.hc.updateVaMapping(
      va,
      lo,
      hi,
      flush === "invlpg" ? UVMF_INVLPG : flush === "all" ? UVMF_TLB_FLUSH : 0,
    );
  }
}
