/**
 * The frame table: Xen's `struct page_info` for every machine frame, as
 * structure-of-arrays indexed by MFN (asm/mm.h). Typed arrays are
 * zero-filled by the allocator and committed by the OS page by page, so a
 * 256 GiB host costs memory only for the metadata of frames touched.
 *
 * Xen packs `count_info` (general count + PGC_* flags) and `type_info`
 * (type count + PGT_* flags + 3-bit type) into two words; here each field has
 * its own array, with the same meaning:
 *  - `count`      general reference count (PGC_count_mask), including the
 *                 allocation reference while `allocated` is set;
 *  - `allocated`  PGC_allocated;
 *  - `type`       the PGT_* type field (0 none … 7 writable);
 *  - `typeCount`  PGT_count_mask;
 *  - `flags`      PGT_validated, PGT_pinned, PGT_partial, and PGC_xen_heap;
 *  - `linear`     linear_pt_count (int16): +entries to other same-level
 *                 tables this table holds, −uses of this table by others;
 *  - `tableUses`  for the `split-count` linear policy: same-level entries
 *                 elsewhere using this table as a table one level down;
 *  - `owner`      the owning domain + 1 (0 = none);
 *  - `m2p`        the machine-to-phys entry, 64-bit, as two halves.
 */

export const F_VALIDATED = 1;
export const F_PINNED = 2;
export const F_PARTIAL = 4;
/**
 * PGC_xen_heap: a Xen-heap frame shared with its owner (a grant-table frame). When its last
 * reference goes it only leaves the owner's list (`free_domheap_pages` on a Xen-heap page):
 * Xen keeps it until it frees it itself, when the domain is destroyed.
 */
export const F_XEN_HEAP = 8;

export class FrameTable {
  readonly owner: Int32Array;
  readonly count: Uint32Array;
  readonly allocated: Uint8Array;
  readonly type: Uint8Array;
  readonly typeCount: Uint32Array;
  readonly flags: Uint8Array;
  readonly linear: Int16Array;
  readonly tableUses: Int32Array;
  readonly m2pLo: Uint32Array;
  readonly m2pHi: Uint32Array;
  /** Position of the frame on its owner's page list. */
  readonly listPos: Int32Array;

  constructor(readonly frames: number) {
    this.owner = new Int32Array(frames);
    this.count = new Uint32Array(frames);
    this.allocated = new Uint8Array(frames);
    this.type = new Uint8Array(frames);
    this.typeCount = new Uint32Array(frames);
    this.flags = new Uint8Array(frames);
    this.linear = new Int16Array(frames);
    this.tableUses = new Int32Array(frames);
    this.m2pLo = new Uint32Array(frames);
    this.m2pHi = new Uint32Array(frames);
    this.listPos = new Int32Array(frames);
  }

  /**
   * Give `mfn` to `domid` with just its allocation reference, no type, and M2P entry `pfn`
   * (-1: invalid); the rest of its state starts afresh.
   */
  claim(mfn: number, domid: number, pfn: number): void {
    this.owner[mfn] = domid + 1;
    this.count[mfn] = 1;
    this.allocated[mfn] = 1;
    this.type[mfn] = 0;
    this.typeCount[mfn] = 0;
    this.flags[mfn] = 0;
    this.linear[mfn] = 0;
    this.tableUses[mfn] = 0;
    this.m2pLo[mfn] = pfn < 0 ? 0xffffffff : pfn >>> 0;
    this.m2pHi[mfn] = pfn < 0 ? 0xffffffff : Math.floor(pfn / 2 ** 32);
  }

  /** A free frame: no owner, no references, invalid M2P. */
  clear(mfn: number): void {
    this.claim(mfn, -1, -1);
    this.count[mfn] = 0;
    this.allocated[mfn] = 0;
    this.listPos[mfn] = 0;
  }

  /** Owner domid, or -1 for none. */
  ownerOf(mfn: number): number {
    return this.owner[mfn] - 1;
  }

  /** Is `mfn` a frame of this host's RAM (`mfn_valid`)? */
  valid(mfn: number): boolean {
    return mfn >= 0 && mfn < this.frames;
  }
}
