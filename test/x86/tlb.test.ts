import { describe, expect, it } from "vitest";
import { BumpAllocator, PageTableBuilder } from "../../src/x86/builder.js";
import { Cpu, CR4_PCIDE, CR4_PGE } from "../../src/x86/cpu.js";
import { PhysicalMemory } from "../../src/x86/memory.js";
import { LO_D, LO_G, LO_P, LO_RW, LO_US } from "../../src/x86/pte.js";
import { ACC_USER, ACC_WRITE, PF_P, PF_U, PF_W } from "../../src/x86/walk.js";

const USER = 0x4000_0000n;
const KERN = 0xffff_ffff_8100_0000n;

function setup(tlb?: { entries4k?: number }) {
  const mem = new PhysicalMemory({ sizeBytes: 2 ** 34 });
  const alloc = new BumpAllocator(0x100);
  const a = new PageTableBuilder(mem, alloc);
  a.map(USER, 0x10_0000, 4096, { lo: LO_RW | LO_US, hi: 0 });
  a.map(KERN, 0x20_0000, 2 ** 21, { lo: LO_RW | LO_G, hi: 0 });
  const cpu = new Cpu(mem, { tlb });
  cpu.loadRoot(a.root * 4096);
  const l1 = a.tableAt(USER, 1);
  const setPte = (pa: number, flags: number) => {
    const f = mem.frameForWrite(l1);
    f[0] = (pa | flags) >>> 0;
    f[1] = 0;
  };
  return { mem, alloc, a, cpu, setPte };
}

const pa = (cpu: Cpu, va: bigint, access = 0) => {
  const r = cpu.translateVa(va, access);
  return r.ok ? r.paddr : `fault ${r.errorCode}`;
};

describe("TLB", () => {
  it("hits after a miss, with the same result", () => {
    const { cpu } = setup();
    expect(cpu.translateVa(USER)).toMatchObject({ ok: true, fromTlb: false });
    expect(cpu.translateVa(USER + 0x10n)).toMatchObject({ ok: true, paddr: 0x10_0010, fromTlb: true });
    expect(cpu.tlb.hits).toBe(1);
  });

  it("keeps a stale translation after a PTE change until INVLPG", () => {
    const { cpu, setPte } = setup();
    expect(pa(cpu, USER)).toBe(0x10_0000);
    setPte(0x30_0000, LO_P | LO_RW | LO_US);
    expect(pa(cpu, USER)).toBe(0x10_0000); // stale, as on hardware
    cpu.invlpg(USER);
    expect(pa(cpu, USER)).toBe(0x30_0000);
  });

  it("keeps using a translation whose PTE was cleared, until flushed", () => {
    const { cpu, setPte } = setup();
    pa(cpu, USER);
    setPte(0, 0);
    expect(pa(cpu, USER)).toBe(0x10_0000);
    cpu.loadRoot(Number(cpu.cr3));
    expect(pa(cpu, USER)).toBe("fault 0");
  });

  it("INVLPG drops the large-page entry covering the address", () => {
    const { cpu } = setup();
    pa(cpu, KERN + 0x1234n);
    expect(cpu.tlb.size).toBe(1);
    cpu.invlpg(KERN + 0x10_0000n); // another 4 KiB page inside the same 2 MiB page
    expect(cpu.tlb.size).toBe(0);
  });

  it("a CR3 load flushes non-global entries; global ones survive while CR4.PGE=1", () => {
    const { cpu } = setup();
    pa(cpu, USER);
    pa(cpu, KERN);
    expect(cpu.tlb.size).toBe(2);
    cpu.loadRoot(Number(cpu.cr3));
    expect(cpu.tlb.entries().map((e) => e.va)).toEqual([KERN]);
    cpu.writeCr4(cpu.cr4 & ~CR4_PGE); // toggling PGE flushes everything
    expect(cpu.tlb.size).toBe(0);
    pa(cpu, KERN);
    cpu.loadRoot(Number(cpu.cr3));
    expect(cpu.tlb.size).toBe(0); // without PGE, G is not honoured
  });

  it("a permission fault through a stale entry is spurious and drops the entry", () => {
    const { cpu, setPte } = setup();
    setPte(0x10_0000, LO_P | LO_US | LO_D); // read-only (dirty from an earlier life)
    pa(cpu, USER, ACC_USER);
    setPte(0x10_0000, LO_P | LO_US | LO_RW); // made writable without a flush
    expect(pa(cpu, USER, ACC_USER | ACC_WRITE)).toBe(`fault ${PF_P | PF_W | PF_U}`);
    expect(pa(cpu, USER, ACC_USER | ACC_WRITE)).toBe(0x10_0000); // the fault invalidated it
  });

  it("tags entries by PCID: switching with the no-flush bit keeps them", () => {
    const { mem, alloc, a, cpu, setPte } = setup();
    const b = new PageTableBuilder(mem, alloc);
    b.map(USER, 0x50_0000, 4096, { lo: LO_RW | LO_US, hi: 0 });
    cpu.loadRoot(a.root * 4096);
    cpu.writeCr4(cpu.cr4 | CR4_PCIDE);
    cpu.loadRoot(a.root * 4096, 1);
    expect(pa(cpu, USER)).toBe(0x10_0000);
    cpu.loadRoot(b.root * 4096, 2);
    expect(pa(cpu, USER)).toBe(0x50_0000); // PCID 2 does not see PCID 1's entry
    setPte(0x70_0000, LO_P | LO_RW | LO_US); // change A's PTE while A is not current
    cpu.loadRoot(a.root * 4096, 1, true); // back to PCID 1 without flushing
    expect(pa(cpu, USER)).toBe(0x10_0000); // stale entry of PCID 1 still there
    cpu.loadRoot(a.root * 4096, 1); // reload with flush
    expect(pa(cpu, USER)).toBe(0x70_0000);
  });

  it("INVPCID: individual address, single context, all, all but global", () => {
    const { cpu } = setup();
    cpu.writeCr4(cpu.cr4 | CR4_PCIDE);
    cpu.loadRoot(Number(cpu.cr3 & ~0xfffn), 3);
    pa(cpu, USER);
    pa(cpu, KERN);
    cpu.invpcid(0, 4, USER);
    expect(cpu.tlb.size).toBe(2); // other PCID: nothing
    cpu.invpcid(0, 3, USER);
    expect(cpu.tlb.size).toBe(1);
    pa(cpu, USER);
    cpu.invpcid(1, 3);
    expect(cpu.tlb.entries().map((e) => e.va)).toEqual([KERN]);
    pa(cpu, USER);
    cpu.invpcid(3, 0);
    expect(cpu.tlb.entries().map((e) => e.va)).toEqual([KERN]);
    cpu.invpcid(2, 0);
    expect(cpu.tlb.size).toBe(0);
  });

  it("global entries match in every PCID", () => {
    const { cpu } = setup();
    cpu.writeCr4(cpu.cr4 | CR4_PCIDE);
    cpu.loadRoot(Number(cpu.cr3 & ~0xfffn), 1);
    pa(cpu, KERN);
    cpu.loadRoot(Number(cpu.cr3 & ~0xfffn), 2);
    expect(cpu.translateVa(KERN)).toMatchObject({ ok: true, fromTlb: true });
  });

  it("has finite capacity: a colliding translation evicts", () => {
    const { cpu, a } = setup({ entries4k: 1 });
    a.map(USER + 0x1000n, 0x11_0000, 4096, { lo: LO_US, hi: 0 });
    pa(cpu, USER);
    pa(cpu, USER + 0x1000n);
    expect(cpu.translateVa(USER)).toMatchObject({ fromTlb: false });
  });

  it("CR3 writes with reserved bits raise #GP", () => {
    const { cpu } = setup();
    expect(() => cpu.writeCr3(1n << 63n)).toThrow(/#GP/);
  });
});
