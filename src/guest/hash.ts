/** The guest memory hash that proves a migration exact. */

import { createHash } from "node:crypto";
import { entryFrame, withFrameHi, withFrameLo } from "../x86/pte.js";
import type { Kernel } from "./kernel.js";

/**
 * A hash of the guest's memory as the guest sees it, independent of the host's frame numbers:
 * every page in use, in pfn order, with page tables normalised (each present entry's frame as
 * the guest's pfn, Xen's L4 slots left out) and the P2M list pages left out. Equal before and
 * after a migration; equal between a migrated run and one that never moved.
 */
export function guestMemoryHash(k: Kernel): string {
  const h = k.h;
  const f = h.frames;
  const hash = createHash("sha256");
  const scratch = new Uint32Array(1024);
  const listEnd = k.p2mListPfn + Math.ceil(k.pages / 512);
  for (let pfn = 0; pfn < k.pages; pfn++) {
    if (!k.alloc.used[pfn] || (pfn >= k.p2mListPfn && pfn < listEnd)) continue;
    const t = h.mem.frame(k.p2m[pfn]);
    const level = k.tableLevel[pfn];
    if (level === 0) {
      hash.update(new Uint8Array(t.buffer, t.byteOffset, 4096));
      continue;
    }
    for (let i = 0; i < 512; i++) {
      let lo = t[i * 2];
      let hi = t[i * 2 + 1];
      if (level === 4 && i >= 256 && i < 272) {
        lo = 0;
        hi = 0;
      } else if (lo & 1) {
        const m = entryFrame(lo, hi);
        const p = m < f.frames ? f.m2pLo[m] : 0xffffffff;
        lo = withFrameLo(lo, p);
        hi = withFrameHi(hi, p);
      }
      scratch[i * 2] = lo;
      scratch[i * 2 + 1] = hi;
    }
    hash.update(new Uint8Array(scratch.buffer));
  }
  return hash.digest("hex");
}
