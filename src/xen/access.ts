/**
 * Guest memory accesses through the MMU, and Xen's writable page-table
 * emulation (pv/ro-page-fault.c). Accesses to frames beyond RAM (I/O mappings
 * of a domain with I/O capabilities) reach no device: writes are dropped and
 * reads return all ones.
 *
 * A vCPU accesses memory with its current base pointer (kernel or user L4)
 * and its TLB, as hardware would: a stale TLB entry is used until flushed.
 * 64-bit PV kernels run in ring 3, so every access is a user-mode access to
 * the hardware; Xen makes all guest mappings user-accessible.
 *
 * With VMASST_TYPE_writable_pagetables, a guest-kernel write that faults on a
 * present read-only mapping of one of its validated L1 tables is emulated:
 * the new entry is checked in full (no fast path) and installed with
 * reference counting; anything else is delivered as the #PF it is.
 */

import { LO_P, LO_RW } from "../x86/pte.js";
import { ACC_FETCH, ACC_USER, ACC_WRITE, PF_I, PF_P, PF_RSVD, PF_W } from "../x86/walk.js";
import { PGT_l1_page_table, VMASST_TYPE_writable_pagetables } from "./abi.js";
import type { Vcpu } from "./domain.js";
import { F_VALIDATED } from "./frametable.js";
import type { Host } from "./host.js";
import { entryMfn, getPageFromL1e, putPageFromL1e, storeL1e } from "./mm.js";
import { guestL1e } from "./mmu.js";

export type AccessKind = "read" | "write" | "fetch";

export type AccessResult =
  | { fault: false; value?: bigint; emulated?: boolean }
  | { fault: true; errorCode: number; vector: 13 | 14; cr2?: bigint };

/** `vcpu.read/write/fetch(va, user?)`: 8-byte access at `va` in kernel or user mode. */
export function guestAccess(
  h: Host,
  v: Vcpu,
  va: bigint,
  kind: AccessKind,
  user: boolean,
  value = 0n,
): AccessResult {
  v.enterMode(!user);
  const access = ACC_USER | (kind === "write" ? ACC_WRITE : kind === "fetch" ? ACC_FETCH : 0);
  const r = v.cpu.translateVa(va, access);
  if (r.ok) {
    const pa = r.paddr - (r.paddr % 8);
    if (!h.mem.isBacked(pa)) {
      // An I/O mapping beyond RAM: no device model here — writes go nowhere, reads see a
      // master abort (all ones), as on a bus with nothing behind the address.
      return kind === "write" ? { fault: false } : { fault: false, value: 0xffff_ffff_ffff_ffffn };
    }
    if (kind === "write") h.mem.write64(pa, value);
    return kind === "write" ? { fault: false } : { fault: false, value: h.mem.read64(pa) };
  }
  if (r.vector === 13) return { fault: true, vector: 13, errorCode: 0 };
  const code = r.errorCode;
  if (
    kind === "write" &&
    !user &&
    v.domain.vmAssisted(VMASST_TYPE_writable_pagetables) &&
    (code & (PF_P | PF_W | PF_RSVD | PF_I)) === (PF_P | PF_W) &&
    ptwrEmulate(h, v, va, value)
  ) {
    return { fault: false, emulated: true };
  }
  return { fault: true, vector: 14, errorCode: code, cr2: r.cr2 };
}

/** `ptwr_do_page_fault`: emulate an 8-byte PTE store into an RO-mapped validated L1. */
function ptwrEmulate(h: Host, v: Vcpu, va: bigint, value: bigint): boolean {
  if ((va & 7n) !== 0n) return false;
  const at = guestL1e(h, v, va);
  if (!at) return false;
  const [l1mfn, index] = at;
  const map = h.mem.frame(l1mfn);
  const mlo = map[index * 2];
  const mhi = map[index * 2 + 1];
  if ((mlo & LO_P) === 0 || (mlo & LO_RW) !== 0) return false;
  const target = entryMfn(mlo, mhi);
  const f = h.frames;
  const d = v.domain;
  if (!f.valid(target) || f.ownerOf(target) !== d.domid) return false;
  if (!(f.flags[target] & F_VALIDATED) || f.typeCount[target] === 0 || f.type[target] !== PGT_l1_page_table) {
    return false;
  }
  const slot = Number((BigInt.asUintN(64, va) & 0xfffn) >> 3n);
  const lo = Number(value & 0xffffffffn);
  const hi = Number((value >> 32n) & 0xffffffffn);
  const t = h.mem.frameForWrite(target);
  const olo = t[slot * 2];
  const ohi = t[slot * 2 + 1];
  if (lo & LO_P) {
    const rc = getPageFromL1e(h, lo, hi, d, d); // full checks, no fast path
    if (rc < 0) return false;
    storeL1e(t, slot, (lo ^ rc) >>> 0, hi);
  } else {
    t[slot * 2] = lo >>> 0;
    t[slot * 2 + 1] = hi >>> 0;
  }
  putPageFromL1e(h, olo, ohi, d);
  return true;
}
