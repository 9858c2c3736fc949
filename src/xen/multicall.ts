/**
 * `vm_assist` (21) and `multicall` (13).
 *
 * A multicall runs each entry in order and records each entry's result; the
 * multicall itself returns 0 (Xen's `do_multicall`: an entry's failure does
 * not stop the batch; a preempted batch would continue, which the model never is).
 */

import {
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_update_va_mapping,
  __HYPERVISOR_update_va_mapping_otherdomain,
  __HYPERVISOR_vm_assist,
  DOMID_SELF,
  EINVAL,
  ENOSYS,
  VMASST_CMD_disable,
  VMASST_CMD_enable,
} from "./abi.js";
import type { Domain, Vcpu } from "./domain.js";
import type { Host } from "./host.js";
import {
  getPgOwner,
  type HypercallResult,
  type MmuUpdateReq,
  mmuUpdate,
  mmuUpdateBuf,
  updateVaMapping,
  updateVaMappingHalves,
} from "./mmu.js";
import { type MmuextOp, mmuextOp } from "./mmuext.js";

/** vm_assist types a 64-bit PV guest may set (VM_ASSIST_VALID). */
const VALID_VMASST = [0, 1, 2, 3, 4, 5, 32];

export function vmAssist(d: Domain, cmd: number, type: number): number {
  if (cmd !== VMASST_CMD_enable && cmd !== VMASST_CMD_disable) return -ENOSYS;
  if (!VALID_VMASST.includes(type)) return -EINVAL;
  setAssist(d, type, cmd === VMASST_CMD_enable);
  return 0;
}

/** vm_assist bits as a bigint-free set: types 0..31 in `vmAssist`, 32 (m2p_strict) in bit 31's place. */
function setAssist(d: Domain, type: number, on: boolean): void {
  const bit = type === 32 ? 31 : type;
  d.vmAssist = on ? (d.vmAssist | (1 << bit)) >>> 0 : (d.vmAssist & ~(1 << bit)) >>> 0;
}

export type MulticallEntry =
  | { op: typeof __HYPERVISOR_mmu_update; reqs: MmuUpdateReq[]; foreigndom?: number }
  /** mmu_update with its requests as laid out in guest memory (4 words each), as guests pass them. */
  | { op: typeof __HYPERVISOR_mmu_update; buf: Uint32Array; count: number; foreigndom?: number }
  | { op: typeof __HYPERVISOR_mmuext_op; ops: MmuextOp[]; foreigndom?: number }
  | { op: typeof __HYPERVISOR_update_va_mapping; va: bigint; val: bigint; flags: bigint }
  /** update_va_mapping as a guest passes it in registers: address and entry as 32-bit halves. */
  | {
      op: typeof __HYPERVISOR_update_va_mapping;
      vaHi: number;
      vaLo: number;
      lo: number;
      hi: number;
      /** UVMF flush type and target, the target 0 (this vCPU) or UVMF_ALL. */
      flags: number;
    }
  | {
      op: typeof __HYPERVISOR_update_va_mapping_otherdomain;
      va: bigint;
      val: bigint;
      flags: bigint;
      domid: number;
    }
  | { op: typeof __HYPERVISOR_vm_assist; cmd: number; type: number };

export function multicall(h: Host, v: Vcpu, calls: MulticallEntry[]): HypercallResult[] {
  const out: HypercallResult[] = [];
  for (const c of calls) {
    switch (c.op) {
      case __HYPERVISOR_mmu_update:
        out.push(
          "buf" in c
            ? mmuUpdateBuf(h, v.domain, c.buf, c.count, c.foreigndom ?? DOMID_SELF)
            : mmuUpdate(h, v.domain, c.reqs, c.foreigndom ?? DOMID_SELF),
        );
        break;
      case __HYPERVISOR_mmuext_op:
        out.push(mmuextOp(h, v, c.ops, c.foreigndom ?? DOMID_SELF));
        break;
      case __HYPERVISOR_update_va_mapping:
        out.push({
          rc:
            "vaHi" in c
              ? updateVaMappingHalves(h, v, c.vaHi, c.vaLo, c.lo, c.hi, c.flags & 3, BigInt(c.flags & ~3), {
                  kind: "domain",
                  d: v.domain,
                })
              : updateVaMapping(h, v, c.va, c.val, c.flags, { kind: "domain", d: v.domain }),
          done: 0,
        });
        break;
      case __HYPERVISOR_update_va_mapping_otherdomain: {
        const pg = getPgOwner(h, v.domain, c.domid);
        out.push({
          rc: typeof pg === "number" ? pg : updateVaMapping(h, v, c.va, c.val, c.flags, pg),
          done: 0,
        });
        break;
      }
      case __HYPERVISOR_vm_assist:
        out.push({ rc: vmAssist(v.domain, c.cmd, c.type), done: 0 });
        break;
      default:
        out.push({ rc: -ENOSYS, done: 0 });
    }
  }
  return out;
}
