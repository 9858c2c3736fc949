/**
 * The HTML report: self-contained (no script, nothing fetched), escaped, with
 * its charts, and the formula check's pass/fail rule.
 */

import { describe, expect, it } from "vitest";
import { STRATEGIES, type StrategyName } from "../../src/guest/report.js";
import { GiB } from "../../src/report/formulas.js";
import { FORMULA_TOLERANCE_PAGES, formulaChecks, renderCompareHtml } from "../../src/report/html.js";
import { niceTicks } from "../../src/report/svg.js";
import { fixtureReport } from "./fixtures.js";

const SIZES = [GiB, 4 * GiB, 16 * GiB];

function matrix() {
  return ["boot", "fork-exec-exit"].flatMap((workload) =>
    SIZES.flatMap((memoryBytes) =>
      STRATEGIES.map((strategy) => fixtureReport({ strategy, workload: workload as "boot", memoryBytes })),
    ),
  );
}

describe("renderCompareHtml", () => {
  const html = renderCompareHtml(matrix(), {
    title: "Strategies",
    generatedBy: "pvmmu compare --sizes 1G,4G,16G",
  });

  it("is one self-contained page: inline CSS and SVG, no script, nothing from elsewhere", () => {
    expect(html.startsWith("<!doctype html>")).toBe(true);
    expect(html).toContain("<style>");
    expect(html).not.toMatch(/<script/i);
    expect(html).not.toMatch(/<link/i);
    expect(html).not.toMatch(/\b(src|href)\s*=/i);
    expect(html).not.toMatch(/https?:/i);
    expect(html).not.toMatch(/url\(/i);
    expect(html).not.toMatch(/@import/i);
  });

  it("has the overview line charts, two bar charts per workload, the formula check and the numbers", () => {
    const svgs = html.match(/<svg[\s>]/g) ?? [];
    expect(svgs).toHaveLength(2 + 2 * 2);
    // One line per strategy in each of the two overview charts (three sizes each).
    expect(html.match(/<polyline/g)).toHaveLength(2 * STRATEGIES.length);
    for (const s of STRATEGIES) expect(html).toContain(`>${s}</text>`);
    expect(html).toContain("Page-table memory, % of guest memory");
    expect(html).toContain("Hypercalls per operation (exec)");
    expect(html).toContain("Time per operation (boot)");
    expect(html).toContain("<h2>Formula check</h2>");
    expect(html).toContain("<h2>All numbers</h2>");
    // All 30 runs in the numbers table; the 6 direct-map boots in the formula check.
    const numbers = html.slice(html.indexOf("<h2>All numbers</h2>"));
    expect(numbers.match(/<tr>/g)?.length).toBe(1 + 30);
    expect(html).toContain("6 of 6 pass.");
    expect(html).toContain("made by <code>pvmmu compare --sizes 1G,4G,16G</code>");
  });

  it("is the same bytes for the same reports", () => {
    expect(
      renderCompareHtml(matrix(), { title: "Strategies", generatedBy: "pvmmu compare --sizes 1G,4G,16G" }),
    ).toBe(html);
  });

  it("escapes every text it is given", () => {
    const evil = '<img onerror="alert(1)">&' as StrategyName;
    const page = renderCompareHtml(
      [fixtureReport({ strategy: evil, audit: { ok: false, problems: ["<b>bad</b>"] } }), fixtureReport()],
      { title: "<title>", generatedBy: "a & b" },
    );
    expect(page).not.toContain("<img");
    expect(page).not.toContain("<b>bad");
    expect(page).toContain("&lt;img onerror=&quot;alert(1)&quot;&gt;&amp;");
    expect(page).toContain("&lt;b&gt;bad&lt;/b&gt;");
    expect(page).toContain("<title>&lt;title&gt;</title>");
    expect(page).toContain("a &amp; b");
  });

  it("renders with no runs, or with one size only", () => {
    expect(renderCompareHtml([], {})).toContain("No runs.");
    const one = renderCompareHtml([fixtureReport({ strategy: "shadow", workload: "server" })], {});
    expect(one).toContain("Workload <code>server</code>");
    expect(one).toContain("No boot run of a direct-map strategy");
    expect(one).not.toMatch(/NaN|Infinity|undefined/);
  });
});

describe("formulaChecks", () => {
  const boot = (strategy: StrategyName, directMapTablePages: number, memoryBytes = GiB) =>
    fixtureReport({ strategy, memoryBytes, boot: { directMapTablePages } });

  it("checks boot runs of direct-pfn and direct-mfn only", () => {
    const checks = formulaChecks([
      boot("direct-pfn", 515),
      boot("direct-mfn", 32834, 64 * GiB),
      boot("shadow", 1),
      boot("recursive", 1),
      fixtureReport({ strategy: "direct-pfn", workload: "fork-exec-exit", boot: { usedPages: 1 } }),
    ]);
    expect(
      checks.map((c) => [c.strategy, c.memoryBytes, c.measured, c.formula.total, c.difference, c.pass]),
    ).toEqual([
      ["direct-pfn", GiB, 515, 515, 0, true],
      ["direct-mfn", 64 * GiB, 32834, 32834, 0, true],
    ]);
    expect(checks[1].formula).toEqual({ l1: 32768, l2: 64, l3: 1, l4: 1, total: 32834 });
  });

  it("a pfn-indexed map must match exactly; a machine-frame map may only need more", () => {
    expect(FORMULA_TOLERANCE_PAGES).toBe(0);
    const pfn = [514, 515, 516].map((n) => formulaChecks([boot("direct-pfn", n)])[0].pass);
    expect(pfn).toEqual([false, true, false]);
    const mfn = [514, 515, 600].map((n) => formulaChecks([boot("direct-mfn", n)])[0].pass);
    expect(mfn).toEqual([false, true, true]);
    const html = renderCompareHtml([boot("direct-pfn", 515), boot("direct-mfn", 500)], {});
    expect(html).toContain("1 of 2 pass.");
    expect(html).toMatch(/<tr class="fail"><td>direct-mfn<\/td>.*<td>FAIL<\/td><\/tr>/);
    expect(html).toMatch(/<tr class="pass"><td>direct-pfn<\/td>.*<td>pass<\/td><\/tr>/);
  });
});

describe("niceTicks", () => {
  it("covers the maximum in steps of 1, 2 or 5 × 10^k from 0", () => {
    expect(niceTicks(515)).toEqual([0, 200, 400, 600]);
    expect(niceTicks(0.196)).toEqual([0, 0.05, 0.1, 0.15, 0.2]);
    expect(niceTicks(10)).toEqual([0, 2, 4, 6, 8, 10]);
    expect(niceTicks(0)).toEqual([0, 1]);
  });
});
