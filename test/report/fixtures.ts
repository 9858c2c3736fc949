/**
 * Hand-made RunReports for the report and CLI tests: plausible figures derived
 * from the options (a direct-map boot builds exactly the closed-form tables),
 * every field overridable.
 */

import type { RunReport } from "../../src/guest/report.js";
import type { RunOptions } from "../../src/guest/run.js";
import { tablePagesToMap } from "../../src/report/formulas.js";

export type FixtureOptions = Partial<Omit<RunReport, "boot">> & { boot?: Partial<RunReport["boot"]> };

/** A report for `o`; `o.boot` is merged into the default boot report. */
export function fixtureReport(o: FixtureOptions = {}): RunReport {
  const memoryBytes = o.memoryBytes ?? 2 ** 30;
  const strategy = o.strategy ?? "direct-pfn";
  const workload = o.workload ?? "boot";
  const t = tablePagesToMap(memoryBytes, "4k");
  const ramPages = memoryBytes / 4096;
  const recursive = strategy === "recursive" || strategy === "netbsd";
  const base: RunReport = {
    strategy,
    pinning: "linux",
    workload,
    bootMethod: "top-down",
    memoryBytes,
    seed: 1,
    tablePages: {
      total: t.total,
      byLevel: [t.l1, t.l2, t.l3, t.l4],
      share: (t.total * 4096) / memoryBytes,
    },
    companionPages: strategy === "shadow" ? t.l2 + t.l3 + t.l4 : 0,
    vaSlots: recursive ? 1 : Math.ceil(memoryBytes / 2 ** 39),
    vaBytes: recursive ? 2 ** 39 : memoryBytes,
    p2mBytes: ramPages * 8,
    m2pBytes: 8 * 2 ** 20,
    hypercalls: { mmu_update: 40, mmuext_op: 12, multicall: 3 },
    batches: {
      mmu_update: { calls: 40, entries: 5000, max: 512 },
      mmuext_op: { calls: 12, entries: 14, max: 2 },
    },
    pteUpdates: { mmu_update: 5000, update_va_mapping: 20, ptwr: 0, direct: 0 },
    validatedEntries: t.total * 512,
    tlbFlushes: { full: 4, single: 9 },
    p2mLookups: 100,
    m2pLookups: 50,
    ops:
      workload === "boot"
        ? { boot: { count: 1, ms: 12.5 } }
        : { fork: { count: 20, ms: 8 }, exec: { count: 20, ms: 6 }, exit: { count: 20, ms: 4 } },
    boot: {
      method: "top-down",
      reservedPages: t.total + 10,
      usedPages: t.total,
      unusedPages: 10,
      lowestTablePfn: ramPages - t.total - 10,
      highestTablePfn: ramPages - 1,
      ramPages,
      mappedPages: ramPages,
      directMapTablePages: t.total,
      steps: 5,
    },
    audit: { ok: true, problems: [] },
    wallMs: 20,
  };
  const { boot, ...rest } = o;
  return { ...base, ...rest, boot: { ...base.boot, ...boot } };
}

/** A stand-in for `runWorkload`: a fixture for the options, with a recognisable wall time. */
export function fakeRunner(calls: RunOptions[] = []): (opts: RunOptions) => RunReport {
  return (opts) => {
    calls.push(opts);
    return fixtureReport({
      strategy: opts.strategy,
      workload: opts.workload,
      pinning: opts.pinning,
      memoryBytes: opts.memoryBytes,
      seed: opts.seed,
      bootMethod: opts.bootMethod ?? "top-down",
    });
  };
}
