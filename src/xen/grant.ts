/**
 * Grant tables, v1 (xen/common/grant_table.c, xen/arch/x86/pv/grant_table.c;
 * reference part B).
 *
 * Each domain has a grant table of 8-byte v1 entries {flags u16, domid u16,
 * frame u32} in frames it can write itself (Xen-heap frames shared with it;
 * entries 0–7 are the toolstack's). Xen keeps, per entry, an "active" record
 * (four 8-bit pin counters: host-write, host-read, device-write, device-read;
 * the mapper's domid; the frame) and, per mapping domain, a maptrack table of
 * handles {ref, GNTMAP flags, granting domid}.
 *
 * A PV host mapping writes a PTE (frame | P | A | D | NX, RW unless read-only,
 * US for application_map, `_PAGE_GNTTAB` in debug builds) into an L1 of the
 * mapper — at a machine address with GNTMAP_contains_pte, else at the L1 slot
 * of a linear address — without `get_page_from_l1e`: the grant code takes the
 * references itself (a general ref, plus a writable type ref unless read-only).
 * If the PTE goes away by other means (mmu_update, the L1 devalidated), the
 * references go with it but the pin stays: the granter can no longer revoke
 * the entry until the mapper dies.
 */

import { LO_A, LO_D, LO_P, LO_RW, LO_US } from "../x86/pte.js";
import { DOMID_SELF, HI_GNTTAB, PGT_l1_page_table, PGT_writable_page } from "./abi.js";
import type { Domain, Vcpu } from "./domain.js";
import { F_VALIDATED } from "./frametable.js";
import type { Host } from "./host.js";
import { entryMfn, getPage, getPageType, putPage, putPageFromL1e, putPageType, storeL1e } from "./mm.js";
import { guestL1e } from "./mmu.js";

// ---- ABI (public/grant_table.h) ----
export const GNTTABOP_map_grant_ref = 0;
export const GNTTABOP_unmap_grant_ref = 1;
export const GNTTABOP_setup_table = 2;
export const GNTTABOP_copy = 5;
export const GNTTABOP_query_size = 6;
export const GNTTABOP_unmap_and_replace = 7;

export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_accept_transfer = 2;
export const GTF_transitive = 3;
export const GTF_type_mask = 3;
export const GTF_readonly = 1 << 2;
export const GTF_reading = 1 << 3;
export const GTF_writing = 1 << 4;
export const GTF_PWT = 1 << 5;
export const GTF_PCD = 1 << 6;
export const GTF_PAT = 1 << 7;
export const GTF_sub_page = 1 << 8;

export const GNTMAP_device_map = 1 << 0;
export const GNTMAP_host_map = 1 << 1;
export const GNTMAP_readonly = 1 << 2;
export const GNTMAP_application_map = 1 << 3;
export const GNTMAP_contains_pte = 1 << 4;

export const GNTCOPY_source_gref = 1 << 0;
export const GNTCOPY_dest_gref = 1 << 1;

export const GNTST_okay = 0;
export const GNTST_general_error = -1;
export const GNTST_bad_domain = -2;
export const GNTST_bad_gntref = -3;
export const GNTST_bad_handle = -4;
export const GNTST_bad_virt_addr = -5;
export const GNTST_bad_dev_addr = -6;
export const GNTST_permission_denied = -8;
export const GNTST_bad_page = -9;
export const GNTST_bad_copy_arg = -10;
export const GNTST_no_space = -13;

export const GNTTAB_NR_RESERVED_ENTRIES = 8;
/** Xen's defaults: `gnttab_max_frames` 64, `gnttab_max_maptrack_frames` 1024 (256 handles each). */
export const MAX_GRANT_FRAMES = 64;
export const MAX_MAPTRACK_HANDLES = 1024 * 256;

// Pin counter layout in `pin` (u32): host-write 0–7, host-read 8–15, device-write 16–23, device-read 24–31.
const PIN_HSTW = 1;
const PIN_HSTR = 1 << 8;
const PIN_DEVW = 1 << 16;
const PIN_DEVR = 1 << 24;

/** A domain's grant table (its shared frames and Xen's active entries). */
export class GrantTable {
  /** Xen-heap frames holding the shared v1 entries, shared with (owned by) the domain. */
  readonly frames: number[] = [];
  pin = new Uint32Array(0);
  /** Domid of the domain the entry is pinned by, and the pinned frame. */
  actDomid = new Int32Array(0);
  actMfn = new Float64Array(0);
  /** Maptrack of this domain as a mapper: ref, GNTMAP flags (0 = free), granting domid, PTE address. */
  mtRef: number[] = [];
  mtFlags: number[] = [];
  mtDom: number[] = [];
  mtAddr: number[] = [];
  readonly mtFree: number[] = [];

  get nrEntries(): number {
    return this.frames.length * 512;
  }

  grow(h: Host, d: Domain, nrFrames: number): boolean {
    while (this.frames.length < nrFrames) {
      const m = h.allocSharedFrame(d);
      if (m < 0) return false;
      this.frames.push(m);
    }
    const n = this.nrEntries;
    if (this.pin.length < n) {
      const grow = <T extends Uint32Array | Int32Array | Float64Array>(a: T, make: (n: number) => T): T => {
        const b = make(n);
        b.set(a);
        return b;
      };
      this.pin = grow(this.pin, (k) => new Uint32Array(k));
      this.actDomid = grow(this.actDomid, (k) => new Int32Array(k));
      this.actMfn = grow(this.actMfn, (k) => new Float64Array(k));
    }
    return true;
  }

  /** The shared entry's words: [flags | domid << 16, frame]. */
  entryWords(h: Host, ref: number): [Uint32Array, number] {
    const t = h.mem.frameForWrite(this.frames[ref >>> 9]);
    return [t, (ref & 511) * 2];
  }

  allocHandle(): number {
    const free = this.mtFree.pop();
    if (free !== undefined) return free;
    if (this.mtRef.length >= MAX_MAPTRACK_HANDLES) return -1;
    this.mtRef.push(0);
    this.mtFlags.push(0);
    this.mtDom.push(0);
    this.mtAddr.push(0);
    return this.mtRef.length - 1;
  }

  freeHandle(handle: number): void {
    this.mtFlags[handle] = 0;
    this.mtFree.push(handle);
  }
}

export interface MapOp {
  host_addr: bigint;
  flags: number;
  ref: number;
  dom: number;
}

export interface MapResult {
  status: number;
  handle: number;
  dev_bus_addr: bigint;
}

function pinIncrement(flags: number): number {
  let inc = 0;
  if (flags & GNTMAP_device_map) inc += flags & GNTMAP_readonly ? PIN_DEVR : PIN_DEVW;
  if (flags & GNTMAP_host_map) inc += flags & GNTMAP_readonly ? PIN_HSTR : PIN_HSTW;
  return inc;
}

/** Each 8-bit counter refuses to reach 128 (Xen checks bit 7 before adding). */
function pinRoom(pin: number, inc: number): boolean {
  for (let s = 0; s < 32; s += 8) {
    if ((inc >>> s) & 0xff && ((pin >>> s) & 0xff) + ((inc >>> s) & 0xff) >= 0x80) return false;
  }
  return true;
}

/** `reduce_status_for_pin`: clear GTF_reading/writing no longer justified by the pins. */
function reduceStatus(words: Uint32Array, w: number, pin: number): void {
  let flags = words[w] & 0xffff;
  if ((pin & 0x00ff00ff) === 0) flags &= ~GTF_writing;
  if (pin === 0) flags &= ~GTF_reading;
  words[w] = (words[w] & 0xffff0000) | flags;
}

/** Index of the slot found by the last `grantPteSlot`. */
let slotIndex = 0;

/**
 * The L1 a host mapping writes (its slot index in `slotIndex`): by machine address
 * (contains_pte) or the L1 slot of a linear address. The L1 must be the mapper's and a
 * validated L1. Returns -1 otherwise.
 */
function grantPteSlot(h: Host, v: Vcpu, addr: bigint, flags: number): number {
  let l1: number;
  if (flags & GNTMAP_contains_pte) {
    const a = Number(addr);
    if (!Number.isSafeInteger(a) || a % 8 !== 0) return -1;
    l1 = Math.floor(a / 4096);
    slotIndex = (a % 4096) >>> 3;
  } else {
    const at = guestL1e(h, v, addr);
    if (!at) return -1;
    [l1, slotIndex] = at;
  }
  return lockableL1(h, l1, v.domain.domid) ? l1 : -1;
}

/**
 * May Xen edit an entry of frame `l1` for domain `domid` (`get_page_from_mfn(gl1mfn, currd)`,
 * `page_lock`, then the PGT_l1_page_table type check)? The frame must be the domain's, a
 * validated L1 in use (page_lock refuses a frame without PGT_validated or type count).
 */
function lockableL1(h: Host, l1: number, domid: number): boolean {
  const f = h.frames;
  if (!f.valid(l1) || f.ownerOf(l1) !== domid) return false;
  return (f.flags[l1] & F_VALIDATED) !== 0 && f.typeCount[l1] !== 0 && f.type[l1] === PGT_l1_page_table;
}

/** `create_grant_pv_mapping`: write the grant PTE, adjusted as any L1 entry. */
function writeGrantPte(h: Host, t: Uint32Array, index: number, mfn: number, flags: number): void {
  let lo = ((mfn % 0x10_0000) * 4096 + (LO_P | LO_A | LO_D)) >>> 0;
  const hi = Math.floor(mfn / 0x10_0000) | 0x80000000 | (h.debugBuild ? HI_GNTTAB : 0);
  if (flags & GNTMAP_application_map) lo |= LO_US;
  if (!(flags & GNTMAP_readonly)) lo |= LO_RW;
  lo |= ((flags >>> 16) & 7) << 9;
  storeL1e(t, index, lo, hi);
}

/** GNTTABOP_map_grant_ref for one op, issued by vCPU `v` (domain ld). */
export function mapGrantRef(h: Host, v: Vcpu, op: MapOp): MapResult {
  const ld = v.domain;
  const inc = pinIncrement(op.flags);
  if (inc === 0) return { status: GNTST_bad_gntref, handle: 0, dev_bus_addr: 0n };
  const rd = h.domains.get(op.dom === DOMID_SELF ? ld.domid : op.dom);
  if (!rd) return { status: GNTST_bad_domain, handle: 0, dev_bus_addr: 0n };
  const gt = rd.grants;
  const handle = ld.grants.allocHandle();
  if (handle < 0) return { status: GNTST_no_space, handle: 0, dev_bus_addr: 0n };
  const ref = op.ref >>> 0;
  if (ref >= gt.nrEntries) return mapFailed(ld, handle, GNTST_bad_gntref);
  const words = h.mem.frameForWrite(gt.frames[ref >>> 9]);
  const w = (ref & 511) * 2;
  const readonly = (op.flags & GNTMAP_readonly) !== 0;
  const oldPin = gt.pin[ref];
  const oldWord = words[w];
  if (oldPin !== 0) {
    if (gt.actDomid[ref] !== ld.domid || words[w] & GTF_sub_page || !pinRoom(oldPin, inc)) {
      return mapFailed(ld, handle, GNTST_general_error);
    }
  }
  if (oldPin === 0 || (!readonly && (oldPin & 0x00ff00ff) === 0)) {
    const flags = oldWord & 0xffff;
    const domid = oldWord >>> 16;
    if (
      oldPin === 0 &&
      ((flags & GTF_type_mask) !== GTF_permit_access || flags & GTF_sub_page || domid !== ld.domid)
    ) {
      return mapFailed(ld, handle, GNTST_general_error);
    }
    if (!readonly && flags & GTF_readonly) return mapFailed(ld, handle, GNTST_general_error);
    words[w] = oldWord | GTF_reading | (readonly ? 0 : GTF_writing);
  }
  if (oldPin === 0) {
    const frame = words[w + 1];
    if (!h.frames.valid(frame) || h.frames.ownerOf(frame) !== rd.domid) {
      words[w] = oldWord;
      return mapFailed(ld, handle, GNTST_bad_page);
    }
    gt.actDomid[ref] = ld.domid;
    gt.actMfn[ref] = frame;
  }
  const mfn = gt.actMfn[ref];
  gt.pin[ref] = oldPin + inc;
  // References: one general ref per kind of mapping, a writable type ref per writable one.
  const kinds = (op.flags & GNTMAP_device_map ? 1 : 0) + (op.flags & GNTMAP_host_map ? 1 : 0);
  let took = 0;
  let ok = true;
  for (let k = 0; k < kinds && ok; k++) {
    if (!getPage(h, mfn, rd.domid)) ok = false;
    else {
      took++;
      if (!readonly && getPageType(h, mfn, PGT_writable_page) !== 0) {
        putPage(h, mfn);
        took--;
        ok = false;
      }
    }
  }
  let pteAddr = 0;
  if (ok && op.flags & GNTMAP_host_map) {
    const l1 = grantPteSlot(h, v, op.host_addr, op.flags);
    if (l1 < 0) ok = false;
    else {
      const t = h.mem.frameForWrite(l1);
      const index = slotIndex;
      const olo = t[index * 2];
      const ohi = t[index * 2 + 1];
      writeGrantPte(h, t, index, mfn, op.flags);
      putPageFromL1e(h, olo, ohi, ld);
      pteAddr = l1 * 4096 + index * 8;
    }
  }
  if (!ok) {
    for (let i = 0; i < took; i++) {
      if (!readonly) putPageType(h, mfn);
      putPage(h, mfn);
    }
    gt.pin[ref] = oldPin;
    words[w] = oldWord;
    if (oldPin === 0) reduceStatus(words, w, 0);
    return mapFailed(ld, handle, GNTST_general_error);
  }
  const mt = ld.grants;
  mt.mtRef[handle] = ref;
  mt.mtDom[handle] = rd.domid;
  mt.mtAddr[handle] = pteAddr;
  mt.mtFlags[handle] =
    op.flags & (GNTMAP_device_map | GNTMAP_host_map | GNTMAP_readonly | GNTMAP_contains_pte);
  return { status: GNTST_okay, handle, dev_bus_addr: BigInt(mfn) << 12n };
}

function mapFailed(ld: Domain, handle: number, status: number): MapResult {
  ld.grants.freeHandle(handle);
  return { status, handle: 0, dev_bus_addr: 0n };
}

export interface UnmapOp {
  host_addr: bigint;
  dev_bus_addr: bigint;
  handle: number;
  /** unmap_and_replace: the linear address whose PTE moves into the grant's slot. */
  new_addr?: bigint;
}

/** GNTTABOP_unmap_grant_ref / unmap_and_replace for one op. Returns the status, or undefined if the mapper was crashed. */
export function unmapGrantRef(h: Host, v: Vcpu, op: UnmapOp, replace: boolean): number | undefined {
  const ld = v.domain;
  const mt = ld.grants;
  const handle = op.handle >>> 0;
  if (handle >= mt.mtRef.length || mt.mtFlags[handle] === 0) return GNTST_bad_handle;
  const rd = h.domains.get(mt.mtDom[handle]);
  if (!rd) {
    ld.crashed = true; // "naughty": unmapping a grant of a domain that is gone
    return undefined;
  }
  const ref = mt.mtRef[handle];
  const gt = rd.grants;
  if (ref >= gt.nrEntries) return GNTST_bad_handle;
  const flags = mt.mtFlags[handle];
  const mfn = gt.actMfn[ref];
  const readonly = (flags & GNTMAP_readonly) !== 0;
  let drop = 0;
  if (op.dev_bus_addr !== 0n && flags & GNTMAP_device_map) {
    if (op.dev_bus_addr !== BigInt(mfn) << 12n) return GNTST_bad_dev_addr;
    drop |= GNTMAP_device_map;
  }
  if (op.host_addr !== 0n && flags & GNTMAP_host_map) {
    if (replace && op.new_addr !== undefined && op.new_addr !== 0n && flags & GNTMAP_contains_pte) {
      return GNTST_general_error;
    }
    // unmap_and_replace first steals the PTE at new_addr (`steal_linear_address`: the entry is
    // cleared and its references move to this call), then checks the grant's PTE — in Xen's
    // order, so new_addr == host_addr steals the grant PTE itself and the check then fails.
    let nlo = 0;
    let nhi = 0;
    let stolen = false;
    if (replace && op.new_addr !== undefined && op.new_addr !== 0n) {
      // `steal_linear_address`: the entry must be in one of the caller's L1 tables, in use; an
      // entry found elsewhere through a linear mapping (an L4's self-map, say) is refused
      // untouched — it holds no reference the grant slot could take over.
      const from = guestL1e(h, v, op.new_addr);
      if (!from || !lockableL1(h, from[0], ld.domid)) return GNTST_general_error;
      const s = h.mem.frameForWrite(from[0]);
      nlo = s[from[1] * 2];
      nhi = s[from[1] * 2 + 1];
      s[from[1] * 2] = 0;
      s[from[1] * 2 + 1] = 0;
      stolen = true;
    }
    /** On error Xen is still responsible for the stolen PTE: its references go. */
    const failed = (): number => {
      if (stolen) putPageFromL1e(h, nlo, nhi, ld);
      return GNTST_general_error;
    };
    const l1 = grantPteSlot(h, v, op.host_addr, flags & GNTMAP_contains_pte);
    if (l1 < 0) return failed();
    const index = slotIndex;
    const t = h.mem.frameForWrite(l1);
    const lo = t[index * 2];
    const hi = t[index * 2 + 1];
    // The PTE must still map the granted frame, present, with the grant's RW.
    // (Injected bug grant-unmap-unchecked: whatever the PTE holds is cleared.)
    if (
      !h.bugs.grantUnmapUnchecked &&
      (entryMfn(lo, hi) !== mfn || (lo & LO_P) === 0 || ((lo & LO_RW) !== 0) === readonly)
    ) {
      return failed();
    }
    t[index * 2] = nlo;
    t[index * 2 + 1] = nhi;
    drop |= GNTMAP_host_map;
  }
  if (drop === 0) return GNTST_okay;
  mt.mtFlags[handle] = flags & ~drop;
  if ((mt.mtFlags[handle] & (GNTMAP_device_map | GNTMAP_host_map)) === 0) mt.freeHandle(handle);
  // Complete phase (after the batch's flush): references and pins.
  let dec = 0;
  for (const kind of [GNTMAP_device_map, GNTMAP_host_map]) {
    if (!(drop & kind)) continue;
    dec += pinIncrement(kind | (readonly ? GNTMAP_readonly : 0));
    if (!readonly) putPageType(h, mfn);
    putPage(h, mfn);
  }
  gt.pin[ref] -= dec;
  const [words, w] = gt.entryWords(h, ref);
  reduceStatus(words, w, gt.pin[ref]);
  return GNTST_okay;
}

/**
 * Every live maptrack entry of every domain whose granter still exists, in domain then handle
 * order: `visit(mapper, handle, granter, ref, flags)`. (An entry may outlive its granter after an
 * implicit unmap; those are skipped.) For the checkers — the auditor and the reverse map.
 */
export function forEachLiveMapping(
  h: Host,
  visit: (ld: Domain, handle: number, rd: Domain, ref: number, flags: number) => void,
): void {
  for (const ld of h.domains.values()) {
    const mt = ld.grants;
    for (let handle = 0; handle < mt.mtRef.length; handle++) {
      const fl = mt.mtFlags[handle];
      if (fl === 0) continue;
      const rd = h.domains.get(mt.mtDom[handle]);
      if (rd) visit(ld, handle, rd, mt.mtRef[handle], fl);
    }
  }
}

/**
 * `gnttab_release_mappings` when the mapping domain dies: pins and status flags of every live
 * mapping are dropped; device mappings drop their references; host mappings of a PV domain do
 * not — the PTEs drop them when the dying domain's page tables are torn down.
 */
export function releaseMappings(h: Host, ld: Domain): void {
  const mt = ld.grants;
  for (let handle = mt.mtRef.length - 1; handle >= 0; handle--) {
    const flags = mt.mtFlags[handle];
    if (flags === 0) continue;
    const rd = h.domains.get(mt.mtDom[handle]);
    const ref = mt.mtRef[handle];
    const readonly = (flags & GNTMAP_readonly) !== 0;
    if (rd) {
      const gt = rd.grants;
      const mfn = gt.actMfn[ref];
      for (const kind of [GNTMAP_device_map, GNTMAP_host_map]) {
        if (!(flags & kind)) continue;
        gt.pin[ref] -= pinIncrement(kind | (readonly ? GNTMAP_readonly : 0));
        if (kind === GNTMAP_device_map) {
          if (!readonly) putPageType(h, mfn);
          putPage(h, mfn);
        }
      }
      const [words, w] = gt.entryWords(h, ref);
      reduceStatus(words, w, gt.pin[ref]);
    }
    mt.freeHandle(handle);
  }
}

/** GNTTABOP_setup_table: grow the table to `nr_frames`; returns [status, frame list]. */
export function setupTable(h: Host, caller: Domain, dom: number, nrFrames: number): [number, number[]] {
  const d = dom === DOMID_SELF ? caller : h.domains.get(dom);
  if (!d) return [GNTST_bad_domain, []];
  if (d !== caller && !caller.privileged) return [GNTST_permission_denied, []];
  if (!Number.isInteger(nrFrames) || nrFrames > MAX_GRANT_FRAMES || nrFrames < 0)
    return [GNTST_general_error, []];
  if (!d.grants.grow(h, d, nrFrames)) return [GNTST_general_error, []];
  return [GNTST_okay, d.grants.frames.slice(0, nrFrames)];
}

export interface CopyPtr {
  /** A grant ref (with GNTCOPY_*_gref) or a frame (gmfn). */
  u: number;
  domid: number;
  offset: number;
}

/** GNTTABOP_copy for one op: copy `len` bytes between frames, either side possibly through a grant. */
export function grantCopy(
  h: Host,
  caller: Domain,
  src: CopyPtr,
  dst: CopyPtr,
  len: number,
  flags: number,
): number {
  if (src.offset + len > 4096 || dst.offset + len > 4096 || len < 0) return GNTST_bad_copy_arg;
  const resolve = (p: CopyPtr, isGref: boolean, write: boolean): number => {
    const d = h.domains.get(p.domid === DOMID_SELF ? caller.domid : p.domid);
    if (!d) return GNTST_bad_domain;
    if (!isGref) {
      if (d !== caller && !caller.privileged) return GNTST_permission_denied;
      return h.frames.valid(p.u) && h.frames.ownerOf(p.u) === d.domid ? p.u : GNTST_bad_page;
    }
    const gt = d.grants;
    if (p.u < 0 || p.u >= gt.nrEntries) return GNTST_bad_gntref;
    const [words, w] = gt.entryWords(h, p.u);
    const f = words[w] & 0xffff;
    if ((f & GTF_type_mask) !== GTF_permit_access || words[w] >>> 16 !== caller.domid)
      return GNTST_general_error;
    if (write && f & GTF_readonly) return GNTST_general_error;
    const frame = words[w + 1];
    return h.frames.valid(frame) && h.frames.ownerOf(frame) === d.domid ? frame : GNTST_bad_page;
  };
  const s = resolve(src, (flags & GNTCOPY_source_gref) !== 0, false);
  if (s < 0) return s;
  const t = resolve(dst, (flags & GNTCOPY_dest_gref) !== 0, true);
  if (t < 0) return t;
  const owner = h.frames.ownerOf(t);
  if (!getPage(h, t, owner)) return GNTST_general_error;
  if (getPageType(h, t, PGT_writable_page) !== 0) {
    putPage(h, t);
    return GNTST_general_error;
  }
  const bytes = h.mem.readBytes(s * 4096 + src.offset, len);
  h.mem.writeBytes(t * 4096 + dst.offset, bytes);
  putPageType(h, t);
  putPage(h, t);
  return GNTST_okay;
}
