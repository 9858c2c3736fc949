/**
 * The frame map: every machine frame as a cell coloured by its class, drawn on a canvas from
 * the binary map with ImageData (one pixel per frame, scaled up by CSS for small hosts: no
 * DOM node per frame). An overlay canvas marks the selected frame and the frames the last
 * step changed. Hover names the frame, its class and owner; a click selects it.
 */

import {
  CLASS_COLOURS,
  CLASS_LABELS,
  frameAt,
  type MapLayout,
  mapLayout,
  paintFrames,
  palette,
} from "./colours.js";
import { el, hex } from "./dom.js";
import { FRAME_CLASSES, type FrameMap } from "./protocol.js";

/** The map's width in CSS pixels (cells shrink to one pixel for the largest hosts, then it scrolls). */
const MAP_WIDTH = 1024;
/** The largest cell: a 64 MiB scenario host (16,384 frames) is 512 pixels square. */
const MAX_CELL = 4;

export class FrameMapView {
  private readonly canvas = el("canvas", { id: "map-canvas", "data-testid": "frame-map" });
  private readonly overlay = el("canvas", { id: "map-overlay" });
  private readonly tip = el("div", { id: "map-tip", class: "tip", hidden: true });
  private readonly legend = el("div", { id: "map-legend", class: "legend" });
  private readonly pal = palette();
  private readonly counts = new Uint32Array(256);
  private map: FrameMap | undefined;
  private layout: MapLayout = { cols: 1, rows: 0, cell: 1 };
  private image: ImageData | undefined;
  private marked: number[] = [];
  private selected = -1;
  /** Milliseconds the last redraw took (paint + putImageData). */
  lastRedrawMs = 0;

  constructor(
    readonly root: HTMLElement,
    private readonly owners: () => Record<string, string>,
    private readonly onSelect: (mfn: number) => void,
  ) {
    const stack = el("div", { class: "map-stack" }, this.canvas, this.overlay, this.tip);
    root.append(el("div", { class: "map-scroll" }, stack), this.legend);
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => {
      this.tip.hidden = true;
    });
    this.canvas.addEventListener("click", (e) => {
      const m = this.frameOf(e);
      if (m >= 0) this.onSelect(m);
    });
  }

  /** A new map (same host after a step, or another source). */
  setMap(map: FrameMap): void {
    const sameSize = this.map?.frames === map.frames;
    this.map = map;
    if (!sameSize) {
      this.layout = mapLayout(map.frames, MAP_WIDTH, MAX_CELL);
      const { cols, rows, cell } = this.layout;
      this.canvas.width = cols;
      this.canvas.height = Math.max(1, rows);
      this.canvas.style.width = `${cols * cell}px`;
      this.canvas.style.height = `${rows * cell}px`;
      this.overlay.width = cols * cell;
      this.overlay.height = Math.max(1, rows * cell);
      this.image = this.canvas.getContext("2d")!.createImageData(cols, Math.max(1, rows));
    }
    this.redraw();
  }

  /** Paint every frame and the marks; returns the milliseconds it took. */
  redraw(): number {
    const t0 = performance.now();
    const map = this.map;
    if (!map || !this.image) return 0;
    const px = new Uint32Array(this.image.data.buffer);
    paintFrames(map.classes, this.pal, px, this.counts);
    this.canvas.getContext("2d")!.putImageData(this.image, 0, 0);
    this.drawMarks();
    this.lastRedrawMs = performance.now() - t0;
    this.drawLegend();
    return this.lastRedrawMs;
  }

  /** Outline these frames (what the last step changed). */
  mark(frames: number[]): void {
    this.marked = frames;
    this.drawMarks();
  }

  select(mfn: number): void {
    this.selected = mfn;
    this.drawMarks();
  }

  private drawMarks(): void {
    const g = this.overlay.getContext("2d")!;
    g.clearRect(0, 0, this.overlay.width, this.overlay.height);
    const { cols, cell } = this.layout;
    const box = (m: number, colour: string) => {
      const x = (m % cols) * cell;
      const y = Math.floor(m / cols) * cell;
      const pad = cell >= 4 ? 0 : 2;
      g.strokeStyle = colour;
      g.lineWidth = cell >= 8 ? 2 : 1;
      g.strokeRect(x - pad + 0.5, y - pad + 0.5, cell + 2 * pad - 1, cell + 2 * pad - 1);
    };
    for (const m of this.marked) box(m, "#ffffff");
    if (this.selected >= 0) box(this.selected, "#ffd33d");
  }

  private drawLegend(): void {
    this.legend.replaceChildren(
      ...FRAME_CLASSES.flatMap((c, i) =>
        this.counts[i] === 0 && c !== "free"
          ? []
          : el(
              "span",
              { class: "legend-item", "data-class": c, "data-count": this.counts[i] },
              el("i", { style: `background:${CLASS_COLOURS[c]}` }),
              `${CLASS_LABELS[c]} ${this.counts[i].toLocaleString("en")}`,
            ),
      ),
    );
  }

  private frameOf(e: MouseEvent): number {
    if (!this.map) return -1;
    const r = this.canvas.getBoundingClientRect();
    return frameAt(this.layout, this.map.frames, e.clientX - r.left, e.clientY - r.top);
  }

  private hover(e: MouseEvent): void {
    const m = this.frameOf(e);
    if (m < 0 || !this.map) {
      this.tip.hidden = true;
      return;
    }
    const owner = this.map.owners[m];
    const name = this.owners()[String(owner)] ?? (owner ? `d${owner - 1}` : "none");
    this.tip.textContent = `mfn ${hex(m)} · ${CLASS_LABELS[FRAME_CLASSES[this.map.classes[m]]]} · owner ${name}`;
    const r = this.canvas.getBoundingClientRect();
    this.tip.style.left = `${e.clientX - r.left + 12}px`;
    this.tip.style.top = `${e.clientY - r.top + 12}px`;
    this.tip.hidden = false;
  }
}
