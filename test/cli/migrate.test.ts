import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.js";

const dir = mkdtempSync(join(tmpdir(), "pvmmu-migrate-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function cli(args: string[]) {
  let out = "";
  let err = "";
  const code = await main(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const guest = ["--strategy", "shadow", "--workload", "mmap-churn", "--memory", "64M", "--iterations", "20"];

describe("pvmmu save / restore", () => {
  it("saves a guest, restores it elsewhere and finishes with the hash of a run that never moved", async () => {
    const file = join(dir, "g.img");
    const saved = await cli(["save", ...guest, "--after", "7", "-o", file, "--json"]);
    expect(saved.code).toBe(0);
    const s = JSON.parse(saved.out);
    expect(s.stepsDone).toBe(7);
    expect(existsSync(`${file}.partial`)).toBe(false);
    expect(readFileSync(file).subarray(8, 12).toString()).toBe("XENF");
    const restored = await cli(["restore", file, "--json"]);
    expect(restored.code).toBe(0);
    const r = JSON.parse(restored.out);
    expect(r.hashAtResume).toBe(s.memoryHash);
    expect(r.audit).toBe("ok");
    const plain = await cli(["run", ...guest, "--json"]);
    expect(r.memoryHash).toBe(JSON.parse(plain.out).memoryHash);
  }, 60_000);

  it("bad input: one line naming the problem, exit code 2, nothing written", async () => {
    const file = join(dir, "bad.img");
    writeFileSync(file, Buffer.alloc(100, 0xff));
    const bad = await cli(["restore", file]);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/^pvmmu: .*bad\.img: .*offset 0x/);
    expect(bad.out).toBe("");
    expect((await cli(["restore", join(dir, "missing.img")])).code).toBe(2);
    const mfn = await cli([
      "save",
      "--strategy",
      "direct-mfn",
      "--workload",
      "boot",
      "--memory",
      "64M",
      "-o",
      join(dir, "x"),
    ]);
    expect(mfn.code).toBe(2);
    expect(mfn.err).toMatch(/direct-mfn cannot be saved/);
    expect(existsSync(join(dir, "x"))).toBe(false);
    expect((await cli(["host", "--listen", "nonsense"])).code).toBe(2);
    expect((await cli(["run", ...guest, "--migrate-to", "127.0.0.1:99999"])).code).toBe(2);
  }, 60_000);
});
