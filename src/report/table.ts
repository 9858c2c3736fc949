/**
 * A fixed-width terminal table of runs, one row each, in the order given:
 * strategy, pinning, workload, guest memory, page-table pages and their share
 * of guest memory, hypercalls, PTE updates, validated entries, TLB flushes, the
 * workload's main operation with its milliseconds per operation, the cost of
 * visiting 1,000 address spaces' top-level tables at suspend (hypercalls, ms),
 * and the audit verdict. Everything but the time column is deterministic: it comes
 * from the counts alone.
 */

import type { RunReport } from "../guest/report.js";
import {
  formatMs,
  formatPercent,
  formatSize,
  hypercallTotal,
  mainOp,
  msPerMainOp,
  pteUpdateTotal,
  tableSharePercent,
  tlbFlushTotal,
} from "./metrics.js";

interface Column {
  head: string;
  right: boolean;
  cell: (r: RunReport) => string;
}

export const TABLE_COLUMNS: readonly Column[] = [
  { head: "strategy", right: false, cell: (r) => r.strategy },
  { head: "pinning", right: false, cell: (r) => r.pinning },
  { head: "workload", right: false, cell: (r) => r.workload },
  { head: "memory", right: true, cell: (r) => formatSize(r.memoryBytes) },
  { head: "tables", right: true, cell: (r) => `${r.tablePages.total}` },
  { head: "share%", right: true, cell: (r) => formatPercent(tableSharePercent(r)) },
  { head: "hypercalls", right: true, cell: (r) => `${hypercallTotal(r)}` },
  { head: "pte-updates", right: true, cell: (r) => `${pteUpdateTotal(r)}` },
  { head: "validated", right: true, cell: (r) => `${r.validatedEntries}` },
  { head: "tlb-flushes", right: true, cell: (r) => `${tlbFlushTotal(r)}` },
  { head: "main-op", right: false, cell: (r) => mainOp(r)?.name ?? "-" },
  { head: "ops", right: true, cell: (r) => `${mainOp(r)?.count ?? 0}` },
  { head: "ms/op", right: true, cell: (r) => formatMs(msPerMainOp(r)) },
  // Seed 001: visiting 1,000 address spaces' top-level tables at suspend.
  { head: "visit-hc", right: true, cell: (r) => (r.suspendVisit ? `${r.suspendVisit.hypercalls}` : "-") },
  {
    head: "visit-ms",
    right: true,
    cell: (r) => (r.suspendVisit ? formatMs(r.suspendVisit.ms) : "-"),
  },
  { head: "audit", right: false, cell: (r) => (r.audit.ok ? "ok" : "FAIL") },
];

/** Terminal control characters would break the layout (and the terminal): shown as `?`. */
function printable(s: string): string {
  let out = "";
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    out += c < 0x20 || (c >= 0x7f && c < 0xa0) ? "?" : ch;
  }
  return out;
}

/** The table as text: a header, a rule, one line per report; columns two spaces apart, no trailing spaces. */
export function renderTable(reports: readonly RunReport[]): string {
  const rows = reports.map((r) => TABLE_COLUMNS.map((c) => printable(c.cell(r))));
  const widths = TABLE_COLUMNS.map((c, i) => Math.max(c.head.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]): string =>
    cells
      .map((s, i) => (TABLE_COLUMNS[i].right ? s.padStart(widths[i]) : s.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  const out = [
    line(TABLE_COLUMNS.map((c) => c.head)),
    line(widths.map((w) => "-".repeat(w))),
    ...rows.map(line),
  ];
  return `${out.join("\n")}\n`;
}
