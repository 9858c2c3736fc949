/**
 * Colours of the frame map and how a map is painted: one 32-bit RGBA pixel per frame, looked
 * up from the frame's class in a palette (ImageData's byte order: R, G, B, A in memory, so a
 * little-endian Uint32 holds A<<24 | B<<16 | G<<8 | R). Pure: no DOM, unit-tested in Node.
 */

import { FRAME_CLASSES, type FrameClass } from "./protocol.js";

/** The colour of each class, as CSS hex. */
export const CLASS_COLOURS: Record<FrameClass, string> = {
  free: "#262c36",
  none: "#6e7681",
  writable: "#3fb950",
  l1: "#58a6ff",
  l2: "#a371f7",
  l3: "#f778ba",
  l4: "#ff7b72",
  seg_desc: "#d29922",
  shared: "#39c5cf",
  grant: "#f2cc60",
  xen: "#c9d1d9",
  io: "#8b5a2b",
  mapped: "#2ea043",
  l5: "#ffa657",
};

/** What each class means, for the legend. */
export const CLASS_LABELS: Record<FrameClass, string> = {
  free: "free",
  none: "no type",
  writable: "writable",
  l1: "L1",
  l2: "L2",
  l3: "L3",
  l4: "L4",
  seg_desc: "seg_desc (GDT)",
  shared: "shared",
  grant: "grant-mapped",
  xen: "Xen's",
  io: "I/O",
  mapped: "mapped (dump)",
  l5: "L5 (dump)",
};

/** "#rrggbb" → the pixel value ImageData's Uint32 view holds for it (opaque). */
export function rgbaPixel(hex: string): number {
  const m = /^#([0-9a-f]{6})$/i.exec(hex);
  if (!m) throw new RangeError(`not a #rrggbb colour: ${hex}`);
  const v = Number.parseInt(m[1], 16);
  const r = (v >>> 16) & 255;
  const g = (v >>> 8) & 255;
  const b = v & 255;
  return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0;
}

/** The palette indexed by class code; codes without a class are magenta (a bug shows). */
export function palette(): Uint32Array {
  const p = new Uint32Array(256).fill(rgbaPixel("#ff00ff"));
  FRAME_CLASSES.forEach((c, i) => {
    p[i] = rgbaPixel(CLASS_COLOURS[c]);
  });
  return p;
}

/**
 * Paint `classes` into `out` (one pixel per frame, row-major; pixels past the last frame are
 * background) and count the frames of each class into `counts` (indexed by code).
 */
export function paintFrames(
  classes: Uint8Array,
  pal: Uint32Array,
  out: Uint32Array,
  counts: Uint32Array,
  background = 0,
): void {
  counts.fill(0);
  const n = classes.length;
  for (let i = 0; i < n; i++) {
    const c = classes[i];
    out[i] = pal[c];
    counts[c]++;
  }
  out.fill(background, n);
}

/** How the map is laid out: a power-of-two number of columns near √frames, cells of `cell` pixels. */
export interface MapLayout {
  cols: number;
  rows: number;
  cell: number;
}

export function mapLayout(frames: number, maxWidth: number, maxCell = 16): MapLayout {
  if (frames <= 0) return { cols: 1, rows: 0, cell: 1 };
  let cols = 1;
  while (cols * cols < frames) cols *= 2;
  const rows = Math.ceil(frames / cols);
  const cell = Math.max(1, Math.min(maxCell, Math.floor(maxWidth / cols)));
  return { cols, rows, cell };
}

/** The frame under a point (in CSS pixels from the map's top-left), or -1. */
export function frameAt(l: MapLayout, frames: number, x: number, y: number): number {
  const col = Math.floor(x / l.cell);
  const row = Math.floor(y / l.cell);
  if (col < 0 || row < 0 || col >= l.cols || row >= l.rows) return -1;
  const m = row * l.cols + col;
  return m < frames ? m : -1;
}
