/** Diffing two states (src/web/diff.ts) and stepping a scenario forward and back (src/web/stepping.ts). */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ScenarioStepper } from "../../src/scenario/run.js";
import { captureState, diffStates } from "../../src/web/diff.js";
import { ScenarioSession } from "../../src/web/stepping.js";

const ROOT = join(__dirname, "..", "..", "scenarios");
const text = (f: string) => readFileSync(join(ROOT, f), "utf8");

const TREE = [
  '{"op":"host","memory_mib":64}',
  '{"op":"domain","domid":1,"pages":64}',
  '{"op":"poke","dom":1,"pfn":0,"index":0,"val":{"pfn":1,"flags":"0x7"}}',
  '{"op":"poke","dom":1,"pfn":1,"index":0,"val":{"pfn":2,"flags":"0x7"}}',
  '{"op":"poke","dom":1,"pfn":2,"index":0,"val":{"pfn":3,"flags":"0x7"}}',
  '{"op":"poke","dom":1,"pfn":3,"index":0,"val":{"pfn":10,"flags":"0x7"}}',
  '{"op":"mmuext_op","dom":1,"ops":[{"cmd":"MMUEXT_PIN_L4_TABLE","mfn":{"pfn":0}}],"expect":{"rc":0,"done":1}}',
  '{"op":"mmuext_op","dom":1,"ops":[{"cmd":"MMUEXT_NEW_BASEPTR","mfn":{"pfn":0}}],"expect":{"rc":0,"done":1}}',
  '{"op":"access","dom":1,"vcpu":0,"va":"0x8","kind":"write","val":"0x2a","expect":{"fault":false}}',
  '{"op":"check","frame":{"dom":1,"pfn":3},"expect":{"type":"l1","count":5}}',
  '{"op":"mmu_update","dom":1,"reqs":[{"ptr":{"pfn":3,"index":1},"val":{"pfn":11,"flags":"0x5"}}],"expect":{"rc":0,"done":1}}',
].join("\n");

describe("state diff", () => {
  it("sees nothing when nothing changed", () => {
    const s = new ScenarioStepper(TREE);
    for (let i = 0; i < 6; i++) s.step();
    const d = diffStates(captureState(s.host), captureState(s.host));
    expect(d).toEqual({
      frames: [],
      entries: [],
      tlb: [],
      vcpus: [],
      domains: [],
      changedFrames: [],
      truncated: false,
    });
  });

  it("names the counts, types and flags a pin changed, on exactly the tree's frames", () => {
    const s = new ScenarioStepper(TREE);
    for (let i = 0; i < 5; i++) s.step();
    const before = captureState(s.host);
    expect(s.step()?.ok).toBe(true); // the pin
    const d = diffStates(before, captureState(s.host));
    const p2m = s.host.domain(1)!.p2m;
    expect(d.changedFrames).toEqual([p2m[0], p2m[1], p2m[2], p2m[3], p2m[10]].sort((a, b) => a - b));
    const l4 = d.frames.filter((c) => c.mfn === p2m[0]);
    expect(l4).toContainEqual({ mfn: p2m[0], field: "type", before: "none", after: "l4" });
    expect(l4).toContainEqual({ mfn: p2m[0], field: "flags", before: "-", after: "validated|pinned" });
    expect(d.frames).toContainEqual({ mfn: p2m[10], field: "type", before: "none", after: "writable" });
    // Validation rewrote the entries (US, Xen's L4 slots): the L4's slots 256–271 appear.
    const l4Entries = d.entries.filter((e) => e.mfn === p2m[0]).map((e) => e.index);
    expect(l4Entries).toContain(258);
    expect(d.entries.every((e) => e.class !== "free")).toBe(true);
  });

  it("shows a TLB fill, a base pointer loaded and an entry written", () => {
    const s = new ScenarioStepper(TREE);
    for (let i = 0; i < 6; i++) s.step();
    let before = captureState(s.host);
    s.step(); // NEW_BASEPTR
    let d = diffStates(before, captureState(s.host));
    expect(d.vcpus.map((c) => c.field)).toEqual(expect.arrayContaining(["kernelBase", "cr3"]));
    before = captureState(s.host);
    s.step(); // access: a TLB fill, A and D set in the entries
    d = diffStates(before, captureState(s.host));
    expect(d.tlb).toHaveLength(1);
    expect(d.tlb[0].added).toHaveLength(1);
    expect(d.tlb[0].added[0].va).toBe("0000000000000000");
    expect(d.tlb[0].removed).toEqual([]);
    const l1 = s.host.domain(1)!.p2m[3];
    expect(d.entries.some((e) => e.mfn === l1 && e.index === 0)).toBe(true);
    s.step(); // check
    before = captureState(s.host);
    s.step(); // mmu_update of entry 1 of the L1
    d = diffStates(before, captureState(s.host));
    const e = d.entries.find((x) => x.mfn === l1);
    expect(e?.index).toBe(1);
    expect(e?.before).toBe("0000000000000000");
    expect(BigInt(`0x${e?.after}`) >> 12n).toBe(BigInt(s.host.domain(1)!.p2m[11]));
  });
});

describe("scenario session", () => {
  it("marks a failing expectation at its line from the start, and steps forward and back to the same states", () => {
    const bad = `${TREE}\n{"op":"check","frame":{"dom":1,"pfn":3},"expect":{"count":99}}`;
    const s = new ScenarioSession(bad, "bad.jsonl");
    const v0 = s.view();
    expect(v0.position).toBe(0);
    expect(v0.total).toBe(11);
    expect(v0.lines.map((l) => l.status)).toEqual([...Array(8).fill("ok"), "fail", "ok", "fail"]);
    expect(v0.lines[10].line).toBe(12);
    const at5 = s.goto(5);
    expect(at5.position).toBe(5);
    expect(at5.last?.op).toBe("poke");
    const forward = s.goto(9);
    expect(forward.last).toMatchObject({ line: 10, ok: false, actual: { type: "l1", count: 2 } });
    const diffAt9 = JSON.stringify(forward.diff);
    s.goto(11);
    const back = s.goto(9); // replayed from the start
    expect(JSON.stringify(back.diff)).toBe(diffAt9);
    expect(back.tlb).toEqual(forward.tlb);
    expect(s.goto(0).position).toBe(0);
    expect(() => s.goto(12)).toThrow(RangeError);
    expect(() => s.goto(-1)).toThrow(RangeError);
    expect(() => s.goto(1.5)).toThrow(RangeError);
  });

  it("stops before a line that cannot run and says why", () => {
    const broken = `${TREE}\n{"op":"check","frame":{"dom":1,"pfn":999}}\n{"op":"audit"}`;
    const s = new ScenarioSession(broken, "broken.jsonl");
    expect(s.view().blockedAt).toBe(12);
    expect(s.view().lines[10].status).toBe("error");
    expect(s.view().lines[11].status).toBe("pending");
    const v = s.goto(12);
    expect(v.position).toBe(10);
    expect(v.last?.error).toMatch(/no pfn 999/);
  });

  it("runs every scenario file to its end with the same outcome as replay", () => {
    for (const f of ["xen/20-linear-one-hop.jsonl", "grants/b7-unmap.jsonl", "memory/balloon.jsonl"]) {
      const s = new ScenarioSession(text(f), f);
      const v = s.goto(s.lines.length);
      const r = new ScenarioStepper(text(f)).finish();
      expect(v.lines.every((l) => l.status === "ok")).toBe(r.ok);
      expect(v.audit.ok).toBe(r.audit.ok);
    }
  });
});
