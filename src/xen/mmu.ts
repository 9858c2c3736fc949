/**
 * `HYPERVISOR_mmu_update` (1), `update_va_mapping` (14) and
 * `update_va_mapping_otherdomain` (22), with `mod_l{1,2,3,4}_entry`,
 * `get_pg_owner` and the XSM dummy policy's privilege rules.
 *
 * Batches stop at the first failing request with no rollback of earlier ones;
 * `done` counts the requests that completed.
 */

import { HI_ADDR_MASK, LO_A, LO_D, LO_P, LO_PS, LO_US } from "../x86/pte.js";
import {
  DOMID_IO,
  DOMID_SELF,
  DOMID_XEN,
  EFAULT,
  EINVAL,
  ENOSYS,
  EPERM,
  ESRCH,
  MMU_MACHPHYS_UPDATE,
  MMU_NORMAL_PT_UPDATE,
  MMU_PT_UPDATE_NO_TRANSLATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  PGT_l1_page_table,
  PGT_l4_page_table,
  PGT_writable_page,
  UVMF_ALL,
  UVMF_FLUSHTYPE_MASK,
  UVMF_INVLPG,
  UVMF_TLB_FLUSH,
} from "./abi.js";
import type { Domain, Vcpu } from "./domain.js";
import { F_VALIDATED } from "./frametable.js";
import type { Host } from "./host.js";
import {
  fastPathOk,
  flushDomainTlbs,
  getPage,
  getPageFromL1e,
  getPageFromLne,
  getPageType,
  isXenL4Slot,
  LN_DISALLOW,
  l1DisallowHi,
  l1DisallowLo,
  putPage,
  putPageFromL1e,
  putPageFromLne,
  putPageType,
  storeL1e,
} from "./mm.js";

export interface HypercallResult {
  rc: number;
  done: number;
}

/** A page owner named by a domid argument: a domain, DOMID_IO or DOMID_XEN. */
export type PgOwner = { kind: "domain"; d: Domain } | { kind: "io" } | { kind: "xen" };

/** `get_pg_owner(domid)`: -ESRCH for the caller's own numeric id or an unknown domain. */
export function getPgOwner(h: Host, caller: Domain, domid: number): PgOwner | number {
  if (domid === caller.domid) return -ESRCH;
  if (domid === DOMID_SELF) return { kind: "domain", d: caller };
  if (domid === DOMID_IO) return { kind: "io" };
  if (domid === DOMID_XEN) return { kind: "xen" };
  const d = h.domains.get(domid);
  return d ? { kind: "domain", d } : -ESRCH;
}

/** XSM_TARGET under the dummy policy: self, or the control domain. */
export function xsmTarget(src: Domain, target: PgOwner | Domain): boolean {
  if ("kind" in target) {
    if (target.kind === "io") return true;
    if (target.kind === "xen") return src.privileged;
    target = target.d;
  }
  return src === target || src.privileged;
}

function pgOwnerDomid(o: PgOwner): number {
  return o.kind === "domain" ? o.d.domid : o.kind === "io" ? DOMID_IO : DOMID_XEN;
}

function pgOwnerDomain(h: Host, o: PgOwner): Domain | undefined {
  return o.kind === "domain" ? o.d : o.kind === "xen" ? h.domXen : undefined;
}

/** `page_lock` succeeds on a validated frame with type count ≥ 1. */
function lockable(h: Host, mfn: number): boolean {
  return (h.frames.flags[mfn] & F_VALIDATED) !== 0 && h.frames.typeCount[mfn] > 0;
}

export interface MmuUpdateReq {
  ptr: bigint;
  val: bigint;
}

/** `do_mmu_update(reqs, foreigndom)` issued by `caller`: the API edge, with bigint requests. */
export function mmuUpdate(
  h: Host,
  caller: Domain,
  reqs: MmuUpdateReq[],
  foreigndom: number,
): HypercallResult {
  const buf = new Uint32Array(reqs.length * 4);
  reqs.forEach((r, i) => {
    const p = BigInt.asUintN(64, r.ptr);
    const v = BigInt.asUintN(64, r.val);
    buf[i * 4] = Number(p & 0xffffffffn);
    buf[i * 4 + 1] = Number(p >> 32n);
    buf[i * 4 + 2] = Number(v & 0xffffffffn);
    buf[i * 4 + 3] = Number(v >> 32n);
  });
  return mmuUpdateBuf(h, caller, buf, reqs.length, foreigndom);
}

/**
 * `do_mmu_update` on requests laid out as in guest memory (`mmu_update_t`: ptr, val, each
 * 64-bit little-endian), i.e. 4 words a request: ptr low, ptr high, val low, val high.
 */
export function mmuUpdateBuf(
  h: Host,
  caller: Domain,
  buf: Uint32Array,
  count: number,
  foreigndom: number,
): HypercallResult {
  const fdId = foreigndom & 0xffff;
  const pfdField = (foreigndom >>> 16) & 0xffff;
  let ptOwner: Domain = caller;
  if (pfdField !== 0) {
    const d = h.domains.get(pfdField - 1);
    if (!d) return { rc: -ESRCH, done: 0 };
    if (d !== caller && d.vcpus.length === 0) return { rc: -EINVAL, done: 0 };
    ptOwner = d;
  }
  const pg = getPgOwner(h, caller, fdId);
  if (typeof pg === "number") return { rc: pg, done: 0 };
  const pgDom = pgOwnerDomain(h, pg);
  let done = 0;
  let rc = 0;
  let xsmPtChecked = false;
  let xsmM2pChecked = false;
  let flushPfd = false;
  for (let i = 0; i < count; i++) {
    const ptrLo = buf[i * 4];
    const ptrHi = buf[i * 4 + 1];
    const cmd = ptrLo & 7;
    if (
      cmd === MMU_NORMAL_PT_UPDATE ||
      cmd === MMU_PT_UPDATE_PRESERVE_AD ||
      cmd === MMU_PT_UPDATE_NO_TRANSLATE
    ) {
      if (!xsmPtChecked) {
        if ((pg.kind !== "io" && !xsmTarget(caller, pg)) || !xsmTarget(caller, ptOwner)) {
          rc = -EPERM;
          break;
        }
        xsmPtChecked = true;
      }
      rc = ptUpdate(h, caller, ptOwner, pg, pgDom, ptrLo, ptrHi, buf[i * 4 + 2], buf[i * 4 + 3], cmd);
      if (rc === 1) {
        flushPfd = true;
        rc = 0;
      }
    } else if (cmd === MMU_MACHPHYS_UPDATE) {
      rc = machphysUpdate(
        h,
        caller,
        ptOwner,
        pg,
        ptrLo,
        ptrHi,
        buf[i * 4 + 2],
        buf[i * 4 + 3],
        xsmM2pChecked,
      );
      xsmM2pChecked = true;
    } else rc = -ENOSYS;
    if (rc !== 0) break;
    done++;
  }
  // XSA-286: L2–L4 changes flush the page-table owner's CPUs at the end of the batch.
  if (flushPfd) flushDomainTlbs(h, ptOwner.domid);
  return { rc, done };
}

/** One page-table update; returns 0, a negative errno, or 1 for "done, and an L2–L4 changed". */
function ptUpdate(
  h: Host,
  caller: Domain,
  ptOwner: Domain,
  pg: PgOwner,
  pgDom: Domain | undefined,
  ptrLo: number,
  ptrHi: number,
  lo: number,
  hi: number,
  cmd: number,
): number {
  const mfn = ptrHi * 0x10_0000 + (ptrLo >>> 12);
  const index = (ptrLo & 0xfff) >>> 3;
  if (!getPage(h, mfn, ptOwner.domid)) return -EINVAL;
  const f = h.frames;
  const preserveAd = cmd === MMU_PT_UPDATE_PRESERVE_AD;
  let rc = 0;
  if (lockable(h, mfn)) {
    const type = f.type[mfn];
    if (type === PGT_l1_page_table) {
      rc = modL1Entry(h, mfn, index, lo, hi, preserveAd, ptOwner, pgDom, caller);
    } else if (type >= 2 && type <= PGT_l4_page_table) {
      if (pgOwnerDomid(pg) !== ptOwner.domid) rc = -EINVAL;
      else {
        rc = modLnEntry(h, mfn, index, lo, hi, type, ptOwner, preserveAd);
        if (rc === 0) rc = 1;
      }
    } else if (type === PGT_writable_page) {
      rawWrite(h, mfn, index, lo, hi);
    } else rc = -EINVAL;
  } else if (getPageType(h, mfn, PGT_writable_page) === 0) {
    rawWrite(h, mfn, index, lo, hi);
    putPageType(h, mfn);
  } else rc = -EINVAL;
  putPage(h, mfn);
  return rc;
}

function rawWrite(h: Host, mfn: number, index: number, lo: number, hi: number): void {
  const t = h.mem.frameForWrite(mfn);
  t[index * 2] = lo;
  t[index * 2 + 1] = hi;
}

function machphysUpdate(
  h: Host,
  caller: Domain,
  ptOwner: Domain,
  pg: PgOwner,
  ptrLo: number,
  ptrHi: number,
  lo: number,
  hi: number,
  checked: boolean,
): number {
  if (ptOwner !== caller) return -EPERM;
  if (!checked && !xsmTarget(caller, pg)) return -EPERM;
  const mfn = ptrHi * 0x10_0000 + (ptrLo >>> 12);
  if (!getPage(h, mfn, pgOwnerDomid(pg))) return -EINVAL;
  h.frames.m2pLo[mfn] = lo;
  h.frames.m2pHi[mfn] = hi;
  putPage(h, mfn);
  return 0;
}

/** Scratch slot for adjusting an entry before the fast-path comparison. */
const scratch = new Uint32Array(2);

/**
 * `mod_l1_entry`: validate and install a new L1 entry; the fast path skips
 * reference changes when only whitelisted bits change. No TLB flush (the guest must).
 */
export function modL1Entry(
  h: Host,
  l1mfn: number,
  index: number,
  lo: number,
  hi: number,
  preserveAd: boolean,
  l1eOwner: Domain,
  pgOwner: Domain | undefined,
  caller: Domain,
): number {
  const t = h.mem.frameForWrite(l1mfn);
  const olo = t[index * 2];
  const ohi = t[index * 2 + 1];
  h.counters.entriesValidated++;
  if (preserveAd) lo |= olo & (LO_A | LO_D);
  if (lo & LO_P) {
    if ((lo & l1DisallowLo(l1eOwner)) !== 0 || (hi & l1DisallowHi(h)) !== 0) return -EINVAL;
    storeL1e(scratch, 0, lo, hi); // adjust_guest_l1e
    lo = scratch[0];
    hi = scratch[1];
    if (fastPathOk(olo, ohi, lo, hi, h.bugs.fastPathRw)) {
      t[index * 2] = lo;
      t[index * 2 + 1] = hi;
      return 0;
    }
    const rc = getPageFromL1e(h, lo, hi, l1eOwner, pgOwner, caller);
    if (rc < 0) return rc;
    lo = (lo ^ rc) >>> 0;
  }
  t[index * 2] = lo >>> 0;
  t[index * 2 + 1] = hi >>> 0;
  putPageFromL1e(h, olo, ohi, l1eOwner);
  return 0;
}

/** `mod_l{2,3,4}_entry`. */
export function modLnEntry(
  h: Host,
  mfn: number,
  index: number,
  lo: number,
  hi: number,
  level: number,
  d: Domain,
  preserveAd: boolean,
): number {
  if (level === 4 && isXenL4Slot(index)) return -EINVAL;
  const t = h.mem.frameForWrite(mfn);
  const olo = t[index * 2];
  const ohi = t[index * 2 + 1];
  h.counters.entriesValidated++;
  if (preserveAd) lo |= olo & (LO_A | LO_D);
  if (lo & LO_P) {
    if (lo & LN_DISALLOW) return -EINVAL;
    lo = (lo | LO_US | (level === 4 ? LO_A : 0)) >>> 0;
    if (fastPathOk(olo, ohi, lo, hi, h.bugs.fastPathRw)) {
      t[index * 2] = lo;
      t[index * 2 + 1] = hi >>> 0;
      return 0;
    }
    const rc = getPageFromLne(h, lo, hi, mfn, d, level);
    if (rc !== 0) return rc;
  }
  t[index * 2] = lo >>> 0;
  t[index * 2 + 1] = hi >>> 0;
  putPageFromLne(h, olo, ohi, mfn);
  return 0;
}

/** `__addr_ok` for 64-bit PV: below 2^47, or at/after the end of Xen's reserved range. */
export function addrOk(va: bigint): boolean {
  const v = BigInt.asUintN(64, va);
  return v < 1n << 47n || v >= 0xffff_8800_0000_0000n;
}

/**
 * `map_guest_l1e`: find the L1 entry for `va` through the vCPU's current
 * (kernel) page tables. Returns [l1 mfn, index] or undefined.
 */
export function guestL1e(h: Host, v: Vcpu, va: bigint): [number, number] | undefined {
  const u = BigInt.asUintN(64, va);
  return guestL1eHalves(h, v, Number(u >> 32n), Number(u & 0xffffffffn));
}

/** `__addr_ok` on a canonical address's halves. */
function addrOkHalves(vhi: number): boolean {
  return vhi < 0x8000 || vhi >= 0xffff8800;
}

/** `guestL1e` on the halves of the linear address. */
export function guestL1eHalves(h: Host, v: Vcpu, vhi: number, vlo: number): [number, number] | undefined {
  if (!addrOkHalves(vhi)) return undefined;
  const root = v.kernelMode ? v.guestTable : v.guestTableUser;
  if (root === 0) return undefined;
  let table = root;
  for (let level = 4; level >= 2; level--) {
    const idx =
      level === 4 ? (vhi >>> 7) & 511 : level === 3 ? ((vhi & 0x7f) << 2) | (vlo >>> 30) : (vlo >>> 21) & 511;
    const t = h.mem.frame(table);
    const lo = t[idx * 2];
    const hi = t[idx * 2 + 1];
    if ((lo & LO_P) === 0 || (level <= 3 && lo & LO_PS)) return undefined;
    table = (hi & HI_ADDR_MASK) * 0x10_0000 + (lo >>> 12);
  }
  return [table, (vlo >>> 12) & 511];
}

const FLUSHTYPE_MASK = BigInt(UVMF_FLUSHTYPE_MASK);
const UVMF_ALL_BIG = BigInt(UVMF_ALL);

/** `update_va_mapping(va, val, flags)` (pgOwner = caller) and `_otherdomain` (pgOwner = named). */
export function updateVaMapping(
  h: Host,
  v: Vcpu,
  va: bigint,
  val: bigint,
  flags: bigint,
  pg: PgOwner,
): number {
  const u = BigInt.asUintN(64, va);
  const w = BigInt.asUintN(64, val);
  const kind = Number(flags & FLUSHTYPE_MASK);
  return updateVaMappingHalves(
    h,
    v,
    Number(u >> 32n),
    Number(u & 0xffffffffn),
    Number(w & 0xffffffffn),
    Number(w >> 32n),
    kind,
    flags & ~FLUSHTYPE_MASK,
    pg,
  );
}

/**
 * `update_va_mapping` on numbers: the address and the new entry as halves, the flush type
 * (`UVMF_NONE`/`TLB_FLUSH`/`INVLPG`) and its target (0: this vCPU, `UVMF_ALL`, or a guest
 * pointer to a vCPU bitmap).
 */
export function updateVaMappingHalves(
  h: Host,
  v: Vcpu,
  vhi: number,
  vlo: number,
  lo: number,
  hi: number,
  kind: number,
  target: bigint,
  pg: PgOwner,
): number {
  const caller = v.domain;
  if (!xsmTarget(caller, pg)) return -EPERM;
  const at = guestL1eHalves(h, v, vhi, vlo);
  if (!at) return -EINVAL;
  const [l1mfn, index] = at;
  if (!getPage(h, l1mfn, caller.domid)) return -EINVAL;
  if (!lockable(h, l1mfn) || h.frames.type[l1mfn] !== PGT_l1_page_table) {
    putPage(h, l1mfn);
    return -EINVAL;
  }
  const rc = modL1Entry(h, l1mfn, index, lo >>> 0, hi >>> 0, false, caller, pgOwnerDomain(h, pg), caller);
  putPage(h, l1mfn);
  if (rc !== 0) return rc;
  if (target === 0n) {
    // The common case: this vCPU only.
    if (kind === UVMF_TLB_FLUSH) v.cpu.tlb.flushAll();
    else if (kind === UVMF_INVLPG) v.cpu.tlb.invlpg(vhi, vlo);
    return 0;
  }
  let vcpus: Vcpu[];
  if (target === UVMF_ALL_BIG) vcpus = caller.vcpus;
  else {
    // UVMF_MULTI: a guest pointer to a vCPU bitmap. The PTE is already updated.
    const mask = readGuestU64(h, v, target);
    if (mask === undefined) return -EFAULT;
    vcpus = caller.vcpus.filter((c) => c.id < 64 && (mask >> BigInt(c.id)) & 1n);
  }
  for (const c of vcpus) {
    if (kind === UVMF_TLB_FLUSH) c.cpu.tlb.flushAll();
    else if (kind === UVMF_INVLPG) c.cpu.tlb.invlpg(vhi, vlo);
  }
  return 0;
}

/** Read 8 bytes of guest memory as Xen's copy_from_guest would (kernel view); undefined on a fault. */
export function readGuestU64(h: Host, v: Vcpu, va: bigint): bigint | undefined {
  if ((va & 7n) !== 0n || !addrOk(va)) return undefined;
  v.reloadCr3IfNeeded();
  const r = v.cpu.translateVa(va, 4 /* user-mode access: PV kernels run in ring 3 */);
  if (!r.ok) return undefined;
  return h.mem.read64(r.paddr);
}
