/**
 * Fuzz actions: what a hostile guest does next.
 *
 * An action is a fixed-length tuple of small integers. It means nothing on its
 * own: `interpret` reads it against the host's state at that moment (which
 * domains live, which pfns are populated, which grant handles are open, what an
 * entry holds now) and turns it into one scenario line. So any subsequence of
 * actions is still a sequence of well-formed calls, and shrinking (removing
 * actions, moving numbers towards 0) keeps meaning something — 0 is always the
 * plainest choice. The line, not the action, is what a finding's scenario file
 * records.
 *
 * The weights lean towards states where rules interact: entries mostly point
 * one level down within small per-level pools, but also at the same level
 * (linear), at themselves, at other domains' frames and at Xen's; frames from
 * the table pools get granted; pins, unpins and base pointers hit the same few
 * frames; flags are flipped on live entries (the fast path); accesses go
 * through the vCPU's TLB, stale or not.
 */

import type { Rng } from "../guest/workloads.js";
import { F_PINNED, F_VALIDATED } from "../xen/frametable.js";
import type { Host } from "../xen/host.js";
import { levelHint, poolCount, poolFirst, type WorldOptions } from "./world.js";

export const ACTION_LEN = 12;
/** Each element of an action is in [0, PARAM_MAX]. */
export const PARAM_MAX = 0xffff;
export type Action = number[];

export function randomAction(rng: Rng): Action {
  const a: Action = new Array(ACTION_LEN);
  for (let i = 0; i < ACTION_LEN; i++) a[i] = Math.floor(rng.next() * (PARAM_MAX + 1));
  return a;
}

/** What the fuzzer remembers between steps, derived only from lines it ran (so replays agree). */
export class FuzzMemory {
  /** `dom * 0x10000 + handle` → the host_addr its map used (for a matching unmap). */
  readonly hostAddr = new Map<number, string | Record<string, unknown>>();
  /** Per domain, the last virtual addresses `build` made a path for (most recent last). */
  readonly built = new Map<number, number[]>();
}

type Line = Record<string, unknown>;

/** Reads an action's parameters in order; past the end it hashes for more (still deterministic). */
class Params {
  private i = 1;
  constructor(private readonly a: Action) {}
  /** A choice in [0, n). */
  next(n: number): number {
    const k = this.i++;
    let v = this.a[k % ACTION_LEN];
    if (k >= ACTION_LEN) v = Math.imul(v ^ (k * 0x9e3779b1), 0x85ebca6b) >>> 16;
    return n <= 1 ? 0 : v % n;
  }
  /** True with probability about pct/100. */
  chance(pct: number): boolean {
    return this.next(100) < pct;
  }
}

const hex = (n: number) => `0x${n.toString(16)}`;

/** Kinds of action with their weights (out of the total); index 0 is the plainest. */
const KINDS = [
  ["poke", 12],
  ["build", 4],
  ["mmu_update", 20],
  ["mmuext_op", 18],
  ["flip", 6],
  ["update_va_mapping", 8],
  ["access", 12],
  ["grant", 5],
  ["grant_map", 6],
  ["grant_unmap", 5],
  ["grant_other", 1],
  ["memory_op", 3],
  ["multicall", 3],
  ["vm_assist", 2],
  ["set_gdt", 1],
  ["destroy", 0.15],
] as const;
type Kind = (typeof KINDS)[number][0];
const TOTAL = KINDS.reduce((s, [, w]) => s + w, 0);
const CUM: number[] = [];
{
  let c = 0;
  for (const [, w] of KINDS) {
    c += w;
    CUM.push(c / TOTAL);
  }
}

export function kindOf(a: Action): Kind {
  const x = (a[0] % 10000) / 10000;
  for (let i = 0; i < CUM.length; i++) if (x < CUM[i]) return KINDS[i][0];
  return KINDS[KINDS.length - 1][0];
}

/** The interpreter of one action against one host. */
export class Interpreter {
  constructor(
    readonly world: WorldOptions,
    readonly mem: FuzzMemory,
  ) {}

  /** Turn an action into scenario lines (usually one); empty when it names nothing that exists now. */
  lines(a: Action, h: Host): Line[] {
    const r = this.line(a, h);
    return r === undefined ? [] : Array.isArray(r) ? r : [r];
  }

  private line(a: Action, h: Host): Line | Line[] | undefined {
    const p = new Params(a);
    const doms = this.liveDomains(h);
    if (doms.length === 0) return undefined;
    const dom = doms[p.next(doms.length)];
    switch (kindOf(a)) {
      case "poke": {
        const frame = this.pfn(p, h, dom, this.levelChoice(p));
        if (frame === undefined) return undefined;
        return {
          op: "poke",
          dom,
          pfn: frame,
          index: this.index(p),
          val: this.value(p, h, dom, levelHint(frame), frame),
        };
      }
      case "build":
        return this.build(p, h, dom);
      case "mmu_update": {
        const n = p.chance(75) ? 1 : 2 + p.next(2);
        const reqs: Line[] = [];
        for (let i = 0; i < n; i++) {
          const r = this.mmuReq(p, h, dom);
          if (r) reqs.push(r);
        }
        if (reqs.length === 0) return undefined;
        return { op: "mmu_update", dom, reqs, ...this.foreigndom(p, h, dom) };
      }
      case "flip": {
        // Change flags of a live entry, keeping its frame: the fast path's territory.
        const frame = this.pfn(p, h, dom, 1 + p.next(4));
        if (frame === undefined) return undefined;
        const index = this.index(p);
        const mfn = h.domain(dom)!.p2m[frame];
        const t = h.mem.frame(mfn);
        const lo = t[index * 2];
        const hi = t[index * 2 + 1];
        const flips = [0x2, 0x4, 0x20, 0x40, 0x100, 0x200, 0x2 | 0x4, 0x80, 0x8, 0x1];
        const nlo = (lo ^ flips[p.next(flips.length)]) >>> 0;
        const nhi = p.chance(15) ? (hi ^ 0x80000000) >>> 0 : hi;
        const val = `0x${((BigInt(nhi) << 32n) | BigInt(nlo)).toString(16)}`;
        const ptr = { pfn: frame, index };
        if (p.chance(20)) {
          // The same change written by the guest as a store (emulated if the table is an L1 it maps read-only).
          return {
            op: "access",
            dom,
            vcpu: p.next(this.world.vcpus),
            va: this.va(p, dom),
            kind: "write",
            val,
          };
        }
        return { op: "mmu_update", dom, reqs: [{ ptr, val }] };
      }
      case "mmuext_op": {
        const n = p.chance(85) ? 1 : 2 + p.next(2);
        const ops: Line[] = [];
        for (let i = 0; i < n; i++) {
          const o = this.mmuextOp(p, h, dom);
          if (o) ops.push(o);
        }
        if (ops.length === 0) return undefined;
        return { op: "mmuext_op", dom, vcpu: p.next(this.world.vcpus), ops, ...this.foreigndom(p, h, dom) };
      }
      case "update_va_mapping": {
        const flags = [0, 2, 1, 6, 5, 4, 3][p.next(7)];
        const line: Line = {
          op: "update_va_mapping",
          dom,
          vcpu: p.next(this.world.vcpus),
          va: this.va(p, dom),
          val: this.value(p, h, dom, 1, undefined),
          flags,
        };
        if (dom === 0 && p.chance(25) && doms.length > 1) {
          line.op = "update_va_mapping_otherdomain";
          line.domid = doms[1 + p.next(doms.length - 1)];
        }
        return line;
      }
      case "access": {
        const kind = (["read", "write", "write", "fetch"] as const)[p.next(4)];
        const line: Line = { op: "access", dom, vcpu: p.next(this.world.vcpus), va: this.va(p, dom), kind };
        if (p.chance(20)) line.user = true;
        if (kind === "write")
          line.val = p.chance(50) ? this.value(p, h, dom, 1, undefined) : hex(p.next(0x10000));
        return line;
      }
      case "grant": {
        const ref = p.next(8);
        if (p.chance(15)) return { op: "grant", dom, ref, revoke: true };
        const to = this.otherDomain(p, doms, dom);
        const frame = this.pfn(p, h, dom, this.levelChoice(p));
        if (frame === undefined) return undefined;
        return { op: "grant", dom, ref, to, pfn: frame, ...(p.chance(30) ? { readonly: true } : {}) };
      }
      case "grant_map": {
        const granter = this.otherDomain(p, doms, dom);
        // Mostly a reference the granter has offered to this domain.
        const offered: number[] = [];
        for (let ref = 0; ref < 8; ref++) {
          const g = h.grantState(granter, ref);
          if (g && g.flags & 1 && g.domid === dom) offered.push(ref);
        }
        const ref = offered.length > 0 && p.chance(85) ? offered[p.next(offered.length)] : p.next(8);
        const kind = p.next(10);
        let flags = kind < 5 ? 0x12 : kind < 8 ? 0x2 : kind < 9 ? 0x1 : 0x3; // host|pte, host, device, both
        if (p.chance(30)) flags |= 0x4; // readonly
        if (p.chance(10)) flags |= 0x8; // application_map
        let hostAddr: string | Line = "0x0";
        if (flags & 0x2) {
          if (flags & 0x10) {
            const l1 = p.chance(80) ? this.validated(p, h, dom, 1) : this.pfn(p, h, dom, 1);
            if (l1 === undefined) return undefined;
            hostAddr = { pfn: l1, index: this.index(p) };
          } else hostAddr = this.va(p, dom);
        }
        return {
          op: "grant_table_op",
          dom,
          vcpu: p.next(this.world.vcpus),
          cmd: 0,
          ops: [{ host_addr: hostAddr, flags, ref, dom: granter }],
        };
      }
      case "grant_unmap": {
        const d = h.domain(dom)!;
        const mt = d.grants;
        const live: number[] = [];
        for (let k = 0; k < mt.mtFlags.length; k++) if (mt.mtFlags[k] !== 0) live.push(k);
        const handle = live.length > 0 && !p.chance(5) ? live[p.next(live.length)] : p.next(4);
        const flags = mt.mtFlags[handle] ?? 0;
        let hostAddr: string | Line = "0x0";
        if (flags & 0x2) {
          const known = this.mem.hostAddr.get(dom * 0x10000 + handle);
          hostAddr = known !== undefined && !p.chance(10) ? known : this.va(p, dom);
        }
        const op: Line = { host_addr: hostAddr, handle, dev_bus_addr: "0x0" };
        if (flags & 0x1 && !p.chance(10)) {
          const rd = h.domain(mt.mtDom[handle]);
          if (rd) op.dev_bus_addr = hex(rd.grants.actMfn[mt.mtRef[handle]] * 4096);
        }
        const replace = p.chance(10);
        if (replace) op.new_addr = this.va(p, dom);
        return { op: "grant_table_op", dom, vcpu: p.next(this.world.vcpus), cmd: replace ? 7 : 1, ops: [op] };
      }
      case "grant_other": {
        const c = p.next(3);
        if (c === 0)
          return { op: "grant_table_op", dom, cmd: 2, ops: [{ dom: "self", nr_frames: 1 + p.next(4) }] };
        if (c === 1) return { op: "grant_table_op", dom, cmd: 6, ops: [{ dom: "self" }] };
        const granter = this.otherDomain(p, doms, dom);
        const dest = this.pfn(p, h, dom, this.levelChoice(p));
        if (dest === undefined) return undefined;
        return {
          op: "grant_table_op",
          dom,
          cmd: 5,
          ops: [
            {
              source: { ref: p.next(8), domid: granter, offset: 8 * p.next(4) },
              dest: { frame: { pfn: dest }, offset: 8 * p.next(4) },
              len: 8 * (1 + p.next(4)),
              flags: p.chance(70) ? 1 : 0, // GNTCOPY_source_gref
            },
          ],
        };
      }
      case "memory_op": {
        const c = p.next(4);
        if (c === 0 || c === 1) {
          const frame = this.pfn(p, h, dom, this.levelChoice(p));
          if (frame === undefined) return undefined;
          return { op: "memory_op", dom, cmd: 1, extents: [{ pfn: frame }] };
        }
        if (c === 2) {
          const d = h.domain(dom)!;
          let gpfn = p.next(this.world.pages);
          for (let k = 0; k < this.world.pages && d.p2m[gpfn] !== undefined; k++)
            gpfn = (gpfn + 1) % this.world.pages;
          return { op: "memory_op", dom, cmd: 6, extents: [gpfn] };
        }
        return { op: "memory_op", dom, cmd: [0, 3, 2][p.next(3)], extents: [0] };
      }
      case "multicall": {
        const n = 2 + p.next(2);
        const calls: Line[] = [];
        for (let i = 0; i < n; i++) {
          const c = p.next(4);
          if (c === 0) {
            const r = this.mmuReq(p, h, dom);
            if (r) calls.push({ op: "mmu_update", reqs: [r] });
          } else if (c === 1) {
            const o = this.mmuextOp(p, h, dom);
            if (o) calls.push({ op: "mmuext_op", ops: [o] });
          } else if (c === 2) {
            calls.push({
              op: "update_va_mapping",
              va: this.va(p, dom),
              val: this.value(p, h, dom, 1, undefined),
              flags: [0, 2, 1][p.next(3)],
            });
          } else calls.push({ op: "vm_assist", cmd: p.next(2), type: 2 });
        }
        if (calls.length === 0) return undefined;
        return { op: "multicall", dom, vcpu: p.next(this.world.vcpus), calls };
      }
      case "vm_assist":
        return { op: "vm_assist", dom, cmd: p.chance(70) ? 0 : 1, type: [2, 32, 99][p.next(3)] };
      case "set_gdt": {
        const frame = this.pfn(p, h, dom, this.levelChoice(p));
        if (frame === undefined) return undefined;
        return {
          op: "set_gdt",
          dom,
          vcpu: p.next(this.world.vcpus),
          frames: [{ pfn: frame }],
          entries: [0, 16, 512, 8192][p.next(4)],
        };
      }
      case "destroy": {
        if (dom === 0) return undefined;
        return { op: "destroy", dom };
      }
    }
  }

  /** Remember what a line did that later lines may refer to (grant handles and their addresses). */
  note(line: Line, result: unknown): void {
    if (line.op !== "grant_table_op" || line.cmd !== 0) return;
    const r = result as { handle?: unknown[]; status?: unknown[] };
    const ops = line.ops as Line[];
    r.handle?.forEach((handle, i) => {
      if (r.status?.[i] === 0 && typeof handle === "number") {
        this.mem.hostAddr.set((line.dom as number) * 0x10000 + handle, ops[i].host_addr as string | Line);
      }
    });
  }

  /**
   * Build (or complete) a path to a data page for a virtual address of small indices, bottom
   * up: pokes into frames that are not validated tables, mmu_updates into those that are; then
   * pin the L4 (if it isn't) and make it a vCPU's base pointer.
   */
  private build(p: Params, h: Host, dom: number): Line[] | undefined {
    const d = h.domain(dom)!;
    const f = h.frames;
    const path: number[] = [];
    for (const level of [4, 3, 2, 1, 0]) {
      const pfn = this.pfn(p, h, dom, level);
      if (pfn === undefined) return undefined;
      path.push(pfn);
    }
    const lines: Line[] = [];
    const idx = [p.next(4), p.next(4), p.next(4), p.next(4)];
    const vas = this.mem.built.get(dom) ?? [];
    vas.push(idx[0] * 2 ** 39 + idx[1] * 2 ** 30 + idx[2] * 2 ** 21 + idx[3] * 2 ** 12);
    if (vas.length > 8) vas.shift();
    this.mem.built.set(dom, vas);
    for (let k = 3; k >= 0; k--) {
      const frame = path[k];
      const index = idx[k];
      const flags = k === 3 && p.chance(30) ? "0x5" : "0x7";
      const val = { pfn: path[k + 1], flags };
      const mfn = d.p2m[frame];
      if (f.type[mfn] === 4 - k && f.flags[mfn] & F_VALIDATED) {
        lines.push({ op: "mmu_update", dom, reqs: [{ ptr: { pfn: frame, index }, val }] });
      } else lines.push({ op: "poke", dom, pfn: frame, index, val });
    }
    const l4 = d.p2m[path[0]];
    const ops: Line[] = [];
    if (!(f.flags[l4] & F_PINNED)) ops.push({ cmd: 3, mfn: { pfn: path[0] } });
    ops.push({ cmd: p.chance(85) ? 5 : 15, mfn: { pfn: path[0] } });
    lines.push({ op: "mmuext_op", dom, vcpu: p.next(this.world.vcpus), ops });
    return lines;
  }

  /** A pfn of `dom`'s pool for `level` whose frame is a validated table of that level, if any. */
  private validated(p: Params, h: Host, dom: number, level: number): number | undefined {
    const d = h.domain(dom)!;
    const f = h.frames;
    const first = poolFirst(level, this.world.pages);
    const count = poolCount(level, this.world.pages);
    const ok: number[] = [];
    for (let pfn = first; pfn < first + count; pfn++) {
      const m = d.p2m[pfn];
      if (m !== undefined && f.type[m] === level && f.flags[m] & F_VALIDATED) ok.push(pfn);
    }
    return ok.length > 0 ? ok[p.next(ok.length)] : this.pfn(p, h, dom, level);
  }

  private liveDomains(h: Host): number[] {
    const out: number[] = [];
    for (let d = 0; d < this.world.domains; d++) {
      const dom = h.domain(d);
      if (dom && !dom.isDying) out.push(d);
    }
    return out;
  }

  private otherDomain(p: Params, doms: number[], dom: number): number {
    if (doms.length < 2) return dom;
    const i = doms.indexOf(dom);
    return doms[(i + 1 + p.next(doms.length - 1)) % doms.length];
  }

  /** A level to pick a frame from: mostly tables, weighted towards the lower levels. */
  private levelChoice(p: Params): number {
    return [1, 1, 2, 0, 3, 4, 1, 2, 0, 0][p.next(10)];
  }

  /** A populated pfn of `dom`, from the pool of `level` (or any, sometimes). */
  private pfn(p: Params, h: Host, dom: number, level: number): number | undefined {
    const d = h.domain(dom);
    if (!d) return undefined;
    const pages = this.world.pages;
    let pfn: number;
    if (p.chance(90)) {
      pfn = poolFirst(level, pages) + p.next(poolCount(level, pages));
    } else pfn = p.next(pages);
    for (let k = 0; k < pages; k++, pfn = (pfn + 1) % pages) if (d.p2m[pfn] !== undefined) return pfn;
    return undefined;
  }

  /** An entry index: mostly the first few (so translations reach what was built), sometimes Xen's slots. */
  private index(p: Params): number {
    const r = p.next(100);
    if (r < 75) return p.next(4);
    if (r < 85) return 4 + p.next(8);
    if (r < 92) return 256 + p.next(16);
    if (r < 96) return 511;
    return p.next(512);
  }

  /** A virtual address made of small indices at each level (where the generator builds), or a hostile one. */
  private va(p: Params, dom: number): string {
    const built = this.mem.built.get(dom);
    if (built && p.chance(60)) return hex(built[p.next(built.length)] + 8 * p.next(512));
    const r = p.next(100);
    const i4 = r < 90 ? p.next(4) : r < 95 ? 256 + p.next(16) : 511;
    const v = i4 * 2 ** 39 + p.next(4) * 2 ** 30 + p.next(4) * 2 ** 21 + p.next(4) * 2 ** 12 + 8 * p.next(4);
    if (i4 < 256) return hex(v);
    if (p.chance(5)) return hex(v); // non-canonical
    return `0x${(0xffff0000_00000000n | BigInt(v)).toString(16)}`;
  }

  /** An entry value for a table of `level` (0/1: an L1's target is data). */
  private value(p: Params, h: Host, dom: number, level: number, self: number | undefined): string | Line {
    const r = p.next(100);
    if (r < 4) return "0x0";
    const lvl = Math.max(1, level);
    let target: Line;
    const t = p.next(100);
    if (t < 62) {
      const pfn = this.pfn(p, h, dom, lvl - 1);
      if (pfn === undefined) return "0x0";
      target = { pfn };
    } else if (t < 74) {
      const pfn = this.pfn(p, h, dom, lvl);
      if (pfn === undefined) return "0x0";
      target = { pfn };
    } else if (t < 80 && self !== undefined) target = { pfn: self };
    else if (t < 90) {
      const pfn = this.pfn(p, h, dom, this.levelChoice(p));
      if (pfn === undefined) return "0x0";
      target = { pfn };
    } else if (t < 95) {
      const other = (dom + 1 + p.next(this.world.domains - 1)) % this.world.domains;
      const pfn = this.pfn(p, h, other, this.levelChoice(p));
      if (pfn === undefined || !h.domain(other)) return "0x0";
      target = { dom: other, pfn };
    } else if (t < 97) target = { xen: p.next(4) };
    else if (t < 99) target = { mfn: hex(0xa0 + p.next(0x20)) };
    else target = { free: p.next(2) };
    const bases = [0x7, 0x5, 0x67, 0x25, 0x3, 0x1, 0x0, 0x27];
    let lo = bases[p.next(bases.length)];
    let hi = 0;
    if (p.chance(8)) {
      const extra = [0x80, 0x100, 0x8, 0x10, 0x200, -1, -2, -3][p.next(8)];
      if (extra === -1) hi = 0x80000000;
      else if (extra === -2) hi = 0x40000000;
      else if (extra === -3) hi = 0x00100000;
      else lo |= extra;
    }
    target.flags = hi === 0 ? hex(lo) : `0x${hi.toString(16)}${lo.toString(16).padStart(8, "0")}`;
    return target;
  }

  private mmuReq(p: Params, h: Host, dom: number): Line | undefined {
    const c = p.next(100);
    const targetDom =
      dom === 0 && p.chance(20) ? (1 + p.next(this.world.domains - 1)) % this.world.domains : dom;
    const frame = this.pfn(p, h, targetDom, 1 + p.next(4));
    if (frame === undefined) return undefined;
    const ptrDom = targetDom === dom ? {} : { dom: targetDom };
    if (c < 5) {
      // MMU_MACHPHYS_UPDATE: the M2P entry of a frame.
      return { ptr: { ...ptrDom, pfn: frame, cmd: 1 }, val: hex(p.next(this.world.pages + 8)) };
    }
    const cmd = c < 88 ? 0 : c < 96 ? 2 : c < 98 ? 3 : 4 + p.next(4);
    const ptr: Line = { ...ptrDom, pfn: frame, index: this.index(p) };
    if (cmd !== 0) ptr.cmd = cmd;
    return { ptr, val: this.value(p, h, targetDom, levelHint(frame), frame) };
  }

  private mmuextOp(p: Params, h: Host, dom: number): Line | undefined {
    const c = p.next(100);
    const frameAt = (level: number) => {
      const pfn = this.pfn(p, h, dom, p.chance(85) ? level : this.levelChoice(p));
      return pfn === undefined ? undefined : { pfn };
    };
    if (c < 40) {
      const level = 1 + p.next(4);
      const mfn = frameAt(level);
      return mfn && { cmd: level - 1, mfn };
    }
    if (c < 58) {
      const mfn = frameAt(1 + p.next(4));
      return mfn && { cmd: 4, mfn };
    }
    if (c < 70) {
      const mfn = frameAt(4);
      return mfn && { cmd: p.chance(75) ? 5 : 15, mfn };
    }
    if (c < 78) return { cmd: 7, linear_addr: this.va(p, dom) }; // INVLPG_LOCAL
    if (c < 84) return { cmd: 6 }; // TLB_FLUSH_LOCAL
    if (c < 88) return { cmd: p.chance(50) ? 10 : 11, linear_addr: this.va(p, dom) };
    if (c < 90) return { cmd: p.chance(50) ? 8 : 9, linear_addr: this.va(p, dom), vcpumask: this.va(p, dom) };
    if (c < 93) return { cmd: 13, linear_addr: this.va(p, dom), nr_ents: [0, 1, 16, 8192][p.next(4)] };
    if (c < 96) {
      const mfn = frameAt(0);
      return mfn && { cmd: 16, mfn };
    }
    if (c < 98) {
      const mfn = frameAt(0);
      const src = frameAt(this.levelChoice(p));
      return mfn && src && { cmd: 17, mfn, src_mfn: src };
    }
    return { cmd: [12, 18, 19, 20, 14, 99][p.next(6)] };
  }

  private foreigndom(p: Params, h: Host, dom: number): Line {
    const c = p.next(100);
    if (c < 88) return {};
    if (c < 96) {
      const other = (dom + 1 + p.next(this.world.domains - 1)) % this.world.domains;
      return h.domain(other) ? { foreigndom: other } : {};
    }
    return { foreigndom: ["io", "xen", "self"][p.next(3)] };
  }
}
