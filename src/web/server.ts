/**
 * The explorer's HTTP server (`pvmmu serve`): the page and its scripts, styles and images as
 * static files from the build (dist/web: nothing is fetched from elsewhere), and the API the
 * page calls — JSON, except the frame map (binary) and the live events (Server-Sent Events).
 * Every route takes `src=N` (default 0): which of the opened sources it is about.
 *
 *   GET  /api/meta                        what is open: sources, domains, roots, frame count
 *   GET  /api/frames                      the binary frame map (web/protocol.ts)
 *   GET  /api/frame?mfn=N                 the frame inspector
 *   GET  /api/table?mfn=N&level=L&va=VA&path=M,M…   one table of the tree
 *   GET  /api/walk?root=N&va=VA[&levels=4|5&access=read|write|fetch&user=1]
 *   GET  /api/scenario                    the stepper's view (scenario sources)
 *   POST /api/scenario/goto?position=N    move the stepper
 *   GET  /api/live                        live events (live sources)
 *
 * A malformed request gets 400 and `{"error": "…"}` and changes nothing; an unknown route 404.
 */

import { existsSync, readFileSync, statSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { Meta } from "../../web/protocol.js";
import { AddressSyntaxError, parseAddress } from "../x86/address.js";
import { type Source, summary } from "./sources.js";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".map": "application/json",
  ".json": "application/json",
};

/** dist/web of this package, whether running from dist/src/web or from src/web (tests). */
export function defaultStaticDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, "package.json"))) return join(dir, "dist", "web");
    dir = dirname(dir);
  }
  throw new Error("cannot find the pvmmu package root (for dist/web)");
}

/** A request the API refuses: 400 with the reason. */
class BadRequest extends Error {}

function intParam(q: URLSearchParams, name: string, def?: number): number {
  const v = q.get(name);
  if (v === null || v === "") {
    if (def !== undefined) return def;
    throw new BadRequest(`missing ${name}`);
  }
  if (!/^(\d+|0x[0-9a-f]+)$/i.test(v))
    throw new BadRequest(`${name} must be a whole number (decimal or 0x hex), got '${v}'`);
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new BadRequest(`${name} ${v} is too large`);
  return n;
}

function vaParam(q: URLSearchParams, name: string, def?: bigint): bigint {
  const v = q.get(name);
  if (v === null || v === "") {
    if (def !== undefined) return def;
    throw new BadRequest(`missing ${name}`);
  }
  try {
    return parseAddress(v, name);
  } catch (e) {
    if (e instanceof AddressSyntaxError) throw new BadRequest(e.message);
    throw e;
  }
}

function json(res: http.ServerResponse, status: number, body: unknown): http.ServerResponse {
  const text = JSON.stringify(body, (_, v) =>
    typeof v === "bigint" ? `0x${BigInt.asUintN(64, v).toString(16)}` : v,
  );
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  return res.end(text);
}

export interface ExplorerServer {
  url: string;
  port: number;
  close(): Promise<void>;
}

export interface ServeOptions {
  sources: Source[];
  host?: string;
  port?: number;
  staticDir?: string;
}

export async function startServer(o: ServeOptions): Promise<ExplorerServer> {
  const staticDir = resolve(o.staticDir ?? defaultStaticDir());
  if (!existsSync(join(staticDir, "index.html"))) {
    throw new RangeError(
      `the explorer's page is not built (no ${join(staticDir, "index.html")}): run npm run build`,
    );
  }
  const sources = o.sources;
  if (sources.length === 0) throw new RangeError("nothing to serve");

  const source = (q: URLSearchParams): Source => {
    const i = intParam(q, "src", 0);
    const s = sources[i];
    if (!s) throw new BadRequest(`no source ${i} (there are ${sources.length})`);
    return s;
  };

  const api = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    path: string,
    q: URLSearchParams,
  ): http.ServerResponse | undefined => {
    const method = req.method ?? "GET";
    const route = `${method} ${path}`;
    switch (route) {
      case "GET /api/meta": {
        const s = source(q);
        const meta: Meta = {
          sources: sources.map(summary),
          source: summary(s, sources.indexOf(s)),
          ...s.meta(),
        };
        return json(res, 200, meta);
      }
      case "GET /api/frames": {
        const map = source(q).frameMap();
        if (!map) throw new BadRequest("this source has no frames");
        res.writeHead(200, { "content-type": "application/octet-stream", "cache-control": "no-store" });
        res.end(map);
        return;
      }
      case "GET /api/frame":
        return json(res, 200, source(q).frameInfo(intParam(q, "mfn")));
      case "GET /api/table": {
        const s = source(q);
        const path = (q.get("path") ?? "")
          .split(",")
          .filter((x) => x !== "")
          .map((x) => {
            if (!/^\d+$/.test(x)) throw new BadRequest(`path must list frame numbers, got '${x}'`);
            return Number(x);
          });
        return json(res, 200, s.table(intParam(q, "mfn"), intParam(q, "level"), vaParam(q, "va", 0n), path));
      }
      case "GET /api/walk": {
        const s = source(q);
        const levels = intParam(q, "levels", 4);
        if (levels !== 4 && levels !== 5) throw new BadRequest(`levels must be 4 or 5, got ${levels}`);
        const access = q.get("access") ?? "read";
        if (access !== "read" && access !== "write" && access !== "fetch") {
          throw new BadRequest(`access must be read, write or fetch, got '${access}'`);
        }
        return json(
          res,
          200,
          s.walk(intParam(q, "root"), levels, vaParam(q, "va"), {
            kind: access,
            user: q.get("user") === "1",
          }),
        );
      }
      case "GET /api/scenario": {
        const s = source(q);
        if (!s.scenario) throw new BadRequest("this source is not a scenario");
        return json(res, 200, s.scenario.view());
      }
      case "POST /api/scenario/goto": {
        const s = source(q);
        if (!s.scenario) throw new BadRequest("this source is not a scenario");
        return json(res, 200, s.scenario.goto(intParam(q, "position")));
      }
      case "GET /api/live": {
        const s = source(q);
        if (!s.live) throw new BadRequest("this source is not live");
        s.live.subscribe(req, res);
        return;
      }
      default:
        return json(res, 404, { error: `no route ${route}` });
    }
  };

  const serveStatic = (res: http.ServerResponse, path: string): void => {
    const rel = path === "/" ? "index.html" : decodeURIComponent(path.slice(1));
    const file = normalize(join(staticDir, rel));
    const type = TYPES[extname(file)];
    if (!file.startsWith(staticDir + sep) || !type || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" }).end(`not found: ${path}\n`);
      return;
    }
    res.writeHead(200, { "content-type": type, "cache-control": "no-cache" });
    res.end(readFileSync(file));
  };

  const server = http.createServer((req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://localhost");
    } catch {
      return json(res, 400, { error: "malformed URL" });
    }
    try {
      if (url.pathname.startsWith("/api/")) api(req, res, url.pathname, url.searchParams);
      else if (req.method === "GET") serveStatic(res, url.pathname);
      else json(res, 405, { error: `${req.method} is not allowed here` });
    } catch (e) {
      if (e instanceof BadRequest || e instanceof RangeError || e instanceof AddressSyntaxError) {
        return json(res, 400, { error: e.message });
      }
      json(res, 500, { error: String((e as Error).message ?? e) });
    }
  });

  return await new Promise((resolvePromise, reject) => {
    server.once("error", (e: NodeJS.ErrnoException) =>
      reject(
        new RangeError(`cannot listen on ${o.host ?? "127.0.0.1"}:${o.port ?? 0}: ${e.code ?? e.message}`),
      ),
    );
    server.listen(o.port ?? 0, o.host ?? "127.0.0.1", () => {
      const a = server.address() as AddressInfo;
      const host = a.family === "IPv6" ? `[${a.address}]` : a.address;
      resolvePromise({
        url: `http://${host}:${a.port}/`,
        port: a.port,
        close: () =>
          new Promise<void>((done) => {
            for (const s of sources) s.close();
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
