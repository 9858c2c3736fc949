/**
 * The guest kernel's virtual address layout, and virtual addresses as plain
 * numbers.
 *
 * Inside the guest layer a virtual address is a number holding its low 48
 * bits (4-level paging): upper-half (kernel) addresses are numbers from 2^47
 * up, and `vaHi`/`vaLo` give the sign-extended halves the hardware model
 * takes. Numbers below 2^53 are exact, so no bigint is needed per access.
 *
 * L4 slots (512 GiB each) the layouts use:
 *  -   0–254  user space (below NetBSD's recursive slot; user stacks end at USER_TOP)
 *  -   255    recursive slot (NetBSD's `L4_SLOT_PTE`), strategies "recursive" and "netbsd"
 *  - 256–271  Xen's (its M2P window, linear map, per-domain area)
 *  -   272…   direct map (`PAGE_OFFSET` of Xen PV Linux, 0xffff880000000000): RAM by pfn,
 *             or machine frames by mfn — one slot per 512 GiB mapped
 *  -   400    the shadow strategy's table window: every page table and its companion page
 *  -   510    NetBSD's alternate recursive slot (`L4_SLOT_APTE`)
 *  -   511    kernel image (`__START_KERNEL_map`, 0xffffffff80000000) and the fixmap, whose
 *             last L1 holds the per-vCPU temporary mapping slots
 */

export const SLOT_SIZE = 2 ** 39;
export const RECURSIVE_SLOT = 255;
export const DIRECT_MAP_SLOT = 272;
export const TABLE_WINDOW_SLOT = 400;
export const APTE_SLOT = 510;
export const KERNEL_SLOT = 511;

/** The canonical upper half starts here (as a 48-bit number). */
export const UPPER_HALF = 2 ** 47;
export const VA_SPACE = 2 ** 48;

export const DIRECT_MAP_BASE = DIRECT_MAP_SLOT * SLOT_SIZE;
export const TABLE_WINDOW_BASE = TABLE_WINDOW_SLOT * SLOT_SIZE;
/** `__START_KERNEL_map`: L4 511, L3 510. */
export const KERNEL_BASE = KERNEL_SLOT * SLOT_SIZE + 510 * 2 ** 30;
/** The fixmap's temporary-mapping L1: the last 2 MiB of the address space (L3 511, L2 511). */
export const TEMP_WINDOW_BASE = VA_SPACE - 2 ** 21;
/** Slots in the temporary window (two per vCPU: destination and source). */
export const TEMP_SLOTS = 2;

/** Highest user address + 1: NetBSD's VM_MAXUSER_ADDRESS, below the recursive slot. */
export const USER_TOP = RECURSIVE_SLOT * SLOT_SIZE - 2 * 4096;
/** Where processes' mmap areas start and their stack ends. */
export const USER_TEXT = 0x40_0000;
export const MMAP_BASE = 0x10_0000_0000;

/** Sign-extended high half of a 48-bit virtual address number. */
export function vaHi(va: number): number {
  const hi = Math.floor(va / 2 ** 32);
  return va >= UPPER_HALF ? (hi | 0xffff0000) >>> 0 : hi;
}

export function vaLo(va: number): number {
  return va >>> 0;
}

/** Table index of `va` at `level` (1 = L1 … 4 = L4). */
export function indexAt(va: number, level: number): number {
  // ToUint32 truncates the quotient and keeps its low 32 bits, of which the index is the low 9.
  return ((va / SPAN[level]) >>> 0) & 511;
}

const SPAN = [8, 2 ** 12, 2 ** 21, 2 ** 30, 2 ** 39, 2 ** 48];

/** The VA a page-table slot path names: L4 index, L3, L2, L1 indices and offset. */
export function vaOf(l4: number, l3: number, l2: number, l1: number, offset = 0): number {
  return (((l4 * 512 + l3) * 512 + l2) * 512 + l1) * 4096 + offset;
}

/** Xen's L4 slots (256–271), which a guest cannot use. */
export const XEN_SLOTS_START = 256;
export const XEN_SLOTS_END = 272;
