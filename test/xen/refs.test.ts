/**
 * The reverse map (src/xen/refs.ts) must explain every frame's counts: on every scenario,
 * after every line at which the auditor is clean, and on real guests after real workloads,
 * the references listed for a frame add up to its general count, its type count, its
 * linear_pt_count (xen policy) and its uses as a table (split-count).
 */

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { PinningPolicy, StrategyName, WorkloadName } from "../../src/guest/report.js";
import { bootOnHost } from "../../src/guest/run.js";
import { runWorkloadOn } from "../../src/guest/workloads.js";
import { ScenarioStepper } from "../../src/scenario/run.js";
import { PGT_writable_page } from "../../src/xen/abi.js";
import type { Host, LinearPolicy } from "../../src/xen/host.js";
import {
  outgoingLinear,
  type Reference,
  referenceMap,
  referencesTo,
  referenceTotals,
} from "../../src/xen/refs.js";
import { bootedGuest, SCENARIOS, scenarioFiles } from "../helpers/fixtures.js";

/** Frames whose counts the references must explain, and the first that they do not (or undefined). */
function unexplained(h: Host): string | undefined {
  const f = h.frames;
  const map = referenceMap(h);
  for (const d of h.domains.values()) {
    for (const m of [...d.pages, ...d.xenPages]) {
      const refs = map.get(m) ?? [];
      const t = referenceTotals(refs, m, outgoingLinear(h, m));
      const type = f.type[m];
      const typed = (type >= 1 && type <= 5) || type === PGT_writable_page;
      const bad =
        t.general !== f.count[m] ||
        (typed && t.type !== f.typeCount[m]) ||
        (h.linearPolicy === "xen" && t.linear !== f.linear[m]) ||
        (h.linearPolicy === "split-count" && t.tableUses !== f.tableUses[m]);
      if (bad) {
        return `0x${m.toString(16)}: count ${f.count[m]} type ${f.typeCount[m]} linear ${f.linear[m]} uses ${
          f.tableUses[m]
        }; references say ${JSON.stringify(t)} (${refs.map((r) => r.kind).join(", ")})`;
      }
    }
  }
  return undefined;
}

describe("reverse map on every scenario, line by line", () => {
  for (const file of scenarioFiles()) {
    it(file.slice(SCENARIOS.length + 1), () => {
      const s = new ScenarioStepper(readFileSync(file, "utf8"));
      let checked = 0;
      while (s.step()) {
        if (!s.host.audit().ok) continue;
        expect(unexplained(s.host)).toBeUndefined();
        checked++;
      }
      expect(checked).toBeGreaterThan(0);
    });
  }
});

describe("reverse map on real guests", () => {
  const runs: [StrategyName, PinningPolicy, WorkloadName, LinearPolicy][] = [
    ["direct-mfn", "linux", "fork-exec-exit", "xen"],
    ["direct-pfn", "eager", "cow-storm", "xen"],
    ["shadow", "linux", "mmap-churn", "xen"],
    ["recursive", "eager", "fork-exec-exit", "xen"],
    ["recursive", "linux", "server", "split-count"],
    ["netbsd", "linux", "fork-exec-exit", "xen"],
    ["netbsd", "linux", "mmap-churn", "split-count"],
    ["direct-pfn", "linux", "grant-io", "xen"],
  ];
  for (const [strategy, pinning, workload, linearPolicy] of runs) {
    it(`${strategy} ${pinning} ${workload} (${linearPolicy})`, () => {
      const { h, kernel } = bootOnHost({
        strategy,
        pinning,
        workload,
        memoryBytes: 64 * 2 ** 20,
        seed: 7,
        linearPolicy,
      });
      expect(unexplained(h)).toBeUndefined();
      runWorkloadOn(kernel, workload, { seed: 7, iterations: 3, frontend: 2 });
      kernel.hc.flush();
      expect(h.audit().ok).toBe(true);
      expect(unexplained(h)).toBeUndefined();
    });
  }

  it("lists the holders of a page-table frame by kind, and one frame's scan equals the map's", () => {
    const { h, kernel } = bootedGuest("recursive");
    const v = h.domain(kernel.domid)!.vcpus[0];
    const l4 = v.guestTable;
    const refs = referencesTo(h, l4);
    const kinds = refs.map((r) => r.kind).sort();
    // The kernel's L4: allocated, pinned, the vCPU's base pointer, Xen's slot 258 and the
    // guest's own recursive slot (self-maps: they hold nothing).
    expect(kinds).toContain("allocation");
    expect(kinds).toContain("pin");
    expect(kinds).toContain("baseptr");
    expect(refs.filter((r) => r.kind === "self-map").length).toBeGreaterThanOrEqual(1);
    expect(refs.filter((r) => r.kind === "xen-slot" && r.index === 258)).toHaveLength(1);
    const map = referenceMap(h);
    const key = (r: Reference) => JSON.stringify(r);
    for (const m of [l4, ...[...h.domain(1)!.pages].slice(0, 200)]) {
      expect((map.get(m) ?? []).map(key).sort()).toEqual(referencesTo(h, m).map(key).sort());
    }
  });

  it("names the grant behind a grant PTE and the device mapping", () => {
    const s = new ScenarioStepper(
      readFileSync(join(SCENARIOS, "grants", "b5-b6-map-ptes-and-references.jsonl"), "utf8"),
    );
    let sawPte = false;
    while (s.step()) {
      for (const list of referenceMap(s.host).values()) {
        for (const r of list) {
          if (r.kind === "entry" && r.grant) {
            sawPte = true;
            expect(r.grant.host).toBe(true);
            expect(r.grant.mapper).toBe(r.domid);
          }
        }
      }
    }
    expect(sawPte).toBe(true);
  });

  it("follows a grant PTE that unmap_and_replace moved to another mapping's slot", () => {
    const s = new ScenarioStepper(
      readFileSync(join(SCENARIOS, "regressions", "unmap-and-replace-moves-grant-pte.jsonl"), "utf8"),
    );
    while (s.step());
    const h = s.host;
    // The moved PTE: L1 0xdd5 slot 3 of d2 maps d1's granted frame, where no map call put it.
    const moved = [...referenceMap(h).values()]
      .flat()
      .filter((r) => r.kind === "entry" && r.table === 0xdd5 && r.index === 3);
    expect(moved).toHaveLength(1);
    expect(moved[0].grant).toMatchObject({ mapper: 2, granter: 1, ref: 0, host: true });
  });

  it("does not explain a count the hypervisor got wrong", () => {
    const { h, kernel } = bootedGuest("direct-pfn");
    const l4 = h.domain(kernel.domid)!.vcpus[0].guestTable;
    h.frames.count[l4]++;
    expect(unexplained(h)).toMatch(/count/);
    h.frames.count[l4]--;
    h.frames.typeCount[l4]--;
    expect(unexplained(h)).toMatch(/type/);
  });
});
