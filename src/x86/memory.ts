/**
 * Physical memory: 4 KiB frames, little-endian, allocated on first write.
 *
 * Every frame has a storage *slot* (`slotOf`, one 32-bit word per frame, indexed by frame
 * number); slot 0 means "never written" and reads as zeros. Slots live in slabs of 8–64
 * frames: slot `s` is the 1024 words from `((s & slabMask) << 10)` in `slabs[s >>> slabShift]`.
 * So a page walk reaches an entry with one typed-array load and one slab load, never touching
 * a per-frame object; `frame()` still hands other callers a view of one frame.
 * The slot table is zero-filled by the allocator and committed by the OS page by page, so a
 * machine of hundreds of GiB costs 4 bytes per frame of address space, paid only for the
 * ranges touched, plus the frames written.
 *
 * A `FrameSource` can back the memory (a memory-dump image): a frame is read
 * from it the first time it is needed, then cached. Addresses at or beyond
 * `size` are unbacked: they read as zeros and cannot be written.
 */

import { PAGE_SIZE } from "./pte.js";

export const WORDS_PER_FRAME = PAGE_SIZE / 4;
/** Frames per chunk of `chunkResident` (for `residentFrames` to skip untouched ranges). */
const CHUNK_SHIFT = 12;
const CHUNK_FRAMES = 1 << CHUNK_SHIFT;

/**
 * Largest memory size accepted: 16 TiB (2^32 frames, a 16 GiB slot table of address space),
 * Xen's own limit for x86-64 hosts without CONFIG_BIGMEM.
 */
export const MAX_MEMORY_BYTES = 2 ** 44;

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

/** log2 of the frames per storage slab: 64 frames (256 KiB) at most. */
const MAX_SLAB_SHIFT = 6;

export class PhysicalMemory {
  readonly sizeBytes: number;
  readonly maxPhysAddrBits: number;
  /** Number of frames of RAM (frames at or above this are unbacked). */
  readonly frameCount: number;
  /**
   * Per frame, its storage slot; 0 = never written (or, with a source, not loaded yet or a
   * hole): reads as zeros. The page walk asks `slot()`; everything else uses `frame()`.
   */
  private readonly slotOf: Uint32Array;
  /** Storage: slot `s` is words `(s & slabMask) << 10` onward of `slabs[s >>> slabShift]`. */
  readonly slabs: Uint32Array[] = [];
  /**
   * log2 of the frames per slab: 64 frames (256 KiB), fewer for a small memory (at least 8:
   * 32 KiB), so that the many small hosts of a fuzz run take their slabs from the C heap
   * rather than from fresh mappings — which threads of one process would fault in one at a time.
   */
  readonly slabShift: number;
  readonly slabMask: number;
  /** Per slot, a view of its frame once `frame()` was asked for it (slot 0: ZERO_FRAME). */
  private readonly views: (Uint32Array | undefined)[] = [ZERO_FRAME];
  /** Per slab, a byte view of it (for `writeFrame`). */
  private readonly slabBytes: Uint8Array[] = [];
  /** Slots handed out so far (slot 0 is reserved: the slab's first frame stays zero). */
  private nextSlot = 1;
  /** Zeroed slots to reuse. */
  private readonly spare: number[] = [];
  /** Zero-filled buffers for the next slabs, already faulted in by another thread (`supplySlabs`). */
  private readonly reserve: ArrayBuffer[] = [];
  /** Resident frames per chunk of 4096 frames. */
  private readonly chunkResident: Uint16Array;
  private readonly source: FrameSource | undefined;
  /** With a source: 1 once frame `pfn` was looked up in it (a slot of 0 is then a hole). */
  private readonly looked: Uint8Array | null;
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
    let shift = 3;
    while (shift < MAX_SLAB_SHIFT && 1 << (shift + 1) <= this.frameCount >>> 9) shift++;
    this.slabShift = shift;
    this.slabMask = (1 << shift) - 1;
    try {
      this.slotOf = new Uint32Array(this.frameCount);
    } catch {
      throw new RangeError(
        `cannot reserve the slot table for ${size} bytes of memory (4 bytes of address space per frame)`,
      );
    }
    this.chunkResident = new Uint16Array(Math.ceil(this.frameCount / CHUNK_FRAMES));
    this.source = opts.source;
    this.looked = opts.source === undefined ? null : new Uint8Array(this.frameCount);
    const slab0 = new Uint32Array((PAGE_SIZE << shift) >>> 2);
    this.slabs.push(slab0);
    this.slabBytes.push(new Uint8Array(slab0.buffer));
  }

  /** Bytes of one storage slab: what `supplySlabs` takes. */
  get slabByteLength(): number {
    return PAGE_SIZE << this.slabShift;
  }

  /**
   * Buffers for the slabs this memory will need next, each `slabByteLength` bytes of zeros —
   * typically made by another thread, which took their page faults (`SlabPrefaulter`). The
   * contents read the same whichever buffer a slab is; only who pays for first touching it
   * changes. A buffer of another size is refused (RangeError) and none is taken.
   */
  supplySlabs(buffers: readonly ArrayBuffer[]): void {
    const want = this.slabByteLength;
    for (const b of buffers) {
      if (!(b instanceof ArrayBuffer) || b.byteLength !== want) {
        throw new RangeError(`a slab buffer must be an ArrayBuffer of ${want} bytes`);
      }
    }
    for (const b of buffers) this.reserve.push(b);
  }

  /** Supplied slab buffers not used yet. */
  get slabsReserved(): number {
    return this.reserve.length;
  }

  /** Drop the supplied slab buffers not used yet. */
  releaseSlabReserve(): void {
    this.reserve.length = 0;
  }

  /** Frames whose contents are held in memory (written, or loaded from the source). */
  get framesTouched(): number {
    return this.allocated;
  }

  /**
   * The contents of frame `pfn`, for reading only: a frame never written is the
   * shared ZERO_FRAME. Hot path: one typed-array load and one array load when resident.
   */
  frame(pfn: number): Uint32Array {
    const s = this.slotOf[pfn];
    if (s > 0) return this.views[s] ?? this.viewOf(s);
    return this.frameMiss(pfn);
  }

  /**
   * Frame `pfn`'s slot, for the page walk: 0 when it reads as zeros (never written, a hole in
   * the source, or beyond memory); with a source, a frame is loaded the first time.
   */
  slot(pfn: number): number {
    const s = pfn < this.frameCount ? this.slotOf[pfn] : 0;
    if (s !== 0 || this.looked === null || !(pfn >= 0 && pfn < this.frameCount)) return s;
    this.frameMiss(pfn);
    return this.slotOf[pfn];
  }

  private frameMiss(pfn: number): Uint32Array {
    const looked = this.looked;
    if (looked === null || !(pfn >= 0 && pfn < this.frameCount) || looked[pfn] !== 0) return ZERO_FRAME;
    looked[pfn] = 1;
    const s = this.newSlot();
    const f = this.viewOf(s);
    if (this.source!.load(pfn, f)) {
      this.place(pfn, s);
      return f;
    }
    f.fill(0);
    this.spare.push(s);
    return ZERO_FRAME;
  }

  private place(pfn: number, s: number): void {
    this.slotOf[pfn] = s;
    this.chunkResident[pfn >>> CHUNK_SHIFT]++;
    this.allocated++;
  }

  /** The contents of frame `pfn`, allocated (and loaded from the source) if needed, for writing. */
  frameForWrite(pfn: number): Uint32Array {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.frameCount) {
      throw new RangeError(
        `frame 0x${pfn.toString(16)} is outside physical memory (${this.frameCount} frames)`,
      );
    }
    if (this.written !== null && this.written[pfn] === 0) this.noteWrite(pfn);
    let s = this.slotOf[pfn];
    if (s === 0) {
      if (this.looked !== null) {
        this.frameMiss(pfn);
        s = this.slotOf[pfn];
      }
      if (s === 0) {
        s = this.newSlot();
        this.place(pfn, s);
      }
    }
    return this.views[s] ?? this.viewOf(s);
  }

  /**
   * Write frame `pfn` whole from `bytes` (4096 of them), allocating it if needed: what
   * `frameForWrite(pfn)` then a copy would do, without making a view of the frame (a restore
   * writes a million frames it never reads back).
   */
  writeFrame(pfn: number, bytes: Uint8Array): void {
    if (bytes.length !== PAGE_SIZE)
      throw new RangeError(`a frame is ${PAGE_SIZE} bytes, not ${bytes.length}`);
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.frameCount) this.frameForWrite(pfn); // throws
    if (this.written !== null && this.written[pfn] === 0) this.noteWrite(pfn);
    let s = this.slotOf[pfn];
    if (s === 0) {
      if (this.looked !== null) this.looked[pfn] = 1; // the contents written replace the source's
      s = this.newSlot();
      this.place(pfn, s);
    }
    this.slabBytes[s >>> this.slabShift].set(bytes, (s & this.slabMask) * PAGE_SIZE);
  }

  private viewOf(s: number): Uint32Array {
    const v = new Uint32Array(
      this.slabs[s >>> this.slabShift].buffer,
      (s & this.slabMask) * PAGE_SIZE,
      WORDS_PER_FRAME,
    );
    this.views[s] = v;
    return v;
  }

  /**
   * A zeroed slot: one given back by `zeroFrame`, or the next 4 KiB of a slab. Frames come
   * from slabs rather than one buffer each: a buffer per frame makes the JavaScript engine
   * account (and collect garbage) for every 4 KiB separately, which cost a third of a 64 GiB
   * guest's boot.
   */
  private newSlot(): number {
    const reused = this.spare.pop();
    if (reused !== undefined) return reused;
    const s = this.nextSlot++;
    const si = s >>> this.slabShift;
    if (si === this.slabs.length) {
      const supplied = this.reserve.pop();
      const slab =
        supplied !== undefined
          ? new Uint32Array(supplied)
          : new Uint32Array((PAGE_SIZE << this.slabShift) >>> 2);
      this.slabs.push(slab);
      this.slabBytes.push(new Uint8Array(slab.buffer));
    }
    this.views.push(undefined); // made when first asked for (`viewOf`)
    return s;
  }

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
    if (!(pfn >= 0 && pfn < this.frameCount)) return;
    if (this.written !== null && this.written[pfn] === 0) this.noteWrite(pfn);
    const s = this.slotOf[pfn];
    if (s !== 0) {
      this.slotOf[pfn] = 0; // with a source, `looked` stays set: the frame is now a hole
      this.chunkResident[pfn >>> CHUNK_SHIFT]--;
      this.allocated--;
      const off = (s & this.slabMask) << 10;
      this.slabs[s >>> this.slabShift].fill(0, off, off + WORDS_PER_FRAME);
      this.spare.push(s);
    }
  }

  /**
   * Frames holding contents in memory, ascending (skips untouched 16 MiB ranges:
   * for tools that save memory, not for hot paths).
   */
  *residentFrames(): Generator<number> {
    const slotOf = this.slotOf;
    for (let ci = 0; ci < this.chunkResident.length; ci++) {
      if (this.chunkResident[ci] === 0) continue;
      const end = Math.min(this.frameCount, (ci + 1) * CHUNK_FRAMES);
      for (let pfn = ci * CHUNK_FRAMES; pfn < end; pfn++) if (slotOf[pfn] !== 0) yield pfn;
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
