import { describe, expect, it } from "vitest";
import { BumpAllocator, PageTableBuilder } from "../../src/x86/builder.js";
import { Cpu } from "../../src/x86/cpu.js";
import { type FrameSource, PhysicalMemory, ZERO_FRAME } from "../../src/x86/memory.js";
import { LO_A, LO_D, LO_RW, LO_US } from "../../src/x86/pte.js";
import { ACC_WRITE } from "../../src/x86/walk.js";

describe("physical memory", () => {
  it("reads zeros where nothing was written, and allocates frames only on write", () => {
    const mem = new PhysicalMemory({ sizeBytes: 512 * 2 ** 30 });
    expect(mem.read64(0x1234_5678_0000)).toBe(0n);
    expect(mem.frame(12345)).toBe(ZERO_FRAME);
    expect(mem.framesTouched).toBe(0);
    mem.write64(0x7f_ffff_fff8, 0x1122334455667788n);
    expect(mem.framesTouched).toBe(1);
    expect(mem.read64(0x7f_ffff_fff8)).toBe(0x1122334455667788n);
  });

  it("is little-endian", () => {
    const mem = new PhysicalMemory();
    mem.write64(0x1000, 0x0102030405060708n);
    expect(Array.from(mem.readBytes(0x1000, 8))).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(mem.read32(0x1004)).toBe(0x01020304);
  });

  it("reads and writes bytes across frame boundaries", () => {
    const mem = new PhysicalMemory();
    mem.writeBytes(0x1ffe, new Uint8Array([1, 2, 3, 4]));
    expect(Array.from(mem.readBytes(0x1ffc, 8))).toEqual([0, 0, 1, 2, 3, 4, 0, 0]);
  });

  it("refuses writes outside RAM and reads them as zeros", () => {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 20 });
    expect(() => mem.write64(2 ** 20, 1n)).toThrow(/outside physical memory/);
    expect(mem.read64(2 ** 20)).toBe(0n);
    expect(() => mem.read64(3)).toThrow(/aligned/);
  });

  it("validates MAXPHYADDR and size", () => {
    expect(() => new PhysicalMemory({ maxPhysAddrBits: 30 })).toThrow(/MAXPHYADDR/);
    expect(() => new PhysicalMemory({ sizeBytes: 2 ** 41, maxPhysAddrBits: 40 })).toThrow(/memory size/);
  });

  it("a 256 GiB host costs only the frames touched", () => {
    const mem = new PhysicalMemory({ sizeBytes: 256 * 2 ** 30 });
    const b = new PageTableBuilder(mem, new BumpAllocator(2 ** 26 - 100));
    b.map(0xffff_8000_0000_0000n, 255 * 2 ** 30, 2 ** 30, { lo: 2, hi: 0 });
    expect(mem.framesTouched).toBe(2);
    expect([...mem.residentFrames()]).toEqual([2 ** 26 - 100, 2 ** 26 - 99]);
  });

  it("gives a zeroed frame's storage to the next frame written, and reads the old one as zeros", () => {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 24 });
    mem.write32(0x5000, 7);
    const storage = mem.frame(5);
    mem.zeroFrame(5);
    expect(mem.frame(5)).toBe(ZERO_FRAME);
    expect(mem.framesTouched).toBe(0);
    mem.write32(0x9004, 9);
    expect(mem.frame(9)).toBe(storage); // the same 4 KiB, zeroed before reuse
    expect([...mem.frame(9).subarray(0, 2)]).toEqual([0, 9]);
    expect([...mem.residentFrames()]).toEqual([9]);
  });

  it("loads a frame from its source once, and keeps a hole a hole", () => {
    const loads: number[] = [];
    const source: FrameSource = {
      sizeBytes: 2 ** 24,
      load(pfn, dest) {
        loads.push(pfn);
        if (pfn === 3) return false; // a hole: all zeros
        dest[0] = pfn;
        return true;
      },
    };
    const mem = new PhysicalMemory({ source });
    expect(mem.read32(0x2000)).toBe(2);
    expect(mem.read32(0x2000)).toBe(2);
    expect(mem.read32(0x3000)).toBe(0);
    expect(mem.frame(3)).toBe(ZERO_FRAME);
    expect(loads).toEqual([2, 3]);
    mem.write32(0x2004, 5); // written after loading: the loaded contents stay
    expect([...mem.frame(2).subarray(0, 2)]).toEqual([2, 5]);
    mem.zeroFrame(2); // forgotten: zeros, not the source's contents again
    expect(mem.read32(0x2000)).toBe(0);
    expect(loads).toEqual([2, 3]);
    expect(mem.read32(2 ** 24)).toBe(0); // beyond the source: unbacked
    mem.writeFrame(4, new Uint8Array(4096).fill(9)); // written whole: never loaded
    expect(mem.read32(0x4000)).toBe(0x09090909);
    expect(loads).toEqual([2, 3]);
  });

  it("a walk writes accessed and dirty flags only where they are not yet set, as the processor does", () => {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 30 });
    const b = new PageTableBuilder(mem, new BumpAllocator(0x100));
    b.map(0x40_0000n, 0x20_0000, 4096, { lo: LO_RW | LO_US, hi: 0 });
    const l1 = b.tableAt(0x40_0000n, 1);
    const cpu = new Cpu(mem);
    cpu.loadRoot(b.root * 4096);
    mem.trackWrites(true);
    expect(cpu.translateVa(0x40_0000n).ok).toBe(true); // sets accessed on all four entries
    expect(mem.takeWritten().length).toBe(4);
    cpu.tlb.flushAll();
    expect(cpu.translateVa(0x40_0000n, ACC_WRITE).ok).toBe(true); // sets only the leaf's dirty flag
    expect(mem.takeWritten()).toEqual([l1]);
    cpu.tlb.flushAll();
    expect(cpu.translateVa(0x40_0000n, ACC_WRITE).ok).toBe(true); // nothing left to set
    expect(mem.takeWritten()).toEqual([]);
    const leaf = mem.frame(l1)[0];
    expect(leaf & (LO_A | LO_D)).toBe(LO_A | LO_D);
  });

  it("writes a whole frame from bytes, as frameForWrite and a copy would", () => {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 24 });
    mem.trackWrites(true);
    const bytes = new Uint8Array(4096).map((_, i) => i & 0xff);
    mem.writeFrame(7, bytes);
    expect(mem.framesTouched).toBe(1);
    expect(mem.takeWritten()).toEqual([7]);
    expect(mem.readBytes(7 * 4096, 4096)).toEqual(bytes);
    mem.writeFrame(7, new Uint8Array(4096).fill(1)); // written again in place
    expect(mem.read32(7 * 4096 + 4092)).toBe(0x01010101);
    expect(mem.framesTouched).toBe(1);
    expect(() => mem.writeFrame(2 ** 12, bytes)).toThrow(/outside physical memory/);
    expect(() => mem.writeFrame(1, new Uint8Array(8))).toThrow(/4096 bytes/);
    expect(mem.framesTouched).toBe(1);
  });
});
