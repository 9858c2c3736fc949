/**
 * Physical memory dump images, read lazily frame by frame:
 *  - raw: physical memory from address 0, byte for byte (QEMU `pmemsave 0 SIZE FILE`);
 *  - ELF core: QEMU `dump-guest-memory FILE` without `-p` — each PT_LOAD
 *    segment holds physical range [p_paddr, p_paddr + p_memsz), the first
 *    p_filesz bytes of it at file offset p_offset (the rest reads as zeros).
 * Addresses no segment covers, or beyond a raw image's end, read as zeros.
 */

import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import type { FrameSource } from "../x86/memory.js";
import { MAX_MEMORY_BYTES, PhysicalMemory } from "../x86/memory.js";
import { PAGE_SIZE } from "../x86/pte.js";

export type ImageFormat = "raw" | "elf";

/** A physical range backed by the file. */
export interface ImageSegment {
  paddr: number;
  memsz: number;
  offset: number;
  filesz: number;
}

export class ImageError extends Error {}

export class MemoryImage implements FrameSource {
  readonly sizeBytes: number;
  private readonly starts: number[];

  private constructor(
    readonly path: string,
    readonly format: ImageFormat,
    private fd: number,
    readonly segments: ImageSegment[],
  ) {
    this.segments.sort((a, b) => a.paddr - b.paddr);
    this.starts = this.segments.map((s) => s.paddr);
    const end = this.segments.reduce((m, s) => Math.max(m, s.paddr + s.memsz), 0);
    this.sizeBytes = Math.ceil(end / PAGE_SIZE) * PAGE_SIZE;
  }

  /** Open an image; `format` "auto" detects ELF by its magic number. */
  static open(path: string, format: ImageFormat | "auto" = "auto"): MemoryImage {
    let fd: number;
    try {
      fd = openSync(path, "r");
    } catch (e) {
      throw new ImageError(`cannot open image '${path}': ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new ImageError(`image '${path}' is not a regular file`);
      if (st.size === 0) throw new ImageError(`image '${path}' is empty`);
      const head = Buffer.alloc(Math.min(64, st.size));
      readSync(fd, head, 0, head.length, 0);
      const isElf = head.length >= 4 && head.readUInt32BE(0) === 0x7f454c46;
      const fmt = format === "auto" ? (isElf ? "elf" : "raw") : format;
      if (fmt === "elf") {
        if (!isElf) throw new ImageError(`image '${path}' is not an ELF file (no \\x7fELF magic)`);
        return new MemoryImage(path, "elf", fd, parseElfSegments(fd, st.size, path));
      }
      if (st.size > MAX_MEMORY_BYTES)
        throw new ImageError(`image '${path}' is larger than ${MAX_MEMORY_BYTES} bytes`);
      return new MemoryImage(path, "raw", fd, [{ paddr: 0, memsz: st.size, offset: 0, filesz: st.size }]);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Physical memory backed by this image (frames read on first use). */
  memory(maxPhysAddrBits = 52): PhysicalMemory {
    return new PhysicalMemory({ source: this, sizeBytes: this.sizeBytes, maxPhysAddrBits });
  }

  /** Is `paddr` inside some segment of the image? */
  covers(paddr: number): boolean {
    const i = this.segmentIndex(paddr);
    return i >= 0 && paddr < this.segments[i].paddr + this.segments[i].memsz;
  }

  /** Index of the last segment starting at or before `paddr`, or -1. */
  private segmentIndex(paddr: number): number {
    let lo = 0;
    let hi = this.starts.length - 1;
    let ans = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (this.starts[mid] <= paddr) {
        ans = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return ans;
  }

  load(pfn: number, dest: Uint32Array): boolean {
    const start = pfn * PAGE_SIZE;
    const end = start + PAGE_SIZE;
    const bytes = new Uint8Array(dest.buffer, dest.byteOffset, PAGE_SIZE);
    let any = false;
    let i = Math.max(0, this.segmentIndex(start));
    for (; i < this.segments.length && this.segments[i].paddr < end; i++) {
      const s = this.segments[i];
      const from = Math.max(start, s.paddr);
      const to = Math.min(end, s.paddr + s.filesz);
      if (to <= from) continue;
      const n = readSync(this.fd, bytes, from - start, to - from, s.offset + (from - s.paddr));
      if (n > 0) any = true;
    }
    return any;
  }

  close(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
  }
}

function parseElfSegments(fd: number, fileSize: number, path: string): ImageSegment[] {
  const bad = (why: string) => new ImageError(`image '${path}' is not a usable ELF core: ${why}`);
  const read = (pos: number, len: number): Buffer => {
    if (pos + len > fileSize) throw bad(`truncated (needs bytes ${pos}..${pos + len}, file has ${fileSize})`);
    const b = Buffer.alloc(len);
    readSync(fd, b, 0, len, pos);
    return b;
  };
  const ident = read(0, 16);
  const cls = ident[4];
  if (cls !== 1 && cls !== 2) throw bad(`unknown ELF class ${cls}`);
  if (ident[5] !== 1) throw bad("not little-endian (EI_DATA must be ELFDATA2LSB)");
  const is64 = cls === 2;
  const eh = read(0, is64 ? 64 : 52);
  const type = eh.readUInt16LE(16);
  if (type !== 4) throw bad(`e_type is ${type}, not ET_CORE (4)`);
  const phoff = is64 ? Number(eh.readBigUInt64LE(32)) : eh.readUInt32LE(28);
  const shoff = is64 ? Number(eh.readBigUInt64LE(40)) : eh.readUInt32LE(32);
  const phentsize = eh.readUInt16LE(is64 ? 54 : 42);
  let phnum = eh.readUInt16LE(is64 ? 56 : 44);
  const wantPh = is64 ? 56 : 32;
  if (phentsize !== wantPh) throw bad(`e_phentsize is ${phentsize}, expected ${wantPh}`);
  if (phnum === 0xffff) {
    // PN_XNUM: the real count is sh_info of section header 0 (QEMU uses this for many segments).
    if (shoff === 0) throw bad("e_phnum is PN_XNUM but there is no section header");
    const sh = read(shoff, is64 ? 64 : 40);
    phnum = sh.readUInt32LE(is64 ? 44 : 28);
  }
  if (phnum === 0) throw bad("no program headers");
  const ph = read(phoff, phnum * phentsize);
  const segs: ImageSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const o = i * phentsize;
    const ptype = ph.readUInt32LE(o);
    if (ptype !== 1) continue; // PT_LOAD only
    const num = (off64: number, off32: number) =>
      is64 ? Number(ph.readBigUInt64LE(o + off64)) : ph.readUInt32LE(o + off32);
    const seg: ImageSegment = {
      offset: num(8, 4),
      paddr: num(24, 12),
      filesz: num(32, 16),
      memsz: num(40, 20),
    };
    if (seg.filesz > seg.memsz)
      throw bad(`segment ${i}: p_filesz ${seg.filesz} exceeds p_memsz ${seg.memsz}`);
    if (seg.offset + seg.filesz > fileSize) {
      throw bad(`segment ${i} (paddr 0x${seg.paddr.toString(16)}) extends past the end of the file`);
    }
    if (seg.paddr + seg.memsz > MAX_MEMORY_BYTES) {
      throw bad(`segment ${i} ends above ${MAX_MEMORY_BYTES} bytes of physical address space`);
    }
    if (seg.memsz > 0) segs.push(seg);
  }
  if (segs.length === 0) throw bad("no PT_LOAD segments");
  segs.sort((a, b) => a.paddr - b.paddr);
  for (let i = 1; i < segs.length; i++) {
    if (segs[i].paddr < segs[i - 1].paddr + segs[i - 1].memsz) {
      throw bad(`PT_LOAD segments overlap at physical address 0x${segs[i].paddr.toString(16)}`);
    }
  }
  return segs;
}
