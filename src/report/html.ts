/**
 * `pvmmu compare`'s HTML report: one self-contained page (inline CSS and SVG,
 * no script, no external resource) with
 *
 * 1. page-table memory against guest size, one line per strategy (for the
 *    boot workload, or the first workload present);
 * 2. per workload, hypercalls and milliseconds per main operation, grouped by
 *    guest size, one bar per strategy;
 * 3. the formula check: the tables direct-map kernels built at boot against
 *    the closed form (`formulas.ts`);
 * 4. every number of every run.
 *
 * All text from the reports is escaped. Given the same reports and options the
 * page is the same bytes; only the time figures differ between runs.
 */

import { type RunReport, STRATEGIES, WORKLOADS } from "../guest/report.js";
import { directMapTablePages, type TablePageCounts, tablePagesToMap } from "./formulas.js";
import {
  byCodePoint,
  formatBytes,
  formatMs,
  formatPercent,
  formatSig,
  formatSize,
  groupDigits,
  hypercallsPerMainOp,
  hypercallTotal,
  mainOp,
  msPerMainOp,
  pteUpdateTotal,
  tableSharePercent,
  tlbFlushTotal,
} from "./metrics.js";
import { barChart, escapeXml, lineChart, type SeriesStyle, seriesStyle } from "./svg.js";

export { escapeXml as escapeHtml } from "./svg.js";

/** Strategies whose boot builds a plain 4 KiB direct map of RAM, checked against the closed form. */
export const FORMULA_STRATEGIES: readonly string[] = ["direct-pfn", "direct-mfn"];

/**
 * How far the measured direct-map tables (`boot.directMapTablePages`: every level, the
 * builder's start-of-day tables included) may be from the closed form: a pfn-indexed map
 * (direct-pfn) must match it exactly; a map of scattered machine frames (direct-mfn) can only
 * need more — its excess is the cost of the gaps — so it passes when measured ≥ formula.
 */
export const FORMULA_TOLERANCE_PAGES = 0;

export interface FormulaCheck {
  strategy: string;
  pinning: string;
  bootMethod: string;
  memoryBytes: number;
  seed: number;
  /** `boot.directMapTablePages` of the run. */
  measured: number;
  /** The closed form for a 4 KiB direct map of `memoryBytes`, by level. */
  formula: TablePageCounts;
  /** measured − formula.total */
  difference: number;
  tolerance: number;
  pass: boolean;
}

/** The formula check for every boot run of a direct-map strategy, in report order. */
export function formulaChecks(reports: readonly RunReport[]): FormulaCheck[] {
  return reports
    .filter((r) => r.workload === "boot" && FORMULA_STRATEGIES.includes(r.strategy))
    .map((r) => {
      const formula = tablePagesToMap(r.memoryBytes, "4k");
      const difference = r.boot.directMapTablePages - directMapTablePages(r.memoryBytes);
      const pass =
        r.strategy === "direct-mfn" ? difference >= 0 : Math.abs(difference) <= FORMULA_TOLERANCE_PAGES;
      return {
        strategy: r.strategy,
        pinning: r.pinning,
        bootMethod: r.bootMethod,
        memoryBytes: r.memoryBytes,
        seed: r.seed,
        measured: r.boot.directMapTablePages,
        formula,
        difference,
        tolerance: FORMULA_TOLERANCE_PAGES,
        pass,
      };
    });
}

export interface CompareHtmlOptions {
  title?: string;
  /** The command line (or whatever made the report), shown under the title. */
  generatedBy?: string;
}

const esc = escapeXml;

/** Index of a name in a canonical list, unknown names after it in code-point order. */
function canonicalOrder(list: readonly string[]): (a: string, b: string) => number {
  const rank = (s: string): number => {
    const i = list.indexOf(s);
    return i < 0 ? list.length : i;
  };
  return (a, b) => rank(a) - rank(b) || byCodePoint(a, b);
}

const byWorkload = canonicalOrder(WORKLOADS);
const byStrategy = canonicalOrder(STRATEGIES);

/** Distinct values in order. */
function distinct<T>(xs: readonly T[]): T[] {
  return [...new Set(xs)];
}

/**
 * Series are strategies; when the reports vary in pinning policy or boot method
 * as well, those are part of the series too.
 */
function seriesOf(reports: readonly RunReport[]): {
  key: (r: RunReport) => string;
  styles: Map<string, SeriesStyle>;
} {
  const byPinning = distinct(reports.map((r) => r.pinning)).length > 1;
  const byBoot = distinct(reports.map((r) => r.bootMethod)).length > 1;
  const key = (r: RunReport): string =>
    [r.strategy, ...(byPinning ? [r.pinning] : []), ...(byBoot ? [r.bootMethod] : [])].join(" / ");
  const sorted = [...reports].sort(
    (a, b) =>
      byStrategy(a.strategy, b.strategy) ||
      byCodePoint(a.pinning, b.pinning) ||
      byCodePoint(a.bootMethod, b.bootMethod),
  );
  const styles = new Map<string, SeriesStyle>();
  for (const r of sorted) {
    const k = key(r);
    if (!styles.has(k)) styles.set(k, { name: k, ...seriesStyle(styles.size) });
  }
  return { key, styles };
}

/** The first report of each (series, size) pair. */
function pick(reports: readonly RunReport[], key: (r: RunReport) => string, k: string, size: number) {
  return reports.find((r) => key(r) === k && r.memoryBytes === size);
}

function overviewCharts(reports: readonly RunReport[]): string {
  const workloads = distinct(reports.map((r) => r.workload)).sort(byWorkload);
  if (workloads.length === 0) return "<p>No runs.</p>";
  const workload = workloads[0];
  const runs = reports.filter((r) => r.workload === workload);
  const { key, styles } = seriesOf(runs);
  const sizes = distinct(runs.map((r) => r.memoryBytes)).sort((a, b) => a - b);
  const xTicks = sizes.map((s) => ({ value: s, label: formatSize(s) }));
  const series = (y: (r: RunReport) => number) =>
    [...styles.values()].map((st) => ({
      ...st,
      points: sizes.flatMap((s) => {
        const r = pick(runs, key, st.name, s);
        return r ? [{ x: s, y: y(r) }] : [];
      }),
    }));
  const common = { xLabel: "guest memory", xTicks, xLog2: true, xFormat: formatSize };
  return [
    `<p>Workload <code>${esc(workload)}</code>: page-table pages at the end of the run, all levels, against guest memory.</p>`,
    '<div class="charts">',
    lineChart({
      ...common,
      title: "Page-table memory, % of guest memory",
      yLabel: "% of guest memory",
      yFormat: (v) => `${formatSig(v)}%`,
      series: series(tableSharePercent),
    }),
    lineChart({
      ...common,
      title: "Page-table pages",
      yLabel: "pages",
      yFormat: groupDigits,
      series: series((r) => r.tablePages.total),
    }),
    "</div>",
  ].join("\n");
}

function workloadCharts(reports: readonly RunReport[]): string {
  const out: string[] = [];
  for (const workload of distinct(reports.map((r) => r.workload)).sort(byWorkload)) {
    const runs = reports.filter((r) => r.workload === workload);
    const { key, styles } = seriesOf(runs);
    const sizes = distinct(runs.map((r) => r.memoryBytes)).sort((a, b) => a - b);
    const groups = sizes.map(formatSize);
    const ops = distinct(runs.map((r) => mainOp(r)?.name ?? "-")).sort(byCodePoint);
    const series = (v: (r: RunReport) => number | undefined) =>
      [...styles.values()].map((st) => ({
        ...st,
        values: sizes.map((s) => {
          const r = pick(runs, key, st.name, s);
          return r ? v(r) : undefined;
        }),
      }));
    const opName = ops.join(", ");
    out.push(
      `<h3>Workload <code>${esc(workload)}</code></h3>`,
      `<p>Per main operation (the one performed most often): <code>${esc(opName)}</code>.</p>`,
      '<div class="charts">',
      barChart({
        title: `Hypercalls per operation (${opName})`,
        xLabel: "guest memory",
        yLabel: "hypercalls per operation",
        groups,
        series: series(hypercallsPerMainOp),
        yFormat: formatSig,
      }),
      barChart({
        title: `Time per operation (${opName})`,
        xLabel: "guest memory",
        yLabel: "ms per operation",
        groups,
        series: series(msPerMainOp),
        yFormat: formatSig,
      }),
      "</div>",
    );
  }
  return out.join("\n");
}

function formulaSection(reports: readonly RunReport[]): string {
  const checks = formulaChecks(reports);
  const intro =
    `<p>For each boot of a direct-map strategy (${FORMULA_STRATEGIES.map((s) => `<code>${esc(s)}</code>`).join(", ")}), ` +
    "the page-table pages of the whole direct map (<code>boot.directMapTablePages</code>, the domain builder's " +
    "start-of-day tables included) against the closed form for mapping the guest's RAM with 4 KiB pages: " +
    "L1 = ⌈pages / 512⌉, L2 = ⌈bytes / 1 GiB⌉, L3 = ⌈bytes / 512 GiB⌉, L4 = 1. A pfn-indexed map (direct-pfn) " +
    "must match exactly; a map of scattered machine frames (direct-mfn) passes when it needs at least as many, " +
    "the excess being what its gaps cost.</p>";
  if (checks.length === 0) {
    return `${intro}\n<p>No boot run of a direct-map strategy in this report.</p>`;
  }
  const rows = checks.map(
    (c) =>
      `<tr class="${c.pass ? "pass" : "fail"}"><td>${esc(c.strategy)}</td><td>${esc(c.pinning)}</td>` +
      `<td>${esc(c.bootMethod)}</td><td class="n">${esc(formatSize(c.memoryBytes))}</td>` +
      `<td class="n">${groupDigits(c.measured)}</td>` +
      `<td class="n">${groupDigits(c.formula.total)}</td>` +
      `<td class="n">${groupDigits(c.formula.l1)} + ${groupDigits(c.formula.l2)} + ${c.formula.l3} + ${c.formula.l4}</td>` +
      `<td class="n">${c.difference > 0 ? "+" : ""}${c.difference}</td>` +
      `<td>${c.pass ? "pass" : "FAIL"}</td></tr>`,
  );
  const passed = checks.filter((c) => c.pass).length;
  return [
    intro,
    `<p>${passed} of ${checks.length} pass.</p>`,
    "<table>",
    "<thead><tr><th>strategy</th><th>pinning</th><th>boot</th><th>memory</th><th>measured</th><th>formula</th>" +
      "<th>L1 + L2 + L3 + L4</th><th>difference</th><th>check</th></tr></thead>",
    `<tbody>\n${rows.join("\n")}\n</tbody>`,
    "</table>",
  ].join("\n");
}

interface NumberColumn {
  head: string;
  numeric: boolean;
  cell: (r: RunReport) => string;
}

const entries = (rec: Record<string, number>): string =>
  Object.keys(rec)
    .sort(byCodePoint)
    .map((k) => `${k} ${groupDigits(rec[k])}`)
    .join(", ") || "-";

const NUMBER_COLUMNS: readonly NumberColumn[] = [
  { head: "strategy", numeric: false, cell: (r) => r.strategy },
  { head: "pinning", numeric: false, cell: (r) => r.pinning },
  { head: "workload", numeric: false, cell: (r) => r.workload },
  { head: "boot", numeric: false, cell: (r) => r.bootMethod },
  { head: "memory", numeric: true, cell: (r) => formatSize(r.memoryBytes) },
  { head: "seed", numeric: true, cell: (r) => `${r.seed}` },
  { head: "table pages", numeric: true, cell: (r) => groupDigits(r.tablePages.total) },
  {
    head: "L1 / L2 / L3 / L4",
    numeric: true,
    cell: (r) => r.tablePages.byLevel.map(groupDigits).join(" / "),
  },
  { head: "share %", numeric: true, cell: (r) => formatPercent(tableSharePercent(r)) },
  { head: "companion pages", numeric: true, cell: (r) => groupDigits(r.companionPages) },
  { head: "VA slots", numeric: true, cell: (r) => `${r.vaSlots}` },
  { head: "VA", numeric: true, cell: (r) => formatBytes(r.vaBytes) },
  { head: "P2M", numeric: true, cell: (r) => formatBytes(r.p2mBytes) },
  { head: "M2P", numeric: true, cell: (r) => formatBytes(r.m2pBytes) },
  { head: "hypercalls", numeric: true, cell: (r) => groupDigits(hypercallTotal(r)) },
  { head: "by kind", numeric: false, cell: (r) => entries(r.hypercalls) },
  {
    head: "batches (calls / entries / max)",
    numeric: false,
    cell: (r) =>
      Object.keys(r.batches)
        .sort(byCodePoint)
        .map((k) => {
          const b = r.batches[k];
          return `${k} ${groupDigits(b.calls)} / ${groupDigits(b.entries)} / ${groupDigits(b.max)}`;
        })
        .join(", ") || "-",
  },
  { head: "PTE updates", numeric: true, cell: (r) => groupDigits(pteUpdateTotal(r)) },
  { head: "by path", numeric: false, cell: (r) => entries(r.pteUpdates) },
  { head: "validated entries", numeric: true, cell: (r) => groupDigits(r.validatedEntries) },
  {
    head: "TLB flushes (full / single)",
    numeric: true,
    cell: (r) => `${groupDigits(r.tlbFlushes.full)} / ${groupDigits(r.tlbFlushes.single)}`,
  },
  { head: "TLB flushes", numeric: true, cell: (r) => groupDigits(tlbFlushTotal(r)) },
  { head: "P2M lookups", numeric: true, cell: (r) => groupDigits(r.p2mLookups) },
  { head: "M2P lookups", numeric: true, cell: (r) => groupDigits(r.m2pLookups) },
  {
    head: "boot tables (reserved / used / unused)",
    numeric: true,
    cell: (r) =>
      `${groupDigits(r.boot.reservedPages)} / ${groupDigits(r.boot.usedPages)} / ${groupDigits(r.boot.unusedPages)}`,
  },
  { head: "main op", numeric: false, cell: (r) => mainOp(r)?.name ?? "-" },
  { head: "ops", numeric: true, cell: (r) => groupDigits(mainOp(r)?.count ?? 0) },
  { head: "ms / op", numeric: true, cell: (r) => formatMs(msPerMainOp(r)) },
  { head: "wall ms", numeric: true, cell: (r) => formatSig(r.wallMs) },
  { head: "audit", numeric: false, cell: (r) => (r.audit.ok ? "ok" : "FAIL") },
];

function numbersTable(reports: readonly RunReport[]): string {
  const head = NUMBER_COLUMNS.map((c) => `<th>${esc(c.head)}</th>`).join("");
  const rows = reports.map(
    (r) =>
      `<tr${r.audit.ok ? "" : ' class="fail"'}>${NUMBER_COLUMNS.map(
        (c) => `<td${c.numeric ? ' class="n"' : ""}>${esc(c.cell(r))}</td>`,
      ).join("")}</tr>`,
  );
  return [
    '<div class="scroll"><table>',
    `<thead><tr>${head}</tr></thead>`,
    `<tbody>\n${rows.join("\n")}\n</tbody>`,
    "</table></div>",
  ].join("\n");
}

function auditSection(reports: readonly RunReport[]): string {
  const failed = reports.filter((r) => !r.audit.ok);
  if (failed.length === 0) return `<p>Every run's audit is clean (${reports.length} runs).</p>`;
  return [
    `<p>${failed.length} of ${reports.length} runs ended with audit problems:</p>`,
    "<ul>",
    ...failed.map(
      (r) =>
        `<li><code>${esc(`${r.strategy} ${r.pinning} ${r.workload} ${formatSize(r.memoryBytes)}`)}</code><ul>` +
        `${(r.audit.problems.length ? r.audit.problems : ["(no problem text)"]).map((p) => `<li>${esc(p)}</li>`).join("")}</ul></li>`,
    ),
    "</ul>",
  ].join("\n");
}

const CSS = `
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
code { font-family: ui-monospace, monospace; font-size: 0.95em; }
.meta { color: #555; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
svg.chart { background: #fff; border: 1px solid #ddd; max-width: 100%; height: auto; }
svg .title { font-size: 14px; font-weight: 600; }
svg .tick, svg .legend { font-size: 11px; }
svg .label { font-size: 12px; }
svg .grid { stroke: #e4e4e4; }
svg .axis { stroke: #444; }
svg text { fill: #222; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid #ddd; padding: 3px 6px; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
td.n { text-align: right; white-space: nowrap; font-variant-numeric: tabular-nums; }
tr.pass td:last-child { color: #1b6e20; font-weight: 600; }
tr.fail td { background: #fdecea; }
tr.fail td:last-child { color: #a11; font-weight: 600; }
`;

/** The report page for `reports` (in the order the table lists them). */
export function renderCompareHtml(reports: readonly RunReport[], opts: CompareHtmlOptions = {}): string {
  const title = opts.title ?? "pvmmu compare";
  const meta =
    `${reports.length} run${reports.length === 1 ? "" : "s"}` +
    (opts.generatedBy ? `, made by <code>${esc(opts.generatedBy)}</code>` : "") +
    ". Counts are deterministic for a given seed; times are wall-clock milliseconds and vary between machines and runs.";
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<style>${CSS}</style>
</head>
<body>
<h1>${esc(title)}</h1>
<p class="meta">${meta}</p>
<h2>Page-table memory against guest size</h2>
${overviewCharts(reports)}
<h2>Cost per operation</h2>
${reports.length ? workloadCharts(reports) : "<p>No runs.</p>"}
<h2>Formula check</h2>
${formulaSection(reports)}
<h2>All numbers</h2>
${numbersTable(reports)}
<h2>Audit</h2>
${auditSection(reports)}
</body>
</html>
`;
}
