/**
 * The fuzzer's cheap per-step checks. They look only at what the step could
 * have broken locally — the entries of validated page tables whose frames were
 * written in this step (every write goes through PhysicalMemory.frameForWrite,
 * which notes the frame), and the vCPUs' TLBs (kept small in fuzz worlds) —
 * and apply the auditor's local rules to them: write exclusivity, level
 * discipline, no writable self-map, no writable cached translation of a table.
 * Counts are global facts; the full audit (src/xen/audit.ts) checks them at
 * intervals. A local suspicion is always confirmed by the full audit before it
 * becomes a finding, so the two can never disagree about what is wrong.
 */

import { LO_P, LO_RW } from "../x86/pte.js";
import { PERM_W } from "../x86/walk.js";
import { DOMID_IO, PGT_writable_page } from "../xen/abi.js";
import type { Domain } from "../xen/domain.js";
import { F_VALIDATED } from "../xen/frametable.js";
import type { Host } from "../xen/host.js";
import { entryMfn, isXenL4Slot } from "../xen/mm.js";

export class LocalChecker {
  private readonly linearOk: boolean;

  constructor(private readonly h: Host) {
    h.mem.trackWrites(true);
    this.linearOk = h.pvLinearPt && h.linearPolicy !== "self-only";
  }

  /** Forget the frames written so far (after setting up). */
  reset(): void {
    this.h.mem.takeWritten();
  }

  /** Does anything the last step touched break a local rule? */
  suspicious(): boolean {
    const h = this.h;
    const f = h.frames;
    const io = DOMID_IO + 1;
    const written = h.mem.takeWritten();
    for (let k = 0; k < written.length; k++) {
      const m = written[k];
      const t = f.type[m];
      if (t < 1 || t > 4 || !(f.flags[m] & F_VALIDATED)) continue;
      const e = h.mem.frame(m);
      for (let i = 0; i < 512; i++) {
        const lo = e[i * 2];
        if ((lo & LO_P) === 0) continue;
        if (t === 4 && isXenL4Slot(i)) continue;
        const target = entryMfn(lo, e[i * 2 + 1]);
        if (!f.valid(target)) continue;
        if (t === 1) {
          if (lo & LO_RW && f.owner[target] !== io && f.type[target] !== PGT_writable_page) return true;
          continue;
        }
        if (target === m) {
          if (lo & LO_RW) return true;
          continue;
        }
        const tt = f.type[target];
        if (tt === t - 1) continue;
        if (tt === t && (lo & LO_RW) === 0 && this.linearOk) continue;
        return true;
      }
    }
    this.bad = false;
    h.domains.forEach(this.checkTlbs);
    return this.bad;
  }

  /** Every vCPU TLB of a domain (`Map.forEach` with callbacks made once: no iterators per step). */
  private readonly checkTlbs = (d: Domain): void => {
    for (const v of d.vcpus) v.cpu.tlb.forEachLive(this.checkTlbEntry);
  };

  /** Set by `checkTlbEntry`: some vCPU caches a writable translation of a page-table frame. */
  private bad = false;

  /** One TLB entry (made once: this runs for every vCPU after every step). */
  private readonly checkTlbEntry = (pa: number, _size: number, perm: number): void => {
    if ((perm & PERM_W) === 0) return;
    const f = this.h.frames;
    const m = Math.floor(pa / 4096);
    if (f.valid(m) && f.type[m] >= 1 && f.type[m] <= 5 && f.typeCount[m] > 0) this.bad = true;
  };
}
