/**
 * Ground truth: a real Linux 6.1 kernel's page tables (with a user process),
 * and QEMU's own `info tlb` / `info mem` of them (test/fixtures/qemu-linux61-la48).
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { MemoryImage } from "../../src/dump/image.js";
import { walkView } from "../../src/dump/views.js";

const FIX = join(__dirname, "..", "fixtures", "qemu-linux61-la48");
const CR3 = "0x5532000";
const unzip = (name: string) => gunzipSync(readFileSync(join(FIX, name)));

let dir = "";
let image = "";
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "pvmmu-gt-"));
  image = join(dir, "tables.elf");
  writeFileSync(image, unzip("tables.elf.gz"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function run(args: string[]): Promise<{ code: number; out: string }> {
  let out = "";
  const code = await main(args, { out: (s) => (out += s), err: () => {} });
  return { code, out };
}

describe("against QEMU on a real Linux kernel's page tables", () => {
  it("the registers say 4-level paging with this CR3", () => {
    const regs = readFileSync(join(FIX, "registers.txt"), "utf8");
    expect(regs).toMatch(/CR3=0000000005532000/);
    expect(Number.parseInt(/CR4=([0-9a-f]+)/.exec(regs)![1], 16) & (1 << 12)).toBe(0); // LA57 off
  });

  it("dump tlb prints exactly what `info tlb` printed", async () => {
    const r = await run(["dump", "tlb", "--image", image, "--cr3", CR3]);
    expect(r.code).toBe(0);
    expect(r.out).toBe(unzip("qemu-tlb.txt.gz").toString("utf8"));
  });

  it("dump mem prints exactly what `info mem` printed", async () => {
    const r = await run(["dump", "mem", "--image", image, "--cr3", CR3]);
    expect(r.out).toBe(unzip("qemu-mem.txt.gz").toString("utf8"));
  });

  it("the model's page walker translates every leaf QEMU lists to the address QEMU lists", () => {
    const img = MemoryImage.open(image);
    const mem = img.memory();
    const lines = unzip("qemu-tlb.txt.gz").toString("utf8").trim().split("\n");
    expect(lines.length).toBe(10657);
    let checked = 0;
    for (const line of lines) {
      const [va, pa] = line.split(/:? /);
      const r = walkView(mem, 0x5532, BigInt(`0x${va}`) + 0x123n, { levels: 4 });
      expect(r.ok, line).toBe(true);
      expect(BigInt(`0x${r.pa}`), line).toBe(BigInt(`0x${pa}`) + 0x123n);
      checked++;
    }
    expect(checked).toBe(lines.length);
    img.close();
  });

  it("dump gva2gpa, all of QEMU's leaves in one call, gives the addresses QEMU lists", async () => {
    const lines = unzip("qemu-tlb.txt.gz").toString("utf8").trim().split("\n");
    const hex = (v: bigint) => v.toString(16).padStart(16, "0");
    const pairs = lines.map((l) => l.split(/:? /, 2).map((h) => BigInt(`0x${h}`) + 0x9a8n));
    const r = await run(["dump", "gva2gpa", "--image", image, "--cr3", CR3, ...pairs.map(([va]) => hex(va))]);
    expect(r.code).toBe(0);
    expect(r.out).toBe(pairs.map(([va, pa]) => `${hex(va)} gpa: 0x${pa.toString(16)}\n`).join(""));
  });
});
