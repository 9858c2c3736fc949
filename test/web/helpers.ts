/** Inputs for the explorer's tests: a saved image, a synthetic dump, the CLI in-process. */

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { main } from "../../src/cli/main.js";
import { synthLinuxImage, writeRawImage } from "../../src/dump/synth.js";
import { bootOnHost } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { MemorySink, saveGuest } from "../../src/migration/guest.js";

/** Boot a small guest, run a few steps of a workload, save it to `dir`/name; returns the path. */
export async function savedImage(dir: string, name = "guest.img"): Promise<string> {
  const opts = {
    strategy: "recursive" as const,
    pinning: "linux" as const,
    workload: "fork-exec-exit" as const,
    memoryBytes: 64 * 2 ** 20,
    seed: 3,
    iterations: 4,
  };
  const { h, kernel } = bootOnHost(opts);
  const run = new WorkloadRun(kernel, opts.workload, { seed: 3, iterations: 4 });
  run.next();
  run.next();
  const sink = new MemorySink();
  await saveGuest(h, kernel, run, sink, { live: false });
  const path = join(dir, name);
  writeFileSync(path, sink.concat());
  return path;
}

/** A 64 MiB synthetic Linux-like dump in `dir`; returns its path and CR3. */
export function syntheticDump(dir: string, name = "linux.raw"): { path: string; cr3: number } {
  const s = synthLinuxImage({ ramBytes: 64 * 2 ** 20 });
  const path = join(dir, name);
  writeRawImage(s.mem, path);
  return { path, cr3: s.cr3 };
}

export async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(args, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}
