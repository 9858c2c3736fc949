/**
 * Domains and their virtual CPUs.
 *
 * A PV domain's frames are machine frames: Xen keeps no P2M for it. The
 * guest keeps its own pfn → mfn list, handed over at creation (`p2m`); the
 * host scatters the frames so that code confusing pfn and mfn fails.
 *
 * A 64-bit PV kernel runs in ring 3: every guest mapping is user-accessible
 * in hardware (Xen sets US on all entries), and kernel/user isolation comes
 * from two L4s per vCPU — `guestTable` (kernel) and `guestTableUser` — that
 * Xen switches between on kernel/user transitions.
 */

import { Cpu } from "../x86/cpu.js";
import type { PhysicalMemory } from "../x86/memory.js";
import type { TlbOptions } from "../x86/tlb.js";
import { GrantTable } from "./grant.js";
import type { DirtyLog } from "./logdirty.js";

export class Vcpu {
  /** The hardware state (CR3, TLB) of this vCPU. */
  readonly cpu: Cpu;
  /** `arch.guest_table`: kernel L4 (mfn), holds 1 general + 1 L4 type ref; 0 = none. */
  guestTable = 0;
  /** `arch.guest_table_user`: user L4 (mfn); 0 = none. */
  guestTableUser = 0;
  /** Is the vCPU in guest kernel mode (CR3 = guestTable) or user mode (guestTableUser)? */
  kernelMode = true;
  ldtBase = 0n;
  ldtEnts = 0;
  /** Frames of the guest's GDT (each holds a general and a seg_desc type ref). */
  gdtFrames: number[] = [];
  gdtEnts = 0;
  /** `user_regs.rdx` of vCPU 0 at start of day and resume: the start-info frame. */
  startInfo = 0;

  constructor(
    readonly domain: Domain,
    readonly id: number,
    mem: PhysicalMemory,
    tlb?: TlbOptions,
  ) {
    // Xen runs PV guests with CR4.PGE clear when XPTI or PCID is in use; the model keeps PGE off so
    // that kernel/user base switches flush every translation, as Xen's context switch does.
    this.cpu = new Cpu(mem, { cr4: 1n << 5n, tlb });
  }

  /** Load CR3 for the current mode's base pointer (flushes non-global TLB entries). */
  reloadCr3(): void {
    const base = this.kernelMode ? this.guestTable : this.guestTableUser;
    this.cpu.loadRoot(base * 4096);
  }

  /** Enter kernel or user mode, loading that mode's base pointer only if CR3 differs (no needless flush). */
  enterMode(kernel: boolean): void {
    this.kernelMode = kernel;
    this.reloadCr3IfNeeded();
  }

  reloadCr3IfNeeded(): void {
    const base = this.kernelMode ? this.guestTable : this.guestTableUser;
    if (this.cpu.cr3 !== BigInt(base * 4096)) this.cpu.loadRoot(base * 4096);
  }
}

/**
 * A domain's page list (Xen's `page_list`), without a per-page object: the
 * frames in a typed array, and each frame's position kept in the frame table
 * (`listPos`), so adding and removing are O(1) and a 64 GiB guest's list costs
 * 8 bytes a page. Removal moves the last frame into the hole.
 */
export class PageList implements Iterable<number> {
  private list = new Float64Array(64);
  size = 0;

  constructor(private readonly pos: Int32Array) {}

  add(mfn: number): void {
    if (this.size === this.list.length) {
      const bigger = new Float64Array(this.list.length * 2);
      bigger.set(this.list);
      this.list = bigger;
    }
    this.list[this.size] = mfn;
    this.pos[mfn] = this.size++;
  }

  /** Remove a frame that is on this list. */
  delete(mfn: number): void {
    const i = this.pos[mfn];
    const last = this.list[--this.size];
    this.list[i] = last;
    this.pos[last] = i;
  }

  /** The `i`th frame (0 ≤ i < size), in list order: a loop over the list that allocates nothing. */
  at(i: number): number {
    return this.list[i];
  }

  /** The frames, as an array (a snapshot that later changes do not affect). */
  snapshot(): number[] {
    return Array.from(this.list.subarray(0, this.size));
  }

  *[Symbol.iterator](): Iterator<number> {
    for (let i = 0; i < this.size; i++) yield this.list[i];
  }
}

export interface DomainOptions {
  domid: number;
  privileged?: boolean;
  /** I/O capabilities: iomem/ioport access (cache_flush_permitted; relaxed L1 cache bits). */
  io?: boolean;
  maxPages?: number;
  vcpus?: number;
  /** TLB sizes of the vCPUs (default: the hardware model's). */
  tlb?: TlbOptions;
}

export class Domain {
  readonly domid: number;
  readonly privileged: boolean;
  readonly io: boolean;
  maxPages: number;
  /** The guest's pfn → mfn list (the P2M a PV guest maintains itself). */
  readonly p2m: number[] = [];
  /** `page_list`: the frames the domain owns. */
  readonly pages: PageList;
  readonly vcpus: Vcpu[] = [];
  /** `vm_assist` bits. */
  vmAssist = 0;
  isDying = false;
  /** Its resources are relinquished; what is left (a zombie) goes when its last page does. */
  relinquished = false;
  /** `arch.pv.nr_l4_pages`: validated L4s. */
  nrL4Pages = 0;
  /** Frame (owned by Xen) of the per-domain mappings L3, installed in L4 slot 260. */
  perdomainL3 = 0;
  /** The domain's grant table (as granter) and maptrack (as mapper). */
  readonly grants = new GrantTable();
  /** Xen-heap frames shared with the domain (`xenpage_list`): its grant-table frames. */
  readonly xenPages: number[] = [];
  /** #GP(0)s injected into the guest (implicit unmaps of grant PTEs in debug builds). */
  injectedGp = 0;
  /** Crashed by Xen (`domain_crash`), e.g. for unmapping a grant of a domain that is gone. */
  crashed = false;
  /** The controller's pause count (`XEN_DOMINF_paused` while non-zero). */
  pauseCount = 0;
  /** Shut down with SHUTDOWN_suspend (`SCHEDOP_shutdown`): its vCPUs are paused for it. */
  suspended = false;
  /** Log-dirty mode: the dirty bitmap while on. */
  dirtyLog: DirtyLog | null = null;
  /**
   * The P2M fields of `shared_info.arch` the guest fills in for the toolstack: `max_pfn` and
   * `pfn_to_mfn_frame_list_list` flattened to the MFNs of the guest's P2M frames (each holds
   * 512 little-endian u64 entries, pfn → mfn, ~0 for none).
   */
  sharedArch: { maxPfn: number; p2mFrames: number[] } = { maxPfn: 0, p2mFrames: [] };

  constructor(opts: DomainOptions, mem: PhysicalMemory, listPos: Int32Array) {
    this.pages = new PageList(listPos);
    this.domid = opts.domid;
    this.privileged = opts.privileged ?? false;
    this.io = opts.io ?? this.privileged;
    this.maxPages = opts.maxPages ?? Number.MAX_SAFE_INTEGER;
    const n = opts.vcpus ?? 1;
    for (let i = 0; i < n; i++) this.vcpus.push(new Vcpu(this, i, mem, opts.tlb));
  }

  /**
   * The guest updates its P2M entry for `pfn` (mfn -1: none, ~0 in the list): its typed copy and,
   * once it has one, its P2M list page — what a PV guest does right after a memory_op.
   */
  setGuestP2m(mem: PhysicalMemory, pfn: number, mfn: number): void {
    if (mfn < 0) delete this.p2m[pfn];
    else this.p2m[pfn] = mfn;
    const frame = this.sharedArch.p2mFrames[Math.floor(pfn / 512)];
    if (frame === undefined || pfn >= this.sharedArch.maxPfn) return;
    const t = mem.frameForWrite(frame);
    const w = (pfn % 512) * 2;
    t[w] = mfn < 0 ? 0xffffffff : mfn >>> 0;
    t[w + 1] = mfn < 0 ? 0xffffffff : Math.floor(mfn / 2 ** 32);
  }

  /** Is vm_assist `type` on? (Type 32, m2p_strict, is kept in bit 31.) */
  vmAssisted(type: number): boolean {
    return ((this.vmAssist >>> (type === 32 ? 31 : type)) & 1) !== 0;
  }
}
