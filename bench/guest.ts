/**
 * Guest-kernel benchmarks:
 *  boot_64g_ms            top-down boot of a 64 GiB guest with a full 4 KiB direct map, pinned
 *                         (the kernel's work: bootGuest, after the toolstack made the domain)
 *  fork_exec_exit_per_s   lmbench's fork + exec + exit of a process with 64 MiB mapped, on the best
 *                         strategy; fork_exec_exit_<strategy>_per_s for each
 */

import { bootGuest } from "../src/guest/boot.js";
import { makeMapper } from "../src/guest/mappers/index.js";
import { Process } from "../src/guest/process.js";
import { STRATEGIES, type StrategyName } from "../src/guest/report.js";
import { bootOnHost } from "../src/guest/run.js";
import { forkExecExit } from "../src/guest/workloads.js";
import { Host } from "../src/xen/host.js";

export function boot64gMs(): { ms: number; tables: number } {
  let best = Number.POSITIVE_INFINITY;
  let tables = 0;
  for (let r = 0; r < 2; r++) {
    const h = new Host({ memoryMiB: 64 * 1024 + 2048 + 96 });
    h.createDomain({ domid: 1, pages: 64 * 2 ** 18 });
    const t0 = performance.now();
    const { boot } = bootGuest(h, 1, {
      mapper: makeMapper("direct-pfn"),
      pinning: "linux",
      method: "top-down",
    });
    best = Math.min(best, performance.now() - t0);
    tables = boot.directMapTablePages;
  }
  return { ms: best, tables };
}

export function forkExecExitPerS(strategy: StrategyName): number {
  const { kernel: k } = bootOnHost({
    strategy,
    pinning: "linux",
    workload: "fork-exec-exit",
    memoryBytes: 1024 * 2 ** 20,
    seed: 1,
  });
  const p = new Process(k);
  p.switchTo();
  const bytes = 64 * 2 ** 20;
  const base = p.mmap(bytes);
  p.touchRange(base, bytes, true);
  for (let i = 0; i < 20; i++) forkExecExit(p); // warm-up; the parent's pages become read-only once
  let best = 0;
  for (let r = 0; r < 3; r++) {
    const n = 100;
    const t0 = performance.now();
    for (let i = 0; i < n; i++) forkExecExit(p);
    best = Math.max(best, (n / (performance.now() - t0)) * 1000);
  }
  return best;
}

export function benchGuest(): Record<string, number> {
  const out: Record<string, number> = {};
  const b = boot64gMs();
  out.boot_64g_ms = b.ms;
  let best = 0;
  for (const s of STRATEGIES) {
    const r = forkExecExitPerS(s);
    out[`fork_exec_exit_${s.replace("-", "_")}_per_s`] = r;
    best = Math.max(best, r);
  }
  out.fork_exec_exit_per_s = best;
  return out;
}
