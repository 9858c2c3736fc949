/** A fuzz worker thread (src/fuzz/parallel.ts): runs its task and posts progress and the result. */

import { parentPort, workerData } from "node:worker_threads";
import { fuzz } from "./engine.js";
import type { SerialResult, WorkerTask } from "./parallel.js";

const { opts } = workerData as WorkerTask;
const r = fuzz({
  ...opts,
  onProgress: (steps, findings) => parentPort?.postMessage({ type: "progress", steps, findings }),
});
const result: SerialResult = { ...r, coverage: r.coverage.toJSON() };
parentPort?.postMessage({ type: "done", result });
