/**
 * Live migration between host processes over TCP.
 *
 * The connection carries Xen's migration stream from the source to the
 * receiver, then a short handshake in the other direction, as `xl migrate`
 * does around libxc's stream: once the stream's END has been processed and the
 * domain is fully restored (still paused), the receiver sends `READY\n`; the
 * source answers `GO\n` and gives up its copy; only then does the receiver
 * resume the guest. If the connection breaks before READY arrives, the source
 * cancels the suspend and its guest runs on, unchanged; if it breaks before GO
 * arrives, the receiver discards the domain and frees every frame. A source
 * that gives up after READY (xl's `failed_resume`) closes without GO and runs
 * its guest on: both rules together leave exactly one copy. A receiver that
 * rejects the stream says `ERROR <message>\n`.
 */

import net from "node:net";
import type { Kernel } from "../guest/kernel.js";
import { RwLock } from "../guest/mfnlock.js";
import { REC_PVMMU_GUEST_STATE } from "../guest/suspend.js";
import type { WorkloadRun } from "../guest/workloads.js";
import type { Host } from "../xen/host.js";
import { cancelSuspend, resumeRestored, saveGuest } from "./guest.js";
import { drain, Restorer } from "./restore.js";
import type { RoundStats, StreamSink } from "./save.js";
import { StreamReader } from "./stream.js";
import { warmRestorePath } from "./warm.js";

export interface Address {
  host: string;
  port: number;
}

/** `HOST:PORT` (port 0: any free port, for a listener). */
export function parseAddress(text: string): Address {
  const m = /^([^:\s]+):(\d{1,5})$/.exec(text.trim());
  if (!m || Number(m[2]) > 65535) throw new RangeError(`'${text}' is not HOST:PORT (e.g. 127.0.0.1:7200)`);
  return { host: m[1], port: Number(m[2]) };
}

/** A stream sink on a socket, with backpressure; fails once the connection is gone. */
export class SocketSink implements StreamSink {
  bytes = 0;
  private closed: Error | undefined;

  constructor(
    private readonly socket: net.Socket,
    /** Test hook: destroy the connection once this many bytes have been written. */
    private readonly cutAfter = Number.POSITIVE_INFINITY,
  ) {
    socket.on("close", () => {
      this.closed ??= new Error("connection to the receiver lost");
    });
    socket.on("error", (e) => {
      this.closed ??= new Error(`connection to the receiver failed: ${e.message}`);
    });
  }

  async write(chunks: Uint8Array[]): Promise<void> {
    if (this.closed) throw this.closed;
    let ok = true;
    for (const c of chunks) {
      if (this.bytes + c.length >= this.cutAfter) {
        const part = c.subarray(0, Math.max(0, this.cutAfter - this.bytes));
        if (part.length > 0) this.socket.write(part);
        this.bytes = this.cutAfter;
        this.socket.destroy();
        this.closed = new Error(`connection cut after ${this.cutAfter} bytes`);
        throw this.closed;
      }
      ok = this.socket.write(c);
      this.bytes += c.length;
    }
    if (!ok) await this.drained();
  }

  private drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(this.closed);
      const done = () => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        if (this.closed) reject(this.closed);
        else resolve();
      };
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
  }
}

/** The next line the peer sends (without its newline), or an error if the connection ends first. */
function readLine(socket: net.Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => finish(new Error("receiver did not answer in time")), timeoutMs);
    const onData = (d: Buffer) => {
      buf += d.toString("utf8");
      const i = buf.indexOf("\n");
      if (i >= 0) finish(undefined, buf.slice(0, i));
    };
    const onEnd = () => finish(new Error("connection to the receiver lost before it answered"));
    const finish = (err?: Error, line?: string) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onEnd);
      socket.off("error", onEnd);
      if (err) reject(err);
      else resolve(line!);
    };
    socket.on("data", onData);
    socket.on("close", onEnd);
    socket.on("error", onEnd);
  });
}

export interface MigrateOptions {
  /** Workload steps the guest runs between two batches of a live round. */
  stepsPerBatch?: number;
  onBatch?(): void | Promise<void>;
  onRound?(r: RoundStats): void;
  onBytes?(bytes: number): void;
  lock?: RwLock;
  /** Test hook: cut the connection after this many stream bytes. */
  cutAfter?: number;
  /**
   * Test hook: called once the receiver's READY has arrived, before GO. Returning true closes
   * the connection instead of answering GO — as xl's sender does when it cannot rename the
   * domain away (`failed_resume`: close, then resume at the sender) — and the guest runs on here.
   */
  cutBeforeGo?(): boolean;
  /** How long to wait for the receiver's READY (default 60 s). */
  answerTimeoutMs?: number;
}

export interface MigrateReport {
  rounds: RoundStats[];
  bytes: number;
  pages: number;
  /** From the guest's suspend to the receiver's READY: how long the guest ran nowhere. */
  downtimeMs: number;
  totalMs: number;
}

/**
 * Migrate the running guest to the receiver at `to`, live. On success the local domain is
 * destroyed (the guest now runs there); on failure the guest runs on here and the error is
 * rethrown.
 */
export async function migrateTo(
  h: Host,
  k: Kernel,
  run: WorkloadRun | null,
  to: Address,
  o: MigrateOptions = {},
): Promise<MigrateReport> {
  const t0 = performance.now();
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(to.port, to.host, () => resolve(s));
    s.once("error", (e) => reject(new Error(`cannot connect to ${to.host}:${to.port}: ${e.message}`)));
  });
  socket.setNoDelay(true);
  const sink = new SocketSink(socket, o.cutAfter);
  let suspendedAt = 0;
  const lock = o.lock ?? new RwLock();
  try {
    const r = await saveGuest(h, k, run, sink, {
      live: true,
      stepsPerBatch: o.stepsPerBatch,
      onBatch: o.onBatch,
      onRound: (rs) => {
        o.onRound?.(rs);
        o.onBytes?.(sink.bytes);
      },
      lock: {
        acquireWrite: async () => {
          await lock.acquireWrite();
          suspendedAt = performance.now();
        },
        releaseWrite: () => lock.releaseWrite(),
      },
    });
    let answer: string;
    try {
      answer = await readLine(socket, o.answerTimeoutMs ?? 60_000);
    } catch (e) {
      cancelSuspend(h, k, r.suspend);
      lock.releaseWrite();
      throw e;
    }
    if (answer !== "READY") {
      cancelSuspend(h, k, r.suspend);
      lock.releaseWrite();
      throw new Error(`the receiver refused the migration: ${answer.replace(/^ERROR /, "")}`);
    }
    if (o.cutBeforeGo?.()) {
      socket.destroy();
      cancelSuspend(h, k, r.suspend);
      lock.releaseWrite();
      throw new Error(
        "connection closed after READY, before GO: the migration is abandoned, the guest runs on here",
      );
    }
    const downtimeMs = performance.now() - suspendedAt;
    socket.end("GO\n");
    // The guest lives on the receiver now: this copy goes (the lock stays held: nothing runs here).
    h.destroyDomain(k.domid);
    return { rounds: r.rounds, bytes: r.bytes, pages: r.pages, downtimeMs, totalMs: performance.now() - t0 };
  } finally {
    if (!socket.destroyed && socket.writableEnded === false) socket.destroy();
  }
}

export interface Arrival {
  kernel: Kernel;
  run: WorkloadRun | null;
  host: Host;
  domid: number;
  bytes: number;
  /** From the first byte to the guest resumed. */
  ms: number;
}

export interface ReceiveOptions {
  /** A fresh host for each arriving guest. */
  makeHost(): Host;
  domid?: number;
  onBytes?(bytes: number): void;
  /** The stream was refused or the connection broke: the half-built domain is gone. */
  onFailure?(e: Error, host: Host): void;
}

/**
 * Receive one migration on `socket`: restore as the bytes arrive, then the READY/GO handshake,
 * then resume the guest. Resolves with the running guest, or rejects (nothing left on the host).
 */
export function receive(socket: net.Socket, o: ReceiveOptions): Promise<Arrival> {
  const h = o.makeHost();
  const domid = o.domid ?? 1;
  const t0 = performance.now();
  return new Promise<Arrival>((resolve, reject) => {
    const reader = new StreamReader();
    let rs: Restorer | undefined;
    let settled = false;
    let awaitingGo = false;
    let control = "";
    const fail = (e: Error, tell: boolean) => {
      if (settled) return;
      settled = true;
      rs?.abort();
      if (tell && !socket.destroyed) socket.end(`ERROR ${e.message.replace(/\n/g, " ")}\n`);
      else socket.destroy();
      o.onFailure?.(e, h);
      reject(e);
    };
    socket.on("data", (chunk: Buffer) => {
      if (settled) return;
      if (awaitingGo) {
        control += chunk.toString("utf8");
        if (!control.includes("\n")) return;
        if (control.split("\n")[0] !== "GO")
          return fail(new Error(`expected GO, got '${control.trim()}'`), false);
        settled = true;
        try {
          const { kernel, run } = resumeRestored(h, domid, rs!.collected);
          resolve({ kernel, run, host: h, domid, bytes: reader.offset, ms: performance.now() - t0 });
        } catch (e) {
          rs!.abort();
          reject(e as Error);
        }
        return;
      }
      try {
        rs ??= new Restorer(h, domid, { collect: [REC_PVMMU_GUEST_STATE] });
        reader.push(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
        drain(reader, rs);
        o.onBytes?.(reader.offset);
        if (rs.done) {
          awaitingGo = true;
          socket.write("READY\n");
        }
      } catch (e) {
        fail(e as Error, true);
      }
    });
    const gone = () => {
      if (settled) return;
      fail(
        new Error(
          awaitingGo
            ? "connection closed before GO: domain discarded"
            : `connection closed mid-stream after ${reader.offset} bytes: domain discarded`,
        ),
        false,
      );
    };
    socket.on("end", gone);
    socket.on("close", gone);
    socket.on("error", gone);
  });
}

/** Listen for migrations at `at`; `onArrival`/`onFailure` for each. Resolves once listening. */
export async function listen(
  at: Address,
  o: ReceiveOptions & {
    onArrival(a: Arrival): void | Promise<void>;
    once?: boolean;
    /** Restore a small throwaway guest first, so a real guest's downtime runs compiled code (default true; see warm.ts). */
    warm?: boolean;
  },
): Promise<net.Server> {
  if (o.warm !== false) await warmRestorePath();
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => {
      if (o.once) server.close();
      receive(socket, o).then(
        (a) => o.onArrival(a),
        () => {},
      );
    });
    server.once("error", reject);
    server.listen(at.port, at.host, () => resolve(server));
  });
}
