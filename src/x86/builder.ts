/**
 * Building page-table trees directly in physical memory, as firmware or a
 * bare-metal kernel would (no hypervisor involved). Used by the tour, tests,
 * benchmarks and to synthesise memory images.
 */

import { type PagingLevels, tableIndex, vaFromBigInt } from "./address.js";
import type { PhysicalMemory } from "./memory.js";
import { HI_ADDR_MASK, type Level, LO_P, LO_PS, LO_RW, LO_US, PAGE_SIZE, TWO32 } from "./pte.js";

/** Hands out free frames. */
export interface FrameAllocator {
  alloc(): number;
}

/** Hands out frames upwards from `next` (or downwards when `down` is set), up to a limit. */
export class BumpAllocator implements FrameAllocator {
  constructor(
    public next: number,
    readonly limit = Number.MAX_SAFE_INTEGER,
    readonly down = false,
  ) {}
  alloc(): number {
    if (this.down ? this.next < this.limit : this.next >= this.limit) {
      throw new RangeError("out of frames for page tables");
    }
    return this.down ? this.next-- : this.next++;
  }
}

/** Leaf flags as the two halves of an entry (address bits ignored). */
export interface LeafFlags {
  lo: number;
  hi: number;
}

export class PageTableBuilder {
  /** Frame of the top-level table. */
  readonly root: number;
  /** Frames allocated for tables, in allocation order. */
  readonly tables: number[] = [];
  /** Flags given to the entries that point to tables (default P | RW | US). */
  tableFlags = LO_P | LO_RW | LO_US;

  constructor(
    readonly mem: PhysicalMemory,
    readonly alloc: FrameAllocator,
    readonly levels: PagingLevels = 4,
    root?: number,
  ) {
    this.root = root ?? this.newTable();
  }

  private newTable(): number {
    const f = this.alloc.alloc();
    this.mem.frameForWrite(f).fill(0);
    this.tables.push(f);
    return f;
  }

  /** The table at `level` on the way to (`hi`, `lo`), created if absent. */
  private tableFor(hi: number, lo: number, level: number): number {
    let table = this.root;
    for (let l = this.levels; l > level; l--) {
      const idx = tableIndex(hi, lo, l as Level);
      const t = this.mem.frameForWrite(table);
      const elo = t[idx * 2];
      const ehi = t[idx * 2 + 1];
      if ((elo & LO_P) === 0) {
        const child = this.newTable();
        t[idx * 2] = ((child % 0x10_0000) * PAGE_SIZE + this.tableFlags) >>> 0;
        t[idx * 2 + 1] = Math.floor(child / 0x10_0000);
        table = child;
      } else {
        if (elo & LO_PS && l <= 3) throw new Error(`address already mapped by a large page at level ${l}`);
        table = (ehi & HI_ADDR_MASK) * 0x10_0000 + (elo >>> 12);
      }
    }
    return table;
  }

  /**
   * Map one page of `pageSize` (4 KiB, 2 MiB or 1 GiB) at linear address `va`
   * to physical address `pa`, with the leaf's flag bits given as halves (P is
   * set unless `flags.lo` omits it on purpose via `present: false`).
   */
  map(va: bigint, pa: number, pageSize: number, flags: LeafFlags, present = true): void {
    const { hi, lo } = vaFromBigInt(va);
    this.mapHalves(hi, lo, pa, pageSize, flags.lo | (present ? LO_P : 0), flags.hi);
  }

  /** `map` with the address as halves and raw leaf flags. */
  mapHalves(hi: number, lo: number, pa: number, pageSize: number, flo: number, fhi: number): void {
    const level = pageSize === 0x1000 ? 1 : pageSize === 0x20_0000 ? 2 : pageSize === 0x4000_0000 ? 3 : 0;
    if (level === 0) throw new RangeError(`page size must be 4 KiB, 2 MiB or 1 GiB, got ${pageSize}`);
    if (pa % pageSize !== 0)
      throw new RangeError(`physical address 0x${pa.toString(16)} not aligned to page size`);
    const table = this.tableFor(hi, lo, level);
    const idx = tableIndex(hi, lo, level as Level);
    const t = this.mem.frameForWrite(table);
    t[idx * 2] = ((pa % TWO32) | (flo & 0xfff) | (level > 1 ? LO_PS : 0)) >>> 0;
    t[idx * 2 + 1] = (Math.floor(pa / TWO32) | (fhi & ~HI_ADDR_MASK)) >>> 0;
  }

  /** Map `length` bytes from `va` to `pa` with pages of `pageSize`. */
  mapRange(va: bigint, pa: number, length: number, pageSize: number, flags: LeafFlags): void {
    if (length % pageSize !== 0) throw new RangeError("length must be a multiple of the page size");
    const start = vaFromBigInt(va);
    let { hi, lo } = start;
    for (let off = 0; off < length; off += pageSize) {
      this.mapHalves(hi, lo, pa + off, pageSize, flags.lo | LO_P, flags.hi);
      const next = lo + pageSize;
      lo = next % TWO32;
      hi = (hi + Math.floor(next / TWO32)) >>> 0;
    }
  }

  /** Write a raw entry into a table (for tests that need malformed entries). */
  setEntry(table: number, index: number, lo: number, hi: number): void {
    const t = this.mem.frameForWrite(table);
    t[index * 2] = lo >>> 0;
    t[index * 2 + 1] = hi >>> 0;
  }

  /** The table at `level` covering `va`, created if absent (for tests). */
  tableAt(va: bigint, level: number): number {
    const { hi, lo } = vaFromBigInt(va);
    return this.tableFor(hi, lo, level);
  }
}
