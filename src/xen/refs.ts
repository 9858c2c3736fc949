/**
 * The reverse map: who references a frame. The auditor's view (audit.ts) turned around — from
 * the same facts it recomputes the counts from, every holder of a frame is listed with what it
 * holds:
 *  - its allocation reference (`PGC_allocated`): one general reference;
 *  - a frame Xen shares with the guest (a grant-table frame, `share_xen_page_with_guest`): Xen's
 *    own writable type reference;
 *  - a pin (`PGT_pinned`): one general and one type reference;
 *  - a vCPU's kernel or user base pointer (`arch.guest_table[_user]`): general + type;
 *  - a frame of a vCPU's GDT (`set_gdt`): general + seg_desc type;
 *  - a grant mapped for device access (`GNTMAP_device_map`): general, + writable type unless
 *    read-only (host mappings are held by their PTE, which is an entry like any other);
 *  - an entry of a validated table: an L1 entry holds a general reference and, when RW, a
 *    writable type reference; an L2–L4 entry a general reference and an L(n−1) type reference,
 *    or — a linear entry to a same-level table — under the `xen` policy a general and a type
 *    reference (and ±1 of linear_pt_count), under `split-count` a general reference and a use
 *    as a table. A self-map holds nothing; neither do Xen's own L4 slots 256–271 nor entries
 *    mapping I/O frames (listed all the same: they still point at the frame).
 * The LDT holds nothing in this model (Xen maps LDT pages lazily on fault; the model keeps
 * only the base and size).
 *
 * It scans everything on purpose, like the auditor: it is a checker and an inspector, not a
 * hot path. `referencesTo(h, mfn)` scans for one frame without building the whole map.
 */

import { LO_P, LO_RW } from "../x86/pte.js";
import { DOMID_IO, PGT_l1_page_table } from "./abi.js";
import { F_PINNED, F_VALIDATED, F_XEN_HEAP } from "./frametable.js";
import { forEachLiveMapping, GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly } from "./grant.js";
import type { Host } from "./host.js";
import { entryMfn, isXenL4Slot } from "./mm.js";

export type ReferenceKind =
  | "allocation"
  | "xen-heap"
  | "pin"
  | "baseptr"
  | "user-baseptr"
  | "gdt"
  | "grant-device"
  | "entry"
  | "linear"
  | "table-use"
  | "self-map"
  | "xen-slot";

/** A grant mapping, as the mapper's maptrack names it. */
export interface GrantMapping {
  mapper: number;
  handle: number;
  granter: number;
  ref: number;
  readonly: boolean;
  host: boolean;
  device: boolean;
}

export interface Reference {
  kind: ReferenceKind;
  /** General references held (counted in `count_info`). */
  general: number;
  /** Type references held (counted in `type_info`). */
  type: number;
  /** The domain holding it: the pinner, the vCPU's, the table's owner, the grant's mapper. */
  domid?: number;
  vcpu?: number;
  /** An entry: the table frame, its level (1–4) and the slot. */
  table?: number;
  level?: number;
  index?: number;
  /** The entry's raw value as two halves. */
  lo?: number;
  hi?: number;
  /** A grant mapping: the device mapping itself, or the grant behind a host-mapping PTE. */
  grant?: GrantMapping;
}

/**
 * Live grant mappings: device maps by frame, host maps by the machine address of the PTE that
 * holds them now. That is usually where the map call put it, but unmap_and_replace can move a
 * grant PTE (steal it from `new_addr` into another mapping's slot), and Xen's maptrack records no
 * address: so the mappers' L1 tables are scanned for entries mapping a frame the mapper holds a
 * host mapping of (the mapping recorded at that address first, when there is one).
 */
export function grantMappings(h: Host): {
  device: [number, GrantMapping][];
  byPte: Map<number, GrantMapping>;
} {
  const device: [number, GrantMapping][] = [];
  const byPte = new Map<number, GrantMapping>();
  /** Per mapper: granted frame → its live host mappings of it, with the PTE address each was made at. */
  const hostOf = new Map<number, Map<number, [GrantMapping, number][]>>();
  forEachLiveMapping(h, (ld, handle, rd, ref, fl) => {
    const g: GrantMapping = {
      mapper: ld.domid,
      handle,
      granter: rd.domid,
      ref,
      readonly: (fl & GNTMAP_readonly) !== 0,
      host: (fl & GNTMAP_host_map) !== 0,
      device: (fl & GNTMAP_device_map) !== 0,
    };
    const mfn = rd.grants.actMfn[ref];
    if (g.device) device.push([mfn, g]);
    if (!g.host) return;
    let frames = hostOf.get(ld.domid);
    if (frames === undefined) {
      frames = new Map();
      hostOf.set(ld.domid, frames);
    }
    const made: [GrantMapping, number] = [g, ld.grants.mtAddr[handle]];
    const list = frames.get(mfn);
    if (list) list.push(made);
    else frames.set(mfn, [made]);
  });
  const f = h.frames;
  for (const [mapper, frames] of hostOf) {
    const d = h.domains.get(mapper)!;
    for (let k = 0; k < d.pages.size; k++) {
      const m = d.pages.at(k);
      if (f.type[m] !== PGT_l1_page_table || !(f.flags[m] & F_VALIDATED)) continue;
      const e = h.mem.frame(m);
      for (let i = 0; i < 512; i++) {
        const lo = e[i * 2];
        if ((lo & LO_P) === 0) continue;
        const target = entryMfn(lo, e[i * 2 + 1]);
        const list = frames.get(target);
        if (list === undefined) continue;
        const addr = m * 4096 + i * 8;
        const made = list.find(([, at]) => at === addr);
        // Elsewhere, only a foreign frame says "grant": a domain's own frame (granted to itself)
        // may be mapped by any plain entry too.
        if (made === undefined && f.ownerOf(target) === mapper) continue;
        byPte.set(addr, (made ?? list[0])[0]);
      }
    }
  }
  return { device, byPte };
}

/** Every frame a domain holds (its page list and the Xen-heap frames shared with it). */
function ownedFrames(h: Host): number[] {
  const frames: number[] = [];
  for (const d of h.domains.values()) {
    for (const m of d.pages) frames.push(m);
    for (const m of d.xenPages) frames.push(m);
  }
  return frames;
}

/**
 * Visit every reference to `only` (or to every frame when `only` is -1): `visit(target, ref)`.
 * The same scan as the auditor's recount, in the same order of sources.
 */
export function scanReferences(h: Host, only: number, visit: (target: number, r: Reference) => void): void {
  const f = h.frames;
  const want = (m: number) => only < 0 || m === only;
  const frames = ownedFrames(h);
  for (const m of frames) {
    if (!want(m)) continue;
    if (f.allocated[m]) visit(m, { kind: "allocation", general: 1, type: 0, domid: f.ownerOf(m) });
    if (f.flags[m] & F_XEN_HEAP) visit(m, { kind: "xen-heap", general: 0, type: 1, domid: f.ownerOf(m) });
    if (f.flags[m] & F_PINNED) visit(m, { kind: "pin", general: 1, type: 1, domid: f.ownerOf(m) });
  }
  for (const d of h.domains.values()) {
    for (const v of d.vcpus) {
      const at = { domid: d.domid, vcpu: v.id, general: 1, type: 1 };
      if (v.guestTable !== 0 && want(v.guestTable)) visit(v.guestTable, { kind: "baseptr", ...at });
      if (v.guestTableUser !== 0 && want(v.guestTableUser)) {
        visit(v.guestTableUser, { kind: "user-baseptr", ...at });
      }
      for (const g of v.gdtFrames) if (g !== 0 && want(g)) visit(g, { kind: "gdt", ...at });
    }
  }
  const grants = grantMappings(h);
  for (const [m, g] of grants.device) {
    if (want(m)) {
      visit(m, { kind: "grant-device", general: 1, type: g.readonly ? 0 : 1, domid: g.mapper, grant: g });
    }
  }
  const linearOk = h.pvLinearPt && h.linearPolicy !== "self-only";
  for (const m of frames) {
    const level = f.type[m];
    if (level < 1 || level > 4 || !(f.flags[m] & F_VALIDATED)) continue;
    const owner = f.ownerOf(m);
    const e = h.mem.frame(m);
    for (let i = 0; i < 512; i++) {
      const lo = e[i * 2];
      if ((lo & LO_P) === 0) continue;
      const hi = e[i * 2 + 1];
      const target = entryMfn(lo, hi);
      if (!want(target)) continue;
      const at = { domid: owner, table: m, level, index: i, lo, hi };
      if (level === 4 && isXenL4Slot(i)) {
        visit(target, { kind: "xen-slot", general: 0, type: 0, ...at });
        continue;
      }
      if (level === PGT_l1_page_table) {
        const holds = f.valid(target) && f.ownerOf(target) !== DOMID_IO;
        const r: Reference = {
          kind: "entry",
          general: holds ? 1 : 0,
          type: holds && lo & LO_RW ? 1 : 0,
          ...at,
        };
        const g = grants.byPte.get(m * 4096 + i * 8);
        if (g) r.grant = g;
        visit(target, r);
        continue;
      }
      if (target === m) {
        visit(target, { kind: "self-map", general: 0, type: 0, ...at });
        continue;
      }
      if (f.type[target] === level - 1) visit(target, { kind: "entry", general: 1, type: 1, ...at });
      else if (f.type[target] === level && !(lo & LO_RW) && linearOk) {
        if (h.linearPolicy === "split-count")
          visit(target, { kind: "table-use", general: 1, type: 0, ...at });
        else visit(target, { kind: "linear", general: 1, type: 1, ...at });
      } else {
        // A level violation (the auditor reports it): it holds the general reference only.
        visit(target, { kind: "entry", general: 1, type: 0, ...at });
      }
    }
  }
}

/** Every reference to frame `mfn`. */
export function referencesTo(h: Host, mfn: number): Reference[] {
  const out: Reference[] = [];
  scanReferences(h, mfn, (_, r) => out.push(r));
  return out;
}

/** The whole reverse map: frame → its references. */
export function referenceMap(h: Host): Map<number, Reference[]> {
  const map = new Map<number, Reference[]>();
  scanReferences(h, -1, (m, r) => {
    const list = map.get(m);
    if (list) list.push(r);
    else map.set(m, [r]);
  });
  return map;
}

/** What a list of references adds up to: general and type counts, and linear_pt_count's share. */
export function referenceTotals(
  refs: readonly Reference[],
  mfn: number,
  outgoingLinear = 0,
): { general: number; type: number; linear: number; tableUses: number } {
  let general = 0;
  let type = 0;
  let linear = outgoingLinear;
  let tableUses = 0;
  for (const r of refs) {
    general += r.general;
    type += r.type;
    if (r.kind === "linear" && r.table !== mfn) linear--;
    if (r.kind === "table-use") tableUses++;
  }
  return { general, type, linear, tableUses };
}

/** Linear entries a table holds to other same-level tables (the + side of linear_pt_count). */
export function outgoingLinear(h: Host, mfn: number): number {
  const f = h.frames;
  const level = f.type[mfn];
  if (level < 2 || level > 4 || !(f.flags[mfn] & F_VALIDATED) || h.linearPolicy !== "xen" || !h.pvLinearPt) {
    return 0;
  }
  const e = h.mem.frame(mfn);
  let n = 0;
  for (let i = 0; i < 512; i++) {
    const lo = e[i * 2];
    if ((lo & LO_P) === 0 || lo & LO_RW || (level === 4 && isXenL4Slot(i))) continue;
    const target = entryMfn(lo, e[i * 2 + 1]);
    if (target !== mfn && f.valid(target) && f.type[target] === level) n++;
  }
  return n;
}
