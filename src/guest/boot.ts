/**
 * Booting a PV guest: the domain builder's start-of-day tables, then the
 * kernel's own mapping of RAM.
 *
 * The domain builder (the toolstack, as libxc's xc_dom_* does) lays the guest
 * out as: kernel image, the kernel's brk seed (`BRK_PAGES` pages set aside
 * for early page tables), for the linear method the guessed table
 * reservation, then the builder's own page tables, which map all of that at
 * the strategy's kernel addresses (read-only where a page is a table), plus
 * the fixmap L1 that holds the temporary mapping slots. Xen pins the L4 and
 * loads it; the kernel starts with that as its own address space.
 *
 * With a direct map the kernel then maps the rest of RAM with 4 KiB pages
 * (Xen PV allows no superpages), in one of two ways:
 *  - "top-down" (seed 004; Linux's `memory_map_top_down`, 2012): map the top
 *    2 MiB first with tables from the brk seed, then walk down in steps that
 *    grow ×32 once a step has mapped more than everything before it; every
 *    new table comes from memory already mapped, highest first, so it can be
 *    made read-only through its existing mapping and registered before it is
 *    linked (the paravirt hook: RO + pin for an L1, RO for a directory);
 *  - "linear" (before 2012: `find_early_table_space`): guess the number of
 *    table pages needed for all of RAM from a formula, have them reserved and
 *    mapped up front, map bottom-up taking tables in order from the
 *    reservation, and give back what was not used; a guess too small panics.
 * Both fill each new table while it is still writable, then register and
 * link it, as Linux's `phys_pte_init`/`phys_pmd_init` and the Xen hooks do.
 */

import { HI_NX, LO_A, LO_D, LO_P, LO_RW } from "../x86/pte.js";

const PTE_RO_FLAGS = LO_P | LO_A | LO_D;
const PTE_RW_FLAGS = PTE_RO_FLAGS | LO_RW;

import { MMUEXT } from "../xen/abi.js";
import type { Host } from "../xen/host.js";
import { AddressSpace, GuestError, Kernel, type KernelOptions, TABLE_FLAGS } from "./kernel.js";
import { DIRECT_MAP_BASE, indexAt, TEMP_WINDOW_BASE } from "./layout.js";
import type { BootMethod, BootReport } from "./report.js";

/** Pages the brk seed sets aside for early page tables (Linux: 6–16). */
export const BRK_PAGES = 16;
/** Kernel image size in pages (4 MiB), or a sixteenth of a small guest. */
export function kernelImagePages(pages: number): number {
  return Math.min(1024, Math.floor(pages / 16));
}

/**
 * Linux's `find_early_table_space` for 4 KiB mappings of `indices` pages of the direct map
 * spread over `l1Windows` 2 MiB windows: one L1 per window, plus L2 and L3 pages by formula.
 */
export function linearGuess(indices: number, l1Windows: number): number {
  const puds = Math.ceil(indices / 2 ** 18);
  const pmds = Math.ceil(indices / 512);
  return Math.ceil((puds * 8) / 4096) + Math.ceil((pmds * 8) / 4096) + l1Windows;
}

interface Layout {
  image: number;
  brk: number;
  reserve: number;
  /** First pfn of the builder's tables, and their count. */
  tablesAt: number;
  tables: number;
  /** First pfn of the P2M list (`start_info.mfn_list`), and its pages (512 entries each). */
  p2mAt: number;
  p2mPages: number;
  /** The start-info page. */
  startInfo: number;
  /** End of the initial mapping (pfns [0, end) are mapped). */
  end: number;
}

/** Pages of a P2M list of `pages` entries (8 bytes each). */
export function p2mListPages(pages: number): number {
  return Math.ceil(pages / 512);
}

/**
 * The builder's tables for mapping VAs `vaOf(0..end-1)` plus the fixmap L1: the distinct
 * L1/L2/L3 windows those addresses fall in, plus the L4.
 */
function tablesFor(end: number, vaOf: (pfn: number) => number): number {
  const l1 = new Set<number>();
  const l2 = new Set<number>();
  const l3 = new Set<number>();
  const add = (va: number) => {
    l1.add(Math.floor(va / 2 ** 21));
    l2.add(Math.floor(va / 2 ** 30));
    l3.add(Math.floor(va / 2 ** 39));
  };
  for (let p = 0; p < end; p++) add(vaOf(p));
  add(TEMP_WINDOW_BASE);
  return l1.size + l2.size + l3.size + 1;
}

/**
 * The builder's layout for a guest of `pages` pages: kernel image, brk seed, `reserve` pages
 * for the linear method, then just enough builder tables to map all of that (themselves
 * included) at `vaOf` — a small fixpoint, since the tables map themselves too.
 */
function builderLayout(pages: number, reserve: number, vaOf: (pfn: number) => number): Layout {
  const image = kernelImagePages(pages);
  // After the tables: the P2M list and the start-info page, as libxc's builder places them.
  const extra = p2mListPages(pages) + 1;
  let tables = 4;
  for (;;) {
    const need = tablesFor(image + BRK_PAGES + reserve + tables + extra, vaOf);
    if (need <= tables) break;
    tables = need;
  }
  const tablesAt = image + BRK_PAGES + reserve;
  const end = tablesAt + tables + extra;
  if (end > pages) throw new GuestError(`the initial mapping (${end} pages) does not fit in the guest`);
  const p2mAt = tablesAt + tables;
  return {
    image,
    brk: image,
    reserve,
    tablesAt,
    tables,
    p2mAt,
    p2mPages: extra - 1,
    startInfo: p2mAt + extra - 1,
    end,
  };
}

/**
 * Where the kernel takes each new direct-map table from, and the report of where they went:
 * top-down, the brk seed, then the highest free page already mapped; linear, the reservation
 * in order (running out is a panic).
 */
class TablePlacer {
  private brkUsed = 0;
  private reserveUsed = 0;
  /** Top-down: lowest pfn mapped so far, and the next candidate for a table page. */
  minMapped = 0;
  private cursor = -1;

  constructor(
    private readonly layout: Layout,
    private readonly method: BootMethod,
    private readonly used: Uint8Array,
    private readonly take: (pfn: number) => void,
    private readonly report: BootReport,
  ) {}

  /** Top-down starts with nothing mapped below `realEnd`. */
  startTopDown(realEnd: number): void {
    this.minMapped = realEnd;
    this.cursor = realEnd - 1;
  }

  next(): number {
    let pfn: number;
    const l = this.layout;
    if (this.method === "linear") {
      if (this.reserveUsed >= l.reserve) {
        throw new GuestError(
          `linear boot: the ${l.reserve} table pages reserved by the guess ran out (kernel panic)`,
        );
      }
      pfn = l.image + BRK_PAGES + this.reserveUsed++;
    } else if (this.brkUsed < BRK_PAGES) pfn = l.brk + this.brkUsed++;
    else {
      while (this.cursor >= this.minMapped && this.used[this.cursor]) this.cursor--;
      if (this.cursor < this.minMapped)
        throw new GuestError("top-down boot: no mapped memory left for page tables");
      pfn = this.cursor--;
      this.take(pfn);
    }
    const r = this.report;
    r.usedPages++;
    if (r.lowestTablePfn < 0 || pfn < r.lowestTablePfn) r.lowestTablePfn = pfn;
    if (pfn > r.highestTablePfn) r.highestTablePfn = pfn;
    return pfn;
  }

  /** Reserved pages never used; for linear, the first of them. */
  get unused(): number {
    return this.method === "linear" ? this.layout.reserve - this.reserveUsed : BRK_PAGES - this.brkUsed;
  }
  get firstUnusedReserved(): number {
    return this.layout.image + BRK_PAGES + this.reserveUsed;
  }
}

/**
 * The mapping steps of a boot over pfns [start, pages): linear, one bottom-up range; top-down
 * (`memory_map_top_down`), the top 2 MiB-aligned block first, then downward steps that grow ×32
 * once the mapped total reaches the step, then any tail above the block.
 */
function mapSteps(
  method: BootMethod,
  start: number,
  pages: number,
  placer: TablePlacer,
  report: BootReport,
  mapRange: (from: number, to: number) => void,
): void {
  if (method === "linear") {
    mapRange(start, pages);
    report.steps = 1;
  } else {
    let realEnd = Math.floor(pages / 512) * 512;
    if (realEnd <= start) realEnd = pages;
    placer.startTopDown(realEnd);
    let step = 512;
    let lastStart = realEnd;
    let mapped = 0;
    while (lastStart > start) {
      const s = lastStart > step ? Math.max(Math.floor((lastStart - 1) / step) * step, start) : start;
      mapRange(s, lastStart);
      mapped += lastStart - s;
      lastStart = s;
      placer.minMapped = s;
      report.steps++;
      if (mapped >= step) step *= 32;
    }
    if (realEnd < pages) {
      mapRange(realEnd, pages);
      report.steps++;
    }
  }
  report.unusedPages = placer.unused;
}

export interface BootOptions extends KernelOptions {
  method: BootMethod;
}

/** The direct-map tables the kernel knows, by window (VA / span). */
class DirectMapTables {
  readonly l1 = new Map<number, number>();
  readonly l2 = new Map<number, number>();
  readonly l3 = new Map<number, number>();
}

/**
 * Build the domain's start-of-day state and boot its kernel. The domain must exist with its
 * memory (`h.createDomain({domid, pages})`) and nothing else.
 */
export function bootGuest(h: Host, domid: number, opts: BootOptions): { kernel: Kernel; boot: BootReport } {
  const k = new Kernel(h, domid, opts);
  const pages = k.pages;
  if (pages < 8192) throw new GuestError(`a guest needs at least 32 MiB, got ${pages} pages`);
  const m = opts.mapper;
  const dmIndex = (pfn: number) => (m.name === "direct-mfn" ? k.p2m[pfn] : pfn);
  let reserve = 0;
  if (opts.method === "linear" && m.directMap) {
    const windows = new Set<number>();
    for (let p = 0; p < pages; p++) windows.add(Math.floor(dmIndex(p) / 512));
    let span = pages;
    if (m.name === "direct-mfn") {
      let max = 0;
      for (let p = 0; p < pages; p++) max = Math.max(max, k.p2m[p]);
      span = max + 1;
    }
    reserve = linearGuess(span, windows.size);
  }
  const layout = builderLayout(pages, reserve, (pfn) => m.initialVa(k, pfn));
  const dm = new DirectMapTables();
  buildInitialTables(h, k, layout, dm);
  m.setup(k);
  k.hc.flush();
  const boot: BootReport = {
    method: opts.method,
    reservedPages: opts.method === "linear" && m.directMap ? reserve : BRK_PAGES,
    usedPages: 0,
    unusedPages: 0,
    lowestTablePfn: -1,
    highestTablePfn: -1,
    ramPages: pages,
    mappedPages: m.directMap ? layout.end : 0,
    steps: 0,
    directMapTablePages: 0,
  };
  if (m.directMap) {
    new DirectMapBuilder(k, layout, dm, boot).run(opts.method);
    boot.directMapTablePages = dm.l1.size + dm.l2.size + dm.l3.size + 1;
  } else boot.unusedPages = boot.reservedPages;
  k.hc.flush();
  return { kernel: k, boot };
}

/** The domain builder: tables for pfns [0, end) at their initial VAs, pinned and loaded by Xen. */
function buildInitialTables(h: Host, k: Kernel, layout: Layout, dm: DirectMapTables): void {
  const m = k.mapper;
  let next = layout.tablesAt;
  const tables: [number, number][] = [];
  const take = (level: number) => {
    const pfn = next++;
    if (pfn >= layout.p2mAt) throw new GuestError("domain builder: table estimate too small");
    tables.push([pfn, level]);
    k.tableLevel[pfn] = level;
    k.tableCount[level - 1]++;
    return k.p2m[pfn];
  };
  for (let p = 0; p < layout.end; p++) k.alloc.take(p);
  // Every page set aside for the builder's tables is mapped read-only, used or not.
  for (let p = layout.tablesAt; p < layout.p2mAt; p++) k.tableLevel[p] = 1;
  const l4 = take(4);
  const put = (mfn: number, i: number, lo: number, hi: number) => {
    if (!h.poke(k.domid, mfn, i, (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0))) {
      throw new GuestError("domain builder: cannot write a table");
    }
  };
  const read = (mfn: number, i: number) => h.mem.frame(mfn)[i * 2];
  /** The L1 for `va`, created on the way down. */
  const l1For = (va: number): number => {
    let t = l4;
    for (let level = 4; level > 1; level--) {
      const i = indexAt(va, level);
      const e = read(t, i);
      let child: number;
      if (e & LO_P) child = (h.mem.frame(t)[i * 2 + 1] & 0xfffff) * 0x100000 + (e >>> 12);
      else {
        child = take(level - 1);
        put(t, i, ((child % 0x100000) * 4096 + TABLE_FLAGS) >>> 0, Math.floor(child / 0x100000));
        const key = Math.floor(va / 2 ** (12 + 9 * (level - 1)));
        if (m.directMap && va < TEMP_WINDOW_BASE)
          (level === 4 ? dm.l3 : level === 3 ? dm.l2 : dm.l1).set(key, child);
      }
      t = child;
    }
    return t;
  };
  for (let p = 0; p < layout.end; p++) {
    const va = m.initialVa(k, p);
    const l1 = l1For(va);
    const [lo, hi] = Kernel.kernelPte(k.p2m[p], k.tableLevel[p] === 0);
    put(l1, indexAt(va, 1), lo, hi);
  }
  l1For(TEMP_WINDOW_BASE);
  for (let p = next; p < layout.p2mAt; p++) k.tableLevel[p] = 0;
  writeP2mList(h, k, layout);
  // Xen pins the builder's L4 and loads it (arch_set_info_guest); not the guest's hypercalls.
  const pin = h.mmuextOp(k.domid, [
    { cmd: MMUEXT.MMUEXT_PIN_L4_TABLE, arg1: BigInt(l4) },
    { cmd: MMUEXT.MMUEXT_NEW_BASEPTR, arg1: BigInt(l4) },
  ]);
  if (pin.rc !== 0) throw new GuestError(`domain builder: pinning the start-of-day L4 failed (${pin.rc})`);
  const as = new AddressSpace(l4, 0);
  as.validated = true;
  for (const [pfn, level] of tables) if (level < 4) as.tables.set(k.p2m[pfn], level);
  k.kernelAs = as;
  k.current = as;
  k.spaces.add(as);
}

/**
 * The builder writes the guest's P2M list (pfn → mfn, 8 bytes each) into its pages and points
 * the start-info register and `shared_info.arch` at it; the kernel keeps using it in place (a
 * typed copy serves its lookups) and re-reads it after a restore.
 */
function writeP2mList(h: Host, k: Kernel, layout: Layout): void {
  const d = h.domain(k.domid)!;
  const frames: number[] = [];
  for (let i = 0; i < layout.p2mPages; i++) {
    const mfn = k.p2m[layout.p2mAt + i];
    frames.push(mfn);
    const t = h.mem.frameForWrite(mfn);
    const n = Math.min(512, k.pages - i * 512);
    for (let j = 0; j < n; j++) {
      const m = k.p2m[i * 512 + j];
      t[j * 2] = m >>> 0;
      t[j * 2 + 1] = Math.floor(m / 2 ** 32);
    }
  }
  d.sharedArch = { maxPfn: k.pages, p2mFrames: frames };
  k.p2mListPfn = layout.p2mAt;
  k.v.startInfo = k.p2m[layout.startInfo];
  k.startInfoPfn = layout.startInfo;
}

/** The kernel maps the rest of RAM into its direct map (top-down or linear). */
class DirectMapBuilder {
  private method: BootMethod = "top-down";
  private placer!: TablePlacer;
  /** L2s being filled (not yet linked), by window key. */
  private readonly pendingL2 = new Map<number, number>();
  private readonly page = new Uint32Array(1024);

  constructor(
    private readonly k: Kernel,
    private readonly layout: Layout,
    private readonly dm: DirectMapTables,
    private readonly report: BootReport,
  ) {}

  run(method: BootMethod): void {
    const k = this.k;
    this.method = method;
    this.placer = new TablePlacer(this.layout, method, k.alloc.used, (pfn) => k.alloc.take(pfn), this.report);
    mapSteps(method, this.layout.end, k.pages, this.placer, this.report, (a, b) => this.mapRange(a, b));
    if (method === "linear") {
      // pagetable_reserve: the unused part of the reservation goes back to the allocator.
      const end = this.layout.image + BRK_PAGES + this.layout.reserve;
      for (let p = this.placer.firstUnusedReserved; p < end; p++) k.freePfn(p);
    }
  }

  /** A new zeroed table page (still writable); returns [pfn, mfn]. */
  private newTable(level: number): [number, number] {
    const k = this.k;
    const pfn = this.placer.next();
    const mfn = k.mfnOf(pfn);
    k.noteTable(pfn, level);
    k.zeroPage(k.mapper.kva(k, mfn, pfn, 0));
    return [pfn, mfn];
  }

  /** The validated L3 for direct-map window `key3`, created and linked if missing. */
  private l3(key3: number): number {
    let t = this.dm.l3.get(key3);
    if (t === undefined) {
      const k = this.k;
      const [pfn, mfn] = this.newTable(3);
      k.mapper.protect(k, mfn, pfn, false);
      k.link(k.kernelAs, k.kernelAs.l4, 3, key3 % 512, mfn);
      this.dm.l3.set(key3, mfn);
      t = mfn;
    }
    return t;
  }

  /** Register a filled L2 and link it into its L3 (Xen validates it then). */
  private finishL2(key2: number, mfn: number): void {
    const k = this.k;
    k.mapper.protect(k, mfn, k.pfnOf(mfn), false);
    k.link(k.kernelAs, this.l3(Math.floor(key2 / 512)), 2, key2 % 512, mfn);
    this.dm.l2.set(key2, mfn);
  }

  /** Map direct-map entries for pfns [start, end). */
  private mapRange(start: number, end: number): void {
    const k = this.k;
    const n = end - start;
    if (n <= 0) return;
    // Direct-map indices of the range, in order: the pfns themselves, or the mfns behind them.
    const byMfn = k.mapper.name === "direct-mfn";
    let idx: Float64Array | undefined;
    if (byMfn) {
      idx = new Float64Array(n);
      for (let i = 0; i < n; i++) idx[i] = k.p2m[start + i];
      idx.sort();
    }
    const at = (i: number) => (idx ? idx[i] : start + i);
    const m2pLo = k.h.frames.m2pLo;
    const pfnAt = (x: number) => (byMfn ? m2pLo[x] : x);
    if (byMfn) k.m2pLookups += n;
    // Runs of indices sharing an L1 window, highest first (top-down) or lowest first (linear).
    const runs: number[] = [];
    for (let i = 0; i < n; ) {
      let j = i + 1;
      if (idx) {
        const w = Math.floor(idx[i] / 512);
        while (j < n && Math.floor(idx[j] / 512) === w) j++;
      } else j = Math.min(n, (Math.floor((start + i) / 512) + 1) * 512 - start);
      runs.push(i, j);
      i = j;
    }
    const p2m = k.p2m;
    const level = k.tableLevel;
    const page = this.page;
    const top = this.method === "top-down";
    for (let r = 0; r < runs.length; r += 2) {
      const q = top ? runs.length - 2 - r : r;
      const i = runs[q];
      const j = runs[q + 1];
      // The L1 window by VA (a 2 MiB unit of the direct map), as the builder's tables are keyed.
      const w = DIRECT_MAP_BASE / 2 ** 21 + Math.floor(at(i) / 512);
      const existing = this.dm.l1.get(w);
      if (existing !== undefined) {
        // A window partly mapped already (by the builder): its L1 is validated.
        for (let x = i; x < j; x++) {
          const pfn = pfnAt(at(x));
          const [lo, hi] = Kernel.kernelPte(p2m[pfn], level[pfn] === 0);
          k.hc.queuePte(existing * 4096 + (at(x) % 512) * 8, lo, hi);
        }
        continue;
      }
      // phys_pte_init: fill the new L1 while writable…
      const [pfn, mfn] = this.newTable(1);
      page.fill(0);
      for (let x = i; x < j; x++) {
        const d = at(x);
        const p = pfnAt(d);
        const frame = p2m[p];
        // kernelPte inline: present, accessed, dirty, NX; writable unless the page is a table.
        const s = (d % 512) * 2;
        page[s] = ((frame % 0x100000) * 4096 + (level[p] === 0 ? PTE_RW_FLAGS : PTE_RO_FLAGS)) >>> 0;
        page[s + 1] = (Math.floor(frame / 0x100000) | HI_NX) >>> 0;
      }
      k.writePage(k.mapper.kva(k, mfn, pfn, 0), page);
      // …xen_alloc_pte_init: read-only and pinned before it is linked.
      k.mapper.protect(k, mfn, pfn, false);
      k.hc.queueMmuext([{ cmd: MMUEXT.MMUEXT_PIN_L1_TABLE, arg1: BigInt(mfn) }]);
      const key2 = Math.floor(w / 512);
      const l2 = this.dm.l2.get(key2);
      if (l2 !== undefined) {
        k.link(k.kernelAs, l2, 1, w % 512, mfn);
      } else {
        let pending = this.pendingL2.get(key2);
        if (pending === undefined) {
          pending = this.newTable(2)[1];
          this.pendingL2.set(key2, pending);
        }
        // The L2 is still writable: a plain store (set_pmd on an unpinned table).
        k.hc.flush();
        const [lo, hi] = [((mfn % 0x100000) * 4096 + TABLE_FLAGS) >>> 0, Math.floor(mfn / 0x100000)];
        k.write64(k.mapper.kva(k, pending, k.pfnOf(pending), 0) + (w % 512) * 8, lo, hi);
      }
      this.dm.l1.set(w, mfn);
    }
    for (const [key2, mfn] of this.pendingL2) this.finishL2(key2, mfn);
    this.pendingL2.clear();
    k.hc.flush();
    this.report.mappedPages += n;
  }
}

/**
 * The same boot algorithm, counted instead of run: where `bootGuest` would put the direct
 * map's tables for a Linux-style (pfn-indexed) direct map of `pages` pages, without a host.
 * It follows `DirectMapBuilder` step for step (the tests check they agree), so sizes this
 * machine cannot hold — a 1 TiB guest — can still be reported.
 */
export function planDirectMapBoot(pages: number, method: BootMethod): BootReport {
  if (!Number.isInteger(pages) || pages < 8192)
    throw new GuestError(`a guest needs at least 32 MiB, got ${pages} pages`);
  const reserve = method === "linear" ? linearGuess(pages, Math.ceil(pages / 512)) : 0;
  const W0 = DIRECT_MAP_BASE / 2 ** 21;
  const vaOf = (pfn: number) => DIRECT_MAP_BASE + pfn * 4096;
  const layout = builderLayout(pages, reserve, vaOf);
  // Windows that already have a table (the builder's), by VA key.
  const l1 = new Set<number>();
  const l2 = new Set<number>();
  const l3 = new Set<number>();
  for (let p = 0; p < layout.end; p++) {
    const va = vaOf(p);
    l1.add(Math.floor(va / 2 ** 21));
    l2.add(Math.floor(va / 2 ** 30));
    l3.add(Math.floor(va / 2 ** 39));
  }
  const report: BootReport = {
    method,
    reservedPages: method === "linear" ? reserve : BRK_PAGES,
    usedPages: 0,
    unusedPages: 0,
    lowestTablePfn: -1,
    highestTablePfn: -1,
    ramPages: pages,
    mappedPages: layout.end,
    steps: 0,
    directMapTablePages: 0,
  };
  const used = new Uint8Array(pages);
  const placer = new TablePlacer(layout, method, used, (pfn) => (used[pfn] = 1), report);
  // DirectMapBuilder.mapRange's table allocations, in its order, without the mapping.
  const mapRange = (start: number, stop: number) => {
    const first = Math.floor(start / 512);
    const last = Math.floor((stop - 1) / 512);
    const pending = new Set<number>();
    for (let i = 0; i <= last - first; i++) {
      const w = W0 + (method === "top-down" ? last - i : first + i);
      if (l1.has(w)) continue;
      placer.next();
      const key2 = Math.floor(w / 512);
      if (!l2.has(key2) && !pending.has(key2)) {
        placer.next();
        pending.add(key2);
      }
      l1.add(w);
    }
    for (const key2 of pending) {
      const key3 = Math.floor(key2 / 512);
      if (!l3.has(key3)) {
        placer.next();
        l3.add(key3);
      }
      l2.add(key2);
    }
    report.mappedPages += stop - start;
  };
  mapSteps(method, layout.end, pages, placer, report, mapRange);
  report.directMapTablePages = l1.size + l2.size + l3.size + 1;
  return report;
}
