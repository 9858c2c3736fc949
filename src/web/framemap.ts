/**
 * The frame map: one class byte per machine frame (its type, or free, grant-mapped, Xen's,
 * I/O) and its owner, sent to the page as one binary buffer (web/protocol.ts describes the
 * layout). Built from the frame table's typed arrays in one pass — the map covers every frame.
 * A memory dump has no frame table: its frames are classed by what the page tables at CR3
 * make of them (tables by level, frames mapped by a leaf, the rest).
 */

import {
  CLASS_CODE,
  FRAME_MAP_MAGIC,
  FRAME_MAP_VERSION,
  type FrameClass,
  frameMapLayout,
} from "../../web/protocol.js";
import type { PhysicalMemory } from "../x86/memory.js";
import { LO_P, LO_PS } from "../x86/pte.js";
import { DOMID_IO, DOMID_XEN } from "../xen/abi.js";
import type { Host } from "../xen/host.js";
import { entryMfn } from "../xen/mm.js";

/** PGT_* type (0 none … 7 writable) → class code. */
const TYPE_CLASS = new Uint8Array([
  CLASS_CODE.none,
  CLASS_CODE.l1,
  CLASS_CODE.l2,
  CLASS_CODE.l3,
  CLASS_CODE.l4,
  CLASS_CODE.seg_desc,
  CLASS_CODE.shared,
  CLASS_CODE.writable,
]);

/** Frames some domain maps through a grant right now (host or device mapping). */
export function grantMappedFrames(h: Host): Set<number> {
  const out = new Set<number>();
  for (const d of h.domains.values()) {
    const g = d.grants;
    for (let ref = 0; ref < g.nrEntries; ref++) if (g.pin[ref] !== 0) out.add(g.actMfn[ref]);
  }
  return out;
}

/** The class of every frame of the host. */
export function hostFrameClasses(h: Host): Uint8Array {
  const f = h.frames;
  const n = f.frames;
  const out = new Uint8Array(n);
  const owner = f.owner;
  const type = f.type;
  const io = DOMID_IO + 1;
  const xen = DOMID_XEN + 1;
  for (let m = 0; m < n; m++) {
    const o = owner[m];
    out[m] =
      o === 0 ? CLASS_CODE.free : o === io ? CLASS_CODE.io : o === xen ? CLASS_CODE.xen : TYPE_CLASS[type[m]];
  }
  for (const m of grantMappedFrames(h)) if (m < n) out[m] = CLASS_CODE.grant;
  return out;
}

/** The class of one frame (the same rule as `hostFrameClasses`, without the pass). */
export function hostFrameClass(h: Host, mfn: number, grants?: Set<number>): FrameClass {
  const f = h.frames;
  const o = f.owner[mfn];
  if (o === 0) return "free";
  if (o === DOMID_IO + 1) return "io";
  if (o === DOMID_XEN + 1) return "xen";
  if ((grants ?? grantMappedFrames(h)).has(mfn)) return "grant";
  return (["none", "l1", "l2", "l3", "l4", "seg_desc", "shared", "writable"] as const)[f.type[mfn]];
}

/** Owners as the map sends them: domid + 1, 0 for none. */
export function hostFrameOwners(h: Host): Uint16Array {
  const owner = h.frames.owner;
  const out = new Uint16Array(owner.length);
  for (let m = 0; m < owner.length; m++) out[m] = owner[m];
  return out;
}

/** The binary frame map of classes and owners (web/protocol.ts). */
export function encodeFrameMap(classes: Uint8Array, owners: Uint16Array): Uint8Array {
  if (classes.length !== owners.length)
    throw new RangeError("frame map: classes and owners differ in length");
  const l = frameMapLayout(classes.length);
  const buf = new ArrayBuffer(l.bytes);
  const head = new Uint32Array(buf, 0, 4);
  head[0] = FRAME_MAP_MAGIC;
  head[1] = FRAME_MAP_VERSION;
  head[2] = l.frames;
  new Uint8Array(buf, l.classesOffset, l.frames).set(classes);
  new Uint16Array(buf, l.ownersOffset, l.frames).set(owners);
  return new Uint8Array(buf);
}

export function hostFrameMap(h: Host): Uint8Array {
  return encodeFrameMap(hostFrameClasses(h), hostFrameOwners(h));
}

const LEVEL_CLASS = [0, CLASS_CODE.l1, CLASS_CODE.l2, CLASS_CODE.l3, CLASS_CODE.l4, CLASS_CODE.l5];

/**
 * A dump's frames classed by the tree at `root`: the tables by level (a frame reached at two
 * levels keeps the higher), frames mapped by a leaf as "mapped", other frames the image covers
 * as "none", frames beyond it as "free". Each table is read once per level (recursive slots
 * terminate); only P and PS are looked at, as in `pvmmu dump tlb`.
 */
export function dumpFrameClasses(
  mem: PhysicalMemory,
  root: number,
  levels: 4 | 5,
  covered: (frame: number) => boolean,
): Uint8Array {
  const n = mem.frameCount;
  const out = new Uint8Array(n);
  for (let m = 0; m < n; m++) out[m] = covered(m) ? CLASS_CODE.none : CLASS_CODE.free;
  const seen = new Set<number>();
  const tableLevel = new Uint8Array(n);
  const mapped: [number, number][] = [];
  const visit = (frame: number, level: number): void => {
    const key = frame * 8 + level;
    if (seen.has(key) || frame >= n) return;
    seen.add(key);
    if (tableLevel[frame] < level) tableLevel[frame] = level;
    const t = mem.frame(frame);
    for (let i = 0; i < 512; i++) {
      const lo = t[i * 2];
      if ((lo & LO_P) === 0) continue;
      const target = entryMfn(lo, t[i * 2 + 1]);
      if (level === 1) mapped.push([target, 1]);
      else if ((level === 2 || level === 3) && lo & LO_PS) {
        const frames = level === 2 ? 512 : 512 * 512;
        mapped.push([target & ~(frames - 1), frames]);
      } else visit(target, level - 1);
    }
  };
  visit(root, levels);
  for (const [base, count] of mapped) {
    const end = Math.min(n, base + count);
    for (let m = base; m < end; m++) if (out[m] === CLASS_CODE.none) out[m] = CLASS_CODE.mapped;
  }
  for (let m = 0; m < n; m++) if (tableLevel[m]) out[m] = LEVEL_CLASS[tableLevel[m]];
  return out;
}
