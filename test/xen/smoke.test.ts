import { describe, expect, it } from "vitest";
import { DOMID_SELF, EBUSY, EINVAL, MMUEXT } from "../../src/xen/abi.js";
import { Host } from "../../src/xen/host.js";

const pte = (mfn: number, flags: number) => (BigInt(mfn) << 12n) | BigInt(flags);

describe("hypervisor smoke", () => {
  it("builds, pins, switches to, uses, updates and destroys a guest's page tables", () => {
    const h = new Host({ memoryMiB: 64 });
    const d = h.createDomain({ domid: 1, pages: 32 });
    const [l4, l3, l2, l1, data, data2] = [0, 1, 2, 3, 4, 5].map((pfn) => d.p2m[pfn]);
    // The guest writes its tables while they are ordinary frames.
    expect(h.poke(1, l4, 0, pte(l3, 0x7))).toBe(true);
    expect(h.poke(1, l3, 0, pte(l2, 0x7))).toBe(true);
    expect(h.poke(1, l2, 0, pte(l1, 0x7))).toBe(true);
    expect(h.poke(1, l1, 0, pte(data, 0x7))).toBe(true); // va 0: data, RW
    expect(h.poke(1, l1, 1, pte(l1, 0x5))).toBe(true); // va 0x1000: the L1 itself, read-only
    expect(h.mmuextOp(1, [{ cmd: MMUEXT.MMUEXT_PIN_L4_TABLE, arg1: BigInt(l4) }])).toEqual({
      rc: 0,
      done: 1,
    });
    expect(h.frames.typeCount[l1]).toBe(1);
    expect(h.frames.typeCount[data]).toBe(1); // writable
    expect(h.poke(1, l1, 2, 0n)).toBe(false); // a validated table cannot be written directly
    expect(h.mmuextOp(1, [{ cmd: MMUEXT.MMUEXT_NEW_BASEPTR, arg1: BigInt(l4) }])).toEqual({ rc: 0, done: 1 });
    expect(h.access(1, 0, 0x10n, "write", false, 42n)).toEqual({ fault: false });
    expect(h.access(1, 0, 0x10n, "read")).toEqual({ fault: false, value: 42n });
    const cpu0 = h.vcpuMemory(1, 0);
    expect(cpu0.write(0x18n, 7n)).toEqual({ fault: false });
    expect(cpu0.read(0x18n)).toEqual({ fault: false, value: 7n });
    expect(cpu0.fetch(0x18n)).toEqual({ fault: false, value: 7n });
    expect(cpu0.read(0x18n, true)).toMatchObject({ fault: true, vector: 14, errorCode: 0x4 }); // no user L4
    // Mapping the L1 itself writable is refused; read-only is fine.
    expect(h.mmuUpdate(1, [{ ptr: BigInt(l1 * 4096 + 16), val: pte(l1, 0x7) }])).toEqual({
      rc: -EBUSY,
      done: 0,
    });
    expect(h.mmuUpdate(1, [{ ptr: BigInt(l1 * 4096 + 16), val: pte(data2, 0x7) }], DOMID_SELF)).toEqual({
      rc: 0,
      done: 1,
    });
    expect(h.mmuextOp(1, [{ cmd: MMUEXT.MMUEXT_PIN_L2_TABLE, arg1: BigInt(data) }])).toEqual({
      rc: -EINVAL,
      done: 0,
    });
    expect(h.audit()).toMatchObject({ ok: true });
    const owned = d.pages.snapshot();
    expect(h.destroyDomain(1)).toBe(0);
    expect(h.checkFree(owned)).toEqual([]);
    expect(h.audit()).toMatchObject({ ok: true });
  });
});
