/**
 * The closed forms against worked values: Linux's "1+1+512 pages" for a GiB of
 * 4 KiB mappings, and the reference notes' table for 1 GiB, 64 GiB and 1 TiB.
 */

import { describe, expect, it } from "vitest";
import {
  directMapTablePages,
  GiB,
  MiB,
  m2pBytes,
  p2mBytes,
  pageSharePercent,
  recursiveSlotVaBytes,
  TiB,
  tablePagesToMap,
} from "../../src/report/formulas.js";

describe("page-table pages to map RAM from offset 0", () => {
  it("4 KiB pages: 515 for 1 GiB, 32834 for 64 GiB, 525315 for 1 TiB", () => {
    expect(tablePagesToMap(GiB)).toEqual({ l1: 512, l2: 1, l3: 1, l4: 1, total: 515 });
    expect(tablePagesToMap(64 * GiB)).toEqual({ l1: 32768, l2: 64, l3: 1, l4: 1, total: 32834 });
    // 1 TiB spans two 512 GiB L4 slots, so two L3 tables.
    expect(tablePagesToMap(TiB)).toEqual({ l1: 524288, l2: 1024, l3: 2, l4: 1, total: 525315 });
    expect(directMapTablePages(GiB)).toBe(515);
    expect(directMapTablePages(4 * GiB)).toBe(2048 + 4 + 1 + 1);
  });

  it("sizes below a GiB and not a multiple of the leaf are rounded up", () => {
    expect(tablePagesToMap(64 * MiB)).toEqual({ l1: 32, l2: 1, l3: 1, l4: 1, total: 35 });
    expect(tablePagesToMap(GiB + 4096).l1).toBe(513);
    expect(tablePagesToMap(GiB + 4096).l2).toBe(2);
    expect(tablePagesToMap(512 * GiB + 1).l3).toBe(2);
    expect(tablePagesToMap(0)).toEqual({ l1: 0, l2: 0, l3: 0, l4: 1, total: 1 });
  });

  it("2 MiB and 1 GiB pages", () => {
    expect([GiB, 64 * GiB, TiB].map((b) => tablePagesToMap(b, "2m").total)).toEqual([3, 66, 1027]);
    expect([GiB, 64 * GiB, TiB].map((b) => tablePagesToMap(b, "1g").total)).toEqual([2, 2, 3]);
    expect(tablePagesToMap(3 * MiB, "2m")).toEqual({ l1: 0, l2: 1, l3: 1, l4: 1, total: 3 });
  });

  it("4 KiB tables cost about 0.196 % of RAM", () => {
    expect(pageSharePercent(515, GiB)).toBeCloseTo(0.196457, 6);
    expect(pageSharePercent(directMapTablePages(TiB), TiB)).toBeCloseTo(0.195695, 6);
  });

  it("rejects sizes that are not whole non-negative byte counts", () => {
    expect(() => tablePagesToMap(-1)).toThrow(RangeError);
    expect(() => tablePagesToMap(1.5)).toThrow(RangeError);
    expect(() => p2mBytes(Number.NaN)).toThrow(RangeError);
  });
});

describe("P2M, M2P and recursive slots", () => {
  it("8 bytes per guest page and per host frame", () => {
    expect(p2mBytes(GiB)).toBe(2 * MiB);
    expect(p2mBytes(64 * MiB)).toBe(128 * 1024);
    expect(m2pBytes(256 * GiB)).toBe(512 * MiB);
    expect(p2mBytes(4097)).toBe(16); // a partial page is a page
  });

  it("a recursive slot is 512 GiB of VA, whatever the RAM", () => {
    expect(recursiveSlotVaBytes()).toBe(512 * GiB);
    expect(recursiveSlotVaBytes(2)).toBe(TiB);
    expect(() => recursiveSlotVaBytes(513)).toThrow(RangeError);
  });
});
