/** The explorer server's API (src/web/server.ts), typed by web/protocol.ts. */

import {
  decodeFrameMap,
  type FrameInfo,
  type FrameMap,
  type LiveEvent,
  type Meta,
  type StepView,
  type TableView,
  type WalkView,
} from "./protocol.js";

export class Api {
  constructor(readonly src: number) {}

  private url(path: string, params: Record<string, string | number> = {}): string {
    const q = new URLSearchParams({ src: String(this.src) });
    for (const [k, v] of Object.entries(params)) q.set(k, String(v));
    return `${path}?${q}`;
  }

  private async get<T>(
    path: string,
    params: Record<string, string | number> = {},
    method = "GET",
  ): Promise<T> {
    const res = await fetch(this.url(path, params), { method });
    const body = (await res.json()) as T & { error?: string };
    if (!res.ok) throw new Error(body.error ?? `${res.status}`);
    return body;
  }

  meta(): Promise<Meta> {
    return this.get("/api/meta");
  }

  async frames(): Promise<FrameMap> {
    const res = await fetch(this.url("/api/frames"));
    if (!res.ok) throw new Error(((await res.json()) as { error: string }).error);
    return decodeFrameMap(await res.arrayBuffer());
  }

  frame(mfn: number): Promise<FrameInfo> {
    return this.get("/api/frame", { mfn });
  }

  table(mfn: number, level: number, va: string, path: number[]): Promise<TableView> {
    return this.get("/api/table", { mfn, level, va, path: path.join(",") });
  }

  walk(root: number, levels: number, va: string): Promise<WalkView> {
    return this.get("/api/walk", { root, levels, va });
  }

  scenario(): Promise<StepView> {
    return this.get("/api/scenario");
  }

  goto(position: number): Promise<StepView> {
    return this.get("/api/scenario/goto", { position }, "POST");
  }

  live(onEvent: (e: LiveEvent) => void): EventSource {
    const es = new EventSource(this.url("/api/live"));
    es.onmessage = (m) => onEvent(JSON.parse(m.data) as LiveEvent);
    return es;
  }
}
