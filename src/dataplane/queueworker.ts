// One queue's packet handling, per batch: classify -> decide -> verdict -> counters by
// reason -> trace. Around it, what keeps the decision current: the load balancers'
// tables (refreshed when their shared state moves), the flows, the tier, and the
// fragment table's re-injection. No worker_threads here (worker.ts is the thin glue), so
// tests drive it with batches of their own.
import { statSync } from "node:fs";
import { Decider, Decision, type FlowRouting, Verdict } from "../decide/index.js";
import { type CompiledFlows, FlowMatcher } from "../flows/index.js";
import type { PacketBatch, QueueOptions, QueueStats, VerdictWriter } from "../nfqueue/queue.js";
import { type ClassifyOptions, classify, encapPortMap, PacketInfo } from "../packet/classify.js";
import { openState, type StateFile } from "../state/store.js";
import { Kind, TraceBit } from "../trace/kinds.js";
import { flowConfJson, targetJson } from "../trace/record.js";
import { C, countDecision, mapCounters } from "./counters.js";
import { FragmentHandler, type FragmentOptions } from "./fraghandler.js";
import { LbView, NO_SLOT } from "./lbview.js";
import { PacketTracer } from "./tracer.js";

export interface WorkerConfig {
  /** The load balancer (state) this queue serves when no flows are defined. */
  name: string;
  queue: QueueOptions;
  /** Mark for packets when no target is active; 0 = drop them. */
  notargetsFwmark: number;
  /** Accept invalid packets unmarked instead of dropping them. */
  acceptInvalid: boolean;
  /** Mark for packets no flow matches (when flows are defined); 0 = drop them. */
  nolbFwmark: number;
  /** ICMP echo matches any flow whose addresses match. */
  promiscuousPing: boolean;
  /** Set for the fragment queue's worker: track fragments, re-inject through a TUN. */
  fragments?: FragmentOptions;
  /**
   * The load-balancer tier (a state listing every instance by fwmark): a fragment whose
   * addresses hash to another instance is marked for it, so all fragments of a datagram
   * meet in one instance, whichever received them.
   */
  tier?: string;
  /** The flows (compiled by the daemon's main thread) when the worker starts; null = none. */
  flows?: CompiledFlows | null;
  /** The trace flows, likewise (only while somebody traces packets). */
  traceFlows?: CompiledFlows | null;
  /**
   * Tracing: the daemon's trace mask (one Int32 word, the union of the attached tracers'
   * selections, loaded once per batch) and this worker's ring for per-packet records.
   */
  trace?: { mask: SharedArrayBuffer; ring: SharedArrayBuffer };
}

export type WorkerMessage =
  | { type: "ready"; queue: number }
  | { type: "error"; queue: number; message: string }
  | { type: "log"; level: "warning" | "notice" | "info" | "debug"; message: string }
  | { type: "stopped"; queue: number }
  /** A trace record that is not per packet (flow-conf, target): rare, any size. */
  | { type: "trace"; kind: number; record: string };

export class QueueWorker {
  readonly counters: Float64Array;
  private readonly q: number;
  private readonly info = new PacketInfo();
  private readonly decision = new Decision();
  private readonly decider: Decider;
  private readonly tracer: PacketTracer;
  private readonly fragments: FragmentHandler | undefined;
  private classifyOptions: ClassifyOptions;
  private state: StateFile;
  /** Load balancers other than the own one that flows point to, by name. */
  private flowViews = new Map<string, LbView>();
  /** The flows applied last (re-applied when the own state file is re-created). */
  private compiledFlows: CompiledFlows | null = null;
  private traceFlows: FlowMatcher | undefined;
  /** The trace bits housekeeping saw last: a newly selected kind gets the current state. */
  private snapshotBits = 0;
  /** Per table: damage episodes already counted and logged, and whether it was damaged. */
  private readonly damageSeen = new WeakMap<LbView, { count: number; damaged: boolean }>();
  /** A re-created state file that could not be loaded (not tried again). */
  private reloadFailedInode = -1;

  /** Opens the load balancer's state (and the tier's), maps the counters. Throws. */
  constructor(
    private readonly config: WorkerConfig,
    private readonly post: (message: WorkerMessage) => void,
  ) {
    this.q = config.queue.queue;
    this.state = openState(config.name);
    const own = new LbView(this.state);
    this.classifyOptions = classifyOptionsOf(this.state);
    this.counters = mapCounters(config.name, this.q, this.state.config.maxTargets);
    this.decider = new Decider(own, config.name, {
      notargetsFwmark: config.notargetsFwmark,
      nolbFwmark: config.nolbFwmark,
      acceptInvalid: config.acceptInvalid,
    });
    this.decider.ownFwmark = this.state.config.ownFwmark;
    this.tracer = new PacketTracer(this.q, config.trace);
    this.takeChanges(own.refresh());
    if (config.tier !== undefined) {
      const tier = new LbView(openState(config.tier));
      tier.refresh();
      this.decider.tier = tier;
    }
    if (config.fragments) {
      this.fragments = new FragmentHandler(config.fragments, this.counters);
      this.decider.fragments = this.fragments.table;
    }
    this.applyFlows(config.flows ?? null);
    this.traceFlows = traceMatcher(config.traceFlows ?? null, config.promiscuousPing);
    this.counters[C.running] = 1;
  }

  /** The queue's batch handler. */
  readonly onBatch = (batch: PacketBatch, verdicts: VerdictWriter): void => {
    const now = this.beginBatch();
    const { buf, ids, payloadOffset, payloadLength, origLength } = batch;
    const { info, decision: d, decider, counters, tracer, classifyOptions } = this;
    let largest = 0;
    for (let i = 0; i < batch.count; i++) {
      const off = payloadOffset[i];
      const len = payloadLength[i];
      const orig = origLength[i];
      if (orig > largest) largest = orig;
      classify(buf, off, len, classifyOptions, info);
      decider.decide(info, buf, off, len, orig, now, d);
      if (d.verdict === Verdict.Accept) verdicts.accept(ids[i], d.fwmark);
      else if (d.verdict === Verdict.Drop) verdicts.drop(ids[i]);
      else verdicts.acceptUnmarked(ids[i]);
      countDecision(counters, d, decider.own);
      if (tracer.perPacket && info.invalid === 0) tracer.packet(info, buf, d, decider.flows, now);
    }
    if (largest > counters[C.largestPacket]) counters[C.largestPacket] = largest;
    this.endBatch(batch.count, now);
  };

  /** Follows the tables, loads the trace mask; returns the batch's time. */
  private beginBatch(): number {
    this.tracer.loadMask();
    const now = this.followConfig();
    this.tracer.beginBatch(this.traceFlows, this.fragments !== undefined);
    return now;
  }

  private endBatch(count: number, now: number): void {
    const f = this.fragments;
    if (f !== undefined) this.tracer.reinjected(f.afterBatch(now), now);
    this.counters[C.packets] += count;
    this.counters[C.batches]++;
  }

  /** Once a second: publish socket counters, expire fragments, follow a re-created state. */
  housekeeping(stats: Pick<QueueStats, "sendErrors" | "recvErrors">): void {
    const now = Date.now();
    this.counters[C.updatedAt] = now;
    // Table and flow changes are picked up at the next batch; a tracer of them should not
    // wait for traffic to see them.
    const bits = this.tracer.loadMask();
    if ((bits & (TraceBit.target | TraceBit.flowConf)) !== 0) {
      this.followConfig();
      this.traceSnapshot(bits & ~this.snapshotBits);
    }
    this.snapshotBits = bits;
    this.fragments?.afterBatch(now);
    this.auditStates();
    this.counters[C.sendErrors] = stats.sendErrors;
    this.counters[C.recvErrors] = stats.recvErrors;
    this.followRecreatedState();
  }

  /** After the last batch: the queue is closed. */
  close(): void {
    this.fragments?.close();
    this.counters[C.running] = 0;
  }

  /** Follows changes of the tables (each batch; and each second while traced). */
  private followConfig(): number {
    const own = this.decider.own as LbView;
    if (own.stale()) this.takeChanges(own.refresh());
    for (const [name, v] of this.flowViews) {
      if (v.stale() && v.refresh() !== undefined) this.traceTarget(name, v);
      this.reportDamage(name, v);
    }
    const tier = this.decider.tier as LbView | undefined;
    if (tier !== undefined) {
      if (tier.stale() && tier.refresh() !== undefined) this.traceTarget(this.tierName(), tier);
      this.reportDamage(this.tierName(), tier);
    }
    return Date.now();
  }

  private tierName(): string {
    return this.config.tier ?? "tier";
  }

  /** Verifies the shared states in place (once a second): damage without a new generation. */
  private auditStates(): void {
    const own = this.decider.own as LbView;
    own.audit();
    this.reportDamage(this.config.name, own);
    for (const [name, v] of this.flowViews) {
      v.audit();
      this.reportDamage(name, v);
    }
    const tier = this.decider.tier as LbView | undefined;
    if (tier !== undefined) {
      tier.audit();
      this.reportDamage(this.tierName(), tier);
    }
  }

  /**
   * Counts a table's new damage episodes and logs each once (the table in use stays),
   * and says once when its state verifies again.
   */
  private reportDamage(name: string, v: LbView): void {
    const seen = this.damageSeen.get(v) ?? { count: 0, damaged: false };
    if (v.damageCount === seen.count && v.damaged === seen.damaged) return;
    if (v.damageCount !== seen.count) {
      this.counters[C.stateDamage] += v.damageCount - seen.count;
      this.log(
        "warning",
        `queue ${this.q}: state of "${name}" is damaged (${v.lastDamage}): keeping the table of generation ${v.generation}; repair: nflb init --force --name ${name}`,
      );
    } else if (!v.damaged) {
      this.log(
        "notice",
        `queue ${this.q}: state of "${name}" verifies again (generation ${v.generation})`,
      );
    }
    this.damageSeen.set(v, { count: v.damageCount, damaged: v.damaged });
  }

  /** After a refresh of the own table: counters, traces and a log line for a new table. */
  private takeChanges(changed: number[] | undefined): void {
    const own = this.decider.own as LbView;
    this.reportDamage(this.config.name, own);
    if (!changed) return; // a writer is busy, or damage; the next change tries again
    for (const slot of changed) this.counters[C.perSlot + slot] = 0;
    this.counters[C.tableChanges]++;
    this.counters[C.generation] = own.generation;
    this.counters[C.tableChangedAt] = Date.now();
    this.traceTarget(this.config.name, own);
    this.log(
      "info",
      `queue ${this.q}: table generation ${own.generation}, ${own.activeTargets} active targets`,
    );
  }

  /**
   * A state file deleted and created anew (nflb delete + init): reopen it. The current
   * table stays in use unless the new file gives a good copy.
   */
  private followRecreatedState(): void {
    let inode = -1;
    try {
      inode = statSync(this.state.path).ino;
    } catch {
      return; // deleted: keep balancing with the last configuration until it comes back
    }
    if (inode === this.state.inode || inode === this.reloadFailedInode) return;
    try {
      const next = openState(this.config.name);
      const view = new LbView(next);
      const changed = view.refresh();
      if (changed === undefined) {
        next.close();
        throw new Error(view.damaged ? `it is damaged (${view.lastDamage})` : "it is busy");
      }
      const old = this.state;
      this.state = next;
      this.decider.own = view;
      this.takeChanges(changed);
      this.applyFlows(this.compiledFlows); // flows pointing to the own load balancer
      old.close();
      this.log("notice", `state file ${this.state.path} was re-created; reloaded`);
    } catch (err) {
      this.reloadFailedInode = inode; // said once per file
      this.log(
        "warning",
        `cannot reload the re-created state, keeping the current table: ${(err as Error).message}`,
      );
    }
  }

  /**
   * Adopts flows compiled by the main thread (null: none), between two batches. A flow
   * whose load balancer cannot be opened keeps the previous flows.
   */
  applyFlows(compiled: CompiledFlows | null): void {
    try {
      if (compiled === null) {
        this.decider.flows = undefined;
        this.flowViews = new Map();
      } else {
        const matcher = new FlowMatcher(compiled, { promiscuousPing: this.config.promiscuousPing });
        const views = new Map<string, LbView>();
        const lbNames = matcher.flows.map((f) => f.target);
        const lbs = lbNames.map((name) => this.viewFor(name, views));
        this.decider.flows = { matcher, lbs, lbNames } satisfies FlowRouting;
        this.flowViews = views;
      }
      this.compiledFlows = compiled;
      this.classifyOptions = classifyOptionsOf(this.state, compiled);
      const c = this.counters;
      c[C.flowsApplied]++;
      c[C.flowsAppliedAt] = Date.now();
      c[C.flows] = compiled?.n ?? 0;
      this.log("info", `queue ${this.q}: ${compiled?.n ?? 0} flows`);
      this.traceFlowConf("flows", this.flowNames());
    } catch (err) {
      const error = (err as Error).message;
      this.log("warning", `flows not applied, keeping the previous ones: ${error}`);
      this.traceFlowConf("flows", this.flowNames(), error);
    }
  }

  /** Adopts trace flows compiled by the main thread (null: none). */
  applyTraceFlows(compiled: CompiledFlows | null): void {
    this.traceFlows = traceMatcher(compiled, this.config.promiscuousPing);
    this.traceFlowConf("trace-flows", this.traceFlows?.flows.map((x) => x.name) ?? []);
  }

  /** The table of a flow's load balancer: the own one, one opened already, or a new view. */
  private viewFor(name: string, views: Map<string, LbView>): LbView {
    if (name === this.config.name) return this.decider.own as LbView;
    let v = views.get(name) ?? this.flowViews.get(name);
    if (v === undefined) {
      v = new LbView(openState(name));
      v.refresh();
    }
    views.set(name, v);
    return v;
  }

  private flowNames(): string[] {
    return this.decider.flows?.matcher.flows.map((x) => x.name) ?? [];
  }

  /** Target and flow-conf records of the current state, for the kinds in `bits`. */
  private traceSnapshot(bits: number): void {
    if ((bits & TraceBit.target) !== 0) {
      this.traceTarget(this.config.name, this.decider.own as LbView, true);
      for (const [name, v] of this.flowViews) this.traceTarget(name, v, true);
    }
    if ((bits & TraceBit.flowConf) !== 0)
      this.traceFlowConf("flows", this.flowNames(), undefined, true);
  }

  /** A target record: a load balancer's table changed (only when the target trace is on). */
  private traceTarget(lbName: string, v: LbView, force = false): void {
    if (!force && (this.tracer.bits & TraceBit.target) === 0) return;
    const slots = new Set<number>();
    for (let i = 0; i < v.slotTable.length; i++) slots.add(v.slotTable[i]);
    slots.delete(NO_SLOT);
    const fwmarks = [...slots].map((s) => v.fwmarkBySlot[s]).sort((a, b) => a - b);
    const record = targetJson(Date.now(), this.q, lbName, v.generation, v.activeTargets, fwmarks);
    this.post({ type: "trace", kind: Kind.target, record });
  }

  private traceFlowConf(
    set: "flows" | "trace-flows",
    names: string[],
    error?: string,
    force = false,
  ): void {
    if (!force && (this.tracer.bits & TraceBit.flowConf) === 0) return;
    const record = flowConfJson(Date.now(), this.q, set, names, error);
    this.post({ type: "trace", kind: Kind.flowConf, record });
  }

  private log(level: "warning" | "notice" | "info" | "debug", message: string): void {
    this.post({ type: "log", level, message });
  }
}

function traceMatcher(c: CompiledFlows | null, promiscuousPing: boolean): FlowMatcher | undefined {
  return c === null ? undefined : new FlowMatcher(c, { promiscuousPing });
}

/** The own load balancer's SCTP settings, and the flows' SCTP-over-UDP ports. */
function classifyOptionsOf(state: StateFile, flows: CompiledFlows | null = null): ClassifyOptions {
  return {
    sctpPortsOnly: state.config.sctpPortsOnly,
    sctpEncapPort: state.config.sctpEncapPort,
    sctpEncapPorts: flows === null ? undefined : encapPortMap(flows.encapPorts),
  };
}
