/**
 * The saver: a domain → Xen's migration stream, as libxc's xg_sr_save.c and
 * xg_sr_save_x86_pv.c do it for a 64-bit PV guest (reference A4–A7).
 *
 *  - The guest's P2M is read from its own P2M list pages (`shared_info.arch`:
 *    `max_pfn` and the frame list), each frame checked to belong to the guest
 *    (`mfn_in_pseudophysmap`: m2p[mfn] ≤ max_pfn and p2m[m2p[mfn]] = mfn).
 *  - Pages go out in PAGE_DATA records of at most 1024, typed from the
 *    hypervisor's current view (`getpageframeinfo3`): only validated tables are
 *    L1–L4 (pinned ones marked); page tables are normalised (MFN → PFN in every
 *    present entry, L4 slots 256–271 zeroed, a superpage aborts with E2BIG, an
 *    entry to a frame outside the guest is deferred — sent as XTAB and resent in
 *    the final round — or, if the controller had paused the domain when the save
 *    began (or, for the final round, after the suspend), fatal ERANGE). A page
 *    that still fails in the final round goes as XTAB and the save completes
 *    without it, as Xen's does (the deferred set is cleared after that round).
 *  - Live: log-dirty on, a full pass, then dirty passes until Xen's default
 *    policy says stop (fewer than 50 dirty pages, or the 5th pass), then the
 *    toolstack's suspend callback, the final CLEAN, dirty ∪ deferred sent with
 *    the guest stopped, then TSC_INFO, SHARED_INFO, the vCPU records, END.
 *    Non-live: suspend first, one full pass.
 *  - Log-dirty is always switched off at the end, whatever happened.
 */

import { entryFrame, withFrameHi, withFrameLo } from "../x86/pte.js";
import { E2BIG, EINVAL, ERANGE } from "../xen/abi.js";
import type { Domain } from "../xen/domain.js";
import { PFINFO_XTAB, type VcpuState } from "../xen/domctl.js";
import type { FrameTable } from "../xen/frametable.js";
import type { Host } from "../xen/host.js";
import {
  XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL,
  XEN_DOMCTL_SHADOW_OP_CLEAN,
  XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
  XEN_DOMCTL_SHADOW_OP_OFF,
} from "../xen/logdirty.js";
import {
  encodeDomainHeader,
  encodeImageHeader,
  encodeP2mFrames,
  encodePageDataHeader,
  encodePvInfo,
  encodeRecord,
  encodeTscInfo,
  encodeVcpuContext,
  encodeVcpuRecord,
  MAX_BATCH_SIZE,
  REC_TYPE,
} from "./stream.js";

/** Where the stream goes: a file, a socket, memory. `write` may return a promise (backpressure). */
export interface StreamSink {
  write(chunks: Uint8Array[]): void | Promise<void>;
}

export class SaveError extends Error {
  constructor(
    message: string,
    readonly errno: number,
  ) {
    super(message);
  }
}

export interface RoundStats {
  /** 1-based pass number; the final (paused) round is marked `final`. */
  round: number;
  pages: number;
  bytes: number;
  final: boolean;
  ms: number;
}

export type PrecopyDecision = "continue" | "stop" | "abort";

export interface SaveOptions {
  live: boolean;
  /**
   * The toolstack's suspend callback: the guest must end up suspended (SHUTDOWN_suspend). The
   * saver refuses to go on otherwise ("Domain has not been suspended").
   */
  suspend(): void | Promise<void>;
  /** Called after each PAGE_DATA batch while the guest runs (live rounds): the guest runs on. */
  onBatch?(): void | Promise<void>;
  /** Xen's precopy policy (default `simplePrecopyPolicy`). */
  policy?(stats: { iteration: number; dirtyCount: number }): PrecopyDecision;
  onRound?(r: RoundStats): void;
  /** Records to append after the vCPU records, before END: [type, body]. */
  extraRecords?(): [number, Uint8Array][];
  /** Xen version for the domain header (default 4.21). */
  xenVersion?: [number, number];
}

export interface SaveReport {
  rounds: RoundStats[];
  bytes: number;
  pages: number;
  /** From the suspend callback to the end of the stream. */
  pausedMs: number;
}

/** libxc's `simple_precopy_policy`: stop after 5 passes or when fewer than 50 pages are dirty. */
export const SPP_MAX_ITERATIONS = 5;
export const SPP_TARGET_DIRTY_COUNT = 50;
export function simplePrecopyPolicy(s: { iteration: number; dirtyCount: number }): PrecopyDecision {
  if ((s.dirtyCount >= 0 && s.dirtyCount < SPP_TARGET_DIRTY_COUNT) || s.iteration >= SPP_MAX_ITERATIONS) {
    return "stop";
  }
  return "continue";
}

const PAGE = 4096;
const INVALID = -1;

/** The saver's view of one domain. */
class Saver {
  readonly d: Domain;
  /** `max_pfn` (the highest pfn, `arch.max_pfn − 1`). */
  readonly maxPfn: number;
  private readonly p2mFrames: number[];
  private readonly frames: FrameTable;
  bytes = 0;
  pages = 0;
  deferred = new Set<number>();
  /**
   * `ctx->dominfo.flags & XEN_DOMINF_paused` (the controller's pause count, not the guest's
   * suspend): read when the save starts (xc_domain_save) and again after the suspend
   * (suspend_domain), never in between — the normaliser decides EAGAIN or ERANGE on this copy.
   */
  paused: boolean;

  constructor(
    private readonly h: Host,
    readonly domid: number,
    private readonly sink: StreamSink,
  ) {
    const d = h.domain(domid);
    if (!d) throw new SaveError(`no domain ${domid}`, 3);
    this.d = d;
    this.paused = d.pauseCount > 0;
    this.frames = h.frames;
    const arch = d.sharedArch;
    if (arch.maxPfn < 1 || arch.p2mFrames.length < Math.ceil(arch.maxPfn / 512)) {
      throw new SaveError("the guest has not published its P2M (shared_info.arch) — cannot save", EINVAL);
    }
    this.maxPfn = arch.maxPfn - 1;
    this.p2mFrames = arch.p2mFrames.slice(0, Math.ceil(arch.maxPfn / 512));
    for (const m of this.p2mFrames) {
      if (!this.frames.valid(m) || this.frames.ownerOf(m) !== domid) {
        throw new SaveError(`Bad mfn in p2m_frame_list: 0x${m.toString(16)}`, ERANGE);
      }
    }
  }

  /** p2m[pfn] read from the guest's P2M list, or -1 (INVALID_MFN). */
  p2m(pfn: number): number {
    const t = this.h.mem.frame(this.p2mFrames[pfn >>> 9]);
    const w = (pfn & 511) << 1;
    const hi = t[w + 1];
    if (hi >= 0x100) return INVALID; // ~0, or beyond any host
    return hi * 2 ** 32 + t[w];
  }

  /** `mfn_in_pseudophysmap`, returning the pfn or -1. */
  pfnOf(mfn: number): number {
    const f = this.frames;
    if (mfn >= f.frames || f.m2pHi[mfn] !== 0) return -1;
    const pfn = f.m2pLo[mfn];
    if (pfn > this.maxPfn || this.p2m(pfn) !== mfn) return -1;
    return pfn;
  }

  async write(type: number, body: Uint8Array | Uint8Array[]): Promise<void> {
    const parts = encodeRecord(type, body);
    for (const p of parts) this.bytes += p.length;
    await this.sink.write(parts);
  }

  async header(xen: [number, number]): Promise<void> {
    const hdr = [
      encodeImageHeader(),
      encodeDomainHeader({ type: 1, pageShift: 12, xenMajor: xen[0], xenMinor: xen[1] }),
    ];
    for (const p of hdr) this.bytes += p.length;
    await this.sink.write(hdr);
    await this.write(REC_TYPE.X86_PV_INFO, encodePvInfo(8, 4));
    await this.write(REC_TYPE.STATIC_DATA_END, new Uint8Array(0));
    const framePfns = this.p2mFrames.map((m) => this.pfnOf(m));
    const bad = framePfns.indexOf(-1);
    if (bad >= 0) throw new SaveError(`Bad mfn in p2m_frame_list[${bad}]`, ERANGE);
    await this.write(REC_TYPE.X86_PV_P2M_FRAMES, encodeP2mFrames(0, this.maxPfn, framePfns));
  }

  /**
   * Send `pfns` (ascending) in batches of MAX_BATCH_SIZE; `onBatch` runs between batches.
   * Returns the pages sent with data.
   */
  async sendPages(pfns: ArrayLike<number>, onBatch?: () => void | Promise<void>): Promise<number> {
    let sent = 0;
    for (let at = 0; at < pfns.length; at += MAX_BATCH_SIZE) {
      const n = Math.min(MAX_BATCH_SIZE, pfns.length - at);
      sent += await this.batch(pfns, at, n);
      if (onBatch && at + n < pfns.length) await onBatch();
    }
    return sent;
  }

  private async batch(pfns: ArrayLike<number>, at: number, n: number): Promise<number> {
    const mfns = new Float64Array(n);
    const list = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      list[i] = pfns[at + i];
      mfns[i] = this.p2m(list[i]);
    }
    // getpageframeinfo3: XTAB for a frame that is not the guest's (e.g. ballooned out, INVALID_MFN);
    // such pages are resent in the final round.
    const types = this.h.pageFrameInfo(this.domid, mfns);
    for (let i = 0; i < n; i++) if (types[i] === PFINFO_XTAB) this.deferred.add(list[i]);
    const data = new Uint8Array(n * PAGE);
    const words = new Uint32Array(data.buffer);
    let count = 0;
    for (let i = 0; i < n; i++) {
      const t = types[i];
      if (t === PFINFO_XTAB || t >= 0xd) continue;
      const src = this.h.mem.frame(mfns[i]);
      const dst = words.subarray(count * 1024, count * 1024 + 1024);
      const level = t & 7;
      if (level >= 1 && level <= 4) {
        const rc = this.normalise(src, dst, level, list[i]);
        if (rc !== 0) {
          // EAGAIN: a present entry names a frame outside the guest — defer the page.
          types[i] = PFINFO_XTAB;
          this.deferred.add(list[i]);
          continue;
        }
      } else dst.set(src);
      count++;
    }
    const hdr = encodePageDataHeader(list, types);
    await this.write(REC_TYPE.PAGE_DATA, [hdr, data.subarray(0, count * PAGE)]);
    this.pages += count;
    return count;
  }

  /**
   * `normalise_pagetable`: a copy of table `src` (of `level`, the guest's pfn `at`) with every
   * present entry's frame turned into a pfn and Xen's L4 slots zeroed. Returns 0, or -1 (EAGAIN:
   * defer); throws E2BIG for a superpage and ERANGE for an entry naming a frame outside the
   * guest while the domain is controller-paused (`paused`).
   */
  private normalise(src: Uint32Array, dst: Uint32Array, level: number, at: number): number {
    for (let i = 0; i < 512; i++) {
      const w = i << 1;
      let lo = src[w];
      let hi = src[w + 1];
      if (level === 4 && i >= 256 && i < 272) {
        lo = 0;
        hi = 0;
      } else if (lo & 1) {
        if (level >= 2 && lo & 0x80) {
          throw new SaveError(
            `Cannot migrate superpage (L${level}[${i}]: 0x${hex64(lo, hi)}) in pfn 0x${at.toString(16)}`,
            E2BIG,
          );
        }
        const mfn = entryFrame(lo, hi);
        const pfn = this.pfnOf(mfn);
        if (pfn < 0) {
          if (this.paused) {
            throw new SaveError(
              `Bad mfn for L${level}[${i}] in pfn 0x${at.toString(16)}: mfn 0x${mfn.toString(16)} is not in the guest's pseudophysical map`,
              ERANGE,
            );
          }
          return -1;
        }
        lo = withFrameLo(lo, pfn);
        hi = withFrameHi(hi, pfn);
      }
      dst[w] = lo;
      dst[w + 1] = hi;
    }
    return 0;
  }

  /** The normalised vCPU context (reference A6): MFNs → PFNs; any frame outside the guest is fatal. */
  vcpuContext(c: VcpuState, vcpu: number): VcpuState {
    const toPfn = (mfn: number, what: string) => {
      const p = this.pfnOf(mfn);
      if (p < 0) throw new SaveError(`Bad mfn for vcpu${vcpu}'s ${what}`, ERANGE);
      return p;
    };
    const out = { ...c, ctrlreg: [...c.ctrlreg], gdtFrames: [...c.gdtFrames] };
    if (vcpu === 0) out.rdx = toPfn(c.rdx, "start_info");
    if (c.gdtEnts > 14 * 512) throw new SaveError(`GDT entry count (${c.gdtEnts}) out of range`, ERANGE);
    const gdt = Math.ceil(c.gdtEnts / 512);
    for (let i = 0; i < gdt; i++) out.gdtFrames[i] = toPfn(c.gdtFrames[i], `gdt frame ${i}`);
    out.ctrlreg[3] = toPfn(c.ctrlreg[3] / PAGE, "cr3") * PAGE;
    if (c.ctrlreg[1] !== 0) out.ctrlreg[1] = 1 + toPfn(c.ctrlreg[1] / PAGE, "cr1") * PAGE;
    return out;
  }
}

/** A 64-bit entry as 16 hex digits. */
function hex64(lo: number, hi: number): string {
  return (hi >>> 0).toString(16).padStart(8, "0") + (lo >>> 0).toString(16).padStart(8, "0");
}

/** Every pfn 0..max, ascending. */
function allPfns(max: number): Float64Array {
  const a = new Float64Array(max + 1);
  for (let i = 0; i <= max; i++) a[i] = i;
  return a;
}

/**
 * Save domain `domid` to `sink` (live or not). Throws SaveError (with the errno Xen's saver
 * fails with) or whatever the sink throws; log-dirty mode is off again either way. The caller
 * resumes the guest if the save failed after suspending it.
 */
export async function saveDomain(
  h: Host,
  domid: number,
  sink: StreamSink,
  o: SaveOptions,
): Promise<SaveReport> {
  const s = new Saver(h, domid, sink);
  const policy = o.policy ?? simplePrecopyPolicy;
  const rounds: RoundStats[] = [];
  const t0 = performance.now();
  let pausedAt = 0;
  const round = async (
    pfns: ArrayLike<number>,
    n: number,
    final: boolean,
    onBatch?: () => void | Promise<void>,
  ) => {
    const b0 = s.bytes;
    const r0 = performance.now();
    const pages = await s.sendPages(pfns, onBatch);
    const r: RoundStats = { round: n, pages, bytes: s.bytes - b0, final, ms: performance.now() - r0 };
    rounds.push(r);
    o.onRound?.(r);
  };
  const suspend = async () => {
    pausedAt = performance.now();
    await o.suspend();
    // suspend_domain: the domain information is read again (XEN_DOMINF_paused with it).
    s.paused = s.d.pauseCount > 0;
    if (!s.d.suspended) throw new SaveError("Domain has not been suspended", EINVAL);
  };
  try {
    await s.header(o.xenVersion ?? [4, 21]);
    if (!o.live) {
      await suspend();
      await round(allPfns(s.maxPfn), 1, true);
    } else {
      if (h.shadowOp(domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, { p2mSize: s.maxPfn + 1 }).rc !== 0) {
        h.shadowOp(domid, XEN_DOMCTL_SHADOW_OP_OFF);
        const rc = h.shadowOp(domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, { p2mSize: s.maxPfn + 1 }).rc;
        if (rc !== 0) throw new SaveError("Failed to enable logdirty", -rc);
      }
      // send_memory_live: x counts passes; the dirty set starts as everything.
      let dirty: ArrayLike<number> = allPfns(s.maxPfn);
      let dirtyCount = dirty.length;
      let iteration = 0;
      let x = 0;
      for (;;) {
        let decision = policy({ iteration, dirtyCount });
        x++;
        if (decision === "abort") throw new SaveError("Precopy policy aborted the migration", EINVAL);
        if (dirtyCount > 0) await round(dirty, x, false, o.onBatch);
        if (decision !== "continue") break;
        iteration = x;
        dirtyCount = -1;
        decision = policy({ iteration, dirtyCount });
        if (decision !== "continue") break;
        const c = h.shadowOp(domid, XEN_DOMCTL_SHADOW_OP_CLEAN);
        dirty = c.dirty ?? [];
        dirtyCount = dirty.length;
      }
      // suspend_and_send_dirty
      await suspend();
      const c = h.shadowOp(domid, XEN_DOMCTL_SHADOW_OP_CLEAN, { mode: XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL });
      const last = new Set<number>(c.dirty ?? []);
      for (const p of s.deferred) last.add(p);
      s.deferred.clear();
      await round(Float64Array.from([...last].sort((a, b) => a - b)), x + 1, true);
    }
    s.deferred.clear();
    // Trailing records: TSC, shared info, each online vCPU, the guest's extras, END.
    await s.write(
      REC_TYPE.X86_TSC_INFO,
      encodeTscInfo({ mode: 0, khz: 2_000_000, nsec: 0n, incarnation: 0 }),
    );
    await s.write(REC_TYPE.SHARED_INFO, sharedInfoPage(s.maxPfn));
    for (const v of s.d.vcpus) {
      const ctx = s.vcpuContext(h.getVcpuContext(domid, v.id), v.id);
      await s.write(
        REC_TYPE.X86_PV_VCPU_BASIC,
        encodeVcpuRecord(v.id, encodeVcpuContext(toStreamContext(ctx))),
      );
    }
    for (const [type, body] of o.extraRecords?.() ?? []) await s.write(type, body);
    await s.write(REC_TYPE.END, new Uint8Array(0));
  } finally {
    h.shadowOp(domid, XEN_DOMCTL_SHADOW_OP_OFF);
  }
  return {
    rounds,
    bytes: s.bytes,
    pages: s.pages,
    pausedMs: pausedAt > 0 ? performance.now() - pausedAt : performance.now() - t0,
  };
}

/**
 * The SHARED_INFO record: the guest's shared-info page as the saver copies it. The model keeps
 * no event channels or vCPU info; the page carries `arch.max_pfn` at its x86-64 offset
 * (after 32 vcpu_info of 64 bytes, the 512-byte pending and mask bitmaps and four u32 of wall
 * clock: shared_info.arch begins at 0xc10; max_pfn is its first field).
 */
export const SHARED_INFO_ARCH_MAX_PFN = 0xc10;
function sharedInfoPage(maxPfn: number): Uint8Array {
  const p = new Uint8Array(PAGE);
  new DataView(p.buffer).setUint32(SHARED_INFO_ARCH_MAX_PFN, maxPfn + 1, true);
  return p;
}

/** The stream's vcpu_guest_context from the model's vCPU state (frame fields already PFNs). */
export function toStreamContext(c: VcpuState) {
  return {
    flags: c.flags,
    rdx: c.rdx,
    rip: 0,
    rsp: 0,
    ctrlreg: c.ctrlreg,
    gdtFrames: c.gdtFrames,
    gdtEnts: c.gdtEnts,
    ldtBase: c.ldtBase,
    ldtEnts: c.ldtEnts,
    kernelSp: 0,
    kernelSs: 0,
    vmAssist: c.vmAssist,
    eventCallbackEip: 0,
    failsafeCallbackEip: 0,
    syscallCallbackEip: 0,
    fsBase: 0,
    gsBaseKernel: 0,
    gsBaseUser: 0,
  };
}
