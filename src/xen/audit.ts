/**
 * The auditor: recomputes, from first principles, every count that the
 * hypervisor keeps incrementally — from the page tables of validated frames,
 * the pins and the vCPUs' base pointers — and checks the invariants that make
 * PV paging safe. It scans everything on purpose (it is a checker, not a hot
 * path).
 *
 * Checked:
 *  - accounting: general count, type count, linear count (and uses-as-table
 *    under the split-count policy) of every frame equal the recomputed ones;
 *  - write exclusivity: no frame typed as a page table (or descriptor page)
 *    is mapped writable by a validated L1, nor cached writable in any vCPU's TLB;
 *  - validation: a page-table frame is validated exactly when something holds
 *    a type reference to it;
 *  - level discipline: entries of a validated L(n) point to L(n−1) tables, or
 *    are read-only same-level (linear) entries the policy allows;
 *  - one hop (policy "xen"): no table both holds linear entries and is the
 *    target of one;
 *  - ownership: validated tables map only their owner's frames (privileged
 *    domains may map others');
 *  - disallowed bits: no present entry of a validated table has them;
 *  - reserved slots: every validated L4 holds Xen's entries in slots 256–271;
 *  - `nr_l4_pages` of each domain.
 */

import { LO_P, LO_RW } from "../x86/pte.js";
import { PERM_W } from "../x86/walk.js";
import { DOMID_IO, LINEAR_PT_SLOT, PGT_l1_page_table, PGT_NAMES, PGT_writable_page } from "./abi.js";
import { F_PINNED, F_VALIDATED, F_XEN_HEAP } from "./frametable.js";
import { forEachLiveMapping, GNTMAP_device_map, GNTMAP_host_map, GNTMAP_readonly } from "./grant.js";
import type { Host } from "./host.js";
import { entryMfn, isXenL4Slot, L1_DISALLOW, LN_DISALLOW } from "./mm.js";

export interface AuditProblem {
  kind:
    | "count"
    | "type_count"
    | "linear_count"
    | "linear_chain"
    | "table_uses"
    | "write_exclusivity"
    | "stale_writable_tlb"
    | "validation"
    | "level"
    | "ownership"
    | "disallowed_bits"
    | "xen_slots"
    | "nr_l4_pages"
    | "grant";
  mfn?: number;
  message: string;
}

export interface AuditReport {
  ok: boolean;
  problems: AuditProblem[];
  framesChecked: number;
}

export function audit(h: Host): AuditReport {
  const f = h.frames;
  const problems: AuditProblem[] = [];
  const gc = new Map<number, number>();
  const tc = new Map<number, number>();
  const lin = new Map<number, number>();
  const uses = new Map<number, number>();
  const add = (m: Map<number, number>, k: number, n = 1) => m.set(k, (m.get(k) ?? 0) + n);
  const hex = (m: number) => `0x${m.toString(16)}`;
  const typeName = (m: number) => PGT_NAMES[f.type[m]];

  const frames: number[] = [];
  for (const d of h.domains.values()) {
    for (let i = 0; i < d.pages.size; i++) frames.push(d.pages.at(i));
    for (const m of d.xenPages) frames.push(m);
  }
  for (const m of frames) {
    if (f.allocated[m]) add(gc, m);
    if (f.flags[m] & F_XEN_HEAP) add(tc, m); // share_xen_page_with_guest's writable type reference
    if (f.flags[m] & F_PINNED) {
      add(gc, m);
      add(tc, m);
    }
  }
  for (const d of h.domains.values()) {
    for (const v of d.vcpus) {
      for (const base of [v.guestTable, v.guestTableUser, ...v.gdtFrames]) {
        if (base === 0) continue;
        add(gc, base);
        add(tc, base);
      }
    }
  }

  // One pass over the live maptrack entries (an entry that outlived its granter after an implicit
  // unmap is skipped: Xen expects it, "This can happen when a grant is implicitly unmapped", and
  // crashes the mapper if it then unmaps):
  //  - a domain's L1 may map another domain's frame that it holds a live host mapping of: by
  //    mapper, the frames granted to it. Not by PTE address: Xen's maptrack does not record one (an
  //    unmap names its PTE afresh), and unmap_and_replace can move a grant PTE — steal it from
  //    new_addr into another mapping's slot — leaving it where no map call put it;
  //  - device mappings hold references of their own (host mappings' are held by their PTE);
  //  - every granter's pin counters equal the live maptrack entries naming its entries.
  const granted = new Map<number, Set<number>>();
  /** Per granter: grant reference → the pin count its live maptrack entries add up to. */
  const pins = new Map<number, Map<number, number>>();
  forEachLiveMapping(h, (ld, _handle, rd, ref, fl) => {
    const mfn = rd.grants.actMfn[ref];
    const ro = (fl & GNTMAP_readonly) !== 0;
    let inc = 0;
    if (fl & GNTMAP_device_map) {
      inc += ro ? 1 << 24 : 1 << 16;
      add(gc, mfn);
      if (!ro) add(tc, mfn);
    }
    if (fl & GNTMAP_host_map) {
      inc += ro ? 1 << 8 : 1;
      let mfns = granted.get(ld.domid);
      if (mfns === undefined) {
        mfns = new Set();
        granted.set(ld.domid, mfns);
      }
      mfns.add(mfn);
    }
    let byRef = pins.get(rd.domid);
    if (byRef === undefined) {
      byRef = new Map();
      pins.set(rd.domid, byRef);
    }
    byRef.set(ref, (byRef.get(ref) ?? 0) + inc);
  });
  for (const rd of h.domains.values()) {
    const gt = rd.grants;
    const byRef = pins.get(rd.domid);
    for (let ref = 0; ref < gt.nrEntries; ref++) {
      const pin = gt.pin[ref];
      const want = byRef === undefined ? 0 : (byRef.get(ref) ?? 0);
      if (pin !== want) {
        problems.push({
          kind: "grant",
          message: `d${rd.domid} grant ${ref}: pin 0x${pin.toString(16)}, maptrack says 0x${want.toString(16)}`,
        });
      }
      // The entry's GTF_reading/GTF_writing bits live in memory the granter may write (it maps
      // its grant frames), so they prove nothing; what must hold is that a pinned entry's frame
      // is still the granter's grant-table frame: Xen's (PGC_xen_heap), not freed or reused, even
      // if the guest gave back its own reference to it.
      const fr = gt.frames[ref >>> 9];
      if (pin !== 0 && (!(f.flags[fr] & F_XEN_HEAP) || f.ownerOf(fr) !== rd.domid)) {
        problems.push({
          kind: "grant",
          message: `d${rd.domid} grant ${ref} is pinned (0x${pin.toString(16)}) but its frame ${hex(fr)} is no longer the granter's grant-table frame`,
        });
      }
    }
  }

  const validatedL4 = new Map<number, number>();
  /** Tables holding a linear entry to another table, and tables some linear entry targets. */
  const linHolders = new Set<number>();
  const linTargets = new Set<number>();
  for (const m of frames) {
    const t = f.type[m];
    if (t < 1 || t > 4 || !(f.flags[m] & F_VALIDATED)) continue;
    const owner = f.ownerOf(m);
    const d = h.domains.get(owner);
    const e = h.mem.frame(m);
    if (t === 4) validatedL4.set(owner, (validatedL4.get(owner) ?? 0) + 1);
    for (let i = 0; i < 512; i++) {
      const lo = e[i * 2];
      const hi = e[i * 2 + 1];
      if (t === 4 && isXenL4Slot(i)) {
        if (i === LINEAR_PT_SLOT && entryMfn(lo, hi) !== m) {
          problems.push({
            kind: "xen_slots",
            mfn: m,
            message: `L4 ${hex(m)} slot 258 does not map the L4 itself`,
          });
        }
        continue;
      }
      if ((lo & LO_P) === 0) continue;
      const target = entryMfn(lo, hi);
      if (t === PGT_l1_page_table) {
        if ((lo & (d?.io ? 0 : L1_DISALLOW)) !== 0) {
          problems.push({
            kind: "disallowed_bits",
            mfn: m,
            message: `L1 ${hex(m)}[${i}] has disallowed bits`,
          });
        }
        if (!f.valid(target) || f.ownerOf(target) === DOMID_IO) continue;
        add(gc, target);
        const towner = f.ownerOf(target);
        if (towner !== owner && !d?.privileged && !granted.get(owner)?.has(target)) {
          problems.push({
            kind: "ownership",
            mfn: m,
            message: `L1 ${hex(m)}[${i}] of d${owner} maps ${hex(target)} owned by d${towner}`,
          });
        }
        if (lo & LO_RW) {
          add(tc, target);
          if (f.type[target] !== PGT_writable_page) {
            problems.push({
              kind: "write_exclusivity",
              mfn: target,
              message: `${hex(target)} typed ${typeName(target)} is mapped writable by L1 ${hex(m)}[${i}]`,
            });
          }
        }
        continue;
      }
      if ((lo & LN_DISALLOW) !== 0) {
        problems.push({
          kind: "disallowed_bits",
          mfn: m,
          message: `L${t} ${hex(m)}[${i}] has disallowed bits`,
        });
      }
      if (target === m) {
        if (lo & LO_RW)
          problems.push({ kind: "level", mfn: m, message: `L${t} ${hex(m)}[${i}] is a writable self-map` });
        continue;
      }
      add(gc, target);
      if (f.ownerOf(target) !== owner) {
        problems.push({
          kind: "ownership",
          mfn: m,
          message: `L${t} ${hex(m)}[${i}] points at another domain's frame`,
        });
      }
      if (f.type[target] === t - 1) {
        add(tc, target);
      } else if (f.type[target] === t && !(lo & LO_RW) && h.pvLinearPt && h.linearPolicy !== "self-only") {
        if (h.linearPolicy === "split-count") add(uses, target);
        else {
          add(tc, target);
          add(lin, m);
          add(lin, target, -1);
          linHolders.add(m);
          linTargets.add(target);
        }
      } else {
        problems.push({
          kind: "level",
          mfn: m,
          message: `L${t} ${hex(m)}[${i}] points at ${hex(target)} typed ${typeName(target)}`,
        });
      }
    }
  }

  for (const m of frames) {
    const wantGc = gc.get(m) ?? 0;
    if (f.count[m] !== wantGc) {
      problems.push({
        kind: "count",
        mfn: m,
        message: `${hex(m)}: general count ${f.count[m]}, expected ${wantGc}`,
      });
    }
    const t = f.type[m];
    const wantTc = tc.get(m) ?? 0;
    if ((t >= 1 && t <= 5) || t === PGT_writable_page) {
      if (f.typeCount[m] !== wantTc) {
        problems.push({
          kind: "type_count",
          mfn: m,
          message: `${hex(m)} (${typeName(m)}): type count ${f.typeCount[m]}, expected ${wantTc}`,
        });
      }
    }
    if (t >= 1 && t <= 4) {
      const held = f.typeCount[m] > 0 || (h.linearPolicy === "split-count" && f.tableUses[m] > 0);
      if (held !== ((f.flags[m] & F_VALIDATED) !== 0)) {
        problems.push({
          kind: "validation",
          mfn: m,
          message: `${hex(m)} (${typeName(m)}): validated=${(f.flags[m] & F_VALIDATED) !== 0} with type count ${f.typeCount[m]}`,
        });
      }
    }
    if (h.linearPolicy === "xen" && f.linear[m] !== (lin.get(m) ?? 0)) {
      problems.push({
        kind: "linear_count",
        mfn: m,
        message: `${hex(m)}: linear_pt_count ${f.linear[m]}, expected ${lin.get(m) ?? 0}`,
      });
    }
    if (h.linearPolicy === "split-count" && f.tableUses[m] !== (uses.get(m) ?? 0)) {
      problems.push({
        kind: "table_uses",
        mfn: m,
        message: `${hex(m)}: uses as a table ${f.tableUses[m]}, expected ${uses.get(m) ?? 0}`,
      });
    }
  }

  for (const m of linHolders) {
    if (linTargets.has(m)) {
      problems.push({
        kind: "linear_chain",
        mfn: m,
        message: `${hex(m)} (${typeName(m)}) holds linear entries and is the target of one: a chain of two hops`,
      });
    }
  }

  // No CPU may hold a writable translation of a frame typed as a page table.
  // Xen's type-change flush covers the owner's dirty CPUs (`d->dirty_cpumask`), so a privileged
  // domain's stale writable translation of another domain's frame (a foreign mapping it removed
  // without flushing) may survive, as in Xen: that domain can write any memory anyway.
  for (const d of h.domains.values()) {
    for (const v of d.vcpus) {
      v.cpu.tlb.forEachLive((pa, pageSize, perm) => {
        if ((perm & PERM_W) === 0) return;
        for (let off = 0; off < pageSize; off += 4096) {
          const m = Math.floor((pa + off) / 4096);
          const t = f.valid(m) ? f.type[m] : 0;
          if (d.privileged && f.valid(m) && f.ownerOf(m) !== d.domid) continue;
          if (t >= 1 && t <= 5 && f.typeCount[m] > 0) {
            problems.push({
              kind: "stale_writable_tlb",
              mfn: m,
              message: `d${d.domid} vCPU ${v.id} caches a writable translation of ${hex(m)} typed ${typeName(m)}`,
            });
          }
          if (pageSize > 4096) break;
        }
      });
    }
    if (d.nrL4Pages !== (validatedL4.get(d.domid) ?? 0)) {
      problems.push({
        kind: "nr_l4_pages",
        message: `d${d.domid}: nr_l4_pages ${d.nrL4Pages}, ${validatedL4.get(d.domid) ?? 0} validated L4s`,
      });
    }
  }
  return { ok: problems.length === 0, problems, framesChecked: frames.length };
}
