/**
 * Faulting a memory's next slabs in on another thread, ahead of the thread that will fill them.
 *
 * The first store to a page of fresh memory is a page fault, and in a virtual machine the host
 * faults too: filling gigabytes of new frames (a restore, a migration's receiver) spends most
 * of its time there. QEMU's `-mem-prealloc` touches guest memory from helper threads for the
 * same reason. Here a worker thread allocates each slab buffer, stores a zero into every 4 KiB
 * page of it (so the kernel backs the page; a load would only map the shared zero page), and
 * transfers the buffers — without copying — to `PhysicalMemory.supplySlabs`. Buffers that are
 * not shared (SharedArrayBuffer) keep the filling thread's copies at full speed.
 *
 * The supply is pulled: the worker makes a batch when asked, and `poll()` asks while fewer than
 * two batches wait unused, up to the number of slabs wanted. A worker that fails or is slow
 * changes nothing but speed: the memory makes its own slabs when none is waiting.
 */

import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { PhysicalMemory } from "./memory.js";

/** The worker: on each message, `count` zero-filled buffers of `bytes`, every page stored to. */
const WORKER = `
const { parentPort, workerData } = require("node:worker_threads");
const { bytes } = workerData;
parentPort.on("message", (count) => {
  const bufs = [];
  for (let i = 0; i < count; i++) {
    const b = new ArrayBuffer(bytes);
    const w = new Int32Array(b);
    for (let o = 0; o < w.length; o += 1024) w[o] = 0;
    bufs.push(b);
  }
  parentPort.postMessage(bufs, bufs);
});
`;

/** Bytes per batch a worker makes. */
const BATCH_BYTES = 64 * 2 ** 20;

/**
 * Worker threads: two fault fresh memory in 1.8–2.8 s per 4 GiB here against 4.2–4.5 s for one
 * (the host handles each vCPU's faults apart), and three are slower than two on this 2-vCPU machine.
 */
export const PREFAULT_THREADS = Math.min(2, Math.max(1, availableParallelism()));

export class SlabPrefaulter {
  private readonly workers: Worker[] = [];
  /** Batches asked of each worker and not arrived. */
  private readonly pendingOf: number[] = [];
  private readonly batch: number;
  /** Slabs asked of the workers so far, and still to ask for. */
  private asked = 0;
  private readonly wanted: number;
  /** Slabs supplied to the memory. */
  supplied = 0;
  /** No more batches are asked for or taken, and the threads are ended. */
  private ended = false;

  /**
   * Start making `slabs` slabs for `mem` on `threads` workers, two batches per worker ahead of
   * their use. Throws if not even one worker can be started.
   */
  constructor(
    readonly mem: PhysicalMemory,
    slabs: number,
    threads = PREFAULT_THREADS,
  ) {
    if (!Number.isInteger(slabs) || slabs < 0)
      throw new RangeError(`slabs must be a whole number, got ${slabs}`);
    if (!Number.isInteger(threads) || threads < 1 || threads > 16)
      throw new RangeError(`threads must be a whole number from 1 to 16, got ${threads}`);
    this.wanted = slabs;
    this.batch = Math.max(1, Math.floor(BATCH_BYTES / mem.slabByteLength));
    for (let t = 0; t < threads; t++) {
      let worker: Worker;
      try {
        worker = new Worker(WORKER, { eval: true, workerData: { bytes: mem.slabByteLength } });
      } catch (e) {
        if (t === 0) throw e;
        break; // fewer threads than asked for (a resource limit): go on with those started
      }
      worker.unref();
      this.workers.push(worker);
      this.pendingOf.push(0);
      worker.on("message", (bufs: ArrayBuffer[]) => {
        this.pendingOf[t]--;
        if (this.ended) return;
        this.mem.supplySlabs(bufs);
        this.supplied += bufs.length;
        // All made: the threads end now rather than when the memory is done with (a receiver's
        // last round must not wait for threads to exit).
        if (this.supplied === this.wanted) this.end();
        else this.poll();
      });
      // A worker that fails leaves the memory to make its own slabs.
      worker.on("error", () => this.end());
    }
    this.poll();
  }

  /** Threads making slabs. */
  get threads(): number {
    return this.workers.length;
  }

  /** Ask for more batches while fewer than two per worker wait unused (call it as the slabs get used). */
  poll(): void {
    if (this.ended) return;
    const ahead = 2 * this.workers.length * this.batch;
    let pending = 0; // batches asked for and not arrived
    for (const p of this.pendingOf) pending += p;
    while (this.asked < this.wanted && this.mem.slabsReserved + pending * this.batch < ahead) {
      // The worker with the fewest batches under way.
      let t = 0;
      for (let u = 1; u < this.workers.length; u++) if (this.pendingOf[u] < this.pendingOf[t]) t = u;
      const n = Math.min(this.batch, this.wanted - this.asked);
      this.asked += n;
      pending++;
      this.pendingOf[t]++;
      this.workers[t].postMessage(n);
    }
  }

  /** Drop the slabs not used, and end the threads (without waiting for them to exit). */
  stop(): void {
    this.mem.releaseSlabReserve();
    this.end();
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    for (const w of this.workers) w.terminate().catch(() => {});
  }
}
