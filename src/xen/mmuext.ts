/**
 * `HYPERVISOR_mmuext_op` (26): pinning, base pointers, TLB and cache
 * operations, LDT, page clearing and copying. Same batch semantics as
 * mmu_update: stop at the first error, `done` = ops completed.
 */

import {
  EACCES,
  EINVAL,
  ENOSYS,
  EOPNOTSUPP,
  EPERM,
  MMUEXT,
  PGT_l4_page_table,
  PGT_writable_page,
  VMASST_TYPE_m2p_strict,
} from "./abi.js";
import type { Domain, Vcpu } from "./domain.js";
import { F_PINNED } from "./frametable.js";
import type { Host } from "./host.js";
import { fillRoMpt, getPage, getPageAndType, getPageType, putPage, putPageAndType, zapRoMpt } from "./mm.js";
import { addrOk, getPgOwner, type HypercallResult, type PgOwner, readGuestU64, xsmTarget } from "./mmu.js";

export interface MmuextOp {
  cmd: number;
  /** arg1.mfn or arg1.linear_addr */
  arg1?: bigint;
  /** arg2.nr_ents, arg2.src_mfn or arg2.vcpumask (a guest pointer) */
  arg2?: bigint;
}

/** `do_mmuext_op(ops, foreigndom)` issued by vCPU `v`. */
export function mmuextOp(h: Host, v: Vcpu, ops: MmuextOp[], foreigndom: number): HypercallResult {
  const caller = v.domain;
  const pg = getPgOwner(h, caller, foreigndom & 0xffff);
  if (typeof pg === "number") return { rc: pg, done: 0 };
  if (pg.kind !== "domain") return { rc: -EINVAL, done: 0 }; // pg_owner must be a PV domain
  if (!xsmTarget(caller, pg)) return { rc: -EPERM, done: 0 };
  let done = 0;
  for (const op of ops) {
    const rc = oneOp(h, v, pg, op);
    if (rc !== 0) return { rc, done };
    done++;
  }
  return { rc: 0, done };
}

function oneOp(h: Host, v: Vcpu, pg: PgOwner & { kind: "domain" }, op: MmuextOp): number {
  const caller = v.domain;
  const fd = pg.d;
  const self = fd === caller;
  const mfn = Number(op.arg1 ?? 0n);
  switch (op.cmd) {
    case MMUEXT.MMUEXT_PIN_L1_TABLE:
    case MMUEXT.MMUEXT_PIN_L2_TABLE:
    case MMUEXT.MMUEXT_PIN_L3_TABLE:
    case MMUEXT.MMUEXT_PIN_L4_TABLE:
      return pin(h, fd, mfn, op.cmd + 1);
    case MMUEXT.MMUEXT_UNPIN_TABLE:
      return unpin(h, fd, mfn);
    case MMUEXT.MMUEXT_NEW_BASEPTR:
      if (!self) return -EPERM;
      return newGuestCr3(h, v, mfn);
    case MMUEXT.MMUEXT_NEW_USER_BASEPTR:
      if (!self) return -EPERM;
      return newUserBaseptr(h, v, mfn);
    case MMUEXT.MMUEXT_TLB_FLUSH_LOCAL:
      if (!self) return -EPERM;
      v.cpu.tlb.flushAll();
      return 0;
    case MMUEXT.MMUEXT_INVLPG_LOCAL:
      if (!self) return -EPERM;
      if (canonical(op.arg1 ?? 0n)) v.cpu.invlpg(op.arg1 ?? 0n);
      return 0;
    case MMUEXT.MMUEXT_TLB_FLUSH_MULTI:
    case MMUEXT.MMUEXT_INVLPG_MULTI: {
      if (!self) return -EPERM;
      const mask = readGuestU64(h, v, op.arg2 ?? 0n);
      if (mask === undefined) return -EINVAL;
      const va = op.arg1 ?? 0n;
      for (const c of caller.vcpus) {
        if (c.id >= 64 || ((mask >> BigInt(c.id)) & 1n) === 0n) continue;
        if (op.cmd === MMUEXT.MMUEXT_TLB_FLUSH_MULTI) c.cpu.tlb.flushAll();
        else if (addrOk(va)) c.cpu.invlpg(va);
      }
      return 0;
    }
    case MMUEXT.MMUEXT_TLB_FLUSH_ALL:
      if (!self) return -EPERM;
      for (const c of caller.vcpus) c.cpu.tlb.flushAll();
      return 0;
    case MMUEXT.MMUEXT_INVLPG_ALL: {
      if (!self) return -EPERM;
      const va = op.arg1 ?? 0n;
      if (addrOk(va)) for (const c of caller.vcpus) c.cpu.invlpg(va);
      return 0;
    }
    case MMUEXT.MMUEXT_FLUSH_CACHE:
    case MMUEXT.MMUEXT_FLUSH_CACHE_GLOBAL:
      if (!self) return -EPERM;
      return caller.io ? 0 : -EACCES;
    case MMUEXT.MMUEXT_SET_LDT: {
      if (!self) return -EPERM;
      const base = op.arg1 ?? 0n;
      const ents = Number(op.arg2 ?? 0n);
      if (ents > 8192 || (ents !== 0 && ((base & 0xfffn) !== 0n || !addrOk(base)))) return -EINVAL;
      v.ldtBase = base;
      v.ldtEnts = ents;
      v.cpu.tlb.flushAll();
      return 0;
    }
    case MMUEXT.MMUEXT_CLEAR_PAGE: {
      if (!getPage(h, mfn, fd.domid)) return -EINVAL;
      if (getPageType(h, mfn, PGT_writable_page) !== 0) {
        putPage(h, mfn);
        return -EINVAL;
      }
      h.mem.frameForWrite(mfn).fill(0);
      putPageAndType(h, mfn);
      return 0;
    }
    case MMUEXT.MMUEXT_COPY_PAGE: {
      const src = Number(op.arg2 ?? 0n);
      if (!getPage(h, src, fd.domid)) return -EINVAL;
      if (!getPage(h, mfn, fd.domid)) {
        putPage(h, src);
        return -EINVAL;
      }
      if (getPageType(h, mfn, PGT_writable_page) !== 0) {
        putPage(h, mfn);
        putPage(h, src);
        return -EINVAL;
      }
      h.mem.frameForWrite(mfn).set(h.mem.frame(src));
      putPageAndType(h, mfn);
      putPage(h, src);
      return 0;
    }
    case MMUEXT.MMUEXT_MARK_SUPER:
    case MMUEXT.MMUEXT_UNMARK_SUPER:
      return -EOPNOTSUPP;
    default:
      return -ENOSYS;
  }
}

function canonical(va: bigint): boolean {
  const top = BigInt.asUintN(64, va) >> 47n;
  return top === 0n || top === 0x1ffffn;
}

/** Pin (cmds 0–3): a general ref and a type ref of `type`, held by PGT_pinned. */
function pin(h: Host, fd: Domain, mfn: number, type: number): number {
  if (!Number.isSafeInteger(mfn)) return -EINVAL;
  const rc = getPageAndType(h, mfn, fd.domid, type);
  if (rc !== 0) return rc;
  const f = h.frames;
  if (f.flags[mfn] & F_PINNED) {
    putPageAndType(h, mfn);
    return -EINVAL;
  }
  f.flags[mfn] |= F_PINNED;
  if (fd.isDying) {
    f.flags[mfn] &= ~F_PINNED;
    putPageAndType(h, mfn);
  }
  return 0;
}

/** Unpin (cmd 4): any pinned type. */
function unpin(h: Host, fd: Domain, mfn: number): number {
  if (!Number.isSafeInteger(mfn) || !getPage(h, mfn, fd.domid)) return -EINVAL;
  const f = h.frames;
  if (!(f.flags[mfn] & F_PINNED)) {
    putPage(h, mfn);
    return -EINVAL;
  }
  f.flags[mfn] &= ~F_PINNED;
  putPageAndType(h, mfn);
  putPage(h, mfn);
  return 0;
}

/** `new_guest_cr3(mfn)`: the kernel base pointer. */
export function newGuestCr3(h: Host, v: Vcpu, mfn: number): number {
  const d = v.domain;
  if (mfn === v.guestTable && mfn !== 0) {
    if (v.kernelMode) v.reloadCr3();
    return 0;
  }
  if (!Number.isSafeInteger(mfn)) return -EINVAL;
  const rc = getPageAndType(h, mfn, d.domid, PGT_l4_page_table);
  if (rc !== 0) return rc;
  if (!d.vmAssisted(VMASST_TYPE_m2p_strict)) fillRoMpt(h, mfn);
  const old = v.guestTable;
  v.guestTable = mfn;
  if (v.kernelMode) v.reloadCr3();
  if (old !== 0) putPageAndType(h, old);
  return 0;
}

/** MMUEXT_NEW_USER_BASEPTR: mfn 0 clears it. */
function newUserBaseptr(h: Host, v: Vcpu, mfn: number): number {
  const d = v.domain;
  if (mfn === v.guestTableUser) return 0;
  if (mfn !== 0) {
    if (!Number.isSafeInteger(mfn)) return -EINVAL;
    const rc = getPageAndType(h, mfn, d.domid, PGT_l4_page_table);
    if (rc !== 0) return rc;
    if (d.vmAssisted(VMASST_TYPE_m2p_strict)) zapRoMpt(h, mfn);
  }
  const old = v.guestTableUser;
  v.guestTableUser = mfn;
  if (!v.kernelMode) v.reloadCr3();
  if (old !== 0) putPageAndType(h, old);
  return 0;
}
