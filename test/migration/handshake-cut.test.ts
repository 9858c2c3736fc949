/**
 * The source gives up between READY and GO (xl_migrate.c's sender: the rename after "ready"
 * fails → `failed_resume`: close the connection, resume at the sender). The receiver has the
 * whole domain built and waits for GO (`migrate_receive`: reading the GO message fails →
 * `perhaps_destroy_notify_rc` → "Failure, destroying our copy"). Exactly one copy survives:
 * the source's, which finishes its workload with the memory of a run that never migrated.
 */

import { describe, expect, it } from "vitest";
import { RwLock } from "../../src/guest/mfnlock.js";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { guestMemoryHash } from "../../src/migration/guest.js";
import { migrateTo } from "../../src/migration/tcp.js";
import { Host } from "../../src/xen/host.js";
import { watchedReceiver } from "../helpers/receiver.js";

const RECEIVER_MIB = 160;

function start(opts: RunOptions) {
  const { h, kernel } = bootOnHost(opts);
  const run = new WorkloadRun(kernel, opts.workload, { seed: opts.seed, iterations: opts.iterations });
  return { h, kernel, run };
}

function reference(opts: RunOptions): string {
  const r = start(opts);
  while (r.run.next()) {}
  return guestMemoryHash(r.kernel);
}

const cases: RunOptions[] = [
  {
    strategy: "netbsd",
    pinning: "eager",
    workload: "mmap-churn",
    memoryBytes: 64 * 2 ** 20,
    seed: 11,
    iterations: 60,
  },
  {
    strategy: "direct-pfn",
    pinning: "linux",
    workload: "server",
    memoryBytes: 64 * 2 ** 20,
    seed: 3,
    iterations: 80,
  },
];

describe("the source closes the connection after READY, before GO", () => {
  for (const opts of cases) {
    it(`${opts.strategy}/${opts.pinning}: the receiver discards its built domain; the source's guest runs on unchanged`, async () => {
      const want = reference(opts);
      const fresh = new Host({ memoryMiB: RECEIVER_MIB }).freeFrames();

      const rx = await watchedReceiver(RECEIVER_MIB, { domid: 7, once: true });

      const src = start(opts);
      src.run.next();
      const lock = new RwLock();
      // What the receiver holds when READY reaches the source.
      let atReady: { domains: number; suspended: boolean; pages: number; free: number } | undefined;
      let streamBytes = 0;
      const migration = migrateTo(
        src.h,
        src.kernel,
        src.run,
        { host: "127.0.0.1", port: rx.port },
        {
          stepsPerBatch: 1,
          lock,
          onBytes: (b) => {
            streamBytes = b;
          },
          cutBeforeGo: () => {
            const d = rx.receiver!.domain(7)!;
            atReady = {
              domains: rx.receiver!.domains.size,
              suspended: d.suspended,
              pages: d.pages.size,
              free: rx.receiver!.freeFrames(),
            };
            return true;
          },
        },
      );
      await expect(migration).rejects.toThrow(
        "connection closed after READY, before GO: the migration is abandoned, the guest runs on here",
      );
      await rx.settle(2000);

      // READY meant it: the whole stream had arrived and the domain was built, paused, holding memory.
      expect(streamBytes).toBeGreaterThan(64 * 2 ** 20);
      expect(atReady).toBeDefined();
      expect(atReady!.domains).toBe(1);
      expect(atReady!.suspended).toBe(true);
      expect(atReady!.pages).toBeGreaterThan(1000);
      expect(atReady!.free).toBeLessThan(fresh - atReady!.pages + 1);

      // The receiver: a clear error, the guest never resumed, the domain gone, every frame free.
      expect(rx.failures.map((e) => e.message)).toEqual(["connection closed before GO: domain discarded"]);
      expect(rx.arrived).toBe(false);
      expect(rx.receiver!.domains.size).toBe(0);
      expect(rx.receiver!.audit().problems).toEqual([]);
      expect(rx.receiver!.freeFrames()).toBe(fresh);

      // The source: its domain was suspended for the final round and is running again, log-dirty
      // off, the MFN lock given back; the workload finishes with the memory of a run that never moved.
      const d = src.h.domain(1)!;
      expect(d).toBeDefined();
      expect(d.suspended).toBe(false);
      expect(d.dirtyLog).toBeNull();
      expect(lock.writeHeld).toBe(false);
      expect(src.run.done).toBe(false);
      while (src.run.next()) {}
      expect(src.h.audit().problems).toEqual([]);
      expect(guestMemoryHash(src.kernel)).toBe(want);
    }, 20_000);
  }
});
