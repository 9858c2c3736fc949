/**
 * The explorer's server (src/web/server.ts) over HTTP, in-process, for each kind of input:
 * routes, the binary frame map, stepping, and every malformed request answered 400 with a
 * reason and no change. And `pvmmu serve`'s bad input: one line, exit code 2.
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSources } from "../../src/cli/serve.js";
import { type ExplorerServer, startServer } from "../../src/web/server.js";
import type { HostSource, Source } from "../../src/web/sources.js";
import {
  decodeFrameMap,
  FRAME_CLASSES,
  type FrameInfo,
  type Meta,
  type StepView,
  type TableView,
} from "../../web/protocol.js";
import { cli, savedImage, syntheticDump } from "./helpers.js";

const dir = mkdtempSync(join(tmpdir(), "pvmmu-serve-"));
const staticDir = join(dir, "static");
const SCENARIO = join(__dirname, "..", "..", "scenarios", "xen", "20-linear-one-hop.jsonl");
let server: ExplorerServer;
let sources: Source[];
let dump: { path: string; cr3: number };

beforeAll(async () => {
  mkdirSync(staticDir);
  writeFileSync(join(staticDir, "index.html"), "<!doctype html><title>t</title>");
  writeFileSync(join(dir, "secret.txt"), "no");
  dump = syntheticDump(dir);
  const image = await savedImage(dir);
  sources = await openSources([SCENARIO, image], {
    port: "0",
    host: "127.0.0.1",
    image: dump.path,
    cr3: `0x${dump.cr3.toString(16)}`,
    format: "auto",
  });
  server = await startServer({ sources, port: 0, staticDir });
});
afterAll(async () => {
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function get<T>(path: string, method = "GET"): Promise<{ status: number; body: T }> {
  const res = await fetch(new URL(path, server.url), { method });
  const type = res.headers.get("content-type") ?? "";
  const body = type.startsWith("application/json") ? await res.json() : await res.text();
  return { status: res.status, body: body as T };
}

describe("explorer API", () => {
  it("serves the page and nothing outside its folder", async () => {
    expect((await get<string>("/")).body).toContain("<title>t</title>");
    expect((await get("/../secret.txt")).status).toBe(404);
    expect((await get("/%2e%2e/secret.txt")).status).toBe(404);
    expect((await get("/nothing.js")).status).toBe(404);
  });

  it("describes each source: a scenario, a restored image, a dump", async () => {
    const m0 = (await get<Meta>("/api/meta?src=0")).body;
    expect(m0.sources.map((s) => s.kind)).toEqual(["scenario", "image", "dump"]);
    expect(m0.frames).toBe(16384);
    expect(m0.hasFrameTable).toBe(true);
    const m1 = (await get<Meta>("/api/meta?src=1")).body;
    expect(m1.roots.some((r) => r.mode === "kernel" && r.domid === 1)).toBe(true);
    expect(m1.domains[0].pages).toBe(16384);
    const m2 = (await get<Meta>("/api/meta?src=2")).body;
    expect(m2.hasFrameTable).toBe(false);
    expect(m2.roots).toEqual([{ label: `CR3 0x${dump.cr3.toString(16)}`, mfn: dump.cr3 / 4096, levels: 4 }]);
  });

  it("sends the frame map as binary: the host's classes and owners", async () => {
    const res = await fetch(new URL("/api/frames?src=1", server.url));
    expect(res.headers.get("content-type")).toBe("application/octet-stream");
    const map = decodeFrameMap(await res.arrayBuffer());
    const h = (sources[1] as HostSource).host;
    expect(map.frames).toBe(h.frames.frames);
    const root = h.domain(1)!.vcpus[0].guestTable;
    expect(FRAME_CLASSES[map.classes[root]]).toBe("l4");
    expect(map.owners[root]).toBe(2);
    const l1s = map.classes.filter((c) => FRAME_CLASSES[c] === "l1").length;
    let want = 0;
    for (let m = 0; m < h.frames.frames; m++) if (h.frames.type[m] === 1 && h.frames.owner[m] !== 0) want++;
    expect(l1s).toBe(want);
  });

  it("inspects a frame with its references, which explain its counts", async () => {
    const h = (sources[1] as HostSource).host;
    const root = h.domain(1)!.vcpus[0].guestTable;
    const f = (await get<FrameInfo>(`/api/frame?src=1&mfn=0x${root.toString(16)}`)).body;
    expect(f.count).toBe(h.frames.count[root]);
    expect(f.typeCount).toBe(h.frames.typeCount[root]);
    expect(f.explained).toBe(true);
    expect(f.refs.map((r) => r.kind)).toEqual(expect.arrayContaining(["allocation", "baseptr", "self-map"]));
  });

  it("builds the tree table by table and walks addresses, for hosts and dumps", async () => {
    const t = (await get<TableView>(`/api/table?src=2&mfn=${dump.cr3 / 4096}&level=4`)).body;
    expect(t.entries.length).toBeGreaterThan(3);
    const e = t.entries.find((x) => x.va === "ffff888000000000")!;
    const child = (
      await get<TableView>(`/api/table?src=2&mfn=${e.target}&level=3&va=0x${e.va}&path=${t.mfn}`)
    ).body;
    expect(child.entries[0].va).toBe("ffff888000000000");
    const w = (await get<{ ok: boolean; pa: string }>(`/api/walk?src=2&root=${t.mfn}&va=0xffff888000123456`))
      .body;
    expect(w.ok).toBe(true);
    expect(w.pa).toBe("0000000000123456");
  });

  it("steps the scenario forward and back", async () => {
    const v = (await get<StepView>("/api/scenario/goto?src=0&position=9", "POST")).body;
    expect(v.position).toBe(9);
    expect(v.diff).toBeDefined();
    expect((await get<StepView>("/api/scenario?src=0")).body.position).toBe(9);
    expect((await get<StepView>("/api/scenario/goto?src=0&position=2", "POST")).body.position).toBe(2);
  });

  it("answers every malformed request with 400 and a reason, and changes nothing", async () => {
    const before = (await get<StepView>("/api/scenario?src=0")).body.position;
    const bad: [string, RegExp, string?][] = [
      ["/api/meta?src=7", /no source 7/],
      ["/api/meta?src=-1", /src must be a whole number/],
      ["/api/frame?src=0", /missing mfn/],
      ["/api/frame?src=0&mfn=zz", /mfn must be a whole number/],
      ["/api/frame?src=0&mfn=99999999", /outside/],
      ["/api/table?src=0&mfn=1&level=9", /level must be 1 to 4/],
      ["/api/table?src=0&mfn=1&level=4&va=0xzz", /not a hexadecimal/],
      ["/api/table?src=0&mfn=1&level=4&path=a", /path must list frame numbers/],
      ["/api/walk?src=2&root=1&va=0x1&levels=3", /levels must be 4 or 5/],
      ["/api/walk?src=2&root=1&va=0x1&access=jump", /access must be/],
      ["/api/scenario?src=1", /not a scenario/],
      ["/api/scenario/goto?src=0&position=1000", /position must be/, "POST"],
      ["/api/scenario/goto?src=0", /missing position/, "POST"],
      ["/api/live?src=0", /not live/],
      ["/api/frames?src=9", /no source/],
    ];
    for (const [path, why, method] of bad) {
      const r = await get<{ error: string }>(path, method);
      expect(r.status, path).toBe(400);
      expect(r.body.error, path).toMatch(why);
    }
    expect((await get("/api/nothing")).status).toBe(404);
    expect((await get("/api/scenario/goto?src=0&position=1")).status).toBe(404); // GET is not a move
    expect((await get<StepView>("/api/scenario?src=0")).body.position).toBe(before);
  });
});

describe("pvmmu serve: bad input", () => {
  it("one line on stderr, exit code 2, nothing served", async () => {
    const cases: [string[], RegExp][] = [
      [["serve"], /nothing to open/],
      [["serve", join(dir, "missing.jsonl")], /cannot read .*ENOENT/],
      [["serve", join(dir, "secret.txt")], /neither a scenario .* nor a saved image/],
      [["serve", "--image", dump.path], /--image and --cr3 go together/],
      [["serve", "--image", dump.path, "--cr3", "0x1001"], /not 4 KiB aligned/],
      [["serve", "--image", dump.path, "--cr3", "0x100000000000"], /outside the image/],
      [["serve", "--image", dump.path, "--cr3", "xyz"], /CR3/],
      [["serve", "--attach", "nowhere"], /--attach: 'nowhere' is not HOST:PORT/],
      [["serve", "--port", "70000", SCENARIO], /--port/],
      [["serve", "--la57", SCENARIO], /--la57 needs --image/],
    ];
    const badScenario = join(dir, "bad.jsonl");
    writeFileSync(badScenario, '{"op":"domain","domid":1}\n{"op":"frobnicate"}\n');
    cases.push([["serve", badScenario], /bad\.jsonl: line 2/]);
    const badImage = join(dir, "bad.img");
    writeFileSync(badImage, Buffer.concat([Buffer.alloc(8, 0xff), Buffer.from("XENF"), Buffer.alloc(40)]));
    cases.push([["serve", badImage], /bad\.img: /]);
    for (const [args, why] of cases) {
      const r = await cli(args);
      expect(r.code, args.join(" ")).toBe(2);
      expect(r.out, args.join(" ")).toBe("");
      expect(r.err.trim().split("\n"), args.join(" ")).toHaveLength(1);
      expect(r.err, args.join(" ")).toMatch(why);
    }
  });
});
