/**
 * Live progress (src/web/live.ts): the publisher's events and history, the relay that
 * `serve --attach` keeps, and `pvmmu run --publish` (plain and migrating) end to end over
 * HTTP in-process — publishing changes nothing in what the run does or prints.
 */

import http from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { runWorkload } from "../../src/guest/run.js";
import { listen } from "../../src/migration/tcp.js";
import {
  LiveHistory,
  LivePublisher,
  LiveRelay,
  parseHostPort,
  publishedRun,
  SseParser,
} from "../../src/web/live.js";
import { Host } from "../../src/xen/host.js";
import type { LiveEvent } from "../../web/protocol.js";
import { cli } from "./helpers.js";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** Subscribe to `url` and collect events until an end (or `until` says stop). */
function collect(url: string, until: (e: LiveEvent[]) => boolean = (e) => e.some((x) => x.type === "end")) {
  const events: LiveEvent[] = [];
  return {
    events,
    done: new Promise<LiveEvent[]>((resolve, reject) => {
      const req = http.get(url, (res) => {
        const p = new SseParser();
        res.setEncoding("utf8");
        res.on("data", (c: string) =>
          p.push(c, (d) => {
            events.push(JSON.parse(d) as LiveEvent);
            if (until(events)) {
              req.destroy();
              resolve(events);
            }
          }),
        );
        res.on("end", () => resolve(events));
      });
      req.on("error", reject);
      cleanups.push(() => req.destroy());
    }),
  };
}

async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

const opts = {
  strategy: "shadow" as const,
  pinning: "linux" as const,
  workload: "mmap-churn" as const,
  memoryBytes: 64 * 2 ** 20,
  seed: 5,
  iterations: 30,
  visitSpaces: 0,
};

/** A report without its timings. */
function untimed(r: ReturnType<typeof runWorkload>): unknown {
  const { wallMs: _w, ops, suspendVisit, ...rest } = r;
  const visit = suspendVisit ? { ...suspendVisit, ms: 0, clearMs: 0 } : undefined;
  return {
    ...rest,
    suspendVisit: visit,
    ops: Object.fromEntries(Object.entries(ops).map(([k, v]) => [k, (v as { count: number }).count])),
  };
}

describe("live history", () => {
  it("keeps hellos, rounds and ends, thins samples past its limit, and restarts on a hello", () => {
    const h = new LiveHistory(10);
    h.add({ type: "hello", command: "run" });
    for (let i = 0; i < 25; i++) {
      h.add({ type: "sample", t: i, phase: "run", step: i, steps: 25, hypercalls: i, tableFrames: 1 });
      if (i === 12) h.add({ type: "round", t: i, round: 1, final: false, pages: 5, bytes: 5, ms: 1 });
    }
    h.add({ type: "status", connected: true, message: "x" });
    const samples = h.events.filter((e) => e.type === "sample");
    expect(samples.length).toBeLessThanOrEqual(10);
    expect(samples.length).toBeGreaterThan(4);
    expect(samples.at(-1)).toMatchObject({ step: 24 });
    expect(h.events.filter((e) => e.type === "round")).toHaveLength(1);
    expect(h.events[0].type).toBe("hello");
    expect(h.events.some((e) => e.type === "status")).toBe(false);
    h.add({ type: "hello", command: "again" });
    expect(h.events).toEqual([{ type: "hello", command: "again" }]);
  });

  it("parses HOST:PORT", () => {
    expect(parseHostPort("127.0.0.1:80", "x")).toEqual({ host: "127.0.0.1", port: 80 });
    expect(parseHostPort("9000", "x")).toEqual({ host: "127.0.0.1", port: 9000 });
    expect(parseHostPort("[::1]:0", "x")).toEqual({ host: "::1", port: 0 });
    expect(() => parseHostPort("a:b", "--attach")).toThrow(/--attach: 'a:b' is not HOST:PORT/);
    expect(() => parseHostPort("h:70000", "x")).toThrow(/above 65535/);
  });
});

describe("publishing a run", () => {
  it("publishes hello, samples as the workload steps, and an end; the report is runWorkload's", async () => {
    const pub = await LivePublisher.start({ host: "127.0.0.1", port: 0 });
    cleanups.push(() => pub.close());
    const sub = collect(pub.url);
    await new Promise((r) => setTimeout(r, 50));
    const report = await publishedRun(opts, pub);
    const events = await sub.done;
    expect(untimed(report)).toEqual(untimed(runWorkload(opts)));
    expect(events[0]).toMatchObject({ type: "hello", strategy: "shadow", workload: "mmap-churn" });
    const samples = events.filter((e) => e.type === "sample");
    expect(samples.length).toBeGreaterThanOrEqual(2);
    const last = samples.at(-1)!;
    expect(last).toMatchObject({ phase: "done", step: 32, steps: 32 });
    const total = Object.values(report.hypercalls).reduce((a, b) => a + b, 0);
    expect(last.type === "sample" && last.hypercalls).toBeLessThanOrEqual(total);
    expect(last.type === "sample" && last.tableFrames).toBe(report.tablePages.total);
    expect(events.at(-1)).toMatchObject({ type: "end", ok: true });
    // A subscriber that comes after the end still gets the whole run.
    const late = collect(pub.url);
    expect((await late.done).map((e) => e.type)).toEqual(events.map((e) => e.type));
  });

  it("relays a publisher to the page, retrying until one answers", async () => {
    const port = await freePort();
    const relay = new LiveRelay({ host: "127.0.0.1", port }, 50);
    cleanups.push(() => relay.close());
    relay.start();
    await new Promise((r) => setTimeout(r, 120));
    expect(relay.connected).toBe(false);
    const pub = await LivePublisher.start({ host: "127.0.0.1", port });
    cleanups.push(() => pub.close());
    pub.publish({ type: "hello", command: "run" });
    for (let i = 0; i < 100 && !relay.connected; i++) await new Promise((r) => setTimeout(r, 20));
    expect(relay.connected).toBe(true);
    pub.publish({ type: "sample", t: 1, phase: "run", step: 1, steps: 2, hypercalls: 10, tableFrames: 3 });
    pub.publish({ type: "end", t: 2, ok: true, message: "done" });
    for (let i = 0; i < 100 && relay.history.events.length < 3; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(relay.history.events.map((e) => e.type)).toEqual(["hello", "sample", "end"]);
    // The page's subscription: the status first, then the history.
    const page = http.createServer((req, res) => relay.subscribe(req, res));
    await new Promise<void>((r) => page.listen(0, "127.0.0.1", r));
    cleanups.push(() => new Promise<void>((r) => page.close(() => r())));
    const sub = collect(`http://127.0.0.1:${(page.address() as AddressInfo).port}/`, (e) => e.length >= 4);
    const got = await sub.done;
    expect(got[0]).toMatchObject({ type: "status", connected: true });
    expect(got.slice(1).map((e) => e.type)).toEqual(["hello", "sample", "end"]);
    page.closeAllConnections();
  });
});

describe("pvmmu run --publish", () => {
  const guest = [
    "--strategy",
    "shadow",
    "--workload",
    "mmap-churn",
    "--memory",
    "64M",
    "--iterations",
    "30",
    "--seed",
    "5",
  ];

  it("prints the same report as without it while a subscriber watches", async () => {
    const port = await freePort();
    const relay = new LiveRelay({ host: "127.0.0.1", port }, 20);
    cleanups.push(() => relay.close());
    relay.start();
    const published = await cli(["run", ...guest, "--json", "--publish", `127.0.0.1:${port}`]);
    const plain = await cli(["run", ...guest, "--json"]);
    expect(published.code).toBe(0);
    const a = JSON.parse(published.out);
    const b = JSON.parse(plain.out);
    expect(untimed(a)).toEqual(untimed(b));
    for (let i = 0; i < 100 && !relay.history.events.some((e) => e.type === "end"); i++) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(relay.history.events.at(-1)).toMatchObject({ type: "end", ok: true });
  });

  it("publishes each pre-copy round of a live migration", async () => {
    const port = await freePort();
    let arrived = false;
    const receiver = await listen(
      { host: "127.0.0.1", port: 0 },
      {
        makeHost: () => new Host({ memoryMiB: 256 }),
        once: true,
        onArrival: () => {
          arrived = true;
        },
      },
    );
    cleanups.push(() => receiver.close());
    const relay = new LiveRelay({ host: "127.0.0.1", port }, 20);
    cleanups.push(() => relay.close());
    relay.start();
    const to = `127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    const r = await cli([
      "run",
      ...guest,
      "--after",
      "3",
      "--migrate-to",
      to,
      "--json",
      "--publish",
      `127.0.0.1:${port}`,
    ]);
    expect(r.code).toBe(0);
    const rounds = JSON.parse(r.out).rounds as { pages: number }[];
    for (let i = 0; i < 100 && !relay.history.events.some((e) => e.type === "end"); i++) {
      await new Promise((res) => setTimeout(res, 20));
    }
    const ev = relay.history.events;
    expect(ev[0]).toMatchObject({ type: "hello", command: "run --migrate-to", migrateTo: to });
    expect(ev.filter((e) => e.type === "round").map((e) => (e.type === "round" ? e.pages : 0))).toEqual(
      rounds.map((x) => x.pages),
    );
    expect(ev.at(-1)).toMatchObject({ type: "end", ok: true });
    for (let i = 0; i < 100 && !arrived; i++) await new Promise((res) => setTimeout(res, 20));
    expect(arrived).toBe(true);
  });

  it("refuses a bad address before running anything", async () => {
    const r = await cli(["run", ...guest, "--publish", "here"]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--publish: 'here' is not HOST:PORT/);
    expect(r.out).toBe("");
  });
});
