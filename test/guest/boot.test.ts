/**
 * Booting: the domain builder's start-of-day tables and the kernel's direct
 * map, built top-down (seed 004) or linearly from a guessed reservation.
 */

import { describe, expect, it } from "vitest";
import {
  BRK_PAGES,
  bootGuest,
  kernelImagePages,
  linearGuess,
  planDirectMapBoot,
} from "../../src/guest/boot.js";
import { makeMapper } from "../../src/guest/mappers/index.js";
import type { BootMethod, StrategyName } from "../../src/guest/report.js";
import { directMapTablePages } from "../../src/report/formulas.js";
import { Host } from "../../src/xen/host.js";

const MiB = 2 ** 20;
const GiB = 2 ** 30;

function boot(strategy: StrategyName, method: BootMethod, bytes: number) {
  const pages = bytes / 4096;
  const h = new Host({ memoryMiB: Math.ceil(bytes / MiB) + Math.ceil(bytes / MiB / 32) + 64 });
  h.createDomain({ domid: 1, pages });
  const r = bootGuest(h, 1, { mapper: makeMapper(strategy), pinning: "linux", method });
  return { h, ...r };
}

describe("direct-map boot", () => {
  const sizes = [64 * MiB, GiB + 256 * MiB + 12 * 4096];
  for (const method of ["top-down", "linear"] as const) {
    for (const bytes of sizes) {
      it(`${method}, ${bytes} bytes: maps all RAM with exactly the closed-form tables, auditor clean`, () => {
        const { h, kernel: k, boot: b } = boot("direct-pfn", method, bytes);
        expect(h.audit().ok).toBe(true);
        expect(b.mappedPages).toBe(k.pages);
        expect(b.directMapTablePages).toBe(directMapTablePages(bytes));
        // Every page of RAM is reachable through the direct map, table pages read-only.
        for (const pfn of [0, 5000, k.pages - 1]) {
          k.read64(0x8800_0000_0000 + pfn * 4096);
        }
        // The planner follows the same algorithm to the page.
        expect(planDirectMapBoot(k.pages, method)).toEqual(b);
      });
    }
  }

  it("top-down puts the tables at the top of RAM from a 16-page seed; linear puts them low, from a guess", () => {
    const bytes = GiB + 256 * MiB;
    const td = boot("direct-pfn", "top-down", bytes).boot;
    const lin = boot("direct-pfn", "linear", bytes).boot;
    expect(td.reservedPages).toBe(BRK_PAGES);
    expect(td.unusedPages).toBe(0);
    expect(td.highestTablePfn).toBe(bytes / 4096 - 1);
    expect(td.steps).toBeGreaterThan(2); // 2 MiB, then ×32 steps down
    const image = kernelImagePages(bytes / 4096);
    expect(lin.lowestTablePfn).toBe(image + BRK_PAGES);
    expect(lin.reservedPages).toBe(linearGuess(bytes / 4096, Math.ceil(bytes / 4096 / 512)));
    expect(lin.reservedPages - lin.unusedPages).toBe(lin.usedPages);
    expect(lin.highestTablePfn).toBeLessThan(image + BRK_PAGES + lin.reservedPages);
  });

  it("the machine-frame direct map needs more tables than RAM's closed form (its gaps)", () => {
    const { h, boot: b } = boot("direct-mfn", "top-down", 256 * MiB);
    expect(h.audit().ok).toBe(true);
    expect(b.directMapTablePages).toBeGreaterThanOrEqual(directMapTablePages(256 * MiB));
  });

  it("plans guests up to 1 TiB: the top-down seed never runs out; the linear guess must hold 2 GiB", () => {
    for (const bytes of [64 * MiB, 4 * GiB, 64 * GiB, 1024 * GiB]) {
      const pages = bytes / 4096;
      const td = planDirectMapBoot(pages, "top-down");
      const lin = planDirectMapBoot(pages, "linear");
      for (const p of [td, lin]) {
        expect(p.mappedPages).toBe(pages);
        expect(p.directMapTablePages).toBe(directMapTablePages(bytes));
      }
      expect(td.reservedPages).toBe(16);
      expect(td.highestTablePfn).toBe(pages - 1);
      expect(lin.reservedPages).toBeGreaterThanOrEqual(lin.usedPages);
    }
    const tib = planDirectMapBoot(2 ** 28, "linear");
    expect(tib.reservedPages).toBe(524288 + 1024 + 2); // L1 + L2 + L3 pages: 2 GiB set aside up front
  });

  it("strategies without a direct map boot with the builder's tables only", () => {
    for (const s of ["shadow", "recursive", "netbsd"] as const) {
      const { h, boot: b } = boot(s, "top-down", 256 * MiB);
      expect(h.audit().ok).toBe(true);
      expect(b.usedPages).toBe(0);
      expect(b.directMapTablePages).toBe(0);
    }
  });
});
