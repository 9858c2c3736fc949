/**
 * The world a fuzz episode runs in: a small host (so that every frame is
 * within reach of the generator and a full audit is cheap), one privileged
 * domain (domid 0) and unprivileged ones, each with a few dozen pages, two
 * vCPUs and a small TLB (so translations are evicted as well as flushed).
 *
 * Every domain's pfns are split into pools by the level of page table the
 * generator usually builds there — the pools are hints, not rules: entries
 * point across and within pools too, which is where the interesting states
 * (a table in use at two levels, a frame both granted and typed) come from.
 */

export const FUZZ_POLICIES = ["xen", "self-only", "split-count", "off"] as const;
/** A linear page-table policy (src/xen/host.ts), or "off": pv-linear-pt disabled. */
export type FuzzPolicy = (typeof FUZZ_POLICIES)[number];

export interface WorldOptions {
  policy: FuzzPolicy;
  /** Domains: domid 0 is privileged, 1..n−1 are not. At least 2. */
  domains: number;
  /** Pages of each domain (pfns 0..pages−1). */
  pages: number;
  vcpus: number;
  memoryMiB: number;
  /** TLB entries for 4 KiB pages per vCPU. */
  tlbEntries: number;
}

export const DEFAULT_WORLD: WorldOptions = {
  policy: "xen",
  domains: 3,
  pages: 40,
  vcpus: 2,
  memoryMiB: 16,
  tlbEntries: 16,
};

/** First pfn and size of each pool by level (level 0: data pages, the rest of the domain). */
const POOL_FIRST = [20, 12, 8, 4, 0];
const POOL_COUNT = [Number.POSITIVE_INFINITY, 8, 4, 4, 4];

/**
 * Pfn pools by the level of table usually built there (level 0: data pages):
 * L4 0–3, L3 4–7, L2 8–11, L1 12–19, data the rest. The first pfn of `level`'s pool.
 */
export function poolFirst(level: number, pages: number): number {
  return Math.min(POOL_FIRST[level] ?? 0, pages - 1);
}

/** The number of pfns in `level`'s pool (see `poolFirst`). */
export function poolCount(level: number, pages: number): number {
  const first = POOL_FIRST[level] ?? 0;
  return Math.max(1, Math.min(POOL_COUNT[level] ?? pages, pages - first));
}

/** The level of table usually built at `pfn` (0 for data pages). */
export function levelHint(pfn: number): number {
  if (pfn < 4) return 4;
  if (pfn < 8) return 3;
  if (pfn < 12) return 2;
  if (pfn < 20) return 1;
  return 0;
}

/** The scenario lines that create the world: the host line and one line per domain. */
export function worldLines(w: WorldOptions): Record<string, unknown>[] {
  const options: Record<string, unknown> = { tlbEntries: w.tlbEntries };
  if (w.policy === "off") options.pvLinearPt = false;
  else options.linearPolicy = w.policy;
  const lines: Record<string, unknown>[] = [{ op: "host", memory_mib: w.memoryMiB, options }];
  for (let d = 0; d < w.domains; d++) {
    lines.push({
      op: "domain",
      domid: d,
      pages: w.pages,
      vcpus: w.vcpus,
      ...(d === 0 ? { privileged: true } : {}),
    });
  }
  return lines;
}

export function checkWorld(w: WorldOptions): void {
  const int = (v: number, lo: number, hi: number, what: string) => {
    if (!Number.isInteger(v) || v < lo || v > hi)
      throw new RangeError(`${what} must be a whole number from ${lo} to ${hi}, got ${v}`);
  };
  if (!(FUZZ_POLICIES as readonly string[]).includes(w.policy)) {
    throw new RangeError(`policy must be one of ${FUZZ_POLICIES.join(", ")}, got '${w.policy}'`);
  }
  int(w.domains, 2, 16, "domains");
  int(w.pages, 24, 4096, "pages");
  int(w.vcpus, 1, 8, "vcpus");
  int(w.memoryMiB, 8, 1024, "memory");
  if ((w.domains * (w.pages + 8)) / 256 > w.memoryMiB - 2)
    throw new RangeError("domains × pages do not fit in the host's memory");
}
