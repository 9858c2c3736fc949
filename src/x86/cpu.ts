/**
 * A logical processor's paging state: control registers, its TLB, and
 * translation through the TLB (falling back to the page walk on a miss).
 *
 * Register effects on the TLB follow Intel SDM vol. 3A §4.10.4.1:
 *  - MOV to CR3 with CR4.PCIDE=0: flush all non-global entries;
 *  - MOV to CR3 with CR4.PCIDE=1: flush the new PCID's non-global entries,
 *    unless bit 63 of the source is set;
 *  - MOV to CR4 changing PGE, or clearing PCIDE: flush everything;
 *  - MOV to CR4 setting SMEP: flush the current PCID;
 *  - INVLPG: the page's entries for the current PCID, and global ones;
 *  - INVPCID types 0–3.
 * Rights are checked against the cached entry first: a translation that
 * faults through a TLB entry (a "spurious" fault after permissions were
 * raised without a flush, SDM §4.10.4.3) invalidates that entry, as a #PF
 * does. A permitted write through an entry cached with D=0 walks again to set D.
 */

import { hex64, type PagingLevels, vaFromBigInt, vaToBigInt } from "./address.js";
import type { PhysicalMemory } from "./memory.js";
import { Tlb, type TlbOptions } from "./tlb.js";
import {
  ACC_PROBE,
  ACC_WRITE,
  accessFault,
  FAULT_GP,
  FAULT_NONE,
  FAULT_PF,
  PageWalker,
  PagingMode,
  PERM_D,
} from "./walk.js";

// Control-register bits.
export const CR0_WP = 1n << 16n;
export const CR0_PG = 1n << 31n;
export const CR4_PGE = 1n << 7n;
export const CR4_LA57 = 1n << 12n;
export const CR4_PCIDE = 1n << 17n;
export const CR4_SMEP = 1n << 20n;
export const CR4_SMAP = 1n << 21n;
export const CR4_PKE = 1n << 22n;
export const CR4_PKS = 1n << 24n;
export const EFER_NXE = 1n << 11n;
export const CR3_NOFLUSH = 1n << 63n;

export interface CpuOptions {
  /** 5-level paging (CR4.LA57). Fixed for the CPU's life, as it can only change with paging off. */
  la57?: boolean;
  /** Initial CR0 (default: PG | WP | PE). */
  cr0?: bigint;
  /** Initial CR4 (default: PAE | PGE, plus LA57 if asked). */
  cr4?: bigint;
  /** Initial EFER (default: LME | LMA | NXE). */
  efer?: bigint;
  /** CPUID Page1GB (default true). */
  gbPages?: boolean;
  tlb?: TlbOptions;
}

/** Outcome of a translation, for the API edge. */
export type Translation =
  | { ok: true; paddr: number; pageSize: number; perm: number; fromTlb: boolean }
  | { ok: false; vector: 13 | 14; errorCode: number; cr2: bigint | undefined };

/** A fault raised by a virtual memory access. */
export class X86Fault extends Error {
  constructor(
    readonly vector: 13 | 14,
    readonly errorCode: number,
    readonly cr2: bigint | undefined,
  ) {
    super(
      vector === FAULT_PF
        ? `#PF error code 0x${errorCode.toString(16)} at ${hex64(cr2 ?? 0n)}`
        : "#GP(0): non-canonical address",
    );
  }
}

export class Cpu {
  readonly tlb: Tlb;
  readonly walker: PageWalker;
  /** The state the walker reads, derived from the registers below. */
  readonly mode = new PagingMode();

  private _cr0 = 0n;
  private _cr3 = 0n;
  private _cr4 = 0n;
  private _efer = 0n;

  // ---- result of the last translate() ----
  paddr = 0;
  /** Level of the leaf that mapped the last translation (1, 2, 3). */
  leafLevel = 0;
  perm = 0;
  fault = FAULT_NONE;
  errorCode = 0;
  /** CR2 as two halves: the linear address of the last page fault. */
  cr2Hi = 0;
  cr2Lo = 0;
  /** Did the last successful translate() hit the TLB? */
  fromTlb = false;

  constructor(
    readonly mem: PhysicalMemory,
    opts: CpuOptions = {},
  ) {
    this.tlb = new Tlb(opts.tlb);
    this.walker = new PageWalker(mem);
    this.mode.gbPages = opts.gbPages ?? true;
    this._cr0 = opts.cr0 ?? CR0_PG | CR0_WP | 1n;
    this._cr4 = (opts.cr4 ?? (1n << 5n) | CR4_PGE) | (opts.la57 ? CR4_LA57 : 0n);
    this._efer = opts.efer ?? (1n << 8n) | (1n << 10n) | EFER_NXE;
    this.syncMode();
  }

  get levels(): PagingLevels {
    return this.mode.levels;
  }
  get cr0(): bigint {
    return this._cr0;
  }
  get cr3(): bigint {
    return this._cr3;
  }
  get cr4(): bigint {
    return this._cr4;
  }
  get efer(): bigint {
    return this._efer;
  }
  get cr2(): bigint {
    return vaToBigInt(this.cr2Hi, this.cr2Lo);
  }

  private syncMode(): void {
    const m = this.mode;
    m.levels = this._cr4 & CR4_LA57 ? 5 : 4;
    m.wp = (this._cr0 & CR0_WP) !== 0n;
    m.pge = (this._cr4 & CR4_PGE) !== 0n;
    m.smep = (this._cr4 & CR4_SMEP) !== 0n;
    m.smap = (this._cr4 & CR4_SMAP) !== 0n;
    m.pke = (this._cr4 & CR4_PKE) !== 0n;
    m.pks = (this._cr4 & CR4_PKS) !== 0n;
    m.nxe = (this._efer & EFER_NXE) !== 0n;
    m.rootFrame = Number((this._cr3 >> 12n) & 0xff_ffff_ffffn);
    this.tlb.setPcid(this._cr4 & CR4_PCIDE ? Number(this._cr3 & 0xfffn) : 0);
  }

  /** MOV to CR3. With CR4.PCIDE=1, bits 11:0 are the PCID and bit 63 asks not to flush. */
  writeCr3(value: bigint): void {
    const v = BigInt.asUintN(64, value);
    const pcide = (this._cr4 & CR4_PCIDE) !== 0n;
    const noFlush = pcide && (v & CR3_NOFLUSH) !== 0n;
    const rootMask = ((1n << BigInt(this.mem.maxPhysAddrBits)) - 1n) & ~0xfffn;
    if ((v & ~(rootMask | 0xfffn | CR3_NOFLUSH)) !== 0n || (!pcide && (v & CR3_NOFLUSH) !== 0n)) {
      throw new X86Fault(FAULT_GP, 0, undefined); // reserved CR3 bits: #GP(0)
    }
    this._cr3 = v & ~CR3_NOFLUSH;
    this.syncMode();
    if (!pcide) this.tlb.flushNonGlobal();
    else if (!noFlush) this.tlb.flushPcid(this.tlb.currentPcid);
  }

  /** Point CR3 at a top-level table (physical address), optionally with a PCID. */
  loadRoot(rootPaddr: number, pcid = 0, noFlush = false): void {
    this.writeCr3(BigInt(rootPaddr) | BigInt(pcid) | (noFlush ? CR3_NOFLUSH : 0n));
  }

  writeCr0(value: bigint): void {
    this._cr0 = BigInt.asUintN(64, value);
    this.syncMode();
  }

  writeCr4(value: bigint): void {
    const v = BigInt.asUintN(64, value);
    if ((v ^ this._cr4) & CR4_LA57) throw new X86Fault(FAULT_GP, 0, undefined); // LA57 can't change in long mode
    if (v & CR4_PCIDE && !(this._cr4 & CR4_PCIDE) && (this._cr3 & 0xfffn) !== 0n) {
      throw new X86Fault(FAULT_GP, 0, undefined); // setting PCIDE needs CR3[11:0] = 0
    }
    const old = this._cr4;
    this._cr4 = v;
    this.syncMode();
    const changed = old ^ v;
    if (changed & CR4_PGE || (old & CR4_PCIDE && !(v & CR4_PCIDE))) this.tlb.flushAll();
    else if (v & CR4_SMEP && !(old & CR4_SMEP)) this.tlb.flushPcid(this.tlb.currentPcid);
  }

  writeEfer(value: bigint): void {
    const v = BigInt.asUintN(64, value);
    const flush = ((v ^ this._efer) & EFER_NXE) !== 0n;
    this._efer = v;
    this.syncMode();
    if (flush) this.tlb.flushAll();
  }

  /** RFLAGS.AC (lets supervisor code touch user pages under SMAP). */
  setAc(ac: boolean): void {
    this.mode.ac = ac;
  }

  setPkru(v: number): void {
    this.mode.pkru = v >>> 0;
  }

  setPkrs(v: number): void {
    this.mode.pkrs = v >>> 0;
  }

  invlpg(va: bigint): void {
    const { hi, lo } = vaFromBigInt(va);
    this.tlb.invlpg(hi, lo);
  }

  /** INVPCID: type 0 individual address, 1 single context, 2 all incl. global, 3 all but global. */
  invpcid(type: 0 | 1 | 2 | 3, pcid: number, va = 0n): void {
    if (type === 0) {
      const { hi, lo } = vaFromBigInt(va);
      this.tlb.invalidateAddress(hi, lo, pcid);
    } else if (type === 1) this.tlb.flushPcid(pcid);
    else if (type === 2) this.tlb.flushAll();
    else this.tlb.flushNonGlobal();
  }

  /**
   * Translate the linear address (`hi`:`lo`) for `access` (ACC_* bits): the hot
   * path used by the hypervisor. On success `paddr`, `perm` and `leafLevel` are
   * set; on a fault `fault` and `errorCode` (and CR2 for a #PF).
   */
  translate(hi: number, lo: number, access: number): boolean {
    const tlb = this.tlb;
    if ((access & ACC_PROBE) === 0) {
      const s = tlb.lookup(hi, lo);
      if (s >= 0) {
        const perm = tlb.perm[s];
        const code = accessFault(perm, access, this.mode);
        if (code !== 0) {
          tlb.drop(s); // a #PF invalidates the faulting address's entries
          return this.pageFault(hi, lo, code);
        }
        if ((access & ACC_WRITE) === 0 || (perm & PERM_D) !== 0) {
          tlb.hits++;
          this.paddr = tlb.base[s] + (lo & tlb.offsetMask(s));
          this.perm = perm;
          this.leafLevel = tlb.levelOf(s);
          this.fromTlb = true;
          this.fault = FAULT_NONE;
          return true;
        }
        tlb.drop(s); // write through a clean entry: walk again to set D
      }
      tlb.misses++;
    }
    const w = this.walker;
    if (!w.walk(this.mode, hi, lo, access)) {
      if (w.fault === FAULT_GP) {
        this.fault = FAULT_GP;
        this.errorCode = 0;
        return false;
      }
      return this.pageFault(hi, lo, w.errorCode);
    }
    if ((access & ACC_PROBE) === 0) tlb.fill(hi, lo, w.leafLevel, w.pageBase, w.perm);
    this.paddr = w.paddr;
    this.perm = w.perm;
    this.leafLevel = w.leafLevel;
    this.fromTlb = false;
    this.fault = FAULT_NONE;
    return true;
  }

  private pageFault(hi: number, lo: number, code: number): false {
    this.fault = FAULT_PF;
    this.errorCode = code;
    this.cr2Hi = hi;
    this.cr2Lo = lo;
    return false;
  }

  /** `translate` at the API edge. */
  translateVa(va: bigint, access = 0): Translation {
    const { hi, lo } = vaFromBigInt(va);
    if (this.translate(hi, lo, access)) {
      const pageSize = 2 ** (3 + 9 * this.leafLevel);
      return { ok: true, paddr: this.paddr, pageSize, perm: this.perm, fromTlb: this.fromTlb };
    }
    return {
      ok: false,
      vector: this.fault as 13 | 14,
      errorCode: this.errorCode,
      cr2: this.fault === FAULT_PF ? this.cr2 : undefined,
    };
  }

  private access(va: bigint, access: number): number {
    const { hi, lo } = vaFromBigInt(va);
    if (!this.translate(hi, lo, access)) {
      throw new X86Fault(
        this.fault as 13 | 14,
        this.errorCode,
        this.fault === FAULT_PF ? this.cr2 : undefined,
      );
    }
    return this.paddr;
  }

  /** Read an aligned 64-bit value at a linear address (throws X86Fault). */
  read64(va: bigint, access = 0): bigint {
    if (va & 7n) throw new RangeError("read64 needs an 8-byte aligned address");
    return this.mem.read64(this.access(va, access & ~ACC_WRITE));
  }

  /** Write an aligned 64-bit value at a linear address (throws X86Fault). */
  write64(va: bigint, value: bigint, access = 0): void {
    if (va & 7n) throw new RangeError("write64 needs an 8-byte aligned address");
    this.mem.write64(this.access(va, access | ACC_WRITE), value);
  }
}
