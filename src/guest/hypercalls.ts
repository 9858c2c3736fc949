/**
 * The guest kernel's side of the hypercall interface: what a PV kernel
 * actually issues, batched the way real kernels batch it, and counted.
 *
 * - Page-table writes go into an `mmu_update` queue laid out as in guest
 *   memory (4 words per request); it is issued when full, before any other
 *   MMU hypercall, and whenever the kernel must see the result (NetBSD's
 *   `xpq_queue_pte_update` with a 2048-entry queue; Linux's lazy-MMU batches,
 *   32 requests).
 * - Other calls (`update_va_mapping`, `mmuext_op`) can be gathered into a
 *   multicall of up to `mcBatch` entries (Linux's `MC_BATCH` = 32), or issued
 *   one by one.
 * A failed call is a kernel bug here (a real kernel BUGs or panics): it
 * throws `HypercallFailed` with the call and its result.
 */

import {
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_update_va_mapping,
  DOMID_SELF,
  ERRNO_NAMES,
  MMU_NORMAL_PT_UPDATE,
  MMUEXT,
  UVMF_INVLPG,
  UVMF_TLB_FLUSH,
} from "../xen/abi.js";
import type { Host } from "../xen/host.js";
import type { MmuextOp } from "../xen/mmuext.js";
import type { MulticallEntry } from "../xen/multicall.js";
import { vaHi as vaHiOf } from "./layout.js";

function hexHalves(hi: number, lo: number): string {
  return `0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")}`;
}

import type { BatchStats } from "./report.js";

export class HypercallFailed extends Error {
  constructor(
    readonly call: string,
    readonly rc: number,
    detail: string,
  ) {
    super(`${call} failed: ${rc < 0 ? `-${ERRNO_NAMES[-rc] ?? -rc}` : rc} (${detail})`);
  }
}

const MMUEXT_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(MMUEXT).map(([k, v]) => [v, k.replace(/^MMUEXT_/, "").toLowerCase()]),
);

export class Hypercalls {
  /** Guest → hypervisor transitions by hypercall. */
  readonly transitions: Record<string, number> = {};
  /** Operations (including those inside multicalls) by kind, with their batch sizes. */
  readonly batches: Record<string, BatchStats> = {};
  pteByMmuUpdate = 0;
  pteByUva = 0;
  flushFull = 0;
  flushSingle = 0;

  private queue: Uint32Array;
  private queued = 0;
  private readonly mc: MulticallEntry[] = [];

  constructor(
    readonly h: Host,
    readonly domid: number,
    /** mmu_update queue size (Linux 32, NetBSD 2048). */
    readonly mmuBatch: number,
    /** Multicall batch size (Linux 32); 1 issues every call on its own. */
    readonly mcBatch: number,
    readonly vcpu = 0,
  ) {
    this.queue = new Uint32Array(4 * mmuBatch);
  }

  private count(kind: string, entries: number, transition: boolean): void {
    if (transition) this.transitions[kind] = (this.transitions[kind] ?? 0) + 1;
    let b = this.batches[kind];
    if (!b) {
      b = { calls: 0, entries: 0, max: 0 };
      this.batches[kind] = b;
    }
    b.calls++;
    b.entries += entries;
    if (entries > b.max) b.max = entries;
  }

  /** Queue a page-table entry write at machine address `ma` (an 8-byte slot). */
  queuePte(ma: number, lo: number, hi: number, cmd = MMU_NORMAL_PT_UPDATE): void {
    const q = this.queue;
    const i = this.queued * 4;
    q[i] = (ma + cmd) >>> 0;
    q[i + 1] = Math.floor(ma / 2 ** 32);
    q[i + 2] = lo >>> 0;
    q[i + 3] = hi >>> 0;
    this.pteByMmuUpdate++;
    if (++this.queued === this.mmuBatch) this.flushQueue();
  }

  /**
   * Issue the queued mmu_update requests — or, while a multicall is being gathered, append
   * them to it as one entry, so that calls reach Xen in the order the kernel made them
   * (Linux's `xen_extend_mmu_update`).
   */
  flushQueue(): void {
    const n = this.queued;
    if (n === 0) return;
    this.queued = 0;
    if (this.mc.length > 0) {
      this.mc.push({ op: __HYPERVISOR_mmu_update, buf: this.queue.slice(0, n * 4), count: n });
      return;
    }
    this.count("mmu_update", n, true);
    const r = this.h.mmuUpdateBuf(this.domid, this.queue, n, DOMID_SELF);
    if (r.rc !== 0) {
      const at = r.done * 4;
      const q = this.queue;
      const ma = q[at + 1] * 2 ** 32 + q[at];
      const val = q[at + 3] * 2 ** 32 + q[at + 2];
      throw new HypercallFailed(
        "mmu_update",
        r.rc,
        `request ${r.done} of ${n}: ptr 0x${ma.toString(16)} val 0x${val.toString(16)}`,
      );
    }
  }

  /** `update_va_mapping(va, val, flags)`, gathered into the multicall batch if there is one. */
  updateVaMapping(va: number, lo: number, hi: number, flags: number): void {
    this.pteByUva++;
    const kind = flags & 3;
    if (kind === UVMF_TLB_FLUSH) this.flushFull++;
    else if (kind === UVMF_INVLPG) this.flushSingle++;
    const vaHi = vaHiOf(va);
    const vaLo = va >>> 0;
    if (this.mcBatch > 1) {
      this.gatherQueue();
      this.mc.push({ op: __HYPERVISOR_update_va_mapping, vaHi, vaLo, lo: lo >>> 0, hi: hi >>> 0, flags });
      if (this.mc.length >= this.mcBatch) this.flushMulticall();
      return;
    }
    this.flushQueue();
    this.count("update_va_mapping", 1, true);
    const rc = this.h.updateVaMappingHalves(this.domid, this.vcpu, vaHi, vaLo, lo >>> 0, hi >>> 0, flags);
    if (rc !== 0) throw new HypercallFailed("update_va_mapping", rc, `va 0x${va.toString(16)}`);
  }

  /** `mmuext_op` with one or more ops, issued now (after the mmu_update queue and any multicall). */
  mmuext(ops: MmuextOp[]): void {
    for (const op of ops) this.noteExt(op);
    if (this.mcBatch > 1 && this.mc.length > 0) {
      this.gatherQueue();
      this.mc.push({ op: __HYPERVISOR_mmuext_op, ops });
      this.flushMulticall();
      return;
    }
    this.flushQueue();
    this.count("mmuext_op", ops.length, true);
    const r = this.h.mmuextOp(this.domid, ops, DOMID_SELF, this.vcpu);
    if (r.rc !== 0) {
      const op = ops[r.done];
      throw new HypercallFailed(
        "mmuext_op",
        r.rc,
        `${MMUEXT_NAMES[op.cmd] ?? op.cmd} 0x${(op.arg1 ?? 0n).toString(16)}, op ${r.done} of ${ops.length}`,
      );
    }
  }

  /** Queue an mmuext_op into the multicall batch (issued with it). */
  queueMmuext(ops: MmuextOp[]): void {
    if (this.mcBatch <= 1) {
      this.mmuext(ops);
      return;
    }
    for (const op of ops) this.noteExt(op);
    this.gatherQueue();
    this.mc.push({ op: __HYPERVISOR_mmuext_op, ops });
    if (this.mc.length >= this.mcBatch) this.flushMulticall();
  }

  /** Queued mmu_update requests become the next multicall entry (order preserved). */
  private gatherQueue(): void {
    const n = this.queued;
    if (n === 0) return;
    this.queued = 0;
    this.mc.push({ op: __HYPERVISOR_mmu_update, buf: this.queue.slice(0, n * 4), count: n });
  }

  private noteExt(op: MmuextOp): void {
    const c = op.cmd;
    if (
      c === MMUEXT.MMUEXT_TLB_FLUSH_LOCAL ||
      c === MMUEXT.MMUEXT_TLB_FLUSH_ALL ||
      c === MMUEXT.MMUEXT_TLB_FLUSH_MULTI ||
      c === MMUEXT.MMUEXT_NEW_BASEPTR
    ) {
      this.flushFull++;
    } else if (c === MMUEXT.MMUEXT_INVLPG_LOCAL || c === MMUEXT.MMUEXT_INVLPG_ALL) this.flushSingle++;
  }

  /** Issue the gathered multicall (and, first, the mmu_update queue). */
  flushMulticall(): void {
    this.gatherQueue();
    const calls = this.mc.splice(0);
    if (calls.length === 0) return;
    if (calls.length === 1) {
      // A batch of one is issued as the call itself, as Linux's xen_mc_flush does.
      const c = calls[0];
      if (c.op === __HYPERVISOR_update_va_mapping && "vaHi" in c) {
        this.count("update_va_mapping", 1, true);
        const rc = this.h.updateVaMappingHalves(this.domid, this.vcpu, c.vaHi, c.vaLo, c.lo, c.hi, c.flags);
        if (rc !== 0) throw new HypercallFailed("update_va_mapping", rc, `va ${hexHalves(c.vaHi, c.vaLo)}`);
        return;
      }
    }
    this.count("multicall", calls.length, true);
    for (const c of calls) {
      if (c.op === __HYPERVISOR_update_va_mapping) this.count("update_va_mapping", 1, false);
      else if (c.op === __HYPERVISOR_mmuext_op) this.count("mmuext_op", c.ops.length, false);
      else if (c.op === __HYPERVISOR_mmu_update)
        this.count("mmu_update", "buf" in c ? c.count : c.reqs.length, false);
    }
    const results = this.h.multicall(this.domid, this.vcpu, calls);
    results.forEach((r, i) => {
      if (r.rc !== 0) {
        const c = calls[i];
        const what =
          c.op === __HYPERVISOR_update_va_mapping
            ? `update_va_mapping ${"vaHi" in c ? hexHalves(c.vaHi, c.vaLo) : `0x${c.va.toString(16)}`}`
            : c.op === __HYPERVISOR_mmuext_op
              ? `mmuext_op ${c.ops.map((o) => MMUEXT_NAMES[o.cmd]).join(",")} 0x${(c.ops[0]?.arg1 ?? 0n).toString(16)}`
              : `mmu_update, request ${r.done}`;
        throw new HypercallFailed("multicall", r.rc, `entry ${i}: ${what}`);
      }
    });
  }

  /** Everything pending goes to the hypervisor now (leaving lazy-MMU mode). */
  flush(): void {
    if (this.mc.length > 0) this.flushMulticall();
    else this.flushQueue();
  }
}
