/**
 * The frame inspector: one frame's metadata (owner, general and type counts, validated /
 * pinned / partial, linear count, uses as a table, M2P), the grants pinning it, and who
 * references it — the reverse map (src/xen/refs.ts), each holder described in words, with
 * what the references add up to and whether that explains the counts.
 */

import type { FrameClass, FrameInfo, ReferenceView } from "../../web/protocol.js";
import { LO_RW } from "../x86/pte.js";
import { DOMID_IO, DOMID_XEN, PGT_NAMES, PGT_writable_page } from "../xen/abi.js";
import { F_PARTIAL, F_PINNED, F_VALIDATED } from "../xen/frametable.js";
import type { Host } from "../xen/host.js";
import { outgoingLinear, type Reference, referencesTo, referenceTotals } from "../xen/refs.js";
import { hostFrameClass } from "./framemap.js";

const hex = (n: number) => `0x${n.toString(16)}`;

/** A domain's name as the explorer shows it. */
export function ownerName(domid: number): string {
  if (domid < 0) return "none";
  if (domid === DOMID_IO) return "dom_io";
  if (domid === DOMID_XEN) return "dom_xen";
  return `d${domid}`;
}

/** One reference in words. */
export function describeReference(r: Reference): string {
  const d = r.domid === undefined ? "" : ownerName(r.domid);
  const entry = () => `L${r.level} ${hex(r.table!)}[${r.index}] of ${d}${r.lo! & LO_RW ? " (RW)" : " (RO)"}`;
  switch (r.kind) {
    case "allocation":
      return `allocation reference (PGC_allocated) of ${d}`;
    case "xen-heap":
      return `Xen's writable type reference: a Xen-heap frame shared with ${d} (grant table)`;
    case "pin":
      return `pinned by ${d}`;
    case "baseptr":
      return `${d} vCPU ${r.vcpu} kernel base pointer`;
    case "user-baseptr":
      return `${d} vCPU ${r.vcpu} user base pointer`;
    case "gdt":
      return `${d} vCPU ${r.vcpu} GDT frame`;
    case "grant-device": {
      const g = r.grant!;
      return `${ownerName(g.mapper)} maps grant ${ownerName(g.granter)}/ref ${g.ref} for device access (handle ${g.handle}${g.readonly ? ", read-only" : ""})`;
    }
    case "entry": {
      const g = r.grant;
      const grant = g ? ` — grant PTE: ${ownerName(g.granter)}/ref ${g.ref}, handle ${g.handle}` : "";
      const io = r.general === 0 ? " (I/O frame: no reference)" : "";
      return `entry ${entry()}${grant}${io}`;
    }
    case "linear":
      return `linear entry ${entry()} (a same-level table: linear_pt_count)`;
    case "table-use":
      return `use as a table by ${entry()} (split-count)`;
    case "self-map":
      return `self-map ${entry()} (holds nothing)`;
    case "xen-slot":
      return `Xen's slot ${r.index} of L4 ${hex(r.table!)} of ${d} (holds nothing)`;
  }
}

function referenceView(r: Reference): ReferenceView {
  const v: ReferenceView = { kind: r.kind, general: r.general, type: r.type, text: describeReference(r) };
  if (r.domid !== undefined) v.domid = r.domid;
  if (r.vcpu !== undefined) v.vcpu = r.vcpu;
  if (r.table !== undefined) {
    v.table = r.table;
    v.level = r.level;
    v.index = r.index;
    v.entry = ((BigInt(r.hi! >>> 0) << 32n) | BigInt(r.lo! >>> 0)).toString(16).padStart(16, "0");
  }
  if (r.grant) v.grant = { ...r.grant };
  return v;
}

/** The inspector's view of a host frame. Throws RangeError for a frame outside the host. */
export function hostFrameInfo(h: Host, mfn: number): FrameInfo {
  const f = h.frames;
  if (!f.valid(mfn)) throw new RangeError(`frame ${hex(mfn)} is outside the host (${f.frames} frames)`);
  const refs = referencesTo(h, mfn);
  const totals = referenceTotals(refs, mfn, outgoingLinear(h, mfn));
  const type = f.type[mfn];
  const typed = (type >= 1 && type <= 5) || type === PGT_writable_page;
  const owner = f.ownerOf(mfn);
  const tracked = h.domains.has(owner) && f.allocated[mfn] === 1;
  const explained =
    totals.general === f.count[mfn] &&
    (!typed || totals.type === f.typeCount[mfn]) &&
    (h.linearPolicy !== "xen" || totals.linear === f.linear[mfn]) &&
    (h.linearPolicy !== "split-count" || totals.tableUses === f.tableUses[mfn]);
  const grantPins: NonNullable<FrameInfo["grantPins"]> = [];
  for (const d of h.domains.values()) {
    const g = d.grants;
    for (let ref = 0; ref < g.nrEntries; ref++) {
      if (g.pin[ref] !== 0 && g.actMfn[ref] === mfn) {
        grantPins.push({ granter: d.domid, ref, pin: hex(g.pin[ref]), to: g.actDomid[ref] });
      }
    }
  }
  return {
    mfn,
    class: hostFrameClass(h, mfn),
    owner,
    ownerName: ownerName(owner),
    hasFrameTable: true,
    type: PGT_NAMES[type],
    count: f.count[mfn],
    typeCount: f.typeCount[mfn],
    allocated: f.allocated[mfn] === 1,
    validated: (f.flags[mfn] & F_VALIDATED) !== 0,
    pinned: (f.flags[mfn] & F_PINNED) !== 0,
    partial: (f.flags[mfn] & F_PARTIAL) !== 0,
    linear: f.linear[mfn],
    tableUses: f.tableUses[mfn],
    m2p:
      f.m2pLo[mfn] === 0xffffffff && f.m2pHi[mfn] === 0xffffffff
        ? "invalid"
        : hex(f.m2pHi[mfn] * 2 ** 32 + f.m2pLo[mfn]),
    grantPins,
    refs: refs.map(referenceView),
    totals,
    // Frames outside the domains' lists (I/O, Xen's, free) are not the auditor's to explain.
    explained: tracked ? explained : true,
  };
}

/** A dump's frame: only what the page tables say (there is no frame table). */
export function dumpFrameInfo(mfn: number, cls: FrameClass): FrameInfo {
  return { mfn, class: cls, owner: -1, ownerName: "none", hasFrameTable: false, refs: [] };
}
