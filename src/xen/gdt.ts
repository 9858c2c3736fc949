/**
 * `HYPERVISOR_set_gdt(frame_list, entries)` (2), for descriptor-table pages:
 * each frame of the new GDT takes a general ref and a `PGT_seg_desc_page`
 * type ref (so it can no longer be mapped writable or become a page table);
 * the old GDT's frames release theirs. At most 14 frames (7168 entries) are
 * the guest's (FIRST_RESERVED_GDT_PAGE). The model does not check the
 * descriptors themselves (Xen's `validate_segdesc_page`); it keeps the typing.
 */

import { EINVAL, PGT_seg_desc_page } from "./abi.js";
import type { Vcpu } from "./domain.js";
import type { Host } from "./host.js";
import { getPageAndType, putPageAndType } from "./mm.js";

export const FIRST_RESERVED_GDT_ENTRY = 14 * 512;
export const __HYPERVISOR_set_gdt = 2;

export function setGdt(h: Host, v: Vcpu, frames: number[], entries: number): number {
  if (!Number.isInteger(entries) || entries < 0 || entries > FIRST_RESERVED_GDT_ENTRY) return -EINVAL;
  const n = Math.ceil(entries / 512);
  if (frames.length < n) return -EINVAL;
  const taken: number[] = [];
  for (const mfn of frames.slice(0, n)) {
    if (!Number.isSafeInteger(mfn) || getPageAndType(h, mfn, v.domain.domid, PGT_seg_desc_page) !== 0) {
      for (const t of taken) putPageAndType(h, t);
      return -EINVAL;
    }
    taken.push(mfn);
  }
  destroyGdt(h, v);
  v.gdtFrames = taken;
  v.gdtEnts = entries;
  return 0;
}

export function destroyGdt(h: Host, v: Vcpu): void {
  for (const m of v.gdtFrames) putPageAndType(h, m);
  v.gdtFrames = [];
  v.gdtEnts = 0;
}
