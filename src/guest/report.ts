/**
 * What a guest run costs: the figures `pvmmu run` prints and `pvmmu compare`
 * tabulates. Plain data (JSON-safe numbers and strings), so reports can be
 * written, compared and rendered without the model.
 */

/** How the guest kernel reaches its page-table entries (one `PageTableMapper` each). */
export const STRATEGIES = ["direct-mfn", "direct-pfn", "shadow", "recursive", "netbsd"] as const;
export type StrategyName = (typeof STRATEGIES)[number];

/** When page tables are registered with (pinned by) the hypervisor. */
export const PINNING_POLICIES = ["linux", "eager"] as const;
export type PinningPolicy = (typeof PINNING_POLICIES)[number];

/** How the kernel builds its first page tables. */
export const BOOT_METHODS = ["top-down", "linear"] as const;
export type BootMethod = (typeof BOOT_METHODS)[number];

export const WORKLOADS = ["boot", "fork-exec-exit", "mmap-churn", "cow-storm", "server", "grant-io"] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

export interface BootReport {
  method: BootMethod;
  /** Pages set aside for page tables before mapping started (brk seed, or the linear guess). */
  reservedPages: number;
  /** Page-table pages the kernel actually built (all levels, excluding the domain builder's). */
  usedPages: number;
  /** Reserved pages never used (returned to the allocator). */
  unusedPages: number;
  /** Where the tables ended up: lowest and highest pfn holding one, and the pfn count of RAM. */
  lowestTablePfn: number;
  highestTablePfn: number;
  ramPages: number;
  /** Direct-map entries written (4 KiB mappings of RAM). */
  mappedPages: number;
  /** Mapping steps taken (top-down: each growing range; linear: 1). */
  steps: number;
  /**
   * Page-table pages of the whole direct map at the end (all levels, the builder's
   * start-of-day ones included, the L4 counted once): the figure the closed-form count of
   * mapping RAM with 4 KiB pages predicts. 0 without a direct map.
   */
  directMapTablePages: number;
}

export interface BatchStats {
  /** Hypercalls (or multicall entries) of this kind. */
  calls: number;
  /** Requests carried by them (mmu_update requests, mmuext ops, multicall entries). */
  entries: number;
  /** The largest batch seen. */
  max: number;
}

export interface OpStats {
  count: number;
  /** Total wall time in milliseconds (not deterministic; everything else is). */
  ms: number;
}

export interface RunReport {
  strategy: StrategyName;
  pinning: PinningPolicy;
  workload: WorkloadName;
  bootMethod: BootMethod;
  /** Guest memory in bytes. */
  memoryBytes: number;
  seed: number;
  /** Page-table pages at the end of the run, by level (index 0 = L1 … 3 = L4), and their share of guest memory. */
  tablePages: { total: number; byLevel: [number, number, number, number]; share: number };
  /** Extra pages a strategy keeps beside the tables (shadow companions). */
  companionPages: number;
  /** Virtual address space the strategy takes in the kernel half: L4 slots (512 GiB each) and bytes. */
  vaSlots: number;
  vaBytes: number;
  /** Bytes of P2M kept by the guest (8 per guest page) and of M2P the guest reads (8 per host frame). */
  p2mBytes: number;
  m2pBytes: number;
  /** Guest → hypervisor transitions by hypercall name ("multicall" counts once per batch). */
  hypercalls: Record<string, number>;
  /** Hypercall operations by name, including those issued inside multicalls. */
  batches: Record<string, BatchStats>;
  /** Page-table entry writes by path. */
  pteUpdates: { mmu_update: number; update_va_mapping: number; ptwr: number; direct: number };
  /** Entries the hypervisor examined while validating tables (512 per validated table) or updates. */
  validatedEntries: number;
  /** TLB flushes the guest asked for (full and single-address). */
  tlbFlushes: { full: number; single: number };
  /** Pseudo-physical ↔ machine conversions the kernel made. */
  p2mLookups: number;
  m2pLookups: number;
  /** Wall time by kernel operation. */
  ops: Record<string, OpStats>;
  boot: BootReport;
  /** The hypervisor auditor's verdict at the end. */
  audit: { ok: boolean; problems: string[] };
  /**
   * SHA-256 of the guest's memory as the guest sees it (pages in use, page tables normalised to
   * pfns): equal for a run that migrated and one that never moved.
   */
  memoryHash?: string;
  /**
   * Seed 001: what visiting every address space's top-level table costs at suspend, measured
   * after the run on 1,000 extra pinned address spaces (absent when not measured).
   */
  suspendVisit?: {
    spaces: number;
    method: string;
    ms: number;
    hypercalls: number;
    clearMs: number;
    clearHypercalls: number;
  };
  wallMs: number;
}
