/**
 * Closed-form costs of reaching memory on x86-64 with 4-level paging: how many
 * page-table pages it takes to map RAM, what the P2M and M2P tables weigh, and
 * the virtual address space a recursive slot takes. These are the figures a
 * run's measurements are checked against (`pvmmu compare`'s formula check).
 *
 * Architecture (Intel SDM vol. 3A §4.5): every table is one 4 KiB page of 512
 * 8-byte entries. An L1 entry maps 4 KiB, an L2 entry 2 MiB (one L1, or a 2 MiB
 * page), an L3 entry 1 GiB (one L2, or a 1 GiB page), an L4 entry 512 GiB (one L3).
 */

export const KiB = 2 ** 10;
export const MiB = 2 ** 20;
export const GiB = 2 ** 30;
export const TiB = 2 ** 40;

/** Bytes of a page, and of a page-table page. */
export const PAGE_BYTES = 4 * KiB;
/** Entries in one page-table page. */
export const ENTRIES_PER_TABLE = 512;
/** Bytes one entry covers at each level (L1 … L4). */
export const L1_ENTRY_BYTES = 4 * KiB;
export const L2_ENTRY_BYTES = 2 * MiB;
export const L3_ENTRY_BYTES = GiB;
export const L4_ENTRY_BYTES = 512 * GiB;

/** Bytes of each P2M entry (one per guest page) and M2P entry (one per host frame). */
export const P2M_ENTRY_BYTES = 8;
export const M2P_ENTRY_BYTES = 8;

/** The leaf page size a mapping uses. */
export type LeafSize = "4k" | "2m" | "1g";

/** Page-table pages by level, and their sum. */
export interface TablePageCounts {
  l1: number;
  l2: number;
  l3: number;
  l4: number;
  total: number;
}

function checkBytes(bytes: number, what: string): void {
  if (!Number.isSafeInteger(bytes) || bytes < 0) {
    throw new RangeError(`${what} must be a non-negative whole number of bytes, got ${bytes}`);
  }
}

const ceilDiv = (a: number, b: number): number => Math.ceil(a / b);

/**
 * Page-table pages needed to map `bytes` of RAM at (virtual and physical)
 * offset 0 with leaves of `leaf` size, on 4-level paging:
 *
 * - L1 = ⌈bytes / 2 MiB⌉ for 4 KiB leaves (= ⌈pages / 512⌉), else 0;
 * - L2 = ⌈bytes / 1 GiB⌉ for 4 KiB and 2 MiB leaves, else 0;
 * - L3 = ⌈bytes / 512 GiB⌉;
 * - L4 = 1 (the root exists even for an empty mapping).
 *
 * A size that is not a multiple of the leaf size is rounded up to it (the last
 * leaf maps past the end). With 4 KiB leaves: 1 GiB → 512 + 1 + 1 + 1 = 515
 * pages; 64 GiB → 32768 + 64 + 1 + 1 = 32834; 1 TiB → 524288 + 1024 + 2 + 1 =
 * 525315 (≈ 2.004 MiB of tables per GiB, 0.196 % of RAM).
 */
export function tablePagesToMap(bytes: number, leaf: LeafSize = "4k"): TablePageCounts {
  checkBytes(bytes, "the mapped size");
  const l1 = leaf === "4k" ? ceilDiv(bytes, L2_ENTRY_BYTES) : 0;
  const l2 = leaf === "1g" ? 0 : ceilDiv(bytes, L3_ENTRY_BYTES);
  const l3 = ceilDiv(bytes, L4_ENTRY_BYTES);
  const l4 = 1;
  return { l1, l2, l3, l4, total: l1 + l2 + l3 + l4 };
}

/**
 * Page-table pages of a 4 KiB direct map of `bytes` of RAM: the only leaf size
 * a Xen PV guest may use, so what a direct-map kernel builds at boot.
 */
export function directMapTablePages(bytes: number): number {
  return tablePagesToMap(bytes, "4k").total;
}

/** Pages of `bytes` of memory (rounded up to whole 4 KiB pages). */
export function pagesOf(bytes: number): number {
  checkBytes(bytes, "the memory size");
  return ceilDiv(bytes, PAGE_BYTES);
}

/** Bytes of the P2M a guest of `guestBytes` keeps: 8 per guest page (0.195 % of guest RAM). */
export function p2mBytes(guestBytes: number): number {
  return pagesOf(guestBytes) * P2M_ENTRY_BYTES;
}

/** Bytes of the M2P of a host of `hostBytes` (mapped read-only into every PV guest): 8 per host frame. */
export function m2pBytes(hostBytes: number): number {
  return pagesOf(hostBytes) * M2P_ENTRY_BYTES;
}

/**
 * Virtual address space taken by `slots` recursive (self-map) slots: each is one
 * of the 512 L4 entries, 512 GiB of VA, whatever the RAM size.
 */
export function recursiveSlotVaBytes(slots = 1): number {
  if (!Number.isSafeInteger(slots) || slots < 0 || slots > ENTRIES_PER_TABLE) {
    throw new RangeError(`recursive slots must be a whole number from 0 to 512, got ${slots}`);
  }
  return slots * L4_ENTRY_BYTES;
}

/** Share of `memoryBytes` that `pages` 4 KiB pages take, in percent. */
export function pageSharePercent(pages: number, memoryBytes: number): number {
  return memoryBytes > 0 ? ((pages * PAGE_BYTES) / memoryBytes) * 100 : 0;
}
