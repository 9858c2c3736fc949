/**
 * Figures derived from a `RunReport` for display (totals, the main operation,
 * the table share) and the number formats the renderers share. Pure and
 * locale-independent, so the same reports always render the same bytes.
 */

import type { OpStats, RunReport } from "../guest/report.js";
import { GiB, KiB, MiB, pageSharePercent, TiB } from "./formulas.js";

/** Hypercalls (guest → hypervisor transitions) of every kind. */
export function hypercallTotal(r: RunReport): number {
  return sumValues(r.hypercalls);
}

/** Page-table entry writes by every path. */
export function pteUpdateTotal(r: RunReport): number {
  const u = r.pteUpdates;
  return u.mmu_update + u.update_va_mapping + u.ptwr + u.direct;
}

/** TLB flushes the guest asked for, full and single-address. */
export function tlbFlushTotal(r: RunReport): number {
  return r.tlbFlushes.full + r.tlbFlushes.single;
}

/**
 * Page-table pages as a percentage of guest memory, computed from the page
 * count and the guest size (so it does not depend on how `tablePages.share`
 * is scaled).
 */
export function tableSharePercent(r: RunReport): number {
  return pageSharePercent(r.tablePages.total, r.memoryBytes);
}

export interface MainOp extends OpStats {
  name: string;
}

/**
 * The workload's main operation: the one performed most often (ties go to the
 * first name in code-point order), or undefined if the run recorded none.
 */
export function mainOp(r: RunReport): MainOp | undefined {
  let best: MainOp | undefined;
  for (const name of Object.keys(r.ops).sort(byCodePoint)) {
    const op = r.ops[name];
    if (best === undefined || op.count > best.count) best = { name, count: op.count, ms: op.ms };
  }
  return best;
}

/** Milliseconds per main operation, or undefined without one. */
export function msPerMainOp(r: RunReport): number | undefined {
  const op = mainOp(r);
  return op && op.count > 0 ? op.ms / op.count : undefined;
}

/** Hypercalls per main operation, or undefined without one. */
export function hypercallsPerMainOp(r: RunReport): number | undefined {
  const op = mainOp(r);
  return op && op.count > 0 ? hypercallTotal(r) / op.count : undefined;
}

export function sumValues(rec: Record<string, number>): number {
  let s = 0;
  for (const k of Object.keys(rec)) s += rec[k];
  return s;
}

/** Compare strings by code point (locale-independent). */
export function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * A size in the largest binary unit that divides it exactly, as `pvmmu run
 * --memory` reads it: 1073741824 → "1G", 1610612736 → "1536M", 1000 → "1000".
 */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [
    ["T", TiB],
    ["G", GiB],
    ["M", MiB],
    ["K", KiB],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}`;
}

/** A byte count for people: exact in the largest unit that divides it, else to three significant digits. */
export function formatBytes(bytes: number): string {
  for (const [unit, size] of [
    ["TiB", TiB],
    ["GiB", GiB],
    ["MiB", MiB],
    ["KiB", KiB],
  ] as const) {
    if (bytes >= size) {
      const v = bytes / size;
      return `${Number.isInteger(v) ? v : formatSig(v)} ${unit}`;
    }
  }
  return `${bytes} B`;
}

/** Three significant digits, without exponent notation for ordinary magnitudes. */
export function formatSig(v: number): string {
  if (v === 0 || !Number.isFinite(v)) return `${v}`;
  const a = Math.abs(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 1e-4) return `${Number(v.toPrecision(3))}`;
  return v.toExponential(2);
}

/** Milliseconds as shown in tables (three significant digits). */
export function formatMs(ms: number | undefined): string {
  return ms === undefined ? "-" : formatSig(ms);
}

/** A percentage with three decimals ("0.196"). */
export function formatPercent(p: number): string {
  return p.toFixed(3);
}

/** An integer with a comma between groups of three digits (locale-independent). */
export function groupDigits(n: number): string {
  if (!Number.isInteger(n)) return formatSig(n);
  const s = `${Math.abs(n)}`;
  let out = "";
  for (let i = 0; i < s.length; i++) {
    if (i > 0 && (s.length - i) % 3 === 0) out += ",";
    out += s[i];
  }
  return n < 0 ? `-${out}` : out;
}
