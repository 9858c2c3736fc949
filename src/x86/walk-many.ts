/**
 * Many page walks at once, with the result of walking them one after another.
 *
 * A TLB-miss walk over a large tree waits on memory at its last level: the L1 tables of a
 * 4 GiB region of 4 KiB pages are 8 MiB, beyond the caches and the host's TLB reach. One
 * JavaScript walk is too long for the processor to reach the next walk's loads while the
 * first waits, so walks one at a time pay each miss in full. A processor's page walker does
 * not: it has several walks in flight. `BatchWalker` does the same in software, a group of
 * walks at a time:
 *  1. the upper levels of every walk of the group (cache-resident tables), down to the
 *     address of its L1 entry;
 *  2. a tight loop that only loads those L1 entries, so that their misses overlap;
 *  3. each walk's leaf, in order: the rights check and the result.
 *
 * Exactness. The results, and every accessed/dirty write, are those of `PageWalker.walk`
 * called for each address in order. The fast path takes only walks that write nothing: a
 * present, reserved-bit-free 4 KiB leaf under present, reserved-bit-free tables, with the
 * accessed flag already set on every entry and, for a write, the dirty flag on the leaf (a
 * probe writes nothing either way). Any other walk — a fault before the leaf, a large page, a
 * non-canonical address, a flag to set — is handed to `PageWalker.walk` in its turn. A group's
 * entries are read before its earlier walks complete, and that is still exact: those walks only
 * ever set accessed and dirty flags, a walk the fast path takes already had every flag it needs,
 * and its result reads no flag that an earlier walk of the same call could have set (the leaf's
 * dirty flag only for a read, and reads set no dirty flag). A rights fault at the leaf needs no
 * hand-over: a faulting walk writes nothing.
 */

import type { PhysicalMemory } from "./memory.js";
import { entryFrame, HI_NX, LO_A, LO_D, LO_P, LO_PS, reservedHighMask } from "./pte.js";
import {
  ACC_PROBE,
  ACC_WRITE,
  accessFault,
  FAULT_NONE,
  FAULT_PF,
  leafPerm,
  PageWalker,
  type PagingMode,
} from "./walk.js";

/** Walks per group: enough independent L1 loads in flight to cover the misses' latency. */
const GROUP = 64;

/** Per address of a `BatchWalker.walk` call, what `PageWalker.walk` would have left in its fields. */
export class WalkResults {
  /** Physical address translated to (on success; paddr, perm and leafLevel are 0 after a fault). */
  readonly paddr: Float64Array;
  /** Effective permissions, PERM_* (on success). */
  readonly perm: Uint32Array;
  /** Level of the leaf: 1 (4 KiB), 2 (2 MiB), 3 (1 GiB) (on success). */
  readonly leafLevel: Uint8Array;
  /** FAULT_NONE, FAULT_PF or FAULT_GP. */
  readonly fault: Uint8Array;
  /** #PF error code when `fault` is FAULT_PF, else 0. */
  readonly errorCode: Uint8Array;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 0) {
      throw new RangeError(`a result capacity must be a whole number, got ${capacity}`);
    }
    this.paddr = new Float64Array(capacity);
    this.perm = new Uint32Array(capacity);
    this.leafLevel = new Uint8Array(capacity);
    this.fault = new Uint8Array(capacity);
    this.errorCode = new Uint8Array(capacity);
  }
}

export class BatchWalker {
  /** The walker every walk off the fast path is handed to (its fields hold the last one). */
  readonly walker: PageWalker;
  private readonly rsvdHi: number;
  // ---- per walk of the group: its L1 entry (slab and word), and'ed rights (0: hand over), or'ed high halves ----
  private readonly slab: Uint32Array[];
  private readonly word = new Int32Array(GROUP);
  private readonly rights = new Int32Array(GROUP);
  private readonly nx = new Int32Array(GROUP);
  /** Walks completed on the fast path (the rest were handed to `walker`). */
  fastWalks = 0;
  /** What the touch loop read, kept so that its loads are not optimised away. */
  private touched = 0;

  constructor(readonly mem: PhysicalMemory) {
    this.walker = new PageWalker(mem);
    this.rsvdHi = reservedHighMask(mem.maxPhysAddrBits);
    this.slab = new Array<Uint32Array>(GROUP).fill(mem.slabs[0]);
  }

  /**
   * Translate the linear addresses `his[i]`:`los[i]` for `i < count`, each for `access`
   * (ACC_* bits), into `out[i]`. The same results and the same accessed/dirty writes as
   * `PageWalker.walk` for each address in order. Returns how many succeeded.
   */
  walk(
    m: PagingMode,
    his: Uint32Array,
    los: Uint32Array,
    access: number,
    out: WalkResults,
    count = his.length,
  ): number {
    if (!Number.isInteger(count) || count < 0 || count > his.length || count > los.length) {
      throw new RangeError(
        `count ${count} is not within the ${Math.min(his.length, los.length)} addresses given`,
      );
    }
    if (count > out.capacity) {
      throw new RangeError(`${count} addresses do not fit ${out.capacity} results`);
    }
    // Reserved bits of the high half: above MAXPHYADDR, and XD when EFER.NXE=0.
    const rsvd = this.rsvdHi | (m.nxe ? 0 : HI_NX);
    let ok = 0;
    for (let off = 0; off < count; off += GROUP) {
      const g = Math.min(GROUP, count - off);
      this.upper(m, his, los, off, g, rsvd);
      this.touch(g);
      ok += this.leaves(m, his, los, access, out, off, g, rsvd);
    }
    return ok;
  }

  /**
   * Step 1: each walk of the group from the root down to its L1 entry, through present
   * table entries without reserved bits; a walk that meets anything else is marked for
   * hand-over (rights 0, pointing at a zero word).
   */
  private upper(
    m: PagingMode,
    his: Uint32Array,
    los: Uint32Array,
    off: number,
    g: number,
    rsvd: number,
  ): void {
    const mem = this.mem;
    const slabs = mem.slabs;
    const shift = mem.slabShift;
    const mask = mem.slabMask;
    const five = m.levels === 5;
    const root = mem.slot(m.rootFrame);
    const rootSlab = slabs[root >>> shift];
    const rootWord = (root & mask) << 10;
    const zero = slabs[0];
    const slab = this.slab;
    const word = this.word;
    const rights = this.rights;
    const nx = this.nx;
    const top = five ? 24 : 15; // canonical: bits 63 down to 56 (47) all equal
    for (let k = 0; k < g; k++) {
      const hi = his[off + k];
      const lo = los[off + k];
      slab[k] = zero;
      word[k] = 0;
      rights[k] = 0;
      if (((hi >> top) + 1) >>> 1 !== 0) continue;
      let t = rootSlab;
      let w = rootWord;
      let r = -1;
      let x = 0;
      let elo: number;
      let ehi: number;
      let s: number;
      if (five) {
        w |= ((hi >>> 16) & 511) << 1;
        elo = t[w];
        ehi = t[w | 1];
        if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvd) !== 0) continue;
        r = elo;
        x = ehi;
        s = mem.slot(entryFrame(elo, ehi));
        t = slabs[s >>> shift];
        w = (s & mask) << 10;
      }
      w |= ((hi >>> 7) & 511) << 1;
      elo = t[w];
      ehi = t[w | 1];
      if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvd) !== 0) continue;
      r &= elo;
      x |= ehi;
      s = mem.slot(entryFrame(elo, ehi));
      t = slabs[s >>> shift];
      w = ((s & mask) << 10) | ((((hi & 0x7f) << 2) | (lo >>> 30)) << 1);
      elo = t[w];
      ehi = t[w | 1];
      if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvd) !== 0) continue;
      r &= elo;
      x |= ehi;
      s = mem.slot(entryFrame(elo, ehi));
      t = slabs[s >>> shift];
      w = ((s & mask) << 10) | (((lo >>> 21) & 511) << 1);
      elo = t[w];
      ehi = t[w | 1];
      if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvd) !== 0) continue;
      s = mem.slot(entryFrame(elo, ehi));
      slab[k] = slabs[s >>> shift];
      word[k] = ((s & mask) << 10) | (((lo >>> 12) & 511) << 1);
      rights[k] = r & elo;
      nx[k] = x | ehi;
    }
  }

  /** Step 2: load every L1 entry of the group, with nothing else in the loop, so their misses overlap. */
  private touch(g: number): void {
    const slab = this.slab;
    const word = this.word;
    let acc = 0;
    for (let k = 0; k < g; k++) acc ^= slab[k][word[k]];
    this.touched ^= acc;
  }

  /** Step 3: each walk's leaf in order, or the whole walk handed to `PageWalker.walk`. */
  private leaves(
    m: PagingMode,
    his: Uint32Array,
    los: Uint32Array,
    access: number,
    out: WalkResults,
    off: number,
    g: number,
    rsvd: number,
  ): number {
    // The flags that must already be set for the walk to write nothing.
    const need = (access & ACC_PROBE) !== 0 ? 0 : (access & ACC_WRITE) !== 0 ? LO_A | LO_D : LO_A;
    const w0 = this.walker;
    const slab = this.slab;
    const word = this.word;
    let ok = 0;
    let fast = 0;
    for (let k = 0; k < g; k++) {
      const i = off + k;
      const lo = los[i];
      const rights = this.rights[k];
      if (rights !== 0) {
        const t = slab[k];
        const w = word[k];
        const elo = t[w];
        const ehi = t[w | 1];
        const r = rights & elo;
        // A on every level is in the and'ed rights; D only counts on the leaf.
        if ((elo & LO_P) !== 0 && (ehi & rsvd) === 0 && ((r | (elo & LO_D)) & need) === need) {
          const perm = leafPerm(m, r, this.nx[k] | ehi, elo, ehi);
          const code = accessFault(perm, access, m);
          fast++;
          if (code !== 0) {
            this.failed(out, i, FAULT_PF, code);
            continue;
          }
          out.leafLevel[i] = 1;
          out.fault[i] = FAULT_NONE;
          out.errorCode[i] = 0;
          out.perm[i] = perm;
          out.paddr[i] = entryFrame(elo, ehi) * 0x1000 + (lo & 0xfff);
          ok++;
          continue;
        }
      }
      if (w0.walk(m, his[i], lo, access)) {
        out.fault[i] = FAULT_NONE;
        out.errorCode[i] = 0;
        out.perm[i] = w0.perm;
        out.paddr[i] = w0.paddr;
        out.leafLevel[i] = w0.leafLevel;
        ok++;
      } else {
        this.failed(out, i, w0.fault, w0.errorCode);
      }
    }
    this.fastWalks += fast;
    return ok;
  }

  private failed(out: WalkResults, i: number, fault: number, code: number): void {
    out.fault[i] = fault;
    out.errorCode[i] = code;
    out.paddr[i] = 0;
    out.perm[i] = 0;
    out.leafLevel[i] = 0;
  }
}
