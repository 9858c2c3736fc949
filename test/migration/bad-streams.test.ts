/**
 * Bad migration streams against the restorer (reference A1–A3, A8–A10): every
 * malformed, truncated or inconsistent stream is refused with an error naming
 * the record and its offset, and leaves nothing behind — the half-built
 * domain is gone, every frame it got is free again, and the auditor is happy.
 * One valid stream is saved once; each case edits a copy of its bytes.
 */

import fc from "fast-check";
import { beforeAll, describe, expect, it } from "vitest";
import { bootOnHost, type RunOptions } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { MemorySink, saveGuest } from "../../src/migration/guest.js";
import { restoreStream } from "../../src/migration/restore.js";
import {
  decodeP2mFrames,
  decodePageData,
  decodeVcpuContext,
  encodePageDataHeader,
  encodeRecord,
  PAGE_SIZE,
  pfinfoCarriesData,
  REC_LENGTH_MAX,
  REC_TYPE,
  REC_TYPE_OPTIONAL,
  recordName,
  StreamError,
  StreamReader,
} from "../../src/migration/stream.js";
import { F_VALIDATED } from "../../src/xen/frametable.js";
import { Host } from "../../src/xen/host.js";

const MiB = 2 ** 20;
const DOMID = 9;
/** The guest: 64 MiB, pfns 0..0x3fff. */
const GUEST_MAX_PFN = 64 * 256 - 1;
/** Image header (24 bytes) + domain header (16 bytes). */
const HEADERS = 40;
/** Offsets in an X86_PV_VCPU_BASIC record (header 8 + vcpu header 8 + vcpu_guest_context). */
const BASIC_RDX = 16 + 520 + 96;
const BASIC_GDT_FRAMES = 16 + 4832;
const BASIC_GDT_ENTS = 16 + 4960;
const BASIC_CR3 = 16 + 4984 + 3 * 8;
const BASIC_CR1 = 16 + 4984 + 1 * 8;

interface Rec {
  type: number;
  /** Stream offset of the record header. */
  offset: number;
  /** Header + body + padding. */
  size: number;
}

interface PageLoc {
  /** Index in `recs`. */
  rec: number;
  entry: number;
  type: number;
  /** Offset of the pfn's page in the record (from its header); -1 if it carries none. */
  page: number;
}

/** The stream as pieces: [headers, record 0, record 1, …]. Pieces of `valid` are never written. */
type Stream = Uint8Array[];

let valid: Uint8Array;
let recs: Rec[];
let maxPfn: number;
let p2mFramePfns: number[];
/** Where every pfn travels (its last PAGE_DATA entry). */
const where = new Map<number, PageLoc>();
/** Pfns sent as page tables, by level. */
const tables: number[][] = [[], [], [], [], []];
let startInfoPfn: number;
let cr3Pfn: number;
/** The user L4 (cr1), or -1. */
let cr1Pfn: number;
let gdtPfns: number[];
/** Frames a good restore takes from the host. */
let framesUsedOk: number;

// ---- stream editing ----

const owned = new WeakSet<Uint8Array>();

function pieces(): Stream {
  return [valid.subarray(0, HEADERS), ...recs.map((r) => valid.subarray(r.offset, r.offset + r.size))];
}

/** Piece index of the `nth` record of type `type`. */
function pieceOf(type: number, nth = 0): number {
  let seen = 0;
  for (let i = 0; i < recs.length; i++) if (recs[i].type === type && seen++ === nth) return i + 1;
  throw new Error(`no record ${recordName(type)} #${nth}`);
}

/** A private copy of piece k, to write. */
function writable(s: Stream, k: number): Uint8Array {
  if (!owned.has(s[k])) {
    s[k] = s[k].slice();
    owned.add(s[k]);
  }
  return s[k];
}

function dv(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

function setU32(s: Stream, k: number, off: number, v: number): void {
  dv(writable(s, k)).setUint32(off, v >>> 0, true);
}

function setU64(s: Stream, k: number, off: number, v: number): void {
  setU32(s, k, off, v % 2 ** 32);
  setU32(s, k, off + 4, Math.floor(v / 2 ** 32));
}

function getU32(b: Uint8Array, off: number): number {
  return dv(b).getUint32(off, true);
}

function offsetOf(s: Stream, k: number): number {
  let at = 0;
  for (let i = 0; i < k; i++) at += s[i].length;
  return at;
}

function totalLength(s: Stream): number {
  return offsetOf(s, s.length);
}

/** The first n bytes of the stream. */
function truncate(s: Stream, n: number): Stream {
  const out: Stream = [];
  for (const p of s) {
    if (n <= 0) break;
    out.push(p.length <= n ? p : p.subarray(0, n));
    n -= p.length;
  }
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** PAGE_DATA record piece `k` re-encoded without `pfn`'s entry (and its page). */
function withoutPfn(s: Stream, k: number, pfn: number): void {
  const b = s[k];
  const pd = decodePageData({ type: REC_TYPE.PAGE_DATA, body: b.subarray(8), offset: 0 }, maxPfn);
  const pfns: number[] = [];
  const types: number[] = [];
  const pages: Uint8Array[] = [];
  for (let i = 0; i < pd.count; i++) {
    if (pd.pfns[i] === pfn) continue;
    pfns.push(pd.pfns[i]);
    types.push(pd.types[i]);
    const off = pd.dataOffsets[i];
    if (off >= 0) pages.push(b.subarray(8 + off, 8 + off + PAGE_SIZE));
  }
  expect(pfns.length).toBe(pd.count - 1);
  s[k] = concat(encodeRecord(REC_TYPE.PAGE_DATA, [encodePageDataHeader(pfns, types), ...pages]));
}

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

/** The error a restore must give: "<record> at offset 0x<offset>: <detail>". */
function named(record: string, offset: number, detail: RegExp | string = ""): RegExp {
  const d = typeof detail === "string" ? esc(detail) : detail.source;
  return new RegExp(`^${esc(record)} at offset ${hex(offset)}: .*${d}`);
}

// ---- restoring ----

interface Outcome {
  ok: boolean;
  error?: unknown;
  host: Host;
  /** Frames the restored domain holds (success only). */
  used: number;
}

/**
 * Present entries of the restored domain's validated page tables that map a frame it does not
 * own (Xen's own L4 slots 256–271 aside). Localisation gives every pfn in range a frame of the
 * domain, and this guest maps nothing else: any such entry is a pfn that escaped translation.
 */
function foreignEntries(h: Host): string[] {
  const f = h.frames;
  const bad: string[] = [];
  for (let m = 0; m < f.frames; m++) {
    const level = f.type[m];
    if (f.owner[m] !== DOMID + 1 || level < 1 || level > 4 || (f.flags[m] & F_VALIDATED) === 0) continue;
    const t = h.mem.frame(m);
    for (let i = 0; i < 512; i++) {
      if ((t[2 * i] & 1) === 0 || (level === 4 && i >= 256 && i < 272)) continue;
      const target = (t[2 * i + 1] & 0xfffff) * 0x100000 + (t[2 * i] >>> 12);
      if (target >= f.frames || f.owner[target] !== DOMID + 1)
        bad.push(`L${level} mfn ${hex(m)}[${i}] → ${hex(target)}`);
    }
  }
  return bad;
}

/**
 * Restore `s` on a fresh host. On failure, the host must be exactly as before; on success,
 * audit-clean, and the domain must tear down to the same host again.
 */
async function attempt(s: Stream): Promise<Outcome> {
  const h = new Host({ memoryMiB: 160 });
  const before = h.freeFrames();
  try {
    await restoreStream(h, DOMID, s);
  } catch (error) {
    expect(h.domain(DOMID)).toBeUndefined();
    expect(h.freeFrames()).toBe(before);
    expect(h.audit().problems).toEqual([]);
    return { ok: false, error, host: h, used: 0 };
  }
  expect(h.audit().problems).toEqual([]);
  expect(foreignEntries(h)).toEqual([]);
  const used = before - h.freeFrames();
  expect(h.destroyDomain(DOMID)).toBe(0);
  expect(h.freeFrames()).toBe(before);
  expect(h.audit().problems).toEqual([]);
  return { ok: true, host: h, used };
}

/** The restore fails with a StreamError whose message matches `re`, leaving nothing. */
async function refused(s: Stream, re: RegExp): Promise<StreamError> {
  const o = await attempt(s);
  expect(o.ok, "the restore should have failed").toBe(false);
  expect(o.error).toBeInstanceOf(StreamError);
  expect((o.error as Error).message).toMatch(re);
  return o.error as StreamError;
}

async function accepted(s: Stream): Promise<Outcome> {
  const o = await attempt(s);
  if (!o.ok) throw o.error;
  return o;
}

// ---- the valid stream ----

beforeAll(async () => {
  const opts: RunOptions = {
    strategy: "direct-pfn",
    pinning: "linux",
    workload: "fork-exec-exit",
    memoryBytes: 64 * MiB,
    seed: 7,
    iterations: 4,
    mapped: 2 * MiB,
  };
  const { h, kernel } = bootOnHost(opts);
  const run = new WorkloadRun(kernel, opts.workload, {
    seed: opts.seed,
    iterations: opts.iterations,
    mapped: opts.mapped,
  });
  for (let i = 0; i < 2; i++) run.next();
  const sink = new MemorySink();
  await saveGuest(h, kernel, run, sink, { live: false });
  valid = sink.concat();

  const reader = new StreamReader();
  reader.push(valid);
  recs = [];
  for (let item = reader.next(); item !== undefined; item = reader.next()) {
    if (item.kind !== "record") continue;
    const r = item.record;
    if (recs.length > 0) {
      const last = recs[recs.length - 1];
      last.size = r.offset - last.offset;
    }
    recs.push({ type: r.type, offset: r.offset, size: 0 });
    if (r.type === REC_TYPE.X86_PV_P2M_FRAMES) {
      const p = decodeP2mFrames(r);
      maxPfn = p.endPfn;
      p2mFramePfns = p.framePfns;
    } else if (r.type === REC_TYPE.PAGE_DATA) {
      const pd = decodePageData(r, maxPfn);
      for (let i = 0; i < pd.count; i++) {
        const type = pd.types[i];
        const page = pd.dataOffsets[i] < 0 ? -1 : 8 + pd.dataOffsets[i];
        where.set(pd.pfns[i], { rec: recs.length - 1, entry: i, type, page });
        if (pfinfoCarriesData(type) && (type & 7) !== 0) tables[type & 7].push(pd.pfns[i]);
      }
    } else if (r.type === REC_TYPE.X86_PV_VCPU_BASIC) {
      const c = decodeVcpuContext(r.body.subarray(8));
      startInfoPfn = c.rdx;
      cr3Pfn = c.ctrlreg[3] / PAGE_SIZE;
      cr1Pfn = c.ctrlreg[1] % 2 === 1 ? Math.floor(c.ctrlreg[1] / PAGE_SIZE) : -1;
      gdtPfns = c.gdtFrames.slice(0, Math.ceil(c.gdtEnts / 512));
    }
  }
  reader.end();
  recs[recs.length - 1].size = valid.length - recs[recs.length - 1].offset;
  expect(recs[recs.length - 1].type).toBe(REC_TYPE.END);
  expect(maxPfn).toBe(GUEST_MAX_PFN);
  expect(recs.filter((r) => r.type === REC_TYPE.PAGE_DATA).length).toBeGreaterThan(4);
  for (const l of [1, 2, 3, 4]) expect(tables[l].length).toBeGreaterThan(0);
  expect(where.get(cr3Pfn)!.type & 7).toBe(4);

  const ok = await accepted(pieces());
  framesUsedOk = ok.used;
  expect(framesUsedOk).toBeGreaterThan(maxPfn);
}, 60_000);

describe("the valid stream", () => {
  it("restores, also fed in odd chunks (records and headers straddling them), taking the same frames", async () => {
    const odd: Uint8Array[] = [];
    for (let at = 0; at < valid.length; ) {
      const n = at < 100_000 ? 1 + (at % 13) : 1_000_003;
      odd.push(valid.slice(at, at + n));
      at += n;
    }
    expect((await accepted(odd)).used).toBe(framesUsedOk);
  });
});

// ---- truncation ----

/** The error for the stream cut after n bytes. */
function truncationError(n: number): RegExp {
  if (n < 24) return named("image header", 0, "truncated");
  if (n < HEADERS) return named("domain header", 24, "truncated");
  const r = recs.find((r) => n < r.offset + r.size)!;
  if (n === r.offset)
    return named("record header", r.offset, "truncated: the stream ended before the END record");
  if (n < r.offset + 8)
    return named("record header", r.offset, `truncated: the stream ended after ${n - r.offset} of 8`);
  return named(recordName(r.type), r.offset, "truncated");
}

describe("a truncated stream is refused, naming where it stops", () => {
  it("at every record boundary, in each header, mid-body of PAGE_DATA, in the vCPU record, before END", async () => {
    const points = new Set<number>([0, 1, 8, 23, 24, 30, 39]);
    for (const r of recs) {
      points.add(r.offset); // a record boundary (the last one: just before END)
      points.add(r.offset + 3); // mid-header
      if (r.size > 8) points.add(r.offset + r.size - 1); // the body's last byte
    }
    const pd = recs[pieceOf(REC_TYPE.PAGE_DATA) - 1];
    points.add(pd.offset + 8 + 2); // inside count
    points.add(pd.offset + 16 + 8 * 500 + 3); // inside the pfn array
    points.add(pd.offset + 16 + 8 * 1024 + 100 * PAGE_SIZE + 17); // inside the data
    const vcpu = recs[pieceOf(REC_TYPE.X86_PV_VCPU_BASIC) - 1];
    points.add(vcpu.offset + 12); // inside the vcpu header
    points.add(vcpu.offset + BASIC_CR3); // inside the context
    points.add(valid.length - 1); // inside END's header
    const full = pieces();
    for (const n of [...points].sort((a, b) => a - b)) {
      const e = await refused(truncate(full, n), truncationError(n));
      expect(e.offset).toBeLessThanOrEqual(n);
    }
  });

  it("an empty stream", async () => {
    await refused([], named("image header", 0, "the stream ended after 0 of 24 bytes"));
  });
});

// ---- headers ----

describe("bad headers", () => {
  const cases: [string, (b: Uint8Array) => void, RegExp][] = [
    ["marker", (b) => (b[5] = 0xfe), /^image header at offset 0x0: bad marker/],
    ["id", (b) => (b[11] ^= 1), /^image header at offset 0x0: bad id 0x58454e47/],
    ["version 1", (b) => (b[15] = 1), /^image header at offset 0x0: unsupported version 1/],
    ["version 4", (b) => (b[15] = 4), /^image header at offset 0x0: unsupported version 4/],
    ["big-endian option", (b) => (b[17] = 1), /^image header at offset 0x0: big-endian/],
    ["domain type HVM", (b) => (b[24] = 2), /^domain header at offset 0x18: unable to restore an x86 HVM/],
    ["domain type 0", (b) => (b[24] = 0), /^domain header at offset 0x18: .*reserved type 0/],
    ["page shift", (b) => (b[28] = 13), /^domain header at offset 0x18: invalid page shift 13/],
  ];
  for (const [what, edit, re] of cases) {
    it(what, async () => {
      const s = pieces();
      edit(writable(s, 0));
      await refused(s, re);
    });
  }

  it("a v2 stream (no STATIC_DATA_END: inferred before X86_PV_P2M_FRAMES) restores; a v3 one without is refused", async () => {
    const s = pieces();
    s.splice(pieceOf(REC_TYPE.STATIC_DATA_END), 1);
    const v2 = [...s];
    writable(v2, 0)[15] = 2;
    expect((await accepted(v2)).used).toBe(framesUsedOk);
    await refused(
      s,
      named(
        "X86_PV_P2M_FRAMES",
        recs[pieceOf(REC_TYPE.STATIC_DATA_END) - 1].offset,
        "No STATIC_DATA_END seen",
      ),
    );
  });
});

// ---- record framing and PAGE_DATA ----

describe("bad records", () => {
  it("a record length beyond 128 MiB is refused before its body is read", async () => {
    const k = pieceOf(REC_TYPE.PAGE_DATA);
    const at = recs[k - 1].offset;
    for (const len of [REC_LENGTH_MAX + 1, 0xffffffff]) {
      const s = pieces();
      setU32(s, k, 4, len);
      await refused(s, named("PAGE_DATA", at, `body length ${hex(len)} exceeds REC_LENGTH_MAX`));
    }
    // The same on the last record, whose body would not even be there.
    const s = pieces();
    const end = s.length - 1;
    setU32(s, end, 4, REC_LENGTH_MAX + 8);
    await refused(s, named("END", recs[end - 1].offset, "exceeds REC_LENGTH_MAX"));
  });

  it("a record length that runs past the end of the stream", async () => {
    const s = pieces();
    const k = pieceOf(REC_TYPE.X86_PV_VCPU_BASIC);
    setU32(s, k, 4, REC_LENGTH_MAX);
    await refused(s, named("X86_PV_VCPU_BASIC", recs[k - 1].offset, "truncated"));
  });

  it("PAGE_DATA whose count lies: 0, one more, one fewer, far more than the pfns present", async () => {
    const k = pieceOf(REC_TYPE.PAGE_DATA, 2);
    const at = recs[k - 1].offset;
    const count = getU32(valid, at + 8);
    const cases: [number, RegExp][] = [
      [0, named("PAGE_DATA", at, "count is 0")],
      [count - 1, named("PAGE_DATA", at, /wrong size: body length \d+, expected 8 \+ 8 × 1023/)],
      // The 1025th "entry" is the first bytes of the data: some check refuses it.
      [count + 1, named("PAGE_DATA", at, /(wrong size|outside domain maximum|unknown type)/)],
      [0x10000000, named("PAGE_DATA", at, "too short for 268435456 pfns")],
      [0xffffffff, named("PAGE_DATA", at, "too short for 4294967295 pfns")],
    ];
    for (const [c, re] of cases) {
      const s = pieces();
      setU32(s, k, 8, c);
      await refused(s, re);
    }
  });

  it("a pfn beyond max_pfn, as the first entry and as the last", async () => {
    const k = pieceOf(REC_TYPE.PAGE_DATA, 3);
    const at = recs[k - 1].offset;
    const count = getU32(valid, at + 8);
    for (const [entry, lo, hi, pfn] of [
      [0, maxPfn + 1, 0, maxPfn + 1],
      [count - 1, 0xffffffff, 0x000fffff, 2 ** 52 - 1],
      [count - 1, 0, 1, 2 ** 32],
    ]) {
      const s = pieces();
      const type = getU32(valid, at + 16 + 8 * entry + 4) & 0xf0000000;
      setU32(s, k, 16 + 8 * entry, lo);
      setU32(s, k, 16 + 8 * entry + 4, type | hi);
      await refused(
        s,
        named(
          "PAGE_DATA",
          at,
          `pfn ${hex(pfn)} (entry ${entry}, at offset ${hex(at + 16 + 8 * entry)}) outside domain maximum ${hex(maxPfn)}`,
        ),
      );
    }
  });

  it("reserved PAGE_DATA types 5–8 are refused", async () => {
    const k = pieceOf(REC_TYPE.PAGE_DATA, 1);
    const at = recs[k - 1].offset;
    for (const t of [5, 6, 7, 8]) {
      const s = pieces();
      setU32(s, k, 16 + 8 * 7 + 4, t * 2 ** 28);
      await refused(s, named("PAGE_DATA", at, `unknown type ${hex(t)} for pfn`));
    }
  });

  it("data length mismatch: a page short, a page too many, a type that carries no data", async () => {
    const k = pieceOf(REC_TYPE.PAGE_DATA);
    const at = recs[k - 1].offset;
    const body = valid.subarray(at + 8, at + recs[k - 1].size);
    const expectSize = /wrong size: body length \d+, expected 8 \+ 8 × 1024 \+ 4096 × \d+/;
    for (const b of [
      body.subarray(0, body.length - PAGE_SIZE),
      concat([body, new Uint8Array(PAGE_SIZE)]),
      body.subarray(0, body.length - 8),
    ]) {
      const s = pieces();
      s[k] = concat(encodeRecord(REC_TYPE.PAGE_DATA, b));
      await refused(s, named("PAGE_DATA", at, expectSize));
    }
    // An entry turned XTAB (no data follows for it): the record is then a page too long.
    const s = pieces();
    setU32(s, k, 16 + 4, 0xf0000000 | (getU32(valid, at + 16 + 4) & 0xfffff));
    await refused(s, named("PAGE_DATA", at, /wrong size: .* \(1023 entries carry data\)/));
  });
});

// ---- unknown records, order and duplicates ----

describe("record types, order and duplicates", () => {
  /** The stream with `extra` inserted before piece `before`. */
  function inserted(before: number, extra: Uint8Array): Stream {
    const s = pieces();
    s.splice(before, 0, extra);
    return s;
  }

  it("an unknown mandatory record before END is refused; with bit 31 set it is skipped", async () => {
    const end = pieces().length - 1;
    const at = recs[end - 1].offset;
    for (const body of [new Uint8Array(0), new Uint8Array(13).fill(0xa5)]) {
      await refused(
        inserted(end, concat(encodeRecord(0x7f, body))),
        named("unknown 0x7f", at, "Mandatory record unknown 0x7f not handled"),
      );
      const optional = inserted(end, concat(encodeRecord((REC_TYPE_OPTIONAL | 0x7f) >>> 0, body)));
      expect((await accepted(optional)).used).toBe(framesUsedOk);
      if (body.length % 8 !== 0) {
        // Cut inside its padding: the body is all there, the record is not.
        await refused(
          truncate(optional, at + 8 + body.length + 1),
          named("unknown 0x8000007f (optional)", at, "the padding is short"),
        );
      }
    }
  });

  it("mandatory records the PV restorer does not handle, and CHECKPOINT, are refused", async () => {
    const end = pieces().length - 1;
    const at = recs[end - 1].offset;
    for (const [type, detail] of [
      [REC_TYPE.HVM_CONTEXT, "not handled"],
      [REC_TYPE.HVM_PARAMS, "not handled"],
      [REC_TYPE.TOOLSTACK, "not handled"],
      [REC_TYPE.CHECKPOINT_DIRTY_PFN_LIST, "not handled"],
      [REC_TYPE.CHECKPOINT, "Found checkpoint in non-checkpointed stream"],
    ] as const) {
      await refused(
        inserted(end, concat(encodeRecord(type, new Uint8Array(8)))),
        named(recordName(type), at, detail),
      );
    }
  });

  it("a duplicate X86_PV_INFO or STATIC_DATA_END is refused", async () => {
    for (const type of [REC_TYPE.X86_PV_INFO, REC_TYPE.STATIC_DATA_END]) {
      const k = pieceOf(type);
      const r = recs[k - 1];
      await refused(
        inserted(k + 1, valid.subarray(r.offset, r.offset + r.size)),
        named(recordName(type), r.offset + r.size, `duplicate ${recordName(type)}`),
      );
    }
  });

  it("PAGE_DATA before X86_PV_P2M_FRAMES is refused (no pfn is valid yet)", async () => {
    const s = pieces();
    const p2m = pieceOf(REC_TYPE.X86_PV_P2M_FRAMES);
    const pd = pieceOf(REC_TYPE.PAGE_DATA);
    const [page] = s.splice(pd, 1);
    s.splice(p2m, 0, page);
    await refused(s, named("PAGE_DATA", recs[p2m - 1].offset, "PAGE_DATA before X86_PV_P2M_FRAMES"));
  });

  it("X86_PV_P2M_FRAMES, SHARED_INFO or a vCPU record before X86_PV_INFO is refused", async () => {
    for (const type of [REC_TYPE.X86_PV_P2M_FRAMES, REC_TYPE.SHARED_INFO, REC_TYPE.X86_PV_VCPU_BASIC]) {
      const s = pieces();
      const info = pieceOf(REC_TYPE.X86_PV_INFO);
      const k = pieceOf(type);
      const moved = s[k];
      s.splice(k, 1);
      s.splice(info, 0, moved);
      // Moved first, after the headers; X86_PV_P2M_FRAMES also meets the missing STATIC_DATA_END first.
      const detail = type === REC_TYPE.X86_PV_P2M_FRAMES ? "No STATIC_DATA_END seen" : "before X86_PV_INFO";
      await refused(s, named(recordName(type), HEADERS, detail));
    }
  });

  it("bytes after END (a second END) are refused", async () => {
    const s = pieces();
    s.push(concat(encodeRecord(REC_TYPE.END, new Uint8Array(0))));
    await refused(s, named("trailing data", valid.length, "8 bytes after the END record"));
  });

  it("a missing SHARED_INFO is refused at END, after the tables were pinned: all undone", async () => {
    const s = pieces();
    const k = pieceOf(REC_TYPE.SHARED_INFO);
    s.splice(k, 1);
    await refused(s, named("END", recs[recs.length - 1].offset - recs[k - 1].size, "no SHARED_INFO record"));
  });
});

// ---- page tables and vCPU state ----

describe("page tables and vCPU state", () => {
  /** Piece and offset of entry `slot` of the table page of `pfn`. */
  function entryOf(pfn: number, slot: number): { k: number; off: number; at: number } {
    const loc = where.get(pfn)!;
    return { k: loc.rec + 1, off: loc.page + 8 * slot, at: recs[loc.rec].offset };
  }

  /** The first table of `level` (of `among`) with an empty slot (from `from`): its pfn and the slot. */
  function emptySlot(level: number, from = 0, among = tables[level]): { pfn: number; slot: number } {
    for (const pfn of among) {
      const { off, at } = entryOf(pfn, 0);
      for (let i = from; i < 512; i++)
        if ((getU32(valid, at + off + 8 * i) & 1) === 0) return { pfn, slot: i };
    }
    throw new Error(`no L${level} table with an empty slot`);
  }

  it("a table entry naming a pfn beyond max_pfn is refused, at every level", async () => {
    for (const level of [1, 2, 3, 4]) {
      const { pfn, slot } = emptySlot(level, level === 4 ? 272 : 0);
      const { k, off, at } = entryOf(pfn, slot);
      for (const [lo, hi, bad] of [
        [(maxPfn + 1) * PAGE_SIZE + 0x67, 0, maxPfn + 1],
        [0xfffff067, 0x800fffff, 2 ** 40 - 1], // address bits 51–12 all set (NX too)
      ]) {
        const s = pieces();
        setU32(s, k, off, lo);
        setU32(s, k, off + 4, hi);
        await refused(
          s,
          named("PAGE_DATA", at, `Bad pfn ${hex(bad)} for L${level}[${slot}]: beyond max_pfn`),
        );
      }
    }
  });

  it("a table entry naming a pfn in range that never arrives: the restorer populates it (zeroed), as Xen does", async () => {
    // A data page an L1 maps, that is none of start_info, the GDT, the P2M list.
    const special = new Set([startInfoPfn, ...gdtPfns, ...p2mFramePfns]);
    let target = -1;
    for (const l1 of tables[1]) {
      const { off, at } = entryOf(l1, 0);
      for (let i = 0; i < 512 && target < 0; i++) {
        const lo = getU32(valid, at + off + 8 * i);
        const high = getU32(valid, at + off + 8 * i + 4) & 0xfffff;
        const pfn = lo >>> 12;
        if ((lo & 1) === 1 && high === 0 && where.get(pfn)?.type === 0 && !special.has(pfn)) target = pfn;
      }
      if (target >= 0) break;
    }
    expect(target).toBeGreaterThanOrEqual(0);
    const s = pieces();
    withoutPfn(s, where.get(target)!.rec + 1, target);
    const h = new Host({ memoryMiB: 160 });
    const before = h.freeFrames();
    await restoreStream(h, DOMID, s);
    expect(h.audit().problems).toEqual([]);
    expect(before - h.freeFrames()).toBe(framesUsedOk);
    // The pfn has a frame of the domain, all zeroes.
    const f = h.frames;
    let mfn = -1;
    for (let m = 0; m < f.frames; m++)
      if (f.owner[m] === DOMID + 1 && f.m2pLo[m] === target && f.m2pHi[m] === 0) mfn = m;
    expect(mfn).toBeGreaterThanOrEqual(0);
    expect(h.mem.frame(mfn).every((w) => w === 0)).toBe(true);
    // With no table naming it either, the pfn is simply absent: one frame fewer.
    const s2 = pieces();
    let cleared = 0;
    for (const level of [1, 2, 3, 4]) {
      for (const pfn of tables[level]) {
        const { k, off } = entryOf(pfn, 0);
        for (let i = 0; i < 512; i++) {
          const lo = getU32(s2[k], off + 8 * i);
          if ((lo & 1) === 1 && lo >>> 12 === target && (getU32(s2[k], off + 8 * i + 4) & 0xfffff) === 0) {
            setU32(s2, k, off + 8 * i, 0);
            setU32(s2, k, off + 8 * i + 4, 0);
            cleared++;
          }
        }
      }
    }
    expect(cleared).toBeGreaterThanOrEqual(1);
    withoutPfn(s2, where.get(target)!.rec + 1, target); // after the edits: it moves pages
    expect((await accepted(s2)).used).toBe(framesUsedOk - 1);
  });

  /** The table pfns reachable from the L4 of pfn `l4` (stream entries: pfns). */
  function treeOf(l4: number): Set<number> {
    const seen = new Set<number>([l4]);
    const walk = (pfn: number, level: number) => {
      const { off, at } = entryOf(pfn, 0);
      for (let i = 0; i < 512; i++) {
        const lo = getU32(valid, at + off + 8 * i);
        if ((lo & 1) === 0 || (level === 2 && (lo & 0x80) !== 0)) continue; // absent, or a superpage
        const child = (getU32(valid, at + off + 8 * i + 4) & 0xfffff) * 2 ** 20 + (lo >>> 12);
        if (seen.has(child) || ((where.get(child)?.type ?? 0) & 7) !== level - 1) continue;
        seen.add(child);
        if (level > 2) walk(child, level - 1);
      }
    };
    walk(l4, 4);
    return seen;
  }

  it("tables that fail Xen's validation are refused at END (setting cr3, re-pinning), all undone", async () => {
    const end = recs[recs.length - 1].offset;
    // An L1 under cr3 maps the L4 writable: validated when vCPU0's context is set.
    const kernelTree = treeOf(cr3Pfn);
    const { pfn: l1, slot } = emptySlot(
      1,
      0,
      tables[1].filter((p) => kernelTree.has(p)),
    );
    let at = entryOf(l1, slot);
    let s = pieces();
    setU32(s, at.k, at.off, cr3Pfn * PAGE_SIZE + 0x67); // present, RW, user
    setU32(s, at.k, at.off + 4, 0);
    await refused(
      s,
      named("END", end, /setting vcpu0's context failed \(-\d+\): its page tables do not validate/),
    );
    // A pinned L4 that is neither cr3 nor cr1 names an L1 as its L3: validated when re-pinned.
    const other = tables[4].filter((p) => p !== cr3Pfn && p !== cr1Pfn && where.get(p)!.type === 0xc);
    expect(other.length).toBeGreaterThan(0);
    const l4 = emptySlot(4, 0, other);
    expect(l4.slot).toBeLessThan(256);
    at = entryOf(l4.pfn, l4.slot);
    s = pieces();
    setU32(s, at.k, at.off, tables[1][0] * PAGE_SIZE + 0x67);
    setU32(s, at.k, at.off + 4, 0);
    await refused(s, named("END", end, /Failed to pin batch of \d+ tables/));
  });

  it("a CR3 that is not an L4 is refused naming cr3; out of range too", async () => {
    const k = pieceOf(REC_TYPE.X86_PV_VCPU_BASIC);
    const end = recs[recs.length - 1].offset;
    const l1 = tables[1][0];
    for (const [pfn, detail] of [
      [startInfoPfn, `cr3 (pfn ${hex(startInfoPfn)}) has bad type 0, expected 4`],
      [l1, `cr3 (pfn ${hex(l1)}) has bad type ${where.get(l1)!.type}, expected 4`],
      [maxPfn + 1, `cr3 (pfn ${hex(maxPfn + 1)}) out of range`],
    ] as const) {
      const s = pieces();
      setU64(s, k, BASIC_CR3, pfn * PAGE_SIZE);
      await refused(s, named("END", end, detail));
    }
    // cr1 (the user L4) with bit 0 set must be an L4 too.
    const s = pieces();
    setU64(s, k, BASIC_CR1, startInfoPfn * PAGE_SIZE + 1);
    await refused(s, named("END", end, `cr1 (pfn ${hex(startInfoPfn)}) has bad type 0, expected 4`));
  });

  it("a CR3 too large for a number is refused naming the record", async () => {
    const k = pieceOf(REC_TYPE.X86_PV_VCPU_BASIC);
    const s = pieces();
    setU32(s, k, BASIC_CR3 + 4, 0xffffffff);
    await refused(
      s,
      named(
        "END",
        recs[recs.length - 1].offset,
        "vcpu0's context: vcpu_guest_context ctrlreg[3] = 0xffffffff",
      ),
    );
  });

  it("start_info and GDT frames must be NOTAB pages in range", async () => {
    const k = pieceOf(REC_TYPE.X86_PV_VCPU_BASIC);
    const end = recs[recs.length - 1].offset;
    let s = pieces();
    setU64(s, k, BASIC_RDX, cr3Pfn);
    await refused(s, named("END", end, `start_info (pfn ${hex(cr3Pfn)}) has bad type`));
    s = pieces();
    setU64(s, k, BASIC_RDX, maxPfn + 5);
    await refused(s, named("END", end, `start_info (pfn ${hex(maxPfn + 5)}) out of range`));
    s = pieces();
    setU64(s, k, BASIC_GDT_ENTS, 512);
    setU64(s, k, BASIC_GDT_FRAMES, cr3Pfn);
    await refused(s, named("END", end, `GDT frame 0 (pfn ${hex(cr3Pfn)}) has bad type`));
    s = pieces();
    setU64(s, k, BASIC_GDT_ENTS, 14 * 512 + 1);
    await refused(s, named("END", end, "GDT entry count"));
  });

  it("a missing vCPU0 BASIC record is refused; a BASIC for a vCPU the domain lacks too", async () => {
    const s = pieces();
    const k = pieceOf(REC_TYPE.X86_PV_VCPU_BASIC);
    s.splice(k, 1);
    await refused(
      s,
      named("END", recs[recs.length - 1].offset - recs[k - 1].size, "Sender didn't send vcpu0's basic state"),
    );
    const s2 = pieces();
    setU32(s2, k, 8, 1);
    await refused(s2, named("X86_PV_VCPU_BASIC", recs[k - 1].offset, "vcpu_id 1 exceeds"));
    const s3 = pieces();
    s3[k] = concat(
      encodeRecord(
        REC_TYPE.X86_PV_VCPU_BASIC,
        valid.subarray(recs[k - 1].offset + 8, recs[k - 1].offset + recs[k - 1].size - 8),
      ),
    );
    await refused(s3, named("X86_PV_VCPU_BASIC", recs[k - 1].offset, "wrong size"));
  });
});

// ---- random mutations ----

const u32 = fc.oneof(
  fc.integer({ min: 0, max: 0x20 }),
  fc.constantFrom(
    0x7f,
    0x8000007f,
    0x80000000,
    REC_LENGTH_MAX,
    REC_LENGTH_MAX + 1,
    0xffffffff,
    0x3fff,
    0x4000,
    0x1000,
  ),
  fc.integer({ min: 0, max: 0xffffffff }),
);
const index = fc.noBias(fc.integer({ min: 0, max: 0x7fffffff }));

/** Byte-level edits, addressed in the valid stream's records (applied before records move). */
type Edit =
  | { kind: "flip"; at: number; mask: number }
  | { kind: "flipStructure"; rec: number; at: number; mask: number }
  | { kind: "header"; rec: number; field: number; value: number }
  | { kind: "pfn"; rec: number; entry: number; half: number; value: number }
  | { kind: "pte"; level: number; table: number; slot: number; lo: number; hi: number }
  | { kind: "vcpu"; field: number; value: number };

type Move = { kind: "dup" | "del"; rec: number; to: number };

/** A page-table entry overwritten: in range, just beyond max_pfn, or anywhere in its 40 frame bits. */
const pteEdit = fc
  .record({
    level: fc.integer({ min: 1, max: 4 }),
    table: index,
    slot: fc.integer({ min: 0, max: 511 }),
    // In range, just beyond max_pfn, anywhere in the 40 bits of a PTE's frame.
    pfn: fc.oneof(
      { weight: 2, arbitrary: fc.integer({ min: 0, max: GUEST_MAX_PFN }) },
      { weight: 2, arbitrary: fc.integer({ min: GUEST_MAX_PFN + 1, max: GUEST_MAX_PFN + 0x1000 }) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 40 - 1 }) },
    ),
    flags: fc.oneof(
      fc.constantFrom(0x67, 0x65, 0x27, 0x25, 0x63, 0xe7, 0),
      fc.integer({ min: 0, max: 0xfff }),
    ),
    nx: fc.boolean(),
  })
  .map(({ level, table, slot, pfn, flags, nx }) => ({
    kind: "pte" as const,
    level,
    table,
    slot,
    lo: ((pfn % 2 ** 20) * PAGE_SIZE + flags) >>> 0,
    hi: (Math.floor(pfn / 2 ** 20) | (nx ? 0x80000000 : 0)) >>> 0,
  }));

const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), at: index, mask: fc.integer({ min: 1, max: 255 }) }),
  fc.record({
    kind: fc.constant("flipStructure" as const),
    rec: index,
    at: index,
    mask: fc.integer({ min: 1, max: 255 }),
  }),
  fc.record({
    kind: fc.constant("header" as const),
    rec: index,
    field: fc.integer({ min: 0, max: 1 }),
    value: u32,
  }),
  fc.record({
    kind: fc.constant("pfn" as const),
    rec: index,
    entry: index,
    half: fc.integer({ min: 0, max: 1 }),
    value: fc.oneof(
      u32,
      fc.integer({ min: 0, max: GUEST_MAX_PFN + 16 }),
      fc.integer({ min: 0, max: 15 }).map((t) => t * 2 ** 28),
    ),
  }),
  pteEdit,
  fc.record({
    kind: fc.constant("vcpu" as const),
    field: fc.constantFrom(
      BASIC_RDX,
      BASIC_CR3,
      BASIC_CR3 + 4,
      BASIC_CR1,
      BASIC_GDT_ENTS,
      BASIC_GDT_FRAMES,
      8,
      16 + 512,
    ),
    value: fc.oneof(
      u32,
      fc.integer({ min: 0, max: GUEST_MAX_PFN + 16 }).map((p) => p * PAGE_SIZE),
    ),
  }),
);

const move: fc.Arbitrary<Move> = fc.record({
  kind: fc.constantFrom("dup" as const, "del" as const),
  rec: index,
  to: index,
});

const mutation = fc.record({
  edits: fc.array(edit, { maxLength: 3 }),
  moves: fc.array(move, { maxLength: 2 }),
  truncate: fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: index }),
});

function pick<T>(xs: T[], i: number): T {
  return xs[i % xs.length];
}

type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(m: Mutation): Stream {
  const s = pieces();
  const pageData = recs.flatMap((r, i) => (r.type === REC_TYPE.PAGE_DATA ? [i + 1] : []));
  for (const e of m.edits) {
    switch (e.kind) {
      case "flip": {
        let at = e.at % valid.length;
        let k = 0;
        while (at >= s[k].length) at -= s[k++].length;
        writable(s, k)[at] ^= e.mask;
        break;
      }
      case "flipStructure": {
        // Headers, record headers, small records, the pfn arrays of PAGE_DATA.
        const k = e.rec % s.length;
        const span =
          k > 0 && recs[k - 1].type === REC_TYPE.PAGE_DATA ? 16 + 8 * getU32(s[k], 8) : s[k].length;
        writable(s, k)[e.at % Math.min(span, s[k].length)] ^= e.mask;
        break;
      }
      case "header":
        setU32(s, 1 + (e.rec % recs.length), 4 * e.field, e.value);
        break;
      case "pfn": {
        const k = pick(pageData, e.rec);
        setU32(s, k, 16 + 8 * (e.entry % getU32(valid, recs[k - 1].offset + 8)) + 4 * e.half, e.value);
        break;
      }
      case "pte": {
        const loc = where.get(pick(tables[e.level], e.table))!;
        setU32(s, loc.rec + 1, loc.page + 8 * e.slot, e.lo);
        setU32(s, loc.rec + 1, loc.page + 8 * e.slot + 4, e.hi);
        break;
      }
      case "vcpu":
        setU32(s, pieceOf(REC_TYPE.X86_PV_VCPU_BASIC), e.field, e.value);
        break;
    }
  }
  for (const mv of m.moves) {
    const k = 1 + (mv.rec % (s.length - 1));
    if (mv.kind === "del") s.splice(k, 1);
    else s.splice(1 + (mv.to % (s.length - 1)), 0, s[k]);
  }
  return m.truncate === null ? s : truncate(s, m.truncate % (totalLength(s) + 1));
}

describe("random mutations of a valid stream", () => {
  it("restore either succeeds audit-clean or throws a StreamError and leaves the host as it was", async () => {
    const seen = { ok: 0, refused: 0, messages: new Map<string, number>() };
    await fc.assert(
      fc.asyncProperty(mutation, async (m) => {
        const o = await attempt(mutate(m));
        if (o.ok) {
          seen.ok++;
          return;
        }
        seen.refused++;
        expect(o.error).toBeInstanceOf(StreamError);
        const msg = (o.error as Error).message;
        expect(msg).toMatch(/^[A-Za-z0-9_ ()]+ at offset 0x[0-9a-f]+: \S/);
        const key = msg
          .replace(/ at offset .*?: /, ": ")
          .replace(/0x[0-9a-f]+|\d+/g, "#")
          .slice(0, 60);
        seen.messages.set(key, (seen.messages.get(key) ?? 0) + 1);
      }),
      { numRuns: 100, seed: 0xbad5 },
    );
    // Both outcomes are reached, refusals most often, and for many different reasons.
    expect(seen.ok).toBeGreaterThanOrEqual(5);
    expect(seen.refused).toBeGreaterThan(seen.ok);
    expect(seen.messages.size).toBeGreaterThanOrEqual(10);
  });

  it("page-table entries overwritten at random: refused at the first one beyond max_pfn, else localised", async () => {
    const seen = { badPfn: 0, ok: 0, atEnd: 0 };
    await fc.assert(
      fc.asyncProperty(fc.array(pteEdit, { minLength: 1, maxLength: 4 }), async (edits) => {
        // The model: the entries as the restorer will see them (the last edit of a slot wins).
        const final = new Map<
          string,
          { rec: number; entry: number; level: number; slot: number; pfn: number }
        >();
        for (const e of edits) {
          const table = pick(tables[e.level], e.table);
          const loc = where.get(table)!;
          const pfn = (e.hi & 0xfffff) * 2 ** 20 + (e.lo >>> 12);
          const key = `${table}/${e.slot}`;
          final.delete(key);
          if ((e.lo & 1) === 1 && pfn > maxPfn)
            final.set(key, { rec: loc.rec, entry: loc.entry, level: e.level, slot: e.slot, pfn });
        }
        // Localisation walks the records, their entries and each table's slots in order.
        const bad = [...final.values()].sort((a, b) => a.rec - b.rec || a.entry - b.entry || a.slot - b.slot);
        const o = await attempt(mutate({ edits, moves: [], truncate: null }));
        if (bad.length > 0) {
          const b = bad[0];
          expect(o.ok).toBe(false);
          expect((o.error as Error).message).toMatch(
            named(
              "PAGE_DATA",
              recs[b.rec].offset,
              `Bad pfn ${hex(b.pfn)} for L${b.level}[${b.slot}]: beyond max_pfn`,
            ),
          );
          seen.badPfn++;
        } else if (o.ok) {
          seen.ok++;
        } else {
          // Every entry got a frame: only Xen's validation at END (set cr3, pin) can refuse.
          expect(o.error).toBeInstanceOf(StreamError);
          expect((o.error as Error).message).toMatch(
            /^END at offset 0x[0-9a-f]+: (setting vcpu0's context failed|Failed to pin)/,
          );
          seen.atEnd++;
        }
      }),
      { numRuns: 50, seed: 0x9d7e },
    );
    expect(seen.badPfn).toBeGreaterThanOrEqual(10);
    expect(seen.ok).toBeGreaterThanOrEqual(3);
    expect(seen.atEnd).toBeGreaterThanOrEqual(3);
  });
});
