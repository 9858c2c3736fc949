/**
 * The real comparison, end to end on small guests (what CI can afford): every strategy boots
 * and runs fork-exec-exit, the report is written, its formula checks pass against the closed
 * forms, and the runs are deterministic apart from wall time.
 */

import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";
import { runWorkload } from "../../src/guest/run.js";
import { directMapTablePages } from "../../src/report/formulas.js";
import { formulaChecks } from "../../src/report/html.js";

describe("pvmmu compare on real runs", () => {
  it("writes a self-contained report whose formula checks pass", async () => {
    const dir = mkdtempSync(join(tmpdir(), "pvmmu-compare-"));
    try {
      const file = join(dir, "report.html");
      let out = "";
      let err = "";
      const code = await main(
        [
          "compare",
          "--sizes",
          "64M,128M",
          "--workloads",
          "boot,fork-exec-exit",
          "--no-progress",
          "--json",
          "-o",
          file,
        ],
        { out: (s) => (out += s), err: (s) => (err += s) },
      );
      expect(err).toBe("");
      expect(code).toBe(0);
      const reports = JSON.parse(out);
      expect(reports).toHaveLength(5 * 2 * 2);
      for (const r of reports) expect(r.audit.ok).toBe(true);
      const checks = formulaChecks(reports);
      expect(checks).toHaveLength(4);
      for (const c of checks) expect(c.pass).toBe(true);
      const pfn = reports.find(
        (r: { strategy: string; workload: string; memoryBytes: number }) =>
          r.strategy === "direct-pfn" && r.workload === "boot" && r.memoryBytes === 128 * 2 ** 20,
      );
      expect(pfn.boot.directMapTablePages).toBe(directMapTablePages(128 * 2 ** 20)); // 64 + 1 + 1 + 1
      const html = readFileSync(file, "utf8");
      expect(html).toContain("<svg");
      expect(html).not.toMatch(/https?:/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("pvmmu run: NetBSD's alternate slot under the 2004 linear rule is a guest panic (exit 1, one line)", async () => {
    let out = "";
    let err = "";
    const argv = ["run", "--strategy", "netbsd", "--pinning", "eager", "--workload", "fork-exec-exit"];
    const code = await main(
      [...argv, "--memory", "64M", "--iterations", "1", "--linear-policy", "self-only"],
      {
        out: (s) => (out += s),
        err: (s) => (err += s),
      },
    );
    expect(code).toBe(1);
    expect(out).toBe("");
    expect(err).toMatch(/^pvmmu: guest kernel panic: .*-EINVAL.*\n$/);
  });

  it("the same options give the same report, wall times aside", () => {
    const o = {
      strategy: "netbsd",
      pinning: "eager",
      workload: "mmap-churn",
      memoryBytes: 64 * 2 ** 20,
      seed: 7,
    } as const;
    const strip = (r: ReturnType<typeof runWorkload>) =>
      JSON.stringify({
        ...r,
        wallMs: 0,
        ops: Object.fromEntries(Object.entries(r.ops).map(([k, v]) => [k, v.count])),
        suspendVisit: { ...r.suspendVisit, ms: 0, clearMs: 0 },
      });
    expect(strip(runWorkload(o))).toBe(strip(runWorkload(o)));
    expect(strip(runWorkload({ ...o, seed: 8 }))).not.toBe(strip(runWorkload(o)));
  });

  it("every workload runs on every strategy with the auditor clean", () => {
    for (const workload of ["mmap-churn", "cow-storm", "server", "grant-io"] as const) {
      for (const strategy of ["direct-pfn", "shadow", "recursive", "netbsd", "direct-mfn"] as const) {
        const r = runWorkload({
          strategy,
          pinning: "linux",
          workload,
          memoryBytes: 64 * 2 ** 20,
          seed: 1,
          iterations: 3,
        });
        expect(r.audit, `${workload} on ${strategy}`).toEqual({ ok: true, problems: [] });
      }
    }
  });
});
