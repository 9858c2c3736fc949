/**
 * Shrink a physical memory image to the frames its page tables occupy: every
 * table reachable from CR3 (the PML5/PML4 and everything present below it
 * that is not a leaf), written as a sparse ELF core with one PT_LOAD per run
 * of frames. Used to turn a real machine's dump into a small test fixture.
 *
 *   node dist/scripts/minimize-image.js IMAGE CR3 OUT.elf [--la57]
 */

import { MemoryImage } from "../src/dump/image.js";
import { writeElfImage } from "../src/dump/synth.js";
import { parseAddress } from "../src/x86/address.js";
import { PhysicalMemory } from "../src/x86/memory.js";
import { HI_ADDR_MASK, LO_P, LO_PS } from "../src/x86/pte.js";

const [image, cr3Text, out] = process.argv.slice(2);
const levels = process.argv.includes("--la57") ? 5 : 4;
const img = MemoryImage.open(image);
const mem = img.memory();
const root = Number(parseAddress(cr3Text, "CR3") >> 12n);
const tables = new Set<number>();
const visit = (frame: number, level: number): void => {
  if (tables.has(frame) && level > 1) return;
  tables.add(frame);
  if (level === 1) return;
  const t = mem.frame(frame);
  for (let i = 0; i < 512; i++) {
    const lo = t[i * 2];
    const hi = t[i * 2 + 1];
    if ((lo & LO_P) === 0 || ((level === 2 || level === 3) && lo & LO_PS)) continue;
    visit((hi & HI_ADDR_MASK) * 0x10_0000 + (lo >>> 12), level - 1);
  }
};
visit(root, levels);
const frames = [...tables].filter((f) => img.covers(f * 4096)).sort((a, b) => a - b);
const small = new PhysicalMemory({ sizeBytes: img.sizeBytes });
for (const f of frames) small.frameForWrite(f).set(mem.frame(f));
const ranges: { start: number; size: number }[] = [];
for (const f of frames) {
  const last = ranges[ranges.length - 1];
  if (last && last.start + last.size === f * 4096) last.size += 4096;
  else ranges.push({ start: f * 4096, size: 4096 });
}
writeElfImage(small, out, ranges);
process.stdout.write(`${frames.length} table frames in ${ranges.length} segments -> ${out}\n`);
