/**
 * Save, restore and live migration from the command line:
 *  - `pvmmu save`: boot a guest, run part of a workload, save it (Xen's stream) to a file;
 *  - `pvmmu restore FILE`: restore it onto a new host, resume it, let the workload finish;
 *  - `pvmmu host --listen HOST:PORT`: a receiving host; each arriving guest is resumed and
 *    runs its workload to the end;
 *  - `pvmmu run … --migrate-to HOST:PORT --after N`: run N workload steps, then migrate live
 *    while the guest runs on (the receiver finishes the workload).
 * Progress bars (stderr, on a terminal) show rounds, dirty pages and bandwidth.
 */

import { renameSync, rmSync } from "node:fs";
import { resolve } from "node:path";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import type { Kernel } from "../guest/kernel.js";
import { bootOnHost, type RunOptions } from "../guest/run.js";
import { WorkloadRun } from "../guest/workloads.js";
import { FileChunks, FileSink } from "../migration/file.js";
import { guestMemoryHash, restoreGuest, saveGuest } from "../migration/guest.js";
import type { RoundStats } from "../migration/save.js";
import { StreamError } from "../migration/stream.js";
import { type Arrival, listen, migrateTo, parseAddress } from "../migration/tcp.js";
import { type HostPort, LiveSampler, yieldToEvents } from "../web/live.js";
import { Host } from "../xen/host.js";
import { UsageError } from "./errors.js";
import { PUBLISH_GRACE_MS, parseCount, parseSize, runOptionsFrom, startPublisher } from "./run.js";

interface Bar {
  round(r: RoundStats, bytesSoFar: number): void;
  bytes(n: number): void;
  stop(): void;
}

/** A progress bar on stderr when it is a terminal; otherwise nothing. */
function progress(total: number, unit: string): Bar {
  const tty = process.stderr.isTTY;
  if (!tty) return { round: () => {}, bytes: () => {}, stop: () => {} };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `{bar} {percentage}% | {mib} MiB | {rate} MiB/s | {info}`,
      hideCursor: true,
      clearOnComplete: true,
      gracefulExit: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const t0 = performance.now();
  bar.start(total, 0, { mib: 0, rate: 0, info: unit });
  const payload = (n: number, info: string) => ({
    mib: (n / 2 ** 20).toFixed(0),
    rate: (n / 2 ** 20 / Math.max(1e-3, (performance.now() - t0) / 1000)).toFixed(0),
    info,
  });
  return {
    round: (r, n) =>
      bar.update(
        Math.min(total, n),
        payload(n, `round ${r.round}${r.final ? " (final)" : ""}: ${r.pages} pages`),
      ),
    bytes: (n) => bar.update(Math.min(total, n), payload(n, unit)),
    stop: () => bar.stop(),
  };
}

/** The image at `path`, to be read in chunks of one reused buffer. */
function imageFile(path: string): FileChunks {
  try {
    return new FileChunks(path);
  } catch (e) {
    throw new UsageError(`cannot read '${path}': ${(e as NodeJS.ErrnoException).code ?? e}`);
  }
}

interface GuestFlags {
  strategy?: string;
  workload?: string;
  memory?: string;
  pinning: string;
  seed: string;
  iterations?: string;
  after: string;
  json?: boolean;
}

function guestOptions(cmd: Command): Command {
  return cmd
    .option("--strategy <name>", "how the kernel reaches its page tables (not direct-mfn: it cannot move)")
    .option("--workload <name>", "what the guest does")
    .option("--memory <size>", "guest memory: 64M, 1G …")
    .option("--pinning <policy>", "linux or eager", "linux")
    .option("--seed <n>", "seed for the workload's choices", "1")
    .option("--iterations <n>", "scale of the workload (default: per workload)")
    .option("--after <n>", "workload steps to run before saving / migrating", "1")
    .option("--json", "print the report as JSON");
}

function boot(o: GuestFlags): { h: Host; kernel: Kernel; run: WorkloadRun; opts: RunOptions } {
  const opts = runOptionsFrom({ ...o });
  if (opts.workload === "grant-io") {
    throw new UsageError("grant-io cannot move: its front-end domain stays on this host");
  }
  if (opts.strategy === "direct-mfn") {
    throw new UsageError("direct-mfn cannot be saved: its direct map is laid out by machine frame number");
  }
  const after = o.after === "0" ? 0 : parseCount(o.after, "--after");
  const { h, kernel } = bootOnHost(opts);
  const run = new WorkloadRun(kernel, opts.workload, { seed: opts.seed, iterations: opts.iterations });
  for (let i = 0; i < after && run.next(); i++) {}
  return { h, kernel, run, opts };
}

/** What a finished guest reports: where it ended and its memory hash. */
function finish(kernel: Kernel, run: WorkloadRun | null): Record<string, unknown> {
  while (run?.next()) {}
  const audit = kernel.h.audit();
  return {
    workload: run?.name ?? "none",
    steps: run?.step ?? 0,
    memoryHash: guestMemoryHash(kernel),
    audit: audit.ok ? "ok" : audit.problems.map(String),
  };
}

function print(
  out: (s: string) => void,
  json: boolean | undefined,
  title: string,
  r: Record<string, unknown>,
) {
  if (json) {
    out(`${JSON.stringify(r)}\n`);
    return;
  }
  out(`${title}\n`);
  for (const [k, v] of Object.entries(r)) {
    out(`  ${k.padEnd(16)} ${typeof v === "object" ? JSON.stringify(v) : String(v)}\n`);
  }
}

function roundsSummary(rounds: RoundStats[]) {
  return rounds.map((r) => ({
    round: r.round,
    final: r.final,
    pages: r.pages,
    bytes: r.bytes,
    ms: +r.ms.toFixed(2),
  }));
}

export function registerMigrate(
  program: Command,
  out: (s: string) => void,
  setExit: (c: number) => void,
): void {
  guestOptions(
    program
      .command("save")
      .description(
        "boot a guest, run part of a workload, and save it to a file in Xen's migration stream format",
      ),
  )
    .requiredOption("-o, --output <file>", "the saved image (a Xen migration stream, version 3)")
    .action(async (o: GuestFlags & { output: string }) => {
      const { h, kernel, run } = boot(o);
      const path = resolve(o.output);
      // Written to FILE.partial and renamed at the end, so a failed save leaves nothing.
      const tmp = `${path}.partial`;
      let sink: FileSink;
      try {
        sink = new FileSink(tmp);
      } catch (e) {
        rmSync(tmp, { force: true });
        throw new UsageError(`cannot write '${tmp}': ${(e as NodeJS.ErrnoException).code ?? e}`);
      }
      const hash = guestMemoryHash(kernel);
      const bar = progress(kernel.pages * 4096, "saving");
      try {
        const r = await saveGuest(h, kernel, run, sink, {
          live: false,
          onRound: (x) => bar.round(x, sink.bytes),
        });
        await sink.close();
        renameSync(tmp, path);
        bar.stop();
        print(out, o.json, `saved to ${o.output}`, {
          bytes: r.bytes,
          pages: r.pages,
          stepsDone: run.step,
          stepsLeft: run.steps - run.step,
          memoryHash: hash,
          rounds: roundsSummary(r.rounds),
        });
      } catch (e) {
        bar.stop();
        await sink.discard();
        rmSync(tmp, { force: true });
        throw e;
      }
    });

  program
    .command("restore")
    .description("restore a saved guest onto a new host, resume it, and let its workload finish")
    .argument("<file>", "a saved image (`pvmmu save`)")
    .option("--host-memory <size>", "the new host's memory (default: guest + 25%)")
    .option("--json", "print the report as JSON")
    .action(async (file: string, o: { hostMemory?: string; json?: boolean }) => {
      const hostMiB = o.hostMemory ? parseSize(o.hostMemory, "--host-memory") / 2 ** 20 : undefined;
      const chunks = imageFile(file);
      const total = chunks.size;
      const h = new Host({ memoryMiB: hostMiB ?? Math.max(128, Math.ceil((total / 2 ** 20) * 1.25) + 64) });
      const bar = progress(total, "restoring");
      try {
        const t0 = performance.now();
        const { kernel, run, restore } = await restoreGuest(h, 1, chunks, (n) => bar.bytes(n));
        const ms = performance.now() - t0;
        bar.stop();
        const before = guestMemoryHash(kernel);
        print(out, o.json, `restored ${file} and ran the workload to its end`, {
          bytes: restore.bytes,
          pages: restore.pagesReceived,
          restoreMs: +ms.toFixed(1),
          hashAtResume: before,
          ...finish(kernel, run),
        });
      } catch (e) {
        bar.stop();
        if (e instanceof StreamError) throw new UsageError(`${file}: ${e.message}`);
        throw e;
      }
    });

  program
    .command("host")
    .description("a receiving host: waits for live migrations and runs each arriving guest to the end")
    .requiredOption("--listen <addr>", "HOST:PORT to listen on (port 0: any free port, printed)")
    .option("--host-memory <size>", "memory of the host each guest arrives on", "1G")
    .option("--once", "stop after one migration")
    .option("--json", "print reports as JSON")
    .action(async (o: { listen: string; hostMemory: string; once?: boolean; json?: boolean }) => {
      let at: ReturnType<typeof parseAddress>;
      try {
        at = parseAddress(o.listen);
      } catch (e) {
        throw new UsageError(`--listen: ${(e as Error).message}`);
      }
      const mib = parseSize(o.hostMemory, "--host-memory") / 2 ** 20;
      await new Promise<void>((done, fail) => {
        listen(at, {
          makeHost: () => new Host({ memoryMiB: mib }),
          once: o.once,
          onFailure: (e, host) => {
            print(out, o.json, "migration failed; nothing kept", {
              event: "failed",
              error: e.message,
              domainsLeft: host.domains.size,
              audit: host.audit().ok ? "ok" : "FAIL",
            });
            if (o.once) {
              setExit(1);
              done();
            }
          },
          onArrival: (a: Arrival) => {
            const end = finish(a.kernel, a.run);
            const r = { event: "arrived", bytes: a.bytes, restoreMs: +a.ms.toFixed(1), ...end };
            print(out, o.json, "guest arrived, resumed and ran to its end", r);
            if (end.audit !== "ok") setExit(1);
            if (o.once) done();
          },
        }).then((s) => {
          const addr = s.address();
          const port = typeof addr === "object" && addr ? addr.port : at.port;
          out(
            o.json
              ? `${JSON.stringify({ event: "listening", host: at.host, port })}\n`
              : `listening on ${at.host}:${port}\n`,
          );
        }, fail);
      });
    });
}

/**
 * `pvmmu run --migrate-to ADDR --after N`: the source side of a live migration. With
 * `publish`, progress goes out live as well (src/web/live.ts): samples as the guest runs
 * between batches, one event per pre-copy round.
 */
export async function runAndMigrate(
  o: GuestFlags & { migrateTo: string },
  out: (s: string) => void,
  publish?: HostPort,
): Promise<void> {
  let to: ReturnType<typeof parseAddress>;
  try {
    to = parseAddress(o.migrateTo);
  } catch (e) {
    throw new UsageError(`--migrate-to: ${(e as Error).message}`);
  }
  const { h, kernel, run, opts } = boot(o);
  const pub = publish ? await startPublisher(publish) : undefined;
  const sampler = pub ? new LiveSampler(pub) : undefined;
  pub?.publish({
    type: "hello",
    command: "run --migrate-to",
    strategy: opts.strategy,
    workload: opts.workload,
    memoryBytes: opts.memoryBytes,
    migrateTo: o.migrateTo,
  });
  sampler?.sample(kernel, run, "run", true);
  const bar = progress(kernel.pages * 4096 * 1.5, "migrating");
  try {
    let bytes = 0;
    const r = await migrateTo(h, kernel, run, to, {
      stepsPerBatch: 1,
      // The same one step per batch as stepsPerBatch, with a sample and a turn of the event loop.
      onBatch: sampler
        ? async () => {
            if (!run.done) run.next();
            sampler.sample(kernel, run, "migrate");
            await yieldToEvents();
          }
        : undefined,
      onRound: (x) => {
        bytes += x.bytes;
        bar.round(x, bytes);
        pub?.publish({ type: "round", t: sampler!.elapsed(), ...x });
      },
    });
    bar.stop();
    pub?.publish({ type: "end", t: sampler!.elapsed(), ok: true, message: `migrated to ${o.migrateTo}` });
    print(out, o.json, `migrated to ${o.migrateTo} (the receiver finishes the workload)`, {
      stepsHere: run.step,
      rounds: roundsSummary(r.rounds),
      bytes: r.bytes,
      downtimeMs: +r.downtimeMs.toFixed(2),
      totalMs: +r.totalMs.toFixed(1),
      mibPerS: +(r.bytes / 2 ** 20 / (r.totalMs / 1000)).toFixed(1),
    });
  } catch (e) {
    bar.stop();
    const left = finish(kernel, run);
    pub?.publish({
      type: "end",
      t: sampler!.elapsed(),
      ok: false,
      message: `migration failed (${(e as Error).message}); the guest ran on here`,
    });
    print(out, o.json, `migration failed (${(e as Error).message}); the guest ran on here`, {
      event: "failed",
      error: (e as Error).message,
      ...left,
    });
    throw new MigrationFailed((e as Error).message);
  } finally {
    await pub?.close(PUBLISH_GRACE_MS);
  }
}

/** The migration failed but the guest ran on at the source: exit code 1. */
export class MigrationFailed extends Error {}
