/**
 * What a step changed: the host's state captured before and after, then compared — every
 * frame's metadata (the frame table's arrays, copied whole: a scenario host is small), the
 * contents of the domains' frames (every frame of hosts up to `FULL_CONTENTS_FRAMES` owned
 * frames, else only the page-table frames), each vCPU's base pointers and TLB contents, each
 * domain's state. The diff lists fields before → after; lists stop at `LIMIT` items.
 */

import type {
  EntryChange,
  FieldChange,
  FrameChange,
  StateDiff,
  TlbChange,
  TlbEntryText,
  TlbView,
} from "../../web/protocol.js";
import { FRAME_CLASSES } from "../../web/protocol.js";
import { hex64 } from "../x86/address.js";
import { PERM_D, PERM_G, PERM_NX, PERM_U, PERM_W } from "../x86/walk.js";
import { PGT_NAMES } from "../xen/abi.js";
import type { Host } from "../xen/host.js";
import { hostFrameClasses } from "./framemap.js";

/** Copy every owned frame's contents when the domains own at most this many frames. */
export const FULL_CONTENTS_FRAMES = 65536;
/** Most items listed per kind of change. */
export const LIMIT = 500;

const FRAME_FIELDS = [
  "owner",
  "count",
  "allocated",
  "type",
  "typeCount",
  "flags",
  "linear",
  "tableUses",
] as const;
type FrameField = (typeof FRAME_FIELDS)[number];

export interface HostState {
  frames: Record<FrameField, Int32Array | Uint32Array | Uint8Array | Int16Array>;
  classes: Uint8Array;
  contents: Map<number, Uint32Array>;
  vcpus: Map<string, Record<string, number | string | boolean>>;
  tlbs: Map<string, TlbEntryText[]>;
  domains: Map<number, Record<string, number | string | boolean>>;
}

function permText(perm: number): string {
  return [
    perm & PERM_W ? "W" : "R",
    perm & PERM_U ? "U" : "S",
    perm & PERM_NX ? "NX" : "X",
    perm & PERM_D ? "D" : "",
    perm & PERM_G ? "G" : "",
  ]
    .filter(Boolean)
    .join(" ");
}

/** Every vCPU's TLB contents, ordered by address. */
export function tlbContents(h: Host): TlbView[] {
  const out: TlbView[] = [];
  for (const d of [...h.domains.values()].sort((a, b) => a.domid - b.domid)) {
    for (const v of d.vcpus) {
      const entries = [...v.cpu.tlb.entries()]
        .sort((a, b) => (a.va < b.va ? -1 : a.va > b.va ? 1 : a.pcid - b.pcid))
        .map((e) => ({ va: hex64(e.va), pa: hex64(e.pa), size: e.pageSize, perm: permText(e.perm) }));
      out.push({ domid: d.domid, vcpu: v.id, entries });
    }
  }
  return out;
}

/** The state a diff compares. */
export function captureState(h: Host): HostState {
  const f = h.frames;
  const frames = {} as HostState["frames"];
  for (const k of FRAME_FIELDS) frames[k] = f[k].slice();
  const owned: number[] = [];
  for (const d of h.domains.values()) {
    for (const m of d.pages) owned.push(m);
    for (const m of d.xenPages) owned.push(m);
  }
  const full = owned.length <= FULL_CONTENTS_FRAMES;
  const contents = new Map<number, Uint32Array>();
  for (const m of owned) {
    const t = f.type[m];
    if (full || (t >= 1 && t <= 4)) contents.set(m, h.mem.frame(m).slice());
  }
  const vcpus = new Map<string, Record<string, number | string | boolean>>();
  const domains = new Map<number, Record<string, number | string | boolean>>();
  for (const d of h.domains.values()) {
    domains.set(d.domid, {
      pages: d.pages.size,
      nrL4Pages: d.nrL4Pages,
      dying: d.isDying,
      crashed: d.crashed,
      injectedGp: d.injectedGp,
      vmAssist: `0x${(d.vmAssist >>> 0).toString(16)}`,
      grantFrames: d.grants.frames.length,
    });
    for (const v of d.vcpus) {
      vcpus.set(`${d.domid}:${v.id}`, {
        kernelBase: `0x${v.guestTable.toString(16)}`,
        userBase: `0x${v.guestTableUser.toString(16)}`,
        kernelMode: v.kernelMode,
        cr3: `0x${v.cpu.cr3.toString(16)}`,
        gdt: v.gdtFrames.join(","),
        ldt: `0x${v.ldtBase.toString(16)}/${v.ldtEnts}`,
      });
    }
  }
  const tlbs = new Map<string, TlbEntryText[]>();
  for (const t of tlbContents(h)) tlbs.set(`${t.domid}:${t.vcpu}`, t.entries);
  return { frames, classes: hostFrameClasses(h), contents, vcpus, tlbs, domains };
}

function fieldValue(field: FrameField, v: number): number | string {
  if (field === "type") return PGT_NAMES[v] ?? v;
  if (field === "owner") return v - 1;
  if (field === "flags") {
    return (
      [v & 1 ? "validated" : "", v & 2 ? "pinned" : "", v & 4 ? "partial" : ""].filter(Boolean).join("|") ||
      "-"
    );
  }
  return v;
}

const tlbKey = (e: TlbEntryText) => `${e.va}|${e.pa}|${e.size}|${e.perm}`;

function compareRecords(
  a: Map<string | number, Record<string, number | string | boolean>>,
  b: Map<string | number, Record<string, number | string | boolean>>,
  key: (k: string | number) => { domid: number; vcpu?: number },
): FieldChange[] {
  const out: FieldChange[] = [];
  for (const k of new Set([...a.keys(), ...b.keys()])) {
    const ra = a.get(k);
    const rb = b.get(k);
    const at = key(k);
    if (!ra || !rb) {
      out.push({ ...at, field: "exists", before: !!ra, after: !!rb });
      continue;
    }
    for (const field of Object.keys(rb)) {
      if (ra[field] !== rb[field]) out.push({ ...at, field, before: ra[field], after: rb[field] });
    }
  }
  return out;
}

/** What changed from `a` to `b` (both of the same host). */
export function diffStates(a: HostState, b: HostState): StateDiff {
  let truncated = false;
  const changed = new Set<number>();
  const frames: FrameChange[] = [];
  const n = Math.min(a.classes.length, b.classes.length);
  for (let m = 0; m < n; m++) {
    for (const field of FRAME_FIELDS) {
      const va = a.frames[field][m];
      const vb = b.frames[field][m];
      if (va === vb) continue;
      changed.add(m);
      if (frames.length >= LIMIT) {
        truncated = true;
        continue;
      }
      frames.push({ mfn: m, field, before: fieldValue(field, va), after: fieldValue(field, vb) });
    }
  }
  const entries: EntryChange[] = [];
  const zero = new Uint32Array(1024);
  for (const m of new Set([...a.contents.keys(), ...b.contents.keys()])) {
    const ca = a.contents.get(m) ?? zero;
    const cb = b.contents.get(m) ?? zero;
    for (let i = 0; i < 512; i++) {
      if (ca[i * 2] === cb[i * 2] && ca[i * 2 + 1] === cb[i * 2 + 1]) continue;
      changed.add(m);
      if (entries.length >= LIMIT) {
        truncated = true;
        continue;
      }
      entries.push({
        mfn: m,
        index: i,
        before: hex64((BigInt(ca[i * 2 + 1]) << 32n) | BigInt(ca[i * 2])),
        after: hex64((BigInt(cb[i * 2 + 1]) << 32n) | BigInt(cb[i * 2])),
        class: FRAME_CLASSES[b.classes[m]],
      });
    }
  }
  entries.sort((x, y) => x.mfn - y.mfn || x.index - y.index);
  const tlb: TlbChange[] = [];
  for (const k of new Set([...a.tlbs.keys(), ...b.tlbs.keys()])) {
    const ta = a.tlbs.get(k) ?? [];
    const tb = b.tlbs.get(k) ?? [];
    const ka = new Set(ta.map(tlbKey));
    const kb = new Set(tb.map(tlbKey));
    const added = tb.filter((e) => !ka.has(tlbKey(e)));
    const removed = ta.filter((e) => !kb.has(tlbKey(e)));
    if (added.length || removed.length) {
      const [domid, vcpu] = k.split(":").map(Number);
      tlb.push({ domid, vcpu, added, removed });
    }
  }
  const vcpus = compareRecords(
    a.vcpus as Map<string | number, Record<string, number | string | boolean>>,
    b.vcpus as Map<string | number, Record<string, number | string | boolean>>,
    (k) => {
      const [domid, vcpu] = String(k).split(":").map(Number);
      return { domid, vcpu };
    },
  );
  const domains = compareRecords(
    a.domains as Map<string | number, Record<string, number | string | boolean>>,
    b.domains as Map<string | number, Record<string, number | string | boolean>>,
    (k) => ({ domid: Number(k) }),
  );
  return {
    frames,
    entries,
    tlb,
    vcpus,
    domains,
    changedFrames: [...changed].sort((x, y) => x - y),
    truncated,
  };
}
