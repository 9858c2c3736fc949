/**
 * Temporary mapping slots (NetBSD's `pmap_zero_page`/`pmap_copy_page` PTEs,
 * Linux's kmap_atomic): strategies without a direct map reach a frame's
 * contents by pointing one of the vCPU's fixmap slots at it with
 * `update_va_mapping(…, UVMF_INVLPG)`. A slot keeps its frame until reused, so
 * repeated access to the same frame costs nothing; before a frame becomes a
 * validated page table the slot is cleared (Xen refuses to type a frame that
 * is still mapped writable).
 */

import { Kernel as K, type Kernel } from "../kernel.js";
import { TEMP_SLOTS, TEMP_WINDOW_BASE } from "../layout.js";

export class TempSlots {
  /** The mfn each slot maps (-1: none). */
  private readonly holds = new Float64Array(TEMP_SLOTS).fill(-1);

  slotVa(k: Kernel, slot: number): number {
    return TEMP_WINDOW_BASE + (k.v.id * TEMP_SLOTS + slot) * 4096;
  }

  map(k: Kernel, mfn: number, slot: number): number {
    const va = this.slotVa(k, slot);
    if (this.holds[slot] !== mfn) {
      const [lo, hi] = K.kernelPte(mfn, true);
      k.remap(va, lo, hi, "invlpg");
      k.hc.flush();
      this.holds[slot] = mfn;
    }
    return va;
  }

  /** The frames the slots hold, as pfns (-1: none). */
  save(k: Kernel): number[] {
    return Array.from(this.holds, (m) => (m < 0 ? -1 : k.pfnOf(m)));
  }

  load(k: Kernel, pfns: number[]): void {
    for (let s = 0; s < this.holds.length; s++) {
      const p = pfns[s] ?? -1;
      this.holds[s] = p < 0 ? -1 : k.mfnOf(p);
    }
  }

  /** Make sure no slot maps `mfn` writable. */
  drop(k: Kernel, mfn: number): void {
    for (let s = 0; s < TEMP_SLOTS; s++) {
      if (this.holds[s] !== mfn) continue;
      k.remap(this.slotVa(k, s), 0, 0, "invlpg");
      this.holds[s] = -1;
    }
  }
}
