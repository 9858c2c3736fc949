/**
 * Slabs made ahead of use: `PhysicalMemory.supplySlabs` and the `SlabPrefaulter` thread that
 * feeds it. Which buffer a slab is changes no frame's contents.
 */

import { describe, expect, it } from "vitest";
import { PhysicalMemory } from "../../src/x86/memory.js";
import { SlabPrefaulter } from "../../src/x86/prefault.js";

const MiB = 2 ** 20;

describe("PhysicalMemory.supplySlabs", () => {
  it("takes zero-filled buffers of a slab's size and builds its next slabs on them", () => {
    const mem = new PhysicalMemory({ sizeBytes: 64 * MiB });
    const bytes = mem.slabByteLength;
    expect(bytes).toBe((4096 << mem.slabShift) >>> 0);
    const given = [new ArrayBuffer(bytes), new ArrayBuffer(bytes)];
    mem.supplySlabs(given);
    expect(mem.slabsReserved).toBe(2);
    // The first slab exists (slot 0 is the zero frame's); writing its frames uses no supplied buffer.
    const perSlab = 1 << mem.slabShift;
    for (let pfn = 0; pfn < perSlab - 1; pfn++) mem.frameForWrite(pfn)[0] = pfn + 1;
    expect(mem.slabsReserved).toBe(2);
    mem.frameForWrite(1000)[3] = 0xabcd; // the first frame of a new slab: a supplied buffer
    expect(mem.slabsReserved).toBe(1);
    const used = given.find((b) => new Uint32Array(b)[3] === 0xabcd);
    expect(used).toBeDefined();
    expect(mem.read64(1000 * 4096 + 8)).toBe(0xabcdn << 32n);
    expect(mem.frame(0)[0]).toBe(1);
    mem.releaseSlabReserve();
    expect(mem.slabsReserved).toBe(0);
    mem.frameForWrite(2000 + perSlab * 4)[0] = 5; // made by the memory itself again
    expect(mem.frame(2000 + perSlab * 4)[0]).toBe(5);
  });

  it("refuses a buffer of another size, taking none of the batch", () => {
    const mem = new PhysicalMemory({ sizeBytes: 64 * MiB });
    const ok = new ArrayBuffer(mem.slabByteLength);
    expect(() => mem.supplySlabs([ok, new ArrayBuffer(4096)])).toThrow(/ArrayBuffer of \d+ bytes/);
    expect(() =>
      mem.supplySlabs([new SharedArrayBuffer(mem.slabByteLength) as unknown as ArrayBuffer]),
    ).toThrow(RangeError);
    expect(mem.slabsReserved).toBe(0);
  });
});

describe("SlabPrefaulter", () => {
  it("supplies the slabs asked for, zero-filled, from a worker thread, and drops the unused ones when stopped", async () => {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 36 });
    const pf = new SlabPrefaulter(mem, 40);
    for (let waited = 0; mem.slabsReserved < 40 && waited < 20_000; waited += 10) {
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(mem.slabsReserved).toBe(40);
    expect(pf.supplied).toBe(40);
    // Frames built on them read as written, the rest of each frame as zeros. (Slots are handed
    // out in order: 3 slabs' worth of frames fill the first slab and take three supplied ones.)
    const perSlab = 1 << mem.slabShift;
    const n = perSlab * 3;
    for (let pfn = 0; pfn < n; pfn++) mem.frameForWrite(pfn * 5)[1] = pfn + 7;
    expect(mem.slabsReserved).toBe(37);
    for (let pfn = 0; pfn < n; pfn++) {
      const f = mem.frame(pfn * 5);
      if (f[1] !== pfn + 7 || f[0] !== 0 || f[1023] !== 0) throw new Error(`frame ${pfn * 5} reads wrong`);
    }
    pf.poll(); // nothing more to ask for
    pf.stop();
    expect(mem.slabsReserved).toBe(0);
    expect(() => new SlabPrefaulter(mem, -1)).toThrow(/whole number/);
  });

  it("shares the slabs out among several threads, two batches each ahead, never more than asked for", async () => {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 36 });
    const perBatch = (64 * 2 ** 20) / mem.slabByteLength;
    const wanted = perBatch * 5 + 3; // more than the four batches two threads keep ahead
    const pf = new SlabPrefaulter(mem, wanted, 2);
    expect(pf.threads).toBe(2);
    const sleep = () => new Promise((r) => setTimeout(r, 10));
    for (let waited = 0; mem.slabsReserved < 4 * perBatch && waited < 20_000; waited += 10) await sleep();
    await new Promise((r) => setTimeout(r, 100));
    expect(mem.slabsReserved).toBe(4 * perBatch); // and no more until slabs are used
    // Use slabs (never the last one waiting, so that the memory makes none of its own) until all came.
    const perSlab = 1 << mem.slabShift;
    let pfn = 0;
    for (let waited = 0; pf.supplied < wanted && waited < 20_000; waited += 10) {
      for (const end = pfn + Math.max(0, mem.slabsReserved - 1) * perSlab; pfn < end; pfn++) {
        mem.frameForWrite(pfn)[0] = pfn;
      }
      pf.poll();
      await sleep();
    }
    expect(pf.supplied).toBe(wanted);
    expect(mem.slabs.length - 1 + mem.slabsReserved).toBe(wanted); // every slab but the first
    for (let p = 0; p < pfn; p += 997) expect(mem.frame(p)[0]).toBe(p);
    pf.stop();
    expect(mem.slabsReserved).toBe(0);
    expect(() => new SlabPrefaulter(mem, 1, 0)).toThrow(/threads must be/);
  });
});
