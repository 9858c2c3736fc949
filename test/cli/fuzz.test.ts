/** `pvmmu fuzz` from the command line: summary, JSON, exit codes, bad flags, worker threads. */

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";

const dir = mkdtempSync(join(tmpdir(), "pvmmu-fuzz-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const BIN = resolve(__dirname, "../../bin/pvmmu.js");

async function cli(args: string[]) {
  let out = "";
  let err = "";
  const code = await main(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

describe("pvmmu fuzz", () => {
  it("runs, prints a summary with coverage, exits 0 when nothing is found", async () => {
    const r = await cli(["fuzz", "--steps", "5k", "--seed", "9", "--out", join(dir, "a")]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^pvmmu fuzz: 5,0\d\d hypercalls \(policy xen, 3 domains, seed 9, 1 worker\)/);
    expect(r.out).toContain("findings: none");
    expect(r.out).toMatch(/coverage: \d+ hypercall × result pairs reached/);
    expect(r.out).toMatch(/mmu_update +0×\d+/);
    expect(existsSync(join(dir, "a"))).toBe(false);
  });

  it("--json: one object with the figures and the coverage", async () => {
    const r = await cli(["fuzz", "--steps", "4000", "--policy", "split-count", "--domains", "4", "--json"]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j).toMatchObject({ seed: 1, policy: "split-count", domains: 4, workers: 1, findings: [] });
    expect(j.steps).toBeGreaterThanOrEqual(4000);
    expect(j.coverage_pairs).toBeGreaterThan(30);
    expect(j.coverage.mmuext_op["0"]).toBeGreaterThan(0);
  });

  it("bad flags: one line naming the problem, exit code 2", async () => {
    for (const [args, msg] of [
      [["--policy", "bogus"], /--policy: 'bogus' is not one of xen, self-only, split-count, off/],
      [["--steps", "0"], /--steps: 0 is out of range/],
      [["--steps", "ten"], /--steps: 'ten' is not a whole number/],
      [["--workers", "0"], /--workers: 0 is out of range/],
      [["--domains", "1"], /--domains: 1 is out of range/],
      [["--seed", "-3"], /--seed/],
    ] as const) {
      const r = await cli(["fuzz", ...args]);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.err).toMatch(msg);
      expect(r.out).toBe("");
    }
  });

  it("--workers 2: worker threads with their own seed streams, deterministic", () => {
    const run = () =>
      spawnSync(
        process.execPath,
        [BIN, "fuzz", "--workers", "2", "--steps", "12k", "--seed", "4", "--json"],
        {
          encoding: "utf8",
        },
      );
    const a = run();
    expect(a.status, a.stderr).toBe(0);
    const j = JSON.parse(a.stdout);
    expect(j.workers).toBe(2);
    expect(j.steps).toBeGreaterThanOrEqual(12_000);
    const b = JSON.parse(run().stdout);
    expect(b.coverage).toEqual(j.coverage);
    expect(b.steps).toBe(j.steps);
  }, 60_000);
});
