/** Colour mapping and map layout of the frame map (web/colours.ts), and the binary map's codec. */

import { describe, expect, it } from "vitest";
import { encodeFrameMap } from "../../src/web/framemap.js";
import { CLASS_COLOURS, frameAt, mapLayout, paintFrames, palette, rgbaPixel } from "../../web/colours.js";
import { CLASS_CODE, decodeFrameMap, FRAME_CLASSES, frameMapLayout } from "../../web/protocol.js";

describe("colour mapping", () => {
  it("packs #rrggbb as ImageData's little-endian RGBA word", () => {
    const px = rgbaPixel("#102030");
    const bytes = new Uint8Array(new Uint32Array([px]).buffer);
    expect([...bytes]).toEqual([0x10, 0x20, 0x30, 0xff]);
    expect(() => rgbaPixel("red")).toThrow(/#rrggbb/);
  });

  it("gives every class its own colour, and codes without a class a loud one", () => {
    const p = palette();
    const used = FRAME_CLASSES.map((_, i) => p[i]);
    expect(new Set(used).size).toBe(FRAME_CLASSES.length);
    expect(new Set(Object.values(CLASS_COLOURS)).size).toBe(FRAME_CLASSES.length);
    expect(p[FRAME_CLASSES.length]).toBe(rgbaPixel("#ff00ff"));
  });

  it("paints one pixel per frame by class, counts each class, and fills the rest with background", () => {
    const classes = Uint8Array.from([
      CLASS_CODE.free,
      CLASS_CODE.l4,
      CLASS_CODE.l1,
      CLASS_CODE.l1,
      CLASS_CODE.grant,
    ]);
    const pal = palette();
    const out = new Uint32Array(8).fill(7);
    const counts = new Uint32Array(256);
    paintFrames(classes, pal, out, counts, 0);
    expect([...out.subarray(0, 5)]).toEqual([...classes].map((c) => pal[c]));
    expect([...out.subarray(5)]).toEqual([0, 0, 0]);
    expect(counts[CLASS_CODE.l1]).toBe(2);
    expect(counts[CLASS_CODE.l4]).toBe(1);
    expect(counts[CLASS_CODE.writable]).toBe(0);
  });
});

describe("map layout", () => {
  it("uses a power-of-two number of columns near the square root, cells as large as fit", () => {
    expect(mapLayout(16384, 1024)).toEqual({ cols: 128, rows: 128, cell: 8 });
    expect(mapLayout(1 << 20, 1024)).toEqual({ cols: 1024, rows: 1024, cell: 1 });
    expect(mapLayout(100, 1024)).toEqual({ cols: 16, rows: 7, cell: 16 });
    expect(mapLayout(1 << 22, 1024)).toEqual({ cols: 2048, rows: 2048, cell: 1 });
    expect(mapLayout(0, 1024).rows).toBe(0);
  });

  it("finds the frame under a point, and none past the last frame or outside", () => {
    const l = mapLayout(100, 1024); // 16 columns of 16 px
    expect(frameAt(l, 100, 0, 0)).toBe(0);
    expect(frameAt(l, 100, 16 * 3 + 15, 16 * 2)).toBe(35);
    expect(frameAt(l, 100, 16 * 4, 16 * 6)).toBe(-1); // frame 100: past the last
    expect(frameAt(l, 100, -1, 0)).toBe(-1);
    expect(frameAt(l, 100, 16 * 16, 0)).toBe(-1);
  });
});

describe("binary frame map", () => {
  it("round-trips classes and owners, padded to whole words", () => {
    for (const n of [1, 3, 4, 5, 4097]) {
      const classes = Uint8Array.from({ length: n }, (_, i) => i % FRAME_CLASSES.length);
      const owners = Uint16Array.from({ length: n }, (_, i) => (i * 7) & 0xffff);
      const buf = encodeFrameMap(classes, owners);
      expect(buf.byteLength).toBe(frameMapLayout(n).bytes);
      const m = decodeFrameMap(buf.buffer as ArrayBuffer);
      expect(m.frames).toBe(n);
      expect([...m.classes]).toEqual([...classes]);
      expect([...m.owners]).toEqual([...owners]);
    }
  });

  it("refuses what is not a frame map", () => {
    const good = encodeFrameMap(new Uint8Array(8), new Uint16Array(8));
    expect(() => decodeFrameMap(new ArrayBuffer(8))).toThrow(/short/);
    const bad = good.slice();
    bad[0] ^= 1;
    expect(() => decodeFrameMap(bad.buffer as ArrayBuffer)).toThrow(/magic/);
    expect(() => decodeFrameMap(good.buffer.slice(0, good.byteLength - 2) as ArrayBuffer)).toThrow(/length/);
    expect(() => encodeFrameMap(new Uint8Array(2), new Uint16Array(3))).toThrow(RangeError);
  });
});
