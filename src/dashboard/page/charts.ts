// Traffic charts: per service, packets and bytes per second of each target over the
// history window, drawn by uPlot (loaded by the page as a global from the npm package).
import type { Column } from "./traffic.js";

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
