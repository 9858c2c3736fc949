import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { STRATEGIES } from "../../src/guest/report.js";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { REC_PVMMU_GUEST_STATE } from "../../src/guest/suspend.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { FileChunks, FileSink } from "../../src/migration/file.js";
import {
  guestMemoryHash,
  MemorySink,
  restoreGuest,
  resumeRestored,
  saveGuest,
} from "../../src/migration/guest.js";
import { restoreStream } from "../../src/migration/restore.js";
import { Host } from "../../src/xen/host.js";

const MiB = 2 ** 20;

function start(o: Partial<RunOptions> = {}) {
  const opts: RunOptions = {
    strategy: "direct-pfn",
    pinning: "linux",
    workload: "fork-exec-exit",
    memoryBytes: 64 * MiB,
    seed: 7,
    iterations: 6,
    mapped: 2 * MiB,
    ...o,
  };
  const { h, kernel } = bootOnHost(opts);
  const run = new WorkloadRun(kernel, opts.workload, {
    seed: opts.seed,
    iterations: opts.iterations,
    mapped: opts.mapped,
  });
  return { h, kernel, run };
}

/** A guest three steps into its workload, saved (not live) into memory. */
async function savedAfterThreeSteps(o: Partial<RunOptions> = {}) {
  const src = start(o);
  for (let i = 0; i < 3; i++) src.run.next();
  const sink = new MemorySink();
  await saveGuest(src.h, src.kernel, src.run, sink, { live: false });
  return { src, sink };
}

describe("save → restore on another host → continue", () => {
  for (const strategy of STRATEGIES.filter((s) => s !== "direct-mfn")) {
    for (const pinning of ["linux", "eager"] as const) {
      it(`${strategy}/${pinning}: the restored guest finishes with the memory of a run that never moved`, async () => {
        const ref = start({ strategy, pinning });
        while (ref.run.next()) {}
        const want = guestMemoryHash(ref.kernel);

        const { src, sink } = await savedAfterThreeSteps({ strategy, pinning });
        const dst = new Host({ memoryMiB: 160 });
        dst.createDomain({ domid: 5, pages: 300 }); // other frames in use: the guest's mfns differ
        const { kernel, run } = await restoreGuest(dst, 9, sink.chunks);
        expect(dst.audit().ok).toBe(true);
        expect(kernel.p2m[100]).not.toBe(src.kernel.p2m[100]);
        while (run!.next()) {}
        expect(dst.audit().problems).toEqual([]);
        expect(guestMemoryHash(kernel)).toBe(want);
      });
    }
  }
});

describe("a saved image", () => {
  it("is the same bytes for the same guest and seed (no wall-clock time in it)", async () => {
    const images: Buffer[] = [];
    for (let i = 0; i < 2; i++) {
      const src = start();
      for (let j = 0; j < 3; j++) src.run.next();
      const sink = new MemorySink();
      await saveGuest(src.h, src.kernel, src.run, sink, { live: false });
      images.push(Buffer.concat(sink.chunks));
    }
    expect(images[0].length).toBeGreaterThan(64 * MiB);
    expect(images[0].equals(images[1])).toBe(true);
  });
});

describe("restoring from a file", () => {
  it("reads the image into one reused buffer, in chunks that split records anywhere", async () => {
    const ref = start();
    while (ref.run.next()) {}
    const { sink } = await savedAfterThreeSteps();
    const dir = mkdtempSync(join(tmpdir(), "pvmmu-file-"));
    try {
      const path = join(dir, "guest.img");
      writeFileSync(path, Buffer.concat(sink.chunks));
      const chunks = new FileChunks(path, 4096 * 3 + 8 * 7); // never aligned to a record
      expect(chunks.size).toBe(sink.bytes);
      const dst = new Host({ memoryMiB: 160 });
      const { kernel, run, restore } = await restoreGuest(dst, 3, chunks);
      expect(restore.bytes).toBe(sink.bytes);
      while (run!.next()) {}
      expect(dst.audit().problems).toEqual([]);
      expect(guestMemoryHash(kernel)).toBe(guestMemoryHash(ref.kernel));
      expect(() => new FileChunks(dir)).toThrow(/is a directory/);
      expect(() => new FileChunks(join(dir, "missing"))).toThrow(/ENOENT/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("restoring with a prefault thread", () => {
  it("gives the same host, frame for frame, as restoring without one", async () => {
    const { sink } = await savedAfterThreeSteps();
    let suppliedUsed = 0;
    const hosts = [0, Number.POSITIVE_INFINITY].map(async (prefaultMinPages) => {
      const h = new Host({ memoryMiB: 160 });
      // With the thread: after a chunk, wait (until it first comes) for a slab from it, then count
      // the slabs the restore takes from it.
      async function* paced() {
        let waitFor = prefaultMinPages === 0;
        for (const c of sink.chunks) {
          const before = h.mem.slabsReserved;
          yield c;
          suppliedUsed += Math.max(0, before - h.mem.slabsReserved);
          for (let t = 0; waitFor && t < 100 && h.mem.slabsReserved === 0; t++) {
            await new Promise((r) => setTimeout(r, 5));
          }
          if (h.mem.slabsReserved > 0) waitFor = false;
        }
      }
      const r = await restoreStream(h, 4, paced(), { collect: [REC_PVMMU_GUEST_STATE], prefaultMinPages });
      expect(h.mem.slabsReserved).toBe(0); // what the thread made and the restore did not use is dropped
      const { kernel } = resumeRestored(h, 4, r.collected);
      return { h, kernel };
    });
    const [a, b] = await Promise.all(hosts);
    expect(a.kernel.p2m).toEqual(b.kernel.p2m);
    const bytes = (f: Uint32Array) => Buffer.from(f.buffer, f.byteOffset, f.byteLength);
    const differ = Array.from(a.kernel.p2m).filter(
      (mfn) => Buffer.compare(bytes(a.h.mem.frame(mfn)), bytes(b.h.mem.frame(mfn))) !== 0,
    );
    expect(differ).toEqual([]);
    expect(a.h.audit().problems).toEqual([]);
    expect(guestMemoryHash(a.kernel)).toBe(guestMemoryHash(b.kernel));
    expect(suppliedUsed).toBeGreaterThan(10);
  });
});

describe("FileChunks", () => {
  it("gives a file's bytes in order, with several reads under way, direct or buffered, any size", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pvmmu-chunks-"));
    try {
      let seed = 7;
      for (const size of [0, 1, 65536, 5 * 65536 + 1234, 20 * 65536]) {
        const want = Buffer.alloc(size);
        for (let i = 0; i < size; i++) {
          seed = (seed * 1103515245 + 12345) >>> 0;
          want[i] = seed >>> 24;
        }
        const path = join(dir, `f${size}`);
        writeFileSync(path, want);
        for (const chunk of [65536, 4096 * 3 + 56]) {
          const chunks = new FileChunks(path, chunk);
          const got: Buffer[] = [];
          for await (const c of chunks) {
            expect(c.length).toBeLessThanOrEqual(chunk);
            got.push(Buffer.from(c)); // a chunk is valid until the next is asked for
          }
          expect(Buffer.concat(got).equals(want), `size ${size}, chunks of ${chunk}`).toBe(true);
          expect(got.slice(0, -1).every((c) => c.length === chunk)).toBe(true);
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("saving to a file", () => {
  it("writes the same bytes as the stream, direct I/O or not, and reads back with direct I/O", async () => {
    const { src, sink: mem } = await savedAfterThreeSteps();
    const want = Buffer.concat(mem.chunks);
    const dir = mkdtempSync(join(tmpdir(), "pvmmu-sink-"));
    try {
      for (const direct of [true, false]) {
        const again = start();
        for (let i = 0; i < 3; i++) again.run.next();
        const path = join(dir, `guest-${direct}.img`);
        const sink = new FileSink(path, { direct });
        if (!direct) expect(sink.direct).toBe(false);
        await saveGuest(again.h, again.kernel, again.run, sink, { live: false });
        await sink.close();
        expect(sink.bytes).toBe(want.length);
        expect(readFileSync(path).equals(want)).toBe(true); // the padded last block cut off
        const chunks = new FileChunks(path, 64 * 1024);
        const { kernel } = await restoreGuest(new Host({ memoryMiB: 160 }), 2, chunks);
        expect(kernel.pages).toBe(src.kernel.pages);
        if (direct) expect(chunks.direct).toBe(sink.direct); // one file system: both or neither
      }
      // A failed save: discard closes without finishing; nothing written after it.
      const failing = new FileSink(join(dir, "failed.img"));
      await failing.write([new Uint8Array(12 * 2 ** 20)]);
      await failing.discard();
      expect(() => failing.write([new Uint8Array(8)])).toThrow(/already closed/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
