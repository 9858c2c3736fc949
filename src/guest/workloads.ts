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
import { Process, type Vma } from "./process.js";
import type { WorkloadName } from "./report.js";

/** mulberry32: a small, fast, seeded generator whose state is one number (saved with the guest). */
export class Rng {
  constructor(public state: number) {
    this.state = state >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** mulberry32 as a function. */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
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
  const run = new WorkloadRun(k, name, o);
  while (run.next()) {}
}

/** A workload's progress, saved with the guest across a save or migration (plain data, no frames). */
export interface WorkloadState {
  name: WorkloadName;
  iterations: number;
  mapped: number;
  frontend: number;
  step: number;
  rng: number;
  /** Processes by pid, with their address space (index into the kernel's saved spaces). */
  procs: { pid: number; as: number; vmas: Vma[]; exited: boolean }[];
  bases: number[];
  bytes: number;
}

/**
 * A workload as a sequence of steps — set-up, one step per iteration, tear-down — so that a
 * guest can be suspended between two steps (saved, migrated) and go on elsewhere: `next()` runs
 * one step and says whether any remain.
 */
export class WorkloadRun {
  readonly name: WorkloadName;
  readonly iterations: number;
  readonly mapped: number;
  readonly frontend: number;
  step = 0;
  readonly rand: Rng;
  procs: Process[] = [];
  bases: number[] = [];
  bytes = 0;

  constructor(
    readonly k: Kernel,
    name: WorkloadName,
    o: WorkloadOptions,
  ) {
    this.name = name;
    this.iterations = o.iterations ?? DEFAULT_ITERATIONS[name];
    this.mapped = o.mapped ?? -1;
    this.frontend = o.frontend ?? -1;
    this.rand = new Rng(o.seed);
  }

  /** Steps in all: set-up, the iterations, tear-down (none for boot). */
  get steps(): number {
    return this.name === "boot" ? 0 : this.iterations + 2;
  }

  get done(): boolean {
    return this.step >= this.steps;
  }

  /** Run the next step; false once there is none left. */
  next(): boolean {
    if (this.done) return false;
    const i = this.step;
    if (i === 0) this.setUp();
    else if (i <= this.iterations) this.iterate();
    else this.tearDown();
    this.step++;
    return !this.done;
  }

  private setUp() {
    const k = this.k;
    const ram = k.pages * 4096;
    const one = (bytes: number) => {
      const p = new Process(k);
      p.switchTo();
      this.procs = [p];
      this.bytes = bytes;
      if (bytes > 0) {
        this.bases = [p.mmap(bytes)];
        p.touchRange(this.bases[0], bytes, true);
      }
    };
    switch (this.name) {
      case "fork-exec-exit":
        return one(this.mapped >= 0 ? this.mapped : Math.min(64 * MiB, ram / 8));
      case "cow-storm":
        return one(this.mapped >= 0 ? this.mapped : Math.min(16 * MiB, ram / 16));
      case "mmap-churn":
        return one(0);
      case "server": {
        const count = 16;
        const ws = Math.min(4 * MiB, Math.floor(ram / 64 / count / 4096) * 4096);
        this.bytes = ws;
        for (let i = 0; i < count; i++) {
          const p = new Process(k);
          p.switchTo();
          this.bases.push(p.mmap(ws));
          this.procs.push(p);
        }
        return;
      }
      case "grant-io":
        return grantIoSetUp(this);
      case "boot":
        return;
    }
  }

  private iterate() {
    const rand = () => this.rand.next();
    const [p] = this.procs;
    switch (this.name) {
      case "fork-exec-exit":
        return forkExecExit(p);
      case "mmap-churn": {
        const pages = 1 + Math.floor(rand() * 128);
        const a = p.mmap(pages * 4096);
        p.touchRange(a, pages * 4096, true);
        p.mprotect(a, Math.ceil(pages / 2) * 4096, false, false);
        for (let j = 0; j < 4; j++) p.touch(a + Math.floor(rand() * pages) * 4096, false);
        p.munmap(a, pages * 4096);
        return;
      }
      case "cow-storm": {
        const base = this.bases[0];
        const child = p.fork();
        child.switchTo();
        child.touchRange(base, this.bytes, true);
        child.exit();
        p.switchTo();
        // The parent's pages are shared no more: its next writes reuse them in place.
        p.touchRange(base, this.bytes, true);
        return;
      }
      case "server": {
        const ws = this.bytes;
        const j = Math.floor(rand() * this.procs.length);
        this.procs[j].switchTo();
        for (let t = 0; t < 8; t++)
          this.procs[j].touch(this.bases[j] + Math.floor(rand() * (ws / 4096)) * 4096, rand() < 0.5);
        return;
      }
      case "grant-io":
        return grantIoBatch(this, rand);
      case "boot":
        return;
    }
  }

  private tearDown(): void {
    for (const p of this.procs) if (!p.exited) p.exit();
  }

  /** The progress as plain data; `asIndex` names an address space by its index in the kernel's saved state. */
  save(asIndex: (as: Process["as"]) => number): WorkloadState {
    return {
      name: this.name,
      iterations: this.iterations,
      mapped: this.mapped,
      frontend: this.frontend,
      step: this.step,
      rng: this.rand.state,
      procs: this.procs.map((p) => ({
        pid: p.pid,
        as: p.exited ? -1 : asIndex(p.as),
        vmas: p.vmas.map((v) => ({ ...v })),
        exited: p.exited,
      })),
      bases: [...this.bases],
      bytes: this.bytes,
    };
  }

  /** A saved run, resumed on kernel `k` (`asAt` gives the resumed address space of an index). */
  static load(k: Kernel, s: WorkloadState, asAt: (i: number) => Process["as"]): WorkloadRun {
    const run = new WorkloadRun(k, s.name, {
      seed: 0,
      iterations: s.iterations,
      mapped: s.mapped,
      frontend: s.frontend,
    });
    run.rand.state = s.rng >>> 0;
    run.step = s.step;
    run.procs = s.procs.map((p) =>
      Process.resume(k, p.exited ? undefined : asAt(p.as), p.pid, p.vmas, p.exited),
    );
    run.bases = [...s.bases];
    run.bytes = s.bytes;
    return run;
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

/** Grant I/O set-up: the front-end grants pages to this kernel; one back-end process maps them. */
function grantIoSetUp(run: WorkloadRun): void {
  const k = run.k;
  const h: Host = k.h;
  const frontend = run.frontend;
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
  run.procs = [p];
  run.bytes = refs;
  run.bases = [p.mmap(refs * 4096)];
}

/** One grant I/O batch: map some of the granted pages into the back-end's page tables, read, unmap. */
function grantIoBatch(run: WorkloadRun, rand: () => number): void {
  const k = run.k;
  const h: Host = k.h;
  const frontend = run.frontend;
  const refs = run.bytes;
  const p = run.procs[0];
  const base = run.bases[0];
  {
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
}
