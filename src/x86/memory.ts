/**
 * Physical memory: 4 KiB frames, little-endian, allocated on first write.
 *
 * Frames live in a two-level directory (chunks of 4096 frames, i.e. 16 MiB of
 * address space per chunk) so a lookup is two array loads, and a machine of
 * hundreds of GiB costs one directory slot per 16 MiB plus the frames touched.
 * A frame never written reads as zeros (the shared, never-written `ZERO_FRAME`).
 *
 * A `FrameSource` can back the memory (a memory-dump image): a frame is read
 * from it the first time it is needed, then cached. Addresses at or beyond
 * `size` are unbacked: they read as zeros and cannot be written.
 */

import { PAGE_SIZE } from "./pte.js";

export const WORDS_PER_FRAME = PAGE_SIZE / 4;
const CHUNK_SHIFT = 12;
const CHUNK_FRAMES = 1 << CHUNK_SHIFT;
const CHUNK_MASK = CHUNK_FRAMES - 1;

/** Largest memory size accepted: 64 TiB (2^34 frames, a 4 Mi-slot directory). */
export const MAX_MEMORY_BYTES = 2 ** 46;

/**
 * A shared all-zero frame returned for frames never written. Callers must
 * never write to the array returned by `PhysicalMemory.frame()`.
 */
export const ZERO_FRAME: Uint32Array = new Uint32Array(WORDS_PER_FRAME);

/** `takeWritten` when writes are not tracked. */
const NONE_WRITTEN: readonly number[] = [];

/** A read-only source of frame contents, e.g. a physical memory dump. */
export interface FrameSource {
  /** Bytes of physical address space the source describes. */
  readonly sizeBytes: number;
  /** Fill `dest` (zeroed) with frame `pfn`'s contents; return false if the frame is all zeros/unbacked. */
  load(pfn: number, dest: Uint32Array): boolean;
}

export interface PhysicalMemoryOptions {
  /** Bytes of RAM, from physical address 0. Default 4 GiB. */
  sizeBytes?: number;
  /** MAXPHYADDR, 36–52. Default 52. */
  maxPhysAddrBits?: number;
  /** Contents to read frames from lazily (a dump image). */
  source?: FrameSource;
}

if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) {
  throw new Error("pvmmu needs a little-endian host (typed arrays are read as x86 memory)");
}

type Chunk = (Uint32Array | undefined)[];

/** Frames per storage slab (256 KiB). */
const SLAB_FRAMES = 64;

export class PhysicalMemory {
  readonly sizeBytes: number;
  readonly maxPhysAddrBits: number;
  /** Number of frames of RAM (frames at or above this are unbacked). */
  readonly frameCount: number;
  private readonly dir: (Chunk | undefined)[];
  private readonly source: FrameSource | undefined;
  private allocated = 0;

  constructor(opts: PhysicalMemoryOptions = {}) {
    const maxPhys = opts.maxPhysAddrBits ?? 52;
    if (!Number.isInteger(maxPhys) || maxPhys < 36 || maxPhys > 52) {
      throw new RangeError(`MAXPHYADDR must be an integer from 36 to 52, got ${maxPhys}`);
    }
    const size = opts.sizeBytes ?? opts.source?.sizeBytes ?? 4 * 2 ** 30;
    if (!Number.isInteger(size) || size < 0 || size > MAX_MEMORY_BYTES || size > 2 ** maxPhys) {
      throw new RangeError(
        `memory size must be a whole number of bytes up to ${MAX_MEMORY_BYTES} and within 2^MAXPHYADDR, got ${size}`,
      );
    }
    this.sizeBytes = size;
    this.maxPhysAddrBits = maxPhys;
    this.frameCount = Math.ceil(size / PAGE_SIZE);
    this.slabFrames = Math.min(SLAB_FRAMES, Math.max(8, this.frameCount >>> 9));
    this.slabUsed = this.slabFrames;
    this.dir = new Array(Math.ceil(this.frameCount / CHUNK_FRAMES));
    this.source = opts.source;
  }

  /** Frames whose contents are held in memory (written, or loaded from the source). */
  get framesTouched(): number {
    return this.allocated;
  }

  /**
   * The contents of frame `pfn`, for reading only: a frame never written is the
   * shared ZERO_FRAME. Hot path: two array loads when the frame is resident.
   */
  frame(pfn: number): Uint32Array {
    const chunk = this.dir[(pfn / CHUNK_FRAMES) | 0];
    if (chunk !== undefined) {
      const f = chunk[pfn & CHUNK_MASK];
      if (f !== undefined) return f;
    }
    return this.frameMiss(pfn);
  }

  /**
   * The frame an entry's address field points to, read-only: the chunk index
   * and offset come straight from the entry's halves (no division). Hot path
   * of the page walk.
   */
  frameOfEntry(lo: number, hi: number): Uint32Array {
    const chunk = this.dir[((hi & 0xfffff) << 8) | (lo >>> 24)];
    if (chunk !== undefined) {
      const f = chunk[(lo >>> 12) & CHUNK_MASK];
      if (f !== undefined) return f;
    }
    return this.frameMiss((hi & 0xfffff) * 0x10_0000 + (lo >>> 12));
  }

  private frameMiss(pfn: number): Uint32Array {
    if (this.source === undefined || pfn >= this.frameCount || pfn < 0) return ZERO_FRAME;
    const f = new Uint32Array(WORDS_PER_FRAME);
    const chunk = this.chunkFor(pfn);
    if (this.source.load(pfn, f)) {
      chunk[pfn & CHUNK_MASK] = f;
      this.allocated++;
      return f;
    }
    chunk[pfn & CHUNK_MASK] = ZERO_FRAME; // remember the hole; frameForWrite replaces it
    return ZERO_FRAME;
  }

  private chunkFor(pfn: number): Chunk {
    const ci = (pfn / CHUNK_FRAMES) | 0;
    let chunk = this.dir[ci];
    if (chunk === undefined) {
      chunk = new Array(CHUNK_FRAMES);
      this.dir[ci] = chunk;
    }
    return chunk;
  }

  /** The contents of frame `pfn`, allocated (and loaded from the source) if needed, for writing. */
  frameForWrite(pfn: number): Uint32Array {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.frameCount) {
      throw new RangeError(
        `frame 0x${pfn.toString(16)} is outside physical memory (${this.frameCount} frames)`,
      );
    }
    if (this.written !== null && this.written[pfn] === 0) this.noteWrite(pfn);
    let f = this.frame(pfn);
    if (f === ZERO_FRAME) {
      f = this.newFrame();
      this.chunkFor(pfn)[pfn & CHUNK_MASK] = f;
      this.allocated++;
    }
    return f;
  }

  /**
   * Storage for one frame: a zeroed frame given back by `zeroFrame`, or the next 4 KiB of a
   * slab. Frames come from 256 KiB slabs rather than one buffer each: a buffer per frame makes
   * the JavaScript engine account (and collect garbage) for every 4 KiB separately, which cost
   * a third of a 64 GiB guest's boot.
   */
  private newFrame(): Uint32Array {
    const reused = this.spare.pop();
    if (reused !== undefined) return reused;
    if (this.slabUsed === this.slabFrames) {
      this.slab = new ArrayBuffer(this.slabFrames * PAGE_SIZE);
      this.slabUsed = 0;
    }
    return new Uint32Array(this.slab, this.slabUsed++ * PAGE_SIZE, WORDS_PER_FRAME);
  }

  private slab = new ArrayBuffer(0);
  /**
   * Frames per slab: 64 (256 KiB), fewer for a small memory (at least 8: 32 KiB), so that the
   * many small hosts of a fuzz run take their slabs from the C heap rather than from fresh
   * mappings — which threads of one process would fault in one at a time.
   */
  private readonly slabFrames: number;
  private slabUsed: number;
  /** Zeroed frames to reuse. */
  private readonly spare: Uint32Array[] = [];

  /** Is physical address `paddr` backed by RAM? */
  isBacked(paddr: number): boolean {
    return paddr >= 0 && paddr < this.sizeBytes;
  }

  // ---- write tracking (what the hypervisor's log-dirty mode observes) ----

  /** One byte per frame while tracking: written since the last `takeWritten`. */
  private written: Uint8Array | null = null;
  private writtenList: number[] = [];
  /** The list `takeWritten` returned last time, reused as the next log. */
  private spareList: number[] = [];

  /**
   * Start or stop noting which frames are written (every `frameForWrite`, so every store by a
   * CPU, a page walk's A/D update, or the hypervisor; and every `zeroFrame`). Costs one byte per
   * frame while on.
   */
  trackWrites(on: boolean): void {
    this.written = on ? (this.written ?? new Uint8Array(this.frameCount)) : null;
    this.writtenList = [];
  }

  get tracking(): boolean {
    return this.written !== null;
  }

  private noteWrite(pfn: number): void {
    this.written![pfn] = 1;
    this.writtenList.push(pfn);
  }

  /**
   * The frames written since the last call (each once, in first-write order); resets the log.
   * Two arrays take turns (a call per step must not allocate), so the one returned is valid
   * until the next call but one: read it before then.
   */
  takeWritten(): readonly number[] {
    const w = this.written;
    const list = this.writtenList;
    if (w === null) return NONE_WRITTEN;
    for (let i = 0; i < list.length; i++) w[list[i]] = 0;
    this.writtenList = this.spareList;
    this.writtenList.length = 0;
    this.spareList = list;
    return list;
  }

  /** Forget a frame's contents (it reads as zeros again). */
  zeroFrame(pfn: number): void {
    if (this.written !== null && pfn >= 0 && pfn < this.frameCount && this.written[pfn] === 0) {
      this.noteWrite(pfn);
    }
    const chunk = this.dir[(pfn / CHUNK_FRAMES) | 0];
    const f = chunk?.[pfn & CHUNK_MASK];
    if (f !== undefined && f !== ZERO_FRAME) {
      chunk![pfn & CHUNK_MASK] = this.source === undefined ? undefined : ZERO_FRAME;
      this.allocated--;
      f.fill(0);
      this.spare.push(f);
    }
  }

  /**
   * Frames holding non-zero contents in memory, ascending (walks the directory:
   * for tools that save memory, not for hot paths).
   */
  *residentFrames(): Generator<number> {
    for (let ci = 0; ci < this.dir.length; ci++) {
      const chunk = this.dir[ci];
      if (chunk === undefined) continue;
      for (let i = 0; i < CHUNK_FRAMES; i++) {
        const f = chunk[i];
        if (f !== undefined && f !== ZERO_FRAME) yield ci * CHUNK_FRAMES + i;
      }
    }
  }

  // ---- word and byte access (API edge; the walkers use frame() directly) ----

  read32(paddr: number): number {
    checkAligned(paddr, 4);
    return this.frame(Math.floor(paddr / PAGE_SIZE))[(paddr % PAGE_SIZE) >>> 2];
  }

  write32(paddr: number, value: number): void {
    checkAligned(paddr, 4);
    this.frameForWrite(Math.floor(paddr / PAGE_SIZE))[(paddr % PAGE_SIZE) >>> 2] = value;
  }

  read64(paddr: number): bigint {
    checkAligned(paddr, 8);
    const f = this.frame(Math.floor(paddr / PAGE_SIZE));
    const w = (paddr % PAGE_SIZE) >>> 2;
    return (BigInt(f[w + 1]) << 32n) | BigInt(f[w]);
  }

  write64(paddr: number, value: bigint): void {
    checkAligned(paddr, 8);
    const v = BigInt.asUintN(64, value);
    const f = this.frameForWrite(Math.floor(paddr / PAGE_SIZE));
    const w = (paddr % PAGE_SIZE) >>> 2;
    f[w] = Number(v & 0xffffffffn);
    f[w + 1] = Number(v >> 32n);
  }

  /** Read `length` bytes starting at `paddr` (may cross frames). */
  readBytes(paddr: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const a = paddr + done;
      const off = a % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, length - done);
      const f = this.frame(Math.floor(a / PAGE_SIZE));
      out.set(new Uint8Array(f.buffer, f.byteOffset + off, n), done);
      done += n;
    }
    return out;
  }

  /** Write bytes starting at `paddr` (may cross frames). */
  writeBytes(paddr: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      const a = paddr + done;
      const off = a % PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, data.length - done);
      const f = this.frameForWrite(Math.floor(a / PAGE_SIZE));
      new Uint8Array(f.buffer, f.byteOffset + off, n).set(data.subarray(done, done + n));
      done += n;
    }
  }
}

function checkAligned(paddr: number, n: number): void {
  if (!Number.isInteger(paddr) || paddr < 0 || paddr % n !== 0) {
    throw new RangeError(`physical address 0x${paddr.toString(16)} is not a ${n}-byte aligned address`);
  }
}
