/**
 * Fuzzer speed (issue 7):
 *  fuzz_steps_per_s  hypercalls per second for one worker with the per-step checks on (and the
 *                    full audit every 100 steps), best of three runs of 300k steps
 *  fuzz_scaling      steps per second with 2 worker threads divided by 1 worker, each worker
 *                    doing the same number of steps (on this 2-core machine)
 */

import { fuzz } from "../src/fuzz/engine.js";
import { fuzzParallel } from "../src/fuzz/parallel.js";

const PER_WORKER = 300_000;

export async function benchFuzz(): Promise<{ fuzz_steps_per_s: number; fuzz_scaling: number }> {
  fuzz({ seed: 99, steps: 30_000 }); // warm up
  let one = 0;
  for (let r = 0; r < 3; r++) {
    const t0 = performance.now();
    const res = fuzz({ seed: 100 + r, steps: PER_WORKER });
    one = Math.max(one, res.steps / ((performance.now() - t0) / 1000));
  }
  let two = 0;
  for (let r = 0; r < 2; r++) {
    const t0 = performance.now();
    const rs = await fuzzParallel({ seed: 200 + r, steps: 2 * PER_WORKER, workers: 2 });
    const steps = rs.reduce((s, x) => s + x.steps, 0);
    two = Math.max(two, steps / ((performance.now() - t0) / 1000));
  }
  return { fuzz_steps_per_s: one, fuzz_scaling: two / one };
}
