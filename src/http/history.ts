// The last minutes of traffic per target, for the dashboard's charts: fed with status
// snapshots (cumulative packet and byte counters) about once a second, it keeps each
// target's rates in a fixed ring of typed arrays. Pure: the time is passed in. Memory is
// bounded by maxTargets x capacity x 16 bytes, whatever the caller does.
import type { LiveSample } from "../dashboard/page/protocol.js";
import type { StatusSnapshot, TargetHistory, TargetSample } from "../service/status.js";

export interface HistoryOptions {
  /** How far back samples are kept (default 15 minutes). */
  windowMs?: number;
  /** The spacing the caller samples at (default 1 s). Closer samples are ignored. */
  stepMs?: number;
  /** Targets with a history; more are counted in `untracked` (default 512). */
  maxTargets?: number;
}

export const DEFAULT_HISTORY_WINDOW_MS = 15 * 60_000;
export const DEFAULT_HISTORY_STEP_MS = 1000;
export const DEFAULT_HISTORY_MAX_TARGETS = 512;

/** One target's ring: times and rates, plus the counters of the last snapshot. */
class TargetRing {
  readonly t: Float64Array;
  readonly pps: Float32Array;
  readonly bps: Float32Array;
  /** Next slot to write; `count` slots before it (wrapping) hold samples. */
  head = 0;
  count = 0;
  lastT: number;
  lastPackets: number;
  lastBytes: number;

  constructor(
    readonly service: string,
    readonly fwmark: number,
    capacity: number,
    t: number,
    packets: number,
    bytes: number,
  ) {
    this.t = new Float64Array(capacity);
    this.pps = new Float32Array(capacity);
    this.bps = new Float32Array(capacity);
    this.lastT = t;
    this.lastPackets = packets;
    this.lastBytes = bytes;
  }

  push(t: number, pps: number, bps: number): void {
    const capacity = this.t.length;
    this.t[this.head] = t;
    this.pps[this.head] = pps;
    this.bps[this.head] = bps;
    this.head = (this.head + 1) % capacity;
    if (this.count < capacity) this.count += 1;
  }

  samplesSince(from: number): TargetSample[] {
    const capacity = this.t.length;
    const out: TargetSample[] = [];
    for (let i = this.count; i > 0; i--) {
      const slot = (this.head - i + capacity) % capacity;
      if (this.t[slot] < from) continue;
      out.push({ t: this.t[slot], pps: round2(this.pps[slot]), bps: round2(this.bps[slot]) });
    }
    return out;
  }
}

/** A counter that went down was reset (a restart): count from zero, as Prometheus does. */
function increase(previous: number, current: number): number {
  return current >= previous ? current - previous : current;
}

function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

export function targetKey(service: string, fwmark: number): string {
  return `${service}\u0000${fwmark}`;
}

export class TargetHistoryRing {
  readonly windowMs: number;
  readonly stepMs: number;
  readonly maxTargets: number;
  /** Slots per target: the window at the step, plus 10% for ticks that come early. */
  readonly capacity: number;
  private readonly rings = new Map<string, TargetRing>();
  /** Targets of the last snapshot left without a history because of maxTargets. */
  untracked = 0;

  constructor(options: HistoryOptions = {}) {
    this.windowMs = options.windowMs ?? DEFAULT_HISTORY_WINDOW_MS;
    this.stepMs = options.stepMs ?? DEFAULT_HISTORY_STEP_MS;
    this.maxTargets = options.maxTargets ?? DEFAULT_HISTORY_MAX_TARGETS;
    if (!(this.windowMs > 0 && this.stepMs > 0 && this.maxTargets >= 0)) {
      throw new RangeError("history window, step and target count must be positive");
    }
    this.capacity = Math.ceil((this.windowMs / this.stepMs) * 1.1) + 1;
  }

  /** Targets with a history now. */
  get size(): number {
    return this.rings.size;
  }

  /**
   * Takes the counters of a snapshot seen at `nowMs` and returns the new sample of each
   * target (none for a target seen the first time, or when called again within half a
   * step). Targets gone from the snapshot lose their history.
   */
  record(snapshot: StatusSnapshot, nowMs: number): LiveSample[] {
    const seen = new Set<string>();
    const samples: LiveSample[] = [];
    let untracked = 0;
    for (const service of snapshot.services) {
      for (const target of service.targets) {
        const key = targetKey(service.name, target.fwmark);
        seen.add(key);
        const ring = this.rings.get(key);
        if (!ring) {
          if (this.rings.size >= this.maxTargets) {
            untracked += 1;
            continue;
          }
          const fresh = new TargetRing(
            service.name,
            target.fwmark,
            this.capacity,
            nowMs,
            target.packets,
            target.bytes,
          );
          this.rings.set(key, fresh);
          continue;
        }
        const elapsed = nowMs - ring.lastT;
        if (elapsed < this.stepMs / 2) continue;
        const seconds = elapsed / 1000;
        const pps = increase(ring.lastPackets, target.packets) / seconds;
        const bps = increase(ring.lastBytes, target.bytes) / seconds;
        ring.push(nowMs, pps, bps);
        ring.lastT = nowMs;
        ring.lastPackets = target.packets;
        ring.lastBytes = target.bytes;
        samples.push({
          service: service.name,
          fwmark: target.fwmark,
          t: nowMs,
          pps: round2(pps),
          bps: round2(bps),
        });
      }
    }
    for (const key of this.rings.keys()) {
      if (!seen.has(key)) this.rings.delete(key);
    }
    this.untracked = untracked;
    return samples;
  }

  /** Every tracked target's samples of the window ending at `nowMs`, oldest first. */
  history(nowMs: number): TargetHistory[] {
    const from = nowMs - this.windowMs;
    return [...this.rings.values()].map((ring) => ({
      service: ring.service,
      fwmark: ring.fwmark,
      samples: ring.samplesSince(from),
    }));
  }
}
