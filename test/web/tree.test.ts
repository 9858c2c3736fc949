/** Tree building (src/web/tree.ts) and frame classes (src/web/framemap.ts) on real states. */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { synthLinuxImage } from "../../src/dump/synth.js";
import { walkView } from "../../src/dump/views.js";
import { ScenarioStepper } from "../../src/scenario/run.js";
import { dumpFrameClasses, grantMappedFrames, hostFrameClasses } from "../../src/web/framemap.js";
import { grantPtes, hostRoots, tableView, walkFrom } from "../../src/web/tree.js";
import { PGT_NAMES } from "../../src/xen/abi.js";
import type { Host } from "../../src/xen/host.js";
import { CLASS_CODE, FRAME_CLASSES } from "../../web/protocol.js";
import { bootedGuest, SCENARIOS } from "../helpers/fixtures.js";

const run = (file: string): Host =>
  new ScenarioStepper(readFileSync(join(SCENARIOS, file), "utf8")).finish().host;
const src = (h: Host) => ({
  mem: h.mem,
  levels: 4 as const,
  host: h,
  grantPtes: grantPtes(h),
  grantFrames: grantMappedFrames(h),
});

describe("frame classes", () => {
  it("are the frame table's types, with free, I/O, Xen's and grant-mapped frames apart", () => {
    const h = run("grants/b5-b6-map-ptes-and-references.jsonl");
    const c = hostFrameClasses(h);
    const grants = grantMappedFrames(h);
    expect(grants.size).toBeGreaterThan(0);
    const f = h.frames;
    for (let m = 0; m < f.frames; m++) {
      const want =
        f.owner[m] === 0
          ? "free"
          : f.ownerOf(m) === 0x7ff1
            ? "io"
            : f.ownerOf(m) === 0x7ff2
              ? "xen"
              : grants.has(m)
                ? "grant"
                : PGT_NAMES[f.type[m]];
      expect(FRAME_CLASSES[c[m]], `frame ${m}`).toBe(want);
    }
  });
});

describe("tree building", () => {
  it("decodes a validated L4: Xen's slots, its self-map at 258, the guest's entries with what Xen rewrote", () => {
    const h = run("xen/19a-l4-self-map.jsonl");
    const [root] = hostRoots(h).length ? hostRoots(h) : [{ mfn: h.domain(1)!.p2m[0], levels: 4 }];
    const t = tableView(src(h), root.mfn, 4, 0n, []);
    expect(t.validated).toBe(true);
    const slot = (i: number) => t.entries.find((e) => e.index === i);
    expect(slot(258)?.kind).toBe("self");
    expect(slot(258)?.xen[0]).toMatch(/installed by Xen/);
    expect(slot(260)?.kind).toBe("xen-slot");
    expect(slot(256)?.va).toBe("ffff800000000000");
    const guestSlot = (i: number) => i < 256 || i > 271;
    const selfMaps = t.entries.filter((e) => e.kind === "self" && guestSlot(e.index));
    expect(selfMaps.map((e) => e.index)).toEqual([300]);
    for (const e of selfMaps) expect(e.target).toBe(root.mfn);
    const guest = t.entries.filter((e) => guestSlot(e.index));
    for (const e of guest) expect(e.xen).toContain("Xen forces US in L2–L4 entries");
  });

  it("marks linear entries (same-level tables) and entries pointing back up the path", () => {
    const h = run("xen/20-linear-one-hop.jsonl");
    const l4 = h.domain(1)!.p2m[0];
    const t = tableView(src(h), l4, 4, 0n, []);
    const linear = t.entries.find((e) => e.index === 5);
    expect(linear?.kind).toBe("linear");
    expect(linear?.target).toBe(h.domain(1)!.p2m[40]);
    // The same table asked for with itself on the path: every pointer to it is a back edge.
    const l3 = h.domain(1)!.p2m[1];
    const down = tableView(src(h), l3, 3, 0n, [l4]);
    expect(down.entries[0].kind).toBe("table");
    expect(down.entries[0].childLevel).toBe(2);
    const cyclic = tableView({ mem: h.mem, levels: 4 }, l3, 3, 0n, [l4, h.domain(1)!.p2m[2]]);
    expect(cyclic.entries[0].kind).toBe("back");
  });

  it("marks grant PTEs with the grant and the mapping's handle", () => {
    const s = new ScenarioStepper(
      readFileSync(join(SCENARIOS, "grants/b5-b6-map-ptes-and-references.jsonl"), "utf8"),
    );
    let seen = 0;
    while (s.step()) {
      const h = s.host;
      for (const [addr, g] of grantPtes(h)) {
        const l1 = Math.floor(addr / 4096);
        const t = tableView(src(h), l1, 1, 0n, []);
        const e = t.entries.find((x) => x.index === (addr % 4096) / 8);
        expect(e?.grant).toEqual(g);
        expect(e?.kind).toBe("leaf");
        seen++;
      }
    }
    expect(seen).toBeGreaterThan(0);
  });

  it("lists every vCPU's base pointers as roots, and a walk names each step's table", () => {
    const { h, kernel } = bootedGuest("recursive");
    const roots = hostRoots(h);
    expect(roots.map((r) => r.mode)).toContain("kernel");
    const root = roots.find((r) => r.mode === "kernel")!;
    expect(root.mfn).toBe(h.domain(kernel.domid)!.vcpus[0].guestTable);
    // Follow the tree by hand along a kernel address and compare with the walk.
    const t4 = tableView(src(h), root.mfn, 4, 0n, []);
    const down = t4.entries.find((e) => e.kind === "table" && e.index >= 272)!;
    const va = BigInt(`0x${down.va}`) + 0x1000n;
    const w = walkFrom(h.mem, root.mfn, 4, va);
    expect(w.steps[0].table).toBe(root.mfn);
    expect(w.steps[1].table).toBe(down.target);
    const plain = walkView(h.mem, root.mfn, va, { levels: 4 });
    expect(w.ok).toBe(plain.ok);
    expect(w.pa).toBe(plain.pa);
  });
});

describe("dumps", () => {
  it("class frames by the tree at CR3: tables by level, mapped frames, the rest", () => {
    const s = synthLinuxImage({ ramBytes: 64 * 2 ** 20 });
    const root = s.cr3 / 4096;
    const c = dumpFrameClasses(s.mem, root, 4, () => true);
    expect(c[root]).toBe(CLASS_CODE.l4);
    const counts = (code: number) => c.filter((x) => x === code).length;
    const tables =
      counts(CLASS_CODE.l4) + counts(CLASS_CODE.l3) + counts(CLASS_CODE.l2) + counts(CLASS_CODE.l1);
    expect(tables).toBe(s.tableFrames);
    expect(counts(CLASS_CODE.mapped)).toBeGreaterThan(0);
    // A dump's tree has no frame table: kinds come from the entries and the path alone.
    const t = tableView({ mem: s.mem, levels: 4, classOf: (m) => FRAME_CLASSES[c[m]] }, root, 4, 0n, []);
    expect(t.entries.length).toBeGreaterThan(0);
    expect(t.entries.every((e) => e.xen.length === 0)).toBe(true);
    const dm = t.entries.find((e) => e.va === "ffff888000000000")!;
    expect(dm.targetClass).toBe("l3");
  });
});
