/**
 * Domain destruction (`domain_relinquish_resources`, `relinquish_memory`),
 * in Xen's order for a PV domain:
 *  0. its grant mappings of other domains' pages are released (`gnttab_release_mappings`);
 *  1. each vCPU's base pointers drop their refs (kernel, then user), then each
 *     vCPU's GDT frames;
 *  2. passes over the page list for L4, L3, L2: every pass clears any pin
 *     (whatever its level), drops the allocation reference, and force-
 *     devalidates tables of the pass's type without touching their type
 *     count — which breaks linear (circular) references; L1s lose their type
 *     refs when the L2s above them are demoted.
 *  3. the frames Xen shares with it (grant-table frames) lose their
 *     allocation references (`relinquish_memory` of the xenpage list).
 * Frames still referenced from elsewhere (foreign mappings, grant mappings —
 * of its pages or of its grant-table frames) survive until those go; the
 * domain is kept as a zombie until then, and with it its grant table: the
 * shared grant frames keep the entries whose pins outlive the domain (a
 * mapper's unmap still updates their status), as Xen frees the grant table
 * only in `domain_destroy`, once the last reference is gone (`finishDestroy`,
 * called by Host.freePage when a zombie's last page or shared frame goes).
 */

import { PGT_l2_page_table, PGT_l3_page_table, PGT_l4_page_table } from "./abi.js";
import type { Domain } from "./domain.js";
import { F_PINNED, F_VALIDATED, F_XEN_HEAP } from "./frametable.js";
import { destroyGdt } from "./gdt.js";
import { releaseMappings } from "./grant.js";
import type { Host } from "./host.js";
import { devalidate, getPage, putPage, putPageAndType } from "./mm.js";

export function destroyDomain(h: Host, d: Domain): void {
  d.isDying = true;
  releaseMappings(h, d);
  for (const v of d.vcpus) {
    const k = v.guestTable;
    const u = v.guestTableUser;
    v.guestTable = 0;
    v.guestTableUser = 0;
    v.cpu.loadRoot(0);
    v.cpu.tlb.flushAll();
    if (k !== 0) putPageAndType(h, k);
    if (u !== 0) putPageAndType(h, u);
  }
  for (const v of d.vcpus) destroyGdt(h, v);
  const f = h.frames;
  for (const type of [PGT_l4_page_table, PGT_l3_page_table, PGT_l2_page_table]) {
    for (const mfn of d.pages.snapshot()) {
      if (!getPage(h, mfn, d.domid)) continue;
      if (f.flags[mfn] & F_PINNED) {
        f.flags[mfn] &= ~F_PINNED;
        putPageAndType(h, mfn);
      }
      if (f.allocated[mfn]) {
        f.allocated[mfn] = 0;
        putPage(h, mfn);
      }
      if (f.type[mfn] === type && f.flags[mfn] & F_VALIDATED) {
        f.flags[mfn] &= ~F_VALIDATED;
        devalidate(h, mfn, type);
      }
      putPage(h, mfn);
    }
  }
  // relinquish_memory(d, &d->xenpage_list): the shared frames' allocation references go. A frame
  // another domain still maps (a grant of it, a privileged foreign mapping) stays on the list,
  // and the domain stays a zombie, until that reference goes too.
  for (const mfn of d.xenPages.slice()) {
    if (f.allocated[mfn]) {
      f.allocated[mfn] = 0;
      putPage(h, mfn);
    }
  }
  d.relinquished = true;
  if (isUnreferenced(d)) finishDestroy(h, d);
}

/** A relinquished domain's last page and last shared frame are gone: it can be destroyed. */
export function isUnreferenced(d: Domain): boolean {
  return d.relinquished && d.pages.size === 0 && d.xenPages.length === 0;
}

/**
 * `domain_destroy` once nothing references the domain's pages: its grant table's shared
 * frames and its per-domain L3 are freed, and the domain is gone.
 */
export function finishDestroy(h: Host, d: Domain): void {
  const f = h.frames;
  // grant_table_destroy: every frame the grant table ever had goes back to the heap. None is
  // referenced any more: each left `xenPages` when its last reference went.
  for (const m of d.grants.frames) {
    f.flags[m] &= ~F_XEN_HEAP;
    h.freePage(m);
  }
  putPage(h, d.perdomainL3);
  h.domains.delete(d.domid);
}
