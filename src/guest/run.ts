/** Run a workload on a freshly booted guest and report what it cost. (Being written.) */

import type { BootMethod, PinningPolicy, RunReport, StrategyName, WorkloadName } from "./report.js";

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
}

export function runWorkload(_opts: RunOptions): RunReport {
  throw new Error("runWorkload: not written yet");
}
