/**
 * Model-based test of the guest kernel: random sequences of process operations (mmap, loads and
 * stores, mprotect, munmap, fork, exec, exit) on a random strategy and pinning policy, checked
 * against a plain reference model of what each process should see — and the hypervisor's
 * auditor clean after every step, and every frame back when all processes are gone.
 */

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { bootGuest } from "../../src/guest/boot.js";
import { GuestError } from "../../src/guest/kernel.js";
import { makeMapper } from "../../src/guest/mappers/index.js";
import { Process } from "../../src/guest/process.js";
import { PINNING_POLICIES, STRATEGIES } from "../../src/guest/report.js";
import { Host } from "../../src/xen/host.js";

const PAGE = 4096;
const BASE = 0x40_0000_0000; // 256 GiB: the test's own region, 2 MiB windows apart
const SLOTS = 6; // pages the test addresses: 3 per 2 MiB window, 2 windows (few, so ops collide)
const va = (slot: number) => BASE + Math.floor(slot / 3) * 2 ** 21 + (slot % 3) * PAGE;

interface RefProc {
  p: Process;
  /** Mapped slots: writable? */
  prot: Map<number, boolean>;
  mem: Map<number, number>;
}

type Op =
  | { op: "mmap"; proc: number; slot: number; len: number; write: boolean }
  | { op: "store"; proc: number; slot: number; value: number }
  | { op: "load"; proc: number; slot: number }
  | { op: "mprotect"; proc: number; slot: number; len: number; write: boolean }
  | { op: "munmap"; proc: number; slot: number; len: number }
  | { op: "fork"; proc: number }
  | { op: "exec"; proc: number }
  | { op: "exit"; proc: number };

const slot = fc.integer({ min: 0, max: SLOTS - 1 });
const proc = fc.nat(3);
const len = fc.integer({ min: 1, max: 4 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ op: fc.constant("mmap" as const), proc, slot, len, write: fc.boolean() }),
  {
    arbitrary: fc.record({
      op: fc.constant("store" as const),
      proc,
      slot,
      value: fc.noBias(fc.integer({ min: 1, max: 2 ** 31 - 1 })),
    }),
    weight: 4,
  },
  { arbitrary: fc.record({ op: fc.constant("load" as const), proc, slot }), weight: 3 },
  fc.record({ op: fc.constant("mprotect" as const), proc, slot, len, write: fc.boolean() }),
  fc.record({ op: fc.constant("munmap" as const), proc, slot, len }),
  { arbitrary: fc.record({ op: fc.constant("fork" as const), proc }), weight: 2 },
  fc.record({ op: fc.constant("exec" as const), proc }),
  fc.record({ op: fc.constant("exit" as const), proc }),
);

describe("guest kernel against a reference model", () => {
  it("every process sees exactly its own memory; the auditor stays clean", () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(
        fc.constantFrom(...STRATEGIES),
        fc.constantFrom(...PINNING_POLICIES),
        fc.array(opArb, { minLength: 5, maxLength: 40 }),
        (strategy, pinning, ops) => {
          const h = new Host({ memoryMiB: 128 });
          h.createDomain({ domid: 1, pages: 64 * 256 });
          const { kernel: k } = bootGuest(h, 1, {
            mapper: makeMapper(strategy),
            pinning,
            method: "top-down",
          });
          const base = k.alloc.inUse;
          const tables = () => k.tableCount.reduce((a, b) => a + b, 0);
          const baseTables = tables();
          const first = new Process(k);
          first.switchTo();
          let procs: RefProc[] = [{ p: first, prot: new Map(), mem: new Map() }];
          const range = (s: number, n: number) =>
            Array.from({ length: Math.min(n, SLOTS - s) }, (_, i) => s + i);
          for (const o of ops) {
            if (procs.length === 0) break;
            const r = procs[o.proc % procs.length];
            seen.add(o.op);
            switch (o.op) {
              case "mmap":
                for (const s of range(o.slot, o.len)) {
                  r.p.mmap(PAGE, o.write, false, va(s));
                  r.prot.set(s, o.write);
                  r.mem.delete(s);
                }
                break;
              case "store": {
                r.p.switchTo();
                const ok = r.prot.get(o.slot) === true;
                if (ok) {
                  r.p.touch(va(o.slot), true, o.value);
                  r.mem.set(o.slot, o.value);
                } else expect(() => r.p.touch(va(o.slot), true, o.value)).toThrow(GuestError);
                break;
              }
              case "load":
                r.p.switchTo();
                if (r.prot.has(o.slot)) expect(r.p.touch(va(o.slot), false)).toBe(r.mem.get(o.slot) ?? 0);
                else expect(() => r.p.touch(va(o.slot), false)).toThrow(GuestError);
                break;
              case "mprotect": {
                const slots = range(o.slot, o.len).filter((s) => r.prot.has(s));
                for (const s of slots) {
                  r.p.mprotect(va(s), PAGE, o.write, false);
                  r.prot.set(s, o.write);
                }
                break;
              }
              case "munmap":
                for (const s of range(o.slot, o.len)) {
                  r.p.munmap(va(s), PAGE);
                  r.prot.delete(s);
                  r.mem.delete(s);
                }
                break;
              case "fork":
                if (procs.length < 4) {
                  procs.push({ p: r.p.fork(), prot: new Map(r.prot), mem: new Map(r.mem) });
                }
                break;
              case "exec":
                r.p.switchTo();
                r.p.exec();
                r.prot.clear();
                r.mem.clear();
                break;
              case "exit":
                r.p.exit();
                procs = procs.filter((x) => x !== r);
                break;
            }
            const a = h.audit();
            expect(a.problems).toEqual([]);
            // Every process still sees exactly its own memory.
            for (const x of procs) {
              x.p.switchTo();
              for (const [sl] of x.prot) expect(x.p.touch(va(sl), false)).toBe(x.mem.get(sl) ?? 0);
            }
          }
          for (const r of procs) r.p.exit();
          expect(h.audit().ok).toBe(true);
          // Every user page and process table is back (the kernel's own tables may have grown:
          // the shadow strategy's window).
          expect(k.alloc.inUse - base).toBe(tables() - baseTables);
        },
      ),
      { numRuns: 60, seed: 20261121 },
    );
    expect([...seen].sort()).toEqual(["exec", "exit", "fork", "load", "mmap", "mprotect", "munmap", "store"]);
  });
});
