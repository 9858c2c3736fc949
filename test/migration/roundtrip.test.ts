import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { STRATEGIES } from "../../src/guest/report.js";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { FileChunks, FileSink } from "../../src/migration/file.js";
import { guestMemoryHash, MemorySink, restoreGuest, saveGuest } from "../../src/migration/guest.js";
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

describe("save → restore on another host → continue", () => {
  for (const strategy of STRATEGIES.filter((s) => s !== "direct-mfn")) {
    for (const pinning of ["linux", "eager"] as const) {
      it(`${strategy}/${pinning}: the restored guest finishes with the memory of a run that never moved`, async () => {
        const ref = start({ strategy, pinning });
        while (ref.run.next()) {}
        const want = guestMemoryHash(ref.kernel);

        const src = start({ strategy, pinning });
        for (let i = 0; i < 3; i++) src.run.next();
        const sink = new MemorySink();
        await saveGuest(src.h, src.kernel, src.run, sink, { live: false });
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
    const src = start();
    for (let i = 0; i < 3; i++) src.run.next();
    const sink = new MemorySink();
    await saveGuest(src.h, src.kernel, src.run, sink, { live: false });
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

describe("saving to a file", () => {
  it("writes the same bytes as the stream, direct I/O or not, and reads back with direct I/O", async () => {
    const src = start();
    for (let i = 0; i < 3; i++) src.run.next();
    const mem = new MemorySink();
    await saveGuest(src.h, src.kernel, src.run, mem, { live: false });
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
