// Runs the health engine in simulated time: a "world" answers each probe (verdict and
// latency) from the target and the time; completions are delivered in time order. Hours
// of checks take milliseconds, and a seeded generator makes every run the same.
import type {
  HealthEngine,
  HealthUpdate,
  ProbeRequest,
  TargetRef,
  TargetTransition,
  WarmupEnded,
} from "../../src/health/engine.js";
import type { CheckResult } from "../../src/health/machine.js";

/** mulberry32: a small seeded generator of numbers in [0, 1). */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Answer {
  ok: boolean;
  latencyMs: number;
  reason: string;
}

/** How the world answers a probe of `target` that starts at `at`. */
export type World = (target: TargetRef, at: number, probe: ProbeRequest) => Answer;

export interface SimRecord {
  probes: { target: TargetRef; startedAt: number }[];
  results: { target: TargetRef; result: CheckResult }[];
  transitions: TargetTransition[];
  updates: { at: number; update: HealthUpdate }[];
  warmups: WarmupEnded[];
  /** Everything above, in the order the engine said it. */
  log: string[];
}

export function emptyRecord(): SimRecord {
  return { probes: [], results: [], transitions: [], updates: [], warmups: [], log: [] };
}

interface Pending {
  at: number;
  seq: number;
  probe: ProbeRequest;
  answer: Answer;
}

/** A simulation one can advance, reconfigure in between, and read. */
export class Sim {
  readonly record = emptyRecord();
  private pending: Pending[] = [];
  private seq = 0;
  now: number;

  constructor(
    readonly engine: HealthEngine,
    private world: World,
    start = 0,
  ) {
    this.now = start;
  }

  setWorld(world: World): void {
    this.world = world;
  }

  private note(at: number, updates: HealthUpdate[], warmups: WarmupEnded[]): void {
    for (const w of warmups) {
      this.record.warmups.push(w);
      this.record.log.push(`warmup ${w.service} ${w.how}`);
    }
    for (const u of updates) {
      this.record.updates.push({ at, update: u });
      const what = u.changes.map((c) => `${c.fwmark}=${c.health}`).join(",");
      this.record.log.push(`update ${u.service} ${u.cause} ${what}`);
    }
  }

  /** Drops the answers of probes in flight (as the driver does after a reconfigure). */
  forget(keys: readonly string[]): void {
    this.pending = this.pending.filter((p) => !keys.includes(p.probe.ticket.key));
  }

  /** Runs until `until` (inclusive). */
  runUntil(until: number): void {
    for (;;) {
      while (this.pending.length > 0 && this.pending[0].at <= this.now) {
        const p = this.pending.shift() as Pending;
        const result: CheckResult = { ...p.answer, at: p.at };
        const c = this.engine.complete(p.probe.ticket, result);
        if (c.stale || !c.target) continue;
        this.record.results.push({ target: c.target, result });
        if (c.transition) {
          this.record.transitions.push(c.transition);
          const t = c.transition;
          this.record.log.push(
            `transition ${t.target.service}/${t.target.fwmark} ${t.from}->${t.to}`,
          );
        }
        this.note(p.at, c.updates, c.warmupsEnded);
      }
      const out = this.engine.next(this.now);
      this.note(this.now, out.updates, out.warmupsEnded);
      for (const probe of out.probes) {
        this.record.probes.push({ target: probe.target, startedAt: this.now });
        const answer = this.world(probe.target, this.now, probe);
        const at = this.now + answer.latencyMs;
        this.pending.push({ at, seq: this.seq++, probe, answer });
        this.pending.sort((a, b) => a.at - b.at || a.seq - b.seq);
      }
      const candidates = [out.wakeAt, this.pending[0]?.at].filter(
        (t): t is number => t !== undefined,
      );
      if (candidates.length === 0) return;
      const t = Math.max(this.now, Math.min(...candidates));
      if (t > until) {
        this.now = until;
        return;
      }
      this.now = t;
    }
  }
}
