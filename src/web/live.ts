/**
 * Live progress, as Server-Sent Events (text/event-stream; one JSON `LiveEvent` per `data:`
 * line, web/protocol.ts):
 *  - `LivePublisher`: what `pvmmu run … --publish HOST:PORT` serves at `GET /events` — a hello
 *    naming the run, samples (step, hypercalls so far, page-table frames) as the workload runs,
 *    one event per pre-copy round of a migration (pages, bytes, ms), and an end. A subscriber
 *    that comes late is sent everything so far first.
 *  - `LiveRelay`: what `pvmmu serve --attach HOST:PORT` keeps: a subscription to a publisher
 *    (retried every 200 ms until one answers, and again after a run ends, so a new run on
 *    the same address is picked up), relayed to the page at `GET /api/live`.
 */

import http from "node:http";
import type { AddressInfo } from "node:net";
import type { LiveEvent, LiveSample } from "../../web/protocol.js";
import type { Kernel } from "../guest/kernel.js";
import type { RunReport } from "../guest/report.js";
import { type RunOptions, runWorkloadStepped } from "../guest/run.js";
import type { WorkloadRun } from "../guest/workloads.js";

export interface HostPort {
  host: string;
  port: number;
}

/** `HOST:PORT` (or `PORT`, on 127.0.0.1); throws RangeError with the reason. */
export function parseHostPort(text: string, what: string): HostPort {
  const m = /^(?:(\[[0-9a-f:]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})$/i.exec(text.trim());
  if (!m) throw new RangeError(`${what}: '${text}' is not HOST:PORT`);
  const port = Number(m[2]);
  if (port > 65535) throw new RangeError(`${what}: port ${port} is above 65535`);
  return { host: (m[1] ?? "127.0.0.1").replace(/^\[|\]$/g, ""), port };
}

const SSE_HEADERS = {
  "content-type": "text/event-stream; charset=utf-8",
  "cache-control": "no-store",
  connection: "keep-alive",
};

export function sseLine(ev: LiveEvent): string {
  return `data: ${JSON.stringify(ev)}\n\n`;
}

/** Keeps the events of one run: every hello, round and end; samples thinned past `maxSamples`. */
export class LiveHistory {
  readonly events: LiveEvent[] = [];
  private samples = 0;
  constructor(readonly maxSamples = 4000) {}

  add(ev: LiveEvent): void {
    if (ev.type === "hello") {
      this.events.length = 0;
      this.samples = 0;
    }
    if (ev.type === "status") return;
    this.events.push(ev);
    if (ev.type !== "sample") return;
    if (++this.samples <= this.maxSamples) return;
    // Drop every other sample (the newest kept): the chart keeps its shape, the history its size.
    let keep = false;
    for (let i = 0; i < this.events.length - 1; i++) {
      if (this.events[i].type !== "sample") continue;
      keep = !keep;
      if (!keep) {
        this.events.splice(i, 1);
        i--;
        this.samples--;
      }
    }
  }
}

/** The publishing side: an HTTP server with one route, `GET /events`. */
export class LivePublisher {
  private readonly subscribers = new Set<http.ServerResponse>();
  readonly history = new LiveHistory();
  private constructor(
    private readonly server: http.Server,
    readonly address: HostPort,
  ) {}

  static start(at: HostPort): Promise<LivePublisher> {
    return new Promise((resolve, reject) => {
      let pub: LivePublisher | undefined;
      const server = http.createServer((req, res) => {
        if (req.method !== "GET" || (req.url ?? "").split("?")[0] !== "/events") {
          res
            .writeHead(404, { "content-type": "text/plain" })
            .end("not found: the events are at GET /events\n");
          return;
        }
        res.writeHead(200, SSE_HEADERS);
        res.flushHeaders(); // the subscriber knows it is attached before the first event
        for (const ev of pub!.history.events) res.write(sseLine(ev));
        pub!.subscribers.add(res);
        req.on("close", () => pub!.subscribers.delete(res));
      });
      server.once("error", (e: NodeJS.ErrnoException) =>
        reject(new RangeError(`--publish: cannot listen on ${at.host}:${at.port}: ${e.code ?? e.message}`)),
      );
      server.listen(at.port, at.host, () => {
        const a = server.address() as AddressInfo;
        pub = new LivePublisher(server, { host: at.host, port: a.port });
        resolve(pub);
      });
    });
  }

  get url(): string {
    const h = this.address.host.includes(":") ? `[${this.address.host}]` : this.address.host;
    return `http://${h}:${this.address.port}/events`;
  }

  publish(ev: LiveEvent): void {
    this.history.add(ev);
    const line = sseLine(ev);
    for (const s of this.subscribers) s.write(line);
  }

  /**
   * End every subscription and stop listening. With `graceMs`, a run nobody watched yet waits
   * that long for a first subscriber (who is sent the whole run) before it goes.
   */
  async close(graceMs = 0): Promise<void> {
    for (let waited = 0; this.subscribers.size === 0 && waited < graceMs; waited += 50) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const s of this.subscribers) s.end();
    this.subscribers.clear();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }
}

/** Turns a running guest into samples, at most one per `everyMs` of wall time (and always the last). */
export class LiveSampler {
  private readonly t0 = performance.now();
  private lastAt = Number.NEGATIVE_INFINITY;
  constructor(
    private readonly pub: LivePublisher,
    private readonly everyMs = 50,
  ) {}

  elapsed(): number {
    return Math.round((performance.now() - this.t0) * 10) / 10;
  }

  sample(k: Kernel, run: WorkloadRun | null, phase: LiveSample["phase"], force = false): void {
    const now = performance.now();
    if (!force && now - this.lastAt < this.everyMs) return;
    this.lastAt = now;
    let hypercalls = 0;
    for (const n of Object.values(k.hc.transitions)) hypercalls += n;
    this.pub.publish({
      type: "sample",
      t: this.elapsed(),
      phase,
      step: run?.step ?? 0,
      steps: run?.steps ?? 0,
      hypercalls,
      tableFrames: k.tableCount.reduce((a, b) => a + b, 0),
    });
  }
}

/** Let the event loop run (the publisher answers subscribers between workload steps). */
export function yieldToEvents(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Parse a Server-Sent Events stream into its `data:` payloads. */
export class SseParser {
  private buf = "";
  push(chunk: string, onData: (data: string) => void): void {
    this.buf += chunk;
    for (;;) {
      const end = this.buf.indexOf("\n\n");
      if (end < 0) return;
      const block = this.buf.slice(0, end);
      this.buf = this.buf.slice(end + 2);
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).trimStart())
        .join("\n");
      if (data) onData(data);
    }
  }
}

/** The attaching side (`serve --attach`): subscribes to a publisher and relays to the page. */
export class LiveRelay {
  readonly history = new LiveHistory();
  private readonly subscribers = new Set<http.ServerResponse>();
  private request: http.ClientRequest | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  connected = false;
  status = "waiting for the run to publish";

  constructor(
    readonly at: HostPort,
    private readonly retryMs = 200,
  ) {}

  get name(): string {
    return `${this.at.host}:${this.at.port}`;
  }

  start(): void {
    if (this.closed) return;
    const req = http.get({ host: this.at.host, port: this.at.port, path: "/events" }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        this.setStatus(false, `${this.name} answered ${res.statusCode}: not a pvmmu publisher`);
        this.retry();
        return;
      }
      this.setStatus(true, `attached to ${this.name}`);
      const parser = new SseParser();
      res.setEncoding("utf8");
      res.on("data", (chunk: string) =>
        parser.push(chunk, (data) => {
          let ev: LiveEvent;
          try {
            ev = JSON.parse(data) as LiveEvent;
          } catch {
            return;
          }
          this.history.add(ev);
          this.broadcast(ev);
        }),
      );
      res.on("end", () => {
        this.setStatus(false, "the run ended; waiting for another on the same address");
        this.retry();
      });
    });
    req.on("error", () => {
      if (this.connected) this.setStatus(false, "the run went away; waiting for another");
      this.retry();
    });
    this.request = req;
  }

  private retry(): void {
    if (this.closed) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.start(), this.retryMs);
  }

  private setStatus(connected: boolean, message: string): void {
    this.connected = connected;
    this.status = message;
    this.broadcast({ type: "status", connected, message });
  }

  private broadcast(ev: LiveEvent): void {
    const line = sseLine(ev);
    for (const s of this.subscribers) s.write(line);
  }

  /** A page subscribes: the status, everything so far, then each event as it comes. */
  subscribe(req: http.IncomingMessage, res: http.ServerResponse): void {
    res.writeHead(200, SSE_HEADERS);
    res.write(sseLine({ type: "status", connected: this.connected, message: this.status }));
    for (const ev of this.history.events) res.write(sseLine(ev));
    this.subscribers.add(res);
    req.on("close", () => this.subscribers.delete(res));
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.request?.destroy();
    for (const s of this.subscribers) s.end();
    this.subscribers.clear();
  }
}

/**
 * `pvmmu run --publish`: the run of `runWorkload`, step by step, publishing a hello, samples
 * (at most one per 50 ms, and after the boot and at the end) and an end.
 */
export async function publishedRun(o: RunOptions, pub: LivePublisher): Promise<RunReport> {
  pub.publish({
    type: "hello",
    command: "run",
    strategy: o.strategy,
    workload: o.workload,
    memoryBytes: o.memoryBytes,
  });
  const sampler = new LiveSampler(pub);
  let first = true;
  try {
    const report = await runWorkloadStepped(o, async (k, run) => {
      sampler.sample(k, run, first ? "boot" : run.done ? "done" : "run", first || run.done);
      first = false;
      await yieldToEvents();
    });
    pub.publish({
      type: "end",
      t: sampler.elapsed(),
      ok: report.audit.ok,
      message: report.audit.ok ? "finished; audit clean" : "finished; audit FAILED",
    });
    return report;
  } catch (e) {
    pub.publish({ type: "end", t: sampler.elapsed(), ok: false, message: (e as Error).message });
    throw e;
  }
}
