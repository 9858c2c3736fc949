/**
 * A deliberately simple x86-64 page walker written straight from the Intel SDM
 * (vol. 3A §4.5–4.7, §4.8), with bigint and no shortcuts, to check the model's
 * fast walker against. It shares no code with src/.
 */

export interface RefConfig {
  la57: boolean;
  cr3: bigint;
  maxPhysAddr: number;
  nxe: boolean;
  wp: boolean;
  smep: boolean;
  smap: boolean;
  ac: boolean;
  pke: boolean;
  pks: boolean;
  pkru: number;
  pkrs: number;
  gbPages: boolean;
}

export interface RefAccess {
  write: boolean;
  user: boolean;
  fetch: boolean;
  implicit: boolean;
}

export type RefResult =
  | { kind: "ok"; pa: bigint; pageSize: bigint; writable: boolean; user: boolean; executable: boolean }
  | { kind: "pf"; code: number }
  | { kind: "gp" };

export interface RefMemory {
  read64(pa: bigint): bigint;
  write64(pa: bigint, v: bigint): void;
}

const bit = (v: bigint, n: number): boolean => ((v >> BigInt(n)) & 1n) === 1n;

export function referenceWalk(mem: RefMemory, cfg: RefConfig, va: bigint, acc: RefAccess): RefResult {
  const levels = cfg.la57 ? 5 : 4;
  const signBit = cfg.la57 ? 56 : 47;
  const upper = va >> BigInt(signBit);
  const allOnes = (1n << BigInt(64 - signBit)) - 1n;
  if (upper !== 0n && upper !== allOnes) return { kind: "gp" };

  const idBit = acc.fetch && (cfg.smep || cfg.nxe);
  const code = (p: boolean, rsvd: boolean, pk: boolean): number =>
    (p ? 1 : 0) |
    (acc.write ? 2 : 0) |
    (acc.user ? 4 : 0) |
    (rsvd ? 8 : 0) |
    (idBit ? 16 : 0) |
    (pk ? 32 : 0);

  const addrBits = (1n << 52n) - 1n;
  const reservedAddr = addrBits & ~((1n << BigInt(cfg.maxPhysAddr)) - 1n);
  let table = cfg.cr3 & ~0xfffn;
  let writable = true;
  let user = true;
  let executable = true;
  const used: bigint[] = [];
  let leaf = 0n;
  let pageSize = 0n;
  for (let level = levels; level >= 1; level--) {
    const index = (va >> BigInt(12 + 9 * (level - 1))) & 511n;
    const at = table + index * 8n;
    const e = mem.read64(at);
    used.push(at);
    if (!bit(e, 0)) return { kind: "pf", code: code(false, false, false) };
    const ps = level > 1 && bit(e, 7);
    let reserved = (e & reservedAddr) !== 0n;
    if (!cfg.nxe && bit(e, 63)) reserved = true;
    if (ps && level >= 4) reserved = true;
    if (ps && level === 3 && (!cfg.gbPages || (e & 0x3fffe000n) !== 0n)) reserved = true;
    if (ps && level === 2 && (e & 0x1fe000n) !== 0n) reserved = true;
    if (reserved) return { kind: "pf", code: code(true, true, false) };
    writable = writable && bit(e, 1);
    user = user && bit(e, 2);
    if (cfg.nxe && bit(e, 63)) executable = false;
    if (level === 1 || ps) {
      leaf = e;
      pageSize = 1n << BigInt(12 + 9 * (level - 1));
      break;
    }
    table = e & 0x000ffffffffff000n;
  }

  // Access rights (SDM §4.6).
  let denied: boolean;
  if (acc.user) {
    denied = !user || (acc.write && !writable) || (acc.fetch && !executable);
  } else if (acc.fetch) {
    denied = !executable || (cfg.smep && user);
  } else {
    const smapBlocks = cfg.smap && user && (acc.implicit || !cfg.ac);
    denied = smapBlocks || (acc.write && cfg.wp && !writable);
  }
  // Protection keys (SDM §4.6.2): data accesses only.
  let pkDenied = false;
  const keysOn = user ? cfg.pke : cfg.pks;
  if (!acc.fetch && keysOn) {
    const key = Number((leaf >> 59n) & 15n);
    const reg = user ? cfg.pkru : cfg.pkrs;
    const ad = ((reg >>> (2 * key)) & 1) === 1;
    const wd = ((reg >>> (2 * key + 1)) & 1) === 1;
    pkDenied = ad || (acc.write && wd && (acc.user || cfg.wp));
  }
  if (denied || pkDenied) return { kind: "pf", code: code(true, false, pkDenied) };

  // Accessed flags on every entry used; dirty on the leaf for a write (SDM §4.8).
  for (const at of used) mem.write64(at, mem.read64(at) | 0x20n);
  if (acc.write) {
    const at = used[used.length - 1];
    mem.write64(at, mem.read64(at) | 0x40n);
  }
  const base = leaf & addrBits & ~(pageSize - 1n);
  return { kind: "ok", pa: base | (va & (pageSize - 1n)), pageSize, writable, user, executable };
}
