/**
 * Workloads: deterministic process activity on a booted guest, driven by a
 * seeded generator (the same seed gives the same hypercalls, byte for byte).
 *  - boot: nothing beyond booting.
 *  - fork-exec-exit: lmbench's shape — a parent with `mapped` bytes of
 *    touched memory forks; the child runs, execs a small image, touches its
 *    stack and exits; the parent reaps it.
 *  - mmap-churn: map anonymous regions of random size, touch them, protect
 *    half read-only, unmap.
 *  - cow-storm: a parent with touched memory forks; the child writes every
 *    page (a copy-on-write fault each) and exits.
 *  - server: many processes, round-robin context switches, each touching
 *    random pages of its working set.
 *  - grant-io: a front-end domain grants pages; a back-end process maps them
 *    into its page tables (GNTTABOP_map_grant_ref with GNTMAP_contains_pte),
 *    reads them and unmaps them, batch after batch.
 */

import {
  GNTMAP_contains_pte,
  GNTMAP_host_map,
  GNTMAP_readonly,
  GNTTABOP_map_grant_ref,
  GNTTABOP_unmap_grant_ref,
} from "../xen/grant.js";
import type { Host } from "../xen/host.js";
import { GuestError, type Kernel } from "./kernel.js";
import { indexAt } from "./layout.js";
import { Process } from "./process.js";
import type { WorkloadName } from "./report.js";

/** mulberry32: a small, fast, seeded generator. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface WorkloadOptions {
  seed: number;
  iterations?: number;
  /** Bytes the parent process maps and touches (fork-exec-exit, cow-storm). */
  mapped?: number;
  /** The front-end domain for grant-io. */
  frontend?: number;
}

const MiB = 2 ** 20;

/** Default iterations per workload. */
export const DEFAULT_ITERATIONS: Record<WorkloadName, number> = {
  boot: 0,
  "fork-exec-exit": 20,
  "mmap-churn": 50,
  "cow-storm": 4,
  server: 200,
  "grant-io": 8,
};

export function runWorkloadOn(k: Kernel, name: WorkloadName, o: WorkloadOptions): void {
  const n = o.iterations ?? DEFAULT_ITERATIONS[name];
  const rand = rng(o.seed);
  const ram = k.pages * 4096;
  switch (name) {
    case "boot":
      return;
    case "fork-exec-exit": {
      const parent = new Process(k);
      const bytes = o.mapped ?? Math.min(64 * MiB, ram / 8);
      parent.switchTo();
      const base = parent.mmap(bytes);
      parent.touchRange(base, bytes, true);
      for (let i = 0; i < n; i++) forkExecExit(parent);
      parent.exit();
      return;
    }
    case "mmap-churn": {
      const p = new Process(k);
      p.switchTo();
      for (let i = 0; i < n; i++) {
        const pages = 1 + Math.floor(rand() * 128);
        const a = p.mmap(pages * 4096);
        p.touchRange(a, pages * 4096, true);
        p.mprotect(a, Math.ceil(pages / 2) * 4096, false, false);
        for (let j = 0; j < 4; j++) p.touch(a + Math.floor(rand() * pages) * 4096, false);
        p.munmap(a, pages * 4096);
      }
      p.exit();
      return;
    }
    case "cow-storm": {
      const parent = new Process(k);
      const bytes = o.mapped ?? Math.min(16 * MiB, ram / 16);
      parent.switchTo();
      const base = parent.mmap(bytes);
      parent.touchRange(base, bytes, true);
      for (let i = 0; i < n; i++) {
        const child = parent.fork();
        child.switchTo();
        child.touchRange(base, bytes, true);
        child.exit();
        parent.switchTo();
        // The parent's pages are shared no more: its next writes reuse them in place.
        parent.touchRange(base, bytes, true);
      }
      parent.exit();
      return;
    }
    case "server": {
      const procs: Process[] = [];
      const count = 16;
      const ws = Math.min(4 * MiB, Math.floor(ram / 64 / count / 4096) * 4096);
      const bases: number[] = [];
      for (let i = 0; i < count; i++) {
        const p = new Process(k);
        p.switchTo();
        bases.push(p.mmap(ws));
        procs.push(p);
      }
      for (let i = 0; i < n; i++) {
        const j = Math.floor(rand() * count);
        procs[j].switchTo();
        for (let t = 0; t < 8; t++)
          procs[j].touch(bases[j] + Math.floor(rand() * (ws / 4096)) * 4096, rand() < 0.5);
      }
      for (const p of procs) p.exit();
      return;
    }
    case "grant-io":
      grantIo(k, n, o.frontend ?? -1, rand);
      return;
  }
}

/** One lmbench-style fork + exec + exit of `parent`'s child. */
export function forkExecExit(parent: Process): void {
  const child = parent.fork();
  child.switchTo();
  child.exec();
  child.touch(child.vmas[child.vmas.length - 1].start, true);
  child.exit();
  parent.switchTo();
}

/** Grant I/O: the back-end (this kernel) maps batches of the front-end's granted pages. */
function grantIo(k: Kernel, batches: number, frontend: number, rand: () => number): void {
  const h: Host = k.h;
  const fe = h.domain(frontend);
  if (!fe) throw new GuestError("grant-io needs a front-end domain");
  const refs = Math.min(32, fe.grants.nrEntries - 8);
  for (let r = 0; r < refs; r++) {
    if (!h.grantWrite(frontend, 8 + r, { to: k.domid, frame: fe.p2m[r], readonly: r % 2 === 1 })) {
      throw new GuestError("front-end could not grant a page");
    }
  }
  const p = new Process(k);
  p.switchTo();
  const base = p.mmap(refs * 4096);
  for (let b = 0; b < batches; b++) {
    const n = 1 + Math.floor(rand() * refs);
    const maps: { host_addr: bigint; flags: number; ref: number; dom: number }[] = [];
    for (let i = 0; i < n; i++) {
      const va = base + i * 4096;
      k.walkToL1(p.as, va, true);
      k.hc.flush();
      maps.push({
        host_addr: BigInt(k.wMfn * 4096 + indexAt(va, 1) * 8),
        flags: GNTMAP_host_map | GNTMAP_contains_pte | (i % 2 === 1 ? GNTMAP_readonly : 0),
        ref: 8 + i,
        dom: frontend,
      });
    }
    k.hc.flush();
    const r = k.op("grant:map", () => h.grantTableOp(k.domid, 0, GNTTABOP_map_grant_ref, maps));
    k.hc.transitions.grant_table_op = (k.hc.transitions.grant_table_op ?? 0) + 1;
    const handles = r.results.map((x, i) => {
      if (x.status !== 0) throw new GuestError(`map_grant_ref ${i} failed: ${x.status}`);
      return x.handle as number;
    });
    for (let i = 0; i < n; i++) p.touch(base + i * 4096, false);
    const r2 = k.op("grant:unmap", () =>
      h.grantTableOp(
        k.domid,
        0,
        GNTTABOP_unmap_grant_ref,
        handles.map((handle, i) => ({ host_addr: maps[i].host_addr, dev_bus_addr: 0n, handle })),
      ),
    );
    k.hc.transitions.grant_table_op++;
    if (r2.results.some((x) => x.status !== 0)) throw new GuestError("unmap_grant_ref failed");
  }
  p.exit();
}
