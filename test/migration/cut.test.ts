/**
 * The connection cut at any point of a live migration: the source guest runs on (resumed if it
 * was suspended) with its memory as if nothing happened, and the receiver discards the
 * half-built domain, freeing every frame.
 */

import { describe, expect, it } from "vitest";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { guestMemoryHash } from "../../src/migration/guest.js";
import { migrateTo } from "../../src/migration/tcp.js";
import { Host } from "../../src/xen/host.js";
import { watchedReceiver } from "../helpers/receiver.js";

const opts: RunOptions = {
  strategy: "netbsd",
  pinning: "eager",
  workload: "mmap-churn",
  memoryBytes: 64 * 2 ** 20,
  seed: 11,
  iterations: 60,
};

function start() {
  const { h, kernel } = bootOnHost(opts);
  const run = new WorkloadRun(kernel, opts.workload, { seed: opts.seed, iterations: opts.iterations });
  run.next();
  return { h, kernel, run };
}

/** One migration attempt with the connection cut after `cut` bytes (Infinity: no cut). */
async function attempt(cut: number) {
  // Twelve receivers: their downtime is not what this test measures, so no warm-up.
  const rx = await watchedReceiver(160, { warm: false });
  const src = start();
  let error: Error | undefined;
  let bytes = 0;
  try {
    const r = await migrateTo(
      src.h,
      src.kernel,
      src.run,
      { host: "127.0.0.1", port: rx.port },
      { cutAfter: cut, stepsPerBatch: 1 },
    );
    bytes = r.bytes;
  } catch (e) {
    error = e as Error;
  }
  // Let the receiver notice the close (a loaded machine may take a while).
  await rx.settle(10_000);
  return { src, error, bytes, receiver: rx.receiver!, failures: rx.failures, arrived: rx.arrived };
}

describe("a migration cut at any point loses nothing", () => {
  it("source runs on with unchanged memory; receiver frees everything", async () => {
    const ref = start();
    while (ref.run.next()) {}
    const want = guestMemoryHash(ref.kernel);

    const full = await attempt(Number.POSITIVE_INFINITY);
    expect(full.error).toBeUndefined();
    const total = full.bytes;
    // Mid image header, mid domain header, mid record header, mid PAGE_DATA pfn list, mid page data,
    // inside later rounds, inside the final round, just before END, and after END (before READY/GO).
    const cuts = [
      5,
      30,
      44,
      120,
      5000,
      1_000_000,
      Math.floor(total * 0.7),
      total - 9000,
      total - 100,
      total - 8,
      total,
    ];
    for (const cut of cuts) {
      const a = await attempt(cut);
      expect(a.error, `cut at ${cut}`).toBeDefined();
      // The source: its domain is back to running, the guest finishes, memory as if never cut.
      const d = a.src.h.domain(1)!;
      expect(d.suspended, `cut at ${cut}`).toBe(false);
      expect(d.dirtyLog).toBeNull();
      while (a.src.run.next()) {}
      expect(a.src.h.audit().problems, `cut at ${cut}`).toEqual([]);
      expect(guestMemoryHash(a.src.kernel), `cut at ${cut}`).toBe(want);
      // The receiver: nothing kept.
      if (a.receiver) {
        expect(a.arrived, `cut at ${cut}`).toBe(false);
        expect(a.receiver.domains.size, `cut at ${cut}`).toBe(0);
        expect(a.receiver.audit().ok).toBe(true);
        expect(a.receiver.freeFrames(), `cut at ${cut}`).toBe(new Host({ memoryMiB: 160 }).freeFrames());
      }
    }
  }, 120_000);
});
