import { describe, expect, it } from "vitest";
import { BumpAllocator, PageTableBuilder } from "../../src/x86/builder.js";
import { PhysicalMemory, ZERO_FRAME } from "../../src/x86/memory.js";

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
});
