/**
 * Fuzzer speed (issue 7):
 *  fuzz_steps_per_s  hypercalls per second for one worker with the per-step checks on (and the
 *                    full audit every 100 steps), best of three runs of 300k steps
 *  fuzz_scaling      steps per second with 2 worker threads divided by 1 worker thread, each
 *                    worker doing 3M steps from a cold start (loading and compiling included, as
 *                    in `pvmmu fuzz --workers N`); the median of three pairs of runs, the two runs
 *                    of a pair back to back (this shared machine's speed drifts between pairs)
 *  cpu_scaling       the same ratio for a plain arithmetic loop in worker threads: what this
 *                    machine's two cores give any two threads (the ceiling for fuzz_scaling)
 */

import { Worker } from "node:worker_threads";
import { fuzz } from "../src/fuzz/engine.js";
import { fuzzParallel, runWorker } from "../src/fuzz/parallel.js";

const PER_WORKER = 300_000;
/** Steps per worker for the scaling figure: long enough that a worker's start-up is amortised. */
const SCALING_PER_WORKER = 3_000_000;

const SPIN = `
const { parentPort } = require("node:worker_threads");
let x = 0;
for (let i = 0; i < 2e8; i++) x = (x * 31 + i) | 0;
parentPort.postMessage(x);
`;

/** Seconds for `n` threads each running the same arithmetic loop. */
async function spin(n: number): Promise<number> {
  const t0 = performance.now();
  await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise((resolve, reject) => {
          const w = new Worker(SPIN, { eval: true });
          w.on("message", resolve);
          w.on("error", reject);
        }),
    ),
  );
  return (performance.now() - t0) / 1000;
}

export async function benchFuzz(): Promise<{
  fuzz_steps_per_s: number;
  fuzz_scaling: number;
  cpu_scaling: number;
}> {
  fuzz({ seed: 99, steps: 30_000 }); // warm up
  let one = 0;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    const res = fuzz({ seed: 100 + r, steps: PER_WORKER });
    one = Math.max(one, res.steps / ((performance.now() - t0) / 1000));
  }
  // Scaling: one worker thread against two, both started cold, the same steps per worker.
  const ratios: number[] = [];
  for (let r = 0; r < 3; r++) {
    let t0 = performance.now();
    const res = await runWorker({ seed: 300 + r, steps: SCALING_PER_WORKER }, 0);
    const single = res.steps / ((performance.now() - t0) / 1000);
    t0 = performance.now();
    const rs = await fuzzParallel({ seed: 200 + r, steps: 2 * SCALING_PER_WORKER, workers: 2 });
    const two = rs.reduce((s, x) => s + x.steps, 0) / ((performance.now() - t0) / 1000);
    ratios.push(two / single);
  }
  ratios.sort((a, b) => a - b);
  const cpu = Math.min(await spin(1), await spin(1)) / Math.min(await spin(2), await spin(2));
  return { fuzz_steps_per_s: one, fuzz_scaling: ratios[1], cpu_scaling: 2 * cpu };
}
