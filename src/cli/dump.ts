/**
 * `pvmmu dump …`: page tables in physical memory dumps.
 */

import { type Command, Option } from "commander";
import { ImageError, type ImageFormat, MemoryImage } from "../dump/image.js";
import { synthLinuxImage, writeElfImage, writeRawImage } from "../dump/synth.js";
import {
  formatGva2Gpa,
  formatWalk,
  type Gva2Gpa,
  gva2gpa,
  infoMem,
  infoTlb,
  memRanges,
  tlbLines,
  walkView,
} from "../dump/views.js";
import { isCanonical, parseAddress, vaFromBigInt } from "../x86/address.js";
import type { PhysicalMemory } from "../x86/memory.js";
import { PAGE_SIZE } from "../x86/pte.js";
import { UsageError } from "./errors.js";

/** Translations one `dump gva2gpa` gives at most. */
const MAX_PAGES = 1 << 20;

type View<T> = (mem: PhysicalMemory, rootFrame: number, levels: 4 | 5) => T;

interface ImageOpts {
  image: string;
  cr3: string;
  la57?: boolean;
  format: ImageFormat | "auto";
  json?: boolean;
}

/** Open the image and check CR3 against it. */
function openWithRoot(o: ImageOpts): { img: MemoryImage; rootFrame: number; levels: 4 | 5 } {
  const cr3 = parseAddress(o.cr3, "CR3");
  if ((cr3 & 0xfffn) !== 0n) {
    throw new UsageError(
      `CR3 0x${cr3.toString(16)} is not 4 KiB aligned: give the physical address of the top-level table (bits 11:0 zero)`,
    );
  }
  if (cr3 >= 1n << 52n)
    throw new UsageError(`CR3 0x${cr3.toString(16)} is above the 52-bit physical address space`);
  let img: MemoryImage;
  try {
    img = MemoryImage.open(o.image, o.format);
  } catch (e) {
    if (e instanceof ImageError) throw new UsageError(e.message);
    throw e;
  }
  const root = Number(cr3);
  if (!img.covers(root)) {
    img.close();
    throw new UsageError(
      `CR3 0x${cr3.toString(16)} points outside the image (${img.format}, ${img.sizeBytes} bytes of physical address space)`,
    );
  }
  return { img, rootFrame: root / PAGE_SIZE, levels: o.la57 ? 5 : 4 };
}

function imageOptions(cmd: Command): Command {
  return cmd
    .requiredOption("--image <file>", "physical memory image: raw (pmemsave) or ELF core (dump-guest-memory)")
    .requiredOption("--cr3 <addr>", "physical address of the top-level page table (hex)")
    .option("--la57", "5-level paging (CR4.LA57)")
    .addOption(new Option("--format <fmt>", "image format").choices(["auto", "raw", "elf"]).default("auto"))
    .option("--json", "print JSON instead of text");
}

export function registerDump(program: Command, out: (s: string) => void): void {
  const dump = program
    .command("dump")
    .description("inspect the page tables in a physical memory dump (QEMU pmemsave or dump-guest-memory)");

  /** A view of the whole tree: JSON `{image, format, cr3, levels, [key]: data}` or the text. */
  const view =
    (key: string, data: View<unknown>, text: View<string>) =>
    (o: ImageOpts): void => {
      const { img, rootFrame, levels } = openWithRoot(o);
      try {
        const mem = img.memory();
        if (o.json) {
          const body = {
            image: o.image,
            format: img.format,
            cr3: o.cr3,
            levels,
            [key]: data(mem, rootFrame, levels),
          };
          out(`${JSON.stringify(body, null, 1)}\n`);
        } else out(text(mem, rootFrame, levels));
      } finally {
        img.close();
      }
    };

  imageOptions(dump.command("tlb"))
    .description("every leaf mapping, in the format of QEMU's `info tlb`")
    .action(view("mappings", tlbLines, infoTlb));

  imageOptions(dump.command("mem"))
    .description("merged ranges with effective user/write permission, in the format of QEMU's `info mem`")
    .action(view("ranges", memRanges, infoMem));

  imageOptions(dump.command("walk"))
    .description("the walk of one linear address, level by level, with the result or the fault")
    .argument("<va>", "linear address (hex)")
    .addOption(
      new Option("--access <kind>", "access to check").choices(["read", "write", "fetch"]).default("read"),
    )
    .option("--user", "a user-mode (CPL 3) access")
    .option("--no-nx", "EFER.NXE=0 (XD bits become reserved)")
    .action(
      (
        vaText: string,
        o: ImageOpts & { access: "read" | "write" | "fetch"; user?: boolean; nx: boolean },
      ) => {
        const va = parseAddress(vaText, "linear address");
        const levels = o.la57 ? 5 : 4;
        const { hi } = vaFromBigInt(va);
        if (!isCanonical(hi, levels)) {
          throw new UsageError(
            `linear address 0x${va.toString(16)} is not canonical for ${levels}-level paging ` +
              `(bits 63:${levels === 5 ? 56 : 47} must all equal bit ${levels === 5 ? 56 : 47}); ` +
              "an access to it raises #GP, not a page walk",
          );
        }
        const { img, rootFrame } = openWithRoot(o);
        try {
          const r = walkView(img.memory(), rootFrame, va, {
            levels,
            access: o.access,
            user: o.user,
            nxe: o.nx,
          });
          out(o.json ? `${JSON.stringify(r, null, 1)}\n` : formatWalk(r));
        } finally {
          img.close();
        }
      },
    );

  imageOptions(dump.command("gva2gpa"))
    .description("linear addresses to physical ones, as QEMU's `gva2gpa` (many at once)")
    .argument("<va...>", "linear addresses (hex)")
    .option("--pages <n>", `from each address, this many consecutive pages (1 to ${MAX_PAGES})`, "1")
    .action((vaTexts: string[], o: ImageOpts & { pages: string }) => {
      const pages = Number(o.pages);
      if (!/^[0-9]+$/.test(o.pages.trim()) || pages < 1 || pages > MAX_PAGES) {
        throw new UsageError(`--pages must be a whole number from 1 to ${MAX_PAGES}, got '${o.pages}'`);
      }
      const starts = vaTexts.map((t) => parseAddress(t, "linear address"));
      if (starts.length * pages > MAX_PAGES) {
        throw new UsageError(
          `${starts.length} addresses of ${pages} pages are over ${MAX_PAGES} translations`,
        );
      }
      const vas: bigint[] = [];
      for (const va of starts) {
        for (let p = 0; p < pages; p++) vas.push(BigInt.asUintN(64, va + BigInt(p * PAGE_SIZE)));
      }
      const rows: View<Gva2Gpa[]> = (mem, rootFrame, levels) => gva2gpa(mem, rootFrame, levels, vas);
      view("translations", rows, (...a) => formatGva2Gpa(rows(...a)))(o);
    });

  dump
    .command("synth")
    .description("write a synthetic image holding a Linux-like kernel's and a process's page tables")
    .requiredOption("--out <file>", "image file to write")
    .option("--ram <MiB>", "RAM size in MiB", "2048")
    .option("--la57", "5-level paging")
    .addOption(new Option("--format <fmt>", "image format").choices(["raw", "elf"]).default("raw"))
    .option("--json", "print JSON instead of text")
    .action((o: { out: string; ram: string; la57?: boolean; format: "raw" | "elf"; json?: boolean }) => {
      const mib = Number(o.ram);
      if (!Number.isInteger(mib) || mib < 64 || mib % 2 !== 0 || mib > 1 << 20) {
        throw new UsageError(`--ram must be an even number of MiB from 64 to 1048576, got '${o.ram}'`);
      }
      const s = synthLinuxImage({ ramBytes: mib * 1024 * 1024, levels: o.la57 ? 5 : 4 });
      if (o.format === "elf") writeElfImage(s.mem, o.out);
      else writeRawImage(s.mem, o.out);
      const cr3 = `0x${s.cr3.toString(16)}`;
      if (o.json) {
        out(
          `${JSON.stringify({ out: o.out, format: o.format, cr3, levels: s.levels, tableFrames: s.tableFrames })}\n`,
        );
      } else {
        out(`wrote ${o.out} (${o.format}, ${mib} MiB, ${s.tableFrames} page-table frames)\n`);
        out(`try: pvmmu dump tlb --image ${o.out} --cr3 ${cr3}${o.la57 ? " --la57" : ""}\n`);
      }
    });
}
