/**
 * Synthetic memory images with the page tables of a real x86-64 Linux kernel
 * and one user process (layout from Documentation/arch/x86/x86_64/mm.rst),
 * for people who want to try `pvmmu dump` without a dump at hand, for the
 * tour, and for the `dump_tlb_s` benchmark. Page tables are allocated
 * top-down from the end of RAM, as in the 2012 top-down design (seed 004).
 *
 * Writing images: raw (sparse file, like `pmemsave`) or an ELF core with
 * PT_LOAD segments (like `dump-guest-memory`).
 */

import { closeSync, ftruncateSync, openSync, writeSync } from "node:fs";
import type { PagingLevels } from "../x86/address.js";
import { BumpAllocator, PageTableBuilder } from "../x86/builder.js";
import { PhysicalMemory } from "../x86/memory.js";
import { HI_NX, LO_A, LO_D, LO_G, LO_RW, LO_US, PAGE_SIZE } from "../x86/pte.js";

export interface SynthOptions {
  /** RAM size in bytes (multiple of 2 MiB, at least 64 MiB). */
  ramBytes: number;
  levels?: PagingLevels;
  /** Page size of the direct map of all RAM: 2 MiB (default) or 1 GiB. */
  directMapPage?: number;
  /** MiB of user memory mapped with 4 KiB pages (default 64). */
  userMiB?: number;
  /** MiB of vmalloc space mapped with 4 KiB pages (default 32). */
  vmallocMiB?: number;
}

export interface SynthImage {
  mem: PhysicalMemory;
  /** Physical address of the top-level table (CR3 value). */
  cr3: number;
  levels: PagingLevels;
  /** Frames used by page tables. */
  tableFrames: number;
}

const KB = 1024;
const MB = 1024 * KB;

// Leaf flags as [lo, hi].
const K_RX = [LO_A | LO_G, 0]; // kernel text
const K_RO = [LO_A | LO_G, HI_NX]; // kernel rodata
const K_RW = [LO_RW | LO_A | LO_D | LO_G, HI_NX]; // kernel data, direct map
const U_RX = [LO_US | LO_A, 0];
const U_RO = [LO_US | LO_A, HI_NX];
const U_RW = [LO_US | LO_RW | LO_A | LO_D, HI_NX];

export function synthLinuxImage(opts: SynthOptions): SynthImage {
  const levels = opts.levels ?? 4;
  const ram = opts.ramBytes;
  if (!Number.isInteger(ram) || ram < 64 * MB || ram % (2 * MB) !== 0) {
    throw new RangeError("RAM size must be a multiple of 2 MiB and at least 64 MiB");
  }
  const mem = new PhysicalMemory({ sizeBytes: ram });
  const frames = ram / PAGE_SIZE;
  // Page tables come from the top of RAM, downwards.
  const alloc = new BumpAllocator(frames - 1, frames - 1 - Math.min(frames / 4, 1 << 18), true);
  const b = new PageTableBuilder(mem, alloc, levels);
  const la57 = levels === 5;
  const directMap = la57 ? 0xff11000000000000n : 0xffff888000000000n;
  const vmalloc = la57 ? 0xffa0000000000000n : 0xffffc90000000000n;
  const vmemmap = la57 ? 0xffd4000000000000n : 0xffffea0000000000n;

  // A deterministic scatter of data frames in the low three quarters of RAM.
  let seed = 0x2545f491;
  const dataFrame = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return (seed % Math.floor((frames * 3) / 4)) * PAGE_SIZE;
  };
  const map4k = (va: bigint, bytes: number, f: number[], stride = 0, hole = 0): void => {
    for (let off = 0; off < bytes; off += PAGE_SIZE) {
      if (stride && (off / PAGE_SIZE) % stride >= stride - hole) continue; // guard pages
      b.map(va + BigInt(off), dataFrame(), PAGE_SIZE, { lo: f[0], hi: f[1] });
    }
  };

  // User process: text, heap, shared libraries, stack, vsyscall-free.
  const userBytes = (opts.userMiB ?? 64) * MB;
  map4k(0x400000n, 2 * MB, U_RX);
  map4k(0x600000n, 512 * KB, U_RO);
  map4k(0x1000000n, Math.floor(userBytes / 2 / PAGE_SIZE) * PAGE_SIZE, U_RW);
  for (let lib = 0; lib < 8; lib++) {
    const base = 0x7f0000000000n + BigInt(lib) * 0x1000000n;
    const lb = Math.max(PAGE_SIZE, Math.floor(userBytes / 32 / PAGE_SIZE) * PAGE_SIZE);
    map4k(base, lb, U_RX);
    map4k(base + 0x800000n, lb / 2, U_RO);
    map4k(base + 0xc00000n, lb / 2, U_RW);
  }
  map4k(0x7ffffffde000n, 132 * KB, U_RW);

  // Direct map of all RAM; the first 2 MiB with 4 KiB pages as Linux does.
  const dm = opts.directMapPage ?? 2 * MB;
  b.mapRange(directMap, 0, 2 * MB, PAGE_SIZE, { lo: K_RW[0], hi: K_RW[1] });
  if (dm === 1024 * MB) {
    const gb = Math.floor(ram / dm) * dm;
    // 2 MiB pages up to the first 1 GiB boundary, then 1 GiB pages, then 2 MiB for the tail.
    b.mapRange(directMap + BigInt(2 * MB), 2 * MB, Math.min(gb, 1024 * MB) - 2 * MB, 2 * MB, {
      lo: K_RW[0],
      hi: K_RW[1],
    });
    if (gb > 1024 * MB)
      b.mapRange(directMap + BigInt(1024 * MB), 1024 * MB, gb - 1024 * MB, dm, { lo: K_RW[0], hi: K_RW[1] });
    if (ram > gb) b.mapRange(directMap + BigInt(gb), gb, ram - gb, 2 * MB, { lo: K_RW[0], hi: K_RW[1] });
  } else {
    b.mapRange(directMap + BigInt(2 * MB), 2 * MB, ram - 2 * MB, 2 * MB, { lo: K_RW[0], hi: K_RW[1] });
  }

  // vmemmap: 64 bytes of struct page per frame, 2 MiB pages.
  const vmemBytes = Math.ceil((frames * 64) / (2 * MB)) * 2 * MB;
  for (let off = 0; off < vmemBytes; off += 2 * MB) {
    b.map(vmemmap + BigInt(off), Math.floor(dataFrame() / (2 * MB)) * 2 * MB, 2 * MB, {
      lo: K_RW[0],
      hi: K_RW[1],
    });
  }

  // vmalloc: kernel stacks of 4 pages with a guard page between them.
  map4k(vmalloc, (opts.vmallocMiB ?? 32) * MB, K_RW, 5, 1);

  // Kernel image at ffffffff81000000: text (2 MiB pages), rodata, data+bss.
  const ktext = 0xffffffff81000000n;
  b.mapRange(ktext, 16 * MB, 16 * MB, 2 * MB, { lo: K_RX[0], hi: K_RX[1] });
  b.mapRange(ktext + BigInt(16 * MB), 32 * MB, 8 * MB, 2 * MB, { lo: K_RO[0], hi: K_RO[1] });
  b.mapRange(ktext + BigInt(24 * MB), 40 * MB, 8 * MB, 2 * MB, { lo: K_RW[0], hi: K_RW[1] });
  // Modules at ffffffffc0000000.
  map4k(0xffffffffc0000000n, 4 * MB, K_RX);
  map4k(0xffffffffc0400000n, 4 * MB, K_RW);
  // Fixmap and the legacy vsyscall page (user, read-only, executable in emulate mode).
  map4k(0xffffffffff5fa000n, 6 * PAGE_SIZE, K_RW);
  b.map(0xffffffffff600000n, 0x1e0b000, PAGE_SIZE, { lo: LO_US | LO_A, hi: 0 });

  return { mem, cr3: b.root * PAGE_SIZE, levels, tableFrames: b.tables.length };
}

/** Write `mem` as a raw image (sparse: only resident frames are written). */
export function writeRawImage(mem: PhysicalMemory, path: string): void {
  const fd = openSync(path, "w");
  try {
    ftruncateSync(fd, mem.sizeBytes);
    for (const pfn of mem.residentFrames()) {
      const f = mem.frame(pfn);
      writeSync(fd, new Uint8Array(f.buffer, f.byteOffset, PAGE_SIZE), 0, PAGE_SIZE, pfn * PAGE_SIZE);
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Write `mem` as an ELF64 core (ET_CORE, EM_X86_64) whose PT_LOAD segments
 * cover the given physical ranges (default: all of RAM as one segment),
 * p_paddr = guest physical address, as QEMU's `dump-guest-memory` does.
 */
export function writeElfImage(
  mem: PhysicalMemory,
  path: string,
  ranges?: { start: number; size: number }[],
): void {
  const segs = ranges ?? [{ start: 0, size: mem.sizeBytes }];
  const ehsize = 64;
  const phentsize = 56;
  const headerEnd = ehsize + phentsize * segs.length;
  const dataStart = Math.ceil(headerEnd / PAGE_SIZE) * PAGE_SIZE;
  const hdr = Buffer.alloc(headerEnd);
  hdr.writeUInt32BE(0x7f454c46, 0);
  hdr[4] = 2; // ELFCLASS64
  hdr[5] = 1; // ELFDATA2LSB
  hdr[6] = 1; // EV_CURRENT
  hdr.writeUInt16LE(4, 16); // ET_CORE
  hdr.writeUInt16LE(62, 18); // EM_X86_64
  hdr.writeUInt32LE(1, 20);
  hdr.writeBigUInt64LE(BigInt(ehsize), 32); // e_phoff
  hdr.writeUInt16LE(ehsize, 52);
  hdr.writeUInt16LE(phentsize, 54);
  hdr.writeUInt16LE(segs.length, 56);
  let off = dataStart;
  segs.forEach((s, i) => {
    const o = ehsize + i * phentsize;
    hdr.writeUInt32LE(1, o); // PT_LOAD
    hdr.writeUInt32LE(7, o + 4); // RWX
    hdr.writeBigUInt64LE(BigInt(off), o + 8);
    hdr.writeBigUInt64LE(0n, o + 16); // p_vaddr
    hdr.writeBigUInt64LE(BigInt(s.start), o + 24); // p_paddr
    hdr.writeBigUInt64LE(BigInt(s.size), o + 32);
    hdr.writeBigUInt64LE(BigInt(s.size), o + 40);
    hdr.writeBigUInt64LE(0n, o + 48);
    off += s.size;
  });
  const fd = openSync(path, "w");
  try {
    ftruncateSync(fd, off);
    writeSync(fd, hdr, 0, hdr.length, 0);
    let base = dataStart;
    for (const s of segs) {
      for (const pfn of mem.residentFrames()) {
        const pa = pfn * PAGE_SIZE;
        if (pa < s.start || pa >= s.start + s.size) continue;
        const f = mem.frame(pfn);
        const n = Math.min(PAGE_SIZE, s.start + s.size - pa);
        writeSync(fd, new Uint8Array(f.buffer, f.byteOffset, n), 0, n, base + (pa - s.start));
      }
      base += s.size;
    }
  } finally {
    closeSync(fd);
  }
}
