/**
 * Live charts of a running workload or migration (`serve --attach`): hypercalls per second
 * and page-table frames as the guest runs, dirty pages and bandwidth per pre-copy round.
 */

import type { Api } from "./api.js";
import { barChart, formatNumber, lineChart } from "./charts.js";
import { el } from "./dom.js";
import type { LiveEvent } from "./protocol.js";
import { liveSeries } from "./series.js";

export class LiveView {
  private readonly events: LiveEvent[] = [];
  private readonly status = el("div", { id: "live-status", class: "live-status" });
  private readonly summary = el("div", { id: "live-summary", class: "live-summary" });
  private readonly charts = {
    rate: el("canvas", { id: "chart-hypercalls", width: 520, height: 200 }),
    tables: el("canvas", { id: "chart-tables", width: 520, height: 200 }),
    pages: el("canvas", { id: "chart-rounds", width: 520, height: 200 }),
    bandwidth: el("canvas", { id: "chart-bandwidth", width: 520, height: 200 }),
  };
  private pending = false;

  constructor(
    readonly root: HTMLElement,
    api: Api,
  ) {
    root.append(
      this.status,
      this.summary,
      el(
        "div",
        { class: "charts" },
        this.charts.rate,
        this.charts.tables,
        this.charts.pages,
        this.charts.bandwidth,
      ),
    );
    api.live((e) => this.add(e));
    this.draw();
  }

  private add(e: LiveEvent): void {
    if (e.type === "status") {
      this.status.textContent = e.message;
      this.status.dataset.connected = String(e.connected);
      return;
    }
    if (e.type === "hello") this.events.length = 0;
    this.events.push(e);
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.draw();
      });
    }
  }

  private draw(): void {
    const s = liveSeries(this.events);
    this.root.dataset.samples = String(s.samples);
    this.root.dataset.rounds = String(s.rounds);
    this.root.dataset.ended = s.ended ? String(s.ended.ok) : "";
    const last = s.last;
    this.summary.textContent = [
      s.title,
      last ? `step ${last.step}/${last.steps}` : "",
      last ? `${formatNumber(last.hypercalls)} hypercalls` : "",
      last ? `${last.tableFrames} table frames` : "",
      s.rounds ? `${s.rounds} pre-copy rounds` : "",
      s.ended ? `ended: ${s.ended.message}` : "",
    ]
      .filter(Boolean)
      .join(" · ");
    lineChart(this.charts.rate, "hypercalls per second", "/s", s.hypercallsPerS, "#58a6ff");
    lineChart(this.charts.tables, "page-table frames", "frames", s.tableFrames, "#a371f7");
    barChart(this.charts.pages, "dirty pages per pre-copy round", "pages", s.roundPages, "#f2cc60");
    barChart(this.charts.bandwidth, "bandwidth per round", "MiB/s", s.roundMiBPerS, "#3fb950");
  }
}
