import type net from "node:net";
import { describe, expect, it } from "vitest";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { guestMemoryHash, MemorySink, restoreGuest, saveGuest } from "../../src/migration/guest.js";
import { type Arrival, listen, migrateTo } from "../../src/migration/tcp.js";
import { Host } from "../../src/xen/host.js";

const MiB = 2 ** 20;
const opts: RunOptions = {
  strategy: "direct-pfn",
  pinning: "linux",
  workload: "server",
  memoryBytes: 64 * MiB,
  seed: 3,
  iterations: 120,
};

function start(o: Partial<RunOptions> = {}) {
  const all = { ...opts, ...o };
  const { h, kernel } = bootOnHost(all);
  const run = new WorkloadRun(kernel, all.workload, { seed: all.seed, iterations: all.iterations });
  return { h, kernel, run };
}

function reference(o: Partial<RunOptions> = {}): string {
  const r = start(o);
  while (r.run.next()) {}
  return guestMemoryHash(r.kernel);
}

describe("live migration", () => {
  it("pre-copies while the guest runs, then a final round; the guest finishes elsewhere with the same memory", async () => {
    const want = reference();
    const src = start();
    src.run.next();
    const rounds: { round: number; pages: number; final: boolean }[] = [];
    const sink = new MemorySink();
    await saveGuest(src.h, src.kernel, src.run, sink, {
      live: true,
      stepsPerBatch: 2,
      onRound: (r) => rounds.push(r),
    });
    expect(rounds.length).toBeGreaterThanOrEqual(2);
    expect(rounds[0].pages).toBe(16384); // the first pass sends every page
    expect(rounds.at(-1)!.final).toBe(true);
    expect(rounds.filter((r) => !r.final).length).toBeLessThanOrEqual(5);
    const dst = new Host({ memoryMiB: 200 });
    const { kernel, run } = await restoreGuest(dst, 4, sink.chunks);
    while (run!.next()) {}
    expect(dst.audit().problems).toEqual([]);
    expect(guestMemoryHash(kernel)).toBe(want);
  });

  it("over TCP: a receiver resumes the guest, which finishes with the memory of a run that never moved", async () => {
    const want = reference();
    const arrived = new Promise<Arrival>((resolve) => {
      void listen(
        { host: "127.0.0.1", port: 0 },
        { makeHost: () => new Host({ memoryMiB: 180 }), once: true, onArrival: resolve },
      ).then((server) => {
        const port = (server.address() as net.AddressInfo).port;
        const src = start();
        src.run.next();
        void migrateTo(src.h, src.kernel, src.run, { host: "127.0.0.1", port }, { stepsPerBatch: 2 }).then(
          (r) => {
            expect(src.h.domain(1)).toBeUndefined();
            expect(r.rounds.at(-1)!.final).toBe(true);
          },
        );
      });
    });
    const a = await arrived;
    while (a.run!.next()) {}
    expect(a.host.audit().problems).toEqual([]);
    expect(guestMemoryHash(a.kernel)).toBe(want);
  });
});
