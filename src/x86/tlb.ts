/**
 * A translation lookaside buffer (Intel SDM vol. 3A §4.10).
 *
 * It caches translations with their effective permissions, tagged by PCID,
 * and keeps them until they are invalidated — so, exactly as on hardware, a
 * page-table entry changed without INVLPG or a flush can still be used
 * through a stale entry. The hypervisor model relies on this to show
 * missing-flush bugs.
 *
 * Structure: three direct-mapped arrays (4 KiB, 2 MiB and 1 GiB pages),
 * structure-of-arrays over typed arrays. Capacity is finite, so a translation
 * can also be evicted by a colliding one, which the architecture allows.
 *
 * Invalidation without scanning: every entry carries the stamp of the epoch
 * it was filled in. A flush of non-global entries, of one PCID, or of
 * everything moves a threshold; an entry older than the threshold that
 * applies to it is dead. So CR3 loads and full flushes cost O(1).
 */

import { PERM_G } from "./walk.js";

export interface TlbOptions {
  /** Entries for 4 KiB pages (power of two). Default 4096. */
  entries4k?: number;
  /** Entries for 2 MiB pages (power of two). Default 512. */
  entries2m?: number;
  /** Entries for 1 GiB pages (power of two). Default 64. */
  entries1g?: number;
}

/** One cached translation, as shown to people and tests. */
export interface TlbEntryView {
  /** Linear address of the page (canonical form, as a bigint). */
  va: bigint;
  pageSize: number;
  pcid: number;
  /** Physical base of the page. */
  pa: number;
  /** Effective permissions (PERM_* bits). */
  perm: number;
}

function pow2(n: number, what: string): number {
  if (!Number.isInteger(n) || n < 1 || (n & (n - 1)) !== 0 || n > 1 << 24) {
    throw new RangeError(`TLB ${what} must be a power of two up to 2^24, got ${n}`);
  }
  return n;
}

export class Tlb {
  // Slots [0, n4) hold 4 KiB pages, [n4, n4+n2) 2 MiB pages, the rest 1 GiB pages.
  private readonly n4: number;
  private readonly n2: number;
  private readonly n1: number;
  /** Linear address bits 63:32 of the page. */
  private readonly tagHi: Uint32Array;
  /** Page number bits within the low half (lo >>> shift), plus PCID << 20. */
  private readonly tagLo: Uint32Array;
  /** Effective permissions (PERM_*). */
  readonly perm: Uint32Array;
  /** Physical base address of the page. */
  readonly base: Float64Array;
  /** Epoch the entry was filled in; 0 = empty. */
  private readonly stamp: Uint32Array;

  private epoch = 1;
  /** Entries stamped below this are dead, global or not. */
  private minAll = 1;
  /** Entries stamped below this are dead unless global. */
  private minNonGlobal = 1;
  /** Per-PCID threshold for non-global entries. */
  private readonly minPcid = new Uint32Array(4096);
  /** Current PCID and the threshold that applies to its non-global entries. */
  private pcid = 0;
  private curMin = 1;

  /** Counters, for reports. */
  hits = 0;
  misses = 0;
  fills = 0;

  constructor(opts: TlbOptions = {}) {
    this.n4 = pow2(opts.entries4k ?? 4096, "entries4k");
    this.n2 = pow2(opts.entries2m ?? 512, "entries2m");
    this.n1 = pow2(opts.entries1g ?? 64, "entries1g");
    const n = this.n4 + this.n2 + this.n1;
    this.tagHi = new Uint32Array(n);
    this.tagLo = new Uint32Array(n);
    this.perm = new Uint32Array(n);
    this.base = new Float64Array(n);
    this.stamp = new Uint32Array(n);
  }

  get capacity(): number {
    return this.n4 + this.n2 + this.n1;
  }

  // Slot hashes are salted with a PCID so that several address spaces' entries
  // for one address coexist; global entries are always placed under PCID 0's
  // slot, so INVLPG and lookups from any PCID find them.
  private slot4k(hi: number, lo: number, salt: number): number {
    return ((lo >>> 12) ^ (hi << 3) ^ (hi >>> 11) ^ (salt * 0x9e5)) & (this.n4 - 1);
  }
  private slot2m(hi: number, lo: number, salt: number): number {
    return this.n4 + (((lo >>> 21) ^ (hi << 3) ^ (hi >>> 11) ^ (salt * 0x9e5)) & (this.n2 - 1));
  }
  private slot1g(hi: number, lo: number, salt: number): number {
    return this.n4 + this.n2 + (((lo >>> 30) ^ hi ^ (hi >>> 9) ^ (salt * 0x9e5)) & (this.n1 - 1));
  }

  private live(s: number): boolean {
    const st = this.stamp[s];
    if (st < this.minAll) return false;
    if ((this.perm[s] & PERM_G) !== 0) return true;
    return st >= this.minNonGlobal && st >= this.minPcid[this.tagLo[s] >>> 20];
  }

  /** Does slot `s` hold a live translation usable now for page (`hi`, `vpn` = lo >>> shift)? */
  private match(s: number, hi: number, vpn: number): boolean {
    const tl = this.tagLo[s];
    if (this.tagHi[s] !== hi || (tl & 0xfffff) !== vpn) return false;
    const st = this.stamp[s];
    if ((this.perm[s] & PERM_G) !== 0) return st >= this.minAll;
    return tl >>> 20 === this.pcid && st >= this.curMin;
  }

  /**
   * Find a live entry for the linear address in the current PCID (or a global
   * one). Returns the slot, or -1. The physical address is
   * `base[slot] + (lo & offsetMask(slot))`.
   */
  lookup(hi: number, lo: number): number {
    const p = this.pcid;
    let s = this.slot4k(hi, lo, p);
    if (this.match(s, hi, lo >>> 12)) return s;
    s = this.slot2m(hi, lo, p);
    if (this.match(s, hi, lo >>> 21)) return s;
    s = this.slot1g(hi, lo, p);
    if (this.match(s, hi, lo >>> 30)) return s;
    if (p !== 0) {
      // Global entries live under PCID 0's slots.
      s = this.slot4k(hi, lo, 0);
      if (this.match(s, hi, lo >>> 12)) return s;
      s = this.slot2m(hi, lo, 0);
      if (this.match(s, hi, lo >>> 21)) return s;
      s = this.slot1g(hi, lo, 0);
      if (this.match(s, hi, lo >>> 30)) return s;
    }
    return -1;
  }

  /** Mask of the linear address bits that are the offset within slot `s`'s page. */
  offsetMask(s: number): number {
    return s < this.n4 ? 0xfff : s < this.n4 + this.n2 ? 0x1fffff : 0x3fffffff;
  }

  /** Page level cached in slot `s`: 1 (4 KiB), 2 (2 MiB) or 3 (1 GiB). */
  levelOf(s: number): number {
    return s < this.n4 ? 1 : s < this.n4 + this.n2 ? 2 : 3;
  }

  /** Cache a translation of the page containing (`hi`, `lo`) at `level` (1, 2, 3). */
  fill(hi: number, lo: number, level: number, pageBase: number, perm: number): void {
    let s: number;
    let vpn: number;
    const salt = (perm & PERM_G) !== 0 ? 0 : this.pcid;
    if (level === 1) {
      s = this.slot4k(hi, lo, salt);
      vpn = lo >>> 12;
    } else if (level === 2) {
      s = this.slot2m(hi, lo, salt);
      vpn = lo >>> 21;
    } else {
      s = this.slot1g(hi, lo, salt);
      vpn = lo >>> 30;
    }
    this.tagHi[s] = hi;
    this.tagLo[s] = (vpn | (this.pcid << 20)) >>> 0;
    this.perm[s] = perm;
    this.base[s] = pageBase;
    this.stamp[s] = this.epoch;
    this.fills++;
  }

  /** Drop one slot. */
  drop(s: number): void {
    this.stamp[s] = 0;
  }

  /**
   * INVLPG: invalidate translations of the page containing the address, of
   * any page size, for the current PCID, and global ones.
   */
  invlpg(hi: number, lo: number): void {
    this.invalidateAt(hi, lo, this.pcid, this.pcid, true);
    if (this.pcid !== 0) this.invalidateAt(hi, lo, 0, this.pcid, true);
  }

  /** INVPCID type 0: one address in one PCID (non-global entries only). */
  invalidateAddress(hi: number, lo: number, pcid: number): void {
    this.invalidateAt(hi, lo, pcid & 0xfff, pcid & 0xfff, false);
  }

  /** Drop the entries for the address in the slots salted with `salt`, of `pcid` (and global ones if asked). */
  private invalidateAt(hi: number, lo: number, salt: number, pcid: number, alsoGlobal: boolean): void {
    this.dropIf(this.slot4k(hi, lo, salt), hi, lo >>> 12, pcid, alsoGlobal);
    this.dropIf(this.slot2m(hi, lo, salt), hi, lo >>> 21, pcid, alsoGlobal);
    this.dropIf(this.slot1g(hi, lo, salt), hi, lo >>> 30, pcid, alsoGlobal);
  }

  /** Drop slot `s` if it caches page (`hi`, `vpn`) for `pcid`, or globally when `alsoGlobal`. */
  private dropIf(s: number, hi: number, vpn: number, pcid: number, alsoGlobal: boolean): void {
    const tl = this.tagLo[s];
    if (this.tagHi[s] !== hi || (tl & 0xfffff) !== vpn) return;
    const global = (this.perm[s] & PERM_G) !== 0;
    if ((global && alsoGlobal) || (!global && tl >>> 20 === pcid)) this.stamp[s] = 0;
  }

  /** Invalidate every non-global entry of every PCID (MOV to CR3 with PCIDE=0). */
  flushNonGlobal(): void {
    this.epoch++;
    this.minNonGlobal = this.epoch;
    this.recomputeCurMin();
  }

  /** Invalidate the non-global entries of one PCID (MOV to CR3 with PCIDE=1, INVPCID type 1). */
  flushPcid(pcid: number): void {
    this.epoch++;
    this.minPcid[pcid & 0xfff] = this.epoch;
    this.recomputeCurMin();
  }

  /** Invalidate everything, global entries included (CR4.PGE toggle, INVPCID type 2). */
  flushAll(): void {
    this.epoch++;
    this.minAll = this.epoch;
    this.minNonGlobal = this.epoch;
    this.recomputeCurMin();
  }

  /** Make `pcid` the current PCID (tag for new entries; non-global lookups match it). */
  setPcid(pcid: number): void {
    this.pcid = pcid & 0xfff;
    this.recomputeCurMin();
  }

  get currentPcid(): number {
    return this.pcid;
  }

  private recomputeCurMin(): void {
    this.curMin = Math.max(this.minAll, this.minNonGlobal, this.minPcid[this.pcid]);
  }

  /** Number of live entries (scans the TLB: for reports and tests, not hot paths). */
  get size(): number {
    let n = 0;
    for (let s = 0; s < this.capacity; s++) if (this.live(s)) n++;
    return n;
  }

  /**
   * Call `fn` with the physical base, size and permissions of every live entry, without
   * building views (scans the TLB: for checkers, not hot paths).
   */
  forEachLive(fn: (pa: number, pageSize: number, perm: number) => void): void {
    for (let s = 0; s < this.capacity; s++) {
      if (!this.live(s)) continue;
      fn(this.base[s], s < this.n4 ? 4096 : s < this.n4 + this.n2 ? 2 ** 21 : 2 ** 30, this.perm[s]);
    }
  }

  /** The live entries (for reports and tests). */
  entries(): TlbEntryView[] {
    const out: TlbEntryView[] = [];
    for (let s = 0; s < this.capacity; s++) {
      if (!this.live(s)) continue;
      const shift = s < this.n4 ? 12 : s < this.n4 + this.n2 ? 21 : 30;
      const tl = this.tagLo[s];
      const va = (BigInt(this.tagHi[s]) << 32n) | (BigInt(tl & 0xfffff) << BigInt(shift));
      out.push({ va, pageSize: 2 ** shift, pcid: tl >>> 20, pa: this.base[s], perm: this.perm[s] });
    }
    return out;
  }
}
