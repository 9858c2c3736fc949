/**
 * Live chart data from the events of a run (pure, unit-tested in Node): hypercalls per
 * second between samples, page-table frames over time, and per pre-copy round the dirty
 * pages sent and the bandwidth.
 */

import type { LiveEvent, LiveRound, LiveSample } from "./protocol.js";

export interface Point {
  x: number;
  y: number;
}

export interface LiveSeries {
  hypercallsPerS: Point[];
  tableFrames: Point[];
  /** Per round: x = round number. */
  roundPages: Point[];
  roundMiBPerS: Point[];
  samples: number;
  rounds: number;
  last?: LiveSample;
  ended?: { ok: boolean; message: string };
  title: string;
}

/** The series of one run: everything after its last hello. */
export function liveSeries(events: readonly LiveEvent[]): LiveSeries {
  let start = 0;
  events.forEach((e, i) => {
    if (e.type === "hello") start = i;
  });
  const run = events.slice(start);
  const hello = run[0]?.type === "hello" ? run[0] : undefined;
  const samples = run.filter((e): e is LiveSample => e.type === "sample");
  const rounds = run.filter((e): e is LiveRound => e.type === "round");
  const s: LiveSeries = {
    hypercallsPerS: [],
    tableFrames: samples.map((x) => ({ x: x.t / 1000, y: x.tableFrames })),
    roundPages: rounds.map((r) => ({ x: r.round, y: r.pages })),
    roundMiBPerS: rounds.map((r) => ({ x: r.round, y: r.ms > 0 ? r.bytes / 2 ** 20 / (r.ms / 1000) : 0 })),
    samples: samples.length,
    rounds: rounds.length,
    title: hello
      ? [
          hello.command,
          hello.strategy,
          hello.workload,
          hello.memoryBytes ? `${hello.memoryBytes / 2 ** 20} MiB` : "",
        ]
          .filter(Boolean)
          .join(" ")
      : "",
  };
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i].t - samples[i - 1].t) / 1000;
    if (dt <= 0) continue;
    s.hypercallsPerS.push({
      x: samples[i].t / 1000,
      y: (samples[i].hypercalls - samples[i - 1].hypercalls) / dt,
    });
  }
  if (samples.length) s.last = samples[samples.length - 1];
  const end = run.find((e) => e.type === "end");
  if (end && end.type === "end") s.ended = { ok: end.ok, message: end.message };
  return s;
}
