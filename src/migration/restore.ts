/**
 * The restorer: Xen's migration stream → a new domain on this host, as
 * libxc's xg_sr_restore.c and xg_sr_restore_x86_pv.c do it (reference A2,
 * A3, A8–A10).
 *
 *  - Records are checked in Xen's order and with Xen's rules (X86_PV_INFO
 *    once and first, STATIC_DATA_END once — inferred for a v2 stream —,
 *    P2M_FRAMES before PAGE_DATA, exact lengths, pfns within max_pfn, known
 *    types; an unknown optional record is skipped, an unknown or unhandled
 *    mandatory one fails).
 *  - PAGE_DATA: every populatable pfn gets a frame on first sight; page tables
 *    are localised (PFN → new MFN in every present entry, allocating pfns a
 *    table names before their data arrives; a pfn beyond max_pfn is fatal) and
 *    copied in. The type of every pfn is remembered, the last one sent wins.
 *  - END: the vCPU contexts (vCPU 0's is mandatory; its start-info pfn must
 *    be a NOTAB page, cr3 an L4, cr1 an L4 when its bit 0 is set) are set —
 *    which validates each base pointer's tree —, then every pinned table is
 *    re-pinned in ascending pfn order (batches of 1024), then the guest's P2M
 *    list pages are rewritten with the new frames.
 *  - Any failure discards the half-built domain: every frame it got is freed.
 */

import { SlabPrefaulter } from "../x86/prefault.js";
import { entryFrame, withFrameHi, withFrameLo } from "../x86/pte.js";
import { MMUEXT } from "../xen/abi.js";
import type { VcpuState } from "../xen/domctl.js";
import type { Host } from "../xen/host.js";
import type { ReusingSource } from "./file.js";
import {
  checkSharedInfo,
  decodeP2mFrames,
  decodePageData,
  decodePvInfo,
  decodeTscInfo,
  decodeVcpuContext,
  decodeVcpuRecord,
  type ImageHeader,
  PAGE_SIZE,
  pfinfoCarriesData,
  pfinfoPopulated,
  REC_TYPE,
  REC_TYPE_OPTIONAL,
  type RecordView,
  recordName,
  StreamError,
  StreamReader,
  type VcpuContext,
} from "./stream.js";

const PIN_CMD = [
  0,
  MMUEXT.MMUEXT_PIN_L1_TABLE,
  MMUEXT.MMUEXT_PIN_L2_TABLE,
  MMUEXT.MMUEXT_PIN_L3_TABLE,
  MMUEXT.MMUEXT_PIN_L4_TABLE,
];
/** `MAX_PIN_BATCH`. */
const MAX_PIN_BATCH = 1024;

// The end of a restore runs while the guest is paused, once per process in a receiving host: its
// loops are small functions of their own, so V8 compiles them quickly (and a warmed host already
// has them compiled, see warm.ts) rather than running them in the interpreter inside one large
// function.

/** The first pfn from `from` to `maxPfn` whose type asks for a pin (LPINTAB), or -1. */
function nextPinned(types: Uint8Array, from: number, maxPfn: number): number {
  for (let pfn = from; pfn <= maxPfn; pfn++) {
    const t = types[pfn];
    if (t !== NO_TYPE && (t & 8) !== 0 && t < 0xd) return pfn;
  }
  return -1;
}

/** One frame of the guest's P2M list: 512 entries from pfn `first`, INVALID_MFN past `maxPfn` or where unpopulated. */
function writeP2mFrame(t: Uint32Array, p2m: Float64Array, first: number, maxPfn: number): void {
  for (let j = 0; j < 512; j++) {
    const pfn = first + j;
    const m = pfn <= maxPfn ? p2m[pfn] : -1;
    t[j * 2] = m < 0 ? 0xffffffff : m >>> 0;
    t[j * 2 + 1] = m < 0 ? 0xffffffff : Math.floor(m / 2 ** 32);
  }
}
/** No type recorded for a pfn yet. */
const NO_TYPE = 0xff;

export interface RestoreOptions {
  vcpus?: number;
  /** Optional record types the caller wants handed over (e.g. the guest's own state). */
  collect?: number[];
  /**
   * Guests of this many pages or more, restored from an asynchronous source (a file, a socket),
   * have the host memory's next slabs faulted in on worker threads, ahead of their page data
   * (`SlabPrefaulter`). Default `PREFAULT_MIN_PAGES`; `Infinity` never starts one. Whether one
   * runs changes no result, only speed.
   */
  prefaultMinPages?: number;
}

/** Smaller guests (under 256 MiB) are restored without a prefault thread: not worth starting one. */
export const PREFAULT_MIN_PAGES = 65536;

export interface RestoreResult {
  domid: number;
  /** Highest pfn. */
  maxPfn: number;
  pagesReceived: number;
  bytes: number;
  /** Bodies of the collected optional records, by type, in stream order. */
  collected: Map<number, Uint8Array[]>;
  /** VERIFY mode: pages that differed from memory. */
  verifyMismatches: number;
}

export class Restorer {
  private version = 3;
  private pvInfo = false;
  private staticDataEnd = false;
  private maxPfn = -1;
  private p2m = new Float64Array(0);
  private types = new Uint8Array(0);
  private p2mFramePfns: number[] = [];
  private readonly basic = new Map<number, Uint8Array>();
  private sharedInfo = false;
  private verify = false;
  private finished = false;
  private aborted = false;
  pagesReceived = 0;
  verifyMismatches = 0;
  readonly collected = new Map<number, Uint8Array[]>();
  /** Scratch page for localising tables (aligned words). */
  private readonly scratch = new Uint32Array(1024);
  private readonly scratchBytes = new Uint8Array(this.scratch.buffer);
  /** Every frame the domain has been given (for the caller's check that an abort freed them all). */
  readonly frames: number[] = [];

  constructor(
    private readonly h: Host,
    readonly domid: number,
    private readonly opts: RestoreOptions = {},
  ) {
    h.createDomain({ domid, pages: 0, vcpus: opts.vcpus ?? 1 });
    h.domain(domid)!.suspended = true; // it runs only once the guest resumes
  }

  /** Pages the stream's P2M covers (max pfn + 1), once X86_PV_P2M_FRAMES was seen; else 0. */
  get pagesExpected(): number {
    return this.maxPfn + 1;
  }

  get done(): boolean {
    return this.finished;
  }

  private fail(r: RecordView, msg: string): never {
    throw new StreamError(
      `${recordName(r.type)} at offset 0x${r.offset.toString(16)}: ${msg}`,
      recordName(r.type),
      r.offset,
    );
  }

  image(h: ImageHeader): void {
    this.version = h.version;
  }

  /** Handle one record (bodies may alias the reader's buffers: everything needed is copied). */
  record(r: RecordView): void {
    if (this.finished) this.fail(r, "record after END");
    switch (r.type) {
      case REC_TYPE.END:
        this.complete(r);
        return;
      case REC_TYPE.X86_PV_INFO: {
        if (this.pvInfo) this.fail(r, "duplicate X86_PV_INFO record");
        const i = decodePvInfo(r);
        if (i.guestWidth !== 8) this.fail(r, "32-bit PV guests are not modelled");
        this.pvInfo = true;
        return;
      }
      case REC_TYPE.STATIC_DATA_END:
        if (this.staticDataEnd) this.fail(r, "duplicate STATIC_DATA_END record");
        this.staticDataEnd = true;
        return;
      case REC_TYPE.X86_CPUID_POLICY:
        if (r.body.length === 0 || r.body.length % 24 !== 0)
          this.fail(r, "length must be a non-zero multiple of 24");
        return;
      case REC_TYPE.X86_MSR_POLICY:
        if (r.body.length === 0 || r.body.length % 16 !== 0)
          this.fail(r, "length must be a non-zero multiple of 16");
        return;
      case REC_TYPE.X86_PV_P2M_FRAMES:
        this.p2mFrames(r);
        return;
      case REC_TYPE.PAGE_DATA:
        this.pageData(r);
        return;
      case REC_TYPE.X86_TSC_INFO:
        decodeTscInfo(r);
        return;
      case REC_TYPE.SHARED_INFO:
        if (!this.pvInfo) this.fail(r, "SHARED_INFO before X86_PV_INFO");
        checkSharedInfo(r);
        this.sharedInfo = true;
        return;
      case REC_TYPE.X86_PV_VCPU_BASIC:
      case REC_TYPE.X86_PV_VCPU_EXTENDED:
      case REC_TYPE.X86_PV_VCPU_XSAVE:
      case REC_TYPE.X86_PV_VCPU_MSRS: {
        if (!this.pvInfo) this.fail(r, `${recordName(r.type)} before X86_PV_INFO`);
        const v = decodeVcpuRecord(r, (this.opts.vcpus ?? 1) - 1);
        if (v && r.type === REC_TYPE.X86_PV_VCPU_BASIC) this.basic.set(v.vcpuId, v.blob.slice());
        return;
      }
      case REC_TYPE.VERIFY:
        this.verify = true;
        return;
      case REC_TYPE.CHECKPOINT:
        this.fail(r, "Found checkpoint in non-checkpointed stream");
        return;
      default:
        if (r.type & REC_TYPE_OPTIONAL) {
          if (this.opts.collect?.includes(r.type)) {
            const list = this.collected.get(r.type) ?? [];
            list.push(r.body.slice());
            this.collected.set(r.type, list);
          }
          return; // an unknown optional record is skipped
        }
        this.fail(r, `Mandatory record ${recordName(r.type)} not handled`);
    }
  }

  private requireStaticDataEnd(r: RecordView): void {
    if (this.staticDataEnd) return;
    // A v2 stream has none: it is inferred before the first X86_PV_P2M_FRAMES.
    if (this.version === 2 && r.type === REC_TYPE.X86_PV_P2M_FRAMES) this.staticDataEnd = true;
    else this.fail(r, "No STATIC_DATA_END seen");
  }

  private p2mFrames(r: RecordView): void {
    this.requireStaticDataEnd(r);
    if (!this.pvInfo) this.fail(r, "X86_PV_P2M_FRAMES before X86_PV_INFO");
    const p = decodeP2mFrames(r);
    // The local P2M and type arrays are sized by the stream: refuse what this host cannot hold.
    const limit = Math.min(2 ** 32, 16 * this.h.frames.frames);
    if (p.endPfn >= limit)
      this.fail(r, `end pfn 0x${p.endPfn.toString(16)} beyond what this host can restore`);
    if (p.endPfn > this.maxPfn) {
      const p2m = new Float64Array(p.endPfn + 1).fill(-1);
      p2m.set(this.p2m);
      const types = new Uint8Array(p.endPfn + 1).fill(NO_TYPE);
      types.set(this.types);
      this.p2m = p2m;
      this.types = types;
      this.maxPfn = p.endPfn;
    }
    const fpp = 512;
    for (let i = 0; i < p.framePfns.length; i++)
      this.p2mFramePfns[Math.floor(p.startPfn / fpp) + i] = p.framePfns[i];
  }

  /** A frame for `pfn` (populate_pfns), or a StreamError naming `r`. */
  private populate(r: RecordView, pfn: number): number {
    const mfn = this.h.populatePfn(this.domid, pfn);
    if (mfn < 0) this.fail(r, `out of memory populating pfn 0x${pfn.toString(16)}`);
    this.p2m[pfn] = mfn;
    this.frames.push(mfn);
    return mfn;
  }

  private pageData(r: RecordView): void {
    this.requireStaticDataEnd(r);
    // max_pfn comes from X86_PV_P2M_FRAMES: before it, no pfn is valid (A3 step 5).
    if (this.maxPfn < 0) this.fail(r, "PAGE_DATA before X86_PV_P2M_FRAMES: no pfn is valid yet");
    const pd = decodePageData(r, this.maxPfn);
    const mem = this.h.mem;
    for (let i = 0; i < pd.count; i++) {
      const pfn = pd.pfns[i];
      const t = pd.types[i];
      this.types[pfn] = t;
      if (pfinfoPopulated(t) && this.p2m[pfn] < 0) this.populate(r, pfn);
    }
    for (let i = 0; i < pd.count; i++) {
      const t = pd.types[i];
      if (!pfinfoCarriesData(t)) continue;
      const pfn = pd.pfns[i];
      const off = pd.dataOffsets[i];
      const src = r.body.subarray(off, off + PAGE_SIZE);
      const level = t & 7;
      let page: Uint8Array = src;
      if (level >= 1 && level <= 4) {
        this.scratchBytes.set(src);
        this.localise(r, this.scratch, level);
        page = this.scratchBytes;
      }
      const mfn = this.p2m[pfn];
      if (this.verify) {
        const f = mem.frame(mfn);
        const cur = new Uint8Array(f.buffer, f.byteOffset, PAGE_SIZE);
        for (let b = 0; b < PAGE_SIZE; b++) {
          if (cur[b] !== page[b]) {
            this.verifyMismatches++;
            break;
          }
        }
      } else {
        mem.writeFrame(mfn, page);
      }
      this.pagesReceived++;
    }
  }

  /** `localise_page`: PFN → new MFN in every present entry, populating pfns not seen yet. */
  private localise(r: RecordView, t: Uint32Array, level: number): void {
    for (let i = 0; i < 512; i++) {
      const w = i << 1;
      const lo = t[w];
      if ((lo & 1) === 0) continue;
      const hi = t[w + 1];
      const pfn = entryFrame(lo, hi);
      if (pfn > this.maxPfn)
        this.fail(r, `Bad pfn 0x${pfn.toString(16)} for L${level}[${i}]: beyond max_pfn`);
      let mfn = this.p2m[pfn];
      if (mfn < 0) mfn = this.populate(r, pfn);
      t[w] = withFrameLo(lo, mfn);
      t[w + 1] = withFrameHi(hi, mfn);
    }
  }

  /** A pfn of the stream that must be a populated page of type `want` (`mask` selects the bits compared). */
  private frameOf(r: RecordView, pfn: number, what: string, want: number, mask = 0xf): number {
    if (!Number.isSafeInteger(pfn) || pfn < 0 || pfn > this.maxPfn) {
      this.fail(r, `${what} (pfn 0x${pfn.toString(16)}) out of range`);
    }
    const t = this.types[pfn];
    if (t === NO_TYPE || (t & mask) !== want) {
      this.fail(
        r,
        `${what} (pfn 0x${pfn.toString(16)}) has bad type ${t === NO_TYPE ? "none" : t}, expected ${want}`,
      );
    }
    const mfn = this.p2m[pfn];
    if (mfn < 0) this.fail(r, `${what} has bad mfn`);
    return mfn;
  }

  /** `x86_pv_stream_complete`. */
  private complete(r: RecordView): void {
    if (!this.basic.has(0)) this.fail(r, "Sender didn't send vcpu0's basic state");
    // 1. vCPU contexts, in order.
    for (const [id, blob] of [...this.basic].sort((a, b) => a[0] - b[0])) {
      let c: VcpuContext;
      try {
        c = decodeVcpuContext(blob);
      } catch (e) {
        // A field that does not fit a number (≥ 2^53) is never a valid pfn or count.
        this.fail(r, `vcpu${id}'s context: ${(e as Error).message}`);
      }
      const ctx: VcpuState = {
        flags: c.flags,
        rdx: c.rdx,
        ctrlreg: [...c.ctrlreg],
        gdtFrames: [...c.gdtFrames],
        gdtEnts: c.gdtEnts,
        ldtBase: c.ldtBase,
        ldtEnts: c.ldtEnts,
        vmAssist: c.vmAssist,
      };
      if (id === 0) ctx.rdx = this.frameOf(r, c.rdx, "start_info", 0);
      if (c.gdtEnts > 14 * 512) this.fail(r, `GDT entry count (${c.gdtEnts}) out of range`);
      const gdt = Math.ceil(c.gdtEnts / 512);
      ctx.gdtFrames = c.gdtFrames.slice(0, gdt).map((p, i) => this.frameOf(r, p, `GDT frame ${i}`, 0));
      ctx.ctrlreg[3] = this.frameOf(r, Math.floor(c.ctrlreg[3] / PAGE_SIZE), "cr3", 4, 7) * PAGE_SIZE;
      ctx.ctrlreg[1] =
        c.ctrlreg[1] % 2 === 1
          ? this.frameOf(r, Math.floor(c.ctrlreg[1] / PAGE_SIZE), "cr1", 4, 7) * PAGE_SIZE
          : 0;
      const rc = this.h.setVcpuContext(this.domid, id, ctx);
      if (rc !== 0)
        this.fail(r, `setting vcpu${id}'s context failed (${rc}): its page tables do not validate`);
    }
    // 2. Re-pin, ascending pfn, in batches.
    let batch: { cmd: number; arg1: bigint }[] = [];
    const flush = () => {
      if (batch.length === 0) return;
      const res = this.h.mmuextOp(this.domid, batch);
      if (res.rc !== 0)
        this.fail(r, `Failed to pin batch of ${batch.length} tables (${res.rc}, ${res.done} done)`);
      batch = [];
    };
    const types = this.types;
    for (
      let pfn = nextPinned(types, 0, this.maxPfn);
      pfn >= 0;
      pfn = nextPinned(types, pfn + 1, this.maxPfn)
    ) {
      batch.push({ cmd: PIN_CMD[types[pfn] & 7], arg1: BigInt(this.p2m[pfn]) });
      if (batch.length === MAX_PIN_BATCH) flush();
    }
    flush();
    // 3. The guest's P2M list, rewritten with the new frames.
    const mem = this.h.mem;
    for (let i = 0; i < this.p2mFramePfns.length; i++) {
      const mfn = this.frameOf(r, this.p2mFramePfns[i], `p2m frame ${i}`, 0);
      writeP2mFrame(mem.frameForWrite(mfn), this.p2m, i * 512, this.maxPfn);
    }
    // shared_info.arch: max_pfn restored; the frame list is zeroed (the guest rebuilds it).
    this.h.domain(this.domid)!.sharedArch = { maxPfn: this.maxPfn + 1, p2mFrames: [] };
    if (!this.sharedInfo) this.fail(r, "no SHARED_INFO record");
    this.finished = true;
  }

  /** Discard the half-built domain: every frame it was given is freed. Returns frames not free (none). */
  abort(): number[] {
    if (this.aborted) return [];
    this.aborted = true;
    if (this.h.domain(this.domid)) this.h.destroyDomain(this.domid);
    return this.h.checkFree(this.frames);
  }

  result(bytes: number): RestoreResult {
    return {
      domid: this.domid,
      maxPfn: this.maxPfn,
      pagesReceived: this.pagesReceived,
      bytes,
      collected: this.collected,
      verifyMismatches: this.verifyMismatches,
    };
  }
}

/**
 * Restore a whole stream from `source` (chunks of bytes, e.g. a file read — `FileChunks`, which
 * reuses its buffer — or a socket) into a
 * new domain `domid`. On any error the domain is discarded (nothing left on the host) and the
 * error rethrown — a StreamError names the record and offset.
 */
export async function restoreStream(
  h: Host,
  domid: number,
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  opts: RestoreOptions = {},
  onProgress?: (bytes: number) => void,
): Promise<RestoreResult> {
  const reader = new StreamReader();
  const rs = new Restorer(h, domid, opts);
  // A source that reads into one buffer again and again: what is left of a chunk is copied out
  // before the next read overwrites it.
  const reuse = (source as Partial<ReusingSource>).reusesBuffers === true;
  let prefault: SlabPrefaulter | null = null;
  // Only a source that waits for I/O lets the thread's slabs in between chunks (they arrive as
  // messages): restoring from memory starts none.
  let prefaultChecked = !(Symbol.asyncIterator in source);
  try {
    for await (const chunk of source) {
      reader.push(chunk);
      drain(reader, rs);
      if (reuse) reader.detach();
      if (!prefaultChecked && rs.pagesExpected > 0) {
        // Once the stream says how big the guest is: slabs for all its pages.
        prefaultChecked = true;
        if (rs.pagesExpected >= (opts.prefaultMinPages ?? PREFAULT_MIN_PAGES)) {
          const perSlab = h.mem.slabByteLength / PAGE_SIZE;
          try {
            prefault = new SlabPrefaulter(h.mem, Math.ceil(rs.pagesExpected / perSlab));
          } catch {
            // No thread to be had (a resource limit): the restore makes its own slabs.
          }
        }
      }
      prefault?.poll();
      onProgress?.(reader.offset);
    }
    reader.end();
    if (!rs.done) throw new StreamError("stream ended before END", "END", reader.offset);
    return rs.result(reader.offset);
  } catch (e) {
    rs.abort();
    throw e;
  } finally {
    prefault?.stop();
  }
}

/** Feed every complete item the reader has to the restorer. */
export function drain(reader: StreamReader, rs: Restorer): void {
  for (let item = reader.next(); item !== undefined; item = reader.next()) {
    if (item.kind === "image") rs.image(item.header);
    else if (item.kind === "record") rs.record(item.record);
  }
}
