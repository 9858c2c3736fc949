/**
 * Warming a receiving host before a guest's downtime depends on it.
 *
 * The end of a restore — setting the vCPU context (which validates the guest's whole page-table
 * tree), re-pinning every table, rewriting the P2M list — runs once per migration, while the
 * guest is paused. In a fresh Node.js process that code has never run: V8 interprets it, then
 * compiles it while the guest waits (tens of milliseconds for a 4 GiB guest, about half its
 * downtime). Xen's restore is C, compiled ahead of time. So a receiving host first restores a
 * small guest of its own into a throwaway host, a few times, and throws it away: the same code
 * paths, compiled before any guest arrives. Nothing of it stays; the host that receives the real
 * guest is made afterwards (`ReceiveOptions.makeHost`).
 */

import { bootOnHost } from "../guest/run.js";
import { Host } from "../xen/host.js";
import { MemorySink, restoreGuest, saveGuest } from "./guest.js";

const MiB = 2 ** 20;
/** The throwaway guest: small, booted the way the benchmarks' and the tour's guests are. */
const WARM_GUEST_BYTES = 64 * MiB;
/** Restores of it: enough for V8 to optimise the validation and P2M loops. */
const WARM_RESTORES = 6;

/** Save a small guest once and restore it `WARM_RESTORES` times into throwaway hosts. */
export async function warmRestorePath(): Promise<void> {
  const { h, kernel } = bootOnHost({
    strategy: "direct-pfn",
    pinning: "linux",
    workload: "boot",
    memoryBytes: WARM_GUEST_BYTES,
    seed: 1,
  });
  const sink = new MemorySink();
  await saveGuest(h, kernel, null, sink, { live: false });
  for (let i = 0; i < WARM_RESTORES; i++) {
    await restoreGuest(new Host({ memoryMiB: 2 * (WARM_GUEST_BYTES / MiB) }), 1, sink.chunks);
  }
}
