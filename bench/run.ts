/**
 * pvmmu benchmarks: `npm run bench` prints figures and their ratio to the
 * targets; `npm run bench -- --json` prints one JSON object of figures on its
 * last line. Key names are stable; later work adds keys.
 *
 *  walks_per_s     TLB-miss 4-level walks of random addresses in a 4 GiB region mapped with 4 KiB pages,
 *                  a million at once (BatchWalker: their last-level loads overlap)
 *  walks_1g_per_s  the same walks confined to 1 GiB of it (page tables within the host's data-TLB reach)
 *  walks_single_per_s, walks_1g_single_per_s
 *                  the same walks one at a time (PageWalker.walk, as the CPU model's TLB miss does)
 *  tlb_hits_per_s  translations through Cpu.translate with a warm TLB
 *  dump_tlb_s      seconds for `pvmmu dump tlb` (a fresh process) over a 2 GiB image with Linux-like page tables
 *  pin_entries_per_s, unpin_entries_per_s
 *                  present entries validated (devalidated) per second pinning (unpinning) the L4 of a
 *                  guest whose 4 GiB is mapped with 4 KiB pages (2048 L1, 4 L2, 1 L3, 1 L4)
 *  mmu_update_per_s   L1 updates per second in batches of 512, remapping among data frames
 *  mmu_update_scaling time per update in a 64 GiB guest / in a 256 MiB guest, same working set
 *  mmu_update_scaling_spread  the same with the 64 GiB guest's working set spread over all of it
 *  host_256g_rss_mib  RSS of a process holding a 256 GiB host with a 64 GiB guest mapped and pinned
 *  grant_map_unmap_per_s  grant map + unmap pairs per second (contains_pte, batches of 64)
 *  boot_64g_ms, fork_exec_exit_per_s (+ one per strategy): see bench/guest.ts
 *  save_bytes_per_s, restore_bytes_per_s, migrate_bytes_per_s, migrate_downtime_ms,
 *  image_read_bytes_per_s, fresh_memory_bytes_per_s: see bench/migration.ts
 *  fuzz_steps_per_s, fuzz_scaling, cpu_scaling: see bench/fuzz.ts
 */

import { spawnSync } from "node:child_process";
import { mkdtempSync, openSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { synthLinuxImage, writeRawImage } from "../src/dump/synth.js";
import { BumpAllocator, PageTableBuilder } from "../src/x86/builder.js";
import { Cpu } from "../src/x86/cpu.js";
import { PhysicalMemory } from "../src/x86/memory.js";
import { LO_A, LO_RW } from "../src/x86/pte.js";
import { FAULT_NONE, PageWalker, PagingMode } from "../src/x86/walk.js";
import { BatchWalker, WalkResults } from "../src/x86/walk-many.js";
import { benchExplorer } from "./explorer.js";
import { benchFuzz } from "./fuzz.js";
import { benchGuest } from "./guest.js";
import { benchMigration } from "./migration.js";
import { benchXen, grantMapUnmapPerS, rss256g } from "./xen.js";

const json = process.argv.includes("--json");
const log = (s: string) => {
  if (!json) process.stdout.write(`${s}\n`);
};

/** Best rate (operations per second) of `rounds` timed runs of `fn`, which performs `ops` operations. */
function rate(fn: () => number, ops: number, rounds = 8): number {
  let best = 0;
  let sink = 0;
  for (let r = 0; r < rounds; r++) {
    const t0 = process.hrtime.bigint();
    sink += fn();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.max(best, ops / dt);
  }
  if (sink === 0.5) log("");
  return best;
}

/** A deterministic xorshift PRNG. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

const figures: Record<string, number> = {};
const targets: Record<string, [number, "min" | "max", string]> = {
  walks_per_s: [20e6, "min", "walks/s"],
  walks_1g_per_s: [20e6, "min", "walks/s"],
  tlb_hits_per_s: [50e6, "min", "hits/s"],
  dump_tlb_s: [1, "max", "s"],
  pin_entries_per_s: [30e6, "min", "entries/s"],
  unpin_entries_per_s: [30e6, "min", "entries/s"],
  mmu_update_per_s: [10e6, "min", "updates/s"],
  mmu_update_scaling: [1.3, "max", "x"],
  mmu_update_scaling_spread: [1.3, "max", "x"],
  host_256g_rss_mib: [3072, "max", "MiB"],
  grant_map_unmap_per_s: [2e6, "min", "pairs/s"],
  boot_64g_ms: [2000, "max", "ms"],
  fork_exec_exit_per_s: [2000, "min", "/s"],
  fork_exec_exit_direct_mfn_per_s: [2000, "min", "/s"],
  fork_exec_exit_direct_pfn_per_s: [2000, "min", "/s"],
  fork_exec_exit_shadow_per_s: [2000, "min", "/s"],
  fork_exec_exit_recursive_per_s: [2000, "min", "/s"],
  fork_exec_exit_netbsd_per_s: [2000, "min", "/s"],
  save_bytes_per_s: [1e9, "min", "B/s"],
  restore_bytes_per_s: [1e9, "min", "B/s"],
  image_read_bytes_per_s: [1e9, "min", "B/s"],
  fresh_memory_bytes_per_s: [1e9, "min", "B/s"],
  migrate_bytes_per_s: [5e8, "min", "B/s"],
  migrate_downtime_ms: [100, "max", "ms"],
  fuzz_steps_per_s: [1e5, "min", "steps/s"],
  fuzz_scaling: [1.7, "min", "x"],
  cpu_scaling: [1.7, "min", "x"],
  explorer_redraw_ms: [100, "max", "ms"],
};

function report(key: string, value: number): void {
  figures[key] = Number(value.toPrecision(4));
  const [target, kind, unit] = targets[key];
  const ratio = kind === "min" ? value / target : target / value;
  const plain = unit === "s" || unit === "x" || unit === "MiB" || unit === "ms" || target < 1e5;
  const shown = plain ? value.toFixed(3) : `${(value / 1e6).toFixed(2)} M`;
  log(
    `${key.padEnd(32)} ${shown} ${unit}   target ${kind === "min" ? "≥" : "≤"} ${plain ? target : `${target / 1e6} M`}   ratio ${ratio.toFixed(2)}${
      ratio >= 1 ? "" : "  (misses target)"
    }`,
  );
}

// ---- walks_per_s and tlb_hits_per_s: 4 GiB mapped with 4 KiB pages ----
{
  const GiB = 2 ** 30;
  const mem = new PhysicalMemory({ sizeBytes: 64 * GiB });
  const b = new PageTableBuilder(mem, new BumpAllocator((32 * GiB) / 4096));
  const base = 0xffff_c900_0000_0000n;
  b.mapRange(base, 0, 4 * GiB, 4096, { lo: LO_RW | LO_A, hi: 0 });
  const N = 1 << 20;
  const his = new Uint32Array(N);
  const los = new Uint32Array(N);
  const rnd = prng(42);
  const baseHi = Number(base >> 32n) >>> 0;
  for (let i = 0; i < N; i++) {
    his[i] = baseHi; // 4 GiB region: the low half spans it all
    los[i] = rnd();
  }
  const walker = new PageWalker(mem);
  const mode = new PagingMode();
  mode.rootFrame = b.root;
  // The same walks confined to the first 1 GiB: 2 MiB of L1 tables, within the host's data-TLB reach.
  const los1g = los.map((lo) => lo & 0x3fffffff);
  /** Walks one at a time (`PageWalker.walk`): the sum of the addresses translated to. */
  const walkOne = (l: Uint32Array) => (): number => {
    let acc = 0;
    for (let i = 0; i < N; i++) {
      if (walker.walk(mode, his[i], l[i], 0)) acc += walker.paddr;
    }
    return acc;
  };
  /** The same walks all at once (`BatchWalker`), and the same sum. */
  const batch = new BatchWalker(mem);
  const out = new WalkResults(N);
  const walkMany = (l: Uint32Array) => (): number => {
    batch.walk(mode, his, l, 0, out);
    let acc = 0;
    for (let i = 0; i < N; i++) if (out.fault[i] === FAULT_NONE) acc += out.paddr[i];
    return acc;
  };
  const first = walkOne(los)(); // warm up, sets accessed bits
  if (walkMany(los)() !== first) throw new Error("walks_per_s: the batch walker's translations differ");
  report("walks_per_s", rate(walkMany(los), N));
  report("walks_1g_per_s", rate(walkMany(los1g), N));
  figures.walks_single_per_s = rate(walkOne(los), N);
  figures.walks_1g_single_per_s = rate(walkOne(los1g), N);
  log(
    `(one walk at a time: ${(figures.walks_single_per_s / 1e6).toFixed(2)} M walks/s, over 1 GiB ${(figures.walks_1g_single_per_s / 1e6).toFixed(2)} M)`,
  );

  const cpu = new Cpu(mem);
  cpu.loadRoot(b.root * 4096);
  const W = 1024; // working set: 1024 consecutive pages, one TLB slot each
  const hotLo = new Uint32Array(N);
  for (let i = 0; i < N; i++) hotLo[i] = ((rnd() % W) * 4096 + (rnd() & 0xfff)) >>> 0;
  const hitAll = (): number => {
    let acc = 0;
    for (let i = 0; i < N; i++) {
      if (cpu.translate(baseHi, hotLo[i], 0)) acc += cpu.paddr;
    }
    return acc;
  };
  hitAll();
  const misses = cpu.tlb.misses;
  report("tlb_hits_per_s", rate(hitAll, N));
  if (cpu.tlb.misses !== misses) throw new Error("tlb_hits_per_s: the working set does not stay in the TLB");
}

// ---- dump_tlb_s: a fresh `pvmmu dump tlb` over a 2 GiB image ----
{
  const dir = mkdtempSync(join(tmpdir(), "pvmmu-bench-"));
  try {
    const s = synthLinuxImage({ ramBytes: 2 * 2 ** 30, userMiB: 256, vmallocMiB: 128 });
    const file = join(dir, "linux-2G.raw");
    writeRawImage(s.mem, file);
    const bin = fileURLToPath(new URL("../../bin/pvmmu.js", import.meta.url));
    const args = [bin, "dump", "tlb", "--image", file, "--cr3", `0x${s.cr3.toString(16)}`];
    let best = Number.POSITIVE_INFINITY;
    let lines = 0;
    for (let r = 0; r < 3; r++) {
      const out = openSync("/dev/null", "w");
      const t0 = process.hrtime.bigint();
      const p = spawnSync(process.execPath, args, { stdio: ["ignore", out, "inherit"] });
      best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
      if (p.status !== 0) throw new Error(`dump tlb failed with status ${p.status}`);
    }
    const count = spawnSync(process.execPath, args, { encoding: "utf8", maxBuffer: 1 << 30 });
    lines = count.stdout.split("\n").length - 1;
    log(`(image: 2 GiB raw, ${s.tableFrames} page-table frames, ${lines} leaf mappings)`);
    report("dump_tlb_s", best);
    figures.dump_tlb_lines = lines;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- hypervisor ----
{
  const x = benchXen();
  report("pin_entries_per_s", x.pin_entries_per_s);
  report("unpin_entries_per_s", x.unpin_entries_per_s);
  report("mmu_update_per_s", x.mmu_update_per_s);
  report("mmu_update_scaling", x.mmu_update_scaling);
  report("mmu_update_scaling_spread", x.mmu_update_scaling_spread);
  report("host_256g_rss_mib", rss256g());
  report("grant_map_unmap_per_s", grantMapUnmapPerS());
}

// ---- guest kernels ----
{
  const g = benchGuest();
  for (const [key, value] of Object.entries(g)) report(key, value);
}

// ---- migration (each part in a child process) ----
{
  const m = benchMigration();
  for (const [key, value] of Object.entries(m.figures)) {
    report(key, value);
    if (m.notes[key]) log(m.notes[key]);
  }
}

// ---- fuzzer ----
{
  const z = await benchFuzz();
  report("fuzz_steps_per_s", z.fuzz_steps_per_s);
  report("fuzz_scaling", z.fuzz_scaling);
  report("cpu_scaling", z.cpu_scaling);
}

// ---- the web explorer (headless Chromium) ----
{
  const e = await benchExplorer();
  if ("skipped" in e) log(`explorer_redraw_ms               skipped: ${e.skipped}`);
  else {
    log(`(frame map of ${e.frames} frames)`);
    report("explorer_redraw_ms", e.redrawMs);
  }
}

if (json) process.stdout.write(`${JSON.stringify(figures)}\n`);
