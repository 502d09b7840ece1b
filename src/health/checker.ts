// The thin driver of the health checks: runs the engine's decisions on real timers, the
// probes on real sockets and processes, logs each transition once, and hands health to a
// sink. Everything it decides is decided by the engine (engine.ts).
import { performance } from "node:perf_hooks";
import {
  HealthEngine,
  type HealthUpdate,
  type ProbeRequest,
  type ReconfigureSummary,
  type ServiceSnapshot,
  type TargetRef,
  type TargetTransition,
  type WarmupEnded,
} from "./engine.js";
import { transitionLine, warmupLine } from "./format.js";
import type { CheckResult } from "./machine.js";
import { type Prober, runProbe } from "./probe/index.js";
import type { HealthSink } from "./sink.js";
import type { Health, HealthServiceSpec } from "./spec.js";

/** What the checker logs through (src/log/logger.ts's Logger fits). */
export interface HealthLog {
  notice(message: string): void;
  warning(message: string): void;
  info(message: string): void;
}

/** Called on every event, for metrics (a check-duration histogram, transition counters). */
export interface HealthHooks {
  /** Every probe result of a current target. */
  onCheck?(target: TargetRef, result: CheckResult): void;
  /** Every transition, once, after it is logged. */
  onTransition?(event: TargetTransition): void;
  onWarmupEnded?(event: WarmupEnded): void;
  /** The sink recorded (error undefined) or failed to record some health. */
  onPublish?(service: string, changes: number, error?: unknown): void;
}

export interface HealthCheckerOptions {
  sink: HealthSink;
  log: HealthLog;
  hooks?: HealthHooks;
  /** Runs one probe; the real probers by default. */
  prober?: Prober;
  /** Milliseconds; monotonic, on the Unix epoch scale, by default. */
  clock?: () => number;
  /** In [0, 1); Math.random by default. */
  random?: () => number;
  /** Wait before trying a failed sink again. */
  retryMs?: number;
}

/** Milliseconds on the Unix epoch scale that never go backwards (NTP steps aside). */
export function monotonicNow(): number {
  return performance.timeOrigin + performance.now();
}

interface Running {
  token: number;
  controller: AbortController;
  done: Promise<void>;
}

export class HealthChecker {
  private readonly engine: HealthEngine;
  private readonly prober: Prober;
  private readonly clock: () => number;
  private readonly retryMs: number;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Map<string, Running>();
  /** Health not yet recorded by the sink, per service, newest per fwmark. */
  private readonly pending = new Map<string, Map<number, Health>>();
  private flushing: Promise<void> | undefined;
  private flushQueued = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly failing = new Set<string>();

  constructor(private readonly options: HealthCheckerOptions) {
    this.engine = new HealthEngine(options.random ?? Math.random);
    this.prober = options.prober ?? runProbe;
    this.clock = options.clock ?? monotonicNow;
    this.retryMs = options.retryMs ?? 1000;
  }

  /**
   * Takes the services to check: the first configuration or a reload. Throws
   * HealthConfigError and changes nothing if a spec is bad. Unchanged targets keep their
   * health and schedule; probes of removed or changed targets are cancelled.
   */
  configure(services: readonly HealthServiceSpec[]): ReconfigureSummary {
    const summary = this.engine.configure(services, this.clock());
    for (const ticket of summary.cancelled) this.inFlight.get(ticket.key)?.controller.abort();
    // Health not yet recorded for a target that is gone is of no use to anyone.
    for (const t of summary.removed) {
      const p = this.pending.get(t.service);
      p?.delete(t.fwmark);
      if (p?.size === 0) this.pending.delete(t.service);
    }
    const changed = [
      [summary.added.length, "added"],
      [summary.removed.length, "removed"],
      [summary.reset.length, "with a new check"],
      [summary.retimed.length, "with new timing"],
    ].filter(([n]) => n !== 0);
    if (changed.length > 0) {
      this.options.log.info(
        `health: targets ${changed.map(([n, what]) => `${n} ${what}`).join(", ")}, ${summary.unchanged} unchanged`,
      );
    }
    this.handle(summary.updates, summary.warmupsEnded);
    if (this.running) this.pump();
    return summary;
  }

  /** Starts probing (the targets of the last configure, and those of later ones). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.pump();
  }

  /**
   * Stops probing: cancels the probes in flight and waits for them to let go of their
   * sockets and processes, then hands the sink what it has not recorded yet (once).
   */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    clearTimeout(this.retryTimer);
    this.timer = undefined;
    this.retryTimer = undefined;
    const running = [...this.inFlight.values()];
    for (const r of running) r.controller.abort();
    await Promise.all(running.map((r) => r.done));
    await this.flushing;
    await this.flush();
  }

  isReady(service?: string): boolean {
    const services = this.engine.snapshot();
    return service === undefined
      ? services.every((s) => s.ready)
      : (services.find((s) => s.name === service)?.ready ?? false);
  }

  /** Every service and target as the checker sees them now. */
  snapshot(): ServiceSnapshot[] {
    return this.engine.snapshot();
  }

  /** Starts what is due, and sleeps until the next thing is. */
  private pump(): void {
    if (!this.running) return;
    const now = this.clock();
    const next = this.engine.next(now);
    this.handle(next.updates, next.warmupsEnded);
    for (const probe of next.probes) this.launch(probe);
    clearTimeout(this.timer);
    this.timer = undefined;
    if (next.wakeAt !== undefined) {
      // Rounded up: a timer that fires a fraction of a millisecond early finds nothing due.
      const delay = Math.max(0, Math.ceil(next.wakeAt - now));
      this.timer = setTimeout(() => this.pump(), delay);
    }
  }

  private launch(probe: ProbeRequest): void {
    const controller = new AbortController();
    const { ticket, target, spec } = probe;
    const done = this.prober(target, spec, controller.signal).then(
      (outcome) => this.completed(probe, outcome),
      (err) => this.completed(probe, { ok: false, reason: String(err), latencyMs: 0 }),
    );
    this.inFlight.set(ticket.key, { token: ticket.token, controller, done });
  }

  private completed(
    probe: ProbeRequest,
    outcome: { ok: boolean; reason: string; latencyMs: number },
  ): void {
    const { ticket } = probe;
    if (this.inFlight.get(ticket.key)?.token === ticket.token) this.inFlight.delete(ticket.key);
    // A probe cancelled by stop() says nothing about the target.
    if (!this.running && outcome.reason === "cancelled") {
      this.engine.abandon(ticket, this.clock());
      return;
    }
    const result: CheckResult = { ...outcome, at: this.clock() };
    const c = this.engine.complete(ticket, result);
    if (c.stale || !c.target) return;
    const target = c.target;
    this.hook(() => this.options.hooks?.onCheck?.(target, result));
    if (c.transition) {
      const transition = c.transition;
      this.options.log.notice(transitionLine(transition));
      this.hook(() => this.options.hooks?.onTransition?.(transition));
    }
    this.handle(c.updates, c.warmupsEnded);
    this.pump();
  }

  private handle(updates: HealthUpdate[], warmups: WarmupEnded[]): void {
    for (const w of warmups) {
      const line = warmupLine(w);
      if (w.how === "timeout") this.options.log.warning(line);
      else this.options.log.notice(line);
      this.hook(() => this.options.hooks?.onWarmupEnded?.(w));
    }
    if (updates.length === 0) return;
    for (const u of updates) {
      const p = this.pending.get(u.service) ?? new Map<number, Health>();
      for (const c of u.changes) p.set(c.fwmark, c.health);
      this.pending.set(u.service, p);
    }
    this.queueFlush();
  }

  /** Transitions of one moment (a warm-up, probes finishing together) go in one update. */
  private queueFlush(): void {
    if (this.flushQueued) return;
    this.flushQueued = true;
    setImmediate(() => {
      this.flushQueued = false;
      void this.flush();
    });
  }

  /** Hands every service's pending health to the sink, one call per service. */
  private async flush(): Promise<void> {
    if (this.flushing) {
      await this.flushing;
      if (this.pending.size > 0) this.queueFlush();
      return;
    }
    this.flushing = this.flushAll();
    try {
      await this.flushing;
    } finally {
      this.flushing = undefined;
    }
  }

  private async flushAll(): Promise<void> {
    const batches = [...this.pending];
    this.pending.clear();
    for (const [service, health] of batches) {
      const changes = [...health].map(([fwmark, h]) => ({ fwmark, health: h }));
      try {
        await this.options.sink.publish(service, changes);
        this.hook(() => this.options.hooks?.onPublish?.(service, changes.length));
        if (this.failing.delete(service)) {
          this.options.log.notice(`health: ${service}: health recorded again`);
        }
      } catch (err) {
        this.hook(() => this.options.hooks?.onPublish?.(service, changes.length, err));
        // Keep them, unless newer health for the same target came in meanwhile.
        const p = this.pending.get(service) ?? new Map<number, Health>();
        for (const c of changes) if (!p.has(c.fwmark)) p.set(c.fwmark, c.health);
        this.pending.set(service, p);
        if (!this.failing.has(service)) {
          this.failing.add(service);
          this.options.log.warning(
            `health: ${service}: cannot record the health of ${changes.length} target(s), retrying every ${this.retryMs} ms: ${(err as Error)?.message ?? err}`,
          );
        }
        this.scheduleRetry();
      }
    }
  }

  private scheduleRetry(): void {
    if (this.retryTimer || !this.running) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      void this.flush();
    }, this.retryMs);
  }

  private hook(call: () => void): void {
    try {
      call();
    } catch (err) {
      this.options.log.warning(`health: a hook failed: ${(err as Error)?.message ?? err}`);
    }
  }
}
