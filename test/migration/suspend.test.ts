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
import { LO_A, LO_P, LO_RW } from "../../src/x86/pte.js";
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
    expect((err as Error).message).toMatch(/mmuext_op pin_l4_table/);
    const n2 = resumed(k, k2, fresh);
    expect(() => n2.switchTo()).toThrow(/pin_l4_table/);
    expect(dst.audit().problems).toEqual([]);
  });
});

describe("NetBSD: the alternate (APDP) and recursive slots at suspend", () => {
  /**
   * A NetBSD guest (eager pinning, APDP strategy) with 16 processes. `pmap_map_ptes` writes the
   * other pmap's L4 into the current L4's slot 510; a uniprocessor kernel left it there after
   * `pmap_unmap_ptes` (seed 001). The model's mapper always clears it, so the stale entry is
   * written here by hand: one read-only linear entry from `holder`'s L4 to `target`'s, which Xen
   * accepts because the target is a validated L4.
   */
  function guestWithApdp(holderBelowTarget: boolean, loaded: "holder" | "neither") {
    const { h, kernel: k } = boot({ strategy: "netbsd", pinning: "eager", mmuBatch: 2048 });
    const run = new WorkloadRun(k, "server", { seed: 3, iterations: 12 });
    for (let i = 0; i < 3; i++) run.next();
    const byPfn = [...run.procs].sort((a, b) => k.pfnOf(a.as.l4) - k.pfnOf(b.as.l4));
    const [low, other, high] = [byPfn[2], byPfn[5], byPfn[9]];
    const holder = holderBelowTarget ? low : high;
    const target = holderBelowTarget ? high : low;
    (loaded === "holder" ? holder : other).switchTo();
    k.setEntry(holder.as, holder.as.l4, APTE_SLOT, ...roEntry(target.as.l4));
    k.hc.flush();
    const f = h.frames;
    expect(entryMfn(entry(h, holder.as.l4, APTE_SLOT))).toBe(target.as.l4);
    expect([f.linear[holder.as.l4], f.linear[target.as.l4]]).toEqual([1, -1]); // one linear hop
    expect(h.audit().problems).toEqual([]);
    return { h, k, run, holder, target };
  }

  it("an APDP entry to a higher-pfn L4 left set: the restorer's ascending re-pin fails", async () => {
    const { h, k, run } = guestWithApdp(true, "neither");
    const { dst, sink, saved } = await migrate(h, k, run, { live: false, clearSlots: false });
    expect(saved.suspend.clearedSlots).toBe(false);
    // The saver normalised the entry to the target's pfn like any other; the restorer localised
    // it. Then it pins in ascending pfn order: the holder's L4 comes first, its slot 510 names an
    // L4 with no type yet, so Xen takes it as an L3 and validates it as one — its entries (RW
    // links to L3s) are not valid L3 entries, the holder's validation fails, and so the pin.
    await expect(restoreGuest(dst, 9, sink.chunks)).rejects.toThrow(
      /END at offset 0x[0-9a-f]+: Failed to pin batch of \d+ tables \(-22, \d+ done\)/,
    );
    expect(dst.domain(9)).toBeUndefined(); // the half-built domain is discarded
    expect(dst.audit().problems).toEqual([]);
  });

  it("the same entry in the loaded L4: setting the vCPU's context fails before any pin", async () => {
    const { h, k, run } = guestWithApdp(true, "holder");
    const { dst, sink } = await migrate(h, k, run, { live: false, clearSlots: false });
    // cr3 is validated first (arch_set_info_guest), and cr3 is the holder.
    await expect(restoreGuest(dst, 9, sink.chunks)).rejects.toThrow(
      /setting vcpu0's context failed \(-22\): its page tables do not validate/,
    );
    expect(dst.domain(9)).toBeUndefined();
    expect(dst.audit().problems).toEqual([]);
  });

  it("pointing the other way (the target pinned first) the model restores it: the order is the cause", async () => {
    const { h, k, run, holder, target } = guestWithApdp(false, "neither");
    const { dst, sink } = await migrate(h, k, run, { live: false, clearSlots: false });
    const { kernel: k2 } = await restoreGuest(dst, 9, sink.chunks);
    // The target's lower pfn is pinned (and validated as an L4) before the holder's, so the
    // holder's read-only entry is an ordinary linear entry to a validated L4 again.
    const h2 = moved(k, k2, holder.as);
    const t2 = moved(k, k2, target.as);
    expect(entryMfn(entry(dst, h2.l4, APTE_SLOT))).toBe(t2.l4);
    expect([dst.frames.linear[h2.l4], dst.frames.linear[t2.l4]]).toEqual([1, -1]);
    expect(dst.audit().problems).toEqual([]);
  });

  it("with the default clearSlots the same guest restores and runs on, its slots put back", async () => {
    const { h, k, run, holder } = guestWithApdp(true, "neither");
    const { dst, sink, saved } = await migrate(h, k, run, { live: false });
    expect(saved.suspend.clearedSlots).toBe(true);
    // pmap_xen_suspend cleared both slots in every L4 (the stream's copy has neither).
    expect(entry(h, holder.as.l4, APTE_SLOT)).toEqual([0, 0]);
    expect(entry(h, holder.as.l4, RECURSIVE_SLOT)).toEqual([0, 0]);
    const { kernel: k2, run: run2 } = await restoreGuest(dst, 9, sink.chunks);
    // pmap_xen_resume: each L4's recursive slot names its own new frame; APDP stays clear.
    for (const as of k2.spaces) {
      expect(entryMfn(entry(dst, as.l4, RECURSIVE_SLOT))).toBe(as.l4);
      expect(entry(dst, as.l4, APTE_SLOT)).toEqual([0, 0]);
    }
    expect(dst.audit().problems).toEqual([]);
    while (run2!.next()) {}
    expect(dst.audit().problems).toEqual([]);
  });

  for (const strategy of ["netbsd", "recursive"] as const) {
    it(`${strategy}: the recursive self slot alone survives without clearing (pfn on the wire, new mfn back)`, async () => {
      const { h, kernel: k } = boot({ strategy, pinning: "eager" });
      const run = new WorkloadRun(k, "server", { seed: 5, iterations: 12 });
      for (let i = 0; i < 4; i++) run.next();
      const old = new Map([...k.spaces].map((as, i) => [i, as.l4]));
      for (const as of k.spaces) expect(entryMfn(entry(h, as.l4, RECURSIVE_SLOT))).toBe(as.l4);
      const { dst, sink, saved } = await migrate(h, k, run, { live: false, clearSlots: false });
      expect(saved.suspend.clearedSlots).toBe(false); // the resume writes nothing back
      const { kernel: k2, run: run2 } = await restoreGuest(dst, 9, sink.chunks);
      [...k2.spaces].forEach((as, i) => {
        expect(as.l4).not.toBe(old.get(i));
        const e = entry(dst, as.l4, RECURSIVE_SLOT);
        expect(entryMfn(e)).toBe(as.l4); // localised to the L4's own new frame
        expect(e[0] & LO_RW).toBe(0); // still read-only, as Xen requires
      });
      expect(dst.frames.linear[k2.current.l4]).toBe(0); // a self map holds no linear count
      while (run2!.next()) {}
      expect(dst.audit().problems).toEqual([]);
    });
  }
});

describe("direct-mfn cannot suspend", () => {
  it("refuses with a GuestError, and the guest runs on where it is", async () => {
    const { h, kernel: k } = boot({ strategy: "direct-mfn" });
    const why = /direct-mfn cannot suspend: its direct map is laid out by machine frame number/;
    expect(() => prepareSuspend(k)).toThrow(GuestError);
    expect(() => prepareSuspend(k)).toThrow(why);
    const lock = new RwLock();
    const save = saveGuest(h, k, null, new MemorySink(), {
      live: false,
      lock: { acquireWrite: () => lock.acquireWrite(), releaseWrite: () => lock.releaseWrite() },
    });
    await expect(save).rejects.toThrow(GuestError);
    await expect(save).rejects.toThrow(why);
    expect(lock.writeHeld).toBe(false); // a failed save gives the MFN lock back
    expect(h.domain(1)!.suspended).toBe(false);
    const p = new Process(k);
    p.switchTo();
    p.touchRange(p.mmap(4 * PAGE), 4 * PAGE, true);
    expect(h.audit().problems).toEqual([]);
  });
});

const tick = () => new Promise<void>((r) => setImmediate(r));
async function ticks(n: number) {
  for (let i = 0; i < n; i++) await tick();
}

/** Let pending promise callbacks run. */
const settle = () => ticks(2);

describe("RwLock (seed 001's MFN lock)", () => {
  it("lets several readers hold it at once; a writer waits for all of them", async () => {
    const l = new RwLock();
    await Promise.all([l.acquireRead(), l.acquireRead(), l.acquireRead()]);
    expect(l.readersHolding).toBe(3);
    let wrote = false;
    void l.acquireWrite().then(() => {
      wrote = true;
    });
    l.releaseRead();
    l.releaseRead();
    await settle();
    expect(wrote).toBe(false);
    l.releaseRead();
    await settle();
    expect(wrote).toBe(true);
    expect(l.writeHeld).toBe(true);
    expect(l.readersHolding).toBe(0);
  });

  it("is write-preferring: once a writer waits, new readers wait behind it", async () => {
    const l = new RwLock();
    const log: string[] = [];
    await l.acquireRead();
    void l.acquireWrite().then(() => log.push("writer"));
    void l.acquireRead().then(() => log.push("late reader"));
    await settle();
    expect(log).toEqual([]); // the late reader does not slip in while only readers hold it
    expect(l.readersHolding).toBe(1);
    l.releaseRead();
    await settle();
    expect(log).toEqual(["writer"]);
    l.releaseWrite();
    await settle();
    expect(log).toEqual(["writer", "late reader"]);
    expect(l.readersHolding).toBe(1);
  });

  it("hands over in order: queued writers one at a time, then every queued reader at once", async () => {
    const l = new RwLock();
    const log: string[] = [];
    await l.acquireRead();
    void l.acquireWrite().then(() => log.push("w1"));
    void l.acquireRead().then(() => log.push("r1"));
    void l.acquireWrite().then(() => log.push("w2"));
    void l.acquireRead().then(() => log.push("r2"));
    l.releaseRead();
    await settle();
    expect(log).toEqual(["w1"]);
    l.releaseWrite();
    await settle();
    expect(log).toEqual(["w1", "w2"]); // writers first, even though r1 asked before w2
    l.releaseWrite();
    await settle();
    expect(log).toEqual(["w1", "w2", "r1", "r2"]);
    expect(l.readersHolding).toBe(2);
    expect(l.writeHeld).toBe(false);
  });

  it("a read acquired again by a holder while a writer waits never comes (why rwlock(9) forbids recursion)", async () => {
    const l = new RwLock();
    let again = false;
    await l.acquireRead();
    void l.acquireWrite();
    void l.acquireRead().then(() => {
      again = true;
    });
    await settle();
    expect(again).toBe(false); // the holder would wait for the writer, which waits for the holder
  });

  it("refuses releases nobody holds", () => {
    const l = new RwLock();
    expect(() => l.releaseRead()).toThrow("releaseRead without a reader");
    expect(() => l.releaseWrite()).toThrow("releaseWrite without the writer");
  });
});

describe("the MFN lock around a migration (seed 001)", () => {
  interface Use {
    mfn: number;
    ok: boolean;
    after: boolean;
  }

  /**
   * Guest tasks that hold a machine frame number across a wait: look up the mfn of a page they
   * own, wait a few ticks (a queued update, a foreign mapping being set up), then use it — here
   * checked against the host the guest runs on *now*. `g.kernel` is swapped to the resumed
   * kernel when the migration completes.
   */
  async function scenario(o: { lock: boolean; live: boolean }) {
    const { h, kernel: k } = boot();
    const g = { kernel: k, migrated: false, stop: false };
    const pfns = k.op("alloc", () => [k.allocZeroed(), k.allocZeroed(), k.allocZeroed(), k.allocZeroed()]);
    const lock = new RwLock();
    const uses: Use[][] = pfns.map(() => []);
    let duringPrecopy = 0;
    let phase: "before" | "precopy" | "suspended" | "after" = "before";

    const task = async (i: number) => {
      const pfn = pfns[i];
      while (!g.stop) {
        if (o.lock) await lock.acquireRead();
        const mfn = g.kernel.mfnOf(pfn);
        await ticks(1 + i);
        const kk = g.kernel;
        const f = kk.h.frames;
        const ok = f.ownerOf(mfn) === kk.domid && f.m2pLo[mfn] === pfn && f.m2pHi[mfn] === 0;
        if (ok) kk.h.mem.frameForWrite(mfn)[0]++; // the use: a count in the page itself
        if (phase === "precopy") duringPrecopy++;
        uses[i].push({ mfn, ok, after: g.migrated });
        if (o.lock) lock.releaseRead();
        await tick();
      }
    };
    const running = pfns.map((_, i) => task(i));
    await ticks(12);

    phase = "precopy";
    const sink = new MemorySink();
    const saved = await saveGuest(h, k, null, sink, {
      live: o.live,
      onBatch: tick, // the guest's tasks run between batches of a live round
      lock: o.lock
        ? {
            acquireWrite: async () => {
              await lock.acquireWrite();
              phase = "suspended";
            },
            releaseWrite: () => lock.releaseWrite(),
          }
        : undefined,
    });
    const dst = otherHost(h.frames.frames);
    const { kernel: k2 } = await restoreGuest(dst, 9, sink.chunks);
    g.kernel = k2;
    g.migrated = true;
    phase = "after";
    if (o.lock) lock.releaseWrite(); // the suspend's writer lets go once the guest has resumed
    while (uses.some((u) => u.filter((x) => x.after).length < 3)) await tick();
    g.stop = true;
    await Promise.all(running);
    expect(dst.audit().problems).toEqual([]);
    return { k, k2, dst, pfns, uses, saved, duringPrecopy };
  }

  it("with the lock: the suspend waits for every holder, no MFN is used stale, and the tasks go on with new frames", async () => {
    const { k, k2, dst, pfns, uses } = await scenario({ lock: true, live: false });
    const stale = uses.flat().filter((u) => !u.ok);
    expect(stale).toEqual([]);
    pfns.forEach((pfn, i) => {
      const before = uses[i].filter((u) => !u.after);
      const after = uses[i].filter((u) => u.after);
      expect(before.length).toBeGreaterThan(0);
      expect(after.length).toBeGreaterThanOrEqual(3);
      expect(new Set(before.map((u) => u.mfn))).toEqual(new Set([k.mfnOf(pfn)]));
      expect(new Set(after.map((u) => u.mfn))).toEqual(new Set([k2.mfnOf(pfn)]));
      expect(k2.mfnOf(pfn)).not.toBe(k.mfnOf(pfn));
      // Every use landed in the page: the count carried over with its contents.
      expect(dst.mem.frame(k2.mfnOf(pfn))[0]).toBe(uses[i].length);
    });
  });

  it("with the lock, live: the tasks run during pre-copy; only the suspend waits for them", async () => {
    const { uses, saved, duringPrecopy } = await scenario({ lock: true, live: true });
    expect(saved.rounds.length).toBeGreaterThanOrEqual(2);
    expect(duringPrecopy).toBeGreaterThan(0);
    expect(uses.flat().filter((u) => !u.ok)).toEqual([]);
  });

  it("without the lock: a task that looked its MFN up before the migration uses it on the new host", async () => {
    const { k, dst, pfns, uses } = await scenario({ lock: false, live: false });
    const stale = uses.flat().filter((u) => !u.ok);
    expect(stale.length).toBeGreaterThanOrEqual(1);
    for (const u of stale) {
      // An old frame number, used after the swap: on this host it is another domain's frame.
      expect(u.after).toBe(true);
      expect(pfns.map((p) => k.mfnOf(p))).toContain(u.mfn);
      expect(dst.frames.ownerOf(u.mfn)).not.toBe(9);
    }
  });
});
