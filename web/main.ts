/**
 * The explorer page: loads what the server opened (`?src=N` picks a source) and puts up the
 * views that fit it — frame map, frame inspector and page-table tree for hosts and dumps,
 * the stepper for scenarios, live charts for an attached run. `window.pvmmuExplorer` lets
 * tests and the benchmark drive it (redraw timing).
 */

import { Api } from "./api.js";
import { byId, el } from "./dom.js";
import { FrameMapView } from "./framemap-view.js";
import { InspectorView } from "./inspector-view.js";
import { LiveView } from "./live-view.js";
import type { Meta, StepView } from "./protocol.js";
import { StepperView } from "./stepper-view.js";
import { TreeView } from "./tree-view.js";

declare global {
  interface Window {
    pvmmuExplorer?: { redraw(): number; meta(): Meta | undefined };
  }
}

async function start(): Promise<void> {
  const src = Number(new URLSearchParams(location.search).get("src") ?? "0") || 0;
  const api = new Api(src);
  let meta = await api.meta();
  const sources = byId<HTMLSelectElement>("source-select");
  sources.replaceChildren(
    ...meta.sources.map((s) =>
      el("option", { value: s.index, selected: s.index === src }, `${s.kind}: ${s.name}`),
    ),
  );
  sources.addEventListener("change", () => {
    location.search = `?src=${sources.value}`;
  });
  byId("source-kind").textContent = meta.source.kind;
  document.title = `pvmmu explorer — ${meta.source.name}`;
  const main = byId("main");

  if (meta.source.kind === "live") {
    const panel = el(
      "section",
      { id: "live", class: "panel wide" },
      el("h2", {}, `live: ${meta.attach ?? ""}`),
    );
    main.append(panel);
    new LiveView(panel, api);
    window.pvmmuExplorer = { redraw: () => 0, meta: () => meta };
    document.body.dataset.ready = "1";
    return;
  }

  const mapPanel = el(
    "section",
    { id: "map", class: "panel" },
    el("h2", {}, `frame map · ${meta.frames.toLocaleString("en")} frames`),
  );
  const inspectorPanel = el("section", { id: "inspector", class: "panel" }, el("h2", {}, "frame inspector"));
  const treePanel = el("section", { id: "tree-panel", class: "panel wide" }, el("h2", {}, "page-table tree"));
  let map: FrameMapView;
  let inspector: InspectorView;
  const select = (mfn: number) => {
    map.select(mfn);
    void inspector.show(mfn);
  };
  map = new FrameMapView(mapPanel, () => meta.owners, select);
  inspector = new InspectorView(inspectorPanel, api, select);
  const tree = new TreeView(treePanel, api, select);

  if (meta.source.kind === "scenario") {
    const stepPanel = el(
      "section",
      { id: "stepper", class: "panel wide" },
      el("h2", {}, `stepping · ${meta.source.name}`),
    );
    main.append(stepPanel);
    const stepper = new StepperView(stepPanel, api, async (v: StepView) => {
      meta = await api.meta();
      map.setMap(await api.frames());
      map.mark(v.diff?.changedFrames ?? []);
      tree.setRoots(meta.roots);
      tree.setChanged(v.diff?.entries ?? []);
      await tree.refresh();
      if (inspector.current >= 0) await inspector.show(inspector.current);
    });
    await stepper.load();
  }
  main.append(el("div", { class: "row" }, mapPanel, inspectorPanel), treePanel);
  map.setMap(await api.frames());
  tree.setRoots(meta.roots);
  await tree.refresh();
  window.pvmmuExplorer = { redraw: () => map.redraw(), meta: () => meta };
  document.body.dataset.ready = "1";
}

start().catch((e: unknown) => {
  byId("main").append(
    el("div", { class: "error", id: "fatal" }, `the explorer could not start: ${(e as Error).message}`),
  );
  document.body.dataset.ready = "error";
});
