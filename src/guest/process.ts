/**
 * Processes of the guest kernel: address spaces with VMAs, demand-zero and
 * copy-on-write faults, fork, exec, mmap/munmap/mprotect, context switch and
 * exit — each the real algorithm run against the hypervisor through the
 * kernel's page-table strategy and pinning policy.
 *
 *  - fork copies every present user entry (`copy_page_range`): a private
 *    writable page is write-protected in the parent and shared read-only with
 *    the child; the parent's TLB is flushed afterwards (`flush_tlb_mm`).
 *  - A write fault on a shared page copies it (or, when this was its last
 *    mapping, just makes the entry writable again); a fault on an absent entry
 *    in a VMA maps a zeroed page.
 *  - munmap clears the entries and frees the L1 tables whose 2 MiB no VMA
 *    covers any more (`free_pgtables`); mprotect rewrites entries with
 *    MMU_PT_UPDATE_PRESERVE_AD (`ptep_modify_prot_commit`).
 *  - exit tears the address space down through the kernel (early unpin under
 *    Linux's policy).
 */

import { HI_NX, LO_A, LO_P, LO_RW } from "../x86/pte.js";
import { MMU_PT_UPDATE_PRESERVE_AD, MMUEXT } from "../xen/abi.js";
import { type AddressSpace, GuestError, Kernel } from "./kernel.js";
import { indexAt, MMAP_BASE, USER_TEXT, USER_TOP } from "./layout.js";

export interface Vma {
  start: number;
  end: number;
  write: boolean;
  exec: boolean;
}

/** Beyond this many pages a range flush is a full TLB flush (Linux's tlb_single_page_flush_ceiling). */
const FLUSH_CEILING = 33;
const PAGE = 4096;
const WINDOW = 2 ** 21;

export class Process {
  pid: number;
  as: AddressSpace;
  vmas: Vma[] = [];
  exited = false;

  constructor(
    readonly k: Kernel,
    as?: AddressSpace,
  ) {
    this.pid = k.nextPid++;
    this.as = as ?? k.op("create", () => k.createAs(true));
  }

  /** A process saved with its guest, resumed on `k` (with its resumed address space). */
  static resume(k: Kernel, as: AddressSpace | undefined, pid: number, vmas: Vma[], exited: boolean): Process {
    const p = new Process(k, as ?? k.kernelAs);
    p.pid = pid;
    k.nextPid = Math.max(k.nextPid, pid + 1);
    p.vmas = vmas.map((v) => ({ ...v }));
    p.exited = exited;
    return p;
  }

  // ---------------------------------------------------------------- VMAs

  vmaAt(va: number): Vma | undefined {
    for (const v of this.vmas) if (va >= v.start && va < v.end) return v;
    return undefined;
  }

  /** The lowest free gap of `len` bytes at or above `from`. */
  private gap(len: number, from: number): number {
    let at = from;
    for (const v of [...this.vmas].sort((a, b) => a.start - b.start)) {
      if (v.end <= at) continue;
      if (v.start >= at + len) break;
      at = v.end;
    }
    if (at + len > USER_TOP) throw new GuestError("ENOMEM: no room in the address space");
    return at;
  }

  /** Remove [start, end) from the VMA list, splitting VMAs that straddle it. */
  private carve(start: number, end: number): void {
    const out: Vma[] = [];
    for (const v of this.vmas) {
      if (v.end <= start || v.start >= end) out.push(v);
      else {
        if (v.start < start) out.push({ ...v, end: start });
        if (v.end > end) out.push({ ...v, start: end });
      }
    }
    this.vmas = out;
  }

  // ---------------------------------------------------------------- walking entries

  /**
   * Visit the present leaf entries of [start, end): `fn(va, l1mfn, index, lo, hi)`. Tables are
   * read a page at a time (the frame as it is now).
   */
  forEachPte(
    start: number,
    end: number,
    fn: (va: number, l1: number, index: number, lo: number, hi: number) => void,
  ): void {
    const k = this.k;
    for (let w = Math.floor(start / WINDOW) * WINDOW; w < end; w += WINDOW) {
      if (!k.walkToL1(this.as, w, false)) continue;
      const l1 = k.wMfn;
      const t = k.readPage(k.wVa);
      const i0 = (Math.max(start, w) - w) / PAGE;
      const i1 = (Math.min(end, w + WINDOW) - w) / PAGE;
      for (let i = i0; i < i1; i++) {
        const lo = t[i * 2];
        if (lo & LO_P) fn(w + i * PAGE, l1, i, lo, t[i * 2 + 1]);
      }
    }
  }

  /**
   * Drop this space's mapping of every user page in [start, end) (`zap_pte_range`): each page
   * loses a mapping and is freed with its last. The entries stay: the tables are torn down next.
   */
  private releasePages(start: number, end: number): void {
    const k = this.k;
    const m2pLo = k.h.frames.m2pLo;
    for (let w = Math.floor(start / WINDOW) * WINDOW; w < end; w += WINDOW) {
      if (!k.walkToL1(this.as, w, false)) continue;
      const t = k.readPage(k.wVa);
      const i0 = (Math.max(start, w) - w) / PAGE;
      const i1 = (Math.min(end, w + WINDOW) - w) / PAGE;
      for (let i = i0; i < i1; i++) {
        const lo = t[i * 2];
        if ((lo & LO_P) === 0) continue;
        k.unmapUserPage(m2pLo[((t[i * 2 + 1] & 0x7ff) << 20) | (lo >>> 12)]);
      }
      k.m2pLookups += i1 - i0;
    }
  }

  // ---------------------------------------------------------------- memory calls

  /** mmap anonymous memory: a VMA, no entries (they come on first touch). Returns its address. */
  mmap(len: number, write = true, exec = false, at?: number): number {
    return this.k.op("mmap", () => {
      const size = Math.ceil(len / PAGE) * PAGE;
      if (size <= 0) throw new GuestError("EINVAL: mmap of zero length");
      const start = at ?? this.gap(size, MMAP_BASE);
      if (at !== undefined) {
        // MAP_FIXED: whatever was there goes first.
        this.unmapRange(start, start + size);
        this.carve(start, start + size);
      }
      this.vmas.push({ start, end: start + size, write, exec });
      return start;
    });
  }

  /** Map `pages` zeroed pages at once at `start` (exec's image, MAP_POPULATE). */
  populate(start: number, pages: number, write: boolean, exec: boolean): void {
    const k = this.k;
    this.vmas.push({ start, end: start + pages * PAGE, write, exec });
    for (let i = 0; i < pages; i++) {
      const va = start + i * PAGE;
      const pfn = k.allocZeroed(0);
      k.mapcount[pfn] = 1;
      k.walkToL1(this.as, va, true);
      const [lo, hi] = Kernel.userPte(k.mfnOf(pfn), write, exec);
      k.setEntry(this.as, k.wMfn, indexAt(va, 1), lo, hi);
    }
  }

  munmap(start: number, len: number): void {
    this.k.op("munmap", () => {
      this.unmapRange(start, start + Math.ceil(len / PAGE) * PAGE);
      this.carve(start, start + Math.ceil(len / PAGE) * PAGE);
      this.freeTables(start, start + Math.ceil(len / PAGE) * PAGE);
    });
  }

  private unmapRange(start: number, end: number): void {
    const k = this.k;
    const freed: number[] = [];
    let n = 0;
    this.forEachPte(start, end, (_va, l1, i, lo, hi) => {
      freed.push(k.pfnOf((hi & 0xfffff) * 0x100000 + (lo >>> 12)));
      k.setEntry(this.as, l1, i, 0, 0);
      n++;
    });
    k.hc.flush();
    if (n > 0) this.flushRange(start, end, n);
    for (const pfn of freed) k.unmapUserPage(pfn);
  }

  /** TLB flush after changing `n` entries of [start, end) of this (maybe current) space. */
  private flushRange(start: number, end: number, n: number): void {
    const k = this.k;
    if (k.current !== this.as) return; // not loaded: its next load flushes
    if (n > FLUSH_CEILING) k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_TLB_FLUSH_LOCAL }]);
    else {
      const ops = [];
      for (let va = start; va < end; va += PAGE)
        ops.push({ cmd: MMUEXT.MMUEXT_INVLPG_LOCAL, arg1: BigInt(va) });
      k.hc.mmuext(ops.slice(0, FLUSH_CEILING));
    }
  }

  /** Free L1 tables of [start, end) whose whole 2 MiB window no VMA covers. */
  private freeTables(start: number, end: number): void {
    const k = this.k;
    for (let w = Math.floor(start / WINDOW) * WINDOW; w < end; w += WINDOW) {
      if (this.vmas.some((v) => v.start < w + WINDOW && v.end > w)) continue;
      if (!k.walkToL1(this.as, w, false)) continue;
      const l1 = k.wMfn;
      // The L2 entry that points at it: walk again one level less deep.
      k.walkToL2(this.as, w);
      k.unlinkTable(this.as, k.wMfn, indexAt(w, 2), l1, 1);
    }
  }

  mprotect(start: number, len: number, write: boolean, exec: boolean): void {
    const k = this.k;
    k.op("mprotect", () => {
      const end = start + Math.ceil(len / PAGE) * PAGE;
      const pieces = this.vmas.filter((v) => v.start < end && v.end > start);
      if (pieces.length === 0) throw new GuestError("ENOMEM: mprotect of unmapped memory");
      this.carve(start, end);
      for (const v of pieces)
        this.vmas.push({ start: Math.max(v.start, start), end: Math.min(v.end, end), write, exec });
      let n = 0;
      this.forEachPte(start, end, (_va, l1, i, lo, hi) => {
        const mfn = (hi & 0xfffff) * 0x100000 + (lo >>> 12);
        const shared = k.mapcount[k.pfnOf(mfn)] > 1;
        const nlo = write && !shared ? (lo | LO_RW) >>> 0 : (lo & ~LO_RW) >>> 0;
        const nhi = exec ? (hi & ~HI_NX) >>> 0 : (hi | HI_NX) >>> 0;
        if (nlo === lo && nhi === hi) return;
        k.setEntry(this.as, l1, i, nlo, nhi, MMU_PT_UPDATE_PRESERVE_AD);
        n++;
      });
      k.hc.flush();
      if (n > 0) this.flushRange(start, end, n);
    });
  }

  // ---------------------------------------------------------------- faults and access

  /** The page-fault handler: demand-zero and copy-on-write. Returns what it did, or undefined: SIGSEGV. */
  handleFault(va: number, write: boolean): string | undefined {
    const k = this.k;
    const page = Math.floor(va / PAGE) * PAGE;
    const vma = this.vmaAt(page);
    if (!vma || (write && !vma.write)) return undefined;
    k.walkToL1(this.as, page, true);
    const l1 = k.wMfn;
    const i = indexAt(page, 1);
    k.read64(k.wVa + i * 8);
    const lo = k.lo;
    if ((lo & LO_P) === 0) {
      const pfn = k.allocZeroed(0);
      k.mapcount[pfn] = 1;
      const [nlo, nhi] = Kernel.userPte(k.mfnOf(pfn), vma.write, vma.exec);
      k.setEntry(this.as, l1, i, nlo, nhi);
      return "fault:zero";
    }
    if (!write || lo & LO_RW) {
      // Spurious (a stale TLB entry): the entry already allows it.
      return "fault:spurious";
    }
    const old = k.pfnOf((k.hi & 0xfffff) * 0x100000 + (lo >>> 12));
    if (k.mapcount[old] === 1) {
      // do_wp_page reuse: the last mapping just becomes writable again.
      k.setEntry(this.as, l1, i, (lo | LO_RW) >>> 0, k.hi, MMU_PT_UPDATE_PRESERVE_AD);
      return "fault:reuse";
    }
    const pfn = k.allocPfn();
    const mfn = k.mfnOf(pfn);
    k.copyPage(k.mapper.kva(k, mfn, pfn, 0), k.mapper.kva(k, k.mfnOf(old), old, 1));
    k.mapcount[pfn] = 1;
    const [nlo, nhi] = Kernel.userPte(mfn, true, vma.exec);
    k.setEntry(this.as, l1, i, nlo, nhi);
    k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_INVLPG_LOCAL, arg1: BigInt(page) }]);
    k.unmapUserPage(old);
    return "fault:cow";
  }

  /** A user-mode load or store by this (running) process; faults are handled as the kernel would. */
  touch(va: number, write: boolean, value = 0): number {
    const k = this.k;
    if (k.current !== this.as) throw new GuestError(`process ${this.pid} is not running`);
    return k.userAccess(va, write, value, (fva, code) => {
      const t0 = performance.now();
      const kind = this.handleFault(fva, (code & 2) !== 0);
      if (kind === undefined) return false;
      k.record(kind, performance.now() - t0);
      return true;
    });
  }

  /** Touch every page of [start, start + len). */
  touchRange(start: number, len: number, write: boolean): void {
    for (let va = start; va < start + len; va += PAGE) this.touch(va, write, va % 0xffffffff);
  }

  // ---------------------------------------------------------------- process lifecycle

  /** Run this process on the vCPU (context switch). */
  switchTo(): void {
    this.k.op("switch", () => this.k.activate(this.as));
  }

  /** fork: a child with a copy-on-write copy of this address space. */
  fork(): Process {
    const k = this.k;
    return k.op("fork", () => {
      const child = new Process(k, k.createAs(true));
      child.vmas = this.vmas.map((v) => ({ ...v }));
      let protectedAny = false;
      const page = new Uint32Array(1024);
      const m2pLo = k.h.frames.m2pLo;
      const mapcount = k.mapcount;
      // An unvalidated child (Linux's policy: pinned when first run) is filled with plain
      // stores in the same pass; a validated one gets its entries by mmu_update.
      const direct = !k.isValidated(child.as);
      for (const v of this.vmas) {
        const cow = v.write;
        for (let w = Math.floor(v.start / WINDOW) * WINDOW; w < v.end; w += WINDOW) {
          if (!k.walkToL1(this.as, w, false)) continue;
          const pl1 = k.wMfn;
          const src = k.readPage(k.wVa);
          const i0 = (Math.max(v.start, w) - w) / PAGE;
          const i1 = (Math.min(v.end, w + WINDOW) - w) / PAGE;
          let dst: Uint32Array = page;
          if (direct) {
            k.walkToL1(child.as, w, true);
            dst = k.writableFrame(k.wVa);
          } else page.fill(0);
          let n = 0;
          for (let i = i0; i < i1; i++) {
            let lo = src[i * 2];
            if ((lo & LO_P) === 0) continue;
            const hi = src[i * 2 + 1];
            if (cow && lo & LO_RW) {
              lo = (lo & ~LO_RW) >>> 0;
              k.setEntry(this.as, pl1, i, lo, hi);
              protectedAny = true;
            }
            mapcount[m2pLo[((hi & 0x7ff) << 20) | (lo >>> 12)]]++; // mfns < 2^31, pfns < 2^32 (checked at boot)
            dst[i * 2] = (lo & ~LO_A) >>> 0; // pte_mkold
            dst[i * 2 + 1] = hi;
            n++;
          }
          k.m2pLookups += n;
          if (direct) {
            k.directWrites += n;
            continue;
          }
          if (n === 0) continue;
          k.walkToL1(child.as, w, true);
          k.copyEntries(child.as, k.wMfn, k.wVa, page, i0, i1);
          k.mapper.close(k, child.as);
        }
      }
      k.hc.flush();
      if (protectedAny && k.current === this.as) k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_TLB_FLUSH_LOCAL }]);
      return child;
    });
  }

  /** exec: a fresh address space with a small image (text, data, stack), then the old one goes. */
  exec(textPages = 8, dataPages = 4, stackPages = 4): void {
    const k = this.k;
    k.op("exec", () => {
      const old = this.as;
      const oldVmas = this.vmas;
      this.as = k.createAs(true);
      this.vmas = [];
      this.populate(USER_TEXT, textPages, false, true);
      this.populate(USER_TEXT + textPages * PAGE, dataPages, true, false);
      this.populate(USER_TOP - stackPages * PAGE, stackPages, true, false);
      k.hc.flush();
      if (k.current === old) k.activate(this.as);
      const mine = this.as;
      this.as = old;
      for (const v of oldVmas) this.releasePages(v.start, v.end);
      this.as = mine;
      k.mapper.closeAll(k);
      k.destroyAs(old);
    });
  }

  exit(): void {
    const k = this.k;
    if (this.exited) throw new GuestError(`process ${this.pid} has already exited`);
    k.op("exit", () => {
      for (const v of this.vmas) this.releasePages(v.start, v.end);
      k.mapper.closeAll(k);
      k.destroyAs(this.as);
      this.vmas = [];
      this.exited = true;
    });
  }
}
