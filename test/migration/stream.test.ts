import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  checkSharedInfo,
  decodeP2mFrames,
  decodePageData,
  decodePvInfo,
  decodeTscInfo,
  decodeVcpuContext,
  decodeVcpuRecord,
  encodeDomainHeader,
  encodeImageHeader,
  encodeP2mFrames,
  encodePageDataHeader,
  encodePvInfo,
  encodeRecord,
  encodeTscInfo,
  encodeVcpuContext,
  encodeVcpuRecord,
  PAGE_SIZE,
  PFINFO,
  pfinfoCarriesData,
  pfinfoPopulated,
  pfinfoValid,
  REC_LENGTH_MAX,
  REC_TYPE,
  REC_TYPE_OPTIONAL,
  type RecordView,
  recordName,
  StreamError,
  StreamReader,
  VCPU_CONTEXT_SIZE_64,
  type VcpuContext,
  VGCF_in_kernel,
  VGCF_online,
} from "../../src/migration/stream.js";

// ---- helpers ----

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

function page(seed: number): Uint8Array {
  const p = new Uint8Array(PAGE_SIZE);
  for (let i = 0; i < PAGE_SIZE; i++) p[i] = (seed * 131 + i * 7 + (i >> 8)) & 0xff;
  return p;
}

function u64(b: Uint8Array, off: number): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(off, true);
}

function rec(type: number, body: Uint8Array, offset = 0x1000): RecordView {
  return { type, body, offset };
}

/** A PAGE_DATA body built by hand, so that invalid ones can be made: entries are [lo, hi] halves. */
function rawPageData(count: number, entries: [number, number][], pages: number): Uint8Array {
  const b = new Uint8Array(8 + 8 * entries.length + PAGE_SIZE * pages);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, count, true);
  entries.forEach(([lo, hi], i) => {
    dv.setUint32(8 + 8 * i, lo, true);
    dv.setUint32(12 + 8 * i, hi, true);
  });
  return b;
}

function errorOf(f: () => unknown): StreamError {
  try {
    f();
  } catch (e) {
    if (e instanceof StreamError) return e;
    throw e;
  }
  throw new Error("expected a StreamError");
}

const L4_PINNED = PFINFO.L4TAB + PFINFO.PINNED;

const CONTEXT: VcpuContext = {
  flags: VGCF_online | VGCF_in_kernel,
  rdx: 0x5678,
  rip: -0x7f000000, // 0xffffffff81000000
  rsp: -0x77ff_ffff_f000, // 0xffff880000001000
  ctrlreg: [0x80050033, 0, 0, 0x1234000, 0x2660, 0, 0, 0],
  gdtFrames: [0x111, 0x222, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
  gdtEnts: 32,
  ldtBase: 0,
  ldtEnts: 0,
  kernelSp: -0x77ff_ffff_e000,
  kernelSs: 0xe02b,
  vmAssist: 0b101,
  eventCallbackEip: -0x7eff_0000,
  failsafeCallbackEip: -0x7efe_0000,
  syscallCallbackEip: -0x7efd_0000,
  fsBase: 0x7f00_1234_5000,
  gsBaseKernel: -0x77ff_0000_0000,
  gsBaseUser: 0,
};

interface Layout {
  name: string;
  offset: number;
  end: number;
}

interface Built {
  bytes: Uint8Array;
  records: { type: number; body: Uint8Array; offset: number }[];
  layout: Layout[];
}

function build(records: { type: number; body: Uint8Array[] }[]): Built {
  const parts = [
    encodeImageHeader(),
    encodeDomainHeader({ type: 1, pageShift: 12, xenMajor: 4, xenMinor: 19 }),
  ];
  let offset = 40;
  const out: Built["records"] = [];
  const layout: Layout[] = [];
  for (const r of records) {
    const pieces = encodeRecord(r.type, r.body);
    const size = pieces.reduce((n, p) => n + p.length, 0);
    out.push({ type: r.type, body: concat(r.body), offset });
    layout.push({ name: recordName(r.type), offset, end: offset + size });
    parts.push(...pieces);
    offset += size;
  }
  return { bytes: concat(parts), records: out, layout };
}

const PAGES1 = {
  pfns: [0, 1, 2, 3, 0x10],
  types: [PFINFO.NOTAB, PFINFO.L1TAB, PFINFO.XTAB, L4_PINNED, PFINFO.NOTAB],
};
const PAGES2 = {
  pfns: [0x7f, 5, 6, 7, 8],
  types: [PFINFO.XALLOC, PFINFO.L3TAB, PFINFO.BROKEN, PFINFO.L2TAB + PFINFO.PINNED, PFINFO.XTAB],
};
const EXTENDED_BLOB = Uint8Array.from({ length: 20 }, (_, i) => i + 1); // body 28: 4 bytes of padding

function pagesFor(pd: { pfns: number[]; types: number[] }): Uint8Array[] {
  return pd.pfns.filter((_, i) => pfinfoCarriesData(pd.types[i])).map((pfn) => page(pfn));
}

function fullStream(): Built {
  return build([
    { type: REC_TYPE.X86_PV_INFO, body: [encodePvInfo(8, 4)] },
    { type: REC_TYPE.STATIC_DATA_END, body: [] },
    { type: REC_TYPE.X86_PV_P2M_FRAMES, body: [encodeP2mFrames(0, 0x7f, [0x10])] },
    {
      type: REC_TYPE.PAGE_DATA,
      body: [encodePageDataHeader(PAGES1.pfns, PAGES1.types), ...pagesFor(PAGES1)],
    },
    {
      type: REC_TYPE.PAGE_DATA,
      body: [encodePageDataHeader(PAGES2.pfns, PAGES2.types), ...pagesFor(PAGES2)],
    },
    {
      type: REC_TYPE.X86_TSC_INFO,
      body: [encodeTscInfo({ mode: 1, khz: 2_400_000, nsec: 0x0123_4567_89ab_cdefn, incarnation: 3 })],
    },
    { type: REC_TYPE.SHARED_INFO, body: [page(0x5a)] },
    { type: REC_TYPE.X86_PV_VCPU_BASIC, body: [encodeVcpuRecord(0, encodeVcpuContext(CONTEXT))] },
    { type: REC_TYPE.X86_PV_VCPU_EXTENDED, body: [encodeVcpuRecord(0, EXTENDED_BLOB)] },
    { type: REC_TYPE.END, body: [] },
  ]);
}

/** Small enough to cut at every byte: no page data; an odd-length record for padding. */
function smallStream(): Built {
  return build([
    { type: REC_TYPE.X86_PV_INFO, body: [encodePvInfo(8, 4)] },
    { type: REC_TYPE.STATIC_DATA_END, body: [] },
    { type: REC_TYPE.X86_PV_P2M_FRAMES, body: [encodeP2mFrames(0, 0x7f, [0x10])] },
    { type: REC_TYPE.PAGE_DATA, body: [encodePageDataHeader([3], [PFINFO.XTAB])] },
    { type: REC_TYPE.X86_PV_VCPU_EXTENDED, body: [encodeVcpuRecord(0, new Uint8Array(13).fill(9))] },
    { type: REC_TYPE.END, body: [] },
  ]);
}

type Item =
  | { kind: "image"; header: { version: number; options: number } }
  | { kind: "domain"; header: { type: number; pageShift: number; xenMajor: number; xenMinor: number } }
  | { kind: "record"; record: RecordView };

/** Feeds `bytes` in chunks of size `sizes(i)`, draining after each push; copies bodies (they may alias). */
function readAll(
  bytes: Uint8Array,
  sizes: (i: number) => number,
  reuse = false,
): { items: Item[]; reader: StreamReader } {
  const reader = new StreamReader();
  const items: Item[] = [];
  const drain = () => {
    for (let it = reader.next(); it !== undefined; it = reader.next()) {
      items.push(
        it.kind === "record"
          ? { kind: "record", record: { ...it.record, body: it.record.body.slice() } }
          : it,
      );
    }
  };
  let pos = 0;
  // With `reuse`, every chunk is read into one buffer, scribbled over once the reader detached.
  const buf = new Uint8Array(bytes.length);
  for (let i = 0; pos < bytes.length; i++) {
    const n = Math.min(Math.max(1, sizes(i)), bytes.length - pos);
    if (reuse) {
      buf.set(bytes.subarray(pos, pos + n));
      reader.push(buf.subarray(0, n));
    } else {
      reader.push(bytes.subarray(pos, pos + n));
    }
    pos += n;
    drain();
    if (reuse) {
      reader.detach();
      buf.fill(0xa5);
    }
  }
  drain();
  reader.end();
  return { items, reader };
}

function checkFullStream(built: Built, items: Item[], reader: StreamReader): void {
  expect(reader.sawEnd).toBe(true);
  expect(reader.offset).toBe(built.bytes.length);
  expect(items[0]).toEqual({ kind: "image", header: { version: 3, options: 0 } });
  expect(items[1]).toEqual({ kind: "domain", header: { type: 1, pageShift: 12, xenMajor: 4, xenMinor: 19 } });
  const records = items.slice(2).map((it) => (it.kind === "record" ? it.record : undefined));
  expect(records.map((r) => r && { type: r.type, offset: r.offset })).toEqual(
    built.records.map((r) => ({ type: r.type, offset: r.offset })),
  );
  expect(records.every((r, i) => r && same(r.body, built.records[i].body))).toBe(true);

  const byType = (t: number) => records.filter((r): r is RecordView => r?.type === t);
  expect(decodePvInfo(byType(REC_TYPE.X86_PV_INFO)[0])).toEqual({ guestWidth: 8, ptLevels: 4 });
  expect(decodeP2mFrames(byType(REC_TYPE.X86_PV_P2M_FRAMES)[0])).toEqual({
    startPfn: 0,
    endPfn: 0x7f,
    framePfns: [0x10],
  });
  const pds = byType(REC_TYPE.PAGE_DATA);
  for (const [i, src] of [PAGES1, PAGES2].entries()) {
    const pd = decodePageData(pds[i], 0x7f);
    expect(Array.from(pd.pfns)).toEqual(src.pfns);
    expect(Array.from(pd.types)).toEqual(src.types);
    for (let e = 0; e < pd.count; e++) {
      if (pfinfoCarriesData(src.types[e])) {
        const off = pd.dataOffsets[e];
        expect(same(pds[i].body.subarray(off, off + PAGE_SIZE), page(src.pfns[e]))).toBe(true);
      } else {
        expect(pd.dataOffsets[e]).toBe(-1);
      }
    }
  }
  expect(decodeTscInfo(byType(REC_TYPE.X86_TSC_INFO)[0])).toEqual({
    mode: 1,
    khz: 2_400_000,
    nsec: 0x0123_4567_89ab_cdefn,
    incarnation: 3,
  });
  checkSharedInfo(byType(REC_TYPE.SHARED_INFO)[0]);
  const basic = decodeVcpuRecord(byType(REC_TYPE.X86_PV_VCPU_BASIC)[0], 0);
  expect(basic?.vcpuId).toBe(0);
  expect(decodeVcpuContext(basic!.blob)).toEqual(CONTEXT);
  const ext = decodeVcpuRecord(byType(REC_TYPE.X86_PV_VCPU_EXTENDED)[0], 0);
  expect(ext?.blob).toEqual(EXTENDED_BLOB);
}

// ---- tests ----

describe("constants and names", () => {
  it("names records like the spec, with unknown and optional types called so", () => {
    expect(recordName(REC_TYPE.PAGE_DATA)).toBe("PAGE_DATA");
    expect(recordName(REC_TYPE.X86_PV_INFO)).toBe("X86_PV_INFO");
    expect(recordName(REC_TYPE.END)).toBe("END");
    expect(recordName(REC_TYPE.X86_MSR_POLICY)).toBe("X86_MSR_POLICY");
    expect(recordName(0x13)).toBe("unknown 0x13");
    expect(recordName(REC_TYPE_OPTIONAL | 1)).toBe("unknown 0x80000001 (optional)");
    expect(REC_LENGTH_MAX).toBe(0x8000000);
  });

  it("classifies the PFINFO type nibbles as A3 does", () => {
    const all = Array.from({ length: 16 }, (_, t) => t);
    expect(all.filter(pfinfoValid)).toEqual([0, 1, 2, 3, 4, 9, 10, 11, 12, 13, 14, 15]);
    expect(all.filter(pfinfoCarriesData)).toEqual([0, 1, 2, 3, 4, 9, 10, 11, 12]);
    expect(all.filter(pfinfoPopulated)).toEqual([0, 1, 2, 3, 4, 9, 10, 11, 12, 14]);
    expect(pfinfoValid(16) || pfinfoValid(-1)).toBe(false);
  });
});

describe("encoding", () => {
  it("writes the image header big-endian", () => {
    const h = encodeImageHeader();
    expect(Array.from(h)).toEqual([
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x58, 0x45, 0x4e, 0x46, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0,
      0,
    ]);
    expect(String.fromCharCode(...h.subarray(8, 12))).toBe("XENF");
    expect(h[15]).toBe(3);
    expect(encodeImageHeader({ version: 2, options: 1 }).subarray(12, 18)).toEqual(
      Uint8Array.from([0, 0, 0, 2, 0, 1]),
    );
  });

  it("writes the domain header little-endian", () => {
    expect(Array.from(encodeDomainHeader({ type: 1, pageShift: 12, xenMajor: 4, xenMinor: 19 }))).toEqual([
      1, 0, 0, 0, 12, 0, 0, 0, 4, 0, 0, 0, 19, 0, 0, 0,
    ]);
  });

  it("pads a record with zeros to 8 bytes, body_length excluding the padding", () => {
    const pieces = encodeRecord(REC_TYPE_OPTIONAL | 0x42, Uint8Array.from([1, 2, 3, 4, 5]));
    expect(pieces.map((p) => p.length)).toEqual([8, 5, 3]);
    expect(Array.from(concat(pieces))).toEqual([0x42, 0, 0, 0x80, 5, 0, 0, 0, 1, 2, 3, 4, 5, 0, 0, 0]);
    expect(encodeRecord(REC_TYPE.X86_PV_INFO, encodePvInfo(8, 4)).map((p) => p.length)).toEqual([8, 8]);
    expect(Array.from(concat(encodeRecord(REC_TYPE.END, [])))).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it("passes body parts through without copying them", () => {
    const pg = page(1);
    const pieces = encodeRecord(REC_TYPE.PAGE_DATA, [encodePageDataHeader([1], [0]), pg]);
    expect(pieces[2]).toBe(pg);
  });

  it("refuses a record longer than REC_LENGTH_MAX", () => {
    const mib = new Uint8Array(2 ** 20);
    const ok = encodeRecord(REC_TYPE.PAGE_DATA, new Array(128).fill(mib));
    expect(new DataView(ok[0].buffer).getUint32(4, true)).toBe(REC_LENGTH_MAX);
    const e = errorOf(() => encodeRecord(REC_TYPE.PAGE_DATA, new Array(129).fill(mib)));
    expect(e.message).toBe("PAGE_DATA (writing): body length 0x8100000 exceeds REC_LENGTH_MAX 0x8000000");
    expect(e.record).toBe("PAGE_DATA");
  });

  it("writes PAGE_DATA entries as type << 60 | pfn", () => {
    const b = encodePageDataHeader([0x1_2345_6789, 5, 0xffff_ffff], [L4_PINNED, PFINFO.XTAB, PFINFO.L1TAB]);
    expect(Array.from(b.subarray(0, 8))).toEqual([3, 0, 0, 0, 0, 0, 0, 0]);
    expect(Array.from(b.subarray(8, 16))).toEqual([0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0xc0]);
    expect(Array.from(b.subarray(16, 24))).toEqual([5, 0, 0, 0, 0, 0, 0, 0xf0]);
    expect(Array.from(b.subarray(24, 32))).toEqual([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0x10]);
    const pd = decodePageData(rec(REC_TYPE.PAGE_DATA, concat([b, page(0), page(1)])), 2 ** 40);
    expect(Array.from(pd.pfns)).toEqual([0x1_2345_6789, 5, 0xffff_ffff]);
    expect(Array.from(pd.types)).toEqual([L4_PINNED, PFINFO.XTAB, PFINFO.L1TAB]);
    expect(Array.from(pd.dataOffsets)).toEqual([32, -1, 32 + PAGE_SIZE]);
    // The largest pfn (bits 51–0 all set) sits just under the type nibble.
    const top = encodePageDataHeader([2 ** 52 - 1], [PFINFO.XTAB]);
    expect(Array.from(top.subarray(8, 16))).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0xf0]);
    expect(decodePageData(rec(REC_TYPE.PAGE_DATA, top), 2 ** 52).pfns[0]).toBe(2 ** 52 - 1);
  });

  it("refuses to write invalid bodies", () => {
    expect(() => encodePageDataHeader([], [])).toThrow(RangeError);
    expect(() => encodePageDataHeader([1], [5])).toThrow(RangeError);
    expect(() => encodePageDataHeader([2 ** 52], [0])).toThrow(RangeError);
    expect(() => encodeP2mFrames(0, 512, [1])).toThrow(/need 2 frames, got 1/);
    expect(() => encodeP2mFrames(2, 1, [1])).toThrow(RangeError);
    expect(() => encodePvInfo(8, 3 as 4)).toThrow(RangeError);
  });

  it("writes X86_TSC_INFO as mode, khz, nsec, incarnation, reserved", () => {
    const b = encodeTscInfo({ mode: 2, khz: 1_000_000, nsec: 2n ** 63n + 5n, incarnation: 7 });
    expect(b.length).toBe(24);
    const dv = new DataView(b.buffer);
    expect([
      dv.getUint32(0, true),
      dv.getUint32(4, true),
      dv.getBigUint64(8, true),
      dv.getUint32(16, true),
    ]).toEqual([2, 1_000_000, 2n ** 63n + 5n, 7]);
  });
});

describe("vcpu_guest_context (64-bit)", () => {
  it("puts each field at its offset in xen.h's layout", () => {
    const b = encodeVcpuContext(CONTEXT);
    expect(b.length).toBe(VCPU_CONTEXT_SIZE_64);
    expect(u64(b, 512)).toBe(0x24n); // flags: online | in_kernel
    expect(u64(b, 616)).toBe(0x5678n); // user_regs.rdx
    expect(u64(b, 648)).toBe(0xffffffff81000000n); // user_regs.rip
    expect(u64(b, 672)).toBe(0xffff880000001000n); // user_regs.rsp
    expect(u64(b, 4832)).toBe(0x111n); // gdt_frames[0]
    expect(u64(b, 4840)).toBe(0x222n); // gdt_frames[1]
    expect(u64(b, 4960)).toBe(32n); // gdt_ents
    expect(u64(b, 4968)).toBe(0xe02bn); // kernel_ss
    expect(u64(b, 4976)).toBe(0xffff880000002000n); // kernel_sp
    expect(u64(b, 4984)).toBe(0x80050033n); // ctrlreg[0]
    expect(u64(b, 5008)).toBe(0x1234000n); // ctrlreg[3]
    expect(u64(b, 5016)).toBe(0x2660n); // ctrlreg[4]
    expect(u64(b, 5112)).toBe(0xffffffff81010000n); // event_callback_eip
    expect(u64(b, 5128)).toBe(0xffffffff81030000n); // syscall_callback_eip
    expect(u64(b, 5136)).toBe(0b101n); // vm_assist
    expect(u64(b, 5144)).toBe(0x7f0012345000n); // fs_base
    expect(u64(b, 5152)).toBe(0xffff880100000000n); // gs_base_kernel
    // Everything else is zero: fpu_ctxt, the other registers, trap_ctxt, debugreg.
    let nonzero = 0;
    for (const x of b.subarray(0, 512)) nonzero += x;
    for (const x of b.subarray(720, 4816)) nonzero += x;
    for (const x of b.subarray(5048, 5112)) nonzero += x;
    expect(nonzero).toBe(0);
    expect(decodeVcpuContext(b)).toEqual(CONTEXT);
  });

  it("refuses values that do not fit a number", () => {
    const b = encodeVcpuContext(CONTEXT);
    const dv = new DataView(b.buffer);
    dv.setBigUint64(5008, 2n ** 53n, true);
    expect(() => decodeVcpuContext(b)).toThrow(RangeError);
    expect(() => decodeVcpuContext(b)).toThrow(/ctrlreg\[3\]/);
    dv.setBigUint64(5008, 0x1234000n, true);
    dv.setBigUint64(648, 0x8000000000000000n, true); // not sign-extendable into a safe integer
    expect(() => decodeVcpuContext(b)).toThrow(/rip/);
    dv.setBigUint64(648, 0n, true);
    dv.setBigUint64(616, 0xffffffffffffffffn, true); // not an address: no sign extension
    expect(() => decodeVcpuContext(b)).toThrow(/rdx/);
    expect(() => encodeVcpuContext({ ...CONTEXT, rdx: -1 })).toThrow(RangeError);
    expect(() => encodeVcpuContext({ ...CONTEXT, rip: 2 ** 53 })).toThrow(RangeError);
    expect(() => decodeVcpuContext(new Uint8Array(5167))).toThrow(RangeError);
  });
});

describe("StreamReader round trip", () => {
  const built = fullStream();

  it("reads a whole stream pushed as one chunk, returning bodies without copies", () => {
    const reader = new StreamReader();
    reader.push(built.bytes);
    const items: Item[] = [];
    for (let it = reader.next(); it !== undefined; it = reader.next()) {
      if (it.kind === "record" && it.record.body.length > 0)
        expect(it.record.body.buffer).toBe(built.bytes.buffer);
      items.push(it);
    }
    reader.end();
    checkFullStream(built, items, reader);
  });

  it("reads it fed one byte at a time", () => {
    const { items, reader } = readAll(built.bytes, () => 1);
    checkFullStream(built, items, reader);
  });

  it("reads it fed in random chunk sizes", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 10_000 }), { minLength: 1, maxLength: 40 }), (sizes) => {
        const { items, reader } = readAll(built.bytes, (i) => sizes[i % sizes.length]);
        checkFullStream(built, items, reader);
      }),
      { numRuns: 60 },
    );
  });

  it("reads it from one buffer reused for every chunk, detaching after each (a file restore)", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 10_000 }), { minLength: 1, maxLength: 40 }), (sizes) => {
        const { items, reader } = readAll(built.bytes, (i) => sizes[i % sizes.length], true);
        checkFullStream(built, items, reader);
      }),
      { numRuns: 60 },
    );
  });

  it("accepts a version 2 image and ignores reserved option bits", () => {
    const bytes = built.bytes.slice();
    bytes.set(encodeImageHeader({ version: 2, options: 0xfffe }), 0);
    const { items } = readAll(bytes, () => 1000);
    expect(items[0]).toEqual({ kind: "image", header: { version: 2, options: 0xfffe } });
  });
});

describe("StreamReader rejections (A10)", () => {
  const small = smallStream();

  function firstError(bytes: Uint8Array): StreamError {
    return errorOf(() => readAll(bytes, () => bytes.length));
  }
  function withHeader(at: number, header: Uint8Array): Uint8Array {
    const b = small.bytes.slice();
    b.set(header, at);
    return b;
  }
  const domain = (type: number, pageShift: number) =>
    encodeDomainHeader({ type, pageShift, xenMajor: 4, xenMinor: 19 });

  it("rejects a bad marker", () => {
    const b = small.bytes.slice();
    b[3] = 0xfe;
    const reader = new StreamReader();
    reader.push(b);
    const e = errorOf(() => reader.next());
    expect(e.message).toMatch(/^image header at offset 0x0: bad marker/);
    expect([e.record, e.offset, reader.offset]).toEqual(["image header", 0, 0]);
    expect(() => reader.next()).toThrow(e); // the reader stays failed
  });

  it("rejects a bad id", () => {
    const b = small.bytes.slice();
    b[11] = 0x47;
    expect(firstError(b).message).toBe(
      'image header at offset 0x0: bad id 0x58454e47 (expected 0x58454e46 "XENF")',
    );
  });

  it("rejects versions 1 and 4", () => {
    for (const version of [1, 4]) {
      expect(firstError(withHeader(0, encodeImageHeader({ version }))).message).toBe(
        `image header at offset 0x0: unsupported version ${version} (expected 2 or 3)`,
      );
    }
  });

  it("rejects a big-endian stream", () => {
    expect(firstError(withHeader(0, encodeImageHeader({ options: 1 }))).message).toMatch(
      /^image header at offset 0x0: big-endian/,
    );
  });

  it("rejects an HVM or reserved domain type", () => {
    const e = firstError(withHeader(24, domain(2, 12)));
    expect(e.message).toBe(
      "domain header at offset 0x18: unable to restore an x86 HVM domain (type 2) into an x86 PV domain",
    );
    expect([e.record, e.offset]).toEqual(["domain header", 24]);
    expect(firstError(withHeader(24, domain(0, 12))).message).toMatch(/reserved type 0/);
    // A reader set up for HVM accepts it.
    const r = new StreamReader({ expectType: 2 });
    r.push(withHeader(24, domain(2, 12)));
    r.next();
    expect(r.next()).toMatchObject({ kind: "domain", header: { type: 2 } });
  });

  it("rejects page shift 13", () => {
    expect(firstError(withHeader(24, domain(1, 13))).message).toMatch(
      /^domain header at offset 0x18: invalid page shift 13/,
    );
  });

  it("rejects a record length over 128 MiB from its header alone", () => {
    const header = new Uint8Array(8);
    new DataView(header.buffer).setUint32(0, REC_TYPE.PAGE_DATA, true);
    new DataView(header.buffer).setUint32(4, REC_LENGTH_MAX + 1, true);
    const reader = new StreamReader();
    reader.push(concat([small.bytes.subarray(0, 40), header]));
    expect(reader.next()?.kind).toBe("image");
    expect(reader.next()?.kind).toBe("domain");
    const e = errorOf(() => reader.next());
    expect(e.message).toBe(
      "PAGE_DATA at offset 0x28: body length 0x8000001 exceeds REC_LENGTH_MAX 0x8000000",
    );
    expect([e.record, e.offset]).toEqual(["PAGE_DATA", 0x28]);

    // Exactly the maximum is accepted: the reader waits for the body.
    new DataView(header.buffer).setUint32(4, REC_LENGTH_MAX, true);
    const ok = new StreamReader();
    ok.push(concat([small.bytes.subarray(0, 40), header]));
    ok.next();
    ok.next();
    expect(ok.next()).toBeUndefined();
    expect(ok.offset).toBe(48);
    expect(() => ok.end()).toThrow(
      "PAGE_DATA at offset 0x28: truncated: the stream ended after 0 of 134217728 bytes of body and padding",
    );
  });

  it("rejects a stream cut at any point, naming what was being read", () => {
    const { bytes, layout } = small;
    const expected = (cut: number): string | undefined => {
      if (cut < 24) return "image header at offset 0x0: truncated";
      if (cut < 40) return "domain header at offset 0x18: truncated";
      const r = layout.find((l) => cut >= l.offset && cut < l.end);
      if (!r) return undefined;
      if (cut < r.offset + 8) return `record header at offset ${hex(r.offset)}: truncated`;
      return `${r.name} at offset ${hex(r.offset)}: truncated`;
    };
    for (let cut = 0; cut <= bytes.length; cut++) {
      const want = expected(cut);
      for (const size of [1, 5, bytes.length]) {
        const run = () => readAll(bytes.subarray(0, cut), () => size);
        if (want === undefined) {
          expect(run().reader.sawEnd).toBe(true);
          continue;
        }
        const e = errorOf(run);
        expect(e.message.startsWith(want), `cut at ${cut}: ${e.message}`).toBe(true);
      }
    }
    expect(expected(bytes.length)).toBeUndefined();
  });

  it("says what a truncation cut: before END, mid-header, mid-body, mid-padding", () => {
    const { bytes, layout } = small;
    const end = layout[layout.length - 1];
    const ext = layout[layout.length - 2];
    expect(ext.name).toBe("X86_PV_VCPU_EXTENDED"); // body 21, padding 3
    const cut = (n: number) => errorOf(() => readAll(bytes.subarray(0, n), () => 7)).message;
    expect(cut(end.offset)).toBe(
      `record header at offset ${hex(end.offset)}: truncated: the stream ended before the END record`,
    );
    expect(cut(ext.offset + 3)).toBe(
      `record header at offset ${hex(ext.offset)}: truncated: the stream ended after 3 of 8 bytes of a record header (before the END record)`,
    );
    expect(cut(ext.offset + 8 + 10)).toBe(
      `X86_PV_VCPU_EXTENDED at offset ${hex(ext.offset)}: truncated: the stream ended after 10 of 24 bytes of body and padding (body length 21)`,
    );
    expect(cut(ext.offset + 8 + 22)).toBe(
      `X86_PV_VCPU_EXTENDED at offset ${hex(ext.offset)}: truncated: the stream ended after 22 of 24 bytes of body and padding (body length 21; the padding is short)`,
    );
    expect(cut(10)).toBe(
      "image header at offset 0x0: truncated: the stream ended after 10 of 24 bytes of the image header",
    );
    expect(cut(0)).toBe(
      "image header at offset 0x0: truncated: the stream ended after 0 of 24 bytes of the image header",
    );
  });

  it("rejects a stream cut inside a page of PAGE_DATA", () => {
    const full = fullStream();
    const pd = full.layout.find((l) => l.name === "PAGE_DATA")!;
    const e = errorOf(() => readAll(full.bytes.subarray(0, pd.offset + 8 + 48 + 100), () => 4096));
    expect(e.message).toMatch(new RegExp(`^PAGE_DATA at offset ${hex(pd.offset)}: truncated`));
    expect([e.record, e.offset]).toEqual(["PAGE_DATA", pd.offset]);
  });

  it("rejects bytes after END", () => {
    const b = concat([small.bytes, new Uint8Array(3)]);
    const e = firstError(b);
    expect(e.message).toBe(
      `trailing data at offset ${hex(small.bytes.length)}: 3 bytes after the END record (at ${hex(small.bytes.length - 8)})`,
    );
    // Also when they arrive after the END record was read.
    const reader = new StreamReader();
    reader.push(small.bytes);
    while (!reader.sawEnd) reader.next();
    expect(reader.next()).toBeUndefined();
    reader.push(new Uint8Array(8));
    expect(() => reader.end()).toThrow(/^trailing data at offset/);
  });

  it("refuses end() while complete items are unread", () => {
    const reader = new StreamReader();
    reader.push(small.bytes);
    expect(() => reader.end()).toThrow(/unread item/);
  });
});

describe("record decoders", () => {
  it("X86_PV_INFO: length and the (8,4)/(4,3) pairs", () => {
    expect(decodePvInfo(rec(REC_TYPE.X86_PV_INFO, encodePvInfo(4, 3)))).toEqual({
      guestWidth: 4,
      ptLevels: 3,
    });
    expect(decodePvInfo(rec(REC_TYPE.X86_PV_INFO, new Uint8Array([8, 4, 0, 0, 0, 0, 0, 0, 1])))).toEqual({
      guestWidth: 8,
      ptLevels: 4,
    });
    expect(() => decodePvInfo(rec(REC_TYPE.X86_PV_INFO, new Uint8Array([8, 4, 0])))).toThrow(
      "X86_PV_INFO at offset 0x1000: body length 3 shorter than 8",
    );
    expect(() => decodePvInfo(rec(REC_TYPE.X86_PV_INFO, new Uint8Array([8, 3, 0, 0, 0, 0, 0, 0])))).toThrow(
      /invalid combination: guest width 8, pt_levels 3/,
    );
    expect(() => decodePvInfo(rec(REC_TYPE.PAGE_DATA, encodePvInfo(8, 4)))).toThrow(
      /expected a X86_PV_INFO record/,
    );
  });

  it("X86_PV_P2M_FRAMES: the length is 8 + 8 × ((E/512 + 1) − S/512)", () => {
    const cases: [number, number, number][] = [
      [0, 0, 1],
      [0, 511, 1],
      [0, 512, 2],
      [511, 512, 2],
      [512, 1023, 1],
      [1000, 5000, 9],
    ];
    for (const [s, e, n] of cases) {
      const frames = Array.from({ length: n }, (_, i) => 0x100 + i);
      const body = encodeP2mFrames(s, e, frames);
      expect(body.length).toBe(8 + 8 * n);
      expect(decodeP2mFrames(rec(REC_TYPE.X86_PV_P2M_FRAMES, body))).toEqual({
        startPfn: s,
        endPfn: e,
        framePfns: frames,
      });
      const longer = concat([body, new Uint8Array(8)]);
      expect(() => decodeP2mFrames(rec(REC_TYPE.X86_PV_P2M_FRAMES, longer))).toThrow(
        `X86_PV_P2M_FRAMES at offset 0x1000: wrong size: body length ${8 + 8 * (n + 1)}, expected 8 + 8 × ${n} = ${8 + 8 * n} for pfns ${hex(s)}..${hex(e)}`,
      );
      expect(() =>
        decodeP2mFrames(rec(REC_TYPE.X86_PV_P2M_FRAMES, body.subarray(0, body.length - 8))),
      ).toThrow(/wrong size/);
    }
    // A 32-bit guest's frames hold 1024 entries.
    expect(encodeP2mFrames(0, 1023, [7], 4).length).toBe(16);
    expect(() => decodeP2mFrames(rec(REC_TYPE.X86_PV_P2M_FRAMES, encodeP2mFrames(0, 1023, [7], 4)))).toThrow(
      /wrong size/,
    );
    expect(
      decodeP2mFrames(rec(REC_TYPE.X86_PV_P2M_FRAMES, encodeP2mFrames(0, 1023, [7], 4)), 4).framePfns,
    ).toEqual([7]);
    // Large frame pfns survive; start > end and a short body do not.
    expect(
      decodeP2mFrames(rec(REC_TYPE.X86_PV_P2M_FRAMES, encodeP2mFrames(0, 0, [2 ** 40 + 3]))).framePfns,
    ).toEqual([2 ** 40 + 3]);
    const swapped = encodeP2mFrames(0, 0, [1]);
    new DataView(swapped.buffer).setUint32(0, 1, true);
    new DataView(swapped.buffer).setUint32(4, 0, true);
    expect(() => decodeP2mFrames(rec(REC_TYPE.X86_PV_P2M_FRAMES, swapped))).toThrow(
      /start pfn 0x1 > end pfn 0x0/,
    );
    expect(() => decodeP2mFrames(rec(REC_TYPE.X86_PV_P2M_FRAMES, new Uint8Array(4)))).toThrow(
      /shorter than 8/,
    );
  });

  describe("PAGE_DATA", () => {
    const PD = REC_TYPE.PAGE_DATA;
    const decode = (body: Uint8Array, max = 0x7f) => decodePageData(rec(PD, body), max);

    it("accepts records with no data and ignores the reserved bits 59–52", () => {
      const pd = decode(
        rawPageData(
          2,
          [
            [4, 0xf000_0000],
            [5, 0xd000_0000],
          ],
          0,
        ),
      );
      expect(Array.from(pd.types)).toEqual([PFINFO.XTAB, PFINFO.BROKEN]);
      const reserved = decode(rawPageData(1, [[6, 0x0ff0_0000]], 1));
      expect([reserved.pfns[0], reserved.types[0]]).toEqual([6, PFINFO.NOTAB]);
    });

    it("rejects a body shorter than its header, count 0 and a lying count", () => {
      expect(() => decode(new Uint8Array(4))).toThrow(
        "PAGE_DATA at offset 0x1000: body length 4 shorter than the 8-byte header",
      );
      expect(() => decode(rawPageData(0, [], 0))).toThrow("PAGE_DATA at offset 0x1000: count is 0");
      expect(() =>
        decode(
          rawPageData(
            5,
            [
              [1, 0],
              [2, 0],
            ],
            0,
          ),
        ),
      ).toThrow("PAGE_DATA at offset 0x1000: body length 24 too short for 5 pfns (needs at least 48)");
      // A count that reaches into the page data reads pages as entries; the exact length catches it.
      expect(() =>
        decode(
          rawPageData(
            3,
            [
              [1, 0],
              [2, 0],
            ],
            2,
          ),
        ),
      ).toThrow(
        "PAGE_DATA at offset 0x1000: wrong size: body length 8216, expected 8 + 8 × 3 + 4096 × 3 = 12320 (3 entries carry data)",
      );
      // The count is checked against the entries before any pfn is read.
      expect(() =>
        decode(
          rawPageData(
            3,
            [
              [0x999, 0],
              [2, 0],
            ],
            0,
          ),
        ),
      ).toThrow(/too short for 3 pfns/);
    });

    it("rejects a pfn beyond the domain maximum", () => {
      expect(decode(rawPageData(1, [[0x7f, 0xf000_0000]], 0)).pfns[0]).toBe(0x7f);
      const e = errorOf(() =>
        decode(
          rawPageData(
            2,
            [
              [1, 0],
              [0x80, 0],
            ],
            2,
          ),
        ),
      );
      expect(e.message).toBe(
        "PAGE_DATA at offset 0x1000: pfn 0x80 (entry 1, at offset 0x1018) outside domain maximum 0x7f",
      );
      expect([e.record, e.offset]).toEqual(["PAGE_DATA", 0x1000]);
      expect(() => decode(rawPageData(1, [[0, 0x0000_0001]], 1))).toThrow(/pfn 0x100000000/);
    });

    it("rejects the reserved types 5–8", () => {
      for (const t of [5, 6, 7, 8]) {
        expect(() => decode(rawPageData(1, [[3, t << 28]], 1))).toThrow(
          `PAGE_DATA at offset 0x1000: unknown type ${hex(t)} for pfn 0x3 (entry 0, at offset 0x1010)`,
        );
      }
    });

    it("checks entries in order, the pfn before the type", () => {
      expect(() =>
        decode(
          rawPageData(
            2,
            [
              [1, 5 << 28],
              [0x999, 0],
            ],
            2,
          ),
        ),
      ).toThrow(/unknown type 0x5/);
      expect(() =>
        decode(
          rawPageData(
            2,
            [
              [0x999, 5 << 28],
              [1, 0],
            ],
            2,
          ),
        ),
      ).toThrow(/pfn 0x999/);
    });

    it("requires exactly one page per data-carrying entry", () => {
      const entries: [number, number][] = [
        [1, 0],
        [2, 0xf000_0000],
        [3, 0xc000_0000],
        [4, 0xe000_0000],
      ];
      expect(decode(rawPageData(4, entries, 2)).count).toBe(4);
      for (const pages of [0, 1, 3]) {
        expect(() => decode(rawPageData(4, entries, pages))).toThrow(
          `PAGE_DATA at offset 0x1000: wrong size: body length ${40 + PAGE_SIZE * pages}, expected 8 + 8 × 4 + 4096 × 2 = ${40 + 2 * PAGE_SIZE} (2 entries carry data)`,
        );
      }
      const odd = concat([rawPageData(4, entries, 2), new Uint8Array(8)]);
      expect(() => decode(odd)).toThrow(/wrong size/);
    });
  });

  describe("vCPU records", () => {
    const TYPES = [
      REC_TYPE.X86_PV_VCPU_BASIC,
      REC_TYPE.X86_PV_VCPU_EXTENDED,
      REC_TYPE.X86_PV_VCPU_XSAVE,
      REC_TYPE.X86_PV_VCPU_MSRS,
    ];
    const decode = (type: number, id: number, size: number, max = 3) =>
      decodeVcpuRecord(rec(type, encodeVcpuRecord(id, new Uint8Array(size))), max);

    it("tolerates an empty record and rejects one shorter than its header", () => {
      for (const t of TYPES) {
        expect(decode(t, 0, 0)).toBeUndefined();
        expect(decode(t, 99, 0)).toBeUndefined(); // the id of an empty record is not checked
        expect(() => decodeVcpuRecord(rec(t, new Uint8Array(4)), 3)).toThrow(
          `${recordName(t)} at offset 0x1000: body length 4 shorter than the 8-byte vCPU header`,
        );
      }
    });

    it("rejects a vcpu_id beyond the domain's maximum", () => {
      expect(decode(REC_TYPE.X86_PV_VCPU_XSAVE, 3, 16)?.vcpuId).toBe(3);
      expect(() => decode(REC_TYPE.X86_PV_VCPU_XSAVE, 4, 16)).toThrow(
        "X86_PV_VCPU_XSAVE at offset 0x1000: vcpu_id 4 exceeds the domain's maximum 3",
      );
    });

    it("checks each record's blob size", () => {
      const B = REC_TYPE.X86_PV_VCPU_BASIC;
      expect(decode(B, 0, VCPU_CONTEXT_SIZE_64)?.blob.length).toBe(VCPU_CONTEXT_SIZE_64);
      expect(() => decode(B, 0, VCPU_CONTEXT_SIZE_64 - 1)).toThrow(
        /wrong size: context of 5167 bytes, expected 5168/,
      );
      expect(() => decode(B, 0, VCPU_CONTEXT_SIZE_64 + 8)).toThrow(/wrong size/);
      expect(decode(REC_TYPE.X86_PV_VCPU_EXTENDED, 0, 128)?.blob.length).toBe(128);
      expect(() => decode(REC_TYPE.X86_PV_VCPU_EXTENDED, 0, 129)).toThrow(/too long/);
      expect(decode(REC_TYPE.X86_PV_VCPU_XSAVE, 0, 16)?.blob.length).toBe(16);
      expect(() => decode(REC_TYPE.X86_PV_VCPU_XSAVE, 0, 15)).toThrow(/too short/);
      expect(decode(REC_TYPE.X86_PV_VCPU_MSRS, 0, 32)?.blob.length).toBe(32);
      expect(() => decode(REC_TYPE.X86_PV_VCPU_MSRS, 0, 24)).toThrow(/not a multiple of 16/);
      expect(() => decode(REC_TYPE.SHARED_INFO, 0, 16)).toThrow(/expected a X86_PV_VCPU_BASIC or/);
    });
  });

  it("X86_TSC_INFO is exactly 24 bytes and SHARED_INFO exactly a page", () => {
    const T = REC_TYPE.X86_TSC_INFO;
    const tsc = { mode: 0, khz: 3_000_000, nsec: 12345n, incarnation: 1 };
    expect(decodeTscInfo(rec(T, encodeTscInfo(tsc)))).toEqual(tsc);
    expect(() => decodeTscInfo(rec(T, new Uint8Array(23)))).toThrow(
      "X86_TSC_INFO at offset 0x1000: wrong size: body length 23, expected 24",
    );
    expect(() => decodeTscInfo(rec(T, new Uint8Array(32)))).toThrow(/wrong size/);
    expect(() => checkSharedInfo(rec(REC_TYPE.SHARED_INFO, new Uint8Array(PAGE_SIZE)))).not.toThrow();
    expect(() => checkSharedInfo(rec(REC_TYPE.SHARED_INFO, new Uint8Array(PAGE_SIZE - 8)))).toThrow(
      "SHARED_INFO at offset 0x1000: wrong size: body length 4088, expected 4096",
    );
  });
});
