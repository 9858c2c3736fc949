/**
 * `HYPERVISOR_memory_op` (12) for PV guests (xen/common/memory.c): ballooning
 * and populating.
 *
 *  - XENMEM_increase_reservation (0): allocate `nr_extents` extents of
 *    2^order frames; the MFNs are written back (PV: no P2M in Xen);
 *  - XENMEM_decrease_reservation (1): give back frames (PV: by MFN) —
 *    `guest_remove_page` drops the allocation reference, so a frame that is
 *    still mapped, pinned or granted stays until its last reference goes;
 *  - XENMEM_populate_physmap (6): allocate frames for the given gpfns, set
 *    their M2P entries, write the MFNs back;
 *  - XENMEM_exchange (11): swap frames that nothing else references for fresh
 *    ones (same order in and out in this model);
 *  - XENMEM_maximum_ram_page (2), current_reservation (3), maximum_reservation (4).
 * Batches stop at the first extent that fails; the result is the number of
 * extents done. The model also updates the guest's own P2M list as a PV guest
 * does right after (it is the guest's data structure, not Xen's).
 */

import { DOMID_SELF, EINVAL, ENOMEM, ENOSYS, EPERM, ESRCH } from "./abi.js";
import type { Domain } from "./domain.js";
import { F_PINNED } from "./frametable.js";
import type { Host } from "./host.js";
import { getPage, putPage } from "./mm.js";

export const __HYPERVISOR_memory_op = 12;
export const XENMEM_increase_reservation = 0;
export const XENMEM_decrease_reservation = 1;
export const XENMEM_maximum_ram_page = 2;
export const XENMEM_current_reservation = 3;
export const XENMEM_maximum_reservation = 4;
export const XENMEM_populate_physmap = 6;
export const XENMEM_exchange = 11;

export interface Reservation {
  /** MFNs (increase: output; decrease: input) or gpfns (populate: input; MFNs written back). */
  extents: number[];
  order?: number;
  domid?: number;
}

export interface MemoryResult {
  rc: number;
  extents: number[];
  nr_exchanged?: number;
}

/** `max_order()`: CONFIG_DOMU_MAX_ORDER 9, CONFIG_CTLDOM_MAX_ORDER 12. */
function maxOrder(d: Domain): number {
  return d.privileged ? 12 : 9;
}

function target(h: Host, caller: Domain, domid: number | undefined): Domain | number {
  const d = domid === undefined || domid === DOMID_SELF ? caller : h.domains.get(domid);
  if (!d) return -ESRCH;
  if (d !== caller && !caller.privileged) return -EPERM;
  return d;
}

export function memoryOp(
  h: Host,
  caller: Domain,
  cmd: number,
  arg: Reservation & { out_order?: number },
): MemoryResult {
  const t = target(h, caller, arg.domid);
  if (typeof t === "number") return { rc: t, extents: [] };
  const d = t;
  const order = arg.order ?? 0;
  const extents = [...arg.extents];
  switch (cmd) {
    case XENMEM_maximum_ram_page:
      return { rc: h.frames.frames, extents };
    case XENMEM_current_reservation:
      return { rc: d.pages.size, extents };
    case XENMEM_maximum_reservation:
      return { rc: Math.min(d.maxPages, 0x7fffffff), extents };
    case XENMEM_increase_reservation:
    case XENMEM_populate_physmap: {
      if (!Number.isInteger(order) || order < 0 || order > maxOrder(caller)) return { rc: -EINVAL, extents };
      let done = 0;
      for (; done < extents.length; done++) {
        const n = 2 ** order;
        if (d.pages.size + n > d.maxPages) break;
        const base = h.allocExtent(order);
        if (base < 0) break;
        const gpfn = extents[done];
        for (let j = 0; j < n; j++) {
          // populate: the frame becomes gpfn + j; increase: no gpfn until the guest sets one.
          h.assignPage(d, base + j, cmd === XENMEM_populate_physmap ? gpfn + j : -1);
        }
        extents[done] = base;
      }
      return { rc: done, extents };
    }
    case XENMEM_decrease_reservation: {
      if (!Number.isInteger(order) || order < 0 || order > maxOrder(caller)) return { rc: -EINVAL, extents };
      let done = 0;
      for (; done < extents.length; done++) {
        let ok = true;
        for (let j = 0; j < 2 ** order && ok; j++) ok = guestRemovePage(h, d, extents[done] + j) === 0;
        if (!ok) break;
      }
      return { rc: done, extents };
    }
    case XENMEM_exchange: {
      const outOrder = arg.out_order ?? order;
      if (outOrder !== order || order > maxOrder(caller)) return { rc: -EINVAL, extents, nr_exchanged: 0 };
      const f = h.frames;
      let done = 0;
      for (; done < extents.length; done++) {
        const n = 2 ** order;
        const olds: number[] = [];
        for (let j = 0; j < n; j++) olds.push(extents[done] + j);
        // steal_page: only the allocation reference may be held, no type in use, not pinned.
        const stealable = olds.every(
          (m) =>
            f.valid(m) &&
            f.ownerOf(m) === d.domid &&
            f.allocated[m] === 1 &&
            f.count[m] === 1 &&
            f.typeCount[m] === 0 &&
            !(f.flags[m] & F_PINNED),
        );
        if (!stealable) return { rc: -EINVAL, extents, nr_exchanged: done };
        const base = h.allocExtent(order);
        if (base < 0) return { rc: -ENOMEM, extents, nr_exchanged: done };
        for (let j = 0; j < n; j++) {
          const old = olds[j];
          const gpfnLo = f.m2pLo[old];
          const gpfnHi = f.m2pHi[old];
          const pfn = guestPfn(h, d, old);
          f.allocated[old] = 0;
          putPage(h, old);
          h.assignPage(d, base + j, pfn);
          f.m2pLo[base + j] = gpfnLo;
          f.m2pHi[base + j] = gpfnHi;
        }
        extents[done] = base;
      }
      return { rc: 0, extents, nr_exchanged: done };
    }
    default:
      return { rc: -ENOSYS, extents };
  }
}

/** `guest_remove_page`: the frame must be the domain's; its allocation reference goes. */
function guestRemovePage(h: Host, d: Domain, mfn: number): number {
  if (!Number.isSafeInteger(mfn) || !getPage(h, mfn, d.domid)) return -6; // -ENXIO
  const f = h.frames;
  const pfn = guestPfn(h, d, mfn);
  if (pfn >= 0) d.setGuestP2m(h.mem, pfn, -1); // the guest's P2M entry goes with it
  if (f.allocated[mfn]) {
    f.allocated[mfn] = 0;
    putPage(h, mfn);
  }
  putPage(h, mfn);
  return 0;
}

/** The guest pfn of `mfn` by the M2P, if the guest's P2M agrees (O(1), no scan); -1 otherwise. */
function guestPfn(h: Host, d: Domain, mfn: number): number {
  const f = h.frames;
  if (f.m2pHi[mfn] !== 0) return -1;
  const pfn = f.m2pLo[mfn];
  return d.p2m[pfn] === mfn ? pfn : -1;
}
