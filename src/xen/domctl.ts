/**
 * The toolstack's domain controls that save and restore use
 * (xen/arch/x86/domctl.c, xen/common/domctl.c, xen/common/domain.c):
 *
 *  - `getpageframeinfo3`: the type Xen currently gives each frame, as
 *    XEN_DOMCTL_PFINFO_* — L1–L4 only for a validated page table (pinned ones
 *    with LPINTAB), NOTAB for anything else the domain owns (a page table that
 *    is not validated reads as NOTAB), XTAB for a frame it does not own;
 *  - `getvcpucontext` / `setvcpucontext` for the parts of a 64-bit PV
 *    `vcpu_guest_context` the model keeps: the kernel and user base pointers
 *    (`ctrlreg[3]`, `ctrlreg[1]`, as `mfn << 12`), the GDT frames, LDT,
 *    vm_assist, the start-info register. Setting the context takes the base
 *    pointers' references as MMUEXT_NEW_BASEPTR does (validating the tree);
 *  - pausing: the controller's pause count (`XEN_DOMINF_paused`) is kept
 *    apart from the guest's own suspend (`SCHEDOP_shutdown(SHUTDOWN_suspend)`),
 *    as Xen does — the saver's choice between deferring and failing on a bad
 *    PTE depends on the former only (reference A6).
 */

import { EINVAL, ESRCH, PGT_l4_page_table } from "./abi.js";
import type { Domain, Vcpu } from "./domain.js";
import { F_PINNED, F_VALIDATED } from "./frametable.js";
import { setGdt } from "./gdt.js";
import type { Host } from "./host.js";
import { getPageAndType, putPageAndType } from "./mm.js";
import { newGuestCr3 } from "./mmuext.js";

// XEN_DOMCTL_PFINFO_* as 4-bit values (the domctl constants are these shifted left by 28).
export const PFINFO_NOTAB = 0x0;
export const PFINFO_LPINTAB = 0x8;
export const PFINFO_BROKEN = 0xd;
export const PFINFO_XALLOC = 0xe;
export const PFINFO_XTAB = 0xf;

/** `getpageframeinfo3` for one frame the toolstack names by MFN (PV guests have no P2M in Xen). */
export function pageFrameInfo(h: Host, d: Domain, mfn: number): number {
  const f = h.frames;
  // get_page_from_gfn on a PV guest: a reference only if the frame is the domain's.
  if (!Number.isSafeInteger(mfn) || !f.valid(mfn) || f.ownerOf(mfn) !== d.domid || f.count[mfn] === 0) {
    return PFINFO_XTAB;
  }
  if (f.listPos[mfn] < 0) return PFINFO_XTAB; // a Xen-heap page shared with the guest (is_special_page)
  const t = f.type[mfn];
  let type = t >= 1 && t <= 4 ? t : PFINFO_NOTAB;
  if (f.flags[mfn] & F_PINNED) type |= PFINFO_LPINTAB;
  else if (!(f.flags[mfn] & F_VALIDATED)) type = PFINFO_NOTAB;
  return type;
}

/** The parts of a 64-bit PV `vcpu_guest_context` the model keeps (frame numbers are MFNs here). */
export interface VcpuState {
  flags: number;
  /** `user_regs.rdx`: vCPU 0 carries the start-info frame at boot and resume. */
  rdx: number;
  /** `ctrlreg[0..7]`: [3] = kernel L4 << 12, [1] = user L4 << 12. */
  ctrlreg: number[];
  gdtFrames: number[];
  gdtEnts: number;
  ldtBase: number;
  ldtEnts: number;
  vmAssist: number;
}

export const VGCF_in_kernel = 1 << 2;
export const VGCF_online = 1 << 5;

/** `XEN_DOMCTL_getvcpucontext`. */
export function getVcpuContext(v: Vcpu): VcpuState {
  const ctrlreg = [0, 0, 0, 0, 0, 0, 0, 0];
  ctrlreg[3] = v.guestTable * 4096;
  ctrlreg[1] = v.guestTableUser * 4096;
  return {
    flags: VGCF_online | (v.kernelMode ? VGCF_in_kernel : 0),
    rdx: v.startInfo,
    ctrlreg,
    gdtFrames: [...v.gdtFrames],
    gdtEnts: v.gdtEnts,
    ldtBase: Number(v.ldtBase),
    ldtEnts: v.ldtEnts,
    vmAssist: v.domain.vmAssist >>> 0,
  };
}

/**
 * `XEN_DOMCTL_setvcpucontext` (arch_set_info_guest) for a vCPU that has no base pointer yet:
 * the kernel L4 is taken with a type reference (validating the tree below it), then the user
 * L4, then the GDT. Returns 0 or -errno; on failure nothing is held.
 */
export function setVcpuContext(h: Host, v: Vcpu, c: VcpuState): number {
  if (v.guestTable !== 0 || v.guestTableUser !== 0) return -EINVAL;
  const cr3 = c.ctrlreg[3];
  const cr1 = c.ctrlreg[1];
  if (!Number.isSafeInteger(cr3) || cr3 % 4096 !== 0 || !Number.isSafeInteger(cr1) || cr1 % 4096 !== 0) {
    return -EINVAL;
  }
  const d = v.domain;
  d.vmAssist = c.vmAssist >>> 0;
  let rc = newGuestCr3(h, v, cr3 / 4096);
  if (rc !== 0) return rc;
  if (cr1 !== 0) {
    rc = getPageAndType(h, cr1 / 4096, d.domid, PGT_l4_page_table);
    if (rc !== 0) {
      undoBase(h, v);
      return rc;
    }
    v.guestTableUser = cr1 / 4096;
  }
  if (c.gdtFrames.length > 0) {
    rc = setGdt(h, v, c.gdtFrames, c.gdtEnts);
    if (rc !== 0) {
      undoBase(h, v);
      return rc;
    }
  }
  v.ldtBase = BigInt(c.ldtBase);
  v.ldtEnts = c.ldtEnts;
  v.startInfo = c.rdx;
  v.kernelMode = true;
  v.reloadCr3();
  return 0;
}

function undoBase(h: Host, v: Vcpu): void {
  if (v.guestTableUser !== 0) putPageAndType(h, v.guestTableUser);
  if (v.guestTable !== 0) putPageAndType(h, v.guestTable);
  v.guestTable = 0;
  v.guestTableUser = 0;
  v.cpu.loadRoot(0);
}

/** `XEN_DOMCTL_pausedomain` / `unpausedomain`: the controller's pause count. */
export function pauseDomain(d: Domain | undefined, pause: boolean): number {
  if (!d || d.isDying) return -ESRCH;
  if (pause) d.pauseCount++;
  else if (d.pauseCount === 0) return -EINVAL;
  else d.pauseCount--;
  return 0;
}
