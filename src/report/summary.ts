/**
 * `pvmmu run`'s text output: every field group of a `RunReport`, one
 * labelled line each (hypercalls, batches and operations one per kind).
 * Deterministic given the report; only the time lines vary between runs.
 */

import type { RunReport } from "../guest/report.js";
import {
  byCodePoint,
  formatBytes,
  formatMs,
  formatPercent,
  formatSig,
  formatSize,
  groupDigits,
  hypercallTotal,
  mainOp,
  pteUpdateTotal,
  tableSharePercent,
  tlbFlushTotal,
} from "./metrics.js";

const LABEL = 20;

/** Sub-lines: name left, figures right-aligned in a column. */
function listed(rows: [string, string][]): string[] {
  if (rows.length === 0) return ["  (none)"];
  const w = Math.max(...rows.map(([k]) => k.length));
  const v = Math.max(...rows.map(([, x]) => x.length));
  return rows.map(([k, x]) => `  ${k.padEnd(w)}  ${x.padStart(v)}`);
}

/** The report as readable text, ending in a newline. */
export function renderRunSummary(r: RunReport): string {
  const line = (label: string, text: string) => `${(label ? `${label}:` : "").padEnd(LABEL)}${text}`;
  const [l1, l2, l3, l4] = r.tablePages.byLevel;
  const main = mainOp(r);
  const b = r.boot;
  const lines = [
    line(
      "run",
      `${r.strategy}, pinning ${r.pinning}, workload ${r.workload}, boot ${r.bootMethod}, ` +
        `memory ${formatSize(r.memoryBytes)} (${formatBytes(r.memoryBytes)}), seed ${r.seed}`,
    ),
    line(
      "page tables",
      `${groupDigits(r.tablePages.total)} pages (L1 ${groupDigits(l1)}, L2 ${groupDigits(l2)}, L3 ${groupDigits(l3)}, ` +
        `L4 ${groupDigits(l4)}), ${formatPercent(tableSharePercent(r))}% of guest memory`,
    ),
    line("companion pages", groupDigits(r.companionPages)),
    line(
      "kernel VA",
      `${r.vaSlots} L4 slot${r.vaSlots === 1 ? "" : "s"} (${formatBytes(r.vaBytes)} of address space)`,
    ),
    line("P2M", `${formatBytes(r.p2mBytes)} (kept by the guest, 8 bytes per guest page)`),
    line("M2P", `${formatBytes(r.m2pBytes)} (read by the guest, 8 bytes per host frame)`),
    line("hypercalls", `${groupDigits(hypercallTotal(r))} in all`),
    ...listed(
      Object.keys(r.hypercalls)
        .sort(byCodePoint)
        .map((k) => [k, groupDigits(r.hypercalls[k])]),
    ),
    line("batches", "calls / entries / largest"),
    ...listed(
      Object.keys(r.batches)
        .sort(byCodePoint)
        .map((k) => {
          const s = r.batches[k];
          return [k, `${groupDigits(s.calls)} / ${groupDigits(s.entries)} / ${groupDigits(s.max)}`];
        }),
    ),
    line(
      "PTE updates",
      `${groupDigits(pteUpdateTotal(r))} (mmu_update ${groupDigits(r.pteUpdates.mmu_update)}, ` +
        `update_va_mapping ${groupDigits(r.pteUpdates.update_va_mapping)}, ptwr ${groupDigits(r.pteUpdates.ptwr)}, ` +
        `direct ${groupDigits(r.pteUpdates.direct)})`,
    ),
    line("validated entries", groupDigits(r.validatedEntries)),
    line(
      "TLB flushes",
      `${groupDigits(tlbFlushTotal(r))} (full ${groupDigits(r.tlbFlushes.full)}, single ${groupDigits(r.tlbFlushes.single)})`,
    ),
    line("lookups", `P2M ${groupDigits(r.p2mLookups)}, M2P ${groupDigits(r.m2pLookups)}`),
    line("operations", `count, ms in all, ms each (wall time)${main ? `; main: ${main.name}` : ""}`),
    ...listed(
      Object.keys(r.ops)
        .sort(byCodePoint)
        .map((k) => {
          const o = r.ops[k];
          return [
            k,
            `${groupDigits(o.count)} × ${formatSig(o.ms)} ms, ${formatMs(o.count ? o.ms / o.count : undefined)} ms/op`,
          ];
        }),
    ),
    line(
      "boot",
      `${b.method}: table pages reserved ${groupDigits(b.reservedPages)}, used ${groupDigits(b.usedPages)}, ` +
        `unused ${groupDigits(b.unusedPages)}`,
    ),
    line(
      "",
      `tables in pfns 0x${b.lowestTablePfn.toString(16)}–0x${b.highestTablePfn.toString(16)} ` +
        `of ${groupDigits(b.ramPages)} RAM pages; ${groupDigits(b.mappedPages)} pages mapped in ${groupDigits(b.steps)} step${b.steps === 1 ? "" : "s"}`,
    ),
    ...(r.suspendVisit
      ? [
          line(
            "suspend visit",
            `${groupDigits(r.suspendVisit.spaces)} address spaces: ${formatSig(r.suspendVisit.ms)} ms, ` +
              `${groupDigits(r.suspendVisit.hypercalls)} hypercalls (${r.suspendVisit.method})`,
          ),
          line(
            "",
            `clearing two slots in each by machine address, batched: ${formatSig(r.suspendVisit.clearMs)} ms, ` +
              `${groupDigits(r.suspendVisit.clearHypercalls)} hypercalls`,
          ),
        ]
      : []),
    ...(r.memoryHash ? [line("memory hash", r.memoryHash)] : []),
    line("wall time", `${formatSig(r.wallMs)} ms`),
    line(
      "audit",
      r.audit.ok
        ? "ok"
        : `FAIL (${r.audit.problems.length} problem${r.audit.problems.length === 1 ? "" : "s"})`,
    ),
    ...r.audit.problems.map((p) => `  ${p}`),
  ];
  return `${lines.join("\n")}\n`;
}
