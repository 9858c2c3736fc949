/**
 * Linear (virtual) addresses.
 *
 * A 64-bit linear address does not fit a JS number exactly, so hot paths pass
 * it as two unsigned 32-bit halves (`hi` = bits 63:32, `lo` = bits 31:0).
 * Physical addresses (< 2^52) and frame numbers (< 2^40) are plain numbers.
 */

import type { Level } from "./pte.js";

/** Paging modes of long mode: 4-level (48-bit) and 5-level (LA57, 57-bit). */
export type PagingLevels = 4 | 5;

/** Is the address canonical for the paging mode (bits 63:47 or 63:56 all equal)? */
export function isCanonical(hi: number, levels: PagingLevels): boolean {
  const top = levels === 5 ? hi >> 24 : hi >> 15; // arithmetic shift: 0 or -1 when canonical
  return top === 0 || top === -1;
}

/** Index into the table at `level` for the address (9 bits per level). */
export function tableIndex(hi: number, lo: number, level: Level): number {
  switch (level) {
    case 1:
      return (lo >>> 12) & 511;
    case 2:
      return (lo >>> 21) & 511;
    case 3:
      return ((hi & 0x7f) << 2) | (lo >>> 30);
    case 4:
      return (hi >>> 7) & 511;
    default:
      return (hi >>> 16) & 511;
  }
}

export function vaFromBigInt(va: bigint): { hi: number; lo: number } {
  const v = BigInt.asUintN(64, va);
  return { hi: Number(v >> 32n), lo: Number(v & 0xffffffffn) };
}

export function vaToBigInt(hi: number, lo: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

/** Sign-extend an address from bit 47 (4-level) or bit 56 (5-level), as hardware sees it. */
export function canonicalize(va: bigint, levels: PagingLevels): bigint {
  const bits = levels === 5 ? 57 : 48;
  return BigInt.asUintN(64, BigInt.asIntN(bits, va));
}

/** Linear address of the page mapped by the given table indices (highest level first), canonical. */
export function vaFromIndices(indices: readonly number[], levels: PagingLevels): bigint {
  let v = 0n;
  for (let i = 0; i < indices.length; i++) {
    v |= BigInt(indices[i]) << BigInt(12 + 9 * (levels - 1 - i));
  }
  return canonicalize(v, levels);
}

/** `%016x` of a 64-bit value. */
export function hex64(v: bigint | number): string {
  return BigInt.asUintN(64, BigInt(v)).toString(16).padStart(16, "0");
}

/** An address a person typed that is not a 64-bit hexadecimal number. */
export class AddressSyntaxError extends Error {}

/**
 * Parse an address given by a person: hex with or without `0x`, or decimal
 * with a `0d` prefix, optionally with `_` or `'` separators. Throws a clear
 * error otherwise. Returns an unsigned 64-bit value.
 */
export function parseAddress(text: string, what = "address"): bigint {
  const t = text.trim().replace(/[_']/g, "");
  let v: bigint;
  if (/^0d[0-9]+$/i.test(t)) v = BigInt(t.slice(2));
  else if (/^(0x)?[0-9a-f]+$/i.test(t)) v = BigInt(t.toLowerCase().startsWith("0x") ? t : `0x${t}`);
  else
    throw new AddressSyntaxError(
      `${what} '${text}' is not a hexadecimal number (e.g. 0x1000 or ffff888000000000)`,
    );
  if (v >= 1n << 64n) throw new AddressSyntaxError(`${what} '${text}' does not fit in 64 bits`);
  return v;
}
