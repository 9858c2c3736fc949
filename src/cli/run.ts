/**
 * `pvmmu run`: boot a guest with one page-table strategy, run one workload and
 * print what it cost (every field group of the `RunReport`, or the report as
 * JSON). Exit code 1 if the hypervisor's audit at the end is not clean; an
 * error in what was asked for is one line on stderr with exit code 2, before
 * anything runs. Also the argument parsers `pvmmu compare` shares.
 */

import type { Command } from "commander";
import {
  BOOT_METHODS,
  type BootMethod,
  PINNING_POLICIES,
  type PinningPolicy,
  type RunReport,
  STRATEGIES,
  type StrategyName,
  WORKLOADS,
  type WorkloadName,
} from "../guest/report.js";
import { MAX_GUEST_BYTES, type RunOptions, runWorkload } from "../guest/run.js";
import { renderRunSummary } from "../report/summary.js";
import { type HostPort, LivePublisher, parseHostPort, publishedRun } from "../web/live.js";
import type { LinearPolicy } from "../xen/host.js";
import { UsageError } from "./errors.js";
import { runAndMigrate } from "./migrate.js";

const LINEAR_POLICIES: readonly LinearPolicy[] = ["xen", "self-only", "split-count"];

/** What runs a workload: `runWorkload`, or a stand-in (tests). */
export type Runner = (opts: RunOptions) => RunReport;

const MiB = 1n << 20n;
/** The smallest guest: 64 MiB. */
export const MIN_MEMORY_BYTES = 64 * 2 ** 20;
/** The largest: a 52-bit physical address space (MAXPHYADDR, Intel SDM vol. 3A §4.1.4). */
export const MAX_MEMORY_BYTES = MAX_GUEST_BYTES;

const UNITS: Record<string, bigint> = { "": 1n, K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n };

/**
 * A guest memory size: a whole number with an optional binary unit K, M, G or T
 * (also written KiB/KB, …; any case): 64M, 512M, 1G, 64G, 1T. A plain number is
 * bytes. The size must be a whole number of MiB, at least 64 MiB and at most
 * 256 GiB (the largest guest a run builds for real).
 */
export function parseSize(text: string, flag = "--memory"): number {
  const m = /^(\d+)(?:([KMGT])(?:i?B)?)?$/i.exec(text.trim());
  if (!m) {
    throw new UsageError(
      `${flag}: '${text}' is not a size (a whole number with an optional unit: 64M, 1G, 1T)`,
    );
  }
  const bytes = BigInt(m[1]) * UNITS[(m[2] ?? "").toUpperCase()];
  if (bytes % MiB !== 0n) throw new UsageError(`${flag}: ${text} is not a whole number of MiB`);
  if (bytes < BigInt(MIN_MEMORY_BYTES)) throw new UsageError(`${flag}: ${text} is below the minimum, 64M`);
  if (bytes > BigInt(MAX_MEMORY_BYTES)) {
    throw new UsageError(
      `${flag}: ${text} is above the maximum, 256G (larger guests do not fit this machine's memory; ` +
        "`pvmmu tour` shows boot plans up to 1T)",
    );
  }
  return Number(bytes);
}

/** A seed: a whole number from 0 to 2^32 − 1 (decimal, or hex with 0x). */
export function parseSeed(text: string, flag = "--seed"): number {
  const t = text.trim();
  if (!/^(\d+|0x[0-9a-f]+)$/i.test(t)) throw new UsageError(`${flag}: '${text}' is not a whole number`);
  const v = Number(t);
  if (!Number.isSafeInteger(v) || v > 0xffff_ffff) {
    throw new UsageError(`${flag}: ${text} is out of range (0 to 4294967295)`);
  }
  return v;
}

/** A count: a whole number from 1 to 10^9. */
export function parseCount(text: string, flag: string): number {
  const t = text.trim();
  if (!/^\d+$/.test(t)) throw new UsageError(`${flag}: '${text}' is not a whole number`);
  const v = Number(t);
  if (v < 1 || v > 1e9) throw new UsageError(`${flag}: ${text} is out of range (1 to 1000000000)`);
  return v;
}

/** A batch size: 1 to 65536. */
function parseBatch(text: string, flag: string): number {
  const v = parseCount(text, flag);
  if (v > 65536) throw new UsageError(`${flag}: ${text} is out of range (1 to 65536)`);
  return v;
}

/** One of `choices`, exactly. */
export function parseChoice<T extends string>(text: string, choices: readonly T[], what: string): T {
  const found = choices.find((c) => c === text);
  if (found === undefined) throw new UsageError(`unknown ${what} '${text}' (one of: ${choices.join(", ")})`);
  return found;
}

/** A comma-separated list, without empty items; repeats are dropped (first one kept). */
export function parseList(text: string, flag: string): string[] {
  const items = text.split(",").map((s) => s.trim());
  if (items.some((s) => s === "")) throw new UsageError(`${flag}: empty item in '${text}'`);
  return [...new Set(items)];
}

interface RunFlags {
  strategy?: string;
  workload?: string;
  memory?: string;
  pinning: string;
  boot?: string;
  seed: string;
  iterations?: string;
  mmuBatch?: string;
  mcBatch?: string;
  linearPolicy?: string;
  json?: boolean;
  migrateTo?: string;
  after?: string;
  publish?: string;
}

/** `--publish HOST:PORT` (PORT alone: 127.0.0.1; port 0: any free port, printed). */
export function publishAddress(text: string): HostPort {
  try {
    return parseHostPort(text, "--publish");
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** How long a run nobody has watched yet waits at its end for a first subscriber (`--publish`). */
export const PUBLISH_GRACE_MS = 2000;

/** Start publishing and say where, on stderr (stdout carries the report). */
export async function startPublisher(at: HostPort): Promise<LivePublisher> {
  const pub = await LivePublisher.start(at);
  process.stderr.write(
    `pvmmu: publishing progress at ${pub.url} (pvmmu serve --attach ${pub.address.host}:${pub.address.port})\n`,
  );
  return pub;
}

function required(v: string | undefined, flag: string, choices?: readonly string[]): string {
  if (v === undefined) {
    throw new UsageError(`missing ${flag}${choices ? ` (one of: ${choices.join(", ")})` : ""}`);
  }
  return v;
}

/** Check every flag and build the runner's options; throws UsageError. */
export function runOptionsFrom(o: RunFlags): RunOptions {
  const opts: RunOptions = {
    strategy: parseChoice<StrategyName>(
      required(o.strategy, "--strategy", STRATEGIES),
      STRATEGIES,
      "strategy",
    ),
    workload: parseChoice<WorkloadName>(required(o.workload, "--workload", WORKLOADS), WORKLOADS, "workload"),
    memoryBytes: parseSize(required(o.memory, "--memory (a size such as 1G)")),
    pinning: parseChoice<PinningPolicy>(o.pinning, PINNING_POLICIES, "pinning policy"),
    seed: parseSeed(o.seed),
  };
  if (o.boot !== undefined) opts.bootMethod = parseChoice<BootMethod>(o.boot, BOOT_METHODS, "boot method");
  if (o.iterations !== undefined) opts.iterations = parseCount(o.iterations, "--iterations");
  if (o.linearPolicy !== undefined) {
    opts.linearPolicy = parseChoice<LinearPolicy>(
      o.linearPolicy,
      LINEAR_POLICIES,
      "linear page-table policy",
    );
  }
  if (o.mmuBatch !== undefined) opts.mmuBatch = parseBatch(o.mmuBatch, "--mmu-batch");
  if (o.mcBatch !== undefined) opts.mcBatch = parseBatch(o.mcBatch, "--mc-batch");
  return opts;
}

export function registerRun(
  program: Command,
  out: (s: string) => void,
  setExit: (code: number) => void = () => {},
  runner: Runner = runWorkload,
): void {
  program
    .command("run")
    .description("boot a guest with one page-table strategy, run a workload, and report what it cost")
    .option("--strategy <name>", `how the kernel reaches its page tables: ${STRATEGIES.join(", ")}`)
    .option("--workload <name>", `what the guest does: ${WORKLOADS.join(", ")}`)
    .option("--memory <size>", "guest memory: 64M, 512M, 1G, 64G, 1T … (binary units; at least 64M)")
    .option("--pinning <policy>", `when tables are pinned: ${PINNING_POLICIES.join(", ")}`, "linux")
    .option("--boot <method>", `how the first page tables are built: ${BOOT_METHODS.join(", ")}`)
    .option("--seed <n>", "seed for the workload's choices (0 to 4294967295)", "1")
    .option("--iterations <n>", "scale of the workload (default: per workload)")
    .option(
      "--linear-policy <p>",
      "the hypervisor's linear page-table rule: xen (default), self-only, split-count",
    )
    .option("--mmu-batch <n>", "mmu_update queue length (default: 2048 for netbsd, 32 otherwise)")
    .option("--mc-batch <n>", "multicall batch size (default 32; 1: no multicalls)")
    .option("--json", "print the report as JSON")
    .option("--migrate-to <addr>", "migrate the guest live to a receiving host (`pvmmu host`) at HOST:PORT")
    .option("--after <n>", "with --migrate-to: workload steps to run before migrating", "1")
    .option(
      "--publish <addr>",
      "publish live progress at http://HOST:PORT/events (Server-Sent Events) for `pvmmu serve --attach HOST:PORT`",
    )
    .action(async (o: RunFlags) => {
      const publish = o.publish === undefined ? undefined : publishAddress(o.publish);
      if (o.migrateTo !== undefined) {
        await runAndMigrate({ ...o, after: o.after ?? "1", migrateTo: o.migrateTo }, out, publish);
        return;
      }
      const opts = runOptionsFrom(o);
      let report: RunReport;
      if (publish) {
        const pub = await startPublisher(publish);
        try {
          report = await publishedRun(opts, pub);
        } finally {
          await pub.close(PUBLISH_GRACE_MS);
        }
      } else report = runner(opts);
      out(o.json ? `${JSON.stringify(report, null, 1)}\n` : renderRunSummary(report));
      setExit(report.audit.ok ? 0 : 1);
    });
}
