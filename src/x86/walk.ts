/**
 * The x86-64 page walk (Intel SDM vol. 3A §4.5–4.7; AMD APM vol. 2 §5.3–5.6).
 *
 * One implementation serves the CPU model (through its TLB), the dump
 * tools' `walk` view, and anything else that translates: `PageWalker.walk`.
 * `BatchWalker` (walk-many.ts) walks many addresses at once with the same result,
 * handing every walk it does not take straight down to `walk`.
 *
 * Order of checks, as hardware does them:
 *  1. the linear address must be canonical, else #GP (not #PF);
 *  2. at each level, from CR3 down: a non-present entry faults (#PF, P=0);
 *     a present entry with a reserved bit set faults (#PF, P=1, RSVD=1) —
 *     bits 51:MAXPHYADDR, XD when EFER.NXE=0, PS in a PML5E/PML4E, a 1 GiB
 *     page when the CPU lacks them, address bits below a large page's alignment;
 *  3. at the leaf, the access is checked against the effective rights
 *     (R/W and U/S and'ed across levels, XD or'ed), CR0.WP, CR4.SMEP/SMAP
 *     with RFLAGS.AC, and protection keys (PKRU for user pages, PKRS for
 *     supervisor pages) — see `accessFault`;
 *  4. only a walk that succeeds sets accessed flags (on every entry used)
 *     and, for a write, the dirty flag of the leaf. A faulting walk writes nothing.
 */

import { isCanonical, type PagingLevels, tableIndex } from "./address.js";
import type { PhysicalMemory } from "./memory.js";
import {
  entryFrame,
  HI_ADDR_MASK,
  HI_NX,
  HI_PK_MASK,
  HI_PK_SHIFT,
  type Level,
  LO_A,
  LO_D,
  LO_P,
  LO_PS,
  LO_RSVD_1G,
  LO_RSVD_2M,
  reservedHighMask,
} from "./pte.js";

// ---- access kinds (bit positions match the #PF error code's W/R, U/S, I/D) ----
export const ACC_READ = 0;
export const ACC_WRITE = 1 << 1;
export const ACC_USER = 1 << 2;
export const ACC_FETCH = 1 << 4;
/** An implicit supervisor access (descriptor tables, …): SMAP applies whatever RFLAGS.AC says. */
export const ACC_IMPLICIT = 1 << 8;
/** A debugger's look: no accessed/dirty updates, no TLB fill. */
export const ACC_PROBE = 1 << 9;

// ---- #PF error code bits ----
export const PF_P = 1 << 0;
export const PF_W = 1 << 1;
export const PF_U = 1 << 2;
export const PF_RSVD = 1 << 3;
export const PF_I = 1 << 4;
export const PF_PK = 1 << 5;

/** Walk outcome: a page fault (#PF, vector 14) or a general-protection fault (#GP, vector 13). */
export const FAULT_NONE = 0;
export const FAULT_PF = 14;
export const FAULT_GP = 13;

// ---- effective permissions of a translation (bit positions match the entry's low half) ----
export const PERM_W = 1 << 1; // writable at every level
export const PERM_U = 1 << 2; // user at every level
export const PERM_NX = 1 << 3; // execute-disable at some level (only when EFER.NXE = 1)
export const PERM_D = 1 << 6; // the leaf's dirty flag was set
export const PERM_G = 1 << 8; // global leaf (only when CR4.PGE = 1)
export const PERM_PK_SHIFT = 12; // protection key of the leaf, bits 12–15

/**
 * The processor state a walk depends on. `Cpu` keeps one of these in step
 * with its registers. Setting a field that decides access rights (WP, SMEP,
 * SMAP, AC, NXE) rebuilds `faultTable`, the precomputed answer of
 * `rightsFault` for every (access, effective rights) pair, so the TLB-hit
 * path checks rights with one table load (as KVM's `permissions[]` does).
 */
export class PagingMode {
  /** Frame of the top-level table (CR3 bits 51:12). */
  rootFrame = 0;
  /** 4-level or 5-level (CR4.LA57). */
  levels: PagingLevels = 4;
  pke = false; // CR4.PKE
  pks = false; // CR4.PKS
  pkru = 0;
  pkrs = 0;
  pge = false; // CR4.PGE
  /** CPUID.80000001H:EDX.Page1GB. */
  gbPages = true;
  /** #PF error code (0 = allowed) by `rightsIndex(perm, access)`, protection keys aside. */
  readonly faultTable = new Uint8Array(128);

  private _nxe = true;
  private _wp = true;
  private _smep = false;
  private _smap = false;
  private _ac = false;

  constructor() {
    this.rebuild();
  }

  /** EFER.NXE */
  get nxe(): boolean {
    return this._nxe;
  }
  set nxe(v: boolean) {
    if (v !== this._nxe) {
      this._nxe = v;
      this.rebuild();
    }
  }
  /** CR0.WP */
  get wp(): boolean {
    return this._wp;
  }
  set wp(v: boolean) {
    if (v !== this._wp) {
      this._wp = v;
      this.rebuild();
    }
  }
  /** CR4.SMEP */
  get smep(): boolean {
    return this._smep;
  }
  set smep(v: boolean) {
    if (v !== this._smep) {
      this._smep = v;
      this.rebuild();
    }
  }
  /** CR4.SMAP */
  get smap(): boolean {
    return this._smap;
  }
  set smap(v: boolean) {
    if (v !== this._smap) {
      this._smap = v;
      this.rebuild();
    }
  }
  /** RFLAGS.AC */
  get ac(): boolean {
    return this._ac;
  }
  set ac(v: boolean) {
    if (v !== this._ac) {
      this._ac = v;
      this.rebuild();
    }
  }

  private rebuild(): void {
    for (let a = 0; a < 16; a++) {
      const access = ((a & 3) << 1) | ((a & 4) << 2) | ((a & 8) << 5);
      for (let p = 0; p < 8; p++) this.faultTable[(a << 3) | p] = rightsFault(p << 1, access, this);
    }
  }
}

/** Index into `PagingMode.faultTable`: access kind (write, user, fetch, implicit) and rights (W, U, NX). */
function rightsIndex(perm: number, access: number): number {
  return accessIndex(access) | ((perm >>> 1) & 7);
}

/** The access kind's part of `rightsIndex` (the same for every walk of one kind). */
export function accessIndex(access: number): number {
  return (((access >>> 1) & 3) | ((access >>> 2) & 4) | ((access >>> 5) & 8)) << 3;
}

/** Can protection keys deny this access in this mode? (Never for a fetch; only with CR4.PKE or PKS.) */
export function keysApply(access: number, m: PagingMode): boolean {
  return (access & ACC_FETCH) === 0 && (m.pke || m.pks);
}

/**
 * The architectural rule (SDM §4.6) for R/W, U/S and XD with CR0.WP,
 * CR4.SMEP, CR4.SMAP and RFLAGS.AC: the #PF error code, or 0 if allowed.
 * `accessFault` answers the same from the precomputed table, plus keys.
 */
export function rightsFault(perm: number, access: number, m: PagingMode): number {
  const user = (access & ACC_USER) !== 0;
  const write = (access & ACC_WRITE) !== 0;
  const fetch = (access & ACC_FETCH) !== 0;
  const userPage = (perm & PERM_U) !== 0;
  let bad: boolean;
  if (user) {
    bad = !userPage || (write && (perm & PERM_W) === 0) || (fetch && (perm & PERM_NX) !== 0);
  } else if (fetch) {
    bad = (perm & PERM_NX) !== 0 || (userPage && m.smep);
  } else {
    bad =
      (userPage && m.smap && ((access & ACC_IMPLICIT) !== 0 || !m.ac)) ||
      (write && m.wp && (perm & PERM_W) === 0);
  }
  return bad ? PF_P | (access & (ACC_WRITE | ACC_USER)) | (fetch && (m.smep || m.nxe) ? PF_I : 0) : 0;
}

/**
 * Does `access` violate the effective permissions `perm` under `m`?
 * Returns the #PF error code (always with P=1) or 0 when the access is allowed.
 * Protection keys (SDM §4.6.2): data accesses to user pages check PKRU when
 * CR4.PKE=1, to supervisor pages PKRS when CR4.PKS=1; access-disable denies
 * any data access, write-disable denies user writes and supervisor writes
 * when CR0.WP=1.
 */
export function accessFault(perm: number, access: number, m: PagingMode): number {
  const code = m.faultTable[rightsIndex(perm, access)];
  if (!keysApply(access, m)) return code;
  const userPage = (perm & PERM_U) !== 0;
  if (!(userPage ? m.pke : m.pks)) return code;
  const key = (perm >>> PERM_PK_SHIFT) & 15;
  const bits = ((userPage ? m.pkru : m.pkrs) >>> (key * 2)) & 3;
  const write = (access & ACC_WRITE) !== 0;
  const pk = (bits & 1) !== 0 || (write && (bits & 2) !== 0 && ((access & ACC_USER) !== 0 || m.wp));
  if (!pk) return code;
  return (code === 0 ? PF_P | (access & (ACC_WRITE | ACC_USER)) : code) | PF_PK;
}

/**
 * The mode bits `leafPerm` needs: PERM_G when CR4.PGE=1, PERM_NX when EFER.NXE=1 (a loop of
 * walks takes them once).
 */
export function permKeep(m: PagingMode): number {
  return (m.pge ? PERM_G : 0) | (m.nxe ? PERM_NX : 0);
}

/**
 * The effective permissions (PERM_*) of a translation whose leaf is `elo`:`ehi`: `rights`
 * and'ed and `nx` or'ed over every entry used (the leaf's included). NX only when EFER.NXE=1,
 * G only when CR4.PGE=1 (`keep`, from `permKeep`), the leaf's protection key, and the leaf's
 * dirty flag as it was read. No branches: W, U, D and G sit where their entry bits are, and
 * NX (bit 63) is one shift away.
 */
export function leafPerm(keep: number, rights: number, nx: number, elo: number, ehi: number): number {
  return (
    (rights & (PERM_W | PERM_U)) |
    (elo & (LO_D | (keep & PERM_G))) |
    ((nx >>> (31 - 3)) & keep & PERM_NX) |
    (((ehi & HI_PK_MASK) >>> HI_PK_SHIFT) << PERM_PK_SHIFT)
  );
}

/** Error code bits that describe the access itself (for non-present and reserved-bit faults). */
function accessBits(access: number, m: PagingMode): number {
  return (access & (ACC_WRITE | ACC_USER)) | ((access & ACC_FETCH) !== 0 && (m.smep || m.nxe) ? PF_I : 0);
}

/**
 * Walks page tables in a `PhysicalMemory`. After `walk()` the result is in the
 * public fields. A probe walk (ACC_PROBE: the tools' look) also keeps the entries
 * it read (`depth` of them, highest level first) so a tool can show every step;
 * other walks keep only `depth`, and reach each entry through the memory's slot
 * table without building anything per step (the TLB-miss hot path).
 */
export class PageWalker {
  // ---- result of the last walk ----
  /** FAULT_NONE, FAULT_PF or FAULT_GP. */
  fault = FAULT_NONE;
  /** #PF error code when `fault === FAULT_PF`. */
  errorCode = 0;
  /** Physical address translated to. */
  paddr = 0;
  /** Physical base of the page mapped. */
  pageBase = 0;
  /** Level of the leaf: 1 (4 KiB), 2 (2 MiB), 3 (1 GiB). */
  leafLevel = 0;
  /** Effective permissions (PERM_*). */
  perm = 0;
  /** Number of entries read. */
  depth = 0;
  /**
   * Per step of the last probe walk (0 = top level): the entry as read (its frame and index:
   * `stepFrame`, `stepIndex`).
   */
  readonly stepLo = new Uint32Array(5);
  readonly stepHi = new Uint32Array(5);
  /** The walk's linear address, root frame and levels, for `stepFrame`/`stepIndex`. */
  private vaHi = 0;
  private vaLo = 0;
  private root = 0;
  private levels: PagingLevels = 4;

  private readonly rsvdHi: number;

  constructor(readonly mem: PhysicalMemory) {
    this.rsvdHi = reservedHighMask(mem.maxPhysAddrBits);
  }

  /**
   * Translate the linear address (`hi`:`lo`) for `access` (ACC_* bits).
   * Returns true on success (`paddr`, `perm`, `leafLevel` set), false on a
   * fault (`fault`, `errorCode` set).
   */
  walk(m: PagingMode, hi: number, lo: number, access: number): boolean {
    this.vaHi = hi;
    this.vaLo = lo;
    this.root = m.rootFrame;
    this.levels = m.levels;
    if (m.levels === 4 && (access & ACC_PROBE) === 0 && ((hi >> 15) + 1) >>> 1 === 0) {
      return this.walk4(m, hi, lo, access);
    }
    return this.walkAny(m, hi, lo, access);
  }

  /**
   * The TLB-miss hot path: a canonical 4-level walk that is not a probe, straight down four
   * tables. The first entry that is not a present, reserved-bit-free table entry (or a present
   * 4 KiB leaf) hands the whole walk to `walkAny`, which decides the fault or the large page
   * (nothing was written yet, so walking again from the top is the same walk).
   */
  private walk4(m: PagingMode, hi: number, lo: number, access: number): boolean {
    const mem = this.mem;
    const slabs = mem.slabs;
    const shift = mem.slabShift;
    const mask = mem.slabMask;
    const rsvdHi = this.rsvdHi | (m.nxe ? 0 : HI_NX);
    let pfn = m.rootFrame;
    let s = mem.slot(pfn);
    let t = slabs[s >>> shift];
    let w = ((s & mask) << 10) | (((hi >>> 7) & 511) << 1);
    let elo = t[w];
    let ehi = t[w | 1];
    if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvdHi) !== 0) return this.walkAny(m, hi, lo, access);
    let rights = elo;
    let nx = ehi;
    pfn = entryFrame(elo, ehi);
    s = mem.slot(pfn);
    t = slabs[s >>> shift];
    w = ((s & mask) << 10) | ((((hi & 0x7f) << 2) | (lo >>> 30)) << 1);
    elo = t[w];
    ehi = t[w | 1];
    if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvdHi) !== 0) return this.walkAny(m, hi, lo, access);
    rights &= elo;
    nx |= ehi;
    pfn = entryFrame(elo, ehi);
    s = mem.slot(pfn);
    t = slabs[s >>> shift];
    w = ((s & mask) << 10) | (((lo >>> 21) & 511) << 1);
    elo = t[w];
    ehi = t[w | 1];
    if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvdHi) !== 0) return this.walkAny(m, hi, lo, access);
    rights &= elo;
    nx |= ehi;
    pfn = entryFrame(elo, ehi);
    s = mem.slot(pfn);
    t = slabs[s >>> shift];
    w = ((s & mask) << 10) | (((lo >>> 12) & 511) << 1);
    elo = t[w];
    ehi = t[w | 1];
    if ((elo & LO_P) === 0 || (ehi & rsvdHi) !== 0) return this.walkAny(m, hi, lo, access);
    rights &= elo;
    nx |= ehi;
    this.pageBase = (ehi & HI_ADDR_MASK) * 0x1_0000_0000 + (elo >>> 12) * 0x1000;
    this.paddr = this.pageBase + (lo & 0xfff);
    this.depth = 4;
    return this.leaf(m, hi, lo, access, 1, elo, ehi, rights, nx, 4);
  }

  /** Any walk: 4 or 5 levels, large pages, faults, probes (which keep their steps). */
  private walkAny(m: PagingMode, hi: number, lo: number, access: number): boolean {
    if (!isCanonical(hi, m.levels)) {
      this.depth = 0;
      this.fault = FAULT_GP;
      this.errorCode = 0;
      return false;
    }
    const mem = this.mem;
    const slabs = mem.slabs;
    const shift = mem.slabShift;
    const mask = mem.slabMask;
    const rsvdHi = this.rsvdHi | (m.nxe ? 0 : HI_NX);
    const probe = (access & ACC_PROBE) !== 0;
    let level: number = m.levels;
    let pfn = m.rootFrame;
    let rights = PERM_W | PERM_U | LO_A;
    let nx = 0;
    let n = 0;
    let elo = 0;
    let ehi = 0;
    for (;;) {
      const s = mem.slot(pfn);
      const idx =
        level === 1
          ? (lo >>> 12) & 511
          : level === 2
            ? (lo >>> 21) & 511
            : level === 3
              ? ((hi & 0x7f) << 2) | (lo >>> 30)
              : level === 4
                ? (hi >>> 7) & 511
                : (hi >>> 16) & 511;
      const t = slabs[s >>> shift];
      const w = ((s & mask) << 10) | (idx << 1);
      elo = t[w];
      ehi = t[w | 1];
      if (probe) {
        this.stepLo[n] = elo;
        this.stepHi[n] = ehi;
      }
      n++;
      if ((elo & LO_P) === 0) {
        this.depth = n;
        return this.pageFault(accessBits(access, m));
      }
      if ((ehi & rsvdHi) !== 0) return this.reservedFault(n, access, m);
      rights &= elo;
      nx |= ehi;
      if (level === 1) {
        this.pageBase = (ehi & HI_ADDR_MASK) * 0x1_0000_0000 + (elo >>> 12) * 0x1000;
        this.paddr = this.pageBase + (lo & 0xfff);
        break;
      }
      if ((elo & LO_PS) !== 0) {
        if (level >= 4) return this.reservedFault(n, access, m);
        if (level === 3) {
          if (!m.gbPages || (elo & LO_RSVD_1G) !== 0) return this.reservedFault(n, access, m);
          this.pageBase = (ehi & HI_ADDR_MASK) * 0x1_0000_0000 + (elo >>> 30) * 0x4000_0000;
          this.paddr = this.pageBase + (lo & 0x3fffffff);
          break;
        }
        if ((elo & LO_RSVD_2M) !== 0) return this.reservedFault(n, access, m);
        this.pageBase = (ehi & HI_ADDR_MASK) * 0x1_0000_0000 + (elo >>> 21) * 0x20_0000;
        this.paddr = this.pageBase + (lo & 0x1fffff);
        break;
      }
      pfn = entryFrame(elo, ehi);
      level--;
    }
    this.depth = n;
    return this.leaf(m, hi, lo, access, level, elo, ehi, rights, nx, n);
  }

  /**
   * The end of a walk that reached its leaf (`elo`:`ehi` at `level`, `n` entries read,
   * `rights` and'ed and `nx` or'ed over them): check the access, then set accessed and dirty
   * flags unless probing.
   */
  private leaf(
    m: PagingMode,
    hi: number,
    lo: number,
    access: number,
    level: number,
    elo: number,
    ehi: number,
    rights: number,
    nx: number,
    n: number,
  ): boolean {
    this.leafLevel = level;
    let perm = leafPerm(permKeep(m), rights, nx, elo, ehi);
    const code = accessFault(perm, access, m);
    if (code !== 0) return this.pageFault(code);
    if ((access & ACC_PROBE) === 0) {
      // Accessed on every entry used (the leaf's included), dirty on the leaf for a write.
      let allSet = (rights & LO_A) !== 0;
      if ((access & ACC_WRITE) !== 0) {
        if ((elo & LO_D) === 0) allSet = false;
        perm |= PERM_D;
      }
      if (!allSet) this.setAccessedDirty(m, hi, lo, n, (access & ACC_WRITE) !== 0);
    }
    this.perm = perm;
    this.fault = FAULT_NONE;
    return true;
  }

  /**
   * After a successful walk that found an entry without its accessed flag, or a write whose
   * leaf is clean: go down the same `n` entries again (nothing changed them since) and set
   * accessed on each, dirty on the leaf for a write — only where not already set, as the
   * processor does, so a flag already set is not a write to the table's frame.
   */
  private setAccessedDirty(m: PagingMode, hi: number, lo: number, n: number, write: boolean): void {
    const mem = this.mem;
    let pfn = m.rootFrame;
    let level = m.levels as Level;
    for (let k = 0; k < n; k++) {
      const i = tableIndex(hi, lo, level) << 1;
      const t = mem.frame(pfn);
      const elo = t[i];
      const want = k === n - 1 && write ? LO_A | LO_D : LO_A;
      if ((elo & want) !== want) mem.frameForWrite(pfn)[i] |= want;
      pfn = entryFrame(elo, t[i | 1]);
      level = (level - 1) as Level;
    }
  }

  private reservedFault(n: number, access: number, m: PagingMode): false {
    this.depth = n;
    return this.pageFault(PF_P | PF_RSVD | accessBits(access, m));
  }

  private pageFault(code: number): false {
    this.fault = FAULT_PF;
    this.errorCode = code;
    return false;
  }

  /** The frame of the table read at step `k`: the root, or where the previous step's entry points. */
  stepFrame(k: number): number {
    return k === 0 ? this.root : entryFrame(this.stepLo[k - 1], this.stepHi[k - 1]);
  }

  /** The index of the entry read at step `k`. */
  stepIndex(k: number): number {
    return tableIndex(this.vaHi, this.vaLo, (this.levels - k) as Level);
  }

  /** The physical address of step `k`'s entry. */
  stepEntryAddress(k: number): number {
    return this.stepFrame(k) * 4096 + this.stepIndex(k) * 8;
  }
}
