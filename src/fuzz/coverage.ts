/**
 * Which hypercall × result pairs a fuzz run reached: the coverage of the errno
 * (and grant status, and fault) space. Keys are Xen's names: `-EINVAL`,
 * `GNTST_bad_handle`, `#PF 0x7`.
 */

import { ERRNO_NAMES } from "../xen/abi.js";

const GNTST: Record<number, string> = {
  0: "GNTST_okay",
  [-1]: "GNTST_general_error",
  [-2]: "GNTST_bad_domain",
  [-3]: "GNTST_bad_gntref",
  [-4]: "GNTST_bad_handle",
  [-5]: "GNTST_bad_virt_addr",
  [-6]: "GNTST_bad_dev_addr",
  [-7]: "GNTST_no_device_space",
  [-8]: "GNTST_permission_denied",
  [-9]: "GNTST_bad_page",
  [-10]: "GNTST_bad_copy_arg",
  [-11]: "GNTST_address_too_big",
  [-12]: "GNTST_eagain",
  [-13]: "GNTST_no_space",
};
const GNTTABOP = [
  "map_grant_ref",
  "unmap_grant_ref",
  "setup_table",
  "dump_table",
  "transfer",
  "copy",
  "query_size",
  "unmap_and_replace",
];
const XENMEM: Record<number, string> = {
  0: "increase_reservation",
  1: "decrease_reservation",
  2: "maximum_ram_page",
  3: "current_reservation",
  4: "maximum_reservation",
  6: "populate_physmap",
  11: "exchange",
};

/** `0` or `-EINVAL` (or the number, for an errno Xen has no name for here). */
export function rcName(rc: unknown): string {
  const n = Number(rc);
  if (!Number.isFinite(n)) return String(rc);
  if (n >= 0) return n === 0 ? "0" : "ok";
  const name = ERRNO_NAMES[-n];
  return name ? `-${name}` : String(n);
}

type Obj = Record<string, unknown>;

export class Coverage {
  /** op → result → count. */
  readonly counts = new Map<string, Map<string, number>>();

  add(op: string, result: string, n = 1): void {
    let m = this.counts.get(op);
    if (!m) {
      m = new Map();
      this.counts.set(op, m);
    }
    m.set(result, (m.get(result) ?? 0) + n);
  }

  /** Record what one scenario line returned. */
  record(line: Obj, actual: unknown): void {
    const op = String(line.op);
    const a = (actual ?? {}) as Obj;
    if (a.exception !== undefined) {
      this.add(op, "exception");
      return;
    }
    switch (op) {
      case "mmu_update":
      case "mmuext_op":
        this.add(op, rcName(a.rc));
        return;
      case "update_va_mapping":
      case "update_va_mapping_otherdomain":
      case "vm_assist":
      case "set_gdt":
      case "destroy":
        this.add(op, rcName(a.rc));
        return;
      case "grant_table_op": {
        const cmd = Number(line.cmd);
        const name = `grant_table_op/${GNTTABOP[cmd] ?? cmd}`;
        if (Number(a.rc) < 0) this.add(name, rcName(a.rc));
        for (const s of (a.status as unknown[]) ?? []) this.add(name, GNTST[Number(s)] ?? String(s));
        return;
      }
      case "memory_op": {
        const cmd = Number(line.cmd);
        this.add(`memory_op/${XENMEM[cmd] ?? cmd}`, Number(a.rc) < 0 ? rcName(a.rc) : "ok");
        return;
      }
      case "multicall": {
        const calls = line.calls as Obj[];
        const results = (a.results as Obj[]) ?? [];
        for (let i = 0; i < results.length; i++) {
          this.add(`multicall/${String(calls[i]?.op)}`, rcName(results[i].rc));
        }
        return;
      }
      case "access": {
        const kind = String(line.kind ?? "read");
        this.add(
          `access/${kind}`,
          a.fault === false ? "ok" : a.fault === "#GP" ? "#GP" : `#PF ${String(a.fault)}`,
        );
        return;
      }
      default:
        this.add(op, a.ok === true ? "ok" : a.ok === false ? "refused" : "done");
    }
  }

  merge(other: Coverage): void {
    for (const [op, m] of other.counts) for (const [r, n] of m) this.add(op, r, n);
  }

  /** Distinct hypercall × result pairs reached. */
  get pairs(): number {
    let n = 0;
    for (const m of this.counts.values()) n += m.size;
    return n;
  }

  toJSON(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const op of [...this.counts.keys()].sort()) {
      const m = this.counts.get(op)!;
      out[op] = Object.fromEntries([...m.entries()].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1)));
    }
    return out;
  }

  static fromJSON(j: Record<string, Record<string, number>>): Coverage {
    const c = new Coverage();
    for (const [op, m] of Object.entries(j)) for (const [r, n] of Object.entries(m)) c.add(op, r, n);
    return c;
  }

  /** One line per operation: its results, most frequent first. */
  table(): string {
    const j = this.toJSON();
    const w = Math.max(...Object.keys(j).map((k) => k.length), 10);
    return Object.entries(j)
      .map(
        ([op, m]) =>
          `  ${op.padEnd(w)}  ${Object.entries(m)
            .map(([r, n]) => `${r}×${n}`)
            .join("  ")}`,
      )
      .join("\n");
  }
}
