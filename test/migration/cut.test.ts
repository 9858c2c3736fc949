/**
 * The connection cut at any point of a live migration: the source guest runs on (resumed if it
 * was suspended) with its memory as if nothing happened, and the receiver discards the
 * half-built domain, freeing every frame.
 */

import type net from "node:net";
import { describe, expect, it } from "vitest";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { guestMemoryHash } from "../../src/migration/guest.js";
import { listen, migrateTo } from "../../src/migration/tcp.js";
import { Host } from "../../src/xen/host.js";

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
  let receiver: Host | undefined;
  const failures: Error[] = [];
  let arrived = false;
  const server = await listen(
    { host: "127.0.0.1", port: 0 },
    {
      makeHost: () => {
        receiver = new Host({ memoryMiB: 160 });
        return receiver;
      },
      onFailure: (e) => failures.push(e),
      onArrival: () => {
        arrived = true;
      },
      warm: false, // twelve receivers: their downtime is not what this test measures
    },
  );
  const port = (server.address() as net.AddressInfo).port;
  const src = start();
  let error: Error | undefined;
  let bytes = 0;
  try {
    const r = await migrateTo(
      src.h,
      src.kernel,
      src.run,
      { host: "127.0.0.1", port },
      { cutAfter: cut, stepsPerBatch: 1 },
    );
    bytes = r.bytes;
  } catch (e) {
    error = e as Error;
  }
  // Let the receiver notice the close (a loaded machine may take a while).
  for (let i = 0; i < 1000 && !arrived && failures.length === 0; i++)
    await new Promise((r) => setTimeout(r, 10));
  server.close();
  return { src, error, bytes, receiver: receiver!, failures, arrived };
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
