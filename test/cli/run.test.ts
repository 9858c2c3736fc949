/**
 * `pvmmu run` through `main`: argument errors are one line on stderr with exit
 * code 2 and nothing run; a report prints as text or JSON; an unclean audit
 * exits 1. The runner is replaced by fixtures (the guest model is tested apart).
 */

import { beforeEach, describe, expect, it, vi } from "vitest";
import { main } from "../../src/cli/main.js";
import { parseSize } from "../../src/cli/run.js";
import { runWorkload } from "../../src/guest/run.js";
import { fixtureReport } from "../report/fixtures.js";

vi.mock("../../src/guest/run.js", async (importOriginal) => {
  const { fakeRunner } = await import("../report/fixtures.js");
  return {
    ...(await importOriginal<typeof import("../../src/guest/run.js")>()),
    runWorkload: vi.fn(fakeRunner()),
  };
});

const runner = vi.mocked(runWorkload);

async function cli(...argv: string[]) {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const OK = ["run", "--strategy", "direct-pfn", "--workload", "boot", "--memory", "1G"];

beforeEach(() => {
  runner.mockClear();
});

describe("pvmmu run: argument errors", () => {
  const bad: [string, string[], RegExp][] = [
    ["unknown strategy", ["--strategy", "magic"], /unknown strategy 'magic' \(one of: direct-mfn, /],
    ["unknown workload", ["--workload", "idle"], /unknown workload 'idle'/],
    ["unknown pinning", ["--pinning", "lazy"], /unknown pinning policy 'lazy' \(one of: linux, eager\)/],
    ["unknown boot method", ["--boot", "bottom-up"], /unknown boot method 'bottom-up'/],
    ["size without a number", ["--memory", "G"], /--memory: 'G' is not a size/],
    ["fractional size", ["--memory", "1.5G"], /not a size/],
    ["unknown unit", ["--memory", "64X"], /not a size/],
    ["size below 64 MiB", ["--memory", "63M"], /below the minimum, 64M/],
    ["bytes not a whole MiB", ["--memory", "1000000000"], /not a whole number of MiB/],
    ["size beyond 52 bits", ["--memory", "8192T"], /above the maximum/],
    ["negative seed", ["--seed", "-1"], /--seed: '-1' is not a whole number/],
    ["seed beyond 32 bits", ["--seed", "4294967296"], /--seed: 4294967296 is out of range/],
    ["zero iterations", ["--iterations", "0"], /--iterations: 0 is out of range/],
    ["a huge mmu_update batch", ["--mmu-batch", "100000"], /--mmu-batch: 100000 is out of range/],
    ["an unknown linear policy", ["--linear-policy", "bogus"], /unknown linear page-table policy 'bogus'/],
    ["a multicall batch of nothing", ["--mc-batch", "0"], /--mc-batch: 0 is out of range/],
  ];
  for (const [what, flags, message] of bad) {
    it(`${what}: one line on stderr, exit 2, nothing run or printed`, async () => {
      const argv = [...OK];
      for (let i = 0; i < flags.length; i += 2) {
        const at = argv.indexOf(flags[i]);
        if (at >= 0) argv[at + 1] = flags[i + 1];
        else argv.push(flags[i], flags[i + 1]);
      }
      const r = await cli(...argv);
      expect(r.code).toBe(2);
      expect(r.out).toBe("");
      expect(r.err).toMatch(/^pvmmu: [^\n]+\n$/);
      expect(r.err).toMatch(message);
      expect(runner).not.toHaveBeenCalled();
    });
  }

  it("a missing required flag names it", async () => {
    const r = await cli("run", "--workload", "boot", "--memory", "1G");
    expect(r).toEqual({
      code: 2,
      out: "",
      err: "pvmmu: missing --strategy (one of: direct-mfn, direct-pfn, shadow, recursive, netbsd)\n",
    });
    expect((await cli("run", "--strategy", "shadow", "--workload", "boot")).err).toMatch(
      /^pvmmu: missing --memory/,
    );
  });
});

describe("pvmmu run: sizes", () => {
  it("reads binary units and plain bytes", () => {
    expect(parseSize("64M")).toBe(64 * 2 ** 20);
    expect(parseSize("512M")).toBe(512 * 2 ** 20);
    expect(parseSize("1G")).toBe(2 ** 30);
    expect(parseSize("64g")).toBe(64 * 2 ** 30);
    expect(parseSize("256G")).toBe(2 ** 38);
    expect(() => parseSize("1T")).toThrow(/above the maximum, 256G/);
    expect(parseSize("2GiB")).toBe(2 * 2 ** 30);
    expect(parseSize("65536K")).toBe(64 * 2 ** 20);
    expect(parseSize("1073741824")).toBe(2 ** 30);
  });
});

describe("pvmmu run: output", () => {
  it("passes the options to the runner", async () => {
    const r = await cli(
      ...OK,
      "--pinning",
      "eager",
      "--boot",
      "linear",
      "--seed",
      "0x2a",
      "--iterations",
      "7",
    );
    expect(r.code).toBe(0);
    expect(runner).toHaveBeenCalledTimes(1);
    expect(runner.mock.calls[0][0]).toEqual({
      strategy: "direct-pfn",
      workload: "boot",
      memoryBytes: 2 ** 30,
      pinning: "eager",
      bootMethod: "linear",
      seed: 42,
      iterations: 7,
    });
  });

  it("defaults: linux pinning, seed 1, the runner's boot method and iterations", async () => {
    await cli(...OK);
    expect(runner.mock.calls[0][0]).toEqual({
      strategy: "direct-pfn",
      workload: "boot",
      memoryBytes: 2 ** 30,
      pinning: "linux",
      seed: 1,
    });
  });

  it("prints every field group as text", async () => {
    const r = await cli(...OK);
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    const labels = r.out
      .split("\n")
      .filter((l) => /^[a-zA-Z][\w ]*:/.test(l))
      .map((l) => l.slice(0, l.indexOf(":")));
    expect(labels).toEqual([
      "run",
      "page tables",
      "companion pages",
      "kernel VA",
      "P2M",
      "M2P",
      "hypercalls",
      "batches",
      "PTE updates",
      "validated entries",
      "TLB flushes",
      "lookups",
      "operations",
      "boot",
      "wall time",
      "audit",
    ]);
    expect(r.out).toContain("515 pages (L1 512, L2 1, L3 1, L4 1), 0.196% of guest memory");
    expect(r.out).toMatch(/hypercalls: +55 in all\n +mmu_update +40\n +mmuext_op +12\n +multicall +3\n/);
    expect(r.out).toContain("P2M:                2 MiB");
    expect(r.out).toMatch(/audit: +ok\n$/);
  });

  it("--json prints the report", async () => {
    const r = await cli(...OK, "--json");
    expect(JSON.parse(r.out)).toEqual(fixtureReport({ memoryBytes: 2 ** 30 }));
  });

  it("exits 1 when the audit is not clean, and lists the problems", async () => {
    runner.mockReturnValueOnce(
      fixtureReport({ audit: { ok: false, problems: ["mfn 0x12: type count 1, expected 0"] } }),
    );
    const r = await cli(...OK);
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/audit: +FAIL \(1 problem\)\n {2}mfn 0x12: type count 1, expected 0\n$/);
  });
});
