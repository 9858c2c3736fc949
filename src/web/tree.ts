/**
 * Building the page-table tree for the explorer, one table at a time: every present entry of
 * a table decoded (flags, target, the linear range it covers) and classified — a pointer to
 * the next level, a leaf, a back edge (a self-map, or an entry pointing at a table already on
 * the path from the root), a linear entry (a same-level table, Xen's linear page tables), one
 * of Xen's own L4 slots, a grant PTE — with what Xen rewrote in it. The page asks for the
 * tables it expands; nothing is walked ahead.
 *
 * With a host the frame table says what each target is; a memory dump has only the path.
 */

import type { EntryView, FrameClass, GrantView, RootView, TableView, WalkView } from "../../web/protocol.js";
import { walkView } from "../dump/views.js";
import { canonicalize, hex64, type PagingLevels } from "../x86/address.js";
import type { PhysicalMemory } from "../x86/memory.js";
import {
  describeFlags,
  joinEntry,
  type Level,
  LO_A,
  LO_P,
  LO_PCD,
  LO_PS,
  LO_PWT,
  LO_US,
} from "../x86/pte.js";
import { DOMID_IO, HI_GUEST_KERNEL, LINEAR_PT_SLOT, PERDOMAIN_SLOT, RO_MPT_SLOT } from "../xen/abi.js";
import { F_PINNED, F_VALIDATED } from "../xen/frametable.js";
import type { Host } from "../xen/host.js";
import { entryMfn, isXenL4Slot } from "../xen/mm.js";
import { grantMappings } from "../xen/refs.js";
import { hostFrameClass } from "./framemap.js";

/** What the tree is built over: memory, and the host when there is one. */
export interface TreeSource {
  mem: PhysicalMemory;
  levels: PagingLevels;
  host?: Host;
  /** Host mappings of grants by their PTE's machine address. */
  grantPtes?: Map<number, GrantView>;
  /** Frames mapped through a grant (for classes). */
  grantFrames?: Set<number>;
  /** A dump's class of a frame (no frame table). */
  classOf?: (mfn: number) => FrameClass;
}

/** Bytes covered by one entry of a table at `level`. */
export function entrySpan(level: number): number {
  return 2 ** (12 + 9 * (level - 1));
}

/** Host mappings of grants, by the PTE's machine address (the mappers' maptracks). */
export function grantPtes(h: Host): Map<number, GrantView> {
  return grantMappings(h).byPte;
}

const XEN_SLOT_NAMES: Record<number, string> = {
  [RO_MPT_SLOT]: "read-only M2P",
  [LINEAR_PT_SLOT]: "Xen's linear map of this L4",
  [PERDOMAIN_SLOT]: "per-domain mappings",
};

/** What Xen rewrote in a present entry of a validated table (pv/mm.h `adjust_guest_l*e`). */
function xenNotes(level: number, lo: number, hi: number, targetIo: boolean): string[] {
  const notes: string[] = [];
  if (level === 1) {
    if (hi & HI_GUEST_KERNEL) notes.push("kernel mapping: Xen set US and _PAGE_GUEST_KERNEL (bit 52)");
    else if (lo & LO_US) notes.push("user mapping: Xen forces G and US");
    if (targetIo && (lo & (LO_PCD | LO_PWT)) === (LO_PCD | LO_PWT)) {
      notes.push("I/O frame: Xen forced uncacheable (PCD|PWT)");
    }
  } else {
    notes.push("Xen forces US in L2–L4 entries");
    if (level === 4 && lo & LO_A) notes.push("Xen sets A in L4 entries");
  }
  return notes;
}

/**
 * One table: its present entries, decoded and classified. `baseVa` is the raw (index-built)
 * linear address the table's first entry covers; `path` the frames above it from the root.
 */
export function tableView(
  src: TreeSource,
  mfn: number,
  level: number,
  baseVa: bigint,
  path: readonly number[],
): TableView {
  const h = src.host;
  const f = h?.frames;
  const t = src.mem.frame(mfn);
  const span = entrySpan(level);
  const validated = f ? (f.flags[mfn] & F_VALIDATED) !== 0 && f.type[mfn] === level : false;
  const entries: EntryView[] = [];
  const classOf = (m: number): FrameClass | undefined =>
    h ? (h.frames.valid(m) ? hostFrameClass(h, m, src.grantFrames) : undefined) : src.classOf?.(m);
  for (let i = 0; i < 512; i++) {
    const lo = t[i * 2];
    if ((lo & LO_P) === 0) continue;
    const hi = t[i * 2 + 1];
    const target = entryMfn(lo, hi);
    const va = canonicalize(baseVa + BigInt(span) * BigInt(i), src.levels);
    const e: EntryView = {
      index: i,
      raw: hex64(joinEntry(lo, hi)),
      flags: describeFlags(lo, hi, level as Level),
      target,
      va: hex64(va),
      span,
      kind: "table",
      xen: [],
    };
    const tc = classOf(target);
    if (tc) e.targetClass = tc;
    if (f?.valid(target)) e.targetOwner = f.ownerOf(target);
    const leaf = level === 1 || ((level === 2 || level === 3) && (lo & LO_PS) !== 0);
    if (h && level === 4 && isXenL4Slot(i)) {
      e.kind = target === mfn ? "self" : "xen-slot";
      e.xen.push(`installed by Xen (slot ${i}${XEN_SLOT_NAMES[i] ? `: ${XEN_SLOT_NAMES[i]}` : ""})`);
    } else if (target === mfn && !leaf) {
      e.kind = "self";
    } else if (path.includes(target) && !leaf) {
      e.kind = "back";
    } else if (leaf) {
      e.kind = f?.valid(target) && f.ownerOf(target) === DOMID_IO ? "io" : "leaf";
      e.pageSize = entrySpan(level);
      const g = src.grantPtes?.get(mfn * 4096 + i * 8);
      if (g) e.grant = g;
    } else if (f?.valid(target) && f.type[target] === level && (f.flags[target] & F_VALIDATED) !== 0) {
      e.kind = "linear";
    } else {
      e.childLevel = level - 1;
    }
    if (validated && e.kind !== "xen-slot" && !(e.kind === "self" && level === 4 && isXenL4Slot(i))) {
      e.xen.push(...xenNotes(level, lo, hi, e.kind === "io"));
    }
    if (e.kind === "table" && e.childLevel === undefined) e.childLevel = level - 1;
    entries.push(e);
  }
  return {
    mfn,
    level,
    va: hex64(canonicalize(baseVa, src.levels)),
    class: classOf(mfn) ?? "none",
    owner: f?.valid(mfn) ? f.ownerOf(mfn) : -1,
    validated,
    pinned: f ? (f.flags[mfn] & F_PINNED) !== 0 : false,
    count: f?.count[mfn] ?? 0,
    typeCount: f?.typeCount[mfn] ?? 0,
    present: entries.length,
    entries,
  };
}

/** The base pointers of every vCPU of every domain: where trees start. */
export function hostRoots(h: Host): RootView[] {
  const out: RootView[] = [];
  for (const d of [...h.domains.values()].sort((a, b) => a.domid - b.domid)) {
    for (const v of d.vcpus) {
      for (const [mode, mfn] of [
        ["kernel", v.guestTable],
        ["user", v.guestTableUser],
      ] as const) {
        if (!mfn) continue;
        out.push({
          label: `d${d.domid} vCPU ${v.id} ${mode} (0x${mfn.toString(16)})`,
          mfn,
          levels: 4,
          domid: d.domid,
          vcpu: v.id,
          mode,
        });
      }
    }
  }
  return out;
}

/** One address's walk from `root` (a debugger's probe: no A/D bits set), with each step's table. */
export function walkFrom(
  mem: PhysicalMemory,
  root: number,
  levels: PagingLevels,
  va: bigint,
  access: { kind?: "read" | "write" | "fetch"; user?: boolean } = {},
): WalkView {
  const r = walkView(mem, root, va, { levels, access: access.kind, user: access.user, nxe: true });
  let table = root;
  const steps = r.steps.map((s) => {
    const step = { ...s, table };
    const e = BigInt(`0x${s.entry}`);
    table = entryMfn(Number(e & 0xffffffffn), Number(e >> 32n));
    return step;
  });
  return { ...r, steps };
}
