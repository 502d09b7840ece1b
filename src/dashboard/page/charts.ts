// Traffic charts: per service, packets and bytes per second of each target over the
// history window, drawn by uPlot (loaded by the page as a global from the npm package).
// ServiceTraffic keeps the numbers in uPlot's aligned layout; TrafficChart draws them.
import type { TargetHistory } from "../../service/status.js";
import type { LiveSample } from "./protocol.js";

type Column = (number | null)[];

export type Metric = "pps" | "bps";

/** One service's per-target rates on one time axis (seconds), oldest first. */
export class ServiceTraffic {
  readonly times: number[] = [];
  private readonly columns = new Map<string, Column>();

  private column(metric: Metric, fwmark: number): Column {
    const key = `${metric}:${fwmark}`;
    let column = this.columns.get(key);
    if (!column) {
      column = new Array<number | null>(this.times.length).fill(null);
      this.columns.set(key, column);
    }
    return column;
  }

  /** Replaces everything with a history from the endpoint. */
  load(histories: TargetHistory[]): void {
    const times = [...new Set(histories.flatMap((h) => h.samples.map((s) => s.t)))].sort(
      (a, b) => a - b,
    );
    const index = new Map(times.map((t, i) => [t, i]));
    this.times.splice(0, this.times.length, ...times.map((t) => t / 1000));
    this.columns.clear();
    for (const h of histories) {
      const pps = this.column("pps", h.fwmark);
      const bps = this.column("bps", h.fwmark);
      for (const s of h.samples) {
        const i = index.get(s.t);
        if (i === undefined) continue;
        pps[i] = s.pps;
        bps[i] = s.bps;
      }
    }
  }

  /** Adds the samples of one tick (all taken at the same time). */
  append(samples: LiveSample[]): void {
    if (samples.length === 0) return;
    const t = samples[0].t / 1000;
    if (this.times.length > 0 && t <= this.times[this.times.length - 1]) return;
    this.times.push(t);
    for (const column of this.columns.values()) column.push(null);
    for (const s of samples) {
      this.column("pps", s.fwmark)[this.times.length - 1] = s.pps;
      this.column("bps", s.fwmark)[this.times.length - 1] = s.bps;
    }
  }

  /** Drops what is older than `fromSeconds`. */
  trim(fromSeconds: number): void {
    let n = 0;
    while (n < this.times.length && this.times[n] < fromSeconds) n += 1;
    if (n === 0) return;
    this.times.splice(0, n);
    for (const column of this.columns.values()) column.splice(0, n);
  }

  values(metric: Metric, fwmark: number): Column {
    return this.column(metric, fwmark);
  }
}

const PALETTE = [
  "#2563eb",
  "#d97706",
  "#059669",
  "#db2777",
  "#7c3aed",
  "#0891b2",
  "#65a30d",
  "#dc2626",
  "#475569",
  "#ca8a04",
];

export function seriesColor(index: number): string {
  return PALETTE[index % PALETTE.length];
}

export interface ChartSeries {
  label: string;
  values: Column;
  color: string;
}

/** One uPlot chart that follows its container's width and is rebuilt when its series change. */
export class TrafficChart {
  private plot: uPlot | undefined;
  private labels = "";
  private readonly observer: ResizeObserver;

  constructor(
    private readonly container: HTMLElement,
    private readonly title: string,
    private readonly format: (value: number) => string,
  ) {
    this.observer = new ResizeObserver(() => this.plot?.setSize(this.size()));
    this.observer.observe(container);
  }

  private size(): { width: number; height: number } {
    return { width: Math.max(200, this.container.clientWidth), height: 150 };
  }

  update(times: number[], series: ChartSeries[]): void {
    const data = [times, ...series.map((s) => s.values)] as uPlot.AlignedData;
    const labels = series.map((s) => `${s.label}|${s.color}`).join(",");
    if (this.plot && labels === this.labels) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.labels = labels;
    const format = this.format;
    const opts: uPlot.Options = {
      ...this.size(),
      title: this.title,
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      series: [
        {},
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: 1.5,
          value: (_u: uPlot, v: number | null) => (v === null ? "–" : format(v)),
        })),
      ],
      axes: [{}, { size: 76, values: (_u, ticks) => ticks.map((v) => format(v)) }],
      legend: { live: true },
    };
    this.plot = new uPlot(opts, data, this.container);
  }

  destroy(): void {
    this.observer.disconnect();
    this.plot?.destroy();
    this.plot = undefined;
  }
}
