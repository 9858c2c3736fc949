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

/** Bytes per batch the worker makes. */
const BATCH_BYTES = 64 * 2 ** 20;

export class SlabPrefaulter {
  private readonly worker: Worker;
  private readonly batch: number;
  /** Slabs asked of the worker so far, and still to ask for. */
  private asked = 0;
  private readonly wanted: number;
  /** Batches asked for and not arrived. */
  private pending = 0;
  /** Slabs supplied to the memory. */
  supplied = 0;
  private stopped = false;

  /** Start making `slabs` slabs for `mem`, a batch or two ahead of their use. */
  constructor(
    readonly mem: PhysicalMemory,
    slabs: number,
  ) {
    if (!Number.isInteger(slabs) || slabs < 0)
      throw new RangeError(`slabs must be a whole number, got ${slabs}`);
    this.wanted = slabs;
    this.batch = Math.max(1, Math.floor(BATCH_BYTES / mem.slabByteLength));
    this.worker = new Worker(WORKER, { eval: true, workerData: { bytes: mem.slabByteLength } });
    this.worker.unref();
    this.worker.on("message", (bufs: ArrayBuffer[]) => {
      this.pending--;
      if (this.stopped) return;
      this.mem.supplySlabs(bufs);
      this.supplied += bufs.length;
      this.poll();
    });
    // A worker that fails leaves the memory to make its own slabs.
    this.worker.on("error", () => {
      this.stopped = true;
    });
    this.poll();
  }

  /** Ask for another batch while fewer than two wait unused (call it as the slabs get used). */
  poll(): void {
    if (this.stopped) return;
    while (this.asked < this.wanted && this.mem.slabsReserved + this.pending * this.batch < 2 * this.batch) {
      const n = Math.min(this.batch, this.wanted - this.asked);
      this.asked += n;
      this.pending++;
      this.worker.postMessage(n);
    }
  }

  /** Stop the worker and drop the slabs not used. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.mem.releaseSlabReserve();
    await this.worker.terminate();
  }
}
