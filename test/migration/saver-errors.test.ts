/**
 * The saver's own error paths, as libxc's x86 PV saver takes them (xg_sr_save_x86_pv.c
 * `normalise_pagetable`, xg_sr_save.c `write_batch`, `suspend_domain`, `suspend_and_send_dirty`):
 *
 *  - a present L2–L4 entry with PSE (a superpage) fails the save with E2BIG;
 *  - a present entry naming a frame outside the guest's pseudophysical map (here: a grant
 *    mapping of another domain's frame in one of the guest's L1s) makes the page EAGAIN — sent
 *    as XTAB and put in the deferred set, resent with the dirty pages after the suspend — unless
 *    `ctx->dominfo` says the controller paused the domain, which makes it ERANGE;
 *  - `ctx->dominfo` is read when the save starts and again after the suspend, never in between;
 *  - a page still failing in the final pass goes as XTAB and the save completes without it
 *    (the deferred set is cleared after that pass).
 *
 * Every failure leaves nothing half-done: log-dirty off, the guest running (its suspend
 * cancelled), its memory as before, the stream without END (a receiver refuses it).
 */

import { describe, expect, it } from "vitest";
import { indexAt } from "../../src/guest/layout.js";
import { RwLock } from "../../src/guest/mfnlock.js";
import { Process } from "../../src/guest/process.js";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import {
  cancelSuspend,
  guestMemoryHash,
  MemorySink,
  restoreGuest,
  saveGuest,
} from "../../src/migration/guest.js";
import { restoreStream } from "../../src/migration/restore.js";
import { type PrecopyDecision, SaveError } from "../../src/migration/save.js";
import { decodePageData, PFINFO, REC_TYPE, StreamReader } from "../../src/migration/stream.js";
import { E2BIG, EINVAL, ERANGE } from "../../src/xen/abi.js";
import { F_VALIDATED } from "../../src/xen/frametable.js";
import {
  GNTMAP_contains_pte,
  GNTMAP_host_map,
  GNTTABOP_map_grant_ref,
  GNTTABOP_unmap_grant_ref,
} from "../../src/xen/grant.js";
import { Host } from "../../src/xen/host.js";

const MiB = 2 ** 20;
const PAGE = 4096;
const GUEST = 1;
const FRONTEND = 2;
const REF = 8;
const MAX_PFN = 64 * 256 - 1;

const opts: RunOptions = {
  strategy: "direct-pfn",
  pinning: "linux",
  workload: "server",
  memoryBytes: 64 * MiB,
  seed: 5,
  iterations: 60,
};

/** Exactly two live passes, then the suspend (so the rounds are 1, 2 and the final 3). */
const twoPasses = ({ iteration }: { iteration: number }): PrecopyDecision =>
  iteration >= 2 ? "stop" : "continue";

type Act = "unmap" | "touch";

/**
 * A booted guest with a back-end process whose L1 (covering `base`) holds a grant mapping of
 * the front-end domain's frame (GNTMAP_host_map | GNTMAP_contains_pte, as a Linux back-end or
 * gntdev maps one), and a workload. Every change the tests make to the guest goes through `act`
 * and is logged with the workload step it came after, so a run that never saved can replay it.
 */
function guest() {
  const { h, kernel: k } = bootOnHost(opts);
  const fe = h.createDomain({ domid: FRONTEND, pages: 16 });
  const foreign = fe.p2m[3];
  expect(h.grantWrite(FRONTEND, REF, { to: GUEST, frame: foreign })).toBe(true);
  const backend = new Process(k);
  backend.switchTo();
  const base = backend.mmap(2 * PAGE);
  k.op("walk", () => k.walkToL1(backend.as, base, true));
  const l1 = k.wMfn;
  const slot = indexAt(base, 1);
  const pte = BigInt(l1 * PAGE + slot * 8);
  const r = h.grantTableOp(GUEST, 0, GNTTABOP_map_grant_ref, [
    { host_addr: pte, flags: GNTMAP_host_map | GNTMAP_contains_pte, ref: REF, dom: FRONTEND },
  ]);
  expect(r.results[0].status).toBe(0);
  const handle = r.results[0].handle as number;
  const run = new WorkloadRun(k, opts.workload, { seed: opts.seed, iterations: opts.iterations });
  run.next();
  const log: [number, Act][] = [];
  const act = (a: Act) => {
    log.push([run.step, a]);
    if (a === "unmap") {
      const u = h.grantTableOp(GUEST, 0, GNTTABOP_unmap_grant_ref, [
        { host_addr: pte, dev_bus_addr: 0n, handle },
      ]);
      expect(u.results[0].status).toBe(0);
    } else {
      backend.switchTo();
      backend.touch(base + PAGE, true, 0x5a5a);
    }
  };
  const f = h.frames;
  // The L1 is a validated L1 of the guest; its grant entry names the front-end's frame.
  expect(f.flags[l1] & F_VALIDATED).toBe(F_VALIDATED);
  expect(entry(h, l1, slot)).toBe(foreign);
  expect(f.ownerOf(foreign)).toBe(FRONTEND);
  return { h, k, run, backend, base, l1, l1Pfn: k.pfnOf(l1), slot, foreign, act, log };
}

/** The frame entry `i` of table `mfn` names (0 when not present). */
function entry(h: Host, mfn: number, i: number): number {
  const t = h.mem.frame(mfn);
  return t[i * 2] & 1 ? (t[i * 2 + 1] & 0xfffff) * 0x100000 + (t[i * 2] >>> 12) : 0;
}

/** The hash a run that never saved ends with, having made the same changes after the same steps. */
function reference(log: [number, Act][]): string {
  const g = guest();
  for (const [step, a] of log) {
    while (g.run.step < step) g.run.next();
    g.act(a);
  }
  while (g.run.next()) {}
  return guestMemoryHash(g.k);
}

/** A sink that notes where each round ends in the stream. */
function roundSink() {
  const sink = new MemorySink();
  const ends: { round: number; final: boolean; end: number }[] = [];
  return {
    sink,
    ends,
    onRound: (r: { round: number; final: boolean }) => ends.push({ ...r, end: sink.bytes }),
  };
}

/**
 * A live save of `g` in two pre-copy passes, the workload taking a step per batch (`step`);
 * `afterPass(round)` runs as each pass ends.
 */
async function saveTwoPasses(
  g: ReturnType<typeof guest>,
  afterPass: (round: number) => void,
  step: () => void = () => {
    g.run.next();
  },
) {
  const { sink, ends, onRound } = roundSink();
  const saved = await saveGuest(g.h, g.k, g.run, sink, {
    live: true,
    policy: twoPasses,
    onBatch: step,
    onRound: (r) => {
      onRound(r);
      afterPass(r.round);
    },
  });
  return { saved, sink, ends };
}

interface Sent {
  round: number;
  type: number;
  /** The page as sent (normalised), for the types that carry one. */
  page?: Uint32Array;
}

/** Every PAGE_DATA entry for `pfn` with the round that sent it, and whether the stream has END. */
function inspect(stream: Uint8Array, ends: { end: number }[], pfn: number) {
  const reader = new StreamReader();
  reader.push(stream);
  const sent: Sent[] = [];
  for (let item = reader.next(); item !== undefined; item = reader.next()) {
    if (item.kind !== "record") continue;
    const rec = item.record;
    if (rec.type !== REC_TYPE.PAGE_DATA) continue;
    const pd = decodePageData(rec, MAX_PFN);
    const round = 1 + ends.findIndex((e) => rec.offset < e.end);
    for (let i = 0; i < pd.count; i++) {
      if (pd.pfns[i] !== pfn) continue;
      const off = pd.dataOffsets[i];
      const page = off < 0 ? undefined : new Uint32Array(rec.body.slice(off, off + PAGE).buffer);
      sent.push({ round, type: pd.types[i], page });
    }
  }
  return { sent, sawEnd: reader.sawEnd };
}

/** After a failed save: log-dirty off, the guest running, the stream refused by a receiver. */
async function nothingLeft(h: Host, sink: MemorySink) {
  const d = h.domain(GUEST)!;
  expect(d.dirtyLog).toBeNull();
  expect(d.suspended).toBe(false);
  expect(inspect(sink.concat(), [], -1).sawEnd).toBe(false);
  const dst = new Host({ memoryMiB: 160 });
  const free = dst.freeFrames();
  await expect(restoreStream(dst, 9, sink.chunks)).rejects.toThrow(/before the END record|ended before END/);
  expect(dst.domains.size).toBe(0);
  expect(dst.freeFrames()).toBe(free);
}

describe("E2BIG: a superpage in a page table", () => {
  /**
   * A 64-bit PV guest cannot make one: Xen's L2/L3/L4_DISALLOW_MASK is `base_disallow_mask`,
   * which leaves PSE out (mm.c arch_init_memory), so mmu_update refuses the entry and a guest
   * cannot write a validated table directly (shown below). The saver's check dates from Xen's
   * `allowsuperpage` option for PV guests (removed in 4.10, "x86: nuke PV superpage option and
   * code"); the test plays such a hypervisor by writing the entry straight into the frame of a
   * validated L2 (or L3) behind the model's Xen, then runs the real saver over the real domain —
   * no unit-level call, no seam in the saver.
   */
  for (const [level, live] of [
    [2, true],
    [3, false],
  ] as const) {
    it(`an L${level} entry with PSE fails a ${live ? "live" : "non-live"} save; the guest runs on unchanged`, async () => {
      const g = guest();
      g.act("unmap"); // no foreign entry: only the superpage is wrong
      const want = reference(g.log);
      const { h, k, backend, base } = g;
      // The table of `level` on the way to `base`, and a slot it does not use.
      let table = backend.as.l4;
      for (let l = 4; l > level; l--) table = entry(h, table, indexAt(base, l));
      const i = (indexAt(base, level) + 1) % 512;
      expect(entry(h, table, i)).toBe(0);
      expect(h.frames.flags[table] & F_VALIDATED).toBe(F_VALIDATED);
      const frame = Math.floor(k.mfnOf(1024) / 512) * 512;
      const pse = BigInt(frame) * 4096n + 0xe3n; // P | RW | A | D | PSE
      // Xen refuses it: mmu_update validates the entry (Bad L2/L3 flags → -EINVAL) …
      const rc = h.mmuUpdate(GUEST, [{ ptr: BigInt(table * PAGE + i * 8), val: pse }]);
      expect(rc.rc).toBe(-EINVAL);
      expect(rc.done).toBe(0);
      // … and a validated table is not writable by the guest.
      expect(h.poke(GUEST, table, i, pse)).toBe(false);
      h.mem.write64(table * PAGE + i * 8, pse);
      const before = guestMemoryHash(k);

      const { sink, onRound } = roundSink();
      const save = saveGuest(h, k, g.run, sink, { live, onBatch: () => {}, onRound });
      const err = (await save.then(
        () => undefined,
        (e) => e,
      )) as SaveError;
      expect(err).toBeInstanceOf(SaveError);
      expect(err.errno).toBe(E2BIG);
      expect(err.message).toBe(
        `Cannot migrate superpage (L${level}[${i}]: 0x${pse.toString(16).padStart(16, "0")}) in pfn 0x${k.pfnOf(table).toString(16)}`,
      );
      await nothingLeft(h, sink);
      // The table's page was not sent: the record of its batch was never written.
      expect(inspect(sink.concat(), [], k.pfnOf(table)).sent).toEqual([]);
      expect(guestMemoryHash(k)).toBe(before);

      // Take the entry away again: the guest is sound and finishes as a run that never saved.
      h.mem.write64(table * PAGE + i * 8, 0n);
      expect(h.audit().problems).toEqual([]);
      while (g.run.next()) {}
      expect(h.audit().problems).toEqual([]);
      expect(guestMemoryHash(k)).toBe(want);
    });
  }
});

describe("EAGAIN: an entry naming another domain's frame defers its table", () => {
  it("sent as XTAB while mapped, resent once unmapped and after the suspend; the restored guest is the source's", async () => {
    const g = guest();
    const { h, k, l1Pfn, slot } = g;
    const { saved, sink, ends } = await saveTwoPasses(g, (round) => {
      if (round === 1) g.act("unmap"); // between the first and the second pass
    });
    expect(ends.map((e) => [e.round, e.final])).toEqual([
      [1, false],
      [2, false],
      [3, true],
    ]);
    const { sent, sawEnd } = inspect(sink.concat(), ends, l1Pfn);
    expect(sawEnd).toBe(true);
    // Pass 1: EAGAIN → XTAB, no data. Pass 2: the unmap dirtied it, it normalises now. Final
    // pass: the deferred set is or-ed into the dirty bitmap, so it goes once more.
    expect(sent.map((s) => [s.round, s.type, s.page !== undefined])).toEqual([
      [1, PFINFO.XTAB, false],
      [2, PFINFO.L1TAB, true],
      [3, PFINFO.L1TAB, true],
    ]);
    for (const s of sent.slice(1)) expect([s.page![slot * 2], s.page![slot * 2 + 1]]).toEqual([0, 0]);
    expect(h.domain(GUEST)!.dirtyLog).toBeNull();

    // The guest arrives whole: its memory as the source's (whose suspend is cancelled to compare).
    const dst = new Host({ memoryMiB: 200 });
    const { kernel: k2, run: run2 } = await restoreGuest(dst, 9, sink.chunks);
    expect(dst.audit().problems).toEqual([]);
    cancelSuspend(h, k, saved.suspend);
    expect(guestMemoryHash(k2)).toBe(guestMemoryHash(k));
    while (run2!.next()) {}
    expect(dst.audit().problems).toEqual([]);
    expect(guestMemoryHash(k2)).toBe(reference(g.log));
  });

  it("still mapped at the final pass: the page goes as XTAB again and the save completes without it, as Xen's does", async () => {
    const g = guest();
    const { h, k, l1, l1Pfn, slot } = g;
    const { saved, sink, ends } = await saveTwoPasses(g, (round) => {
      if (round === 1) g.act("touch"); // dirties the L1: pass 2 tries it again
    });
    // The suspend is not a controller pause (XEN_DOMINF_paused is the controller's count), so
    // after suspend_domain refreshes dominfo the normaliser still says EAGAIN: XTAB in every
    // pass, never any data; suspend_and_send_dirty then clears the deferred set and the stream
    // goes on to END.
    expect(h.domain(GUEST)!.pauseCount).toBe(0);
    const { sent, sawEnd } = inspect(sink.concat(), ends, l1Pfn);
    expect(sawEnd).toBe(true);
    expect(sent.map((s) => [s.round, s.type, s.page !== undefined])).toEqual([
      [1, PFINFO.XTAB, false],
      [2, PFINFO.XTAB, false],
      [3, PFINFO.XTAB, false],
    ]);

    // The restorer populates the pfn when its L2 names it (localise) and never gets its data:
    // the guest arrives with that L1 empty — the grant entry and the page mapped beside it gone.
    const dst = new Host({ memoryMiB: 200 });
    const { kernel: k2 } = await restoreGuest(dst, 9, sink.chunks);
    expect(dst.audit().problems).toEqual([]);
    const newL1 = k2.mfnOf(l1Pfn);
    expect(dst.frames.flags[newL1] & F_VALIDATED).toBe(F_VALIDATED);
    expect(dst.mem.frame(newL1).every((w) => w === 0)).toBe(true);
    // The source still has both entries; without the two, it is the restored guest.
    cancelSuspend(h, k, saved.suspend);
    const beside = indexAt(g.base + PAGE, 1);
    expect(entry(h, l1, slot)).toBe(g.foreign);
    expect(entry(h, l1, beside)).not.toBe(0);
    expect(guestMemoryHash(k2)).not.toBe(guestMemoryHash(k));
    g.act("unmap");
    k.op("clear", () => k.setEntry(g.backend.as, l1, beside, 0, 0));
    expect(h.mem.frame(l1).every((w) => w === 0)).toBe(true);
    expect(guestMemoryHash(k2)).toBe(guestMemoryHash(k));
  });
});

/** The MFN lock's two sides for saveGuest, around `lock`. */
function lockHooks(lock: RwLock) {
  return { acquireWrite: () => lock.acquireWrite(), releaseWrite: () => lock.releaseWrite() };
}

describe("ERANGE: the same entry while the controller has the domain paused", () => {
  for (const live of [true, false]) {
    it(`${live ? "live" : "non-live"}: the save fails naming the table, leaves nothing behind, and the guest goes on`, async () => {
      const g = guest();
      const { h, k, run, l1Pfn, slot, foreign } = g;
      expect(h.pauseDomain(GUEST)).toBe(0); // `xl pause`
      const before = guestMemoryHash(k);
      const lock = new RwLock();
      const { sink, onRound } = roundSink();
      const save = saveGuest(h, k, run, sink, {
        live,
        onBatch: () => {}, // a paused domain does not run
        onRound,
        lock: lockHooks(lock),
      });
      const err = (await save.then(
        () => undefined,
        (e) => e,
      )) as SaveError;
      expect(err).toBeInstanceOf(SaveError);
      expect(err.errno).toBe(ERANGE);
      expect(err.message).toBe(
        `Bad mfn for L1[${slot}] in pfn 0x${l1Pfn.toString(16)}: mfn 0x${foreign.toString(16)} is not in the guest's pseudophysical map`,
      );
      await nothingLeft(h, sink);
      expect(lock.writeHeld).toBe(false);
      expect(inspect(sink.concat(), [], l1Pfn).sent).toEqual([]);
      expect(guestMemoryHash(k)).toBe(before);
      expect(h.audit().problems).toEqual([]);

      // `xl unpause`: the back-end unmaps its grant and the workload finishes as if never saved.
      expect(h.pauseDomain(GUEST, false)).toBe(0);
      g.act("unmap");
      while (run.next()) {}
      expect(h.audit().problems).toEqual([]);
      expect(guestMemoryHash(k)).toBe(reference(g.log));
    });
  }
});

describe("XEN_DOMINF_paused as the saver sees it: read at the start and after the suspend", () => {
  it("a controller pause during pre-copy goes unseen: the dirty table is deferred again, not fatal", async () => {
    const g = guest();
    const { h, k, run, l1Pfn, slot, base } = g;
    const d = h.domain(GUEST)!;
    const { saved, sink, ends } = await saveTwoPasses(
      g,
      (round) => {
        if (round === 1) {
          g.act("touch"); // the L1 is dirty for pass 2 …
          expect(h.pauseDomain(GUEST)).toBe(0); // … and `xl pause` comes
        } else if (round === 2) {
          expect(h.pauseDomain(GUEST, false)).toBe(0); // `xl unpause`
          g.act("unmap");
        }
      },
      () => {
        if (d.pauseCount === 0) run.next();
      },
    );
    const { sent, sawEnd } = inspect(sink.concat(), ends, l1Pfn);
    expect(sawEnd).toBe(true);
    // Pass 2 ran with the domain paused, but ctx->dominfo was read before the save: EAGAIN.
    expect(sent.map((s) => [s.round, s.type, s.page !== undefined])).toEqual([
      [1, PFINFO.XTAB, false],
      [2, PFINFO.XTAB, false],
      [3, PFINFO.L1TAB, true],
    ]);
    const last = sent[2].page!;
    expect([last[slot * 2], last[slot * 2 + 1]]).toEqual([0, 0]);
    const beside = indexAt(base + PAGE, 1);
    expect(last[beside * 2] & 1).toBe(1);

    const dst = new Host({ memoryMiB: 200 });
    const { kernel: k2, run: run2 } = await restoreGuest(dst, 9, sink.chunks);
    cancelSuspend(h, k, saved.suspend);
    expect(guestMemoryHash(k2)).toBe(guestMemoryHash(k));
    while (run2!.next()) {}
    expect(dst.audit().problems).toEqual([]);
    expect(guestMemoryHash(k2)).toBe(reference(g.log));
  });

  it("a controller pause in the suspend callback is seen: the final pass fails with ERANGE", async () => {
    const g = guest();
    const { h, k, run, l1Pfn, slot } = g;
    const { sink, ends, onRound } = roundSink();
    // saveGuest's suspend callback takes the MFN lock first: here that step also pauses the domain.
    const save = saveGuest(h, k, run, sink, {
      live: true,
      policy: twoPasses,
      onBatch: () => {
        run.next();
      },
      onRound,
      lock: {
        acquireWrite: async () => {
          expect(h.pauseDomain(GUEST)).toBe(0);
        },
        releaseWrite: () => {},
      },
    });
    const err = (await save.then(
      () => undefined,
      (e) => e,
    )) as SaveError;
    expect(err).toBeInstanceOf(SaveError);
    expect(err.errno).toBe(ERANGE);
    expect(err.message).toMatch(new RegExp(`^Bad mfn for L1\\[${slot}\\] in pfn 0x${l1Pfn.toString(16)}: `));
    // Two live passes went out (the L1 as XTAB in the first); the final pass never completed.
    expect(ends.map((e) => [e.round, e.final])).toEqual([
      [1, false],
      [2, false],
    ]);
    expect(inspect(sink.concat(), ends, l1Pfn).sent.map((s) => [s.round, s.type])).toEqual([
      [1, PFINFO.XTAB],
    ]);
    await nothingLeft(h, sink); // the suspend is cancelled: the guest runs again

    expect(h.pauseDomain(GUEST, false)).toBe(0);
    g.act("unmap");
    while (run.next()) {}
    expect(h.audit().problems).toEqual([]);
    expect(guestMemoryHash(k)).toBe(reference(g.log));
  });
});
