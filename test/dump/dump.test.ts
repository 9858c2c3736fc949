/**
 * The three dump views over a small hand-made image whose expected output was
 * worked out by hand from QEMU's target/i386/monitor.c rules.
 */

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { MemoryImage } from "../../src/dump/image.js";
import { writeElfImage, writeRawImage } from "../../src/dump/synth.js";
import { infoMem, infoTlb } from "../../src/dump/views.js";
import { PhysicalMemory } from "../../src/x86/memory.js";

/** Writes the 64-bit entry `v` at physical address `pa`. */
function put(mem: PhysicalMemory, pa: number, v: bigint): void {
  mem.write64(pa, v);
}

/** The hand-made tables: CR3 = 0x1000 (4-level) and CR3 = 0x7000 (5-level, PML5[0] and [511] -> same PML4). */
function handImage(): PhysicalMemory {
  const mem = new PhysicalMemory({ sizeBytes: 0x20_0000 });
  // PML4 @ 0x1000
  put(mem, 0x1000 + 0 * 8, 0x2007n);
  put(mem, 0x1000 + 511 * 8, 0x5003n);
  // PDPT @ 0x2000
  put(mem, 0x2000 + 0 * 8, 0x3007n);
  put(mem, 0x2000 + 1 * 8, 0x4000_11a7n); // 1 GiB page, PAT (bit 12), G, A, U, W
  // PD @ 0x3000
  put(mem, 0x3000 + 0 * 8, 0x4007n);
  put(mem, 0x3000 + 1 * 8, 0x8000_0000_0020_00e3n); // 2 MiB page, NX, D, A, W
  // PT @ 0x4000
  put(mem, 0x4000 + 0 * 8, 0x1_0027n); // user RW, A
  put(mem, 0x4000 + 1 * 8, 0x8000_0000_0001_1179n); // NX G D A PCD PWT, supervisor read-only
  put(mem, 0x4000 + 2 * 8, 0x1_2081n); // PAT (bit 7 of a PTE) — QEMU never shows it as 'P'
  put(mem, 0x4000 + 3 * 8, 0x1_3006n); // not present
  put(mem, 0x4000 + 4 * 8, 0x0000_0123_4567_8003n); // frame above 4 GiB
  // PDPT @ 0x5000
  put(mem, 0x5000 + 510 * 8, 0x6003n);
  // PD @ 0x6000
  put(mem, 0x6000 + 8 * 8, 0x100_01a1n); // ffffffff81000000: 2 MiB, G, A, read-only, executable
  put(mem, 0x6000 + 9 * 8, 0x8000_0000_0120_01e3n); // ffffffff81200000: 2 MiB, G, D, A, W, NX
  // PML5 @ 0x7000
  put(mem, 0x7000 + 0 * 8, 0x1007n);
  put(mem, 0x7000 + 511 * 8, 0x1007n);
  return mem;
}

const TLB4 = `0000000000000000: 0000000000010000 ----A--UW
0000000000001000: 0000000000011000 XG-DACT--
0000000000002000: 0000000000012000 ---------
0000000000004000: 0000012345678000 --------W
0000000000200000: 0000000000200000 X-PDA---W
0000000040000000: 0000000040000000 -GP-A--UW
ffffffff81000000: 0000000001000000 -GP-A----
ffffffff81200000: 0000000001200000 XGPDA---W
`;

const TLB5 = `0000000000000000: 0000000000010000 ----A--UW
0000000000001000: 0000000000011000 XG-DACT--
0000000000002000: 0000000000012000 ---------
0000000000004000: 0000012345678000 --------W
0000000000200000: 0000000000200000 X-PDA---W
0000000040000000: 0000000040000000 -GP-A--UW
0000ffff81000000: 0000000001000000 -GP-A----
0000ffff81200000: 0000000001200000 XGPDA---W
ffff000000000000: 0000000000010000 ----A--UW
ffff000000001000: 0000000000011000 XG-DACT--
ffff000000002000: 0000000000012000 ---------
ffff000000004000: 0000012345678000 --------W
ffff000000200000: 0000000000200000 X-PDA---W
ffff000040000000: 0000000040000000 -GP-A--UW
ffffffff81000000: 0000000001000000 -GP-A----
ffffffff81200000: 0000000001200000 XGPDA---W
`;

const MEM4 = `0000000000000000-0000000000001000 0000000000001000 urw
0000000000001000-0000000000003000 0000000000002000 -r-
0000000000004000-0000000000005000 0000000000001000 -rw
0000000000200000-0000000000400000 0000000000200000 -rw
0000000040000000-0000000080000000 0000000040000000 urw
ffffffff81000000-ffffffff81200000 0000000000200000 -r-
ffffffff81200000-ffffffff81400000 0000000000200000 -rw
`;

const WALK_OK = `walk of ffffffff81200010 (4-level paging, supervisor read)
  PML4E [511] @ 0000000000001ff8 = 0000000000005003  P RW S
  PDPTE [510] @ 0000000000005ff0 = 0000000000006003  P RW S
  PDE   [  9] @ 0000000000006048 = 80000000012001e3  P RW S A D PS G NX
  -> 0000000001200010 (2 MiB page; supervisor, writable, no-execute)
`;

const WALK_FAULT = `walk of 0000000000001008 (4-level paging, user read)
  PML4E [  0] @ 0000000000001000 = 0000000000002007  P RW US
  PDPTE [  0] @ 0000000000002000 = 0000000000003007  P RW US
  PDE   [  0] @ 0000000000003000 = 0000000000004007  P RW US
  PTE   [  1] @ 0000000000004008 = 8000000000011179  P RO S PWT PCD A D G NX
  -> #PF error code 0x5 [P (protection violation), R (read), U (user mode)], CR2=0000000000001008
`;

let dir = "";
let raw = "";
let elf = "";

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "pvmmu-dump-test-"));
  const mem = handImage();
  raw = join(dir, "hand.raw");
  elf = join(dir, "hand.elf");
  writeRawImage(mem, raw);
  // Two segments with a gap: [0, 0x5000) and [0x5000, 0x20_0000) as separate PT_LOADs.
  writeElfImage(mem, elf, [
    { start: 0, size: 0x5000 },
    { start: 0x5000, size: 0x20_0000 - 0x5000 },
  ]);
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

describe("dump views on a hand-made image", () => {
  it("info tlb, 4-level, byte for byte", () => {
    expect(infoTlb(handImage(), 1, 4)).toBe(TLB4);
  });

  it("info tlb, 5-level: canonical addresses sign-extend from bit 56", () => {
    expect(infoTlb(handImage(), 7, 5)).toBe(TLB5);
  });

  it("info mem, 4-level, byte for byte", () => {
    expect(infoMem(handImage(), 1, 4)).toBe(MEM4);
  });

  it("info mem closes a range that runs to the top of the address space as QEMU does", () => {
    const mem = new PhysicalMemory({ sizeBytes: 0x10_0000 });
    put(mem, 0x1000 + 511 * 8, 0x2003n);
    put(mem, 0x2000 + 511 * 8, 0x3003n);
    put(mem, 0x3000 + 511 * 8, 0x4003n);
    put(mem, 0x4000 + 511 * 8, 0x5003n);
    expect(infoMem(mem, 1, 4)).toBe("fffffffffffff000-0001000000000000 0000000000001000 -rw\n");
  });

  for (const [name, file] of [
    ["raw", () => raw],
    ["ELF core", () => elf],
  ] as const) {
    it(`CLI dump tlb/mem/walk on a ${name} image`, async () => {
      expect(await run(["dump", "tlb", "--image", file(), "--cr3", "0x1000"])).toEqual({
        code: 0,
        out: TLB4,
        err: "",
      });
      expect(await run(["dump", "tlb", "--image", file(), "--cr3", "7000", "--la57"])).toMatchObject({
        out: TLB5,
      });
      expect(await run(["dump", "mem", "--image", file(), "--cr3", "0x1000"])).toMatchObject({
        code: 0,
        out: MEM4,
      });
      expect(
        await run(["dump", "walk", "--image", file(), "--cr3", "0x1000", "ffffffff81200010"]),
      ).toMatchObject({
        code: 0,
        out: WALK_OK,
      });
      expect(
        await run(["dump", "walk", "--image", file(), "--cr3", "0x1000", "--user", "0x1008"]),
      ).toMatchObject({ code: 0, out: WALK_FAULT });
    });
  }

  it("--json gives the same information", async () => {
    const t = await run(["dump", "tlb", "--image", raw, "--cr3", "0x1000", "--json"]);
    const tj = JSON.parse(t.out);
    expect(
      tj.mappings
        .map((m: { va: string; pa: string; flags: string }) => `${m.va}: ${m.pa} ${m.flags}\n`)
        .join(""),
    ).toBe(TLB4);
    expect(tj.mappings[5]).toMatchObject({ pageSize: 2 ** 30, level: 3, entry: "00000000400011a7" });
    const m = JSON.parse((await run(["dump", "mem", "--image", raw, "--cr3", "0x1000", "--json"])).out);
    expect(m.ranges[0]).toEqual({
      start: "0000000000000000",
      end: "0000000000001000",
      size: "0000000000001000",
      user: true,
      write: true,
    });
    const w = JSON.parse(
      (await run(["dump", "walk", "--image", raw, "--cr3", "0x1000", "--user", "0x1008", "--json"])).out,
    );
    expect(w).toMatchObject({ ok: false, fault: "#PF", errorCode: 5 });
    expect(w.steps).toHaveLength(4);
    expect(w.steps[3]).toMatchObject({
      level: 1,
      index: 1,
      entryAddress: "0000000000004008",
      entry: "8000000000011179",
    });
  });

  it("gva2gpa: QEMU's line per address (rights not checked), consecutive pages with --pages, and JSON", async () => {
    const r = await run([
      "dump",
      "gva2gpa",
      "--image",
      elf,
      "--cr3",
      "0x1000",
      "0x200010",
      "40000123",
      "ffffffff81000abc",
      "0x0000800000000000",
    ]);
    expect(r).toEqual({
      code: 0,
      out:
        "0000000000200010 gpa: 0x200010\n" + // 2 MiB page
        "0000000040000123 gpa: 0x40000123\n" + // 1 GiB page
        "ffffffff81000abc gpa: 0x1000abc\n" +
        "0000800000000000 Unmapped\n", // not canonical
      err: "",
    });
    const p = await run(["dump", "gva2gpa", "--image", raw, "--cr3", "0x1000", "--pages", "5", "0x8"]);
    expect(p.out).toBe(
      "0000000000000008 gpa: 0x10008\n" +
        "0000000000001008 gpa: 0x11008\n" + // supervisor read-only, NX: mapped all the same
        "0000000000002008 gpa: 0x12008\n" + // PAT set in a PTE: still a 4 KiB page
        "0000000000003008 Unmapped\n" + // not present
        "0000000000004008 gpa: 0x12345678008\n",
    );
    const j = JSON.parse(
      (await run(["dump", "gva2gpa", "--image", raw, "--cr3", "0x1000", "--json", "--pages", "2", "0x2000"]))
        .out,
    );
    expect(j).toMatchObject({ cr3: "0x1000", levels: 4, format: "raw" });
    expect(j.translations).toEqual([
      { va: "0000000000002000", gpa: "0x12000" },
      { va: "0000000000003000", gpa: null },
    ]);
    // 5-level: PML5[511] leads to the same PML4, so the kernel half translates the same.
    const five = await run([
      "dump",
      "gva2gpa",
      "--image",
      raw,
      "--cr3",
      "0x7000",
      "--la57",
      "ffff000000000008",
    ]);
    expect(five.out).toBe("ffff000000000008 gpa: 0x10008\n");
  });

  it("reads an ELF image's uncovered ranges and a raw image's tail as zeros", () => {
    const img = MemoryImage.open(elf);
    expect(img.segments).toHaveLength(2);
    const mem = img.memory();
    expect(mem.read64(0x4000)).toBe(0x1_0027n);
    expect(mem.read64(0x5ff0)).toBe(0x6003n);
    expect(mem.read64(0x30_0000)).toBe(0n);
    img.close();
  });
});

describe("dump errors: clear message, exit code 2, nothing on stdout", () => {
  const cases: [string, () => string[], RegExp][] = [
    [
      "missing file",
      () => ["dump", "tlb", "--image", join(dir, "nope"), "--cr3", "0x1000"],
      /cannot open image .*ENOENT/,
    ],
    ["unaligned CR3", () => ["dump", "tlb", "--image", raw, "--cr3", "0x1010"], /not 4 KiB aligned/],
    [
      "CR3 not a number",
      () => ["dump", "mem", "--image", raw, "--cr3", "xyz"],
      /CR3 'xyz' is not a hexadecimal number/,
    ],
    [
      "CR3 outside the image",
      () => ["dump", "tlb", "--image", raw, "--cr3", "0x40000000"],
      /outside the image/,
    ],
    ["bad VA", () => ["dump", "walk", "--image", raw, "--cr3", "0x1000", "0xg"], /linear address '0xg'/],
    [
      "VA over 64 bits",
      () => ["dump", "walk", "--image", raw, "--cr3", "0x1000", "0x1ffffffffffffffff"],
      /64 bits/,
    ],
    [
      "non-canonical VA",
      () => ["dump", "walk", "--image", raw, "--cr3", "0x1000", "0x0000800000000000"],
      /not canonical for 4-level paging/,
    ],
    ["missing --cr3", () => ["dump", "tlb", "--image", raw], /required option '--cr3/],
    [
      "gva2gpa --pages not a count",
      () => ["dump", "gva2gpa", "--image", raw, "--cr3", "0x1000", "--pages", "0", "0x1000"],
      /--pages must be a whole number from 1 to 1048576, got '0'/,
    ],
    [
      "gva2gpa over a million translations",
      () => ["dump", "gva2gpa", "--image", raw, "--cr3", "0x1000", "--pages", "1048576", "0", "0x1000"],
      /2 addresses of 1048576 pages are over 1048576 translations/,
    ],
    [
      "gva2gpa without an address",
      () => ["dump", "gva2gpa", "--image", raw, "--cr3", "0x1000"],
      /missing required argument 'va'/,
    ],
    [
      "unknown flag",
      () => ["dump", "tlb", "--image", raw, "--cr3", "0", "--bogus"],
      /unknown option '--bogus'/,
    ],
    [
      "bad --format",
      () => ["dump", "tlb", "--image", raw, "--cr3", "0x1000", "--format", "qcow2"],
      /Allowed choices/,
    ],
    [
      "raw file forced as ELF",
      () => ["dump", "tlb", "--image", raw, "--cr3", "0x1000", "--format", "elf"],
      /not an ELF/,
    ],
  ];
  for (const [what, args, message] of cases) {
    it(what, async () => {
      const r = await run(args());
      expect(r.code).toBe(2);
      expect(r.err).toMatch(message);
      expect(r.out).toBe("");
    });
  }

  it("malformed ELF files", async () => {
    const bad = join(dir, "bad.elf");
    const hdr = Buffer.alloc(64);
    hdr.writeUInt32BE(0x7f454c46, 0);
    hdr[4] = 2;
    hdr[5] = 1;
    hdr.writeUInt16LE(4, 16);
    hdr.writeBigUInt64LE(64n, 32);
    hdr.writeUInt16LE(56, 54);
    hdr.writeUInt16LE(3, 56); // three program headers that are not there
    writeFileSync(bad, hdr);
    let r = await run(["dump", "tlb", "--image", bad, "--cr3", "0"]);
    expect(r).toMatchObject({ code: 2, out: "" });
    expect(r.err).toMatch(/not a usable ELF core: truncated/);
    hdr.writeUInt16LE(2, 16); // ET_EXEC
    writeFileSync(bad, hdr);
    r = await run(["dump", "tlb", "--image", bad, "--cr3", "0"]);
    expect(r.err).toMatch(/not ET_CORE/);
    writeFileSync(join(dir, "empty"), "");
    r = await run(["dump", "tlb", "--image", join(dir, "empty"), "--cr3", "0"]);
    expect(r.err).toMatch(/is empty/);
  });

  it("--help exits 0", async () => {
    const r = await run(["dump", "tlb", "--help"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/QEMU's `info tlb`/);
  });
});

describe("the pvmmu command", () => {
  const bin = join(__dirname, "..", "..", "bin", "pvmmu.js");
  const built = existsSync(join(__dirname, "..", "..", "dist", "src", "cli", "main.js"));
  it.runIf(built)("runs from bin/ with the exit codes documented", () => {
    const help = spawnSync(process.execPath, [bin, "--help"], { encoding: "utf8" });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/Usage: pvmmu/);
    const bad = spawnSync(process.execPath, [bin, "dump", "mem", "--image", "/nonexistent", "--cr3", "0"], {
      encoding: "utf8",
    });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/cannot open image/);
  });
});
