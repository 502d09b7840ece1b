// Every decision of the health checker, without I/O: which probe is due when, what each
// result does to its target, when a service's warm-up ends, which health to publish, and
// what a new configuration keeps. The driver (checker.ts) only runs probes and timers
// around it. Time is passed in; randomness is injected.
import {
  type CheckResult,
  initialState,
  isChanging,
  nextDueAt,
  nextWaitMs,
  observe,
  type TargetState,
  type Transition,
} from "./machine.js";
import { Schedule } from "./schedule.js";
import type { CheckKind, Health, HealthCheckSpec, HealthServiceSpec } from "./spec.js";
import { checkPort, validateServices } from "./validate.js";
import { Warmup, type WarmupEnd } from "./warmup.js";

/** Names one target of one service. */
export interface TargetRef {
  service: string;
  fwmark: number;
  address: string;
  /** Where the probe goes (undefined only for exec checks of a service without a port). */
  port?: number;
  kind: CheckKind;
}

/** A transition with the target it happened to. */
export interface TargetTransition extends Transition {
  target: TargetRef;
}

/** Identifies one probe; a result whose ticket is no longer current is ignored. */
export interface ProbeTicket {
  key: string;
  token: number;
}

/** A probe to run now. */
export interface ProbeRequest {
  ticket: ProbeTicket;
  target: TargetRef;
  spec: HealthCheckSpec;
  startedAt: number;
}

/** Health to record for some targets of one service, in one step. */
export interface HealthUpdate {
  service: string;
  changes: { fwmark: number; health: Health }[];
  /** "warm-up" when the service's first verdicts are published together. */
  cause: "warm-up" | "warm-up timeout" | "transition";
}

export interface WarmupEnded {
  service: string;
  startedAt: number;
  at: number;
  how: WarmupEnd;
  up: number;
  down: number;
  /** Targets still unknown when it ended (only after a timeout). */
  unknown: number[];
}

export interface ReconfigureSummary {
  added: TargetRef[];
  removed: TargetRef[];
  /** Targets whose probe changed (address, port, kind or its options): back to unknown. */
  reset: TargetRef[];
  /** Targets whose timing or thresholds changed: health and counters kept. */
  retimed: TargetRef[];
  unchanged: number;
  /** Probes in flight for removed or reset targets: the driver cancels them. */
  cancelled: ProbeTicket[];
  /** A warm-up can end when the last target it waited for is removed. */
  updates: HealthUpdate[];
  warmupsEnded: WarmupEnded[];
}

export interface TargetSnapshot extends TargetRef {
  health: Health;
  since: number;
  changing: boolean;
  successes: number;
  failures: number;
  checks: number;
  failedChecks: number;
  ups: number;
  downs: number;
  lastResult?: CheckResult;
  /** When the next probe starts; undefined while one is running. */
  nextCheckAt?: number;
  probing: boolean;
}

export interface ServiceSnapshot {
  name: string;
  ready: boolean;
  warmup: {
    startedAt: number;
    deadline: number;
    ended?: { at: number; how: WarmupEnd };
    waitingFor: number[];
  };
  targets: TargetSnapshot[];
}

interface TargetEntry {
  key: string;
  ref: TargetRef;
  spec: HealthCheckSpec;
  /** Everything that decides what the probe does; a change resets the target. */
  identity: string;
  state: TargetState;
  token: number;
  inFlightSince?: number;
}

interface ServiceEntry {
  name: string;
  warmup: Warmup;
  targets: Map<number, TargetEntry>;
}

const TIMING_FIELDS = new Set([
  "intervalMs",
  "fastIntervalMs",
  "timeoutMs",
  "rise",
  "fall",
  "jitter",
]);

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** What the probe of a target does, timing left out. */
function probeIdentity(ref: TargetRef, spec: HealthCheckSpec): string {
  const fields = Object.entries(spec)
    .filter(([k, v]) => !TIMING_FIELDS.has(k) && v !== undefined)
    .map(([k, v]) => [k, v instanceof Uint8Array ? hex(v) : v])
    .sort(([a], [b]) => String(a).localeCompare(String(b)));
  return JSON.stringify([ref.address, ref.port ?? null, fields]);
}

function keyOf(service: string, fwmark: number): string {
  return `${service}\u0000${fwmark}`;
}

function timingOf(spec: HealthCheckSpec): string {
  return [...TIMING_FIELDS].map((k) => spec[k as keyof HealthCheckSpec]).join(",");
}

export class HealthEngine {
  private services = new Map<string, ServiceEntry>();
  private entries = new Map<string, TargetEntry>();
  private schedule = new Schedule<string>();
  private nextToken = 1;

  /** `random` returns a number in [0, 1): Math.random, or a seeded generator in tests. */
  constructor(private readonly random: () => number = Math.random) {}

  /**
   * Takes a new set of services (the first one, or a reload). Validates everything first
   * and throws HealthConfigError without changing anything on a bad spec. Targets whose
   * probe is unchanged keep their health, counters and schedule.
   */
  configure(services: readonly HealthServiceSpec[], now: number): ReconfigureSummary {
    validateServices(services);
    const summary: ReconfigureSummary = {
      added: [],
      removed: [],
      reset: [],
      retimed: [],
      unchanged: 0,
      cancelled: [],
      updates: [],
      warmupsEnded: [],
    };
    const wanted = new Set(services.map((s) => s.name));
    for (const [name, svc] of this.services) {
      if (wanted.has(name)) continue;
      for (const entry of svc.targets.values()) this.dropTarget(entry, summary);
      this.services.delete(name);
    }
    for (const spec of services) this.configureService(spec, now, summary);
    return summary;
  }

  private configureService(
    spec: HealthServiceSpec,
    now: number,
    summary: ReconfigureSummary,
  ): void {
    const checked = spec.targets.flatMap((t) => {
      const check = t.check === undefined ? spec.check : t.check;
      return check ? [{ target: t, check }] : [];
    });
    let svc = this.services.get(spec.name);
    if (!svc) {
      svc = {
        name: spec.name,
        warmup: new Warmup(
          now,
          spec.warmupMs,
          checked.map((c) => c.target.fwmark),
        ),
        targets: new Map(),
      };
      this.services.set(spec.name, svc);
    }
    const keep = new Set(checked.map((c) => c.target.fwmark));
    for (const [fwmark, entry] of svc.targets) {
      if (keep.has(fwmark)) continue;
      this.dropTarget(entry, summary);
      svc.targets.delete(fwmark);
      if (svc.warmup.remove(fwmark, now)) {
        const ended = this.endWarmup(svc, "warm-up");
        summary.warmupsEnded.push(ended.event);
        if (ended.update) summary.updates.push(ended.update);
      }
    }
    for (const { target, check } of checked) {
      const ref: TargetRef = {
        service: spec.name,
        fwmark: target.fwmark,
        address: target.address,
        port: checkPort(check, spec.port),
        kind: check.kind,
      };
      const identity = probeIdentity(ref, check);
      const old = svc.targets.get(target.fwmark);
      if (old && old.identity === identity) {
        if (timingOf(old.spec) === timingOf(check)) {
          summary.unchanged++;
        } else {
          old.spec = check;
          this.retime(old, now);
          summary.retimed.push(ref);
        }
        continue;
      }
      if (old) {
        this.dropTarget(old, summary, false);
        summary.reset.push(ref);
        svc.warmup.add(target.fwmark);
      } else {
        summary.added.push(ref);
        svc.warmup.add(target.fwmark);
      }
      const entry: TargetEntry = {
        key: keyOf(spec.name, target.fwmark),
        ref,
        spec: check,
        identity,
        state: initialState(now),
        token: 0,
      };
      svc.targets.set(target.fwmark, entry);
      this.entries.set(entry.key, entry);
      // First probes spread over jitter x fastInterval, so a restart does not send every
      // probe in the same millisecond, yet every target is probed at once when jitter is 0.
      this.schedule.set(entry.key, now + this.random() * check.jitter * check.fastIntervalMs);
    }
  }

  /** New timing for a kept target: its next probe is no later than the new timing says. */
  private retime(entry: TargetEntry, now: number): void {
    const due = this.schedule.dueAt(entry.key);
    if (due === undefined) return; // in flight: its completion uses the new timing
    const wait = nextWaitMs(entry.state, entry.spec, this.random());
    this.schedule.set(entry.key, Math.min(due, now + wait));
  }

  private dropTarget(entry: TargetEntry, summary: ReconfigureSummary, removed = true): void {
    if (entry.inFlightSince !== undefined) {
      summary.cancelled.push({ key: entry.key, token: entry.token });
    }
    this.schedule.delete(entry.key);
    this.entries.delete(entry.key);
    if (removed) summary.removed.push(entry.ref);
  }

  /**
   * What is due at `now`: warm-ups that time out (and the health they publish), the
   * probes to start (now in flight), and when to call again.
   */
  next(now: number): {
    probes: ProbeRequest[];
    updates: HealthUpdate[];
    warmupsEnded: WarmupEnded[];
    wakeAt: number | undefined;
  } {
    const updates: HealthUpdate[] = [];
    const warmupsEnded: WarmupEnded[] = [];
    let wakeAt: number | undefined;
    for (const svc of this.services.values()) {
      if (svc.warmup.expire(now)) {
        const ended = this.endWarmup(svc, "warm-up timeout");
        warmupsEnded.push(ended.event);
        if (ended.update) updates.push(ended.update);
      } else if (!svc.warmup.ready) {
        wakeAt = Math.min(wakeAt ?? svc.warmup.deadline, svc.warmup.deadline);
      }
    }
    const { due, wakeAt: probeWake } = this.schedule.next(now);
    const probes = due.flatMap((key) => {
      const entry = this.entries.get(key);
      if (!entry) return [];
      entry.token = this.nextToken++;
      entry.inFlightSince = now;
      return [
        {
          ticket: { key, token: entry.token },
          target: entry.ref,
          spec: entry.spec,
          startedAt: now,
        },
      ];
    });
    if (probeWake !== undefined) wakeAt = Math.min(wakeAt ?? probeWake, probeWake);
    return { probes, updates, warmupsEnded, wakeAt };
  }

  private endWarmup(
    svc: ServiceEntry,
    cause: HealthUpdate["cause"],
  ): { event: WarmupEnded; update?: HealthUpdate } {
    const changes: HealthUpdate["changes"] = [];
    const unknown: number[] = [];
    for (const e of svc.targets.values()) {
      if (e.state.health === "unknown") unknown.push(e.ref.fwmark);
      else changes.push({ fwmark: e.ref.fwmark, health: e.state.health });
    }
    const ended = svc.warmup.ended ?? { at: svc.warmup.deadline, how: "timeout" as const };
    const count = (h: Health) => changes.filter((c) => c.health === h).length;
    const event: WarmupEnded = {
      service: svc.name,
      startedAt: svc.warmup.startedAt,
      at: ended.at,
      how: ended.how,
      up: count("up"),
      down: count("down"),
      unknown,
    };
    return changes.length > 0
      ? { event, update: { service: svc.name, changes, cause } }
      : { event };
  }

  /**
   * Feeds the result of a probe (its time is `result.at`). A result for a probe that was
   * cancelled, or for a target reconfigured meanwhile, is ignored (`stale`).
   */
  complete(
    ticket: ProbeTicket,
    result: CheckResult,
  ): {
    stale: boolean;
    target?: TargetRef;
    transition?: TargetTransition;
    updates: HealthUpdate[];
    warmupsEnded: WarmupEnded[];
  } {
    const entry = this.entries.get(ticket.key);
    if (!entry || entry.token !== ticket.token || entry.inFlightSince === undefined) {
      return { stale: true, updates: [], warmupsEnded: [] };
    }
    const startedAt = entry.inFlightSince;
    entry.inFlightSince = undefined;
    const { state, transition } = observe(entry.state, result, entry.spec);
    entry.state = state;
    const wait = nextWaitMs(state, entry.spec, this.random());
    this.schedule.set(entry.key, nextDueAt(startedAt, result.at, wait));
    const updates: HealthUpdate[] = [];
    const warmupsEnded: WarmupEnded[] = [];
    const svc = this.services.get(entry.ref.service);
    if (!transition || !svc) return { stale: false, target: entry.ref, updates, warmupsEnded };
    if (svc.warmup.ready) {
      // Published at once: the service's table already had every target's verdict.
      updates.push({
        service: svc.name,
        changes: [{ fwmark: entry.ref.fwmark, health: transition.to }],
        cause: "transition",
      });
    } else if (transition.from === "unknown" && svc.warmup.verdict(entry.ref.fwmark, result.at)) {
      // The last first verdict: publish the whole service in one step.
      const ended = this.endWarmup(svc, "warm-up");
      warmupsEnded.push(ended.event);
      if (ended.update) updates.push(ended.update);
    }
    return {
      stale: false,
      target: entry.ref,
      transition: { ...transition, target: entry.ref },
      updates,
      warmupsEnded,
    };
  }

  /**
   * Forgets a probe that was cancelled without a verdict (the checker stopping): the target
   * is due again at `now`, with its state untouched.
   */
  abandon(ticket: ProbeTicket, now: number): void {
    const entry = this.entries.get(ticket.key);
    if (!entry || entry.token !== ticket.token || entry.inFlightSince === undefined) return;
    entry.inFlightSince = undefined;
    this.schedule.set(entry.key, now);
  }

  /** True once the service's warm-up ended (its health is being published). */
  isReady(service: string): boolean {
    return this.services.get(service)?.warmup.ready ?? false;
  }

  /** Current health of every checked target, per service, for status, metrics and tests. */
  snapshot(): ServiceSnapshot[] {
    return [...this.services.values()].map((svc) => ({
      name: svc.name,
      ready: svc.warmup.ready,
      warmup: {
        startedAt: svc.warmup.startedAt,
        deadline: svc.warmup.deadline,
        ended: svc.warmup.ended,
        waitingFor: svc.warmup.waitingFor(),
      },
      targets: [...svc.targets.values()].map((e) => this.targetSnapshot(e)),
    }));
  }

  private targetSnapshot(e: TargetEntry): TargetSnapshot {
    const s = e.state;
    return {
      ...e.ref,
      health: s.health,
      since: s.since,
      changing: isChanging(s),
      successes: s.successes,
      failures: s.failures,
      checks: s.checks,
      failedChecks: s.failedChecks,
      ups: s.ups,
      downs: s.downs,
      lastResult: s.lastResult,
      nextCheckAt: this.schedule.dueAt(e.key),
      probing: e.inFlightSince !== undefined,
    };
  }
}
