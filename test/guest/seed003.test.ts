/**
 * Seed 003: a process maps another domain's granted page into its page table;
 * at exit its tables are unpinned early. Without a design, Xen releases the
 * grant PTE implicitly and the grant stays pinned: the granter can never
 * revoke it until the mapper dies. With either design nothing is left behind.
 */

import { describe, expect, it } from "vitest";
import { type GrantTeardown, GuestError, GuestKernel, Process } from "../../src/guest/grant-teardown.js";
import { Host } from "../../src/xen/host.js";

function world(design: GrantTeardown) {
  const h = new Host({ memoryMiB: 64 });
  h.createDomain({ domid: 1, pages: 64 }); // the mapper (e.g. a backend using gntdev)
  const granter = h.createDomain({ domid: 2, pages: 16 });
  for (const ref of [8, 9, 10]) h.grantWrite(2, ref, { to: 1, frame: granter.p2m[ref] });
  const k = new GuestKernel(h, 1);
  const p = new Process(k, design);
  const data = k.allocFrame();
  p.mapPage(0x400000n, data);
  p.activate();
  p.mapGrant(0x7f0000000000n, 2, 8);
  p.mapGrant(0x7f0000001000n, 2, 9);
  p.mapGrant(0x7f0000200000n, 2, 10, true); // in another L1
  return { h, k, p, granter };
}

const pins = (h: Host) => [8, 9, 10].map((ref) => h.grantState(2, ref)!);

describe("seed 003: grant mappings in a process's page tables", () => {
  it("the grants are live while the process runs: GTF_reading/writing set, pins held, PTEs usable", () => {
    const { h, granter } = world("tracked");
    expect(pins(h).map((g) => g.flags)).toEqual([0x19, 0x19, 0x9]);
    expect(h.access(1, 0, 0x7f0000000008n, "write", false, 7n)).toEqual({ fault: false });
    expect(h.mem.read64(granter.p2m[8] * 4096 + 8)).toBe(7n);
    expect(h.audit().problems).toEqual([]);
  });

  it("without a design, the early unpin releases the grant PTEs implicitly and the grants stay pinned", () => {
    const { h, p } = world("none");
    p.exit();
    expect(pins(h).map((g) => g.pin)).toEqual([1, 1, 0x100]); // still pinned
    expect(pins(h).map((g) => g.flags)).toEqual([0x19, 0x19, 0x9]);
    expect(h.grantWrite(2, 8, "revoke")).toBe(false); // the granter cannot reclaim its page
    expect(h.audit().problems).toEqual([]); // consistent, just stuck
    h.destroyDomain(1); // only the mapper's death releases them
    expect(pins(h).map((g) => [g.pin, g.flags])).toEqual([
      [0, 1],
      [0, 1],
      [0, 1],
    ]);
    expect(h.grantWrite(2, 8, "revoke")).toBe(true);
  });

  for (const design of ["tracked", "skip-early-unpin"] as const) {
    it(`${design}: after exit the granter's entries are idle, every pin is zero, the auditor is clean`, () => {
      const { h, p, granter } = world(design);
      p.unmapGrant(0x7f0000001000n); // a normal unmap uses the same record
      expect(h.grantState(2, 9)).toMatchObject({ pin: 0, flags: 1 });
      p.exit();
      expect(pins(h).map((g) => [g.pin, g.flags])).toEqual([
        [0, 1],
        [0, 1],
        [0, 1],
      ]);
      for (const ref of [8, 9, 10]) expect(h.grantWrite(2, ref, "revoke")).toBe(true);
      expect(h.frames.count[granter.p2m[8]]).toBe(1);
      expect(h.frames.typeCount[granter.p2m[8]]).toBe(0);
      expect(h.audit().problems).toEqual([]);
      expect(h.domain(1)!.injectedGp).toBe(0);
    });
  }

  it("a debug build injects #GP(0) for each implicit unmap of the naive design", () => {
    const h = new Host({ memoryMiB: 64, debugBuild: true });
    h.createDomain({ domid: 1, pages: 64 });
    const g = h.createDomain({ domid: 2, pages: 16 });
    h.grantWrite(2, 8, { to: 1, frame: g.p2m[8] });
    const k = new GuestKernel(h, 1);
    const p = new Process(k, "none");
    p.mapPage(0x400000n, k.allocFrame());
    p.activate();
    p.mapGrant(0x7f0000000000n, 2, 8);
    p.exit();
    expect(h.domain(1)!.injectedGp).toBe(1);
  });

  it("grant PTEs can only go into pinned page tables", () => {
    const h = new Host({ memoryMiB: 64 });
    h.createDomain({ domid: 1, pages: 32 });
    const p = new Process(new GuestKernel(h, 1), "tracked");
    expect(() => p.mapGrant(0x1000n, 2, 8)).toThrow(GuestError);
  });
});
