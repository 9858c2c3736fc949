/**
 * Migration benchmarks (each part runs in a child process of its own, so the
 * benchmark process never holds a 4 GiB guest and each part starts with a
 * clean heap):
 *
 *  save_bytes_per_s     non-live save of a 4 GiB guest with all its memory in use, to a file
 *                       (`FileSink`: direct I/O where the file system allows it)
 *  restore_bytes_per_s  restore of that file onto a fresh host (`FileChunks`, direct reads, several
 *                       under way; the host's next slabs faulted in by a `SlabPrefaulter` thread),
 *                       including the guest's resume; the fastest of RESTORE_RUNS processes
 *  migrate_bytes_per_s  live migration of a 4 GiB guest (all memory in use, idle) to a receiver
 *                       process over loopback TCP: stream bytes / total time
 *  migrate_downtime_ms  the same with the guest dirtying 50 MB/s (a 256 MiB working set) while
 *                       it is copied: suspend → the receiver's READY
 *  image_read_bytes_per_s
 *                       what this machine's disk gives a restore: the same file read through
 *                       `FileChunks` (direct reads) in a fresh process, nothing done with the bytes
 *                       (the fastest of RESTORE_RUNS). A restore cannot read faster: its ceiling here
 *  fresh_memory_bytes_per_s
 *                       what this machine gives a process bringing memory into being: one store
 *                       into each of 4 GiB of frames never written (`PhysicalMemory.frameForWrite`,
 *                       the allocation path when no slab was made ahead), in a fresh process: what
 *                       one thread gets (a VM whose first touch of a page faults on the host too).
 *                       A restore brings the whole guest into being; its prefault thread takes
 *                       those faults on the other core
 *
 * "All memory in use": after the boot, every pfn the guest's allocator has free is taken and
 * its frame filled with a pfn-dependent pattern (data pages), so every page travels with data.
 *
 * Alone: `node dist/bench/migration.js` prints the figures and a JSON line; a part:
 * `node dist/bench/migration.js save FILE | restore FILE | read FILE | migrate | downtime | fresh`.
 */

import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Kernel } from "../src/guest/kernel.js";
import { bootOnHost } from "../src/guest/run.js";
import { FileChunks, FileSink } from "../src/migration/file.js";
import { restoreGuest, saveGuest } from "../src/migration/guest.js";
import { migrateTo } from "../src/migration/tcp.js";
import { PhysicalMemory } from "../src/x86/memory.js";
import { Host } from "../src/xen/host.js";

const GiB = 2 ** 30;
const MiB = 2 ** 20;
const PAGE = 4096;
/** The guest of the save, restore and downtime parts. */
const GUEST_BYTES = 4 * GiB;
/** The guest of the idle live migration (1 GiB keeps it to a few seconds). */
const MIGRATE_BYTES = 1 * GiB;
/** The host a guest is restored (received) on: the guest plus room for the host's own frames. */
const receiverMiB = (guestBytes: number) => guestBytes / MiB + 512;
/** What the guest dirties during `migrate_downtime_ms`, and over how much memory. */
const DIRTY_BYTES_PER_S = 50e6;
const DIRTY_WORKING_SET = (256 * MiB) / PAGE;

/** The word pfn's data page is filled with (never zero). */
export function pattern(pfn: number): number {
  return (Math.imul(pfn, 0x9e3779b1) | 1) >>> 0;
}

/**
 * A booted guest with all its memory in use: every pfn its allocator has free is taken and
 * filled. Returns the data pfns, ascending.
 */
function fullGuest(bytes: number) {
  const { h, kernel } = bootOnHost({
    strategy: "direct-pfn",
    pinning: "linux",
    workload: "boot",
    memoryBytes: bytes,
    seed: 1,
  });
  const data = new Int32Array(kernel.pages);
  let n = 0;
  for (let pfn = 0; pfn < kernel.pages; pfn++) {
    if (kernel.alloc.used[pfn] !== 0) continue;
    kernel.alloc.take(pfn);
    h.mem.frameForWrite(kernel.p2m[pfn]).fill(pattern(pfn));
    data[n++] = pfn;
  }
  return { h, kernel, data: data.subarray(0, n) };
}

/** Data pages whose contents differ from the pattern (a sample of `count` of them). */
function badPages(k: Kernel, data: ArrayLike<number> | null, count: number): number {
  let bad = 0;
  const pages = k.pages;
  for (let i = 0; i < count; i++) {
    const pfn = data ? data[Math.floor((i * data.length) / count)] : Math.floor((i * pages) / count);
    const f = k.h.mem.frame(k.p2m[pfn]);
    if (!data && f[0] !== pattern(pfn)) continue; // not a data page: not checked
    if (f[0] !== pattern(pfn) || f[1023] !== pattern(pfn)) bad++;
  }
  return bad;
}

// ---- the parts (each in a child process) ----

/** Bytes per second of frames brought into being by one store each (see fresh_memory_bytes_per_s). */
function partFresh() {
  const bytes = GUEST_BYTES;
  const mem = new PhysicalMemory({ sizeBytes: bytes });
  const t0 = performance.now();
  for (let pfn = 0; pfn < bytes / PAGE; pfn++) mem.frameForWrite(pfn)[0] = pfn | 1;
  const s = (performance.now() - t0) / 1000;
  return { bytes, s };
}

async function partSave(file: string) {
  const { h, kernel, data } = fullGuest(GUEST_BYTES);
  const t0 = performance.now();
  const sink = new FileSink(file);
  let r: Awaited<ReturnType<typeof saveGuest>>;
  try {
    r = await saveGuest(h, kernel, null, sink, { live: false });
    await sink.close();
  } catch (e) {
    await sink.discard();
    throw e;
  }
  const s = (performance.now() - t0) / 1000;
  const size = statSync(file).size;
  if (r.bytes !== sink.bytes || size !== r.bytes)
    throw new Error(`save: report says ${r.bytes} bytes, the sink took ${sink.bytes}, the file has ${size}`);
  return { bytes: r.bytes, s, pages: r.pages, dataPages: data.length, direct: sink.direct };
}

async function partRestore(file: string) {
  const chunks = new FileChunks(file);
  const size = chunks.size;
  const t0 = performance.now();
  const out = await restoreGuest(new Host({ memoryMiB: receiverMiB(GUEST_BYTES) }), 1, chunks);
  const s = (performance.now() - t0) / 1000;
  if (out.restore.bytes !== size) throw new Error(`restore: read ${out.restore.bytes} of ${size} bytes`);
  const bad = badPages(out.kernel, null, 4096);
  if (bad) throw new Error(`restore: ${bad} sampled data pages differ from what was saved`);
  return { bytes: size, s, pages: out.restore.pagesReceived };
}

async function partRead(file: string) {
  const chunks = new FileChunks(file);
  const t0 = performance.now();
  let bytes = 0;
  for await (const c of chunks) bytes += c.length;
  const s = (performance.now() - t0) / 1000;
  if (bytes !== chunks.size) throw new Error(`read: ${bytes} of ${chunks.size} bytes`);
  return { bytes, s, direct: chunks.direct };
}

/** The receiver process (it exits once a guest has arrived, or a migration failed). */
function startReceiver(memoryMiB: number) {
  const js = fileURLToPath(new URL("./migration-receiver.js", import.meta.url));
  const child: ChildProcess = spawn(process.execPath, [js, String(memoryMiB)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => {
    out += d.toString("utf8");
  });
  const exited = new Promise<number | null>((res) => child.on("exit", (code) => res(code)));
  /** Its port, once it listens. */
  const port = new Promise<number>((res, rej) => {
    const poll = setInterval(() => {
      if (out.includes("\n")) {
        clearInterval(poll);
        res(Number(out.slice(0, out.indexOf("\n"))));
      } else if (child.exitCode !== null) {
        clearInterval(poll);
        rej(new Error(`the receiver exited with status ${child.exitCode} before listening`));
      }
    }, 5);
  });
  /** Its report, once the guest has arrived and resumed. */
  const done = async () => {
    const code = await exited;
    if (code !== 0) throw new Error(`the receiver exited with status ${code}`);
    return JSON.parse(out.trim().split("\n").at(-1)!) as { bytes: number; ms: number; pages: number };
  };
  const kill = () => {
    if (child.exitCode === null) child.kill();
  };
  return { port, done, kill };
}

async function partMigrate(guestBytes: number, dirtyBytesPerS: number) {
  const receiver = startReceiver(receiverMiB(guestBytes));
  try {
    return await migrateFull(guestBytes, dirtyBytesPerS, receiver);
  } finally {
    receiver.kill();
  }
}

async function migrateFull(
  guestBytes: number,
  dirtyBytesPerS: number,
  receiver: ReturnType<typeof startReceiver>,
) {
  const { h, kernel, data } = fullGuest(guestBytes);
  const port = await receiver.port;
  // The workload: DIRTY_BYTES_PER_S of distinct pages of a 256 MiB working set of data pages,
  // kept up to date with the wall clock between batches (pages written through the frames,
  // so the log-dirty tracking sees them).
  const ws = data.subarray(0, Math.min(DIRTY_WORKING_SET, data.length));
  const pagesPerMs = dirtyBytesPerS / PAGE / 1000;
  let dirtied = 0;
  let t0 = 0;
  const onBatch =
    dirtyBytesPerS > 0
      ? () => {
          const due = Math.floor((performance.now() - t0) * pagesPerMs);
          for (; dirtied < due; dirtied++) {
            const pfn = ws[dirtied % ws.length];
            h.mem.frameForWrite(kernel.p2m[pfn])[0] ^= 1;
          }
        }
      : () => {};
  t0 = performance.now();
  // The guest also runs on at the end of each live round (before the saver's CLEAN), so what it
  // wrote during the last one travels in the final round.
  const onRound = (x: { final: boolean }) => {
    if (!x.final) onBatch();
  };
  const r = await migrateTo(h, kernel, null, { host: "127.0.0.1", port }, { onBatch, onRound });
  const got = await receiver.done();
  if (got.pages !== kernel.pages) throw new Error(`the receiver resumed a guest of ${got.pages} pages`);
  if (got.bytes !== r.bytes) throw new Error(`the receiver got ${got.bytes} of ${r.bytes} bytes`);
  return {
    guestBytes,
    bytes: r.bytes,
    totalMs: r.totalMs,
    downtimeMs: r.downtimeMs,
    receiverMs: got.ms,
    dirtied,
    rounds: r.rounds.map((x) => ({ pages: x.pages, ms: x.ms, final: x.final })),
  };
}

/** Run a part in a fresh process; its last stdout line is its JSON result. */
function child<T>(...args: string[]): T {
  const js = fileURLToPath(import.meta.url);
  const p = spawnSync(process.execPath, [js, ...args], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (p.status !== 0) throw new Error(`migration bench part '${args[0]}' failed with status ${p.status}`);
  return JSON.parse(p.stdout.trim().split("\n").at(-1)!) as T;
}

export interface MigrationBench {
  figures: Record<string, number>;
  /** A human line to print after a figure's, by key. */
  notes: Record<string, string>;
}

type RoundsResult = Awaited<ReturnType<typeof partMigrate>>;

function roundsLine(r: RoundsResult): string {
  const live = r.rounds.filter((x) => !x.final).map((x) => x.pages);
  const fin = r.rounds.find((x) => x.final)?.pages ?? 0;
  return `rounds (pages) ${live.join(", ")} + final ${fin}`;
}

/**
 * Restores and reads of the saved file: the fastest of this many fresh processes (this VM's disk
 * and first touches of memory vary by half from one run to the next).
 */
const RESTORE_RUNS = 3;

/** The run of `part` (each in a fresh process) that took the least time, and all their times. */
function fastest<T extends { s: number }>(n: number, part: () => T): T & { all: number[] } {
  const runs = Array.from({ length: n }, part);
  const best = runs.reduce((a, b) => (b.s < a.s ? b : a));
  return { ...best, all: runs.map((x) => x.s) };
}

export function benchMigration(): MigrationBench {
  const figures: Record<string, number> = {};
  const notes: Record<string, string> = {};
  const dir = mkdtempSync(join(tmpdir(), "pvmmu-bench-mig-"));
  try {
    const file = join(dir, "guest-4g.xen");
    const s = child<Awaited<ReturnType<typeof partSave>>>("save", file);
    notes.save_bytes_per_s = `(save: ${GUEST_BYTES / GiB} GiB guest, ${s.dataPages} data pages filled, ${s.pages} pages, ${(s.bytes / MiB).toFixed(0)} MiB stream in ${s.s.toFixed(2)} s, ${s.direct ? "direct I/O" : "buffered: the file system refused direct I/O"})`;
    figures.save_bytes_per_s = s.bytes / s.s;
    // A part that does not touch the disk comes next, while the host writes the saved file out
    // from its own caches (a restore right after the save read up to 30% slower).
    const fr = child<ReturnType<typeof partFresh>>("fresh");
    figures.fresh_memory_bytes_per_s = fr.bytes / fr.s;
    notes.fresh_memory_bytes_per_s = `(4 GiB of frames never written, one store each, in ${fr.s.toFixed(2)} s: what one thread gets bringing memory into being here)`;
    const r = fastest(RESTORE_RUNS, () => child<Awaited<ReturnType<typeof partRestore>>>("restore", file));
    notes.restore_bytes_per_s = `(restore: ${r.pages} pages in ${r.s.toFixed(2)} s, with the guest's resume; the fastest of ${RESTORE_RUNS} runs, ${r.all.map((x) => x.toFixed(2)).join(", ")} s)`;
    figures.restore_bytes_per_s = r.bytes / r.s;
    const rd = fastest(RESTORE_RUNS, () => child<Awaited<ReturnType<typeof partRead>>>("read", file));
    figures.image_read_bytes_per_s = rd.bytes / rd.s;
    notes.image_read_bytes_per_s = `(the same ${(rd.bytes / MiB).toFixed(0)} MiB file only read, ${rd.direct ? "direct" : "buffered"}, in ${rd.s.toFixed(2)} s, the fastest of ${RESTORE_RUNS}: the disk's ceiling for a restore on this machine)`;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const m = child<RoundsResult>("migrate");
  notes.migrate_bytes_per_s = `(live migration over loopback TCP, idle ${m.guestBytes / GiB} GiB guest: ${(m.bytes / MiB).toFixed(0)} MiB in ${m.totalMs.toFixed(0)} ms; ${roundsLine(m)}; downtime ${m.downtimeMs.toFixed(1)} ms)`;
  figures.migrate_bytes_per_s = m.bytes / (m.totalMs / 1000);
  const d = child<RoundsResult>("downtime");
  notes.migrate_downtime_ms = `(live migration of a ${d.guestBytes / GiB} GiB guest dirtying ${DIRTY_BYTES_PER_S / 1e6} MB/s over 256 MiB: ${d.dirtied} page writes in ${d.totalMs.toFixed(0)} ms; ${roundsLine(d)}; final round ${(d.rounds.at(-1)?.ms ?? 0).toFixed(1)} ms)`;
  figures.migrate_downtime_ms = d.downtimeMs;
  return { figures, notes };
}

// ---- entry point (a part, or every part when run alone) ----

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [part, arg] = process.argv.slice(2);
  const print = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`);
  if (part === "save") print(await partSave(arg));
  else if (part === "restore") print(await partRestore(arg));
  else if (part === "read") print(await partRead(arg));
  else if (part === "migrate") print(await partMigrate(MIGRATE_BYTES, 0));
  else if (part === "downtime") print(await partMigrate(GUEST_BYTES, DIRTY_BYTES_PER_S));
  else if (part === "fresh") print(partFresh());
  else if (part === undefined) {
    const t0 = performance.now();
    const b = benchMigration();
    for (const [key, value] of Object.entries(b.figures)) {
      process.stdout.write(`${key.padEnd(32)} ${value.toPrecision(4)}\n`);
      if (b.notes[key]) process.stdout.write(`${b.notes[key]}\n`);
    }
    process.stdout.write(`(${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
    print(Object.fromEntries(Object.entries(b.figures).map(([k, v]) => [k, Number(v.toPrecision(4))])));
  } else {
    process.stderr.write(
      `unknown part '${part}' (save FILE, restore FILE, read FILE, migrate, downtime, fresh)\n`,
    );
    process.exitCode = 2;
  }
}
