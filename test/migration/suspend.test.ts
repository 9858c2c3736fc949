import { describe, expect, it } from "vitest";
import { HypercallFailed } from "../../src/guest/hypercalls.js";
import { type AddressSpace, GuestError, type Kernel } from "../../src/guest/kernel.js";
import { APTE_SLOT, RECURSIVE_SLOT } from "../../src/guest/layout.js";
import { RwLock } from "../../src/guest/mfnlock.js";
import { Process } from "../../src/guest/process.js";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { prepareSuspend } from "../../src/guest/suspend.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { MemorySink, restoreGuest, saveGuest } from "../../src/migration/guest.js";
import { LO_A, LO_P } from "../../src/x86/pte.js";
import { F_PINNED } from "../../src/xen/frametable.js";
import { Host } from "../../src/xen/host.js";

const MiB = 2 ** 20;
const PAGE = 4096;

function boot(o: Partial<RunOptions> = {}) {
  return bootOnHost({
    strategy: "direct-pfn",
    pinning: "linux",
    workload: "boot",
    memoryBytes: 64 * MiB,
    seed: 1,
    ...o,
  });
}

/** `as` of kernel `from`, as the resumed kernel `to` knows it (spaces travel in order). */
function moved(from: Kernel, to: Kernel, as: AddressSpace): AddressSpace {
  const i = [...from.spaces].indexOf(as);
  expect(i).toBeGreaterThanOrEqual(0);
  return [...to.spaces][i];
}

/** A process of the source kernel, on the resumed one. */
function resumed(from: Kernel, to: Kernel, p: Process): Process {
  return Process.resume(to, moved(from, to, p.as), p.pid, p.vmas, p.exited);
}

/** Entry `i` of frame `mfn` on `h`: [lo, hi]. */
function entry(h: Host, mfn: number, i: number): [number, number] {
  const t = h.mem.frame(mfn);
  return [t[i * 2], t[i * 2 + 1]];
}

function entryMfn([lo, hi]: [number, number]): number {
  return (hi & 0xfffff) * 0x100000 + (lo >>> 12);
}

/** Read-only linear entry naming L4 `mfn` (the shape Xen accepts between two L4s). */
function roEntry(mfn: number): [number, number] {
  return [((mfn % 0x100000) * PAGE + (LO_P | LO_A)) >>> 0, Math.floor(mfn / 0x100000)];
}

/**
 * A destination host whose low frames belong to another domain (allocated first), so none of
 * the guest's frames on the source host names a frame the restored guest owns.
 */
function otherHost(srcFrames: number): Host {
  const dst = new Host({ memoryMiB: Math.ceil((srcFrames * PAGE) / MiB) + 200 });
  dst.createDomain({ domid: 5, pages: srcFrames });
  return dst;
}

async function migrate(h: Host, k: Kernel, run: WorkloadRun | null, o: Parameters<typeof saveGuest>[4]) {
  const sink = new MemorySink();
  const saved = await saveGuest(h, k, run, sink, o);
  const dst = otherHost(h.frames.frames);
  return { saved, dst, sink };
}

describe("Linux: xen_mm_pin_all before suspend", () => {
  function guestWithUnrunSpaces() {
    const { h, kernel: k } = boot();
    const parent = new Process(k);
    parent.switchTo();
    const base = parent.mmap(16 * PAGE);
    parent.touchRange(base, 16 * PAGE, true);
    const child = parent.fork(); // never run: under "linux" its tables are plain pages
    const fresh = new Process(k); // never activated at all
    expect(child.as.validated).toBe(false);
    expect(fresh.as.validated).toBe(false);
    expect(parent.as.validated).toBe(true);
    return { h, k, parent, child, fresh, base };
  }

  it("pins the unpinned spaces for the save; after restore they activate, and are unpinned again", async () => {
    const { h, k, parent, child, fresh, base } = guestWithUnrunSpaces();
    const want = parent.touch(base + 3 * PAGE, false);
    const { saved, dst, sink } = await migrate(h, k, null, { live: false });
    expect(saved.suspend.savePinned).toEqual([child.as, fresh.as]);

    const { kernel: k2 } = await restoreGuest(dst, 9, sink.chunks);
    expect(dst.audit().problems).toEqual([]);
    const f = dst.frames;
    // xen_mm_unpin_all: exactly the save-pinned spaces are unpinned again …
    for (const p of [child, fresh]) {
      const as = moved(k, k2, p.as);
      expect(as.validated).toBe(false);
      expect(f.flags[as.l4] & F_PINNED).toBe(0);
      expect(f.flags[as.userL4] & F_PINNED).toBe(0);
    }
    // … the ones that were pinned before stay pinned.
    for (const as of [k2.kernelAs, moved(k, k2, parent.as)]) {
      expect(as.validated).toBe(true);
      expect(f.flags[as.l4] & F_PINNED).toBe(F_PINNED);
    }

    // The child runs for the first time on the new host: pinned now, it sees the parent's memory.
    const c2 = resumed(k, k2, child);
    c2.switchTo();
    expect(c2.as.validated).toBe(true);
    expect(c2.touch(base + 3 * PAGE, false)).toBe(want);
    c2.touch(base, true, 42); // copy-on-write on the new host
    expect(c2.touch(base, false)).toBe(42);
    const n2 = resumed(k, k2, fresh);
    n2.switchTo();
    n2.touchRange(n2.mmap(4 * PAGE), 4 * PAGE, true);
    expect(dst.audit().problems).toEqual([]);
  });

  it("without pinAll the unrun spaces travel as NOTAB with raw MFNs, and Xen refuses to pin them", async () => {
    const { h, k, child, fresh } = guestWithUnrunSpaces();
    const oldL4 = child.as.l4;
    const oldKernelSlot = entryMfn(entry(h, oldL4, 511));
    const { saved, dst, sink } = await migrate(h, k, null, { live: false, pinAll: false });
    expect(saved.suspend.savePinned).toEqual([]);

    const { kernel: k2 } = await restoreGuest(dst, 9, sink.chunks);
    expect(dst.audit().problems).toEqual([]);
    const c2 = resumed(k, k2, child);
    // The child's L4 arrived as plain data: its kernel-half entry still names the source's frame,
    // which on this host is another domain's.
    const stale = entryMfn(entry(dst, c2.as.l4, 511));
    expect(stale).toBe(oldKernelSlot);
    expect(dst.frames.ownerOf(stale)).not.toBe(9);
    let err: unknown;
    try {
      c2.switchTo();
    } catch (e) {
      err = e;
    }
    // Xen validates the L4 on the pin and finds a frame the guest does not own: -EINVAL.
    expect(err).toBeInstanceOf(HypercallFailed);
    expect((err as HypercallFailed).rc).toBe(-22);
    expect((err as Error).message).toMatch(/mmuext_op pin_l4_table .*|pin_l4_table/);
    const n2 = resumed(k, k2, fresh);
    expect(() => n2.switchTo()).toThrow(/pin_l4_table/);
    expect(dst.audit().problems).toEqual([]);
  });
});

describe("PROBE netbsd", () => {
  for (const cur of ["holder", "target", "other"] as const) {
    it(`probe ${cur}`, async () => {
      const { h, kernel: k } = boot({ strategy: "netbsd", pinning: "eager", mmuBatch: 2048 });
      const run = new WorkloadRun(k, "server", { seed: 3, iterations: 20 });
      for (let i = 0; i < 4; i++) run.next();
      const procs = [...run.procs].sort((a, b) => k.pfnOf(a.as.l4) - k.pfnOf(b.as.l4));
      const A = procs[2];
      const B = procs[9];
      const C = procs[5];
      console.log("pfns", k.pfnOf(A.as.l4), k.pfnOf(B.as.l4), k.pfnOf(k.kernelAs.l4));
      (cur === "holder" ? A : cur === "target" ? B : C).switchTo();
      k.setEntry(A.as, A.as.l4, APTE_SLOT, ...roEntry(B.as.l4));
      k.hc.flush();
      console.log("lin", h.frames.linear[A.as.l4], h.frames.linear[B.as.l4], h.audit().problems);
      const { dst, sink } = await migrate(h, k, run, { live: false, clearSlots: false });
      try {
        const r = await restoreGuest(dst, 9, sink.chunks);
        console.log(cur, "RESTORED", dst.audit().problems);
        while (r.run!.next()) {}
        console.log(cur, "RAN", dst.audit().problems);
      } catch (e) {
        console.log(cur, "FAILED", (e as Error).message, dst.domain(9));
      }
    });
  }
});
