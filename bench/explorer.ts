/**
 * The explorer's benchmark:
 *  explorer_redraw_ms  one redraw of the frame map of a host of a million frames (4 GiB, a
 *                      1 GiB guest booted on it) in headless Chromium: paint every frame's
 *                      class into ImageData, put it on the canvas, mark the selection — the
 *                      median of 15, timed in the page until a read-back of the canvas returns
 *                      (`window.pvmmuExplorer.redraw()`). Target ≤ 100 ms.
 * Needs Debian's Chromium (/usr/bin/chromium) and the built page (dist/web); without either the
 * figure is skipped, with a line saying why.
 */

import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bootGuest } from "../src/guest/boot.js";
import { makeMapper } from "../src/guest/mappers/index.js";
import { CHROMIUM, chromiumLaunchOptions } from "../src/web/chromium.js";
import { defaultStaticDir, startServer } from "../src/web/server.js";
import { HostSource } from "../src/web/sources.js";
import { Host } from "../src/xen/host.js";

export type ExplorerBench = { redrawMs: number; frames: number } | { skipped: string };

export async function benchExplorer(): Promise<ExplorerBench> {
  if (!existsSync(CHROMIUM)) return { skipped: `no ${CHROMIUM} (apt-get install chromium)` };
  if (!existsSync(join(defaultStaticDir(), "index.html")))
    return { skipped: "the page is not built (npm run build)" };
  // playwright-core is a devDependency: load it only when the benchmark runs.
  const { chromium } = await import("playwright-core");
  const h = new Host({ memoryMiB: 4096 });
  h.createDomain({ domid: 1, pages: 2 ** 18 });
  bootGuest(h, 1, { mapper: makeMapper("direct-pfn"), pinning: "linux", method: "top-down" });
  const server = await startServer({ sources: [new HostSource("image", "bench", () => h)], port: 0 });
  const profile = mkdtempSync(join(tmpdir(), "pvmmu-bench-chromium-"));
  try {
    const ctx = await chromium.launchPersistentContext(
      profile,
      chromiumLaunchOptions({ width: 1400, height: 1200 }),
    );
    try {
      const page = ctx.pages()[0] ?? (await ctx.newPage());
      await page.goto(server.url);
      await page.waitForSelector('body[data-ready="1"]', { timeout: 60_000 });
      // Sixteen redraws timed in the page, each until the canvas has the pixels (a one-pixel
      // read-back waits for the put to complete); the first warms up.
      const times = (await page.evaluate(`(() => {
        const g = document.getElementById("map-canvas").getContext("2d");
        const out = [];
        for (let i = 0; i < 16; i++) {
          const t0 = performance.now();
          window.pvmmuExplorer.redraw();
          g.getImageData(0, 0, 1, 1);
          out.push(performance.now() - t0);
        }
        return out.slice(1);
      })()`)) as number[];
      times.sort((a, b) => a - b);
      return { redrawMs: times[Math.floor(times.length / 2)], frames: h.frames.frames };
    } finally {
      await ctx.close();
    }
  } finally {
    await server.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
