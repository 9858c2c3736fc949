/**
 * Saving and restoring a running guest kernel: the toolstack's saver and
 * restorer (save.ts, restore.ts) around the guest's own suspend and resume
 * (guest/suspend.ts). The guest's bookkeeping travels in an optional record
 * after the vCPU records; its memory travels as Xen sends it.
 *
 *  - `saveGuest`: live or not. While live, the guest runs on between batches
 *    (`stepsPerBatch` workload steps, or a caller's `onBatch`). The suspend
 *    callback takes the MFN lock's write side, runs the guest's suspend steps
 *    and suspends the domain. If anything fails after that, the suspend is
 *    cancelled: the guest resumes where it was, on the same frames.
 *  - `restoreGuest`: a stream → a new domain on another host → the guest
 *    resumed from its state record, ready to run on.
 */

import type { Kernel } from "../guest/kernel.js";
import {
  decodeGuestState,
  encodeGuestState,
  finishResume,
  prepareSuspend,
  REC_PVMMU_GUEST_STATE,
  resumeGuest,
  type SuspendOptions,
  type SuspendRecord,
  saveGuestState,
} from "../guest/suspend.js";
import type { WorkloadRun } from "../guest/workloads.js";
import type { Host } from "../xen/host.js";
import { type RestoreResult, restoreStream } from "./restore.js";
import { type RoundStats, type SaveOptions, type SaveReport, type StreamSink, saveDomain } from "./save.js";

export interface SaveGuestOptions extends SuspendOptions {
  live: boolean;
  /** Workload steps the guest runs between two batches of a live round (default 1). */
  stepsPerBatch?: number;
  /** Instead of workload steps: what the guest does between batches. */
  onBatch?(): void | Promise<void>;
  onRound?(r: RoundStats): void;
  /** Xen's precopy policy (default `simplePrecopyPolicy`). */
  policy?: SaveOptions["policy"];
  /** Held around the suspend: the MFN lock's write side (resolves once every reader is out). */
  lock?: { acquireWrite(): Promise<void>; releaseWrite(): void };
}

export interface SaveGuestResult extends SaveReport {
  /** The guest's suspend record (for a caller that must cancel the suspend later). */
  suspend: SuspendRecord;
}

/** Save a running guest to `sink`. On failure the guest is running again on this host. */
export async function saveGuest(
  h: Host,
  k: Kernel,
  run: WorkloadRun | null,
  sink: StreamSink,
  o: SaveGuestOptions,
): Promise<SaveGuestResult> {
  let rec: SuspendRecord | undefined;
  let state: Uint8Array | undefined;
  let locked = false;
  const steps = o.stepsPerBatch ?? 1;
  try {
    const report = await saveDomain(h, k.domid, sink, {
      live: o.live,
      onRound: o.onRound,
      policy: o.policy,
      onBatch:
        o.onBatch ??
        (() => {
          for (let i = 0; i < steps && run && !run.done; i++) run.next();
        }),
      suspend: async () => {
        if (o.lock) {
          await o.lock.acquireWrite();
          locked = true;
        }
        rec = prepareSuspend(k, o);
        state = encodeGuestState(saveGuestState(k, run, rec));
        h.suspendDomain(k.domid);
      },
      extraRecords: () => (state ? [[REC_PVMMU_GUEST_STATE, state]] : []),
    });
    return { ...report, suspend: rec! };
  } catch (e) {
    if (rec) cancelSuspend(h, k, rec);
    if (locked) o.lock?.releaseWrite();
    throw e;
  }
}

/** The suspend was cancelled (the save failed, or the receiver never resumed): run on here. */
export function cancelSuspend(h: Host, k: Kernel, rec: SuspendRecord): void {
  h.suspendDomain(k.domid, false);
  finishResume(k, rec);
}

/** Restore a guest from `source` as domain `domid` of `h` and resume it. */
export async function restoreGuest(
  h: Host,
  domid: number,
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  onProgress?: (bytes: number) => void,
): Promise<{ kernel: Kernel; run: WorkloadRun | null; restore: RestoreResult }> {
  const restore = await restoreStream(h, domid, source, { collect: [REC_PVMMU_GUEST_STATE] }, onProgress);
  try {
    return { ...resumeRestored(h, domid, restore.collected), restore };
  } catch (e) {
    if (h.domain(domid)) h.destroyDomain(domid);
    throw e;
  }
}

/** Resume the guest whose state record the restorer collected (the domain is restored). */
export function resumeRestored(
  h: Host,
  domid: number,
  collected: Map<number, Uint8Array[]>,
): { kernel: Kernel; run: WorkloadRun | null } {
  const rec = collected.get(REC_PVMMU_GUEST_STATE);
  if (rec?.length !== 1) throw new Error("the stream carries no guest state record: nothing to resume");
  return resumeGuest(h, domid, decodeGuestState(rec[0]));
}

/** A sink that keeps the stream in memory (tests, tools). */
export class MemorySink implements StreamSink {
  readonly chunks: Uint8Array[] = [];
  bytes = 0;
  write(chunks: Uint8Array[]): void {
    for (const c of chunks) {
      this.chunks.push(c);
      this.bytes += c.length;
    }
  }
  /** The whole stream as one buffer. */
  concat(): Uint8Array {
    const out = new Uint8Array(this.bytes);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

export { guestMemoryHash } from "../guest/hash.js";
