/**
 * Running scenarios against a fresh Host. Every line is checked against the
 * host state first (frames, domains exist) — a file with a malformed line is
 * refused before anything runs — then executed in order; each `expect` is
 * compared with what happened. The auditor runs after the last line.
 * The format is documented in docs/scenarios.md.
 */

import {
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_update_va_mapping,
  __HYPERVISOR_vm_assist,
  DOMID_IO,
  DOMID_SELF,
  DOMID_XEN,
  MMUEXT,
  PGT_NAMES,
} from "../xen/abi.js";
import { F_PINNED, F_VALIDATED } from "../xen/frametable.js";
import { Host, type HostOptions, type LinearPolicy } from "../xen/host.js";
import type { MmuextOp } from "../xen/mmuext.js";
import type { MulticallEntry } from "../xen/multicall.js";
import { parseScenario, ScenarioError, type ScenarioLine, toBig, toNum } from "./parse.js";

export interface LineResult {
  line: number;
  op: string;
  ok: boolean;
  expected?: unknown;
  actual?: unknown;
}

export interface ScenarioResult {
  /** The host as the scenario left it (for tools that inspect the final state). */
  host: Host;
  ok: boolean;
  lines: LineResult[];
  failures: LineResult[];
  audit: { ok: boolean; problems: string[] };
}

type Obj = Record<string, unknown>;

const hex = (b: bigint) => `0x${BigInt.asUintN(64, b).toString(16)}`;

class Runner {
  host: Host;
  constructor(opts: HostOptions) {
    this.host = new Host(opts);
  }

  /** A frame reference: {"dom":D,"pfn":P} | {"mfn":M} | a number/string (raw mfn). */
  frame(v: unknown, ln: number, dom: number | undefined, what = "frame"): number {
    if (v !== null && typeof v === "object") {
      const o = v as Obj;
      if ("mfn" in o) return toNum(o.mfn, `${what}.mfn`, ln);
      if ("xen" in o) {
        // The n-th frame Xen owns (0: the read-only M2P's L3).
        const m = this.host.xenFrames[toNum(o.xen, `${what}.xen`, ln)];
        if (m === undefined) throw new ScenarioError(ln, `${what}: no such Xen frame`);
        return m;
      }
      if ("free" in o) {
        // The n-th free frame counting down from the top of memory (n = 0: the highest).
        let n = toNum(o.free, `${what}.free`, ln);
        const f = this.host.frames;
        for (let m = f.frames - 1; m >= 0; m--) if (f.owner[m] === 0 && n-- === 0) return m;
        throw new ScenarioError(ln, `${what}: not that many free frames`);
      }
      if ("pfn" in o) {
        const d = o.dom !== undefined ? toNum(o.dom, `${what}.dom`, ln) : dom;
        if (d === undefined) throw new ScenarioError(ln, `${what} needs "dom"`);
        const domain = this.host.domain(d);
        if (!domain) throw new ScenarioError(ln, `${what}: no domain ${d}`);
        const pfn = toNum(o.pfn, `${what}.pfn`, ln);
        const mfn = domain.p2m[pfn];
        if (mfn === undefined) throw new ScenarioError(ln, `${what}: domain ${d} has no pfn ${pfn}`);
        return mfn;
      }
      throw new ScenarioError(ln, `${what} must be {"dom","pfn"}, {"mfn"} or a number`);
    }
    return toNum(v, what, ln);
  }

  /** A value: {"pfn"|"mfn", "flags"} → (mfn << 12) | flags; else a raw 64-bit value. */
  value(v: unknown, ln: number, dom: number | undefined, what = "val"): bigint {
    if (v !== null && typeof v === "object") {
      const o = v as Obj;
      const mfn = this.frame(o, ln, dom, what);
      const flags = o.flags === undefined ? 0n : toBig(o.flags, `${what}.flags`, ln);
      return BigInt.asUintN(64, (BigInt(mfn) << 12n) | flags);
    }
    return BigInt.asUintN(64, toBig(v, what, ln));
  }

  /** An entry pointer: {"pfn"|"mfn", "index", "cmd"?} → machine address | cmd; else raw. */
  pointer(v: unknown, ln: number, dom: number | undefined): bigint {
    if (v !== null && typeof v === "object") {
      const o = v as Obj;
      const mfn = this.frame(o, ln, dom, "ptr");
      const index = o.index === undefined ? 0n : toBig(o.index, "ptr.index", ln);
      const cmd = o.cmd === undefined ? 0n : toBig(o.cmd, "ptr.cmd", ln);
      return (BigInt(mfn) << 12n) + 8n * index + cmd;
    }
    return BigInt.asUintN(64, toBig(v, "ptr", ln));
  }

  foreigndom(o: Obj, ln: number): number {
    let fd: number;
    const v = o.foreigndom ?? "self";
    if (v === "self") fd = DOMID_SELF;
    else if (v === "io") fd = DOMID_IO;
    else if (v === "xen") fd = DOMID_XEN;
    else fd = toNum(v, "foreigndom", ln);
    if (o.pfd !== undefined) fd = (fd & 0xffff) | ((toNum(o.pfd, "pfd", ln) + 1) << 16);
    return fd >>> 0;
  }

  dom(o: Obj, ln: number): number {
    if (o.dom === undefined) throw new ScenarioError(ln, 'missing "dom"');
    const d = toNum(o.dom, "dom", ln);
    if (!this.host.domain(d)) throw new ScenarioError(ln, `no domain ${d}`);
    return d;
  }

  mmuextOps(o: Obj, ln: number, dom: number): MmuextOp[] {
    if (!Array.isArray(o.ops)) throw new ScenarioError(ln, '"ops" must be an array');
    return o.ops.map((x: unknown) => {
      const op = x as Obj;
      const cmdv = op.cmd;
      const cmd =
        typeof cmdv === "string" && cmdv in MMUEXT
          ? MMUEXT[cmdv as keyof typeof MMUEXT]
          : toNum(cmdv, "cmd", ln);
      const r: MmuextOp = { cmd };
      if (op.mfn !== undefined) r.arg1 = BigInt(this.frame(op.mfn, ln, dom, "mfn"));
      if (op.linear_addr !== undefined) r.arg1 = toBig(op.linear_addr, "linear_addr", ln);
      if (op.nr_ents !== undefined) r.arg2 = toBig(op.nr_ents, "nr_ents", ln);
      if (op.src_mfn !== undefined) r.arg2 = BigInt(this.frame(op.src_mfn, ln, dom, "src_mfn"));
      if (op.vcpumask !== undefined) r.arg2 = toBig(op.vcpumask, "vcpumask", ln);
      return r;
    });
  }

  mmuReqs(o: Obj, ln: number, dom: number) {
    if (!Array.isArray(o.reqs)) throw new ScenarioError(ln, '"reqs" must be an array');
    return o.reqs.map((x: unknown) => {
      const r = x as Obj;
      return { ptr: this.pointer(r.ptr, ln, dom), val: this.value(r.val, ln, dom) };
    });
  }

  /** Execute one line; returns the actual result to compare with `expect`. */
  exec(l: ScenarioLine): unknown {
    const o = l.obj;
    const ln = l.line;
    const h = this.host;
    switch (o.op) {
      case "domain": {
        const d = h.createDomain({
          maxPages: o.max_pages === undefined ? undefined : toNum(o.max_pages, "max_pages", ln),
          domid: toNum(o.domid, "domid", ln),
          pages: o.pages === undefined ? 0 : toNum(o.pages, "pages", ln),
          privileged: o.privileged === true,
          io: o.io === undefined ? undefined : o.io === true,
          vcpus: o.vcpus === undefined ? 1 : toNum(o.vcpus, "vcpus", ln),
        });
        return { domid: d.domid };
      }
      case "poke": {
        const dom = this.dom(o, ln);
        const mfn = this.frame(o.frame ?? o, ln, dom);
        return { ok: h.poke(dom, mfn, toNum(o.index ?? 0, "index", ln), this.value(o.val, ln, dom)) };
      }
      case "mmu_update": {
        const dom = this.dom(o, ln);
        return h.mmuUpdate(dom, this.mmuReqs(o, ln, dom), this.foreigndom(o, ln));
      }
      case "mmuext_op": {
        const dom = this.dom(o, ln);
        return h.mmuextOp(
          dom,
          this.mmuextOps(o, ln, dom),
          this.foreigndom(o, ln),
          toNum(o.vcpu ?? 0, "vcpu", ln),
        );
      }
      case "update_va_mapping":
      case "update_va_mapping_otherdomain": {
        const dom = this.dom(o, ln);
        const vcpu = toNum(o.vcpu ?? 0, "vcpu", ln);
        const va = toBig(o.va, "va", ln);
        const val = this.value(o.val, ln, dom);
        const flags = o.flags === undefined ? 0n : toBig(o.flags, "flags", ln);
        const rc =
          o.op === "update_va_mapping"
            ? h.updateVaMapping(dom, vcpu, va, val, flags)
            : h.updateVaMappingOtherdomain(dom, vcpu, va, val, flags, toNum(o.domid, "domid", ln));
        return { rc };
      }
      case "grant": {
        const dom = this.dom(o, ln);
        const ref = toNum(o.ref, "ref", ln);
        if (o.revoke === true) return { ok: h.grantWrite(dom, ref, "revoke") };
        const frame = this.frame(o.frame ?? { pfn: o.pfn }, ln, dom);
        return {
          ok: h.grantWrite(dom, ref, {
            to: toNum(o.to, "to", ln),
            frame,
            readonly: o.readonly === true,
            flags: o.flags === undefined ? undefined : toNum(o.flags, "flags", ln),
          }),
        };
      }
      case "grant_table_op": {
        const dom = this.dom(o, ln);
        const cmd = toNum(o.cmd, "cmd", ln);
        if (!Array.isArray(o.ops)) throw new ScenarioError(ln, '"ops" must be an array');
        const ops = o.ops.map((x: unknown) => this.grantOp(x as Obj, ln, dom));
        const r = h.grantTableOp(dom, toNum(o.vcpu ?? 0, "vcpu", ln), cmd, ops);
        this.handles.set(
          ln,
          r.results.map((x) => Number(x.handle ?? -1)),
        );
        return {
          rc: r.rc,
          status: r.results.map((x) => x.status),
          handle: r.results.map((x) => x.handle),
          dev_bus_addr: r.results.map((x) =>
            typeof x.dev_bus_addr === "bigint" ? hex(x.dev_bus_addr) : x.dev_bus_addr,
          ),
          results: r.results.map((x) =>
            Object.fromEntries(Object.entries(x).map(([k, v]) => [k, typeof v === "bigint" ? hex(v) : v])),
          ),
        };
      }
      case "memory_op": {
        const dom = this.dom(o, ln);
        const ext = o.extents ?? [];
        if (!Array.isArray(ext)) throw new ScenarioError(ln, '"extents" must be an array');
        const cmd = toNum(o.cmd, "cmd", ln);
        // decrease_reservation and exchange name frames; populate_physmap names gpfns.
        const byFrame = cmd === 1 || cmd === 11;
        const extents = ext.map((x: unknown) => (byFrame ? this.frame(x, ln, dom) : toNum(x, "extent", ln)));
        const r = h.memoryOp(dom, cmd, {
          extents,
          order: o.order === undefined ? 0 : toNum(o.order, "order", ln),
          out_order: o.out_order === undefined ? undefined : toNum(o.out_order, "out_order", ln),
          domid: o.domid === undefined || o.domid === "self" ? undefined : toNum(o.domid, "domid", ln),
        });
        return {
          rc: r.rc,
          extents: r.extents.map((m) => `0x${m.toString(16)}`),
          nr_exchanged: r.nr_exchanged,
        };
      }
      case "check_grant": {
        const st = h.grantState(this.dom(o, ln), toNum(o.ref, "ref", ln));
        if (!st) throw new ScenarioError(ln, `no grant entry ${String(o.ref)}`);
        return {
          flags: `0x${st.flags.toString(16)}`,
          domid: st.domid,
          frame: `0x${st.frame.toString(16)}`,
          pin: `0x${st.pin.toString(16)}`,
          host_write: st.pin & 0xff,
          host_read: (st.pin >>> 8) & 0xff,
          device_write: (st.pin >>> 16) & 0xff,
          device_read: st.pin >>> 24,
        };
      }
      case "set_gdt": {
        const dom = this.dom(o, ln);
        if (!Array.isArray(o.frames)) throw new ScenarioError(ln, '"frames" must be an array');
        const frames = o.frames.map((x: unknown) => this.frame(x, ln, dom));
        return { rc: h.setGdt(dom, toNum(o.vcpu ?? 0, "vcpu", ln), frames, toNum(o.entries, "entries", ln)) };
      }
      case "vm_assist": {
        const dom = this.dom(o, ln);
        const cmd = o.cmd === "enable" ? 0 : o.cmd === "disable" ? 1 : toNum(o.cmd, "cmd", ln);
        return { rc: h.vmAssist(dom, cmd, toNum(o.type, "type", ln)) };
      }
      case "multicall": {
        const dom = this.dom(o, ln);
        if (!Array.isArray(o.calls)) throw new ScenarioError(ln, '"calls" must be an array');
        const calls: MulticallEntry[] = o.calls.map((x: unknown) => this.multicallEntry(x as Obj, ln, dom));
        return { results: h.multicall(dom, toNum(o.vcpu ?? 0, "vcpu", ln), calls) };
      }
      case "access": {
        const dom = this.dom(o, ln);
        const kind = o.kind ?? "read";
        if (kind !== "read" && kind !== "write" && kind !== "fetch") {
          throw new ScenarioError(ln, '"kind" must be read, write or fetch');
        }
        const r = h.access(
          dom,
          toNum(o.vcpu ?? 0, "vcpu", ln),
          toBig(o.va, "va", ln),
          kind,
          o.user === true,
          o.val === undefined ? 0n : this.value(o.val, ln, dom),
        );
        if (!r.fault) return { fault: false, ...(r.value !== undefined ? { value: hex(r.value) } : {}) };
        return { fault: r.vector === 14 ? `0x${r.errorCode.toString(16)}` : "#GP" };
      }
      case "check": {
        if (o.grant !== undefined) {
          // A grant entry: {"grant": {"dom": granter, "ref": N}} — the same fields as check_grant.
          const g = o.grant as Obj;
          return this.exec({ ...l, obj: { op: "check_grant", dom: g.dom, ref: g.ref } });
        }
        const m = this.frame(o.frame, ln, o.dom === undefined ? undefined : toNum(o.dom, "dom", ln));
        const f = h.frames;
        if (!f.valid(m)) throw new ScenarioError(ln, `frame 0x${m.toString(16)} is outside the host`);
        return {
          type: PGT_NAMES[f.type[m]],
          type_count: f.typeCount[m],
          count: f.count[m],
          pinned: (f.flags[m] & F_PINNED) !== 0,
          validated: (f.flags[m] & F_VALIDATED) !== 0,
          owner: f.ownerOf(m),
          allocated: f.allocated[m] === 1,
          linear_pt_count: f.linear[m],
          table_uses: f.tableUses[m],
          m2p: hex((BigInt(f.m2pHi[m]) << 32n) | BigInt(f.m2pLo[m])),
        };
      }
      case "check_entry": {
        const dom = o.dom === undefined ? undefined : toNum(o.dom, "dom", ln);
        const m = this.frame(o.frame, ln, dom);
        const idx = toNum(o.index ?? 0, "index", ln);
        const mask = o.mask === undefined ? (1n << 64n) - 1n : toBig(o.mask, "mask", ln);
        return { val: hex(h.mem.read64(m * 4096 + idx * 8) & mask) };
      }
      case "check_domain": {
        const d = h.domain(this.dom(o, ln))!;
        return {
          nr_l4_pages: d.nrL4Pages,
          pages: d.pages.size,
          dying: d.isDying,
          injected_gp: d.injectedGp,
          crashed: d.crashed,
          grant_frames: d.grants.frames.length,
        };
      }
      case "audit": {
        const r = h.audit();
        return { ok: r.ok, problems: r.problems.map((p) => p.message) };
      }
      case "destroy": {
        const dom = this.dom(o, ln);
        const owned = h.domain(dom)!.pages.snapshot();
        this.owned.set(dom, owned);
        return { rc: h.destroyDomain(dom) };
      }
      case "check_free": {
        const d = toNum(o.dom, "dom", ln);
        const owned = this.owned.get(d) ?? h.domain(d)?.pages.snapshot() ?? [];
        const bad = h.checkFree(owned);
        return { ok: bad.length === 0, not_free: bad.map((m) => `0x${m.toString(16)}`) };
      }
      default:
        throw new ScenarioError(ln, `unknown op '${String(o.op)}'`);
    }
  }

  readonly owned = new Map<number, number[]>();
  /** Handles returned by each grant_table_op line, by line number (for `{"handle_of": N}`). */
  readonly handles = new Map<number, number[]>();

  /** A grant op's fields: addresses as entry pointers or numbers, handles as numbers or {"handle_of":N,"index":k}. */
  grantOp(op: Obj, ln: number, dom: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(op)) {
      if (k === "host_addr" || k === "new_addr") {
        out[k] = v !== null && typeof v === "object" ? this.pointer(v, ln, dom) : toBig(v, k, ln);
      } else if (k === "dev_bus_addr") out[k] = this.value(v, ln, dom, k);
      else if (k === "handle") {
        if (v !== null && typeof v === "object" && "handle_of" in (v as Obj)) {
          const line = toNum((v as Obj).handle_of, "handle_of", ln);
          const hs = this.handles.get(line);
          if (!hs) throw new ScenarioError(ln, `handle_of: line ${line} was not a grant_table_op`);
          out[k] = hs[toNum((v as Obj).index ?? 0, "index", ln)];
        } else out[k] = toNum(v, k, ln);
      } else if (k === "source" || k === "dest") {
        const p = v as Obj;
        const gref = p.ref !== undefined;
        out[k] = {
          u: gref
            ? toNum(p.ref, "ref", ln)
            : this.frame(p.frame, ln, p.domid === undefined ? dom : toNum(p.domid, "domid", ln)),
          domid: p.domid === undefined ? DOMID_SELF : toNum(p.domid, "domid", ln),
          offset: toNum(p.offset ?? 0, "offset", ln),
        };
      } else if (k === "dom") out[k] = v === "self" ? DOMID_SELF : toNum(v, k, ln);
      else out[k] = toNum(v, k, ln);
    }
    for (const k of ["host_addr", "dev_bus_addr"]) if (out[k] === undefined) out[k] = 0n;
    return out;
  }

  multicallEntry(c: Obj, ln: number, dom: number): MulticallEntry {
    switch (c.op) {
      case "mmu_update":
        return {
          op: __HYPERVISOR_mmu_update,
          reqs: this.mmuReqs(c, ln, dom),
          foreigndom: this.foreigndom(c, ln),
        };
      case "mmuext_op":
        return {
          op: __HYPERVISOR_mmuext_op,
          ops: this.mmuextOps(c, ln, dom),
          foreigndom: this.foreigndom(c, ln),
        };
      case "update_va_mapping":
        return {
          op: __HYPERVISOR_update_va_mapping,
          va: toBig(c.va, "va", ln),
          val: this.value(c.val, ln, dom),
          flags: c.flags === undefined ? 0n : toBig(c.flags, "flags", ln),
        };
      case "vm_assist":
        return {
          op: __HYPERVISOR_vm_assist,
          cmd: c.cmd === "enable" ? 0 : c.cmd === "disable" ? 1 : toNum(c.cmd, "cmd", ln),
          type: toNum(c.type, "type", ln),
        };
      default:
        throw new ScenarioError(ln, `multicall: unknown op '${String(c.op)}'`);
    }
  }
}

/** Does `actual` satisfy `expected` (every field named in `expected`, recursively; numbers compared as integers)? */
function matches(expected: unknown, actual: unknown, ln: number): boolean {
  if (expected !== null && typeof expected === "object" && !Array.isArray(expected)) {
    if (actual === null || typeof actual !== "object") return false;
    return Object.entries(expected as Obj).every(([k, v]) => matches(v, (actual as Obj)[k], ln));
  }
  if (Array.isArray(expected)) {
    return (
      Array.isArray(actual) &&
      expected.length === actual.length &&
      expected.every((v, i) => matches(v, actual[i], ln))
    );
  }
  if (typeof expected === "boolean" || expected === null) return expected === actual;
  if (typeof actual === "string" && typeof expected === "string" && !/^-?(0x)?[0-9a-f]+$/i.test(actual)) {
    return actual === expected;
  }
  if (typeof actual === "boolean") return false;
  try {
    const e = toBig(expected, "expect", ln);
    const a =
      typeof actual === "number" || typeof actual === "string" ? toBig(actual, "actual", ln) : undefined;
    return a !== undefined && BigInt.asUintN(64, a) === BigInt.asUintN(64, e);
  } catch {
    return expected === actual;
  }
}

/** The line's domain: its "dom", or its frame reference's. */
function domOf(o: Obj): number | undefined {
  if (typeof o.dom === "number") return o.dom;
  const f = o.frame as Obj | undefined;
  return f && typeof f === "object" && typeof f.dom === "number" ? f.dom : undefined;
}

/** Host options from an optional first `host` line. */
function hostOptions(lines: ScenarioLine[]): HostOptions {
  const first = lines[0];
  if (first?.obj.op !== "host") return {};
  const o = first.obj;
  const opts = (o.options ?? {}) as Obj;
  const policy = opts.linearPolicy ?? "xen";
  if (policy !== "xen" && policy !== "self-only" && policy !== "split-count") {
    throw new ScenarioError(first.line, 'linearPolicy must be "xen", "self-only" or "split-count"');
  }
  return {
    memoryMiB: o.memory_mib === undefined ? undefined : toNum(o.memory_mib, "memory_mib", first.line),
    pvLinearPt: opts.pvLinearPt === undefined ? undefined : opts.pvLinearPt === true,
    linearPolicy: policy as LinearPolicy,
    debugBuild: opts.debugBuild === true,
    tlbEntries: opts.tlbEntries === undefined ? undefined : toNum(opts.tlbEntries, "tlbEntries", first.line),
  };
}

/**
 * A scenario run one line at a time (for tools that step through a scenario:
 * the explorer, the fuzzer). `runScenario` is `ScenarioStepper` run to the end.
 * The whole file is parsed and checked for shape when constructed (throws
 * ScenarioError); each `step()` executes the next line and returns its result.
 */
export class ScenarioStepper {
  readonly lines: ScenarioLine[];
  readonly results: LineResult[] = [];
  private readonly runner: Runner;
  private next = 0;

  constructor(text: string | ScenarioLine[], extra: Partial<HostOptions> = {}) {
    this.lines = typeof text === "string" ? parseScenario(text) : text;
    for (const l of this.lines.slice(1)) {
      if (l.obj.op === "host") throw new ScenarioError(l.line, '"host" may only be the first line');
    }
    this.runner = new Runner({ ...hostOptions(this.lines), ...extra });
    if (this.lines[0]?.obj.op === "host") this.next = 1;
  }

  get host(): Host {
    return this.runner.host;
  }

  /** Lines not yet run. */
  get done(): boolean {
    return this.next >= this.lines.length;
  }

  /**
   * Append one line (an object as a scenario file would hold it) and run it: for tools that
   * generate lines as they go. Throws ScenarioError, and appends nothing, if the line is malformed.
   */
  run(obj: Record<string, unknown>): LineResult {
    if (!this.done) throw new Error("run() needs every earlier line to have run");
    if (obj.op === "host")
      throw new ScenarioError(this.lines.length + 1, '"host" may only be the first line');
    const l: ScenarioLine = { line: this.lines.length + 1, text: "", obj };
    this.lines.push(l);
    try {
      return this.step()!;
    } catch (e) {
      this.lines.pop();
      this.next--;
      throw e;
    }
  }

  /** Run the next line; undefined when none is left. */
  step(): LineResult | undefined {
    const l = this.lines[this.next];
    if (l === undefined) return undefined;
    this.next++;
    const r = this.runner;
    let actual: unknown;
    try {
      actual = r.exec(l);
    } catch (e) {
      if (e instanceof ScenarioError) throw e;
      if (e instanceof RangeError) throw new ScenarioError(l.line, e.message);
      actual = { exception: (e as Error).message };
    }
    let expected = l.obj.expect as unknown;
    if (l.obj.op === "grant_table_op" && expected && Array.isArray((expected as Obj).dev_bus_addr)) {
      const d = domOf(l.obj);
      const addrs = ((expected as Obj).dev_bus_addr as unknown[]).map((x) =>
        x !== null && typeof x === "object" ? hex(r.value(x, l.line, d)) : x,
      );
      expected = { ...(expected as Obj), dev_bus_addr: addrs };
    }
    if (l.obj.op === "access" && expected && (expected as Obj).fault === true) {
      // {"fault": true}: any fault.
      const f = (actual as Obj | undefined)?.fault;
      expected = { ...(expected as Obj), fault: f !== false && f !== undefined ? f : "a fault" };
    }
    if (l.obj.op === "check_entry" && expected && typeof (expected as Obj).val === "object") {
      // {"val": {"pfn":…, "flags":…}}: the stored entry's expected value.
      expected = { ...(expected as Obj), val: hex(r.value((expected as Obj).val, l.line, domOf(l.obj))) };
    }
    const ok = expected === undefined ? !(actual as Obj)?.exception : matches(expected, actual, l.line);
    const res: LineResult = { line: l.line, op: String(l.obj.op), ok, expected, actual };
    this.results.push(res);
    return res;
  }

  /** Run every remaining line, then the auditor. */
  finish(): ScenarioResult {
    while (this.step());
    const a = this.host.audit();
    const failures = this.results.filter((x) => !x.ok);
    return {
      host: this.host,
      ok: failures.length === 0 && a.ok,
      lines: this.results,
      failures,
      audit: { ok: a.ok, problems: a.problems.map((p) => p.message) },
    };
  }
}

/**
 * Run a scenario's text. Throws ScenarioError for a malformed file (before
 * anything runs, when the problem is visible without running).
 */
export function runScenario(text: string): ScenarioResult {
  return new ScenarioStepper(text).finish();
}
