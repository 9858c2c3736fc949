/** Live chart data (web/series.ts): rates from cumulative samples, rounds, the last run only. */

import { describe, expect, it } from "vitest";
import type { LiveEvent } from "../../web/protocol.js";
import { liveSeries } from "../../web/series.js";

const sample = (t: number, hypercalls: number, tableFrames: number, step = 0): LiveEvent => ({
  type: "sample",
  t,
  phase: "run",
  step,
  steps: 10,
  hypercalls,
  tableFrames,
});

describe("live series", () => {
  it("turns cumulative hypercalls into a rate per second and keeps table frames over time", () => {
    const s = liveSeries([
      { type: "hello", command: "run", strategy: "shadow", workload: "server", memoryBytes: 64 * 2 ** 20 },
      sample(0, 0, 10),
      sample(500, 1000, 12, 1),
      sample(500, 1500, 12, 2), // no time passed: no rate point
      sample(1500, 2500, 14, 3),
    ]);
    expect(s.title).toBe("run shadow server 64 MiB");
    expect(s.hypercallsPerS).toEqual([
      { x: 0.5, y: 2000 },
      { x: 1.5, y: 1000 },
    ]);
    expect(s.tableFrames.map((p) => p.y)).toEqual([10, 12, 12, 14]);
    expect(s.samples).toBe(4);
    expect(s.last?.step).toBe(3);
    expect(s.ended).toBeUndefined();
  });

  it("gives each pre-copy round its pages and bandwidth, and shows only the latest run", () => {
    const s = liveSeries([
      { type: "hello", command: "run" },
      sample(0, 5, 5),
      { type: "end", t: 1, ok: true, message: "old" },
      { type: "hello", command: "run --migrate-to", migrateTo: "127.0.0.1:1" },
      { type: "round", t: 10, round: 1, final: false, pages: 1000, bytes: 2 ** 21, ms: 1000 },
      { type: "round", t: 20, round: 2, final: true, pages: 10, bytes: 2 ** 20, ms: 0 },
      { type: "end", t: 30, ok: false, message: "receiver went away" },
    ]);
    expect(s.samples).toBe(0);
    expect(s.roundPages).toEqual([
      { x: 1, y: 1000 },
      { x: 2, y: 10 },
    ]);
    expect(s.roundMiBPerS).toEqual([
      { x: 1, y: 2 },
      { x: 2, y: 0 },
    ]);
    expect(s.ended).toEqual({ ok: false, message: "receiver went away" });
  });
});
