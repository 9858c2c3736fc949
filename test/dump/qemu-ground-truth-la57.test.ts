/** Ground truth, 5-level paging: a real Linux 6.1 (LA57) and QEMU's `info tlb` (test/fixtures/qemu-linux61-la57). */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { MemoryImage } from "../../src/dump/image.js";
import { memRanges, walkView } from "../../src/dump/views.js";

const FIX = join(__dirname, "..", "fixtures", "qemu-linux61-la57");
const unzip = (name: string) => gunzipSync(readFileSync(join(FIX, name)));
let dir = "";
let image = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "pvmmu-gt57-"));
  image = join(dir, "tables.elf");
  writeFileSync(image, unzip("tables.elf.gz"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("against QEMU on a real Linux kernel's 5-level page tables", () => {
  it("the registers say LA57 with this CR3", () => {
    const regs = readFileSync(join(FIX, "registers.txt"), "utf8");
    expect(regs).toMatch(/CR3=000000000563e000/);
    expect(Number.parseInt(/CR4=([0-9a-f]+)/.exec(regs)![1], 16) & (1 << 12)).toBe(1 << 12);
  });

  it("dump tlb --la57 prints exactly what `info tlb` printed", async () => {
    let out = "";
    const code = await main(["dump", "tlb", "--image", image, "--cr3", "0x563e000", "--la57"], {
      out: (s) => (out += s),
      err: () => {},
    });
    expect(code).toBe(0);
    expect(out).toBe(unzip("qemu-tlb.txt.gz").toString("utf8"));
  });

  it("every leaf translates through the model's walker, and lies in a dump mem range with its rights", () => {
    const img = MemoryImage.open(image);
    const mem = img.memory();
    const lines = unzip("qemu-tlb.txt.gz").toString("utf8").trim().split("\n");
    const ranges = memRanges(mem, 0x563e, 5).map((r) => ({
      ...r,
      s: BigInt(`0x${r.start}`),
      e: BigInt(`0x${r.end}`),
    }));
    for (const line of lines) {
      const [va, pa, flags] = line.split(/:? /);
      const v = BigInt(`0x${va}`);
      const r = walkView(mem, 0x563e, v + 0x10n, { levels: 5 });
      expect(r.ok, line).toBe(true);
      expect(BigInt(`0x${r.pa}`), line).toBe(BigInt(`0x${pa}`) + 0x10n);
      const range = ranges.find((x) => x.s <= v && v < x.e);
      expect(range, line).toBeDefined();
      expect(range!.user, line).toBe(r.permissions!.user);
      expect(range!.write, line).toBe(r.permissions!.write);
      expect(flags.length).toBe(9);
    }
    img.close();
  });
  it("dump gva2gpa --la57, all of QEMU's leaves in one call, gives the addresses QEMU lists", async () => {
    const lines = unzip("qemu-tlb.txt.gz").toString("utf8").trim().split("\n");
    const hex = (v: bigint) => v.toString(16).padStart(16, "0");
    const pairs = lines.map((l) => l.split(/:? /, 2).map((h) => BigInt(`0x${h}`) + 0xff8n));
    let out = "";
    const args = ["dump", "gva2gpa", "--image", image, "--cr3", "0x563e000", "--la57"];
    const code = await main([...args, ...pairs.map(([va]) => hex(va))], {
      out: (s) => (out += s),
      err: () => {},
    });
    expect(code).toBe(0);
    expect(out).toBe(pairs.map(([va, pa]) => `${hex(va)} gpa: 0x${pa.toString(16)}\n`).join(""));
  });
});
