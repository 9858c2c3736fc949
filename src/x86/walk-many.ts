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
 *     address of its L1 entry — through two memos, as a processor's paging-structure caches
 *     do: the L1 table a 2 MiB region's walks reach, kept for the call, and the L2 table a
 *     1 GiB region's walks reach, kept for the group;
 *  2. a tight loop that only loads those L1 entries, so that their misses overlap;
 *  3. each walk's leaf: the rights check and the result;
 *  4. the walks step 3 could not complete, in order, handed to `PageWalker.walk`.
 *
 * Exactness. The results, and every accessed/dirty write, are those of `PageWalker.walk`
 * called for each address in order. The fast path (step 3) takes only walks that write
 * nothing: a present, reserved-bit-free 4 KiB leaf under present, reserved-bit-free tables,
 * with the accessed flag already set on every entry and, for a write, the dirty flag on the
 * leaf (a probe writes nothing either way). Any other walk — a fault before the leaf, a large
 * page, a non-canonical address, a flag to set — is handed over. The fast walks of a group
 * complete before its handed-over walks, and that is still exact: handed-over walks only ever
 * set accessed and dirty flags, a fast walk already had every flag it needs, and its result
 * reads no flag that a walk of the same call could set (the leaf's dirty flag only for a read,
 * and reads set no dirty flag). So a fast walk's result is the same before or after any
 * handed-over walk, and the handed-over walks, which alone write, run in their order. A rights
 * fault at the leaf needs no hand-over: a faulting walk writes nothing.
 */

import type { PhysicalMemory } from "./memory.js";
import { entryFrame, HI_NX, LO_A, LO_D, LO_P, LO_PS, reservedHighMask } from "./pte.js";
import {
  ACC_PROBE,
  ACC_WRITE,
  accessFault,
  accessIndex,
  FAULT_NONE,
  FAULT_PF,
  keysApply,
  leafPerm,
  PageWalker,
  type PagingMode,
  permKeep,
} from "./walk.js";

/**
 * Walks per group: enough independent L1 loads in flight to cover the misses' latency, and
 * enough walks per region to make the memo of L2 tables pay (64 ran 8% slower here).
 */
const GROUP = 256;
/** Entries of a group's memo of L2 tables, by 1 GiB region (a power of two). */
const L2_MEMO = 8;
/** Entries of a call's memo of L1 tables, by 2 MiB region (a power of two; 8 GiB of 4 KiB pages). */
const L1_MEMO = 4096;

/**
 * A direct-mapped memo of the table that the walks of one region reach, with the rights
 * and'ed and the high halves or'ed on the way there. A region is its address bits above the
 * table: all of `hi`, and the low half's top `regionBits` bits. An entry counts only under the
 * key it was kept with, `(epoch << regionBits) | region bits of the low half`, so a new epoch
 * (a call, a group) empties the memo without touching it.
 */
class TableMemo {
  readonly hi: Uint32Array;
  readonly key: Int32Array;
  readonly slab: Uint32Array[];
  readonly word: Int32Array;
  readonly rights: Int32Array;
  readonly nx: Int32Array;
  /** The current epoch, from 1 below `2^(31 - regionBits)` (keys stay positive int32s). */
  epoch = 0;

  constructor(
    readonly size: number,
    readonly regionBits: number,
    zero: Uint32Array,
  ) {
    this.hi = new Uint32Array(size);
    this.key = new Int32Array(size).fill(-1);
    this.slab = new Array<Uint32Array>(size).fill(zero);
    this.word = new Int32Array(size);
    this.rights = new Int32Array(size);
    this.nx = new Int32Array(size);
  }

  /** Start a new epoch: what was kept before no longer counts. */
  renew(): void {
    if (++this.epoch === 2 ** (31 - this.regionBits)) {
      this.key.fill(-1);
      this.epoch = 1;
    }
  }

  /** Keep, in entry `e` under `key`, the table at `slab`/`word` with the rights and NX reached. */
  keep(
    e: number,
    hi: number,
    key: number,
    slab: Uint32Array,
    word: number,
    rights: number,
    nx: number,
  ): void {
    this.hi[e] = hi;
    this.key[e] = key;
    this.slab[e] = slab;
    this.word[e] = word;
    this.rights[e] = rights;
    this.nx[e] = nx;
  }
}

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
  /** The group's walks the fast path could not take (their indices), for step 4. */
  private readonly handed = new Int32Array(GROUP);
  /** The call's memo of L1 tables, by 2 MiB region (address bits 63:21); an epoch per call. */
  private readonly l1Memo: TableMemo;
  /** The group's memo of L2 tables, by 1 GiB region (address bits 63:30); an epoch per group. */
  private readonly l2Memo: TableMemo;
  /** Walks completed on the fast path (the rest were handed to `walker`). */
  fastWalks = 0;
  /** What the touch loop read, kept so that its loads are not optimised away. */
  private touched = 0;

  constructor(readonly mem: PhysicalMemory) {
    this.walker = new PageWalker(mem);
    this.rsvdHi = reservedHighMask(mem.maxPhysAddrBits);
    this.slab = new Array<Uint32Array>(GROUP).fill(mem.slabs[0]);
    this.l1Memo = new TableMemo(L1_MEMO, 11, mem.slabs[0]);
    this.l2Memo = new TableMemo(L2_MEMO, 2, mem.slabs[0]);
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
    this.l1Memo.renew(); // a new call: what earlier calls kept no longer counts
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
   *
   * The levels above L1 are the same for every address of one 2 MiB region, so the call keeps
   * what they led to (the L1 table, the and'ed rights and or'ed high halves) in a memo keyed by
   * address bits 63:21, as a processor's PDE cache does. Unlike a processor's, it is exact:
   * within a call the only writes are its own walks' accessed and dirty flags, which change no
   * table's address, rights or NX, and an entry is kept only when every entry on the way
   * already had its accessed flag — so a later walk of the call would read the same from them.
   * A memo miss goes the long way, through the group's memo of L2 tables by 1 GiB region
   * (address bits 63:30), filled while this step runs (nothing is written then) and emptied
   * for each group.
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
    const l1Memo = this.l1Memo;
    const l1Epoch = l1Memo.epoch << 11;
    const l1Hi = l1Memo.hi;
    const l1Key = l1Memo.key;
    const l2Memo = this.l2Memo;
    l2Memo.renew(); // a new group: what earlier groups kept no longer counts
    const l2Epoch = l2Memo.epoch << 2;
    const l2Hi = l2Memo.hi;
    const l2Key = l2Memo.key;
    for (let k = 0; k < g; k++) {
      const hi = his[off + k];
      const lo = los[off + k];
      slab[k] = zero;
      word[k] = 0;
      rights[k] = 0;
      if (((hi >> top) + 1) >>> 1 !== 0) continue;
      const l2 = lo >>> 21; // with hi: the address bits above the L1 table
      const key1 = l1Epoch | l2;
      const e1 = (l2 ^ (hi << 11)) & (L1_MEMO - 1);
      if (l1Key[e1] === key1 && l1Hi[e1] === hi) {
        slab[k] = l1Memo.slab[e1];
        word[k] = l1Memo.word[e1] | (((lo >>> 12) & 511) << 1);
        rights[k] = l1Memo.rights[e1];
        nx[k] = l1Memo.nx[e1];
        continue;
      }
      const l3 = lo >>> 30; // with hi: the address bits above the L2 table
      const key2 = l2Epoch | l3;
      const e2 = (l3 ^ hi) & (L2_MEMO - 1);
      let t: Uint32Array;
      let w: number;
      let r: number;
      let x: number;
      let elo: number;
      let ehi: number;
      let s: number;
      if (l2Key[e2] === key2 && l2Hi[e2] === hi) {
        t = l2Memo.slab[e2];
        w = l2Memo.word[e2];
        r = l2Memo.rights[e2];
        x = l2Memo.nx[e2];
      } else {
        t = rootSlab;
        w = rootWord;
        r = -1;
        x = 0;
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
        w = ((s & mask) << 10) | ((((hi & 0x7f) << 2) | l3) << 1);
        elo = t[w];
        ehi = t[w | 1];
        if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvd) !== 0) continue;
        r &= elo;
        x |= ehi;
        s = mem.slot(entryFrame(elo, ehi));
        t = slabs[s >>> shift];
        w = (s & mask) << 10;
        l2Memo.keep(e2, hi, key2, t, w, r, x);
      }
      w |= ((lo >>> 21) & 511) << 1;
      elo = t[w];
      ehi = t[w | 1];
      if ((elo & (LO_P | LO_PS)) !== LO_P || (ehi & rsvd) !== 0) continue;
      s = mem.slot(entryFrame(elo, ehi));
      const l1 = slabs[s >>> shift];
      const l1Word = (s & mask) << 10;
      r &= elo;
      x |= ehi;
      slab[k] = l1;
      word[k] = l1Word | (((lo >>> 12) & 511) << 1);
      rights[k] = r;
      nx[k] = x;
      if ((r & LO_A) !== 0) l1Memo.keep(e1, hi, key1, l1, l1Word, r, x);
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

  /**
   * Steps 3 and 4: each walk's leaf, then the walks the fast path could not take, in order,
   * through `PageWalker.walk`. A group's results start as successes of a 4 KiB leaf (filled
   * at once), so that a fast walk stores only its permissions and address.
   */
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
    const slab = this.slab;
    const word = this.word;
    const rights = this.rights;
    const nx = this.nx;
    const handed = this.handed;
    // accessFault, with what is the same for every walk of the call taken out of the loop.
    const keep = permKeep(m);
    const keys = keysApply(access, m);
    const faultTable = m.faultTable;
    const accIndex = accessIndex(access);
    const perms = out.perm;
    const paddrs = out.paddr;
    out.leafLevel.fill(1, off, off + g);
    out.fault.fill(FAULT_NONE, off, off + g);
    out.errorCode.fill(0, off, off + g);
    let ok = 0;
    let nh = 0;
    for (let k = 0; k < g; k++) {
      const i = off + k;
      const r0 = rights[k];
      if (r0 !== 0) {
        const t = slab[k];
        const w = word[k];
        const elo = t[w];
        const ehi = t[w | 1];
        const r = r0 & elo;
        // A on every level is in the and'ed rights; D only counts on the leaf.
        if ((elo & LO_P) !== 0 && (ehi & rsvd) === 0 && ((r | (elo & LO_D)) & need) === need) {
          const perm = leafPerm(keep, r, nx[k] | ehi, elo, ehi);
          const code = keys ? accessFault(perm, access, m) : faultTable[accIndex | ((perm >>> 1) & 7)];
          if (code !== 0) {
            this.failed(out, i, FAULT_PF, code);
            continue;
          }
          perms[i] = perm;
          paddrs[i] = entryFrame(elo, ehi) * 0x1000 + (los[i] & 0xfff);
          ok++;
          continue;
        }
      }
      handed[nh++] = i;
    }
    this.fastWalks += g - nh;
    const w0 = this.walker;
    for (let h = 0; h < nh; h++) {
      const i = handed[h];
      if (w0.walk(m, his[i], los[i], access)) {
        out.perm[i] = w0.perm;
        out.paddr[i] = w0.paddr;
        out.leafLevel[i] = w0.leafLevel;
        ok++;
      } else {
        this.failed(out, i, w0.fault, w0.errorCode);
      }
    }
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
