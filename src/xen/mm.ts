/**
 * Xen's PV memory-management core (xen/arch/x86/mm.c), without preemption:
 * general and type reference counts, validation on a type count's 0→1
 * transition and devalidation on 1→0, per-level entry rules, Xen's rewriting
 * of stored entries, and linear page tables.
 *
 * Invariants kept (mm.c's header comment; reference §2.8), with no operation
 * in flight:
 *  - only entries of validated tables hold references; a table that is not
 *    validated is plain data;
 *  - a frame's type changes only at type count 0; a page-table frame whose
 *    type count drops to 0 is devalidated (its entries release their refs);
 *  - a frame typed as a page table is never mapped writable: a writable L1
 *    mapping takes a writable type ref, which conflicts with any table type;
 *  - Tc(table) = pin + base pointers + entries one level up + linear entries;
 *    Gc(frame) = allocation + every mapping, pin, base pointer and holder.
 * Every failing operation leaves every count as it was, except where Xen
 * itself leaves a changed `type_info` (a failed validation), reproduced here.
 */

import { HI_ADDR_MASK, LO_A, LO_D, LO_G, LO_P, LO_RW, LO_US } from "../x86/pte.js";
import {
  DOMID_IO,
  EBUSY,
  EINVAL,
  EPERM,
  HI_GNTTAB,
  HI_GUEST_KERNEL,
  LINEAR_PT_SLOT,
  PERDOMAIN_SLOT,
  PGT_l1_page_table,
  PGT_l2_page_table,
  PGT_l4_page_table,
  PGT_writable_page,
  RO_MPT_SLOT,
  ROOT_PAGETABLE_FIRST_XEN_SLOT,
  ROOT_PAGETABLE_LAST_XEN_SLOT,
  VMASST_TYPE_m2p_strict,
} from "./abi.js";
import type { Domain } from "./domain.js";
import { F_VALIDATED } from "./frametable.js";
import type { Host } from "./host.js";

/** PWT | PCD | PAT: L1 bits a domain without I/O resources may not set. */
export const L1_DISALLOW = 0x98;
/** PWT | PCD | PSE | G: L2–L4 bits no PV guest may set (no superpages). */
export const LN_DISALLOW = 0x198;
/** Bits a "fast path" update may change without revalidation: A, D, US, G, AVAIL 9–11 (low half). */
export const FASTPATH_LO = LO_A | LO_D | LO_US | LO_G | 0xe00;
/** … and NX and AVAIL 52–62 (high half). */
export const FASTPATH_HI = 0xfff00000;

export function entryMfn(lo: number, hi: number): number {
  return (hi & HI_ADDR_MASK) * 0x10_0000 + (lo >>> 12);
}

export function isXenL4Slot(slot: number): boolean {
  return slot >= ROOT_PAGETABLE_FIRST_XEN_SLOT && slot <= ROOT_PAGETABLE_LAST_XEN_SLOT;
}

/** The domain that owns a page table's entries' rules (the table's owner). */
function ownerDomain(h: Host, mfn: number): Domain | undefined {
  return h.domains.get(h.frames.ownerOf(mfn));
}

/** Flush every TLB of a domain's vCPUs (a type change's flush of the dirty CPUs). */
export function flushDomainTlbs(h: Host, domid: number): void {
  const d = h.domains.get(domid);
  if (d) for (const v of d.vcpus) v.cpu.tlb.flushAll();
}

// ---------------------------------------------------------------------------
// General references
// ---------------------------------------------------------------------------

/** `page_get_owner_and_reference`: a general ref unless the frame is free; returns the owner or -1. */
export function getPageAnyOwner(h: Host, mfn: number): number {
  const f = h.frames;
  if (!f.valid(mfn) || f.count[mfn] === 0 || f.count[mfn] >= 0xfffffffe) return -1;
  f.count[mfn]++;
  return f.ownerOf(mfn);
}

/** `get_page(page, d)`. */
export function getPage(h: Host, mfn: number, domid: number): boolean {
  const owner = getPageAnyOwner(h, mfn);
  if (owner === -1) return false;
  if (owner !== domid) {
    putPage(h, mfn);
    return false;
  }
  return true;
}

/** `put_page`: the last reference frees the frame. */
export function putPage(h: Host, mfn: number): void {
  const f = h.frames;
  if (f.count[mfn] === 0) throw new Error(`put_page on free frame 0x${mfn.toString(16)}`);
  if (--f.count[mfn] === 0) h.freePage(mfn);
}

// ---------------------------------------------------------------------------
// Type references
// ---------------------------------------------------------------------------

/**
 * `_get_page_type(page, type)`: take a type ref of `type`, validating on a
 * 0→1 transition. Returns 0 or a negative errno.
 */
export function getPageType(h: Host, mfn: number, type: number): number {
  const f = h.frames;
  const tc = f.typeCount[mfn];
  if (tc > 0) {
    if (f.type[mfn] !== type) {
      // Injected bug (level-confusion): an L2 in use is accepted where an L1 belongs.
      if (!(h.bugs.levelConfusion && type === PGT_l1_page_table && f.type[mfn] === PGT_l2_page_table)) {
        return -EINVAL;
      }
    }
    f.typeCount[mfn] = tc + 1;
    return 0;
  }
  const old = f.type[mfn];
  if (old !== type) {
    if (h.linearPolicy === "split-count" && f.tableUses[mfn] > 0) return splitCountRetype(h, mfn, type);
    f.type[mfn] = type;
    f.flags[mfn] &= ~F_VALIDATED;
    f.typeCount[mfn] = 1;
    // No CPU may keep a translation made under the old type — above all a writable one of a
    // frame becoming a table or descriptor page. Xen filters its flush by the frame's TLB-clock
    // stamp; the model flushes on every change into or out of a table/descriptor type.
    if (((old >= 1 && old <= 5) || (type >= 1 && type <= 5)) && !h.bugs.noTypeFlush) {
      flushDomainTlbs(h, f.ownerOf(mfn));
    }
  } else {
    f.typeCount[mfn] = 1;
  }
  if (f.flags[mfn] & F_VALIDATED) return 0;
  if (type >= PGT_writable_page - 1 || type === 0) {
    f.flags[mfn] |= F_VALIDATED; // writable, shared: no content check
    return 0;
  }
  return validatePage(h, mfn, type);
}

/** `_put_page_type(page, ptpg)`: `ptpg` is the table whose entry is dropped (-1 for pins, CR3, …). */
export function putPageType(h: Host, mfn: number, ptpg = -1): void {
  const f = h.frames;
  const tc = f.typeCount[mfn];
  if (tc === 0) throw new Error(`put_page_type on frame 0x${mfn.toString(16)} with type count 0`);
  const t = f.type[mfn];
  const linear = ptpg >= 0 && t >= 1 && t <= 4 && f.type[ptpg] === t && h.linearPolicy === "xen";
  if (linear) {
    f.linear[mfn]++;
    f.linear[ptpg]--;
  }
  if (tc === 1 && t >= 1 && t <= 4 && f.flags[mfn] & F_VALIDATED) {
    if (h.linearPolicy === "split-count" && f.tableUses[mfn] > 0) {
      f.typeCount[mfn] = 0; // still used as a table below: stays validated until those uses go
      return;
    }
    f.flags[mfn] &= ~F_VALIDATED;
    devalidatePage(h, mfn, t);
    f.typeCount[mfn] = 0;
    return;
  }
  f.typeCount[mfn] = tc - 1;
}

export function getPageAndType(h: Host, mfn: number, domid: number, type: number): number {
  if (!getPage(h, mfn, domid)) return -EINVAL;
  const rc = getPageType(h, mfn, type);
  if (rc !== 0) putPage(h, mfn);
  return rc;
}

export function putPageAndType(h: Host, mfn: number, ptpg = -1): void {
  putPageType(h, mfn, ptpg);
  putPage(h, mfn);
}

/**
 * `split-count` policy: a directory with no directory uses left but still used as a table
 * (one level down) by other directories' linear entries may become exactly that lower-level
 * table: its uses-as-table become its type references.
 */
function splitCountRetype(h: Host, mfn: number, type: number): number {
  const f = h.frames;
  const old = f.type[mfn];
  if (type !== old - 1 || !(f.flags[mfn] & F_VALIDATED)) return -EINVAL;
  // Validate as the lower level first, while the directory's own references are still held:
  // nothing can be freed in between, and a failure leaves everything as it was — the contents
  // included (promotion rewrites entries as it goes). Only then do the directory's entries let go.
  const t = h.mem.frameForWrite(mfn);
  const before = t.slice();
  const linear = f.linear[mfn];
  f.type[mfn] = type;
  f.typeCount[mfn] = 1;
  f.flags[mfn] &= ~F_VALIDATED;
  const rc = validatePage(h, mfn, type);
  if (rc !== 0) {
    t.set(before);
    f.type[mfn] = old;
    f.typeCount[mfn] = 0;
    f.flags[mfn] |= F_VALIDATED;
    f.linear[mfn] = linear;
    return rc;
  }
  const after = t.slice();
  t.set(before);
  f.type[mfn] = old;
  devalidatePage(h, mfn, old);
  f.type[mfn] = type;
  t.set(after);
  if (!h.bugs.noTypeFlush) flushDomainTlbs(h, f.ownerOf(mfn));
  f.typeCount[mfn] = 1 + f.tableUses[mfn];
  f.tableUses[mfn] = 0;
  return 0;
}

// ---------------------------------------------------------------------------
// Validation and devalidation
// ---------------------------------------------------------------------------

/** `validate_page`: promote the table; on failure leave `type_info` as Xen does. */
function validatePage(h: Host, mfn: number, type: number): number {
  const f = h.frames;
  const d = ownerDomain(h, mfn);
  if (!d) {
    f.type[mfn] = 0;
    f.typeCount[mfn] = 0;
    f.flags[mfn] = 0;
    return -EINVAL;
  }
  f.linear[mfn] = 0;
  h.counters.tablesValidated++;
  if (type === PGT_l1_page_table) {
    const rc = promoteL1(h, mfn, d);
    if (rc !== 0) {
      f.type[mfn] = 0; // type_info = 0
      f.typeCount[mfn] = 0;
      f.flags[mfn] &= ~F_VALIDATED;
      return rc;
    }
  } else if (type <= PGT_l4_page_table) {
    const [rc, at] = promoteLn(h, mfn, type, d);
    if (rc !== 0) {
      // Failure at slot 0: type_info = 0. At slot i > 0: entries [0, i) released through
      // old_guest_table; the frame ends with the attempted type, count 0, not validated.
      if (at === 0) f.type[mfn] = 0;
      f.typeCount[mfn] = 0;
      f.flags[mfn] &= ~F_VALIDATED;
      return rc;
    }
  } else {
    // seg_desc: descriptors are not modelled beyond "validated on first use".
  }
  f.flags[mfn] |= F_VALIDATED;
  return 0;
}

/** Forced devalidation during teardown (type count untouched). */
export function devalidate(h: Host, mfn: number, type: number): void {
  devalidatePage(h, mfn, type);
}

/** `devalidate_page`: every entry releases its references (entries are not cleared). */
function devalidatePage(h: Host, mfn: number, type: number): void {
  const t = h.mem.frame(mfn);
  if (type === PGT_l1_page_table) {
    const d = ownerDomain(h, mfn);
    // put_page_from_l1e for every entry, inlined for the common case: a read-only entry of a
    // frame that keeps other references (the full path for the rest).
    const f = h.frames;
    const count = f.count;
    const owner = f.owner;
    const io = DOMID_IO + 1;
    const plain = !h.debugBuild;
    const frames = f.frames;
    for (let i = 511; i >= 0; i--) {
      const lo = t[i * 2];
      if ((lo & LO_P) === 0) continue;
      const hi = t[i * 2 + 1];
      // Frames below 2^31 in 32-bit arithmetic; others through entryMfn.
      const target = (hi & 0xff800) === 0 ? ((hi & 0x7ff) << 20) | (lo >>> 12) : entryMfn(lo, hi);
      if (plain && (lo & LO_RW) === 0 && target < frames && owner[target] !== io && count[target] > 1) {
        count[target]--;
        continue;
      }
      putPageFromL1e(h, lo, hi, d);
    }
    return;
  }
  for (let i = 511; i >= 0; i--) {
    if (type === PGT_l4_page_table && isXenL4Slot(i)) continue;
    putPageFromLne(h, t[i * 2], t[i * 2 + 1], mfn);
  }
  if (type === PGT_l4_page_table) {
    const d = ownerDomain(h, mfn);
    if (d) d.nrL4Pages--;
  }
}

function promoteL1(h: Host, mfn: number, d: Domain): number {
  const t = h.mem.frameForWrite(mfn);
  const f = h.frames;
  const ownerTag = d.domid + 1;
  const dlo = l1DisallowLo(d);
  const dhi = l1DisallowHi(h);
  const frames = f.frames;
  for (let i = 0; i < 512; i++) {
    const lo = t[i * 2];
    const hi = t[i * 2 + 1];
    if ((lo & LO_P) === 0) continue;
    // Fast path for the common entry — the domain's own RAM frame, mapped read-only, or
    // read/write when it is already writable-typed or untyped: the same references
    // get_page_from_l1e takes, without its general machinery. Anything else takes the full path.
    const target = (hi & 0xff800) === 0 ? ((hi & 0x7ff) << 20) | (lo >>> 12) : entryMfn(lo, hi);
    let rc = 0;
    if (
      (lo & dlo) === 0 &&
      (hi & dhi) === 0 &&
      target < frames &&
      f.owner[target] === ownerTag &&
      f.count[target] !== 0 &&
      f.count[target] < 0xfffffffe &&
      ((lo & LO_RW) === 0 ||
        f.type[target] === PGT_writable_page ||
        (f.type[target] === 0 && f.typeCount[target] === 0))
    ) {
      f.count[target]++;
      if (lo & LO_RW) {
        if (f.typeCount[target]++ === 0) {
          f.type[target] = PGT_writable_page;
          f.flags[target] |= F_VALIDATED;
        }
      }
    } else rc = getPageFromL1e(h, lo, hi, d, d);
    if (rc < 0) {
      // (Injected bug validation-leak: the references of entries [0, i) are kept.)
      if (!h.bugs.validationLeak)
        for (let k = i - 1; k >= 0; k--) putPageFromL1e(h, t[k * 2], t[k * 2 + 1], d);
      return rc;
    }
    storeL1e(t, i, lo ^ rc, hi);
  }
  return 0;
}

/** Promote an L2–L4; returns [rc, slot of failure]. */
function promoteLn(h: Host, mfn: number, level: number, d: Domain): [number, number] {
  const t = h.mem.frameForWrite(mfn);
  for (let i = 0; i < 512; i++) {
    if (level === 4 && isXenL4Slot(i)) continue;
    const lo = t[i * 2];
    if ((lo & LO_P) === 0) continue;
    const rc = getPageFromLne(h, lo, t[i * 2 + 1], mfn, d, level);
    if (rc !== 0) {
      for (let k = h.bugs.validationLeak ? -1 : i - 1; k >= 0; k--) {
        if (level === 4 && isXenL4Slot(k)) continue;
        putPageFromLne(h, t[k * 2], t[k * 2 + 1], mfn);
      }
      return [rc, i];
    }
    t[i * 2] = (lo | LO_US | (level === 4 ? LO_A : 0)) >>> 0;
  }
  if (level === 4) {
    initXenL4Slots(h, mfn, d, d.vmAssisted(VMASST_TYPE_m2p_strict));
    d.nrL4Pages++;
  }
  return [0, 0];
}

/** `init_xen_l4_slots`: Xen's entries in slots 256–271 of a validated L4. */
export function initXenL4Slots(h: Host, mfn: number, d: Domain, roMpt: boolean): void {
  const t = h.mem.frameForWrite(mfn);
  const put = (slot: number, frame: number, flags: number) => {
    t[slot * 2] = ((frame % 0x10_0000) * 4096 + flags) >>> 0;
    t[slot * 2 + 1] = Math.floor(frame / 0x10_0000);
  };
  for (let s = ROOT_PAGETABLE_FIRST_XEN_SLOT; s <= ROOT_PAGETABLE_LAST_XEN_SLOT; s++) {
    put(s, h.xenSlotFrames[s - ROOT_PAGETABLE_FIRST_XEN_SLOT], LO_P | LO_RW | LO_A | LO_D);
  }
  if (roMpt) put(RO_MPT_SLOT, h.roM2pL3, LO_P | LO_US | LO_A);
  else {
    t[RO_MPT_SLOT * 2] = 0;
    t[RO_MPT_SLOT * 2 + 1] = 0;
  }
  put(LINEAR_PT_SLOT, mfn, LO_P | LO_RW | LO_A | LO_D); // Xen's own linear map of this L4
  t[259 * 2] = 0; // shadow linear map: empty for PV
  t[259 * 2 + 1] = 0;
  put(PERDOMAIN_SLOT, d.perdomainL3, LO_P | LO_RW | LO_A | LO_D);
}

/** `fill_ro_mpt`: install the read-only M2P in slot 256 if it is empty. */
export function fillRoMpt(h: Host, mfn: number): void {
  const t = h.mem.frameForWrite(mfn);
  if ((t[RO_MPT_SLOT * 2] & LO_P) === 0) {
    t[RO_MPT_SLOT * 2] = ((h.roM2pL3 % 0x10_0000) * 4096 + (LO_P | LO_US | LO_A)) >>> 0;
    t[RO_MPT_SLOT * 2 + 1] = Math.floor(h.roM2pL3 / 0x10_0000);
  }
}

/** `zap_ro_mpt`. */
export function zapRoMpt(h: Host, mfn: number): void {
  const t = h.mem.frameForWrite(mfn);
  t[RO_MPT_SLOT * 2] = 0;
  t[RO_MPT_SLOT * 2 + 1] = 0;
}

// ---------------------------------------------------------------------------
// Entries
// ---------------------------------------------------------------------------

/**
 * Store a present L1 entry into slot `index` of `t` after `adjust_guest_l1e` (pv/mm.h): a kernel
 * mapping (US clear) gets US and `_PAGE_GUEST_KERNEL` (bit 52); a user mapping (bit 52 clear)
 * gets G and US. One home for the rule, no tuple on the hot paths.
 */
export function storeL1e(t: Uint32Array, index: number, lo: number, hi: number): void {
  if ((lo & LO_US) === 0) {
    lo |= LO_US;
    hi |= HI_GUEST_KERNEL;
  }
  if ((hi & HI_GUEST_KERNEL) === 0) lo |= LO_G | LO_US;
  t[index * 2] = lo >>> 0;
  t[index * 2 + 1] = hi >>> 0;
}

/** `l1_disallow_mask(d)`, low half. */
export function l1DisallowLo(d: Domain | undefined): number {
  return d?.io ? 0 : L1_DISALLOW;
}

/** `l1_disallow_mask(d)`, high half: `_PAGE_GNTTAB` in debug builds. */
export function l1DisallowHi(h: Host): number {
  return h.debugBuild ? HI_GNTTAB : 0;
}

/** Can `d` reach I/O frame `mfn` (iomem permission)? The model grants I/O-capable domains all of it. */
function iomemAccess(d: Domain | undefined, _mfn: number): boolean {
  return d?.io ?? false;
}

/**
 * `get_page_from_l1e(l1e, l1e_owner, pg_owner)`: take the refs a present L1
 * entry holds. Returns a negative errno, or a non-negative "flip" mask to XOR
 * into the entry's low half (cacheability forced for I/O mappings).
 * `pgOwner` undefined means DOMID_IO.
 */
export function getPageFromL1e(
  h: Host,
  lo: number,
  hi: number,
  l1eOwner: Domain,
  pgOwner: Domain | undefined,
  caller: Domain = l1eOwner,
): number {
  if ((lo & l1DisallowLo(l1eOwner)) !== 0 || (hi & l1DisallowHi(h)) !== 0) return -EINVAL;
  const f = h.frames;
  const mfn = entryMfn(lo, hi);
  if (!f.valid(mfn) || f.ownerOf(mfn) === DOMID_IO) {
    const who = pgOwner ?? caller;
    const denied = (d: Domain) => !iomemAccess(d, mfn);
    if (denied(who) || (who !== l1eOwner && denied(l1eOwner))) {
      return mfn === 0xff_ffff_ffff ? -EINVAL : -EPERM;
    }
    // Cacheability: WB, WT and WP (PAT indices 0, 1, 5) become UC (PCD|PWT).
    const idx = (lo & 0x80 ? 4 : 0) | (lo & 0x10 ? 2 : 0) | (lo & 0x08 ? 1 : 0);
    return idx === 0 || idx === 1 || idx === 5 ? (lo & 0x98) ^ 0x18 : 0;
  }
  const real = getPageAnyOwner(h, mfn);
  const want = pgOwner?.domid ?? DOMID_IO;
  if (real !== want) {
    const transfer =
      real !== -1 &&
      pgOwner !== undefined &&
      pgOwner !== l1eOwner &&
      pgOwner.privileged &&
      h.domains.has(real);
    if (!transfer) {
      if (real !== -1) putPage(h, mfn);
      return -EBUSY;
    }
  }
  if (lo & LO_RW) {
    if (getPageType(h, mfn, PGT_writable_page) !== 0) {
      putPage(h, mfn);
      return -EBUSY;
    }
  }
  return 0;
}

/**
 * `put_page_from_l1e`. In debug builds, releasing a grant PTE (`_PAGE_GNTTAB`) other than by
 * the grant unmap calls injects #GP(0) into the guest unless it is dying; the release happens anyway.
 */
export function putPageFromL1e(h: Host, lo: number, hi: number, l1eOwner: Domain | undefined): void {
  if ((lo & LO_P) === 0) return;
  const f = h.frames;
  const mfn = entryMfn(lo, hi);
  if (!f.valid(mfn) || f.ownerOf(mfn) === DOMID_IO) return;
  if (h.debugBuild && hi & HI_GNTTAB && l1eOwner && !l1eOwner.isDying) l1eOwner.injectedGp++;
  if (lo & LO_RW) putPageType(h, mfn);
  putPage(h, mfn);
}

/**
 * `get_page_from_l{2,3,4}e`: an entry of an L(level) table `tableMfn` takes a
 * general and an L(level−1) type ref on its target (validating it), or is a
 * linear entry under the linear policy. Returns 0 or a negative errno.
 */
export function getPageFromLne(
  h: Host,
  lo: number,
  hi: number,
  tableMfn: number,
  d: Domain,
  level: number,
): number {
  if ((lo & LN_DISALLOW) !== 0) return -EINVAL;
  const target = entryMfn(lo, hi);
  const rc = getPageAndType(h, target, d.domid, level - 1);
  if (rc !== -EINVAL) return rc;
  return getLinearPagetable(h, lo, tableMfn, target, d, level) ? 0 : -EINVAL;
}

/** `put_page_from_l{2,3,4}e` (self-maps hold nothing). */
export function putPageFromLne(h: Host, lo: number, hi: number, tableMfn: number): void {
  if ((lo & LO_P) === 0) return;
  const target = entryMfn(lo, hi);
  if (target === tableMfn) return;
  const f = h.frames;
  if (h.linearPolicy === "split-count" && f.type[target] === f.type[tableMfn] && f.tableUses[target] > 0) {
    // A use as a table ends; the last one lets a directory nothing else uses go.
    if (--f.tableUses[target] === 0 && f.typeCount[target] === 0 && f.flags[target] & F_VALIDATED) {
      f.flags[target] &= ~F_VALIDATED;
      devalidatePage(h, target, f.type[target]);
    }
    putPage(h, target);
    return;
  }
  putPageAndType(h, target, tableMfn);
}

/**
 * `get_lN_linear_pagetable`: an entry of L(level) table `tableMfn` pointing at a
 * same-level table `target`. Tried only when the normal reference failed with -EINVAL.
 */
function getLinearPagetable(
  h: Host,
  lo: number,
  tableMfn: number,
  target: number,
  d: Domain,
  level: number,
): boolean {
  if (!h.pvLinearPt) return false;
  if (lo & LO_RW) return false;
  if (target === tableMfn) return true; // self-map: no references
  if (h.linearPolicy === "self-only") return false;
  const f = h.frames;
  if (f.ownerOf(tableMfn) !== d.domid) return false;
  if (!getPage(h, target, d.domid)) return false;
  if (h.linearPolicy === "split-count") {
    if (f.type[target] !== level || !(f.flags[target] & F_VALIDATED)) {
      putPage(h, target);
      return false;
    }
    f.tableUses[target]++;
    return true;
  }
  // Xen: one hop only — a table holds linear entries or is the target of some, never both.
  // (Injected bug linear-chain: chains of any length.)
  if ((f.linear[tableMfn] < 0 && !h.bugs.linearChain) || f.linear[tableMfn] === 0x7fff) {
    putPage(h, target);
    return false;
  }
  if ((f.linear[target] > 0 && !h.bugs.linearChain) || f.linear[target] === -0x8000) {
    putPage(h, target);
    return false;
  }
  if (f.type[target] !== level || !(f.flags[target] & F_VALIDATED) || f.typeCount[target] === 0) {
    putPage(h, target);
    return false;
  }
  f.linear[tableMfn]++;
  f.linear[target]--;
  f.typeCount[target]++;
  return true;
}

/**
 * Does a present entry keep the same frame and the bits outside the fast-path whitelist?
 * (`rwToo`: the injected bug fast-path-rw, which lets RW change without revalidation.)
 */
export function fastPathOk(oldLo: number, oldHi: number, lo: number, hi: number, rwToo = false): boolean {
  const mask = rwToo ? FASTPATH_LO | LO_RW : FASTPATH_LO;
  return (oldLo & LO_P) !== 0 && ((oldLo ^ lo) & ~mask) === 0 && ((oldHi ^ hi) & ~FASTPATH_HI) === 0;
}
