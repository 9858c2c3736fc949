/**
 * The guest's side of save, restore and migration (seed 001, reference A11).
 *
 * Before suspending, a guest must leave nothing in its memory or its own
 * bookkeeping that names a machine frame the saver cannot translate:
 *  - Linux (`xen_pv_pre_suspend` → `xen_mm_pin_all`): every address space not
 *    pinned yet is pinned, so Xen types its tables and the saver turns their
 *    MFNs into PFNs; after resume exactly those are unpinned again. An
 *    unpinned address space travels as plain data with raw MFNs.
 *  - NetBSD (`pmap_xen_suspend`): the alternate slot (APDP) and the recursive
 *    slot are cleared in every address space and put back on resume. The
 *    clears need no mapping of the tables at all — an mmu_update names the
 *    entry by machine address — so they go out as one batched queue.
 *  - The kernel's own records that hold frames (address spaces, the
 *    strategy's maps, temporary slots) are kept as pfns while suspended, and
 *    turned into the new frames after resume from the P2M list the restorer
 *    rewrote (Linux re-reads `mfn_list`; here the list pages are read through
 *    the kernel's own mappings). A direct map indexed by MFN cannot survive
 *    this — its virtual layout *is* machine frame numbers — so such a guest
 *    refuses to suspend.
 *
 * The kernel's bookkeeping travels with its memory as the guest state
 * (`encodeGuestState`), in an optional record of the stream (Xen's tools skip
 * optional records they do not know).
 */

import { MMUEXT } from "../xen/abi.js";
import type { Host } from "../xen/host.js";
import { AddressSpace, GuestError, Kernel } from "./kernel.js";
import { APTE_SLOT, DIRECT_MAP_BASE, RECURSIVE_SLOT, vaHi, vaLo } from "./layout.js";
import type { MapperState } from "./mapper.js";
import { makeMapper } from "./mappers/index.js";
import type { OpStats, PinningPolicy, StrategyName } from "./report.js";
import { WorkloadRun, type WorkloadState } from "./workloads.js";

/** Optional stream record carrying the guest's own state (bit 31: optional; "PVMM" tag). */
export const REC_PVMMU_GUEST_STATE = (0x80000000 | 0x4d4d5650) >>> 0;

export interface SuspendOptions {
  /** Linux: pin every unpinned address space first (default true). */
  pinAll?: boolean;
  /** NetBSD: clear the alternate and recursive slots of every address space (default true). */
  clearSlots?: boolean;
}

/** What the suspend did, for the resume (or the cancelled-suspend path) to undo. */
export interface SuspendRecord {
  savePinned: AddressSpace[];
  clearedSlots: boolean;
}

interface KernelJson {
  strategy: StrategyName;
  pinning: PinningPolicy;
  mmuBatch: number;
  mcBatch: number;
  vcpu: number;
  pages: number;
  p2mListPfn: number;
  startInfoPfn: number;
  /** Absent in images saved before it was kept: then one past the highest pid resumed. */
  nextPid?: number;
  tableCount: number[];
  counters: { p2mLookups: number; m2pLookups: number; directWrites: number; ptwrWrites: number };
  ops: Record<string, OpStats>;
  hc: {
    transitions: Record<string, number>;
    batches: Record<string, { calls: number; entries: number; max: number }>;
    pteByMmuUpdate: number;
    pteByUva: number;
    flushFull: number;
    flushSingle: number;
  };
  spaces: { l4: number; userL4: number; tables: [number, number][]; validated: boolean; rootVa: number }[];
  kernelAs: number;
  current: number;
  mapper: MapperState;
  alloc: { next: number; inUse: number };
  savePinned: number[];
  clearedSlots: boolean;
}

export interface GuestState {
  kernel: KernelJson;
  workload: WorkloadState | null;
  used: Uint8Array;
  freed: Int32Array;
  tableLevel: Uint8Array;
  mapcount: Uint16Array;
}

/**
 * Prepare `k` for suspend (under the MFN lock's write side): issue everything queued, then the
 * Linux and NetBSD steps. The kernel's bookkeeping still holds MFNs until `saveGuestState`.
 */
export function prepareSuspend(k: Kernel, o: SuspendOptions = {}): SuspendRecord {
  if (k.mapper.name === "direct-mfn") {
    throw new GuestError(
      "direct-mfn cannot suspend: its direct map is laid out by machine frame number, which a restore changes",
    );
  }
  const rec: SuspendRecord = { savePinned: [], clearedSlots: false };
  k.op("suspend", () => {
    if ((o.pinAll ?? true) && k.pinning === "linux") {
      for (const as of k.spaces) {
        if (as.validated) continue;
        k.pin(as);
        rec.savePinned.push(as);
      }
    }
    if ((o.clearSlots ?? true) && k.mapper.perAsSlots.length > 0) {
      for (const as of k.spaces) {
        for (const slot of k.mapper.perAsSlots) {
          k.setEntry(as, as.l4, slot, 0, 0);
        }
      }
      k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_TLB_FLUSH_LOCAL }]);
      rec.clearedSlots = true;
    }
  });
  return rec;
}

/** Undo the suspend steps on a running kernel: after resume, or when the suspend was cancelled. */
export function finishResume(k: Kernel, rec: { savePinned: AddressSpace[]; clearedSlots: boolean }): void {
  k.op("resume", () => {
    if (rec.clearedSlots) {
      // The recursive self-entry, as for a new space; the alternate slot stays clear until used.
      for (const as of k.spaces) k.mapper.initRoot(k, as);
      k.hc.mmuext([{ cmd: MMUEXT.MMUEXT_TLB_FLUSH_LOCAL }]);
    }
    // xen_mm_unpin_all: exactly the spaces pinned for the save.
    for (const as of rec.savePinned) {
      if (!k.spaces.has(as) || k.current === as) continue;
      k.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_UNPIN_TABLE, arg1: BigInt(as.l4) }]);
      if (as.userL4) k.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_UNPIN_TABLE, arg1: BigInt(as.userL4) }]);
      k.hc.flush();
      for (const [mfn] of as.tables) k.mapper.unprotect(k, mfn, k.pfnOf(mfn));
      k.mapper.unprotect(k, as.l4, k.pfnOf(as.l4));
      if (as.userL4) k.mapper.unprotect(k, as.userL4, k.pfnOf(as.userL4));
      k.hc.flush();
      as.validated = false;
    }
  });
}

/** The kernel's (and its workload's) state with every frame as a pfn: what travels with the guest. */
export function saveGuestState(k: Kernel, run: WorkloadRun | null, rec: SuspendRecord): GuestState {
  k.hc.flush();
  const spaces = [...k.spaces];
  const index = new Map(spaces.map((as, i) => [as, i]));
  const asIndex = (as: AddressSpace) => {
    const i = index.get(as);
    if (i === undefined) throw new GuestError("an address space the kernel does not know");
    return i;
  };
  const pfn = (m: number) => (m === 0 ? -1 : k.pfnOf(m));
  const alloc = k.alloc.save();
  const hc = k.hc;
  return {
    kernel: {
      strategy: k.mapper.name,
      pinning: k.pinning,
      mmuBatch: hc.mmuBatch,
      mcBatch: hc.mcBatch,
      vcpu: k.v.id,
      pages: k.pages,
      p2mListPfn: k.p2mListPfn,
      startInfoPfn: k.startInfoPfn,
      nextPid: k.nextPid,
      tableCount: [...k.tableCount],
      counters: {
        p2mLookups: k.p2mLookups,
        m2pLookups: k.m2pLookups,
        directWrites: k.directWrites,
        ptwrWrites: k.ptwrWrites,
      },
      // Counts only: an op's wall-clock time would make two saves of one guest differ. The
      // receiver's timings start from zero (the counts carry over).
      ops: Object.fromEntries(Object.entries(k.ops).map(([name, o]) => [name, { count: o.count, ms: 0 }])),
      hc: {
        transitions: { ...hc.transitions },
        batches: structuredClone(hc.batches),
        pteByMmuUpdate: hc.pteByMmuUpdate,
        pteByUva: hc.pteByUva,
        flushFull: hc.flushFull,
        flushSingle: hc.flushSingle,
      },
      spaces: spaces.map((as) => ({
        l4: pfn(as.l4),
        userL4: pfn(as.userL4),
        tables: [...as.tables].map(([m, level]) => [pfn(m), level] as [number, number]),
        validated: as.validated,
        rootVa: as.rootVa,
      })),
      kernelAs: asIndex(k.kernelAs),
      current: asIndex(k.current),
      mapper: k.mapper.saveState(k),
      alloc: { next: alloc.next, inUse: alloc.inUse },
      savePinned: rec.savePinned.map(asIndex),
      clearedSlots: rec.clearedSlots,
    },
    workload: run ? run.save(asIndex) : null,
    used: k.alloc.used.slice(),
    freed: alloc.freed,
    tableLevel: k.tableLevel.slice(),
    mapcount: k.mapcount.slice(),
  };
}

/**
 * The guest resumes on `h` as domain `domid` after a restore: it re-reads its P2M list (which
 * the restorer rewrote) through its own mappings, turns every saved pfn into its new frame,
 * republishes the P2M for the next save, and undoes the suspend steps.
 */
export function resumeGuest(
  h: Host,
  domid: number,
  st: GuestState,
): { kernel: Kernel; run: WorkloadRun | null } {
  const d = h.domain(domid);
  if (!d) throw new GuestError(`no domain ${domid}`);
  const j = st.kernel;
  const v = d.vcpus[j.vcpu];
  if (!v || v.guestTable === 0) throw new GuestError("the restored vCPU has no page tables");
  if (st.used.length !== j.pages || st.tableLevel.length !== j.pages || st.mapcount.length !== j.pages) {
    throw new GuestError("guest state does not match the guest's size");
  }
  // Re-read the P2M list (mfn_list) through the kernel's initial mapping of it.
  const mapper = makeMapper(j.strategy);
  const p2m = d.p2m;
  p2m.length = 0;
  const listPages = Math.ceil(j.pages / 512);
  for (let i = 0; i < listPages; i++) {
    const pfn = j.p2mListPfn + i;
    // The builder's mapping of the list (what mapper.initialVa gives; it needs no kernel here).
    const va = mapper.directMap ? DIRECT_MAP_BASE + pfn * 4096 : Kernel.kernelImageVa(pfn);
    if (!v.cpu.translate(vaHi(va), vaLo(va), 0)) {
      throw new GuestError(`resume: the P2M list page at 0x${va.toString(16)} is not mapped`);
    }
    const t = h.mem.frame(Math.floor(v.cpu.paddr / 4096));
    const n = Math.min(512, j.pages - i * 512);
    for (let e = 0; e < n; e++) {
      const hi = t[e * 2 + 1];
      p2m.push(hi >= 0x100 ? -1 : hi * 2 ** 32 + t[e * 2]);
    }
  }
  const k = new Kernel(h, domid, {
    mapper,
    pinning: j.pinning,
    mmuBatch: j.mmuBatch,
    mcBatch: j.mcBatch,
    vcpu: j.vcpu,
  });
  k.alloc.load({ freed: st.freed, next: j.alloc.next, inUse: j.alloc.inUse }, st.used);
  k.tableLevel.set(st.tableLevel);
  k.mapcount.set(st.mapcount);
  for (let i = 0; i < 4; i++) k.tableCount[i] = j.tableCount[i];
  k.p2mLookups = j.counters.p2mLookups;
  k.m2pLookups = j.counters.m2pLookups;
  k.directWrites = j.counters.directWrites;
  k.ptwrWrites = j.counters.ptwrWrites;
  Object.assign(k.ops, structuredClone(j.ops));
  Object.assign(k.hc.transitions, j.hc.transitions);
  Object.assign(k.hc.batches, structuredClone(j.hc.batches));
  k.hc.pteByMmuUpdate = j.hc.pteByMmuUpdate;
  k.hc.pteByUva = j.hc.pteByUva;
  k.hc.flushFull = j.hc.flushFull;
  k.hc.flushSingle = j.hc.flushSingle;
  k.p2mListPfn = j.p2mListPfn;
  k.startInfoPfn = j.startInfoPfn;
  if (j.nextPid !== undefined) k.nextPid = j.nextPid;
  const mfn = (pfn: number) => {
    if (pfn < 0) return 0;
    const m = pfn < p2m.length ? p2m[pfn] : -1;
    if (m < 0) throw new GuestError(`resume: pfn ${pfn} has no frame`);
    return m;
  };
  const spaces = j.spaces.map((s) => {
    const as = new AddressSpace(mfn(s.l4), mfn(s.userL4));
    for (const [p, level] of s.tables) as.tables.set(mfn(p), level);
    as.validated = s.validated;
    as.rootVa = s.rootVa;
    k.spaces.add(as);
    return as;
  });
  k.kernelAs = spaces[j.kernelAs];
  k.current = spaces[j.current];
  if (v.guestTable !== k.current.l4)
    throw new GuestError("resume: cr3 is not the current address space's L4");
  mapper.loadState(k, j.mapper);
  // xen_build_mfn_list_list: publish the P2M again for the next save.
  d.sharedArch = {
    maxPfn: j.pages,
    p2mFrames: Array.from({ length: listPages }, (_, i) => p2m[j.p2mListPfn + i]),
  };
  d.suspended = false;
  finishResume(k, { savePinned: j.savePinned.map((i) => spaces[i]), clearedSlots: j.clearedSlots });
  const run = st.workload ? WorkloadRun.load(k, st.workload, (i) => spaces[i]) : null;
  return { kernel: k, run };
}

// ---------------------------------------------------------------- encoding

const MAGIC = 0x4d4d5650; // "PVMM"
const VERSION = 1;

/** The guest state as bytes: magic, version, JSON length, JSON, then the four arrays (each 8-aligned, u64 length). */
export function encodeGuestState(st: GuestState): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify({ kernel: st.kernel, workload: st.workload }));
  const arrays = [st.used, st.freed, st.tableLevel, st.mapcount].map(
    (a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength),
  );
  const pad = (n: number) => (8 - (n % 8)) % 8;
  let size = 16 + json.length + pad(json.length);
  for (const a of arrays) size += 8 + a.length + pad(a.length);
  const out = new Uint8Array(size);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, MAGIC, true);
  dv.setUint32(4, VERSION, true);
  dv.setUint32(8, json.length, true);
  out.set(json, 16);
  let at = 16 + json.length + pad(json.length);
  for (const a of arrays) {
    dv.setUint32(at, a.length, true);
    dv.setUint32(at + 4, 0, true);
    out.set(a, at + 8);
    at += 8 + a.length + pad(a.length);
  }
  return out;
}

export function decodeGuestState(b: Uint8Array): GuestState {
  const bad = (why: string): never => {
    throw new GuestError(`guest state: ${why}`);
  };
  if (b.length < 16) bad("too short");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  if (dv.getUint32(0, true) !== MAGIC) bad("bad magic");
  if (dv.getUint32(4, true) !== VERSION) bad(`unknown version ${dv.getUint32(4, true)}`);
  const jl = dv.getUint32(8, true);
  if (16 + jl > b.length) bad("JSON beyond the end");
  let parsed: { kernel: KernelJson; workload: WorkloadState | null };
  try {
    parsed = JSON.parse(new TextDecoder().decode(b.subarray(16, 16 + jl)));
  } catch {
    return bad("JSON does not parse");
  }
  let at = 16 + jl + ((8 - (jl % 8)) % 8);
  const next = (bytesPer: number): Uint8Array => {
    if (at + 8 > b.length) bad("array header beyond the end");
    const n = dv.getUint32(at, true);
    if (at + 8 + n > b.length || n % bytesPer !== 0) bad("array beyond the end");
    const copy = new Uint8Array(b.subarray(at + 8, at + 8 + n)); // a copy, aligned at 0
    at += 8 + n + ((8 - (n % 8)) % 8);
    return copy;
  };
  const used = next(1);
  const freed = next(4);
  const tableLevel = next(1);
  const mapcount = next(2);
  if (typeof parsed?.kernel?.pages !== "number") bad("no kernel");
  const np = parsed.kernel.nextPid;
  if (np !== undefined && !(Number.isSafeInteger(np) && np >= 1)) bad("nextPid is not a positive integer");
  return {
    kernel: parsed.kernel,
    workload: parsed.workload,
    used,
    freed: new Int32Array(freed.buffer),
    tableLevel,
    mapcount: new Uint16Array(mapcount.buffer),
  };
}

// ---------------------------------------------------------------- visiting every top-level table

/** Seed 001's question: what visiting every address space's top-level table costs. */
export interface RootVisitCost {
  spaces: number;
  /** How the strategy reaches another space's L4. */
  method: string;
  ms: number;
  hypercalls: number;
  /** The NetBSD suspend step done blind: clearing two slots in every L4 by machine address, batched. */
  clearMs: number;
  clearHypercalls: number;
}

const VISIT_METHOD: Record<StrategyName, string> = {
  "direct-mfn": "direct map (by mfn): no mapping needed",
  "direct-pfn": "direct map (by pfn, an M2P lookup): no mapping needed",
  shadow: "table window: every L4 already has a VA",
  recursive: "load each space's L4 (CR3 switch) to reach it through the recursive slot",
  netbsd: "point the alternate slot (APDP) at each L4, flush, read, clear",
};

/** Read every space's L4 through the strategy (open / read / close), calling `fn` with its entries. */
export function visitRoots(k: Kernel, spaces: Iterable<AddressSpace>, fn: (l4: Uint32Array) => void): void {
  for (const as of spaces) {
    const va = k.mapper.open(k, as);
    fn(k.readPage(va));
    k.mapper.close(k, as);
  }
  k.mapper.closeAll(k);
  k.hc.flush();
}

/**
 * Build `n` pinned address spaces, time visiting all their L4s (and, as NetBSD's suspend needs,
 * clearing two slots in each by machine address), then tear them down again.
 */
export function measureRootVisit(k: Kernel, n = 1000): RootVisitCost {
  const calls = () => Object.values(k.hc.transitions).reduce((a, b) => a + b, 0);
  const spaces: AddressSpace[] = [];
  k.op("visit:setup", () => {
    for (let i = 0; i < n; i++) {
      const as = k.createAs(true);
      if (!k.isValidated(as)) k.pin(as);
      spaces.push(as);
    }
  });
  let c0 = calls();
  let t0 = performance.now();
  k.enterKernel();
  visitRoots(k, spaces, () => {});
  const ms = performance.now() - t0;
  const hypercalls = calls() - c0;
  c0 = calls();
  t0 = performance.now();
  for (const as of spaces) {
    k.hc.queuePte(as.l4 * 4096 + APTE_SLOT * 8, 0, 0);
    k.hc.queuePte(as.l4 * 4096 + RECURSIVE_SLOT * 8, 0, 0);
  }
  k.hc.flush();
  const clearMs = performance.now() - t0;
  const clearHypercalls = calls() - c0;
  k.op("visit:teardown", () => {
    for (const as of spaces) k.destroyAs(as);
  });
  return { spaces: n, method: VISIT_METHOD[k.mapper.name], ms, hypercalls, clearMs, clearHypercalls };
}
