import { it } from "vitest";
import { bootOnHost } from "../../src/guest/run.js";
import { WorkloadRun } from "../../src/guest/workloads.js";
import { MemorySink, saveGuest } from "../../src/migration/guest.js";
import { restoreStream } from "../../src/migration/restore.js";
import { decodePageData, recordName, StreamReader } from "../../src/migration/stream.js";
import { Host } from "../../src/xen/host.js";

const MiB = 2 ** 20;
it("explore", async () => {
  const opts = {
    strategy: "direct-pfn",
    pinning: "linux",
    workload: "fork-exec-exit",
    memoryBytes: 64 * MiB,
    seed: 7,
    iterations: 4,
    mapped: 2 * MiB,
  } as const;
  const { h, kernel } = bootOnHost(opts);
  const run = new WorkloadRun(kernel, opts.workload, { seed: 7, iterations: 4, mapped: 2 * MiB });
  run.next();
  run.next();
  const sink = new MemorySink();
  let t = performance.now();
  await saveGuest(h, kernel, run, sink, { live: false });
  console.log("save ms", performance.now() - t, sink.bytes);
  const buf = sink.concat();
  const r = new StreamReader();
  r.push(buf);
  r.end?.call;
  const counts = new Map<string, number>();
  for (let it = r.next(); it; it = r.next()) {
    if (it.kind === "record") {
      const n = recordName(it.record.type);
      counts.set(n, (counts.get(n) ?? 0) + 1);
      let extra = "";
      if (it.record.type === 1) {
        const pd = decodePageData(it.record, 1e9);
        const ts = new Map<number, number>();
        for (const ty of pd.types) ts.set(ty, (ts.get(ty) ?? 0) + 1);
        extra = `count ${pd.count} types ${[...ts]}`;
      }
      if (it.record.type !== 1 || counts.get(n)! < 3)
        console.log(n, it.record.offset.toString(16), it.record.body.length, extra);
    } else console.log(it.kind);
  }
  console.log(counts);
  for (let i = 0; i < 3; i++) {
    const d = new Host({ memoryMiB: 160 });
    const f0 = d.freeFrames();
    t = performance.now();
    await restoreStream(d, 3, [buf.slice()]);
    console.log("restore ms", performance.now() - t, f0 - d.freeFrames(), d.audit().ok);
    t = performance.now();
    d.destroyDomain(3);
    console.log("destroy ms", performance.now() - t, f0 - d.freeFrames(), d.audit().ok);
  }
});
