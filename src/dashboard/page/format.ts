// How the page writes numbers and times: pure functions, no DOM (unit-tested in Node).

const SI = ["", "k", "M", "G", "T", "P"];

/** 1234 -> "1.23 k", 0.5 -> "0.5": three significant digits and an SI prefix. */
export function si(value: number): string {
  if (!Number.isFinite(value)) return "–";
  let v = Math.abs(value);
  let i = 0;
  while (v >= 1000 && i < SI.length - 1) {
    v /= 1000;
    i += 1;
  }
  const digits = v >= 100 || (i === 0 && Number.isInteger(v)) ? 0 : v >= 10 ? 1 : 2;
  const text = v.toFixed(digits).replace(/\.0+$|(\.\d*?)0+$/, "$1");
  return `${value < 0 ? "-" : ""}${text}${SI[i] ? ` ${SI[i]}` : ""}`;
}

export function packetRate(pps: number): string {
  return `${si(pps)}pps`.replace(/(\d)pps$/, "$1 pps");
}

export function byteRate(bps: number): string {
  return `${si(bps)}B/s`.replace(/(\d)B\/s$/, "$1 B/s");
}

export function count(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "–";
}

export function percent(fraction: number): string {
  if (!Number.isFinite(fraction)) return "–";
  return `${(fraction * 100).toFixed(fraction > 0 && fraction < 0.001 ? 2 : 1)}%`;
}

/** Seconds between two times as "5 s", "3 min", "2 h 5 min", "4 d 2 h". */
export function duration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? `${h} h ${m % 60} min` : `${h} h`;
  const d = Math.floor(h / 24);
  return h % 24 ? `${d} d ${h % 24} h` : `${d} d`;
}

/** "3 min ago" for an ISO time; "–" when absent or unreadable. */
export function ago(iso: string | undefined, nowMs: number): string {
  const t = iso ? Date.parse(iso) : Number.NaN;
  return Number.isFinite(t) ? `${duration(nowMs - t)} ago` : "–";
}

/** "14:03:07" in the viewer's time zone. */
export function clock(iso: string): string {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return iso;
  const d = new Date(t);
  return [d.getHours(), d.getMinutes(), d.getSeconds()]
    .map((n) => String(n).padStart(2, "0"))
    .join(":");
}
