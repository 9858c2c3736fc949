/**
 * `pvmmu compare`: run a matrix of strategies × workloads × guest sizes (×
 * pinning policies) and print one table row per run, or the reports as a JSON
 * array; `-o FILE` also writes the HTML report. Every list, and the output
 * directory, is checked before anything runs. A progress bar goes to stderr
 * when it is a terminal (and `--no-progress` is not given). Exit code 1 if
 * any run's audit is not clean.
 */

import { accessSync, constants, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import {
  PINNING_POLICIES,
  type PinningPolicy,
  type RunReport,
  STRATEGIES,
  type StrategyName,
  WORKLOADS,
  type WorkloadName,
} from "../guest/report.js";
import { type RunOptions, runWorkload } from "../guest/run.js";
import { formulaChecks, renderCompareHtml } from "../report/html.js";
import { formatSize } from "../report/metrics.js";
import { renderTable } from "../report/table.js";
import { UsageError } from "./errors.js";
import { parseChoice, parseList, parseSeed, parseSize, type Runner } from "./run.js";

export const DEFAULT_WORKLOADS = "boot,fork-exec-exit";
export const DEFAULT_SIZES = "1G,4G";

/** Where the progress bar is drawn; it is drawn only if `isTTY`. */
export interface ProgressStream extends NodeJS.WritableStream {
  isTTY?: boolean;
}

export interface CompareDeps {
  /** Runs one workload (default `runWorkload`). */
  runner?: Runner;
  /** The progress bar's stream (default `process.stderr`). */
  progressStream?: ProgressStream;
}

interface CompareFlags {
  strategies?: string;
  workloads: string;
  sizes: string;
  pinning: string;
  seed: string;
  output?: string;
  json?: boolean;
  progress: boolean;
}

export interface ComparePlan {
  runs: RunOptions[];
  /** The command line that reproduces the plan (shown in the HTML report). */
  commandLine: string;
}

/** Check every list and build the runs, workload by workload, size by size, strategy by strategy. */
export function comparePlan(o: CompareFlags): ComparePlan {
  const strategies = parseList(o.strategies ?? STRATEGIES.join(","), "--strategies").map((s) =>
    parseChoice<StrategyName>(s, STRATEGIES, "strategy"),
  );
  const workloads = parseList(o.workloads, "--workloads").map((w) =>
    parseChoice<WorkloadName>(w, WORKLOADS, "workload"),
  );
  const sizes = [...new Set(parseList(o.sizes, "--sizes").map((s) => parseSize(s, "--sizes")))];
  const pinnings = parseList(o.pinning, "--pinning").map((p) =>
    parseChoice<PinningPolicy>(p, PINNING_POLICIES, "pinning policy"),
  );
  const seed = parseSeed(o.seed);
  const runs: RunOptions[] = [];
  for (const workload of workloads) {
    for (const memoryBytes of sizes) {
      for (const pinning of pinnings) {
        for (const strategy of strategies) runs.push({ strategy, pinning, workload, memoryBytes, seed });
      }
    }
  }
  const commandLine = [
    "pvmmu compare",
    `--strategies ${strategies.join(",")}`,
    `--workloads ${workloads.join(",")}`,
    `--sizes ${sizes.map(formatSize).join(",")}`,
    `--pinning ${pinnings.join(",")}`,
    `--seed ${seed}`,
  ].join(" ");
  return { runs, commandLine };
}

/** The output path, checked: not a directory, in an existing directory we may write. */
export function checkOutputPath(path: string): string {
  const abs = resolve(path);
  let isDir = false;
  try {
    isDir = statSync(abs).isDirectory();
  } catch {
    // does not exist yet: fine
  }
  if (isDir) throw new UsageError(`-o: '${path}' is a directory`);
  const dir = dirname(abs);
  let dirOk = false;
  try {
    dirOk = statSync(dir).isDirectory();
  } catch {
    throw new UsageError(`-o: cannot write '${path}': directory '${dir}' does not exist`);
  }
  if (!dirOk) throw new UsageError(`-o: cannot write '${path}': '${dir}' is not a directory`);
  try {
    accessSync(dir, constants.W_OK);
  } catch {
    throw new UsageError(`-o: cannot write '${path}': directory '${dir}' is not writable`);
  }
  return abs;
}

/** Write `text` to a temporary file beside `abs`, then rename it over `abs`: never a half-written file. */
export function writeFileAtomically(abs: string, text: string, shownAs = abs): void {
  const tmp = join(dirname(abs), `.${basename(abs)}.${process.pid}.tmp`);
  try {
    writeFileSync(tmp, text);
    renameSync(tmp, abs);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new UsageError(`-o: cannot write '${shownAs}': ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
}

interface Progress {
  update(done: number, label: string): void;
  stop(): void;
}

function progressBar(stream: ProgressStream, total: number): Progress {
  const bar = new cliProgress.SingleBar(
    {
      stream,
      format: "{bar} {value}/{total} runs | {run}",
      hideCursor: true,
      clearOnComplete: true,
      gracefulExit: true,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { run: "" });
  return {
    update: (done, label) => bar.update(done, { run: label }),
    stop: () => bar.stop(),
  };
}

const label = (r: RunOptions): string =>
  `${r.strategy} ${r.pinning} ${r.workload} ${formatSize(r.memoryBytes)}`;

/** Lets a timer-driven progress bar draw between synchronous runs. */
const yieldToEventLoop = (): Promise<void> => new Promise((res) => setImmediate(res));

export function registerCompare(
  program: Command,
  out: (s: string) => void,
  setExit: (code: number) => void = () => {},
  deps: CompareDeps = {},
): void {
  program
    .command("compare")
    .description("run strategies × workloads × guest sizes and tabulate the costs (and write an HTML report)")
    .option("--strategies <list>", `comma-separated (default: all: ${STRATEGIES.join(",")})`)
    .option("--workloads <list>", `comma-separated, from: ${WORKLOADS.join(", ")}`, DEFAULT_WORKLOADS)
    .option("--sizes <list>", "guest memory sizes, comma-separated (64M … 1T)", DEFAULT_SIZES)
    .option("--pinning <list>", `pinning policies, comma-separated: ${PINNING_POLICIES.join(", ")}`, "linux")
    .option("--seed <n>", "seed for every run (0 to 4294967295)", "1")
    .option("-o, --output <file>", "also write the HTML report to this file")
    .option("--json", "print the reports as a JSON array instead of the table")
    .option("--no-progress", "no progress bar (it is shown on stderr only when stderr is a terminal)")
    .action(async (o: CompareFlags) => {
      const plan = comparePlan(o);
      const outPath = o.output === undefined ? undefined : checkOutputPath(o.output);
      const runner = deps.runner ?? runWorkload;
      const stream = deps.progressStream ?? process.stderr;
      const progress = o.progress && stream.isTTY ? progressBar(stream, plan.runs.length) : undefined;
      const reports: RunReport[] = [];
      try {
        for (const [i, run] of plan.runs.entries()) {
          progress?.update(i, label(run));
          if (progress) await yieldToEventLoop();
          reports.push(runner(run));
        }
        progress?.update(plan.runs.length, "done");
      } finally {
        progress?.stop();
      }
      if (outPath !== undefined && o.output !== undefined) {
        writeFileAtomically(outPath, renderCompareHtml(reports, { generatedBy: plan.commandLine }), o.output);
      }
      if (o.json) {
        out(`${JSON.stringify(reports, null, 1)}\n`);
      } else {
        out(renderTable(reports));
        const checks = formulaChecks(reports);
        if (checks.length > 0) {
          out(
            "\nformula check (the direct map's tables against the closed form for 4 KiB pages: direct-pfn exact, direct-mfn at least):\n",
          );
          for (const c of checks) {
            out(
              `  ${c.pass ? "pass" : "FAIL"}  ${c.strategy} ${c.pinning} ${formatSize(c.memoryBytes)}: ` +
                `measured ${c.measured}, formula ${c.formula.total} ` +
                `(${c.formula.l1} + ${c.formula.l2} + ${c.formula.l3} + ${c.formula.l4})\n`,
            );
          }
        }
        if (o.output !== undefined) out(`\nHTML report: ${o.output}\n`);
      }
      setExit(reports.every((r) => r.audit.ok) ? 0 : 1);
    });
}
