import { describe, expect, it } from "vitest";
import { Process } from "../../src/guest/process.js";
import {
  XEN_DOMCTL_SHADOW_OP_CLEAN,
  XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
  XEN_DOMCTL_SHADOW_OP_OFF,
  XEN_DOMCTL_SHADOW_OP_PEEK,
} from "../../src/xen/logdirty.js";
import { bootedGuest } from "../helpers/fixtures.js";

function guest() {
  return bootedGuest("direct-pfn");
}

describe("log-dirty mode (XEN_DOMCTL_shadow_op)", () => {
  it("logs guest stores, page-table updates by hypercall and A/D writes; CLEAN resets, PEEK does not", () => {
    const { h, kernel: k } = guest();
    expect(h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_CLEAN).rc).toBe(-22); // not enabled: -EINVAL
    expect(h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY).rc).toBe(0);
    expect(h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY).rc).toBe(-22); // already on
    expect(h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_CLEAN).dirty).toEqual([]);
    const p = new Process(k);
    p.switchTo();
    const va = p.mmap(4096);
    p.touch(va, true); // a fault: a zeroed page, an entry by mmu_update, a user store
    const [l1pfn, pagePfn] = k.op("look", () => {
      k.walkToL1(p.as, va, false);
      const t = k.readPage(k.wVa);
      const i = (va / 4096) % 512;
      return [k.pfnOf(k.wMfn), k.pfnOf((t[i * 2 + 1] & 0xfffff) * 2 ** 20 + (t[i * 2] >>> 12))];
    });
    h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_PEEK); // (the look itself writes nothing)
    const peek = h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_PEEK).dirty!;
    expect(peek).toContain(pagePfn);
    expect(peek).toContain(l1pfn);
    const clean = h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_CLEAN);
    expect(clean.dirty).toEqual(peek); // PEEK left the bitmap as it was
    expect(h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_CLEAN).dirty).toEqual([]); // CLEAN reset it
    // A store into a page that is already mapped: that page (and at most its L1, if the walk
    // that refilled the TLB set an accessed bit).
    p.touch(va, true);
    const again = h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_CLEAN).dirty!;
    expect(again).toContain(pagePfn);
    expect(again.every((x) => x === pagePfn || x === l1pfn)).toBe(true);
    // Another domain's writes are not this domain's business.
    h.createDomain({ domid: 3, pages: 4 });
    h.mem.frameForWrite(h.domain(3)!.p2m[0])[0] = 1;
    expect(h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_CLEAN).dirty).toEqual([]);
    expect(h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_OFF).rc).toBe(0);
    expect(h.mem.tracking).toBe(false);
    p.touch(va, true);
    expect(h.shadowOp(1, XEN_DOMCTL_SHADOW_OP_CLEAN).rc).toBe(-22);
  });
});
