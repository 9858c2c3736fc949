import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type DecodedEntry,
  decodeEntry,
  describeFlags,
  encodeEntry,
  entryFrame,
  isLeaf,
  type Level,
  reservedHighMask,
  splitEntry,
} from "../../src/x86/pte.js";

describe("page-table entry bits", () => {
  const cases: [keyof DecodedEntry, bigint][] = [
    ["present", 1n << 0n],
    ["writable", 1n << 1n],
    ["user", 1n << 2n],
    ["writeThrough", 1n << 3n],
    ["cacheDisable", 1n << 4n],
    ["accessed", 1n << 5n],
    ["dirty", 1n << 6n],
    ["global", 1n << 8n],
    ["noExecute", 1n << 63n],
  ];
  for (const [field, bit] of cases) {
    it(`${field} is bit ${bit.toString(2).length - 1} at every level`, () => {
      for (const level of [1, 2, 3, 4, 5] as Level[]) {
        expect(decodeEntry(bit, level)[field]).toBe(true);
        expect(encodeEntry({ [field]: true }, level)).toBe(bit);
      }
    });
  }

  it("bit 7 is PAT in a PTE, PS in a PDE/PDPTE, and reserved-PS in PML4E/PML5E", () => {
    expect(decodeEntry(0x80n, 1)).toMatchObject({ pat: true, pageSize: false, leaf: true });
    expect(decodeEntry(0x80n, 2)).toMatchObject({ pat: false, pageSize: true, leaf: true });
    expect(decodeEntry(0x80n, 3)).toMatchObject({ pageSize: true, leaf: true });
    expect(decodeEntry(0x80n, 4)).toMatchObject({ pageSize: true, leaf: false });
    expect(isLeaf(4, 0x80)).toBe(false);
  });

  it("bit 12 is PAT in a large page and an address bit elsewhere", () => {
    expect(decodeEntry(0x1080n, 2)).toMatchObject({ pat: true, address: 0 });
    expect(decodeEntry(0x1000n, 2)).toMatchObject({ pat: false, address: 0x1000, leaf: false });
    expect(decodeEntry(0x1000n, 1)).toMatchObject({ pat: false, address: 0x1000 });
    expect(encodeEntry({ pat: true, pageSize: true, address: 0x4000_0000 }, 3)).toBe(0x4000_1080n);
  });

  it("AVL bits 9-11 and 52-58, protection key 59-62", () => {
    expect(decodeEntry(0x7n << 9n, 1).avlLow).toBe(7);
    expect(decodeEntry(0x7fn << 52n, 1).avlHigh).toBe(0x7f);
    expect(decodeEntry(0xfn << 59n, 1).protectionKey).toBe(15);
    expect(decodeEntry(0xfn << 59n, 1).noExecute).toBe(false);
  });

  it("splits into halves with NX and bits 52-62 in the high half", () => {
    expect(splitEntry(0x8000_0000_0000_0001n)).toEqual({ lo: 1, hi: 0x8000_0000 });
    expect(entryFrame(0x1234_5000, 0x000f_ffff)).toBe(0xf_ffff_12345);
  });

  it("reserved address bits follow MAXPHYADDR", () => {
    expect(reservedHighMask(52)).toBe(0);
    expect(reservedHighMask(46)).toBe(0x000f_c000);
    expect(reservedHighMask(36)).toBe(0x000f_fff0);
  });

  it("rejects misaligned addresses", () => {
    expect(() => encodeEntry({ address: 0x1000, pageSize: true }, 2)).toThrow(/aligned/);
    expect(() => encodeEntry({ address: 2 ** 52 }, 1)).toThrow(/below 2\^52/);
  });

  it("encode/decode round-trip on every level (property)", () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        fc.constantFrom(1, 2, 3, 4, 5),
        (v, level) => {
          const l = level as Level;
          const d = decodeEntry(v, l);
          const large = (l === 2 || l === 3) && d.pageSize;
          // Address bits below a large page's alignment (except PAT) are not representable: mask them.
          const keep = large ? ~((BigInt(l === 2 ? 0x20_0000 : 0x4000_0000) - 1n) & ~0xfffn) | 0x1000n : ~0n;
          expect(encodeEntry(d, l)).toBe(v & keep);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it("describes flags for people", () => {
    expect(describeFlags(0x1e7, 0x8000_0000, 2)).toBe("P RW US A D PS G NX");
  });
});
