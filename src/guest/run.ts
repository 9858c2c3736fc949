/**
 * Boot a guest with a strategy and pinning policy, run a workload on it, and
 * report what it cost (`pvmmu run`, `pvmmu compare`).
 */

import { Host, type LinearPolicy } from "../xen/host.js";
import { bootGuest } from "./boot.js";
import { guestMemoryHash } from "./hash.js";
import { GuestError, type Kernel } from "./kernel.js";
import { makeMapper } from "./mappers/index.js";
import { ShadowMapper } from "./mappers/shadow.js";
import type { BootMethod, PinningPolicy, RunReport, StrategyName, WorkloadName } from "./report.js";
import { measureRootVisit } from "./suspend.js";
import { runWorkloadOn, WorkloadRun } from "./workloads.js";

export interface RunOptions {
  strategy: StrategyName;
  pinning: PinningPolicy;
  workload: WorkloadName;
  /** Guest memory in bytes (a whole number of MiB, at least 64 MiB). */
  memoryBytes: number;
  seed: number;
  bootMethod?: BootMethod;
  /** Scale of the workload (iterations); default per workload. */
  iterations?: number;
  /** The hypervisor's linear page-table rule (default Xen's). */
  linearPolicy?: LinearPolicy;
  /** Bytes the parent maps in fork workloads. */
  mapped?: number;
  /** mmu_update queue length (default: NetBSD's 2048 for "netbsd", Linux's 32 otherwise). */
  mmuBatch?: number;
  /** Multicall batch size (default Linux's 32; 1 issues every call on its own). */
  mcBatch?: number;
  /** Address spaces for the suspend-visit measurement after the run (default 1000; 0: none). */
  visitSpaces?: number;
}

const MiB = 2 ** 20;
/**
 * The largest guest a run builds for real (256 GiB): its host's frame table, the domain's page
 * list and the kernel's per-page arrays must fit this machine. `planDirectMapBoot` counts
 * boots of any size.
 */
export const MAX_GUEST_BYTES = 256 * 2 ** 30;

/** A booted guest on a fresh host (and a small front-end domain for grant I/O). */
export function bootOnHost(o: RunOptions): { h: Host; kernel: Kernel; boot: RunReport["boot"] } {
  if (!Number.isInteger(o.memoryBytes / MiB) || o.memoryBytes < 64 * MiB || o.memoryBytes > MAX_GUEST_BYTES) {
    throw new GuestError(
      `guest memory must be a whole number of MiB from 64 MiB to 256 GiB, got ${o.memoryBytes} bytes`,
    );
  }
  const guestMiB = o.memoryBytes / MiB;
  const h = new Host({ memoryMiB: guestMiB + Math.ceil(guestMiB / 32) + 96, linearPolicy: o.linearPolicy });
  h.createDomain({ domid: 1, pages: guestMiB * 256 });
  if (o.workload === "grant-io") h.createDomain({ domid: 2, pages: 1024 });
  const t0 = performance.now();
  const { kernel, boot } = bootGuest(h, 1, {
    mapper: makeMapper(o.strategy),
    pinning: o.pinning,
    method: o.bootMethod ?? "top-down",
    // NetBSD queues 2048 updates; Linux batches 32.
    mmuBatch: o.mmuBatch ?? (o.strategy === "netbsd" ? 2048 : 32),
    mcBatch: o.mcBatch ?? 32,
  });
  kernel.record("boot", performance.now() - t0);
  return { h, kernel, boot };
}

export function runWorkload(o: RunOptions): RunReport {
  const t0 = performance.now();
  const { h, kernel: k, boot } = bootOnHost(o);
  runWorkloadOn(k, o.workload, { seed: o.seed, iterations: o.iterations, mapped: o.mapped, frontend: 2 });
  return finalReport(h, k, o, boot, t0);
}

/** A finished run's report: costs since `t0`, the memory hash, the suspend-visit cost. */
function finalReport(h: Host, k: Kernel, o: RunOptions, boot: RunReport["boot"], t0: number): RunReport {
  k.hc.flush();
  const r = report(h, k, o, boot, performance.now() - t0);
  r.memoryHash = guestMemoryHash(k);
  const n = o.visitSpaces ?? 1000;
  if (n > 0) r.suspendVisit = measureRootVisit(k, n);
  return r;
}

/**
 * `runWorkload` one step at a time, calling `onStep` after the boot and after every workload
 * step (a progress callback: `pvmmu run --publish` lets the event loop run there). The same
 * hypercalls in the same order as `runWorkload`, so the same report but for the times.
 */
export async function runWorkloadStepped(
  o: RunOptions,
  onStep: (k: Kernel, run: WorkloadRun) => void | Promise<void>,
): Promise<RunReport> {
  const t0 = performance.now();
  const { h, kernel: k, boot } = bootOnHost(o);
  const run = new WorkloadRun(k, o.workload, {
    seed: o.seed,
    iterations: o.iterations,
    mapped: o.mapped,
    frontend: 2,
  });
  await onStep(k, run);
  while (run.next()) await onStep(k, run);
  await onStep(k, run);
  return finalReport(h, k, o, boot, t0);
}

/** The cost report of a kernel's run so far. */
export function report(
  h: Host,
  k: Kernel,
  o: RunOptions,
  boot: RunReport["boot"],
  wallMs: number,
): RunReport {
  const audit = h.audit();
  const total = k.tableCount.reduce((a, b) => a + b, 0);
  const companions = k.mapper instanceof ShadowMapper ? k.mapper.companionPages : 0;
  return {
    strategy: o.strategy,
    pinning: o.pinning,
    workload: o.workload,
    bootMethod: o.bootMethod ?? "top-down",
    memoryBytes: o.memoryBytes,
    seed: o.seed,
    tablePages: { total, byLevel: [...k.tableCount], share: total / k.pages },
    companionPages: companions,
    vaSlots: k.mapper.vaSlots(k),
    vaBytes: k.mapper.vaSlots(k) * 2 ** 39,
    p2mBytes: k.pages * 8,
    m2pBytes: h.frames.frames * 8,
    hypercalls: sorted(k.hc.transitions),
    batches: sorted(k.hc.batches),
    pteUpdates: {
      mmu_update: k.hc.pteByMmuUpdate,
      update_va_mapping: k.hc.pteByUva,
      ptwr: k.ptwrWrites,
      direct: k.directWrites,
    },
    validatedEntries: h.counters.tablesValidated * 512 + h.counters.entriesValidated,
    tlbFlushes: { full: k.hc.flushFull, single: k.hc.flushSingle },
    p2mLookups: k.p2mLookups,
    m2pLookups: k.m2pLookups,
    ops: sorted(k.ops),
    boot,
    audit: {
      ok: audit.ok,
      problems: audit.problems.map((p) => (typeof p === "string" ? p : JSON.stringify(p))),
    },
    wallMs,
  };
}

function sorted<T>(o: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
