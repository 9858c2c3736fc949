/**
 * Log-dirty mode (`XEN_DOMCTL_shadow_op`, xen/arch/x86/mm/paging.c): while it
 * is on for a domain, every write to one of its pages sets that page's bit
 * (by pfn, through the M2P) in the domain's dirty bitmap; the toolstack
 * fetches and clears the bitmap once per pre-copy round (CLEAN) or only reads
 * it (PEEK).
 *
 * Xen finds the writes of a PV guest by running it on shadow page tables
 * whose entries for clean pages are read-only. The model observes the same
 * set of writes at the memory: every store through the MMU (kernel or user,
 * including the walker's accessed/dirty updates), every hypercall that writes
 * guest memory (mmu_update, update_va_mapping, grant map/unmap/copy, ptwr
 * emulation) — all go through `PhysicalMemory.frameForWrite`, which notes
 * each written frame once until it is collected. Collecting costs the number
 * of frames written, never the size of the guest or host.
 */

import { EINVAL, EPERM } from "./abi.js";
import type { Domain } from "./domain.js";
import type { Host } from "./host.js";

// xen/include/public/domctl.h
export const XEN_DOMCTL_SHADOW_OP_OFF = 0;
export const XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY = 2;
export const XEN_DOMCTL_SHADOW_OP_CLEAN = 11;
export const XEN_DOMCTL_SHADOW_OP_PEEK = 12;
export const XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL = 1 << 0;

/** A domain's dirty bitmap (one byte per pfn) and the pfns set in it, in the order first dirtied. */
export class DirtyLog {
  readonly bits: Uint8Array;
  list: number[] = [];

  constructor(readonly size: number) {
    this.bits = new Uint8Array(size);
  }

  mark(pfn: number): void {
    if (pfn >= 0 && pfn < this.size && this.bits[pfn] === 0) {
      this.bits[pfn] = 1;
      this.list.push(pfn);
    }
  }
}

export interface ShadowOpResult {
  rc: number;
  /** CLEAN / PEEK: the dirty pfns, ascending (the bitmap's set bits). */
  dirty?: number[];
  /** `stats.dirty_count`. */
  dirtyCount?: number;
}

/** Move the frames memory saw written into the bitmaps of their owners that are logging. */
export function collectWrites(h: Host): void {
  const written = h.mem.takeWritten();
  const f = h.frames;
  for (const m of written) {
    const d = h.domains.get(f.ownerOf(m));
    if (d?.dirtyLog == null || f.listPos[m] < 0) continue;
    const hi = f.m2pHi[m];
    if (hi !== 0) continue;
    d.dirtyLog.mark(f.m2pLo[m]);
  }
}

/** The domain's pages are marked dirty as the hypervisor writes them; turn memory tracking on or off. */
function updateTracking(h: Host): void {
  let any = false;
  for (const d of h.domains.values()) if (d.dirtyLog) any = true;
  if (any !== h.mem.tracking) h.mem.trackWrites(any);
}

/**
 * `XEN_DOMCTL_shadow_op` for log-dirty: `caller` must be privileged (the toolstack's domain) or
 * the model's toolstack (undefined). `p2mSize` sizes the bitmap (ENABLE).
 */
export function shadowOp(
  h: Host,
  caller: Domain | undefined,
  d: Domain,
  op: number,
  opts: { mode?: number; p2mSize?: number } = {},
): ShadowOpResult {
  if (caller !== undefined && !caller.privileged) return { rc: -EPERM };
  switch (op) {
    case XEN_DOMCTL_SHADOW_OP_OFF:
      if (d.dirtyLog) {
        collectWrites(h);
        d.dirtyLog = null;
        updateTracking(h);
      }
      return { rc: 0 };
    case XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY: {
      if (d.dirtyLog) return { rc: -EINVAL }; // already enabled (paging_log_dirty_enable: -EINVAL)
      const size = opts.p2mSize ?? d.p2m.length;
      if (!Number.isInteger(size) || size < 0) return { rc: -EINVAL };
      collectWrites(h); // writes before this point are not logged
      d.dirtyLog = new DirtyLog(size);
      updateTracking(h);
      return { rc: 0 };
    }
    case XEN_DOMCTL_SHADOW_OP_CLEAN:
    case XEN_DOMCTL_SHADOW_OP_PEEK: {
      const log = d.dirtyLog;
      if (!log) return { rc: -EINVAL };
      collectWrites(h);
      const dirty = log.list.slice().sort((a, b) => a - b);
      if (op === XEN_DOMCTL_SHADOW_OP_CLEAN) {
        for (const p of log.list) log.bits[p] = 0;
        log.list = [];
      }
      return { rc: 0, dirty, dirtyCount: dirty.length };
    }
    default:
      return { rc: -EINVAL };
  }
}
