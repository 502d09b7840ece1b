// One service's per-target rates on one time axis, in uPlot's aligned layout: loaded
// from /api/history, grown by the live samples, trimmed to the window. No DOM, so it is
// tested in Node.
import type { TargetHistory } from "../../service/status.js";
import type { LiveSample } from "./protocol.js";

export type Column = (number | null)[];

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
