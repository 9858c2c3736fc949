/**
 * Small inline-SVG charts for the HTML report: a line chart and a grouped bar
 * chart, each with axes, ticks, grid lines and a legend. Hand-written so the
 * report needs no script and no resource from anywhere; every text is
 * escaped, every coordinate rounded to 0.1 px so output is deterministic.
 */

/** Escape text for XML and HTML content and attribute values. */
export function escapeXml(s: string): string {
  return s
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/** Colours distinguishable with the common colour-vision deficiencies (Okabe and Ito), then dash patterns. */
export const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000"];
const DASHES = ["", "6 3", "2 3", "8 3 2 3"];

/** The colour and dash pattern of the `i`th series. */
export function seriesStyle(i: number): { color: string; dash: string } {
  return { color: PALETTE[i % PALETTE.length], dash: DASHES[Math.floor(i / PALETTE.length) % DASHES.length] };
}

export interface SeriesStyle {
  name: string;
  color: string;
  /** SVG stroke-dasharray ("" for a solid line). */
  dash: string;
}

export interface LineSeries extends SeriesStyle {
  points: { x: number; y: number }[];
}

export interface LineChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  /** Where the x ticks go and what they say (e.g. the guest sizes). */
  xTicks: { value: number; label: string }[];
  /** Place x by its base-2 logarithm (sizes that double). */
  xLog2?: boolean;
  series: LineSeries[];
  yFormat?: (v: number) => string;
  /** Format a point's x for its tooltip. */
  xFormat?: (v: number) => string;
}

export interface BarSeries extends SeriesStyle {
  /** One value per group; undefined draws no bar. */
  values: (number | undefined)[];
}

export interface BarChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  groups: string[];
  series: BarSeries[];
  yFormat?: (v: number) => string;
}

const WIDTH = 720;
const PLOT_LEFT = 84;
const PLOT_RIGHT = 520;
const PLOT_TOP = 40;
const PLOT_HEIGHT = 240;
const LEGEND_X = PLOT_RIGHT + 24;
const LEGEND_ROW = 20;

const f = (v: number): string => `${Math.round(v * 10) / 10}`;

/** Round ticks from 0 covering `max`: about `target` steps of 1, 2 or 5 × 10^k. */
export function niceTicks(max: number, target = 5): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const raw = max / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const n = Math.max(1, Math.ceil(max / step - 1e-9));
  const ticks: number[] = [];
  for (let i = 0; i <= n; i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

const defaultFormat = (v: number): string => `${Number(v.toPrecision(6))}`;

interface Frame {
  height: number;
  plotBottom: number;
  y: (v: number) => number;
  parts: string[];
}

/** The chart's frame: title, y axis with ticks and grid, x axis line, axis labels, legend. */
function frame(
  title: string,
  xLabel: string,
  yLabel: string,
  yMax: number,
  yFormat: (v: number) => string,
  legend: SeriesStyle[],
  legendKind: "line" | "bar",
): Frame {
  const height = Math.max(PLOT_TOP + PLOT_HEIGHT + 56, PLOT_TOP + legend.length * LEGEND_ROW + 16);
  const plotBottom = PLOT_TOP + PLOT_HEIGHT;
  const ticks = niceTicks(yMax);
  const top = ticks[ticks.length - 1];
  const y = (v: number): number => plotBottom - (v / top) * PLOT_HEIGHT;
  const parts: string[] = [];
  parts.push(
    `<text class="title" x="${f(WIDTH / 2)}" y="20" text-anchor="middle">${escapeXml(title)}</text>`,
  );
  for (const t of ticks) {
    const ty = f(y(t));
    parts.push(`<line class="grid" x1="${PLOT_LEFT}" y1="${ty}" x2="${PLOT_RIGHT}" y2="${ty}"/>`);
    parts.push(
      `<text class="tick" x="${PLOT_LEFT - 6}" y="${ty}" text-anchor="end" dominant-baseline="middle">${escapeXml(yFormat(t))}</text>`,
    );
  }
  parts.push(`<line class="axis" x1="${PLOT_LEFT}" y1="${PLOT_TOP}" x2="${PLOT_LEFT}" y2="${plotBottom}"/>`);
  parts.push(
    `<line class="axis" x1="${PLOT_LEFT}" y1="${plotBottom}" x2="${PLOT_RIGHT}" y2="${plotBottom}"/>`,
  );
  parts.push(
    `<text class="label" x="${f((PLOT_LEFT + PLOT_RIGHT) / 2)}" y="${plotBottom + 42}" text-anchor="middle">${escapeXml(xLabel)}</text>`,
  );
  const ly = f(PLOT_TOP + PLOT_HEIGHT / 2);
  parts.push(
    `<text class="label" x="16" y="${ly}" text-anchor="middle" transform="rotate(-90 16 ${ly})">${escapeXml(yLabel)}</text>`,
  );
  legend.forEach((s, i) => {
    const ry = PLOT_TOP + 8 + i * LEGEND_ROW;
    const swatch =
      legendKind === "line"
        ? `<line x1="${LEGEND_X}" y1="${ry}" x2="${LEGEND_X + 24}" y2="${ry}" stroke="${s.color}" stroke-width="2.5"${dashAttr(s.dash)}/>`
        : `<rect x="${LEGEND_X + 6}" y="${ry - 6}" width="12" height="12"${barFill(s)}/>`;
    parts.push(
      `${swatch}<text class="legend" x="${LEGEND_X + 30}" y="${ry}" dominant-baseline="middle">${escapeXml(s.name)}</text>`,
    );
  });
  return { height, plotBottom, y, parts };
}

const dashAttr = (dash: string): string => (dash ? ` stroke-dasharray="${dash}"` : "");

/** Bars of a dashed series (beyond the palette) are drawn light with an outline, to tell them apart. */
const barFill = (s: SeriesStyle): string =>
  s.dash ? ` fill="${s.color}" fill-opacity="0.35" stroke="${s.color}"` : ` fill="${s.color}"`;

function wrap(title: string, height: number, parts: string[]): string {
  return (
    `<svg class="chart" viewBox="0 0 ${WIDTH} ${height}" width="${WIDTH}" height="${height}" font-family="system-ui, sans-serif" role="img" aria-label="${escapeXml(title)}">\n` +
    `<title>${escapeXml(title)}</title>\n${parts.join("\n")}\n</svg>`
  );
}

/** A line chart: one polyline with point markers per series; tooltips give each point's values. */
export function lineChart(spec: LineChartSpec): string {
  const yFormat = spec.yFormat ?? defaultFormat;
  const xFormat = spec.xFormat ?? defaultFormat;
  const yMax = Math.max(0, ...spec.series.flatMap((s) => s.points.map((p) => p.y)));
  const fr = frame(spec.title, spec.xLabel, spec.yLabel, yMax, yFormat, spec.series, "line");
  const tx = (v: number): number => (spec.xLog2 ? Math.log2(v) : v);
  const xs = [
    ...spec.xTicks.map((t) => tx(t.value)),
    ...spec.series.flatMap((s) => s.points.map((p) => tx(p.x))),
  ];
  const lo = xs.length ? Math.min(...xs) : 0;
  const hi = xs.length ? Math.max(...xs) : 1;
  const pad = (PLOT_RIGHT - PLOT_LEFT) * 0.06;
  const x = (v: number): number =>
    hi === lo
      ? (PLOT_LEFT + PLOT_RIGHT) / 2
      : PLOT_LEFT + pad + ((tx(v) - lo) / (hi - lo)) * (PLOT_RIGHT - PLOT_LEFT - 2 * pad);
  for (const t of spec.xTicks) {
    const px = f(x(t.value));
    fr.parts.push(
      `<line class="axis" x1="${px}" y1="${fr.plotBottom}" x2="${px}" y2="${fr.plotBottom + 5}"/>`,
    );
    fr.parts.push(
      `<text class="tick" x="${px}" y="${fr.plotBottom + 18}" text-anchor="middle">${escapeXml(t.label)}</text>`,
    );
  }
  for (const s of spec.series) {
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    if (pts.length > 1) {
      const d = pts.map((p) => `${f(x(p.x))},${f(fr.y(p.y))}`).join(" ");
      fr.parts.push(
        `<polyline fill="none" stroke="${s.color}" stroke-width="2"${dashAttr(s.dash)} points="${d}"/>`,
      );
    }
    for (const p of pts) {
      const tip = `${s.name}: ${xFormat(p.x)} → ${yFormat(p.y)}`;
      fr.parts.push(
        `<circle cx="${f(x(p.x))}" cy="${f(fr.y(p.y))}" r="3.5" fill="${s.color}"><title>${escapeXml(tip)}</title></circle>`,
      );
    }
  }
  return wrap(spec.title, fr.height, fr.parts);
}

/** A grouped bar chart: one group per x label, one bar per series within it. */
export function barChart(spec: BarChartSpec): string {
  const yFormat = spec.yFormat ?? defaultFormat;
  const values = spec.series.flatMap((s) => s.values.filter((v): v is number => v !== undefined));
  const yMax = Math.max(0, ...values);
  const fr = frame(spec.title, spec.xLabel, spec.yLabel, yMax, yFormat, spec.series, "bar");
  const band = (PLOT_RIGHT - PLOT_LEFT) / Math.max(1, spec.groups.length);
  const barW = (band * 0.7) / Math.max(1, spec.series.length);
  spec.groups.forEach((g, gi) => {
    const gx = PLOT_LEFT + gi * band;
    fr.parts.push(
      `<text class="tick" x="${f(gx + band / 2)}" y="${fr.plotBottom + 18}" text-anchor="middle">${escapeXml(g)}</text>`,
    );
    spec.series.forEach((s, si) => {
      const v = s.values[gi];
      if (v === undefined || !Number.isFinite(v)) return;
      const top = fr.y(Math.max(0, v));
      const bx = gx + band * 0.15 + si * barW;
      const tip = `${s.name}, ${g}: ${yFormat(v)}`;
      fr.parts.push(
        `<rect x="${f(bx)}" y="${f(top)}" width="${f(Math.max(1, barW - 1))}" height="${f(fr.plotBottom - top)}"${barFill(s)}><title>${escapeXml(tip)}</title></rect>`,
      );
    });
  });
  return wrap(spec.title, fr.height, fr.parts);
}
