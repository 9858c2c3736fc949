/** The terminal table: columns, alignment, the main operation, the audit verdict. */

import { describe, expect, it } from "vitest";
import type { StrategyName } from "../../src/guest/report.js";
import { mainOp, msPerMainOp } from "../../src/report/metrics.js";
import { renderTable } from "../../src/report/table.js";
import { fixtureReport } from "./fixtures.js";

describe("renderTable", () => {
  const reports = [
    fixtureReport({ strategy: "direct-pfn", memoryBytes: 2 ** 30 }),
    fixtureReport({ strategy: "recursive", workload: "fork-exec-exit", memoryBytes: 64 * 2 ** 30 }),
    fixtureReport({ strategy: "shadow", audit: { ok: false, problems: ["stale TLB entry"] } }),
  ];
  const text = renderTable(reports);
  const lines = text.trimEnd().split("\n");

  it("has a header, a rule and one row per report, in order", () => {
    expect(lines).toHaveLength(2 + reports.length);
    expect(lines[0].split(/\s+/)).toEqual([
      "strategy",
      "pinning",
      "workload",
      "memory",
      "tables",
      "share%",
      "hypercalls",
      "pte-updates",
      "validated",
      "tlb-flushes",
      "main-op",
      "ops",
      "ms/op",
      "visit-hc",
      "visit-ms",
      "audit",
    ]);
    expect(lines[1]).toMatch(/^[- ]+$/);
    expect(lines[2].split(/\s+/)).toEqual([
      "direct-pfn",
      "linux",
      "boot",
      "1G",
      "515",
      "0.196",
      "55",
      "5020",
      `${515 * 512}`,
      "13",
      "boot",
      "1",
      "12.5",
      "-",
      "-",
      "ok",
    ]);
    expect(lines[3]).toContain("64G");
    expect(lines[3]).toContain("32834");
    expect(lines[4].endsWith("FAIL")).toBe(true);
    expect(text.endsWith("\n")).toBe(true);
    for (const l of lines) expect(l).toBe(l.trimEnd());
  });

  it("aligns columns: text starts under its heading, numbers end under theirs", () => {
    const head = lines[0];
    for (const l of lines.slice(2)) {
      expect(l.lastIndexOf(" ") + 1).toBe(head.indexOf("audit"));
      expect(l.indexOf("linux")).toBe(head.indexOf("pinning"));
      const tablesEnd = head.indexOf("tables") + "tables".length;
      expect(l[tablesEnd - 1]).toMatch(/\d/);
      expect(l[tablesEnd]).toBe(" ");
    }
  });

  it("the main operation is the most frequent; ties go to the first name", () => {
    const r = fixtureReport({ workload: "fork-exec-exit" });
    expect(mainOp(r)).toEqual({ name: "exec", count: 20, ms: 6 });
    expect(msPerMainOp(r)).toBeCloseTo(0.3);
    expect(mainOp(fixtureReport({ ops: { a: { count: 1, ms: 1 }, b: { count: 5, ms: 1 } } }))?.name).toBe(
      "b",
    );
    expect(mainOp(fixtureReport({ ops: {} }))).toBeUndefined();
    expect(renderTable([fixtureReport({ ops: {} })])).toMatch(/ - +0 +- +- +- +ok\n$/);
  });

  it("is the same text for the same reports, and shows control characters as ?", () => {
    expect(renderTable(reports)).toBe(text);
    const odd = renderTable([fixtureReport({ strategy: "a\u001b[31mb" as StrategyName })]);
    expect(odd).not.toContain("\u001b");
    expect(odd).toContain("a?[31mb");
  });
});
