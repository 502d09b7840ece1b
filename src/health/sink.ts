// Where the checker records health. `nflb run` connects it to the load balancers' shared
// state (state-sink.ts); tests record what they are given.
import type { Health } from "./spec.js";

export interface TargetHealthChange {
  fwmark: number;
  health: Health;
}

export interface HealthSink {
  /**
   * Records the health of some targets of one service, all in one step (one state
   * generation). Throws (or rejects) when it could not: the checker keeps the changes and
   * tries again later, newer health for a target replacing older.
   */
  publish(service: string, changes: readonly TargetHealthChange[]): void | Promise<void>;
}

/** A sink that keeps everything it is given, in order (tests, dry runs). */
export class MemorySink implements HealthSink {
  readonly calls: { service: string; changes: TargetHealthChange[] }[] = [];

  publish(service: string, changes: readonly TargetHealthChange[]): void {
    this.calls.push({ service, changes: [...changes] });
  }

  /** The latest health recorded per service and fwmark. */
  current(): Map<string, Map<number, Health>> {
    const out = new Map<string, Map<number, Health>>();
    for (const call of this.calls) {
      const m = out.get(call.service) ?? new Map<number, Health>();
      for (const c of call.changes) m.set(c.fwmark, c.health);
      out.set(call.service, m);
    }
    return out;
  }
}
