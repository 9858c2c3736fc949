import { describe, expect, it } from "vitest";
import { BumpAllocator, PageTableBuilder } from "../../src/x86/builder.js";
import { Cpu, CR0_WP, CR4_PKE, CR4_PKS, CR4_SMAP, CR4_SMEP, EFER_NXE } from "../../src/x86/cpu.js";
import { PhysicalMemory } from "../../src/x86/memory.js";
import { HI_NX, LO_A, LO_D, LO_G, LO_P, LO_PS, LO_RW, LO_US } from "../../src/x86/pte.js";
import {
  ACC_FETCH,
  ACC_IMPLICIT,
  ACC_USER,
  ACC_WRITE,
  PF_I,
  PF_P,
  PF_PK,
  PF_RSVD,
  PF_U,
  PF_W,
} from "../../src/x86/walk.js";

const VA = 0x0000_1234_5678_9000n; // indices 36, 209, 179, 393 (4-level)

/** A tree mapping VA with a 4 KiB page, every level P|RW|US; returns handles to tweak each level. */
function setup(opts: { la57?: boolean; maxPhys?: number; gbPages?: boolean } = {}) {
  const mem = new PhysicalMemory({ sizeBytes: 2 ** 36, maxPhysAddrBits: opts.maxPhys ?? 52 });
  const b = new PageTableBuilder(mem, new BumpAllocator(0x100), opts.la57 ? 5 : 4);
  b.map(VA, 0x5000_0000, 4096, { lo: LO_RW | LO_US, hi: 0 });
  const cpu = new Cpu(mem, { la57: opts.la57, gbPages: opts.gbPages });
  cpu.loadRoot(b.root * 4096);
  const levels = opts.la57 ? 5 : 4;
  /** The entry (frame, index) at a level on the way to VA. */
  const entry = (level: number) => {
    const table = level === levels ? b.root : b.tableAt(VA, level);
    const index = Number((VA >> BigInt(12 + 9 * (level - 1))) & 511n);
    const f = mem.frameForWrite(table);
    return {
      get lo() {
        return f[index * 2];
      },
      get hi() {
        return f[index * 2 + 1];
      },
      set(lo: number, hi: number) {
        f[index * 2] = lo >>> 0;
        f[index * 2 + 1] = hi >>> 0;
      },
      clear(bits: number) {
        f[index * 2] &= ~bits;
      },
      orHi(bits: number) {
        f[index * 2 + 1] |= bits;
      },
    };
  };
  const tr = (va: bigint, access = 0) => {
    cpu.tlb.flushAll();
    return cpu.translateVa(va, access);
  };
  return { mem, b, cpu, entry, tr };
}

describe("translation", () => {
  it("maps 4 KiB pages and keeps the page offset", () => {
    const { tr } = setup();
    expect(tr(VA + 0xabcn)).toMatchObject({ ok: true, paddr: 0x5000_0abc, pageSize: 4096 });
  });

  it("maps 2 MiB and 1 GiB pages with the right offset bits", () => {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 36 });
    const b = new PageTableBuilder(mem, new BumpAllocator(0x100));
    b.map(0xffff_8880_0000_0000n, 0x4000_0000, 2 ** 30, { lo: LO_RW, hi: 0 });
    b.map(0xffff_ffff_8100_0000n, 0x20_0000, 2 ** 21, { lo: 0, hi: 0 });
    const cpu = new Cpu(mem);
    cpu.loadRoot(b.root * 4096);
    expect(cpu.translateVa(0xffff_8880_3fff_fff8n)).toMatchObject({
      ok: true,
      paddr: 0x7fff_fff8,
      pageSize: 2 ** 30,
    });
    expect(cpu.translateVa(0xffff_ffff_811f_fff0n)).toMatchObject({
      ok: true,
      paddr: 0x3f_fff0,
      pageSize: 2 ** 21,
    });
  });

  it("ignores the PAT bit (12) of a large page when forming the address", () => {
    const { entry, tr } = setup();
    entry(2).set(0x4020_0000 | LO_PS | LO_P | 0x1000, 0); // 2 MiB page with PAT=1
    expect(tr(VA)).toMatchObject({ ok: true, paddr: 0x4020_0000 + Number(VA & 0x1fffffn) });
  });

  it("walks 5 levels with LA57", () => {
    const { tr } = setup({ la57: true });
    expect(tr(VA + 8n)).toMatchObject({ ok: true, paddr: 0x5000_0008 });
  });

  it("uses addresses above 4 GiB in the high half of entries", () => {
    const mem = new PhysicalMemory({ sizeBytes: 2 ** 42 });
    const b = new PageTableBuilder(mem, new BumpAllocator(2 ** 29)); // tables at 2 TiB
    b.map(0x1000n, 0x3ff_ffff_f000, 4096, { lo: 0, hi: 0 });
    const cpu = new Cpu(mem);
    cpu.loadRoot(b.root * 4096);
    expect(cpu.translateVa(0x1008n)).toMatchObject({ ok: true, paddr: 0x3ff_ffff_f008 });
  });
});

describe("canonical addresses", () => {
  it("raises #GP for non-canonical addresses, 4-level", () => {
    const { tr } = setup();
    expect(tr(0x0000_8000_0000_0000n)).toEqual({ ok: false, vector: 13, errorCode: 0, cr2: undefined });
    expect(tr(0xffff_7fff_ffff_ffffn)).toMatchObject({ ok: false, vector: 13 });
    expect(tr(0xffff_8000_0000_0000n)).toMatchObject({ ok: false, vector: 14 }); // canonical, unmapped
  });

  it("accepts 57-bit canonical addresses with LA57", () => {
    const { tr } = setup({ la57: true });
    expect(tr(0x0000_8000_0000_0000n)).toMatchObject({ ok: false, vector: 14 });
    expect(tr(0x0100_0000_0000_0000n)).toMatchObject({ ok: false, vector: 13 });
    expect(tr(0xff00_0000_0000_0000n)).toMatchObject({ ok: false, vector: 14 });
    expect(tr(0xfe00_0000_0000_0000n)).toMatchObject({ ok: false, vector: 13 });
  });
});

describe("not-present faults", () => {
  for (const level of [4, 3, 2, 1]) {
    it(`at level ${level}: P=0 in the error code, CR2 = the address`, () => {
      const { entry, tr } = setup();
      entry(level).clear(LO_P);
      expect(tr(VA + 0x10n, ACC_USER | ACC_WRITE)).toEqual({
        ok: false,
        vector: 14,
        errorCode: PF_W | PF_U,
        cr2: VA + 0x10n,
      });
    });
  }

  it("sets I/D for fetches only when NXE or SMEP is on", () => {
    const { cpu, entry, tr } = setup();
    entry(1).clear(LO_P);
    expect(tr(VA, ACC_FETCH)).toMatchObject({ errorCode: PF_I });
    cpu.writeEfer(cpu.efer & ~EFER_NXE);
    expect(tr(VA, ACC_FETCH)).toMatchObject({ errorCode: 0 });
    cpu.writeCr4(cpu.cr4 | CR4_SMEP);
    expect(tr(VA, ACC_FETCH)).toMatchObject({ errorCode: PF_I });
  });
});

describe("reserved-bit faults (P=1, RSVD=1)", () => {
  const RSVD = PF_P | PF_RSVD;

  it("address bits above MAXPHYADDR, at any level", () => {
    for (const level of [4, 3, 2, 1]) {
      const { entry, tr } = setup({ maxPhys: 40 });
      entry(level).orHi(1 << 8); // bit 40
      expect(tr(VA)).toMatchObject({ ok: false, vector: 14, errorCode: RSVD });
    }
    const { entry, tr } = setup({ maxPhys: 52 });
    entry(1).orHi(1 << 19); // bit 51 is an address bit when MAXPHYADDR = 52
    expect(tr(VA)).toMatchObject({ ok: true });
  });

  it("XD when EFER.NXE = 0", () => {
    const { cpu, entry, tr } = setup();
    entry(3).orHi(HI_NX);
    expect(tr(VA, ACC_USER)).toMatchObject({ ok: true }); // NXE=1: just no-execute
    cpu.writeEfer(cpu.efer & ~EFER_NXE);
    expect(tr(VA, ACC_USER)).toMatchObject({ errorCode: RSVD | PF_U });
  });

  it("PS in a PML4E and in a PML5E", () => {
    const a = setup();
    a.entry(4).set(a.entry(4).lo | LO_PS, a.entry(4).hi);
    expect(a.tr(VA)).toMatchObject({ errorCode: RSVD });
    const b = setup({ la57: true });
    b.entry(5).set(b.entry(5).lo | LO_PS, b.entry(5).hi);
    expect(b.tr(VA)).toMatchObject({ errorCode: RSVD });
  });

  it("misaligned address bits in 1 GiB and 2 MiB page entries; 1 GiB pages without Page1GB", () => {
    const a = setup();
    a.entry(3).set(0x4000_0000 | 0x2000 | LO_PS | LO_P, 0); // bit 13 set in a 1 GiB entry
    expect(a.tr(VA)).toMatchObject({ errorCode: RSVD });
    a.entry(3).set(0x4000_0000 | 0x1000 | LO_PS | LO_P, 0); // bit 12 is PAT: fine
    expect(a.tr(VA)).toMatchObject({ ok: true, pageSize: 2 ** 30 });
    const b = setup();
    b.entry(2).set(0x4000_0000 | 0x10_0000 | LO_PS | LO_P, 0); // bit 20 set in a 2 MiB entry
    expect(b.tr(VA, ACC_WRITE)).toMatchObject({ errorCode: RSVD | PF_W });
    const c = setup({ gbPages: false });
    c.entry(3).set(0x4000_0000 | LO_PS | LO_P, 0);
    expect(c.tr(VA)).toMatchObject({ errorCode: RSVD });
  });

  it("reports RSVD before the rights of lower levels are looked at", () => {
    const { entry, tr } = setup({ maxPhys: 40 });
    entry(4).clear(LO_US); // would be a protection fault for a user access
    entry(2).orHi(1 << 10);
    expect(tr(VA, ACC_USER)).toMatchObject({ errorCode: RSVD | PF_U });
  });
});

describe("rights across levels", () => {
  it("R/W is and'ed: a read-only upper level makes the page read-only", () => {
    for (const level of [4, 3, 2, 1]) {
      const { entry, tr } = setup();
      entry(level).clear(LO_RW);
      expect(tr(VA, ACC_USER)).toMatchObject({ ok: true });
      expect(tr(VA, ACC_USER | ACC_WRITE)).toMatchObject({ errorCode: PF_P | PF_W | PF_U });
      expect(tr(VA, ACC_WRITE)).toMatchObject({ errorCode: PF_P | PF_W }); // CR0.WP=1
    }
  });

  it("U/S is and'ed: a supervisor upper level hides the page from user mode", () => {
    for (const level of [4, 3, 2, 1]) {
      const { entry, tr } = setup();
      entry(level).clear(LO_US);
      expect(tr(VA)).toMatchObject({ ok: true });
      expect(tr(VA, ACC_USER)).toMatchObject({ errorCode: PF_P | PF_U });
    }
  });

  it("XD is or'ed: NX at any level forbids fetches", () => {
    for (const level of [4, 3, 2, 1]) {
      const { entry, tr } = setup();
      expect(tr(VA, ACC_FETCH | ACC_USER)).toMatchObject({ ok: true });
      entry(level).orHi(HI_NX);
      expect(tr(VA, ACC_FETCH | ACC_USER)).toMatchObject({ errorCode: PF_P | PF_U | PF_I });
      expect(tr(VA, ACC_FETCH)).toMatchObject({ errorCode: PF_P | PF_I });
    }
  });

  it("CR0.WP=0 lets the supervisor write read-only pages, never user mode", () => {
    const { cpu, entry, tr } = setup();
    entry(1).clear(LO_RW);
    cpu.writeCr0(cpu.cr0 & ~CR0_WP);
    expect(tr(VA, ACC_WRITE)).toMatchObject({ ok: true });
    expect(tr(VA, ACC_WRITE | ACC_USER)).toMatchObject({ errorCode: PF_P | PF_W | PF_U });
  });
});

describe("SMEP and SMAP", () => {
  it("SMEP: supervisor fetches from user pages fault", () => {
    const { cpu, tr } = setup();
    expect(tr(VA, ACC_FETCH)).toMatchObject({ ok: true });
    cpu.writeCr4(cpu.cr4 | CR4_SMEP);
    expect(tr(VA, ACC_FETCH)).toMatchObject({ errorCode: PF_P | PF_I });
    expect(tr(VA, ACC_FETCH | ACC_USER)).toMatchObject({ ok: true });
  });

  it("SMAP: supervisor data accesses to user pages fault unless RFLAGS.AC; implicit ones always", () => {
    const { cpu, tr } = setup();
    cpu.writeCr4(cpu.cr4 | CR4_SMAP);
    expect(tr(VA)).toMatchObject({ errorCode: PF_P });
    expect(tr(VA, ACC_WRITE)).toMatchObject({ errorCode: PF_P | PF_W });
    cpu.setAc(true);
    expect(tr(VA)).toMatchObject({ ok: true });
    expect(tr(VA, ACC_WRITE)).toMatchObject({ ok: true });
    expect(tr(VA, ACC_IMPLICIT)).toMatchObject({ errorCode: PF_P });
    expect(tr(VA, ACC_FETCH)).toMatchObject({ ok: true }); // SMAP does not cover fetches
  });
});

describe("protection keys", () => {
  it("PKRU: access-disable faults data accesses; write-disable faults writes (supervisor only with WP)", () => {
    const { cpu, entry, tr } = setup();
    entry(1).orHi(5 << 27); // key 5
    cpu.writeCr4(cpu.cr4 | CR4_PKE);
    cpu.setPkru(1 << 10); // AD for key 5
    expect(tr(VA, ACC_USER)).toMatchObject({ errorCode: PF_P | PF_U | PF_PK });
    expect(tr(VA, ACC_FETCH | ACC_USER)).toMatchObject({ ok: true }); // fetches ignore keys
    cpu.setPkru(1 << 11); // WD for key 5
    expect(tr(VA, ACC_USER)).toMatchObject({ ok: true });
    expect(tr(VA, ACC_USER | ACC_WRITE)).toMatchObject({ errorCode: PF_P | PF_W | PF_U | PF_PK });
    cpu.setAc(true);
    expect(tr(VA, ACC_WRITE)).toMatchObject({ errorCode: PF_P | PF_W | PF_PK });
    cpu.writeCr0(cpu.cr0 & ~CR0_WP);
    expect(tr(VA, ACC_WRITE)).toMatchObject({ ok: true });
  });

  it("PKRS applies to supervisor pages when CR4.PKS is set", () => {
    const { cpu, entry, tr } = setup();
    entry(1).clear(LO_US);
    entry(1).orHi(2 << 27);
    cpu.setPkrs(1 << 4); // AD for key 2
    expect(tr(VA)).toMatchObject({ ok: true });
    cpu.writeCr4(cpu.cr4 | CR4_PKS);
    expect(tr(VA)).toMatchObject({ errorCode: PF_P | PF_PK });
    cpu.writeCr4(cpu.cr4 | CR4_PKE); // PKRU does not cover supervisor pages
    cpu.writeCr4(cpu.cr4 & ~CR4_PKS);
    cpu.setPkru(0xffffffff);
    expect(tr(VA)).toMatchObject({ ok: true });
  });
});

describe("accessed and dirty flags", () => {
  it("a read sets A on every entry used and not D; a write also sets D on the leaf only", () => {
    const { entry, tr } = setup();
    tr(VA);
    for (const l of [4, 3, 2, 1]) expect(entry(l).lo & (LO_A | LO_D)).toBe(LO_A);
    tr(VA, ACC_WRITE);
    for (const l of [4, 3, 2]) expect(entry(l).lo & LO_D).toBe(0);
    expect(entry(1).lo & LO_D).toBe(LO_D);
  });

  it("sets D on a 2 MiB leaf", () => {
    const { entry, tr } = setup();
    entry(2).set(0x4000_0000 | LO_PS | LO_P | LO_RW, 0);
    tr(VA, ACC_WRITE);
    expect(entry(2).lo & (LO_A | LO_D)).toBe(LO_A | LO_D);
  });

  it("a faulting walk writes nothing", () => {
    const { mem, b, entry, tr } = setup();
    entry(1).clear(LO_RW);
    const before = b.tables.map((t) => Array.from(mem.frame(t)));
    expect(tr(VA, ACC_WRITE | ACC_USER)).toMatchObject({ ok: false });
    expect(b.tables.map((t) => Array.from(mem.frame(t)))).toEqual(before);
    entry(1).clear(LO_P);
    expect(tr(VA)).toMatchObject({ ok: false });
    expect(entry(4).lo & LO_A).toBe(0);
  });

  it("a write through a TLB entry cached clean walks again and sets D", () => {
    const { cpu, entry } = setup();
    cpu.translateVa(VA); // cached with D=0
    expect(entry(1).lo & LO_D).toBe(0);
    expect(cpu.translateVa(VA, ACC_WRITE)).toMatchObject({ ok: true, fromTlb: false });
    expect(entry(1).lo & LO_D).toBe(LO_D);
    expect(cpu.translateVa(VA, ACC_WRITE)).toMatchObject({ ok: true, fromTlb: true });
  });
});

describe("global pages", () => {
  it("G is reported only when CR4.PGE is set", () => {
    const { cpu, entry } = setup();
    entry(1).set(entry(1).lo | LO_G, 0);
    cpu.translateVa(VA);
    expect(cpu.tlb.entries()[0].perm & LO_G).toBe(LO_G);
  });
});
