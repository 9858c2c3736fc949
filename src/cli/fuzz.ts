/**
 * `pvmmu fuzz`: hostile guests against the hypervisor (src/fuzz/). Each
 * finding is shrunk and written as a scenario file that `pvmmu replay`
 * reproduces. Exit code 0: nothing found; 1: findings (their files listed);
 * 2: bad flags.
 */

import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import type { FuzzResult } from "../fuzz/engine.js";
import { fuzzParallel, mergeResults } from "../fuzz/parallel.js";
import {
  checkWorld,
  DEFAULT_WORLD,
  FUZZ_POLICIES,
  type FuzzPolicy,
  type WorldOptions,
} from "../fuzz/world.js";
import type { ProgressStream } from "./compare.js";
import { UsageError } from "./errors.js";
import { parseSeed } from "./run.js";

interface FuzzFlags {
  seed: string;
  steps: string;
  domains: string;
  policy: string;
  workers: string;
  out: string;
  episode: string;
  auditEvery: string;
  maxFindings: string;
  json?: boolean;
  progress: boolean;
}

/** A count with an optional k (10^3) or M (10^6) suffix, from `min` to `max`. */
export function parseAmount(text: string, flag: string, min: number, max: number): number {
  const m = /^(\d+)([kKmM])?$/.exec(text.trim());
  if (!m) throw new UsageError(`${flag}: '${text}' is not a whole number (10000, 50k, 10M)`);
  const v = Number(m[1]) * (m[2] === undefined ? 1 : /k/i.test(m[2]) ? 1e3 : 1e6);
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new UsageError(`${flag}: ${text} is out of range (${min} to ${max.toLocaleString("en")})`);
  }
  return v;
}

function progressBar(stream: ProgressStream, total: number) {
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: "fuzz {bar} {percentage}% | {value}/{total} steps | {speed} steps/s | findings: {findings}",
      hideCursor: true,
      clearOnComplete: true,
      gracefulExit: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const t0 = performance.now();
  bar.start(total, 0, { speed: 0, findings: 0 });
  return {
    update(steps: number, findings: number) {
      const s = (performance.now() - t0) / 1000;
      bar.update(Math.min(steps, total), { speed: s > 0 ? Math.round(steps / s) : 0, findings });
    },
    stop: () => bar.stop(),
  };
}

function writeFinding(dir: string, name: string, text: string): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, name);
  writeFileSync(`${path}.partial`, text);
  renameSync(`${path}.partial`, path);
  return path;
}

export function registerFuzz(
  program: Command,
  out: (s: string) => void,
  setExit: (code: number) => void,
  stream: ProgressStream = process.stderr,
): void {
  program
    .command("fuzz")
    .description(
      "hostile guests against the hypervisor: structured random hypercalls, invariant checks after every step, " +
        "findings shrunk to scenario files that `pvmmu replay` reproduces",
    )
    .option("--seed <n>", "seed of the run (each worker fuzzes its own stream derived from it)", "1")
    .option("--steps <n>", "hypercalls in all, e.g. 100000, 50k, 10M", "100k")
    .option(
      "--domains <n>",
      "domains per world: domid 0 privileged, the others not (2–16)",
      String(DEFAULT_WORLD.domains),
    )
    .option(
      "--policy <p>",
      `linear page-table policy: ${FUZZ_POLICIES.join(", ")} (off: pv-linear-pt disabled)`,
      "xen",
    )
    .option("--workers <n>", "worker threads", "1")
    .option("--out <dir>", "where findings' scenario files are written", "fuzz-findings")
    .option("--episode <n>", "steps before starting from a fresh host", "400")
    .option("--audit-every <n>", "full audit every N steps (local checks run after every step)", "100")
    .option("--max-findings <n>", "stop a worker after this many findings", "1")
    .option("--json", "print the summary as JSON")
    .option("--no-progress", "no progress bar")
    .action(async (o: FuzzFlags) => {
      const seed = parseSeed(o.seed);
      const steps = parseAmount(o.steps, "--steps", 1, 1e10);
      const workers = parseAmount(o.workers, "--workers", 1, 64);
      if (!(FUZZ_POLICIES as readonly string[]).includes(o.policy)) {
        throw new UsageError(`--policy: '${o.policy}' is not one of ${FUZZ_POLICIES.join(", ")}`);
      }
      const world: WorldOptions = {
        ...DEFAULT_WORLD,
        policy: o.policy as FuzzPolicy,
        domains: parseAmount(o.domains, "--domains", 2, 16),
      };
      try {
        checkWorld(world);
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const episodeSteps = parseAmount(o.episode, "--episode", 1, 1e6);
      const auditEvery = parseAmount(o.auditEvery, "--audit-every", 1, 1e6);
      const maxFindings = parseAmount(o.maxFindings, "--max-findings", 1, 1000);

      const bar = o.progress && !o.json && stream.isTTY ? progressBar(stream, steps) : undefined;
      const t0 = performance.now();
      let results: Awaited<ReturnType<typeof fuzzParallel>>;
      try {
        results = await fuzzParallel({
          seed,
          steps,
          workers,
          world,
          episodeSteps,
          auditEvery,
          maxFindings,
          onProgress: bar ? (s, f) => bar.update(s, f) : undefined,
        });
      } finally {
        bar?.stop();
      }
      const seconds = (performance.now() - t0) / 1000;
      const merged: FuzzResult = mergeResults(results);
      const files: { file: string; kind: string; message: string; calls: number; from: number }[] = [];
      for (const r of results) {
        for (const f of r.findings) {
          const name = `${f.kind}-${o.policy}-seed${seed}-w${r.worker}-e${f.episode}.jsonl`;
          files.push({
            file: writeFinding(o.out, name, f.scenario),
            kind: f.kind,
            message: f.message,
            calls: f.shrunkSteps,
            from: f.originalSteps,
          });
        }
      }
      const rate = Math.round(merged.steps / seconds);
      if (o.json) {
        out(
          `${JSON.stringify({
            seed,
            policy: world.policy,
            domains: world.domains,
            workers,
            steps: merged.steps,
            episodes: merged.episodes,
            skipped: merged.skipped,
            seconds: Number(seconds.toFixed(3)),
            steps_per_s: rate,
            findings: files,
            coverage_pairs: merged.coverage.pairs,
            coverage: merged.coverage.toJSON(),
          })}\n`,
        );
      } else {
        const n = (x: number) => x.toLocaleString("en");
        out(
          `pvmmu fuzz: ${n(merged.steps)} hypercalls (policy ${world.policy}, ${world.domains} domains, seed ${seed}, ` +
            `${workers} worker${workers > 1 ? "s" : ""}) in ${seconds.toFixed(1)} s — ${n(rate)} per second\n`,
        );
        out(`episodes: ${n(merged.episodes)}; actions that named nothing existing: ${n(merged.skipped)}\n`);
        if (files.length === 0) out("findings: none\n");
        for (const f of files) {
          out(
            `FINDING ${f.kind}: ${f.message}\n  ${f.file} (${f.calls} calls, shrunk from ${f.from}); replay: pvmmu replay ${f.file}\n`,
          );
        }
        out(
          `coverage: ${merged.coverage.pairs} hypercall × result pairs reached\n${merged.coverage.table()}\n`,
        );
      }
      setExit(files.length > 0 ? 1 : 0);
    });
}
