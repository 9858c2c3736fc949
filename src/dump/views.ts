/**
 * Views of the page tables in a physical memory image:
 *
 *  - `infoTlb`: every present leaf, exactly as QEMU's monitor command
 *    `info tlb` prints it on x86-64 (target/i386/monitor.c): canonical
 *    linear address, physical address, then the leaf's own flags
 *    X G P D A C T U W. QEMU's traversal rules are kept on purpose so the
 *    output matches byte for byte: only P and PS are looked at (PS is
 *    ignored in PML5Es/PML4Es, honoured in PDPTEs and PDEs, and is PAT in
 *    PTEs so 'P' is never shown for a 4 KiB page); reserved bits are not
 *    checked; addresses are masked to bits 49:12 (`0x3fffffffff000`).
 *  - `infoMem`: QEMU's `info mem`: ranges of contiguous linear addresses
 *    with equal effective U/S and R/W (and'ed across levels), merged.
 *  - `walkView`: one address's walk step by step, through the model's own
 *    `PageWalker` (the same code the CPU model translates with), as a
 *    debugger probe: no accessed/dirty updates.
 *  - `gva2gpa`: QEMU's monitor command of that name for many addresses at once:
 *    each one's physical address or `Unmapped`, through `BatchWalker` (the
 *    same translation, walks overlapped), as a supervisor read probe.
 */

import { type PagingLevels, vaFromBigInt } from "../x86/address.js";
import type { PhysicalMemory } from "../x86/memory.js";
import { describeFlags, ENTRY_NAMES, joinEntry, type Level, LO_P, LO_PS, leafPageSize } from "../x86/pte.js";
import {
  ACC_FETCH,
  ACC_PROBE,
  ACC_USER,
  ACC_WRITE,
  FAULT_GP,
  PageWalker,
  PagingMode,
  PERM_NX,
  PERM_U,
  PERM_W,
  PF_I,
  PF_P,
  PF_PK,
  PF_RSVD,
  PF_U,
  PF_W,
} from "../x86/walk.js";
import { BatchWalker, WalkResults } from "../x86/walk-many.js";

/** QEMU's address mask for table pointers and 4 KiB pages (bits 49:12), high half. */
const QEMU_HI_MASK = 0x3ffff;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

/** `%016x` of the canonical form of a raw (index-built) linear address. */
function canonicalHex(raw: number, levels: PagingLevels): string {
  let hi = Math.floor(raw / 0x1_0000_0000);
  const lo = raw % 0x1_0000_0000;
  if (levels === 4 && hi & 0x8000) hi |= 0xffff0000;
  if (levels === 5 && hi & 0x1000000) hi |= 0xfe000000;
  return hex8(hi) + hex8(lo);
}

function physHex(hi: number, loMasked: number): string {
  return hex8(hi & QEMU_HI_MASK) + hex8(loMasked);
}

/** One leaf as `info tlb` shows it. */
export interface TlbLine {
  va: string;
  pa: string;
  pageSize: number;
  level: 1 | 2 | 3;
  flags: string;
  entry: string;
}

function flagLetters(lo: number, hi: number): string {
  return (
    (hi & 0x80000000 ? "X" : "-") +
    (lo & 0x100 ? "G" : "-") +
    (lo & 0x80 ? "P" : "-") +
    (lo & 0x40 ? "D" : "-") +
    (lo & 0x20 ? "A" : "-") +
    (lo & 0x10 ? "C" : "-") +
    (lo & 0x08 ? "T" : "-") +
    (lo & 0x04 ? "U" : "-") +
    (lo & 0x02 ? "W" : "-")
  );
}

type LeafVisitor = (raw: number, level: 1 | 2 | 3, lo: number, hi: number, rights: number) => void;

/**
 * Visit every present leaf in QEMU's order and by QEMU's rules. `rights` is
 * the and of U/S, R/W and P over the levels above and the leaf.
 * `gap(raw)` is called for each non-present entry (start of an unmapped range).
 */
function traverse(
  mem: PhysicalMemory,
  rootFrame: number,
  levels: PagingLevels,
  leaf: LeafVisitor,
  gap: (raw: number) => void,
): void {
  const visit = (table: number, level: Level, base: number, rights: number): void => {
    const t = mem.frame(table);
    const span = 2 ** (12 + 9 * (level - 1));
    for (let i = 0; i < 512; i++) {
      const lo = t[i * 2];
      const hi = t[i * 2 + 1];
      const raw = base + i * span;
      if ((lo & LO_P) === 0) {
        gap(raw);
        continue;
      }
      const r = rights & lo & 7;
      if (level === 1 || ((level === 2 || level === 3) && lo & LO_PS)) {
        leaf(raw, level as 1 | 2 | 3, lo, hi, r);
        continue;
      }
      visit((hi & QEMU_HI_MASK) * 0x10_0000 + (lo >>> 12), (level - 1) as Level, raw, r);
    }
  };
  visit(rootFrame, levels, 0, 7);
}

/** The leaves `info tlb` prints. */
export function tlbLines(mem: PhysicalMemory, rootFrame: number, levels: PagingLevels): TlbLine[] {
  const out: TlbLine[] = [];
  traverse(
    mem,
    rootFrame,
    levels,
    (raw, level, lo, hi) => {
      // QEMU prints a PTE with the PAT/PS bit cleared, and masks the address to the page's alignment.
      const flo = level === 1 ? lo & ~LO_PS : lo;
      const alo = level === 1 ? lo & 0xfffff000 : level === 2 ? lo & 0xffe00000 : lo & 0xc0000000;
      out.push({
        va: canonicalHex(raw, levels),
        pa: physHex(hi, alo),
        pageSize: leafPageSize(level),
        level,
        flags: flagLetters(flo, hi),
        entry: joinEntry(lo, hi).toString(16).padStart(16, "0"),
      });
    },
    () => {},
  );
  return out;
}

/** `info tlb` text, byte for byte. */
export function infoTlb(mem: PhysicalMemory, rootFrame: number, levels: PagingLevels): string {
  const lines = tlbLines(mem, rootFrame, levels);
  let s = "";
  for (const l of lines) s += `${l.va}: ${l.pa} ${l.flags}\n`;
  return s;
}

/** One range as `info mem` shows it. */
export interface MemRange {
  start: string;
  end: string;
  size: string;
  user: boolean;
  write: boolean;
}

/** The ranges `info mem` prints (QEMU's `mem_print` state machine over raw addresses). */
export function memRanges(mem: PhysicalMemory, rootFrame: number, levels: PagingLevels): MemRange[] {
  const out: MemRange[] = [];
  let start = -1;
  let lastProt = 0;
  const print = (end: number, prot: number): void => {
    if (prot === lastProt) return;
    if (start !== -1) {
      out.push({
        start: canonicalHex(start, levels),
        end: canonicalHex(end, levels),
        size: canonicalHex(end - start, levels),
        user: (lastProt & 4) !== 0,
        write: (lastProt & 2) !== 0,
      });
    }
    start = prot !== 0 ? end : -1;
    lastProt = prot;
  };
  traverse(
    mem,
    rootFrame,
    levels,
    (raw, _level, _lo, _hi, rights) => print(raw, rights),
    (raw) => print(raw, 0),
  );
  print(2 ** (levels === 5 ? 57 : 48), 0);
  return out;
}

/** `info mem` text, byte for byte. */
export function infoMem(mem: PhysicalMemory, rootFrame: number, levels: PagingLevels): string {
  let s = "";
  for (const r of memRanges(mem, rootFrame, levels)) {
    s += `${r.start}-${r.end} ${r.size} ${r.user ? "u" : "-"}r${r.write ? "w" : "-"}\n`;
  }
  return s;
}

// ---------------------------------------------------------------------------
// walk
// ---------------------------------------------------------------------------

export interface WalkStep {
  level: Level;
  name: string;
  index: number;
  /** Physical address of the entry. */
  entryAddress: string;
  /** The entry as read (hex). */
  entry: string;
  flags: string;
}

export interface WalkReport {
  va: string;
  levels: PagingLevels;
  access: string;
  steps: WalkStep[];
  ok: boolean;
  /** On success. */
  pa?: string;
  pageSize?: number;
  permissions?: { write: boolean; user: boolean; execute: boolean };
  /** On a fault. */
  fault?: "#PF" | "#GP";
  errorCode?: number;
  errorBits?: string[];
}

export function describeErrorCode(code: number): string[] {
  const bits: string[] = [];
  bits.push(code & PF_P ? "P (protection violation)" : "not-present");
  bits.push(code & PF_W ? "W (write)" : "R (read)");
  bits.push(code & PF_U ? "U (user mode)" : "S (supervisor mode)");
  if (code & PF_RSVD) bits.push("RSVD (reserved bit set)");
  if (code & PF_I) bits.push("I/D (instruction fetch)");
  if (code & PF_PK) bits.push("PK (protection key)");
  return bits;
}

export interface WalkOptions {
  levels: PagingLevels;
  access?: "read" | "write" | "fetch";
  user?: boolean;
  /** EFER.NXE (default true). */
  nxe?: boolean;
}

/** Walk `va` through the tables at `rootFrame` with the model's page walker. */
export function walkView(mem: PhysicalMemory, rootFrame: number, va: bigint, opts: WalkOptions): WalkReport {
  const m = new PagingMode();
  m.rootFrame = rootFrame;
  m.levels = opts.levels;
  m.nxe = opts.nxe ?? true;
  const kind = opts.access ?? "read";
  const access =
    ACC_PROBE |
    (kind === "write" ? ACC_WRITE : kind === "fetch" ? ACC_FETCH : 0) |
    (opts.user ? ACC_USER : 0);
  const w = new PageWalker(mem);
  const { hi, lo } = vaFromBigInt(va);
  const ok = w.walk(m, hi, lo, access);
  const steps: WalkStep[] = [];
  for (let k = 0; k < w.depth; k++) {
    const level = (opts.levels - k) as Level;
    steps.push({
      level,
      name: ENTRY_NAMES[level],
      index: w.stepIndex(k),
      entryAddress: w.stepEntryAddress(k).toString(16).padStart(16, "0"),
      entry: joinEntry(w.stepLo[k], w.stepHi[k]).toString(16).padStart(16, "0"),
      flags: describeFlags(w.stepLo[k], w.stepHi[k], level),
    });
  }
  const report: WalkReport = {
    va: BigInt.asUintN(64, va).toString(16).padStart(16, "0"),
    levels: opts.levels,
    access: `${opts.user ? "user" : "supervisor"} ${kind}`,
    steps,
    ok,
  };
  if (ok) {
    report.pa = w.paddr.toString(16).padStart(16, "0");
    report.pageSize = leafPageSize(w.leafLevel as 1 | 2 | 3);
    report.permissions = {
      write: (w.perm & PERM_W) !== 0,
      user: (w.perm & PERM_U) !== 0,
      execute: (w.perm & PERM_NX) === 0,
    };
  } else if (w.fault === FAULT_GP) {
    report.fault = "#GP";
    report.errorCode = 0;
    report.errorBits = ["non-canonical address"];
  } else {
    report.fault = "#PF";
    report.errorCode = w.errorCode;
    report.errorBits = describeErrorCode(w.errorCode);
  }
  return report;
}

const SIZE_NAMES: Record<number, string> = { 4096: "4 KiB", 2097152: "2 MiB", 1073741824: "1 GiB" };

/** The walk as text, one line per level. */
export function formatWalk(r: WalkReport): string {
  const lines = [`walk of ${r.va} (${r.levels}-level paging, ${r.access})`];
  for (const s of r.steps) {
    lines.push(
      `  ${s.name.padEnd(5)} [${String(s.index).padStart(3)}] @ ${s.entryAddress} = ${s.entry}  ${s.flags}`,
    );
  }
  if (r.ok) {
    const p = r.permissions!;
    lines.push(
      `  -> ${r.pa} (${SIZE_NAMES[r.pageSize!]} page; ${p.user ? "user" : "supervisor"}, ${
        p.write ? "writable" : "read-only"
      }, ${p.execute ? "executable" : "no-execute"})`,
    );
  } else if (r.fault === "#GP") {
    lines.push("  -> #GP(0): non-canonical address");
  } else {
    lines.push(
      `  -> #PF error code 0x${r.errorCode!.toString(16)} [${r.errorBits!.join(", ")}], CR2=${r.va}`,
    );
  }
  return `${lines.join("\n")}\n`;
}

/** One address's translation: `gpa` null when QEMU would say `Unmapped`. */
export interface Gva2Gpa {
  /** The linear address, `%016x`. */
  va: string;
  /** The physical address, `0x%x`, or null. */
  gpa: string | null;
}

/**
 * Translate each linear address as QEMU's `gva2gpa` does (a debug translation: any present
 * mapping, rights not checked, reserved bits and non-canonical addresses unmapped).
 */
export function gva2gpa(
  mem: PhysicalMemory,
  rootFrame: number,
  levels: PagingLevels,
  vas: readonly bigint[],
): Gva2Gpa[] {
  const n = vas.length;
  const his = new Uint32Array(n);
  const los = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const { hi, lo } = vaFromBigInt(vas[i]);
    his[i] = hi;
    los[i] = lo;
  }
  const m = new PagingMode();
  m.rootFrame = rootFrame;
  m.levels = levels;
  const out = new WalkResults(n);
  // A supervisor read, SMAP and protection keys off: no leaf's rights refuse it.
  new BatchWalker(mem).walk(m, his, los, ACC_PROBE, out);
  const res: Gva2Gpa[] = [];
  for (let i = 0; i < n; i++) {
    res.push({
      va: BigInt.asUintN(64, vas[i]).toString(16).padStart(16, "0"),
      gpa: out.fault[i] === 0 ? `0x${out.paddr[i].toString(16)}` : null,
    });
  }
  return res;
}

/** `gva2gpa`'s text: per address, its `%016x` and QEMU's line (`gpa: 0x…` or `Unmapped`). */
export function formatGva2Gpa(rows: readonly Gva2Gpa[]): string {
  return rows.map((r) => `${r.va} ${r.gpa === null ? "Unmapped" : `gpa: ${r.gpa}`}\n`).join("");
}
