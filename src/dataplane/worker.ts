// One worker_thread per queue: its own netlink socket, its own copy of the table, its
// own counters. Data flows one way: socket -> batch -> classify -> lookup -> verdicts.
import { statSync } from "node:fs";
import { parentPort, workerData } from "node:worker_threads";
import { FlowMatcher } from "../flows/index.js";
import {
  NfQueue,
  type PacketBatch,
  type QueueOptions,
  type VerdictWriter,
} from "../nfqueue/queue.js";
import { addressHash, classify, FragKind, flowHash, PacketInfo } from "../packet/index.js";
import { flowsVersion, readFlows } from "../state/flowstore.js";
import { openState, type StateFile } from "../state/store.js";
import { Kind, PER_PACKET_BITS, TraceBit } from "../trace/kinds.js";
import {
  FRAG_EVENT_OF_OUTCOME,
  FRAG_REASON_OF_OUTCOME,
  FRAG_TRUNCATED_REASON,
  type FragEvent,
  flowConfJson,
  fragJson,
  type PacketDecision,
  packetJson,
  reinjectedJson,
  targetJson,
} from "../trace/record.js";
import { TraceRing } from "../trace/ring.js";
import { C, INVALID_REASON_SLOTS, mapCounters } from "./counters.js";
import { FragmentHandler, type FragmentOptions, TRUNCATED } from "./fraghandler.js";
import { LbView, NO_SLOT } from "./lbview.js";

export interface WorkerConfig {
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

const config = workerData as WorkerConfig;
const port = parentPort;
if (!port) throw new Error("worker.ts runs only as a worker_thread");

function post(message: WorkerMessage): void {
  port?.postMessage(message);
}

let state: StateFile;
let view: LbView;
let counters: Float64Array;
let queue: NfQueue;
let fragments: FragmentHandler | undefined;
let tier: LbView | undefined;
/** Flows (when any are defined) and, per flow, the load balancer serving it. */
let flows: FlowMatcher | undefined;
let flowLbs: LbView[] = [];
let flowLbViews: LbView[] = [];
let flowsSeen = "";
let flowsCheckedAt = 0;
/** How often the flow file is looked at: a stat, so not every batch. */
const FLOWS_CHECK_MS = 20;
let ownFwmark = 0;
const info = new PacketInfo();
let classifyOptions = { sctpPortsOnly: true, sctpEncapPort: 0 };
/** Names of the load balancers in flowLbViews, same order (for target traces). */
let flowLbViewNames: string[] = [];

// Tracing. When nobody traces, the cost is one atomic load of the mask per batch (and a
// test of a local per packet); records are built only for what a tracer selected.
const traceMask = new Int32Array(config.trace?.mask ?? new SharedArrayBuffer(4));
const traceRing = config.trace ? new TraceRing(config.trace.ring) : undefined;
/** The mask as loaded at the start of the current batch. */
let traceBits = 0;
/** Compiled trace flows (only while the packet trace is selected), undefined when none. */
let traceFlows: FlowMatcher | undefined;
let traceFlowsSeen = "";
let traceFlowsCheckedAt = 0;
const decision: PacketDecision = {
  traceFlow: null,
  flow: null,
  lb: null,
  target: -1,
  fwmark: -1,
  reason: null,
};

function traceEvent(kind: number, record: string): void {
  post({ type: "trace", kind, record });
}

/** Records of one traced packet: `packet` if a trace flow selected it, `sctp` if selected. */
function tracePacket(
  traced: number,
  sctp: boolean,
  flow: number,
  lb: string | null,
  target: number,
  fwmark: number,
  reason: string | null,
  now: number,
): void {
  if (traceRing === undefined) return;
  decision.flow = flow >= 0 && flows !== undefined ? flows.flows[flow].name : null;
  decision.lb = lb;
  decision.target = target;
  decision.fwmark = fwmark;
  decision.reason = reason;
  const q = config.queue.queue;
  if (traced >= 0 && traceFlows !== undefined) {
    decision.traceFlow = traceFlows.flows[traced].name;
    traceRing.write(Kind.packet, packetJson("packet", now, q, info, decision));
  }
  if (sctp) {
    decision.traceFlow = null;
    traceRing.write(Kind.sctp, packetJson("sctp", now, q, info, decision));
  }
}

/** What the fragment table did with the fragment just handled (frag traces tell it). */
function fragOutcome(f: FragmentHandler): { event: FragEvent; reason: string | null } {
  const o = f.outcome;
  if (o === TRUNCATED) return { event: "dropped", reason: FRAG_TRUNCATED_REASON };
  return { event: FRAG_EVENT_OF_OUTCOME[o], reason: FRAG_REASON_OF_OUTCOME[o] };
}

/** The trace bits housekeeping saw last: a newly selected kind gets the current state. */
let snapshotBits = 0;

/** Target and flow-conf records of the current state, for the kinds in `bits`. */
function traceSnapshot(bits: number): void {
  const now = Date.now();
  const q = config.queue.queue;
  if ((bits & TraceBit.target) !== 0) {
    traceTarget(config.name, view);
    for (let k = 0; k < flowLbViews.length; k++) traceTarget(flowLbViewNames[k], flowLbViews[k]);
  }
  if ((bits & TraceBit.flowConf) !== 0) {
    traceEvent(Kind.flowConf, flowConfJson(now, q, "flows", flows?.flows.map((x) => x.name) ?? []));
  }
}

/** A target record: a load balancer's table changed (only when the target trace is on). */
function traceTarget(lbName: string, v: LbView): void {
  const slots = new Set<number>();
  for (let i = 0; i < v.slotTable.length; i++) slots.add(v.slotTable[i]);
  slots.delete(NO_SLOT);
  const fwmarks = [...slots].map((s) => v.fwmarkBySlot[s]).sort((a, b) => a - b);
  traceEvent(
    Kind.target,
    targetJson(Date.now(), config.queue.queue, lbName, v.generation, v.activeTargets, fwmarks),
  );
}

function attachState(): void {
  state = openState(config.name);
  view = new LbView(state);
  classifyOptions = {
    sctpPortsOnly: state.config.sctpPortsOnly,
    sctpEncapPort: state.config.sctpEncapPort,
  };
  refreshView();
}

function refreshView(): void {
  const changed = view.refresh();
  if (!changed) return; // a writer is busy; the next batch tries again
  for (const slot of changed) counters[C.perSlot + slot] = 0;
  counters[C.tableChanges]++;
  counters[C.generation] = view.generation;
  if ((traceBits & TraceBit.target) !== 0) traceTarget(config.name, view);
  post({
    type: "log",
    level: "info",
    message: `queue ${config.queue.queue}: table generation ${view.generation}, ${view.activeTargets} active targets`,
  });
}

/** Follows changes of the tables and flows (each batch; and each second while traced). */
function followConfig(): number {
  if (view.stale()) refreshView();
  for (let k = 0; k < flowLbViews.length; k++) {
    const v = flowLbViews[k];
    if (v.stale() && v.refresh() !== undefined && (traceBits & TraceBit.target) !== 0) {
      traceTarget(flowLbViewNames[k], v);
    }
  }
  if (tier?.stale() && tier.refresh() !== undefined && (traceBits & TraceBit.target) !== 0) {
    traceTarget(config.tier ?? "tier", tier);
  }
  const now = Date.now();
  if (now - flowsCheckedAt >= FLOWS_CHECK_MS) refreshFlows(now);
  return now;
}

function onBatch(batch: PacketBatch, verdicts: VerdictWriter): void {
  traceBits = Atomics.load(traceMask, 0);
  const now = followConfig();
  // Per-packet traces, only when selected: packets of the trace flows, SCTP, fragments.
  let tf: FlowMatcher | undefined;
  let perPacket = false;
  let traceSctp = false;
  let traceFrag = false;
  if ((traceBits & PER_PACKET_BITS) !== 0 && traceRing !== undefined) {
    if ((traceBits & TraceBit.packet) !== 0) {
      if (now - traceFlowsCheckedAt >= FLOWS_CHECK_MS) refreshTraceFlows(now);
      tf = traceFlows;
    }
    traceSctp = (traceBits & TraceBit.sctp) !== 0;
    traceFrag = (traceBits & TraceBit.frag) !== 0 && fragments !== undefined;
    perPacket = tf !== undefined || traceSctp || traceFrag;
  }
  const reinjectedBefore = traceFrag && fragments ? fragments.table.counters.reinjected : 0;
  const { buf, ids, payloadOffset, payloadLength } = batch;
  let marked = 0;
  for (let i = 0; i < batch.count; i++) {
    const id = ids[i];
    const invalid = classify(buf, payloadOffset[i], payloadLength[i], classifyOptions, info);
    if (invalid !== 0) {
      counters[C.invalidByReason + (invalid % INVALID_REASON_SLOTS)]++;
      if (config.acceptInvalid) {
        verdicts.acceptUnmarked(id);
        counters[C.invalidAccepted]++;
      } else {
        verdicts.drop(id);
        counters[C.invalidDropped]++;
      }
      continue;
    }
    // Tracing this packet? (traced: the index of the first trace flow it matches)
    let traced = -1;
    let tracing = false;
    let fragTraced = false;
    if (perPacket) {
      if (tf !== undefined) traced = tf.match(info, buf);
      fragTraced = traceFrag && info.fragKind !== FragKind.None;
      tracing = traced >= 0 || (traceSctp && info.proto === 132);
    }
    if (tier !== undefined && info.fragKind !== FragKind.None) {
      const owner = tier.slotFor(addressHash(info, tier.hashSeed));
      if (owner !== NO_SLOT && tier.fwmarkBySlot[owner] !== ownFwmark) {
        verdicts.accept(id, tier.fwmarkBySlot[owner]);
        counters[C.tierForwarded]++;
        if (tracing) {
          const m = tier.fwmarkBySlot[owner];
          tracePacket(traced, traceSctp && info.proto === 132, -1, null, -1, m, "tier", now);
        }
        if (fragTraced) {
          traceRing?.write(
            Kind.frag,
            fragJson(now, config.queue.queue, info, "tier", tier.fwmarkBySlot[owner], null),
          );
        }
        continue;
      }
    }
    // Which load balancer: the best flow's, or the daemon's own when no flow is defined.
    let lb = view;
    let hashAddresses = false;
    let f = -1;
    if (flows !== undefined) {
      f = flows.match(info, buf);
      if (f < 0) {
        if (config.nolbFwmark !== 0) {
          verdicts.accept(id, config.nolbFwmark);
          counters[C.noFlowMarked]++;
        } else {
          verdicts.drop(id);
          counters[C.noFlowDropped]++;
        }
        if (tracing) {
          const m = config.nolbFwmark !== 0 ? config.nolbFwmark : -1;
          tracePacket(traced, traceSctp && info.proto === 132, -1, null, -1, m, "no-flow", now);
        }
        continue;
      }
      lb = flowLbs[f];
      hashAddresses = flows.hashOnAddresses[f] === 1;
    }
    const hash = hashAddresses ? addressHash(info, lb.hashSeed) : flowHash(info, lb.hashSeed);
    const slot = lb.slotFor(hash);
    if (slot === NO_SLOT) {
      if (config.notargetsFwmark !== 0) {
        verdicts.accept(id, config.notargetsFwmark);
        counters[C.noTargetMarked]++;
      } else {
        verdicts.drop(id);
        counters[C.noTargetDropped]++;
      }
      if (tracing) {
        const m = config.notargetsFwmark !== 0 ? config.notargetsFwmark : -1;
        const lbName = f >= 0 && flows !== undefined ? flows.flows[f].target : config.name;
        tracePacket(traced, traceSctp && info.proto === 132, f, lbName, -1, m, "no-target", now);
      }
      continue;
    }
    let mark = lb.fwmarkBySlot[slot];
    if (fragments !== undefined && info.fragKind !== FragKind.None) {
      // What the hash picked; a later fragment (no ports) follows its first one instead.
      const target = info.fragKind === FragKind.First ? mark : -1;
      mark = fragments.markFor(
        info,
        buf,
        payloadOffset[i],
        payloadLength[i],
        batch.origLength[i],
        mark,
        now,
      );
      if (tracing || fragTraced) {
        const o = fragOutcome(fragments);
        if (fragTraced) {
          traceRing?.write(
            Kind.frag,
            fragJson(now, config.queue.queue, info, o.event, mark === 0 ? -1 : mark, o.reason),
          );
        }
        if (tracing) {
          const lbName = f >= 0 && flows !== undefined ? flows.flows[f].target : config.name;
          const why = `fragment ${o.event}${o.reason === null ? "" : `: ${o.reason}`}`;
          const m = mark === 0 ? -1 : mark;
          tracePacket(traced, traceSctp && info.proto === 132, f, lbName, target, m, why, now);
        }
      }
      // 0: a copy waits for its first fragment, or the table dropped it (counted there).
      if (mark === 0) {
        verdicts.drop(id);
        continue;
      }
    } else if (tracing) {
      const lbName = f >= 0 && flows !== undefined ? flows.flows[f].target : config.name;
      tracePacket(traced, traceSctp && info.proto === 132, f, lbName, mark, mark, null, now);
    }
    verdicts.accept(id, mark);
    // Per-target counters are the daemon's own load balancer's (flows count per flow).
    if (lb === view) counters[C.perSlot + slot]++;
    marked++;
  }
  fragments?.afterBatch(now);
  if (traceFrag && fragments !== undefined) {
    const reinjected = fragments.table.counters.reinjected - reinjectedBefore;
    if (reinjected > 0) {
      traceRing?.write(Kind.frag, reinjectedJson(now, config.queue.queue, reinjected));
    }
  }
  counters[C.packets] += batch.count;
  counters[C.marked] += marked;
  counters[C.batches]++;
}

/** Recompiles the flows when the flow file changed; a bad change keeps the old flows. */
function refreshFlows(now: number): void {
  flowsCheckedAt = now;
  const version = flowsVersion();
  if (version === flowsSeen) return;
  flowsSeen = version;
  try {
    const specs = readFlows();
    if (specs.length === 0) {
      flows = undefined;
      flowLbs = [];
      flowLbViews = [];
      flowLbViewNames = [];
    } else {
      const matcher = new FlowMatcher(specs, { promiscuousPing: config.promiscuousPing });
      const byName = new Map<string, LbView>([[config.name, view]]);
      const lbs = matcher.flows.map((f) => {
        let v = byName.get(f.target);
        if (v === undefined) {
          v = new LbView(openState(f.target));
          v.refresh();
          byName.set(f.target, v);
        }
        return v;
      });
      flows = matcher;
      flowLbs = lbs;
      const others = [...byName].filter(([, v]) => v !== view);
      flowLbViews = others.map(([, v]) => v);
      flowLbViewNames = others.map(([n]) => n);
    }
    post({
      type: "log",
      level: "info",
      message: `queue ${config.queue.queue}: ${specs.length} flows`,
    });
    if ((traceBits & TraceBit.flowConf) !== 0) {
      const names = flows?.flows.map((x) => x.name) ?? [];
      traceEvent(Kind.flowConf, flowConfJson(now, config.queue.queue, "flows", names));
    }
  } catch (err) {
    post({
      type: "log",
      level: "warning",
      message: `flows not applied, keeping the previous ones: ${(err as Error).message}`,
    });
    if ((traceBits & TraceBit.flowConf) !== 0) {
      const names = flows?.flows.map((x) => x.name) ?? [];
      const error = (err as Error).message;
      traceEvent(Kind.flowConf, flowConfJson(now, config.queue.queue, "flows", names, error));
    }
  }
}

/** Recompiles the trace flows when their file changed (only while the packet trace is on). */
function refreshTraceFlows(now: number): void {
  traceFlowsCheckedAt = now;
  const version = flowsVersion("trace-flows");
  if (version === traceFlowsSeen) return;
  traceFlowsSeen = version;
  try {
    const specs = readFlows("trace-flows");
    traceFlows =
      specs.length === 0
        ? undefined
        : new FlowMatcher(specs, { promiscuousPing: config.promiscuousPing });
    if ((traceBits & TraceBit.flowConf) !== 0) {
      const names = traceFlows?.flows.map((x) => x.name) ?? [];
      traceEvent(Kind.flowConf, flowConfJson(now, config.queue.queue, "trace-flows", names));
    }
  } catch (err) {
    post({
      type: "log",
      level: "warning",
      message: `trace flows not applied, keeping the previous ones: ${(err as Error).message}`,
    });
  }
}

/** Once a second: publish socket counters, follow a re-created state file. */
function housekeeping(): void {
  counters[C.updatedAt] = Date.now();
  // Table and flow changes are picked up at the next batch; a tracer of them should not
  // wait for traffic to see them.
  traceBits = Atomics.load(traceMask, 0);
  if ((traceBits & (TraceBit.target | TraceBit.flowConf)) !== 0) {
    followConfig();
    traceSnapshot(traceBits & ~snapshotBits);
  }
  snapshotBits = traceBits;
  // Entries expire even when no fragment arrives.
  fragments?.afterBatch(Date.now());
  counters[C.sendErrors] = queue.stats.sendErrors;
  counters[C.recvErrors] = queue.stats.recvErrors;
  let inode = -1;
  try {
    inode = statSync(state.path).ino;
  } catch {
    // deleted: keep balancing with the last configuration until it comes back
  }
  if (inode !== -1 && inode !== state.inode) {
    try {
      const old = state;
      attachState();
      old.close();
      post({
        type: "log",
        level: "notice",
        message: `state file ${state.path} was re-created; reloaded`,
      });
    } catch (err) {
      post({
        type: "log",
        level: "warning",
        message: `cannot reload state: ${(err as Error).message}`,
      });
    }
  }
}

try {
  const probe = openState(config.name);
  counters = mapCounters(config.name, config.queue.queue, probe.config.maxTargets);
  ownFwmark = probe.config.ownFwmark;
  probe.close();
  attachState();
  if (config.fragments) fragments = new FragmentHandler(config.fragments, counters);
  if (config.tier) {
    tier = new LbView(openState(config.tier));
    tier.refresh();
  }
  queue = NfQueue.open(config.queue);
} catch (err) {
  post({ type: "error", queue: config.queue.queue, message: (err as Error).message });
  process.exit(1);
}

counters[C.running] = 1;
const timer = setInterval(housekeeping, 1000);
queue.start(onBatch);
post({ type: "ready", queue: config.queue.queue });

port.on("message", (message: { type: string }) => {
  if (message.type !== "stop") return;
  clearInterval(timer);
  // Packets already queued get their verdicts before the socket goes away.
  queue.drain(onBatch);
  queue.close();
  housekeeping();
  fragments?.close();
  counters[C.running] = 0;
  post({ type: "stopped", queue: config.queue.queue });
  port.close();
});
