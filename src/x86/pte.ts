/**
 * x86-64 paging-structure entries (Intel SDM vol. 3A §4.5, AMD APM vol. 2 §5.3).
 *
 * Hot paths never build a 64-bit value: an entry is read as two 32-bit halves,
 * `lo` (bits 31:0 — flags and the low 20 bits of the address field) and
 * `hi` (bits 63:32 — the top of the address field, AVL 52–58, protection key
 * 59–62 and XD/NX 63). The constants below are split the same way: `LO_*`
 * masks apply to `lo`, `HI_*` masks to `hi`.
 *
 * `bigint` appears only in the encode/decode helpers meant for tests, tools
 * and the API edge.
 */

/** Paging-structure levels, numbered as Xen and Linux do: 1 = page table … 5 = PML5. */
export type Level = 1 | 2 | 3 | 4 | 5;

export const LEVEL_NAMES: Record<Level, string> = {
  5: "PML5",
  4: "PML4",
  3: "PDPT",
  2: "PD",
  1: "PT",
};

/** Name of an entry at a level (PML4E, PDPTE, PDE, PTE). */
export const ENTRY_NAMES: Record<Level, string> = {
  5: "PML5E",
  4: "PML4E",
  3: "PDPTE",
  2: "PDE",
  1: "PTE",
};

// ---- low half (bits 0–31) ----
export const LO_P = 1 << 0; // present
export const LO_RW = 1 << 1; // read/write
export const LO_US = 1 << 2; // user/supervisor
export const LO_PWT = 1 << 3; // page-level write-through
export const LO_PCD = 1 << 4; // page-level cache disable
export const LO_A = 1 << 5; // accessed
export const LO_D = 1 << 6; // dirty (leaf entries only)
/** Bit 7: PS (page size) in PDPTEs and PDEs; PAT in PTEs; reserved in PML4Es/PML5Es. */
export const LO_PS = 1 << 7;
export const LO_PAT_4K = 1 << 7;
export const LO_G = 1 << 8; // global (leaf entries only)
export const LO_AVL_MASK = 0x7 << 9; // bits 9–11, ignored by hardware
export const LO_AVL_SHIFT = 9;
/** Bit 12: PAT in a 2 MiB or 1 GiB page entry (part of the address field otherwise). */
export const LO_PAT_LARGE = 1 << 12;
/** Address bits 31:12 in the low half. */
export const LO_ADDR_MASK = 0xfffff000;

// ---- high half (bits 32–63) ----
/** Address bits 51:32 in the high half. */
export const HI_ADDR_MASK = 0x000fffff;
export const HI_AVL_MASK = 0x7f << 20; // bits 52–58, ignored by hardware
export const HI_AVL_SHIFT = 20;
export const HI_PK_MASK = 0xf << 27; // bits 59–62, protection key (leaf entries, CR4.PKE/PKS)
export const HI_PK_SHIFT = 27;
export const HI_NX = 1 << 31; // bit 63, execute-disable (reserved when EFER.NXE = 0)

/** Bits 29:13 of a 1 GiB page entry: reserved (the frame must be 1 GiB aligned; bit 12 is PAT). */
export const LO_RSVD_1G = 0x3fffe000;
/** Bits 20:13 of a 2 MiB page entry: reserved. */
export const LO_RSVD_2M = 0x001fe000;

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;
/** 2^32, to join halves into a plain number. */
export const TWO32 = 0x1_0000_0000;

/** Size in bytes of the page mapped by a leaf at a level (4 KiB, 2 MiB, 1 GiB). */
export function leafPageSize(level: Level): number {
  return level === 1 ? 0x1000 : level === 2 ? 0x20_0000 : 0x4000_0000;
}

/**
 * Mask of high-half address bits that are reserved for a given MAXPHYADDR
 * (bits 51:MAXPHYADDR of every paging-structure entry).
 */
export function reservedHighMask(maxPhysAddrBits: number): number {
  if (maxPhysAddrBits >= 52) return 0;
  const keep = maxPhysAddrBits - 32; // address bits kept in the high half
  return (HI_ADDR_MASK & ~((1 << keep) - 1)) >>> 0;
}

/** Frame number held in an entry's address field (4 KiB granularity). */
export function entryFrame(lo: number, hi: number): number {
  return (hi & HI_ADDR_MASK) * 0x10_0000 + (lo >>> 12);
}

/** The low half of an entry with its frame number replaced by `frame` (flags kept). */
export function withFrameLo(lo: number, frame: number): number {
  return ((lo & 0xfff) | ((frame % 0x10_0000) << 12)) >>> 0;
}

/** The high half of an entry with its frame number replaced by `frame` (NX, AVL, keys kept). */
export function withFrameHi(hi: number, frame: number): number {
  return ((hi & ~HI_ADDR_MASK) | Math.floor(frame / 0x10_0000)) >>> 0;
}

/** Physical base address of the page or table an entry points to, for a given level/leafness. */
export function entryAddress(lo: number, hi: number, leafLevel: 0 | 1 | 2 | 3): number {
  const base = (hi & HI_ADDR_MASK) * TWO32;
  if (leafLevel === 3) return base + ((lo & 0xc0000000) >>> 0);
  if (leafLevel === 2) return base + ((lo & 0xffe00000) >>> 0);
  return base + ((lo & LO_ADDR_MASK) >>> 0);
}

/** Is this entry a leaf (maps a page rather than pointing to a table)? */
export function isLeaf(level: Level, lo: number): boolean {
  return level === 1 || ((level === 2 || level === 3) && (lo & LO_PS) !== 0);
}

// ---------------------------------------------------------------------------
// API-edge helpers (bigint): encode, decode, describe.
// ---------------------------------------------------------------------------

/** Every architectural field of an entry, decoded. */
export interface DecodedEntry {
  present: boolean;
  writable: boolean;
  user: boolean;
  writeThrough: boolean;
  cacheDisable: boolean;
  accessed: boolean;
  /** Meaningful in leaf entries only; ignored by hardware in non-leaf entries. */
  dirty: boolean;
  /** PS for PDPTEs/PDEs; reserved (must be 0) in PML4Es/PML5Es; for PTEs this bit is PAT, see `pat`. */
  pageSize: boolean;
  /** PAT: bit 7 of a PTE, bit 12 of a 2 MiB/1 GiB page entry, absent otherwise. */
  pat: boolean;
  /** Meaningful in leaf entries only. */
  global: boolean;
  /** Bits 9–11. */
  avlLow: number;
  /** Bits 52–58. */
  avlHigh: number;
  /** Bits 59–62 (leaf entries, when protection keys are enabled; ignored otherwise). */
  protectionKey: number;
  noExecute: boolean;
  /** Physical address the entry points to (page base for leaves, table base otherwise). */
  address: number;
  /** Is this entry a leaf at its level? */
  leaf: boolean;
}

export function splitEntry(value: bigint): { lo: number; hi: number } {
  const v = BigInt.asUintN(64, value);
  return { lo: Number(v & 0xffffffffn), hi: Number(v >> 32n) };
}

export function joinEntry(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Decode an entry at a level. */
export function decodeEntry(value: bigint, level: Level): DecodedEntry {
  const { lo, hi } = splitEntry(value);
  const leaf = isLeaf(level, lo);
  const large = leaf && level !== 1;
  return {
    present: (lo & LO_P) !== 0,
    writable: (lo & LO_RW) !== 0,
    user: (lo & LO_US) !== 0,
    writeThrough: (lo & LO_PWT) !== 0,
    cacheDisable: (lo & LO_PCD) !== 0,
    accessed: (lo & LO_A) !== 0,
    dirty: (lo & LO_D) !== 0,
    pageSize: level !== 1 && (lo & LO_PS) !== 0,
    pat: level === 1 ? (lo & LO_PAT_4K) !== 0 : large ? (lo & LO_PAT_LARGE) !== 0 : false,
    global: (lo & LO_G) !== 0,
    avlLow: (lo & LO_AVL_MASK) >>> LO_AVL_SHIFT,
    avlHigh: (hi & HI_AVL_MASK) >>> HI_AVL_SHIFT,
    protectionKey: (hi & HI_PK_MASK) >>> HI_PK_SHIFT,
    noExecute: (hi & HI_NX) !== 0,
    address: entryAddress(lo, hi, leaf ? (level as 1 | 2 | 3) : 0),
    leaf,
  };
}

/** Fields accepted by `encodeEntry`; anything omitted is 0. */
export type EntryFields = Partial<Omit<DecodedEntry, "leaf">>;

/**
 * Encode an entry for a level. `address` must be aligned for what the entry
 * maps (4 KiB, or 2 MiB / 1 GiB for a large page) and below 2^52.
 */
export function encodeEntry(f: EntryFields, level: Level): bigint {
  const address = f.address ?? 0;
  const large = (level === 2 || level === 3) && (f.pageSize ?? false);
  const align = large ? leafPageSize(level) : PAGE_SIZE;
  if (!Number.isInteger(address) || address < 0 || address >= 2 ** 52 || address % align !== 0) {
    throw new RangeError(
      `entry address 0x${address.toString(16)} is not a ${align}-aligned address below 2^52`,
    );
  }
  let lo = address % TWO32;
  const hi0 = Math.floor(address / TWO32);
  if (f.present) lo |= LO_P;
  if (f.writable) lo |= LO_RW;
  if (f.user) lo |= LO_US;
  if (f.writeThrough) lo |= LO_PWT;
  if (f.cacheDisable) lo |= LO_PCD;
  if (f.accessed) lo |= LO_A;
  if (f.dirty) lo |= LO_D;
  if (level !== 1 && f.pageSize) lo |= LO_PS;
  if (f.pat) {
    if (level === 1) lo |= LO_PAT_4K;
    else if (large) lo |= LO_PAT_LARGE;
    else throw new RangeError("PAT exists only in leaf entries");
  }
  if (f.global) lo |= LO_G;
  lo |= ((f.avlLow ?? 0) & 7) << LO_AVL_SHIFT;
  let hi = hi0;
  hi |= ((f.avlHigh ?? 0) & 0x7f) << HI_AVL_SHIFT;
  hi |= ((f.protectionKey ?? 0) & 0xf) << HI_PK_SHIFT;
  if (f.noExecute) hi |= HI_NX;
  return joinEntry(lo >>> 0, hi >>> 0);
}

/** Short flag string for an entry, e.g. "P RW US A D G NX PK=3". */
export function describeFlags(lo: number, hi: number, level: Level): string {
  const parts: string[] = [];
  if (lo & LO_P) parts.push("P");
  parts.push(lo & LO_RW ? "RW" : "RO");
  parts.push(lo & LO_US ? "US" : "S");
  if (lo & LO_PWT) parts.push("PWT");
  if (lo & LO_PCD) parts.push("PCD");
  if (lo & LO_A) parts.push("A");
  if (lo & LO_D) parts.push("D");
  const leaf = isLeaf(level, lo);
  if (level === 1 && lo & LO_PAT_4K) parts.push("PAT");
  if (level !== 1 && lo & LO_PS) parts.push("PS");
  if (leaf && level !== 1 && lo & LO_PAT_LARGE) parts.push("PAT");
  if (lo & LO_G) parts.push("G");
  const avl = (lo & LO_AVL_MASK) >>> LO_AVL_SHIFT;
  if (avl) parts.push(`AVL=${avl}`);
  const avlHigh = (hi & HI_AVL_MASK) >>> HI_AVL_SHIFT;
  if (avlHigh) parts.push(`AVL52=0x${avlHigh.toString(16)}`);
  const pk = (hi & HI_PK_MASK) >>> HI_PK_SHIFT;
  if (pk) parts.push(`PK=${pk}`);
  if (hi & HI_NX) parts.push("NX");
  return parts.join(" ");
}
