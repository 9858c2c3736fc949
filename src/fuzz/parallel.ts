/**
 * Fuzzing on several worker threads. Worker w fuzzes its own seed stream
 * (`mixSeed(seed, w)`) for its share of the steps; one worker runs in this
 * thread with the same stream as worker 0 of a parallel run. Results merge in
 * worker order, so a run is deterministic for a given seed, step count and
 * number of workers.
 */

import { Worker } from "node:worker_threads";
import { Coverage } from "./coverage.js";
import { type FuzzOptions, type FuzzResult, fuzz, mixSeed } from "./engine.js";

export interface ParallelOptions extends Omit<FuzzOptions, "onProgress" | "origin"> {
  workers: number;
  /** Called with the steps done and findings so far, summed over workers. */
  onProgress?: (steps: number, findings: number) => void;
}

export interface WorkerResult extends FuzzResult {
  worker: number;
  seed: number;
}

/** What a worker thread is given (no functions: it crosses threads). */
export interface WorkerTask {
  opts: Omit<FuzzOptions, "onProgress">;
}

/** The share of `steps` worker `w` of `n` runs. */
function share(steps: number, w: number, n: number): number {
  return Math.floor(steps / n) + (w < steps % n ? 1 : 0);
}

function task(o: ParallelOptions, w: number): Omit<FuzzOptions, "onProgress"> {
  const { workers, onProgress: _p, ...rest } = o;
  const seed = mixSeed(o.seed, w);
  const policy = o.world?.policy ?? "xen";
  const domains = o.world?.domains ?? 3;
  return {
    ...rest,
    seed,
    steps: share(o.steps, w, workers),
    origin: `pvmmu fuzz --seed ${o.seed} --workers ${workers} --policy ${policy} --domains ${domains} (worker ${w})`,
  };
}

export async function fuzzParallel(o: ParallelOptions): Promise<WorkerResult[]> {
  if (!Number.isInteger(o.workers) || o.workers < 1 || o.workers > 64) {
    throw new RangeError(`workers must be a whole number from 1 to 64, got ${o.workers}`);
  }
  if (o.workers === 1) {
    const t = task(o, 0);
    const r = fuzz({ ...t, onProgress: o.onProgress });
    return [{ ...r, worker: 0, seed: t.seed }];
  }
  const progress = new Array<[number, number]>(o.workers).fill([0, 0]);
  const report = () => {
    let s = 0;
    let f = 0;
    for (const [a, b] of progress) {
      s += a;
      f += b;
    }
    o.onProgress?.(s, f);
  };
  const runs = Array.from({ length: o.workers }, (_, w) =>
    runWorker(task(o, w), w, (steps, findings) => {
      progress[w] = [steps, findings];
      report();
    }),
  );
  return Promise.all(runs);
}

/**
 * Run one fuzz task on a worker thread of its own (worker number `w`), reporting its progress.
 * `fuzzParallel` runs each of its workers this way; the benchmark uses it to time one worker
 * thread against two.
 */
export function runWorker(
  t: Omit<FuzzOptions, "onProgress">,
  w: number,
  onProgress?: (steps: number, findings: number) => void,
): Promise<WorkerResult> {
  return new Promise<WorkerResult>((resolve, reject) => {
    const worker = new Worker(new URL("./worker.js", import.meta.url), {
      workerData: { opts: t } satisfies WorkerTask,
    });
    worker.on("message", (m: { type: string; steps?: number; findings?: number; result?: SerialResult }) => {
      if (m.type === "progress") onProgress?.(m.steps ?? 0, m.findings ?? 0);
      else if (m.type === "done" && m.result) {
        resolve({ ...m.result, coverage: Coverage.fromJSON(m.result.coverage), worker: w, seed: t.seed });
      }
    });
    worker.on("error", reject);
    worker.on("exit", (code) => {
      if (code !== 0) reject(new Error(`fuzz worker ${w} exited with code ${code}`));
    });
  });
}

/** A FuzzResult as it crosses threads. */
export interface SerialResult extends Omit<FuzzResult, "coverage"> {
  coverage: Record<string, Record<string, number>>;
}

/** Merge workers' results (in worker order). */
export function mergeResults(rs: WorkerResult[]): FuzzResult {
  const coverage = new Coverage();
  for (const r of rs) coverage.merge(r.coverage);
  return {
    steps: rs.reduce((s, r) => s + r.steps, 0),
    episodes: rs.reduce((s, r) => s + r.episodes, 0),
    skipped: rs.reduce((s, r) => s + r.skipped, 0),
    findings: rs.flatMap((r) => r.findings),
    coverage,
  };
}
