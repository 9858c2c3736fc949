/**
 * Xen's libxc migration stream ("migration v2", spec revision 3:
 * docs/specs/libxc-migration-stream.pandoc; structures in
 * tools/libs/guest/xg_sr_stream_format.h; restore-side checks in
 * xg_sr_restore.c, xg_sr_restore_x86_pv.c and xg_sr_common_x86.c), for
 * x86 PV guests: encoders, an incremental reader and the record decoders with
 * the restorer's validation.
 *
 * A stream is
 *  - an image header (24 bytes, always big-endian): marker u64 all-ones, id
 *    u32 "XENF" (0x58454E46), version u32 (3 written; 2 and 3 accepted),
 *    options u16 (bit 0: big-endian, refused by libxc), reserved u16 + u32;
 *  - a domain header (16 bytes, little-endian like everything after it):
 *    type u32 (1 = x86 PV, 2 = x86 HVM), page_shift u16 (12), reserved u16,
 *    xen_major u32, xen_minor u32;
 *  - records: type u32 (bit 31 = optional), body_length u32 (≤ 128 MiB,
 *    checked before the body is read), the body, then zero padding to the
 *    next 8-byte boundary (not counted in body_length; never checked on
 *    read). END (type 0, empty) is the last record.
 *
 * PAGE_DATA bodies are count u32, reserved u32, count × u64 (bits 63–60 the
 * PFINFO type nibble, 51–0 the pfn), then one 4096-byte page per entry whose
 * type carries data (NOTAB and L1–L4, pinned or not).
 *
 * Errors are `StreamError`s whose message reads "<what> at offset 0x…: …",
 * where the offset is the stream offset of the header or record named (the
 * offset of a field inside it, e.g. a PAGE_DATA entry, is given in the
 * detail). Writers, which know no stream offset, say "<what> (writing): …".
 *
 * 64-bit values are handled as two u32 halves and plain numbers (no bigint
 * per entry); `nsec` of X86_TSC_INFO is the only bigint (one per record).
 */

// ---- Record types (xg_sr_stream_format.h) ----

export const REC_TYPE = {
  END: 0,
  PAGE_DATA: 1,
  X86_PV_INFO: 2,
  X86_PV_P2M_FRAMES: 3,
  X86_PV_VCPU_BASIC: 4,
  X86_PV_VCPU_EXTENDED: 5,
  X86_PV_VCPU_XSAVE: 6,
  SHARED_INFO: 7,
  X86_TSC_INFO: 8,
  HVM_CONTEXT: 9,
  HVM_PARAMS: 0xa,
  TOOLSTACK: 0xb,
  X86_PV_VCPU_MSRS: 0xc,
  VERIFY: 0xd,
  CHECKPOINT: 0xe,
  CHECKPOINT_DIRTY_PFN_LIST: 0xf,
  STATIC_DATA_END: 0x10,
  X86_CPUID_POLICY: 0x11,
  X86_MSR_POLICY: 0x12,
} as const;

/** Bit 31 of a record type: the record may be ignored by a restorer that does not know it. */
export const REC_TYPE_OPTIONAL = 0x80000000;

const REC_NAMES: string[] = [];
for (const [name, value] of Object.entries(REC_TYPE)) REC_NAMES[value] = name;

/**
 * The record's name ("PAGE_DATA", …). Like Xen's rec_type_to_str, a type with
 * the optional bit set is never one of the known mandatory records:
 * "unknown 0x80000001 (optional)".
 */
export function recordName(type: number): string {
  const t = type >>> 0;
  if (t < REC_NAMES.length && REC_NAMES[t] !== undefined) return REC_NAMES[t];
  return (t & REC_TYPE_OPTIONAL) !== 0 ? `unknown ${hex(t)} (optional)` : `unknown ${hex(t)}`;
}

/** REC_LENGTH_MAX: the largest body_length a writer emits or a reader accepts (128 MiB). */
export const REC_LENGTH_MAX = 128 * 2 ** 20;
/** The saver's largest PAGE_DATA batch (xg_sr_common.h MAX_BATCH_SIZE): 1024 pfns, 4 MiB of data. */
export const MAX_BATCH_SIZE = 1024;
export const PAGE_SIZE = 4096;

const IMAGE_HEADER_SIZE = 24;
const DOMAIN_HEADER_SIZE = 16;
const RECORD_HEADER_SIZE = 8;
const IHDR_MARKER_WORD = 0xffffffff;
const IHDR_ID = 0x58454e46; // "XENF"
const IHDR_VERSION = 3;
const IHDR_OPT_BIG_ENDIAN = 1;
const DHDR_TYPE_NAMES: Record<number, string> = { 1: "x86 PV", 2: "x86 HVM" };
const PAGE_SHIFT = 12;
const TWO_32 = 4294967296;

// ---- PFINFO types (public/domctl.h XEN_DOMCTL_PFINFO_*, as the nibble in bits 63–60) ----

export const PFINFO = {
  NOTAB: 0,
  L1TAB: 1,
  L2TAB: 2,
  L3TAB: 3,
  L4TAB: 4,
  /** XEN_DOMCTL_PFINFO_LPINTAB: added to L1TAB–L4TAB gives 9–0xC. */
  PINNED: 8,
  BROKEN: 0xd,
  XALLOC: 0xe,
  XTAB: 0xf,
} as const;

// Bit t set: type nibble t has that property (xg_sr_common.h is_known_page_type,
// page_type_has_stream_data, page_type_to_populate).
const DATA_TYPES = 0b0001_1110_0001_1111; // 0–4, 9–0xC
const VALID_TYPES = DATA_TYPES | 0b1110_0000_0000_0000; // + 0xD, 0xE, 0xF
const POPULATED_TYPES = DATA_TYPES | (1 << PFINFO.XALLOC);

/** The entry is followed by a page of data: NOTAB and L1–L4, pinned or not. */
export function pfinfoCarriesData(t: number): boolean {
  return t >= 0 && t < 16 && ((DATA_TYPES >>> t) & 1) === 1;
}
/** A type the restorer knows (0–4, 9–0xF); 5–8 are reserved and fatal. */
export function pfinfoValid(t: number): boolean {
  return t >= 0 && t < 16 && ((VALID_TYPES >>> t) & 1) === 1;
}
/** The restorer allocates memory for the pfn: the data-carrying types and XALLOC. */
export function pfinfoPopulated(t: number): boolean {
  return t >= 0 && t < 16 && ((POPULATED_TYPES >>> t) & 1) === 1;
}

// ---- Errors ----

export class StreamError extends Error {
  constructor(
    message: string,
    readonly record: string,
    readonly offset: number,
  ) {
    super(message);
    this.name = "StreamError";
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function streamError(record: string, offset: number, detail: string): StreamError {
  const where = offset < 0 ? `${record} (writing)` : `${record} at offset ${hex(offset)}`;
  return new StreamError(`${where}: ${detail}`, record, offset);
}

function recordError(r: RecordView, detail: string): StreamError {
  return streamError(recordName(r.type), r.offset, detail);
}

// ---- Small helpers ----

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function checkU32(what: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`${what} ${v} is not a u32`);
}

/** Writes a safe integer (negative ones two's complement) as a little-endian u64. */
function setU64(dv: DataView, off: number, v: number): void {
  const hi = Math.floor(v / TWO_32);
  dv.setUint32(off, v - hi * TWO_32, true);
  dv.setUint32(off + 4, hi >>> 0, true);
}

function u64Hex(hi: number, lo: number): string {
  return `0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")}`;
}

function roundUp8(n: number): number {
  return (n + 7) & ~7;
}

// ---- Headers and records (writing) ----

export interface ImageHeader {
  version: number;
  options: number;
}

export interface DomainHeader {
  /** 1 = x86 PV, 2 = x86 HVM. */
  type: number;
  pageShift: number;
  xenMajor: number;
  xenMinor: number;
}

/** The 24-byte image header, big-endian: marker all-ones, "XENF", version (3), options (0). */
export function encodeImageHeader(h?: Partial<ImageHeader>): Uint8Array {
  const version = h?.version ?? IHDR_VERSION;
  const options = h?.options ?? 0;
  checkU32("image header version", version);
  if (!Number.isInteger(options) || options < 0 || options > 0xffff) {
    throw new RangeError(`image header options ${options} is not a u16`);
  }
  const out = new Uint8Array(IMAGE_HEADER_SIZE);
  const dv = view(out);
  dv.setUint32(0, IHDR_MARKER_WORD, false);
  dv.setUint32(4, IHDR_MARKER_WORD, false);
  dv.setUint32(8, IHDR_ID, false);
  dv.setUint32(12, version, false);
  dv.setUint16(16, options, false);
  return out;
}

/** The 16-byte domain header, little-endian. */
export function encodeDomainHeader(h: DomainHeader): Uint8Array {
  checkU32("domain header type", h.type);
  checkU32("domain header xen_major", h.xenMajor);
  checkU32("domain header xen_minor", h.xenMinor);
  if (!Number.isInteger(h.pageShift) || h.pageShift < 0 || h.pageShift > 0xffff) {
    throw new RangeError(`domain header page_shift ${h.pageShift} is not a u16`);
  }
  const out = new Uint8Array(DOMAIN_HEADER_SIZE);
  const dv = view(out);
  dv.setUint32(0, h.type, true);
  dv.setUint16(4, h.pageShift, true);
  dv.setUint32(8, h.xenMajor, true);
  dv.setUint32(12, h.xenMinor, true);
  return out;
}

/**
 * One record as pieces to write in order: the 8-byte header, the body parts
 * (passed through, not copied) and, if the body is not a multiple of 8 bytes,
 * the zero padding. Refuses a body longer than REC_LENGTH_MAX, as Xen's
 * writer does.
 */
export function encodeRecord(type: number, body: Uint8Array | Uint8Array[]): Uint8Array[] {
  // REC_TYPE_OPTIONAL | n is negative in JavaScript: take the u32 it denotes.
  if (Number.isInteger(type) && type < 0 && type >= -0x80000000) type >>>= 0;
  checkU32("record type", type);
  const parts = Array.isArray(body) ? body : [body];
  let length = 0;
  for (const p of parts) length += p.length;
  if (length > REC_LENGTH_MAX) {
    throw streamError(
      recordName(type),
      -1,
      `body length ${hex(length)} exceeds REC_LENGTH_MAX ${hex(REC_LENGTH_MAX)}`,
    );
  }
  const header = new Uint8Array(RECORD_HEADER_SIZE);
  const dv = view(header);
  dv.setUint32(0, type, true);
  dv.setUint32(4, length, true);
  const out: Uint8Array[] = [header];
  for (const p of parts) if (p.length > 0) out.push(p);
  const pad = roundUp8(length) - length;
  if (pad > 0) out.push(new Uint8Array(pad));
  return out;
}

// ---- Record bodies (writing) ----

/** X86_PV_INFO: guest_width u8, pt_levels u8, 6 reserved bytes. Only (8,4) and (4,3) exist. */
export function encodePvInfo(guestWidth: 8 | 4, ptLevels: 4 | 3): Uint8Array {
  if (!((guestWidth === 8 && ptLevels === 4) || (guestWidth === 4 && ptLevels === 3))) {
    throw new RangeError(`X86_PV_INFO: invalid combination width ${guestWidth}, pt_levels ${ptLevels}`);
  }
  const out = new Uint8Array(8);
  out[0] = guestWidth;
  out[1] = ptLevels;
  return out;
}

/** The number of P2M frames an X86_PV_P2M_FRAMES record for pfns start..end (inclusive) carries. */
function p2mFrameCount(startPfn: number, endPfn: number, fpp: number): number {
  return Math.floor(endPfn / fpp) + 1 - Math.floor(startPfn / fpp);
}

/**
 * X86_PV_P2M_FRAMES: p2m_start_pfn u32, p2m_end_pfn u32, then the pfn (u64)
 * of each P2M frame covering start..end; a frame holds 4096/width entries.
 */
export function encodeP2mFrames(
  startPfn: number,
  endPfn: number,
  framePfns: ArrayLike<number>,
  guestWidth: 8 | 4 = 8,
): Uint8Array {
  checkU32("X86_PV_P2M_FRAMES start pfn", startPfn);
  checkU32("X86_PV_P2M_FRAMES end pfn", endPfn);
  if (startPfn > endPfn) throw new RangeError(`X86_PV_P2M_FRAMES: start pfn ${startPfn} > end pfn ${endPfn}`);
  const n = p2mFrameCount(startPfn, endPfn, PAGE_SIZE / guestWidth);
  if (framePfns.length !== n) {
    throw new RangeError(
      `X86_PV_P2M_FRAMES: pfns ${hex(startPfn)}..${hex(endPfn)} need ${n} frames, got ${framePfns.length}`,
    );
  }
  const out = new Uint8Array(8 + 8 * n);
  const dv = view(out);
  dv.setUint32(0, startPfn, true);
  dv.setUint32(4, endPfn, true);
  for (let i = 0; i < n; i++) {
    const pfn = framePfns[i];
    if (!Number.isSafeInteger(pfn) || pfn < 0)
      throw new RangeError(`X86_PV_P2M_FRAMES: bad frame pfn ${pfn}`);
    setU64(dv, 8 + 8 * i, pfn);
  }
  return out;
}

const PFN_LIMIT = 2 ** 52; // PAGE_DATA_PFN_MASK: bits 51–0

/**
 * The PAGE_DATA header and pfn array: count u32, reserved u32, then
 * (type << 60 | pfn) u64 per entry. The pages of the data-carrying entries
 * follow it in the record, in entry order (pass them as further body parts).
 */
export function encodePageDataHeader(pfns: ArrayLike<number>, types: ArrayLike<number>): Uint8Array {
  const count = pfns.length;
  if (types.length !== count) {
    throw new RangeError(`PAGE_DATA: ${count} pfns but ${types.length} types`);
  }
  if (count < 1) throw new RangeError("PAGE_DATA: a record needs at least one pfn");
  const out = new Uint8Array(8 + 8 * count);
  const dv = view(out);
  dv.setUint32(0, count, true);
  for (let i = 0; i < count; i++) {
    const pfn = pfns[i];
    const type = types[i];
    if (!pfinfoValid(type)) throw new RangeError(`PAGE_DATA: entry ${i} has invalid type ${type}`);
    if (!(pfn >= 0 && pfn < PFN_LIMIT && Number.isInteger(pfn))) {
      throw new RangeError(`PAGE_DATA: entry ${i} has invalid pfn ${pfn}`);
    }
    const off = 8 + 8 * i;
    if (pfn < TWO_32) {
      dv.setUint32(off, pfn, true);
      dv.setUint32(off + 4, (type << 28) >>> 0, true);
    } else {
      const hi = Math.floor(pfn / TWO_32);
      dv.setUint32(off, pfn - hi * TWO_32, true);
      dv.setUint32(off + 4, ((type << 28) | hi) >>> 0, true);
    }
  }
  return out;
}

/** The body of an X86_PV_VCPU_{BASIC,EXTENDED,XSAVE,MSRS} record: vcpu_id u32, reserved u32, blob. */
export function encodeVcpuRecord(vcpuId: number, blob: Uint8Array): Uint8Array {
  checkU32("vcpu id", vcpuId);
  const out = new Uint8Array(8 + blob.length);
  view(out).setUint32(0, vcpuId, true);
  out.set(blob, 8);
  return out;
}

export interface TscInfo {
  mode: number;
  khz: number;
  nsec: bigint;
  incarnation: number;
}

/** X86_TSC_INFO: mode u32, khz u32, nsec u64, incarnation u32, reserved u32 (24 bytes). */
export function encodeTscInfo(t: TscInfo): Uint8Array {
  checkU32("X86_TSC_INFO mode", t.mode);
  checkU32("X86_TSC_INFO khz", t.khz);
  checkU32("X86_TSC_INFO incarnation", t.incarnation);
  if (t.nsec < 0n || t.nsec >= 1n << 64n) throw new RangeError(`X86_TSC_INFO nsec ${t.nsec} is not a u64`);
  const out = new Uint8Array(24);
  const dv = view(out);
  dv.setUint32(0, t.mode, true);
  dv.setUint32(4, t.khz, true);
  dv.setBigUint64(8, t.nsec, true);
  dv.setUint32(16, t.incarnation, true);
  return out;
}

// ---- vcpu_guest_context, 64-bit guest (public/arch-x86/xen.h, xen-x86_64.h) ----

/** sizeof(vcpu_guest_context_x86_64_t). */
export const VCPU_CONTEXT_SIZE_64 = 5168;
export const VGCF_in_kernel = 1 << 2;
export const VGCF_online = 1 << 5;

// Offsets: fpu_ctxt[512] @0, flags @512, user_regs (struct cpu_user_regs, 200
// bytes) @520 — r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi at
// 0..112, error_code u32 @120, entry_vector u32 @124, rip @128, cs u16 @136,
// saved_upcall_mask u8 @140, rflags @144, rsp @152, ss/es/ds/fs/gs u16 at
// 160/168/176/184/192 — then trap_ctxt[256] (16 bytes each) @720, ldt_base
// @4816, ldt_ents @4824, gdt_frames[16] @4832, gdt_ents @4960, kernel_ss
// @4968, kernel_sp @4976, ctrlreg[8] @4984, debugreg[8] @5048,
// event_callback_eip @5112, failsafe_callback_eip @5120, syscall_callback_eip
// @5128, vm_assist @5136, fs_base @5144, gs_base_kernel @5152, gs_base_user @5160.
const USER_REGS = 520;
const VC = {
  flags: 512,
  rdx: USER_REGS + 96,
  rip: USER_REGS + 128,
  rsp: USER_REGS + 152,
  ldtBase: 4816,
  ldtEnts: 4824,
  gdtFrames: 4832,
  gdtEnts: 4960,
  kernelSs: 4968,
  kernelSp: 4976,
  ctrlreg: 4984,
  eventCallbackEip: 5112,
  failsafeCallbackEip: 5120,
  syscallCallbackEip: 5128,
  vmAssist: 5136,
  fsBase: 5144,
  gsBaseKernel: 5152,
  gsBaseUser: 5160,
} as const;
const GDT_FRAMES = 16;
const CTRLREGS = 8;

/**
 * The fields of a 64-bit vcpu_guest_context the model uses, as numbers.
 * Counts, frames and control registers are unsigned (< 2^53). Virtual
 * addresses (rip, rsp, ldtBase, kernelSp, the callbacks, the segment bases)
 * may also be negative: an upper-half canonical address such as
 * 0xffffffff81000000 is its sign-extended value, -0x7f000000.
 */
export interface VcpuContext {
  flags: number;
  /** user_regs.rdx: the start_info frame (an MFN in Xen, a PFN in the stream). */
  rdx: number;
  rip: number;
  rsp: number;
  ctrlreg: number[];
  gdtFrames: number[];
  gdtEnts: number;
  ldtBase: number;
  ldtEnts: number;
  kernelSp: number;
  kernelSs: number;
  vmAssist: number;
  eventCallbackEip: number;
  failsafeCallbackEip: number;
  syscallCallbackEip: number;
  fsBase: number;
  gsBaseKernel: number;
  gsBaseUser: number;
}

const VC_ADDRESS_FIELDS = new Set<string>([
  "rip",
  "rsp",
  "ldtBase",
  "kernelSp",
  "eventCallbackEip",
  "failsafeCallbackEip",
  "syscallCallbackEip",
  "fsBase",
  "gsBaseKernel",
  "gsBaseUser",
]);

type VcScalar = Exclude<keyof VcpuContext, "ctrlreg" | "gdtFrames">;
const VC_SCALARS = Object.keys(VC).filter((k) => k !== "ctrlreg" && k !== "gdtFrames") as VcScalar[];

function setVcField(dv: DataView, name: string, off: number, v: number, signed: boolean): void {
  const ok = Number.isSafeInteger(v) && (signed || v >= 0);
  if (!ok)
    throw new RangeError(
      `vcpu_guest_context ${name} = ${v} is not a ${signed ? "" : "non-negative "}safe integer`,
    );
  setU64(dv, off, v);
}

function getVcField(dv: DataView, name: string, off: number, signed: boolean): number {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  if (hi < 0x200000) return hi * TWO_32 + lo;
  if (signed) {
    const v = (hi | 0) * TWO_32 + lo;
    if (Number.isSafeInteger(v)) return v;
  }
  throw new RangeError(
    `vcpu_guest_context ${name} = ${u64Hex(hi, lo)} exceeds 2^53 − 1${signed ? " and is not a sign-extended address" : ""}`,
  );
}

/** A 64-bit vcpu_guest_context (5168 bytes) with the given fields; everything else zero. */
export function encodeVcpuContext(c: VcpuContext): Uint8Array {
  if (c.ctrlreg.length > CTRLREGS) throw new RangeError(`vcpu_guest_context has ${CTRLREGS} ctrlreg entries`);
  if (c.gdtFrames.length > GDT_FRAMES)
    throw new RangeError(`vcpu_guest_context has ${GDT_FRAMES} gdt_frames`);
  const out = new Uint8Array(VCPU_CONTEXT_SIZE_64);
  const dv = view(out);
  for (const k of VC_SCALARS) setVcField(dv, k, VC[k], c[k], VC_ADDRESS_FIELDS.has(k));
  for (let i = 0; i < c.ctrlreg.length; i++)
    setVcField(dv, `ctrlreg[${i}]`, VC.ctrlreg + 8 * i, c.ctrlreg[i], false);
  for (let i = 0; i < c.gdtFrames.length; i++) {
    setVcField(dv, `gdt_frames[${i}]`, VC.gdtFrames + 8 * i, c.gdtFrames[i], false);
  }
  return out;
}

/** The model's fields of a 64-bit vcpu_guest_context; RangeError if a value does not fit a number. */
export function decodeVcpuContext(blob: Uint8Array): VcpuContext {
  if (blob.length !== VCPU_CONTEXT_SIZE_64) {
    throw new RangeError(`vcpu_guest_context is ${VCPU_CONTEXT_SIZE_64} bytes, got ${blob.length}`);
  }
  const dv = view(blob);
  const c = { ctrlreg: [] as number[], gdtFrames: [] as number[] } as unknown as VcpuContext;
  for (const k of VC_SCALARS) c[k] = getVcField(dv, k, VC[k], VC_ADDRESS_FIELDS.has(k));
  for (let i = 0; i < CTRLREGS; i++)
    c.ctrlreg.push(getVcField(dv, `ctrlreg[${i}]`, VC.ctrlreg + 8 * i, false));
  for (let i = 0; i < GDT_FRAMES; i++) {
    c.gdtFrames.push(getVcField(dv, `gdt_frames[${i}]`, VC.gdtFrames + 8 * i, false));
  }
  return c;
}

// ---- Reading ----

export interface RecordView {
  type: number;
  /** Exactly body_length bytes; may alias a pushed chunk or an internal buffer until the next call. */
  body: Uint8Array;
  /** Stream offset of the record header. */
  offset: number;
}

export type StreamItem =
  | { kind: "image"; header: ImageHeader }
  | { kind: "domain"; header: DomainHeader }
  | { kind: "record"; record: RecordView };

/** What the reader expects next. */
const ReadState = { Image: 0, Domain: 1, RecordHeader: 2, RecordBody: 3, Done: 4 } as const;
type ReadState = (typeof ReadState)[keyof typeof ReadState];

const EMPTY = new Uint8Array(0);
/** A scratch buffer up to this size is kept for the next record that straddles chunks. */
const SCRATCH_KEEP = 8 * 2 ** 20;

/**
 * Incremental reader over a byte stream (a file or a socket): `push` chunks
 * as they arrive, call `next` until it returns undefined, and `end` when the
 * source ends. Chunks are kept as pushed; a record lying within one chunk is
 * returned as a subarray of it (so pushed chunks must not be modified), and
 * only a record straddling chunks is copied, once, into a reused buffer.
 * After a StreamError the reader is dead: `next` and `end` throw it again.
 */
export class StreamReader {
  private readonly expectType: number;
  private chunks: Uint8Array[] = [];
  private head = 0;
  private pos = 0;
  private avail = 0;
  private consumed = 0;
  private state: ReadState = ReadState.Image;
  private recType = 0;
  private recLength = 0;
  private recOffset = 0;
  private scratch = EMPTY;
  private readonly hdr = new Uint8Array(IMAGE_HEADER_SIZE);
  private readonly hdrView = view(this.hdr);
  private failure: StreamError | undefined;
  private ended = false;

  constructor(opts?: { expectType?: number }) {
    this.expectType = opts?.expectType ?? 1;
  }

  /** Bytes consumed: the stream offset of the next item. */
  get offset(): number {
    return this.consumed;
  }

  /** The END record has been returned. */
  get sawEnd(): boolean {
    return this.state === ReadState.Done;
  }

  push(chunk: Uint8Array): void {
    if (this.ended) throw new Error("StreamReader.push after end()");
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.avail += chunk.length;
  }

  next(): StreamItem | undefined {
    if (this.failure) throw this.failure;
    try {
      return this.step();
    } catch (e) {
      if (e instanceof StreamError) this.failure = e;
      throw e;
    }
  }

  end(): void {
    if (this.failure) throw this.failure;
    if (this.ended) return;
    this.ended = true;
    const err = this.endError();
    if (err) {
      this.failure = err;
      throw err;
    }
  }

  private endError(): StreamError | undefined {
    const have = this.avail;
    const off = this.consumed;
    const ended = (n: number, what: string) =>
      `truncated: the stream ended after ${have} of ${n} bytes ${what}`;
    switch (this.state) {
      case ReadState.Image:
        if (have >= IMAGE_HEADER_SIZE) break;
        return streamError("image header", off, ended(IMAGE_HEADER_SIZE, "of the image header"));
      case ReadState.Domain:
        if (have >= DOMAIN_HEADER_SIZE) break;
        return streamError("domain header", off, ended(DOMAIN_HEADER_SIZE, "of the domain header"));
      case ReadState.RecordHeader:
        if (have >= RECORD_HEADER_SIZE) break;
        return streamError(
          "record header",
          off,
          have === 0
            ? "truncated: the stream ended before the END record"
            : `${ended(RECORD_HEADER_SIZE, "of a record header")} (before the END record)`,
        );
      case ReadState.RecordBody: {
        const need = roundUp8(this.recLength);
        if (have >= need) break;
        const what =
          have >= this.recLength
            ? `of body and padding (body length ${this.recLength}; the padding is short)`
            : `of body and padding (body length ${this.recLength})`;
        return streamError(recordName(this.recType), this.recOffset, ended(need, what));
      }
      case ReadState.Done:
        return this.trailingError();
    }
    throw new Error(
      `StreamReader.end(): ${have} buffered bytes hold an unread item; call next() until it returns undefined first`,
    );
  }

  private trailingError(): StreamError | undefined {
    if (this.avail === 0) return undefined;
    return streamError(
      "trailing data",
      this.consumed,
      `${this.avail} bytes after the END record (at ${hex(this.recOffset)})`,
    );
  }

  private step(): StreamItem | undefined {
    switch (this.state) {
      case ReadState.Image:
        return this.readImageHeader();
      case ReadState.Domain:
        return this.readDomainHeader();
      case ReadState.RecordHeader:
        if (!this.readRecordHeader()) return undefined;
        return this.readRecordBody();
      case ReadState.RecordBody:
        return this.readRecordBody();
      case ReadState.Done: {
        const err = this.trailingError();
        if (err) throw err;
        return undefined;
      }
    }
  }

  // Xen's read_headers: marker, id, version (2..3), big-endian option, in this order.
  private readImageHeader(): StreamItem | undefined {
    if (this.avail < IMAGE_HEADER_SIZE) return undefined;
    this.peek(IMAGE_HEADER_SIZE);
    const dv = this.hdrView;
    const at = this.consumed;
    if (dv.getUint32(0, false) !== IHDR_MARKER_WORD || dv.getUint32(4, false) !== IHDR_MARKER_WORD) {
      throw streamError(
        "image header",
        at,
        "bad marker (not a migration v2 stream; legacy images have a zero bit)",
      );
    }
    const id = dv.getUint32(8, false);
    if (id !== IHDR_ID)
      throw streamError("image header", at, `bad id ${hex(id)} (expected ${hex(IHDR_ID)} "XENF")`);
    const version = dv.getUint32(12, false);
    if (version < 2 || version > 3) {
      throw streamError("image header", at, `unsupported version ${version} (expected 2 or 3)`);
    }
    const options = dv.getUint16(16, false);
    if (options & IHDR_OPT_BIG_ENDIAN) {
      throw streamError("image header", at, "big-endian streams are not supported (options bit 0 set)");
    }
    this.skip(IMAGE_HEADER_SIZE);
    this.state = ReadState.Domain;
    return { kind: "image", header: { version, options } };
  }

  // x86_pv_setup: the domain type, then the page size.
  private readDomainHeader(): StreamItem | undefined {
    if (this.avail < DOMAIN_HEADER_SIZE) return undefined;
    this.peek(DOMAIN_HEADER_SIZE);
    const dv = this.hdrView;
    const at = this.consumed;
    const header: DomainHeader = {
      type: dv.getUint32(0, true),
      pageShift: dv.getUint16(4, true),
      xenMajor: dv.getUint32(8, true),
      xenMinor: dv.getUint32(12, true),
    };
    if (header.type !== this.expectType) {
      const name = (t: number) => DHDR_TYPE_NAMES[t] ?? `reserved type ${t}`;
      throw streamError(
        "domain header",
        at,
        `unable to restore an ${name(header.type)} domain (type ${header.type}) into an ${name(this.expectType)} domain`,
      );
    }
    if (header.pageShift !== PAGE_SHIFT) {
      throw streamError(
        "domain header",
        at,
        `invalid page shift ${header.pageShift} (page size must be ${PAGE_SIZE}, shift ${PAGE_SHIFT})`,
      );
    }
    this.skip(DOMAIN_HEADER_SIZE);
    this.state = ReadState.RecordHeader;
    return { kind: "domain", header };
  }

  // read_record: the length limit is checked before the body is read.
  private readRecordHeader(): boolean {
    if (this.avail < RECORD_HEADER_SIZE) return false;
    this.peek(RECORD_HEADER_SIZE);
    const type = this.hdrView.getUint32(0, true);
    const length = this.hdrView.getUint32(4, true);
    if (length > REC_LENGTH_MAX) {
      throw streamError(
        recordName(type),
        this.consumed,
        `body length ${hex(length)} exceeds REC_LENGTH_MAX ${hex(REC_LENGTH_MAX)}`,
      );
    }
    this.recType = type;
    this.recLength = length;
    this.recOffset = this.consumed;
    this.skip(RECORD_HEADER_SIZE);
    this.state = ReadState.RecordBody;
    return true;
  }

  private readRecordBody(): StreamItem | undefined {
    const length = this.recLength;
    const padded = roundUp8(length);
    if (this.avail < padded) return undefined;
    const body = this.take(length);
    this.skip(padded - length);
    this.state = this.recType === REC_TYPE.END ? ReadState.Done : ReadState.RecordHeader;
    return { kind: "record", record: { type: this.recType, body, offset: this.recOffset } };
  }

  /**
   * Copy the bytes still buffered (at most a partial item: after `next` returned undefined)
   * into the reader's own memory, so that the source may reuse every chunk pushed so far —
   * a file read into one buffer over and over rather than into fresh memory each time.
   * Items already returned may alias those chunks: use them before the source reuses them.
   */
  detach(): void {
    const n = this.avail;
    if (n === 0) {
      this.chunks.length = 0;
      this.head = 0;
      this.pos = 0;
      return;
    }
    const last = this.own[this.ownNext ^ 1];
    if (this.chunks.length - this.head === 1 && this.chunks[this.head].buffer === last.buffer) return;
    let out = this.own[this.ownNext];
    if (out.length < n) {
      out = new Uint8Array(Math.max(n, 64 * 1024));
      this.own[this.ownNext] = out;
    }
    let filled = 0;
    for (let i = this.head, p = this.pos; filled < n; i++, p = 0) {
      const c = this.chunks[i];
      out.set(c.subarray(p), filled);
      filled += c.length - p;
    }
    this.chunks.length = 0;
    this.chunks.push(out.subarray(0, n));
    this.head = 0;
    this.pos = 0;
    this.ownNext ^= 1;
  }

  /** `detach`'s two buffers, used in turn (the bytes left may lie in the one used last). */
  private readonly own: Uint8Array[] = [EMPTY, EMPTY];
  private ownNext = 0;

  /** Copies the next n (≤ 24) bytes into `hdr` without consuming them. */
  private peek(n: number): void {
    let filled = 0;
    let i = this.head;
    let p = this.pos;
    while (filled < n) {
      const c = this.chunks[i];
      const k = Math.min(c.length - p, n - filled);
      this.hdr.set(c.subarray(p, p + k), filled);
      filled += k;
      i++;
      p = 0;
    }
  }

  /** Consumes n bytes and returns them contiguous: a view of a chunk, or a copy in `scratch`. */
  private take(n: number): Uint8Array {
    if (n === 0) return EMPTY;
    const first = this.chunks[this.head];
    if (first.length - this.pos >= n) {
      const v = first.subarray(this.pos, this.pos + n);
      this.skip(n);
      return v;
    }
    let out = this.scratch;
    if (out.length < n) {
      out = new Uint8Array(n);
      if (n <= SCRATCH_KEEP) this.scratch = out;
    }
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[this.head];
      const k = Math.min(c.length - this.pos, n - filled);
      out.set(c.subarray(this.pos, this.pos + k), filled);
      filled += k;
      this.advance(k);
    }
    return out.subarray(0, n);
  }

  private skip(n: number): void {
    while (n > 0) {
      const k = Math.min(this.chunks[this.head].length - this.pos, n);
      this.advance(k);
      n -= k;
    }
  }

  /** Consumes k bytes of the head chunk (k ≤ what it has left). */
  private advance(k: number): void {
    this.pos += k;
    this.avail -= k;
    this.consumed += k;
    if (this.pos === this.chunks[this.head].length) {
      this.chunks[this.head] = EMPTY;
      this.head++;
      this.pos = 0;
      if (this.head === this.chunks.length) {
        this.chunks.length = 0;
        this.head = 0;
      } else if (this.head >= 1024) {
        this.chunks.splice(0, this.head);
        this.head = 0;
      }
    }
  }
}

// ---- Record decoders, with the restorer's checks ----

function expectRecord(r: RecordView, ...types: number[]): void {
  if (!types.includes(r.type)) {
    throw recordError(r, `expected a ${types.map(recordName).join(" or ")} record`);
  }
}

/** X86_PV_INFO (handle_x86_pv_info): length ≥ 8, and (width, levels) is (8,4) or (4,3). */
export function decodePvInfo(r: RecordView): { guestWidth: number; ptLevels: number } {
  expectRecord(r, REC_TYPE.X86_PV_INFO);
  if (r.body.length < 8) throw recordError(r, `body length ${r.body.length} shorter than 8`);
  const guestWidth = r.body[0];
  const ptLevels = r.body[1];
  if (!((guestWidth === 8 && ptLevels === 4) || (guestWidth === 4 && ptLevels === 3))) {
    throw recordError(r, `invalid combination: guest width ${guestWidth}, pt_levels ${ptLevels}`);
  }
  return { guestWidth, ptLevels };
}

/**
 * X86_PV_P2M_FRAMES (handle_x86_pv_p2m_frames): length ≥ 8, start ≤ end,
 * length exactly 8 + 8·((end/fpp + 1) − start/fpp), fpp = 4096/width (512
 * for a 64-bit guest). A frame pfn that does not fit a number (≥ 2^53, so
 * never a valid pfn) is rejected here.
 */
export function decodeP2mFrames(
  r: RecordView,
  guestWidth: 8 | 4 = 8,
): { startPfn: number; endPfn: number; framePfns: number[] } {
  expectRecord(r, REC_TYPE.X86_PV_P2M_FRAMES);
  const len = r.body.length;
  if (len < 8) throw recordError(r, `body length ${len} shorter than 8`);
  const dv = view(r.body);
  const startPfn = dv.getUint32(0, true);
  const endPfn = dv.getUint32(4, true);
  if (startPfn > endPfn) throw recordError(r, `start pfn ${hex(startPfn)} > end pfn ${hex(endPfn)}`);
  const fpp = PAGE_SIZE / guestWidth;
  const n = p2mFrameCount(startPfn, endPfn, fpp);
  if (len !== 8 + 8 * n) {
    throw recordError(
      r,
      `wrong size: body length ${len}, expected 8 + 8 × ${n} = ${8 + 8 * n} for pfns ${hex(startPfn)}..${hex(endPfn)}`,
    );
  }
  const framePfns = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const lo = dv.getUint32(8 + 8 * i, true);
    const hi = dv.getUint32(12 + 8 * i, true);
    if (hi >= 0x200000) {
      throw recordError(
        r,
        `frame pfn ${u64Hex(hi, lo)} (entry ${i}, at offset ${hex(r.offset + 16 + 8 * i)}) is too large`,
      );
    }
    framePfns[i] = hi * TWO_32 + lo;
  }
  return { startPfn, endPfn, framePfns };
}

export interface PageDataView {
  count: number;
  pfns: Float64Array;
  types: Uint8Array;
  /** Offset within the body of each entry's page; -1 for the entries that carry none. */
  dataOffsets: Int32Array;
}

/**
 * PAGE_DATA (handle_page_data), checks in Xen's order: length ≥ 8, count ≥ 1,
 * length ≥ 8 + 8·count, then entry by entry pfn ≤ maxPfn and a known type,
 * then length exactly 8 + 8·count + 4096·(data-carrying entries). Bits 59–52
 * (reserved) are ignored.
 */
export function decodePageData(r: RecordView, maxPfn: number): PageDataView {
  expectRecord(r, REC_TYPE.PAGE_DATA);
  const len = r.body.length;
  if (len < 8) throw recordError(r, `body length ${len} shorter than the 8-byte header`);
  const dv = view(r.body);
  const count = dv.getUint32(0, true);
  if (count < 1) throw recordError(r, "count is 0 (a record needs at least one pfn)");
  const headerLen = 8 + 8 * count;
  if (len < headerLen) {
    throw recordError(r, `body length ${len} too short for ${count} pfns (needs at least ${headerLen})`);
  }
  const pfns = new Float64Array(count);
  const types = new Uint8Array(count);
  const dataOffsets = new Int32Array(count);
  let dataOff = headerLen;
  for (let i = 0; i < count; i++) {
    const off = 8 + 8 * i;
    const hi = dv.getUint32(off + 4, true);
    const pfn = (hi & 0xfffff) * TWO_32 + dv.getUint32(off, true);
    if (pfn > maxPfn) {
      throw recordError(
        r,
        `pfn ${hex(pfn)} (entry ${i}, at offset ${hex(r.offset + 8 + off)}) outside domain maximum ${hex(maxPfn)}`,
      );
    }
    const type = hi >>> 28;
    if (!pfinfoValid(type)) {
      throw recordError(
        r,
        `unknown type ${hex(type)} for pfn ${hex(pfn)} (entry ${i}, at offset ${hex(r.offset + 8 + off)})`,
      );
    }
    pfns[i] = pfn;
    types[i] = type;
    if (pfinfoCarriesData(type)) {
      dataOffsets[i] = dataOff;
      dataOff += PAGE_SIZE;
    } else {
      dataOffsets[i] = -1;
    }
  }
  if (len !== dataOff) {
    const pages = (dataOff - headerLen) / PAGE_SIZE;
    throw recordError(
      r,
      `wrong size: body length ${len}, expected 8 + 8 × ${count} + 4096 × ${pages} = ${dataOff} (${pages} entries carry data)`,
    );
  }
  return { count, pfns, types, dataOffsets };
}

/**
 * X86_PV_VCPU_{BASIC,EXTENDED,XSAVE,MSRS} (handle_x86_pv_vcpu_blob): a body
 * shorter than the 8-byte header is an error; a body of exactly 8 bytes is
 * tolerated (Xen 4.6–4.8 sent such) and gives undefined; vcpu_id ≤ maxVcpuId;
 * BASIC is exactly a 64-bit vcpu_guest_context, EXTENDED ≤ 128 bytes, XSAVE
 * ≥ 16 bytes, MSRS a multiple of 16 bytes. The blob aliases the body.
 */
export function decodeVcpuRecord(
  r: RecordView,
  maxVcpuId: number,
): { vcpuId: number; blob: Uint8Array } | undefined {
  expectRecord(
    r,
    REC_TYPE.X86_PV_VCPU_BASIC,
    REC_TYPE.X86_PV_VCPU_EXTENDED,
    REC_TYPE.X86_PV_VCPU_XSAVE,
    REC_TYPE.X86_PV_VCPU_MSRS,
  );
  const len = r.body.length;
  if (len < 8) throw recordError(r, `body length ${len} shorter than the 8-byte vCPU header`);
  if (len === 8) return undefined;
  const vcpuId = view(r.body).getUint32(0, true);
  if (vcpuId > maxVcpuId) throw recordError(r, `vcpu_id ${vcpuId} exceeds the domain's maximum ${maxVcpuId}`);
  const blob = r.body.subarray(8);
  const size = blob.length;
  switch (r.type) {
    case REC_TYPE.X86_PV_VCPU_BASIC:
      if (size !== VCPU_CONTEXT_SIZE_64) {
        throw recordError(r, `wrong size: context of ${size} bytes, expected ${VCPU_CONTEXT_SIZE_64}`);
      }
      break;
    case REC_TYPE.X86_PV_VCPU_EXTENDED:
      if (size > 128) throw recordError(r, `too long: blob of ${size} bytes, at most 128`);
      break;
    case REC_TYPE.X86_PV_VCPU_XSAVE:
      if (size < 16) throw recordError(r, `too short: blob of ${size} bytes, at least 16`);
      break;
    case REC_TYPE.X86_PV_VCPU_MSRS:
      if (size % 16 !== 0) throw recordError(r, `blob of ${size} bytes is not a multiple of 16`);
      break;
  }
  return { vcpuId, blob };
}

/** X86_TSC_INFO (handle_x86_tsc_info): exactly 24 bytes. */
export function decodeTscInfo(r: RecordView): TscInfo {
  expectRecord(r, REC_TYPE.X86_TSC_INFO);
  if (r.body.length !== 24) throw recordError(r, `wrong size: body length ${r.body.length}, expected 24`);
  const dv = view(r.body);
  return {
    mode: dv.getUint32(0, true),
    khz: dv.getUint32(4, true),
    nsec: dv.getBigUint64(8, true),
    incarnation: dv.getUint32(16, true),
  };
}

/** SHARED_INFO (handle_shared_info): exactly one page. */
export function checkSharedInfo(r: RecordView): void {
  expectRecord(r, REC_TYPE.SHARED_INFO);
  if (r.body.length !== PAGE_SIZE) {
    throw recordError(r, `wrong size: body length ${r.body.length}, expected ${PAGE_SIZE}`);
  }
}
