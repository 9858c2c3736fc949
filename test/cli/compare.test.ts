/**
 * `pvmmu compare`: every list and the output directory are checked before
 * anything runs; the matrix goes through the runner in a fixed order; the table
 * (or JSON) goes to stdout and the HTML report to -o, written whole or not at
 * all; the progress bar only on a terminal. The runner is replaced by fixtures.
 */

import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { Command } from "commander";
import { afterAll, beforeEach, describe, expect, it, vi } from "vitest";
import { registerCompare } from "../../src/cli/compare.js";
import { main } from "../../src/cli/main.js";
import type { RunOptions } from "../../src/guest/run.js";
import { runWorkload } from "../../src/guest/run.js";
import { fakeRunner, fixtureReport } from "../report/fixtures.js";

vi.mock("../../src/guest/run.js", async (importOriginal) => {
  const { fakeRunner } = await import("../report/fixtures.js");
  return {
    ...(await importOriginal<typeof import("../../src/guest/run.js")>()),
    runWorkload: vi.fn(fakeRunner()),
  };
});

const runner = vi.mocked(runWorkload);
const dir = mkdtempSync(join(tmpdir(), "pvmmu-compare-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(...argv: string[]) {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

beforeEach(() => {
  runner.mockClear();
});

describe("pvmmu compare: errors before anything runs", () => {
  const bad: [string[], RegExp][] = [
    [["--strategies", "direct-pfn,magic"], /^pvmmu: unknown strategy 'magic' \(one of: /],
    [["--strategies", ""], /--strategies: empty item in ''/],
    [["--workloads", "boot,,server"], /--workloads: empty item in 'boot,,server'/],
    [["--workloads", "idle"], /unknown workload 'idle'/],
    [["--sizes", "1G,3K"], /--sizes: 3K is not a whole number of MiB/],
    [["--sizes", "1G,32M"], /--sizes: 32M is below the minimum/],
    [["--sizes", "1G,lots"], /--sizes: 'lots' is not a size/],
    [["--pinning", "lazy"], /unknown pinning policy 'lazy'/],
    [["--seed", "x"], /--seed: 'x' is not a whole number/],
    [
      ["-o", join(dir, "missing", "report.html")],
      /-o: cannot write '.*report\.html': directory '.*missing' does not exist/,
    ],
    [["-o", dir], /-o: '.*' is a directory/],
  ];
  for (const [flags, message] of bad) {
    it(`${flags.join(" ")}: exit 2, one line, nothing run or written`, async () => {
      const r = await cli("compare", ...flags);
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err).toMatch(/^pvmmu: [^\n]+\n$/);
      expect(r.err).toMatch(message);
      expect(runner).not.toHaveBeenCalled();
    });
  }

  it("an output path under a file is refused", async () => {
    const file = join(dir, "plain-file");
    writeFileSync(file, "x");
    const r = await cli("compare", "-o", join(file, "report.html"));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/is not a directory|does not exist/);
    expect(runner).not.toHaveBeenCalled();
  });
});

describe("pvmmu compare: the matrix", () => {
  it("defaults: every strategy, boot and fork-exec-exit, 1G and 4G, linux pinning, seed 1", async () => {
    const r = await cli("compare");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    const calls = runner.mock.calls.map(([o]) => o);
    expect(calls).toHaveLength(5 * 2 * 2);
    expect(calls.slice(0, 6)).toEqual([
      ...["direct-mfn", "direct-pfn", "shadow", "recursive", "netbsd"].map((strategy) => ({
        strategy,
        pinning: "linux",
        workload: "boot",
        memoryBytes: 2 ** 30,
        seed: 1,
      })),
      { strategy: "direct-mfn", pinning: "linux", workload: "boot", memoryBytes: 4 * 2 ** 30, seed: 1 },
    ]);
    expect(calls[19]).toMatchObject({
      strategy: "netbsd",
      workload: "fork-exec-exit",
      memoryBytes: 4 * 2 ** 30,
    });
    // The table: header, rule, 20 rows; then the formula check of the 4 direct-map boots.
    const [table, check] = r.out.split("\n\n");
    const rows = table.split("\n");
    expect(rows[0]).toMatch(/^strategy +pinning +workload +memory +tables/);
    expect(rows).toHaveLength(2 + 20);
    expect(rows[2]).toMatch(/^direct-mfn +linux +boot +1G +515 +0\.196 /);
    expect(check.split("\n").filter((l) => l.startsWith("  pass"))).toHaveLength(4);
    expect(check).toContain("pass  direct-pfn linux 4G: measured 2054, formula 2054 (2048 + 4 + 1 + 1)");
  });

  it("takes lists, dropping repeats; sizes in any unit", async () => {
    const r = await cli(
      "compare",
      "--strategies",
      "shadow,recursive,shadow",
      "--workloads",
      "server",
      "--sizes",
      "64M,1024M,1G",
      "--pinning",
      "linux,eager",
      "--seed",
      "9",
    );
    expect(r.code).toBe(0);
    expect(runner.mock.calls.map(([o]) => `${o.strategy} ${o.pinning} ${o.memoryBytes / 2 ** 20}`)).toEqual([
      "shadow linux 64",
      "recursive linux 64",
      "shadow eager 64",
      "recursive eager 64",
      "shadow linux 1024",
      "recursive linux 1024",
      "shadow eager 1024",
      "recursive eager 1024",
    ]);
    expect(r.out).not.toContain("formula check");
  });

  it("--json prints the reports as an array", async () => {
    const r = await cli(
      "compare",
      "--strategies",
      "direct-pfn",
      "--workloads",
      "boot",
      "--sizes",
      "1G",
      "--json",
    );
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual([fixtureReport({ strategy: "direct-pfn", memoryBytes: 2 ** 30 })]);
  });

  it("exits 1 if any audit is not clean", async () => {
    runner.mockReturnValueOnce(fixtureReport({ audit: { ok: false, problems: ["leak"] } }));
    const r = await cli("compare", "--workloads", "boot", "--sizes", "1G");
    expect(r.code).toBe(1);
    expect(r.out.split("\n")[2]).toMatch(/FAIL$/);
  });
});

describe("pvmmu compare -o", () => {
  it("writes the HTML report and prints the table", async () => {
    const sub = join(dir, "ok");
    mkdirSync(sub);
    const file = join(sub, "report.html");
    const r = await cli("compare", "--sizes", "1G,4G,16G", "-o", file);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^strategy +pinning/);
    expect(r.out.endsWith(`\nHTML report: ${file}\n`)).toBe(true);
    expect(readdirSync(sub)).toEqual(["report.html"]); // no temporary file left
    const html = readFileSync(file, "utf8");
    expect(html).toContain("<svg");
    expect(html).not.toMatch(/https?:/);
    expect(html).toContain(
      "made by <code>pvmmu compare --strategies direct-mfn,direct-pfn,shadow,recursive,netbsd " +
        "--workloads boot,fork-exec-exit --sizes 1G,4G,16G --pinning linux --seed 1</code>",
    );
    expect(html).toContain("6 of 6 pass.");
  });

  it("replaces an existing report whole", async () => {
    const file = join(dir, "again.html");
    writeFileSync(file, "old");
    const r = await cli("compare", "--workloads", "boot", "--sizes", "1G", "-o", file, "--json");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toHaveLength(5);
    expect(readFileSync(file, "utf8")).toMatch(/^<!doctype html>/);
  });

  it("writes nothing if a run fails", async () => {
    const sub = join(dir, "failing");
    mkdirSync(sub);
    runner.mockImplementationOnce(fakeRunner()).mockImplementationOnce(() => {
      throw new Error("guest crashed");
    });
    await expect(cli("compare", "-o", join(sub, "report.html"))).rejects.toThrow("guest crashed");
    expect(readdirSync(sub)).toEqual([]);
  });
});

describe("pvmmu compare: progress bar", () => {
  /** A stand-in terminal (or not) that records what is written to it. */
  function stream(isTTY: boolean) {
    const chunks: string[] = [];
    const s = new Writable({
      write(chunk, _enc, cb) {
        chunks.push(String(chunk));
        cb();
      },
    }) as Writable & { isTTY?: boolean };
    s.isTTY = isTTY;
    return { s, text: () => chunks.join("") };
  }

  async function run(isTTY: boolean, ...flags: string[]) {
    const calls: RunOptions[] = [];
    const term = stream(isTTY);
    let out = "";
    const program = new Command().exitOverride();
    registerCompare(program, (s) => (out += s), undefined, {
      runner: fakeRunner(calls),
      progressStream: term.s,
    });
    await program.parseAsync(["compare", "--workloads", "boot", "--sizes", "1G", ...flags], { from: "user" });
    return { calls, out, progress: term.text() };
  }

  it("draws on a terminal, through the injected runner", async () => {
    const r = await run(true);
    expect(r.calls).toHaveLength(5);
    expect(runner).not.toHaveBeenCalled();
    expect(r.progress).toMatch(/\d\/5 runs/);
    expect(r.out).not.toMatch(/runs \|/);
  });

  it("stays silent with --no-progress, or when stderr is not a terminal", async () => {
    expect((await run(true, "--no-progress")).progress).toBe("");
    const piped = await run(false);
    expect(piped.progress).toBe("");
    expect(piped.calls).toHaveLength(5);
  });
});
