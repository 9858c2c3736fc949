/**
 * The explorer in a real browser: Debian's Chromium driven by playwright-core (headless, a
 * fresh profile, no network), against `pvmmu serve`'s server in-process with each kind of
 * input. Each test saves a screenshot to artifacts/screenshots/. The page is built first
 * (tsc -p tsconfig.web.json into dist/web), as `npm run build` does.
 *
 * Without /usr/bin/chromium the suite is skipped with a note — except under CI, where
 * `.ci/run` installs it and its absence is a failure.
 */

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSources } from "../../src/cli/serve.js";
import { MemoryImage } from "../../src/dump/image.js";
import { walkView } from "../../src/dump/views.js";
import { ScenarioStepper } from "../../src/scenario/run.js";
import { CHROMIUM, chromiumLaunchOptions } from "../../src/web/chromium.js";
import { LivePublisher, publishedRun } from "../../src/web/live.js";
import { type ExplorerServer, startServer } from "../../src/web/server.js";
import type { HostSource, Source } from "../../src/web/sources.js";
import { outgoingLinear, referencesTo, referenceTotals } from "../../src/xen/refs.js";
import { savedImage, syntheticDump } from "./helpers.js";

const ROOT = join(__dirname, "..", "..");
const SHOTS = join(ROOT, "artifacts", "screenshots");
const SCENARIO = join(ROOT, "scenarios", "xen", "20-linear-one-hop.jsonl");
const have = existsSync(CHROMIUM);
if (!have && process.env.CI)
  throw new Error(`${CHROMIUM} is missing: .ci/run installs it (apt-get install chromium)`);
if (!have) console.warn(`explorer e2e tests skipped: no ${CHROMIUM} (apt-get install chromium)`);

describe.skipIf(!have)("explorer in Chromium", () => {
  const dir = mkdtempSync(join(tmpdir(), "pvmmu-e2e-"));
  let ctx: BrowserContext;
  let page: Page;
  let server: ExplorerServer;
  let sources: Source[];
  let dump: { path: string; cr3: number };
  let livePort = 0;
  let failing: string;

  beforeAll(async () => {
    // Build the page as `npm run build` does.
    execFileSync(
      process.execPath,
      [join(ROOT, "node_modules", "typescript", "bin", "tsc"), "-p", join(ROOT, "tsconfig.web.json")],
      {
        cwd: ROOT,
        stdio: "inherit",
      },
    );
    execFileSync(process.execPath, [join(ROOT, "web", "copy-static.mjs")], { stdio: "inherit" });
    mkdirSync(SHOTS, { recursive: true });
    dump = syntheticDump(dir);
    const image = await savedImage(dir);
    // A fuzz finding's shape: a short scenario whose expectation fails at one line.
    failing = join(dir, "finding.jsonl");
    const lines = readFileSync(SCENARIO, "utf8").split("\n");
    const at = lines.findIndex((l) => l.includes('"linear_pt_count":-1'));
    lines[at] = lines[at].replace('"linear_pt_count":-1', '"linear_pt_count":-2');
    writeFileSync(failing, lines.join("\n"));
    const probe = http.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    livePort = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    sources = await openSources([SCENARIO, image, failing], {
      port: "0",
      host: "127.0.0.1",
      image: dump.path,
      cr3: `0x${dump.cr3.toString(16)}`,
      format: "auto",
      attach: `127.0.0.1:${livePort}`,
    });
    server = await startServer({ sources, port: 0 });
    ctx = await chromium.launchPersistentContext(
      mkdtempSync(join(dir, "profile-")),
      chromiumLaunchOptions({ width: 1500, height: 1100 }),
    );
    page = ctx.pages()[0] ?? (await ctx.newPage());
    page.setDefaultTimeout(15_000);
    page.on("pageerror", (e) => {
      throw e;
    });
  }, 60_000);

  afterAll(async () => {
    await ctx?.close();
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const open = async (src: number) => {
    await page.goto(`${server.url}?src=${src}`);
    await page.waitForSelector('body[data-ready="1"]');
  };
  const shot = (name: string) => page.screenshot({ path: join(SHOTS, `${name}.png`) });
  const step = async (button: string, position: number) => {
    await page.click(button);
    await page.waitForSelector(`#stepper[data-position="${position}"]:not([data-busy])`);
    // The map, tree and inspector follow the step.
    await page.waitForFunction('!document.querySelector("#stepper[data-busy]")');
  };
  const field = async (name: string) =>
    (await page.textContent(`#frame-fields tr[data-field="${name}"] td`))?.trim();

  it("steps through a scenario, expands the tree and shows the auditor's counts", async () => {
    await open(0);
    const host = () => (sources[0] as HostSource).host;
    const session = (sources[0] as HostSource).scenario!;
    expect(await page.textContent("#step-where")).toMatch(/^0 \/ \d+ lines run/);
    for (let i = 1; i <= 7; i++) await step("#step-next", i);
    // Line 10 of the file is the NEW_BASEPTR: the result, and the vCPU's base pointer in the diff.
    expect(await page.textContent("#step-result")).toMatch(/line 10: mmuext_op — as expected/);
    expect(await page.textContent("#diff-fields")).toMatch(/kernelBase/);
    await step("#step-last", session.lines.length);
    expect(await page.locator("#lines li[data-status=fail]").count()).toBe(0);
    // The tree from d1's kernel base pointer: L4 → L3 → L2 → L1 → data.
    const l4 = host().domain(1)!.vcpus[0].guestTable;
    await page.waitForSelector(`.tnode[data-mfn="${l4}"][data-level="4"]`);
    for (const level of [4, 3, 2]) {
      await page.click(
        `.tnode[data-level="${level}"] > .entries > li.entry[data-index="0"] > .eline > .toggle`,
      );
      await page.waitForSelector(`.tnode[data-level="${level - 1}"]`);
    }
    const leaf = page.locator('.tnode[data-level="1"] > .entries > li.entry[data-index="0"]');
    expect(await leaf.getAttribute("class")).toContain("kind-leaf");
    // The linear entry L4[5] (a same-level table) is drawn as a back edge.
    expect(await page.textContent(`.tnode[data-level="4"] > .entries > li.entry[data-index="5"]`)).toMatch(
      /↺ linear: a same-level L4/,
    );
    // Inspect the L1, then the data page: the counts shown are the frame table's, and the
    // references listed (the auditor's reverse map) add up to them.
    for (const sel of [
      '.tnode[data-level="2"] > .entries > li.entry[data-index="0"] > .eline > a.target',
      '.tnode[data-level="1"] > .entries > li.entry[data-index="0"] > .eline > a.target',
    ]) {
      const mfn = Number(
        await page
          .locator(sel)
          .first()
          .evaluate((a) => a.closest("li")!.getAttribute("data-target")),
      );
      await page.click(sel);
      await page.waitForSelector(`#inspected[data-mfn="${mfn}"]`);
      const f = host().frames;
      const totals = referenceTotals(referencesTo(host(), mfn), mfn, outgoingLinear(host(), mfn));
      expect(Number(await field("count"))).toBe(f.count[mfn]);
      expect(Number(await field("typeCount"))).toBe(f.typeCount[mfn]);
      expect(totals.general).toBe(f.count[mfn]);
      expect(await page.locator("#refs > li").count()).toBe(referencesTo(host(), mfn).length);
      expect(await page.getAttribute("#ref-totals", "data-explained")).toBe("true");
    }
    expect(host().audit().ok).toBe(true);
    // The legend counts the map's frames by class: L4s as the frame table types them.
    let l4s = 0;
    for (let m = 0; m < host().frames.frames; m++)
      if (host().frames.owner[m] && host().frames.type[m] === 4) l4s++;
    expect(Number(await page.getAttribute('#map-legend [data-class="l4"]', "data-count"))).toBe(l4s);
    await page.evaluate("window.scrollTo(0, 0)");
    await shot("scenario");
    // PVMMU_DOCS_SCREENSHOT=1 also refreshes the README's picture from this state.
    if (process.env.PVMMU_DOCS_SCREENSHOT) {
      // Line 18 makes L4[5] a linear entry: the step's changes, the entry marked in the tree.
      await page.click('#lines li[data-line="18"]');
      await page.waitForSelector('#stepper[data-position="15"]:not([data-busy])');
      await page.waitForSelector('.tnode[data-level="4"] > .entries > li.entry.changed[data-index="5"]');
      await page.click('.tnode[data-level="4"] > .entries > li.entry[data-index="5"] > .eline > a.target');
      await page.waitForSelector("#ref-totals");
      await page.setViewportSize({ width: 1500, height: 1750 });
      await page.evaluate("window.scrollTo(0, 0)");
      await page.screenshot({ path: join(ROOT, "docs", "explorer.png") });
      await page.setViewportSize({ width: 1500, height: 1100 });
    }

    // Back one line at a time: the inspector follows, with the counts at that line.
    const inspected = Number(await page.getAttribute("#inspected", "data-mfn"));
    await step("#step-first", 0);
    await step("#step-next", 1);
    await step("#step-next", 2);
    await step("#step-prev", 1);
    const ref = new ScenarioStepper(readFileSync(SCENARIO, "utf8"));
    ref.step();
    await page.waitForSelector(`#inspected[data-mfn="${inspected}"]`);
    await page.waitForFunction(
      `document.querySelector('#frame-fields tr[data-field="count"] td')?.textContent === "${ref.host.frames.count[inspected]}"`,
    );
  });

  it("marks a fuzz finding's failing expectation at its line", async () => {
    await open(2);
    const failed = page.locator("#lines li[data-status=fail]");
    expect(await failed.count()).toBe(1);
    const line = Number(await failed.getAttribute("data-line"));
    const text = readFileSync(failing, "utf8").split("\n")[line - 1];
    expect(text).toContain('"linear_pt_count":-2');
    await failed.click();
    await page.waitForSelector("#step-result [data-ok=false]");
    expect(await page.textContent("#step-result")).toMatch(/expectation FAILS/);
    await shot("finding");
  });

  it("opens a memory dump and searches a virtual address", async () => {
    await open(3);
    const va = "0xffff888000123456";
    await page.fill("#va-input", va);
    await page.click("#va-go");
    await page.waitForSelector("#walk-result[data-ok]");
    const img = MemoryImage.open(dump.path);
    const want = walkView(img.memory(), dump.cr3 / 4096, BigInt(va), { levels: 4 });
    img.close();
    expect(await page.getAttribute("#walk-result", "data-ok")).toBe("true");
    expect(await page.getAttribute("#walk-result", "data-pa")).toBe(want.pa);
    // The tree is open along the walk, its entries marked.
    expect(await page.locator(".entry.walk").count()).toBe(want.steps.length);
    expect(await page.textContent("#walk-result")).toContain(
      `→ ${want.pa} (4 KiB page; supervisor, writable, no-execute)`,
    );
    // An address nothing maps: the fault and its error code.
    await page.fill("#va-input", "0x100000000000");
    await page.click("#va-go");
    await page.waitForSelector('#walk-result[data-ok="false"]');
    expect(await page.textContent("#walk-result")).toMatch(/#PF error code 0x0 \[not-present/);
    await shot("dump");
  });

  it("opens a saved image: frame map, hover, click to inspect", async () => {
    await open(1);
    const h = (sources[1] as HostSource).host;
    const l4 = h.domain(1)!.vcpus[0].guestTable;
    const box = (await page.locator("#map-canvas").boundingBox())!;
    const layout = (await page.evaluate(
      '(() => { const c = document.getElementById("map-canvas"); return { cols: c.width, cell: c.getBoundingClientRect().width / c.width }; })()',
    )) as { cols: number; cell: number };
    const x = box.x + ((l4 % layout.cols) + 0.5) * layout.cell;
    const y = box.y + (Math.floor(l4 / layout.cols) + 0.5) * layout.cell;
    await page.mouse.move(x, y);
    await page.waitForSelector("#map-tip:not([hidden])");
    expect(await page.textContent("#map-tip")).toBe(`mfn 0x${l4.toString(16)} · L4 · owner d1`);
    await page.mouse.click(x, y);
    await page.waitForSelector(`#inspected[data-mfn="${l4}"]`);
    expect(Number(await field("count"))).toBe(h.frames.count[l4]);
    expect(await field("pinned")).toBe("true");
    expect(await page.getAttribute("#ref-totals", "data-explained")).toBe("true");
    const ms = (await page.evaluate("window.pvmmuExplorer.redraw()")) as number;
    expect(ms).toBeGreaterThanOrEqual(0);
    await shot("image");
  });

  it("charts a live run as it goes", async () => {
    await open(4);
    await page.waitForSelector("#live-status");
    const pub = await LivePublisher.start({ host: "127.0.0.1", port: livePort });
    try {
      // The relay finds the publisher (it retries every 200 ms), then the run starts.
      await page.waitForSelector('#live-status[data-connected="true"]');
      const run = publishedRun(
        {
          strategy: "recursive",
          pinning: "linux",
          workload: "mmap-churn",
          memoryBytes: 64 * 2 ** 20,
          seed: 9,
          iterations: 400,
          visitSpaces: 0,
        },
        pub,
      );
      // Samples arrive while the run is still going…
      await page.waitForFunction(
        '(() => { const l = document.getElementById("live"); return Number(l.dataset.samples) >= 2 && l.dataset.ended === ""; })()',
      );
      await run;
      // …and its end.
      await page.waitForSelector('#live[data-ended="true"]');
      expect(Number(await page.getAttribute("#live", "data-samples"))).toBe(
        pub.history.events.filter((e) => e.type === "sample").length,
      );
      expect(await page.textContent("#live-summary")).toMatch(/hypercalls · \d+ table frames/);
      await shot("live");
    } finally {
      await pub.close();
    }
  });
});
