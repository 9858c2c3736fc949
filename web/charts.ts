/** Small canvas charts for the live view: a line over time, bars per round. */

import type { Point } from "./series.js";

function frame(c: HTMLCanvasElement, title: string, max: number, unit: string): CanvasRenderingContext2D {
  const g = c.getContext("2d")!;
  g.clearRect(0, 0, c.width, c.height);
  g.fillStyle = "#0d1117";
  g.fillRect(0, 0, c.width, c.height);
  g.fillStyle = "#c9d1d9";
  g.font = "12px system-ui, sans-serif";
  g.fillText(title, 8, 16);
  g.fillStyle = "#8b949e";
  g.fillText(`${formatNumber(max)} ${unit}`, 8, 32);
  return g;
}

export function formatNumber(v: number): string {
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)} M`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)} k`;
  return v.toFixed(v < 10 ? 1 : 0);
}

export function lineChart(
  c: HTMLCanvasElement,
  title: string,
  unit: string,
  pts: Point[],
  colour: string,
): void {
  const max = Math.max(1, ...pts.map((p) => p.y));
  const g = frame(c, title, max, unit);
  if (pts.length === 0) return;
  const x0 = pts[0].x;
  const span = Math.max(1e-3, pts[pts.length - 1].x - x0);
  const top = 40;
  const h = c.height - top - 8;
  g.strokeStyle = colour;
  g.lineWidth = 2;
  g.beginPath();
  pts.forEach((p, i) => {
    const x = 8 + ((p.x - x0) / span) * (c.width - 16);
    const y = top + h - (p.y / max) * h;
    if (i === 0) g.moveTo(x, y);
    else g.lineTo(x, y);
  });
  g.stroke();
}

export function barChart(
  c: HTMLCanvasElement,
  title: string,
  unit: string,
  pts: Point[],
  colour: string,
): void {
  const max = Math.max(1, ...pts.map((p) => p.y));
  const g = frame(c, title, max, unit);
  if (pts.length === 0) {
    g.fillStyle = "#8b949e";
    g.fillText("none yet (rounds come with a live migration)", 8, 60);
    return;
  }
  const top = 40;
  const h = c.height - top - 20;
  const w = (c.width - 16) / Math.max(1, pts.length);
  pts.forEach((p, i) => {
    const bh = (p.y / max) * h;
    g.fillStyle = colour;
    g.fillRect(8 + i * w + 2, top + h - bh, Math.max(1, w - 4), bh);
    g.fillStyle = "#8b949e";
    g.fillText(String(p.x), 8 + i * w + 2, c.height - 6);
  });
}
