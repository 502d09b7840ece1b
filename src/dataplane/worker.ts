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
import { C, INVALID_REASON_SLOTS, mapCounters } from "./counters.js";
import { FragmentHandler, type FragmentOptions } from "./fraghandler.js";
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
}

export type WorkerMessage =
  | { type: "ready"; queue: number }
  | { type: "error"; queue: number; message: string }
  | { type: "log"; level: "warning" | "notice" | "info" | "debug"; message: string }
  | { type: "stopped"; queue: number };

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
  post({
    type: "log",
    level: "info",
    message: `queue ${config.queue.queue}: table generation ${view.generation}, ${view.activeTargets} active targets`,
  });
}

function onBatch(batch: PacketBatch, verdicts: VerdictWriter): void {
  if (view.stale()) refreshView();
  for (const v of flowLbViews) if (v.stale()) v.refresh();
  if (tier?.stale()) tier.refresh();
  const now = Date.now();
  if (now - flowsCheckedAt >= FLOWS_CHECK_MS) refreshFlows(now);
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
    if (tier !== undefined && info.fragKind !== FragKind.None) {
      const owner = tier.slotFor(addressHash(info, tier.hashSeed));
      if (owner !== NO_SLOT && tier.fwmarkBySlot[owner] !== ownFwmark) {
        verdicts.accept(id, tier.fwmarkBySlot[owner]);
        counters[C.tierForwarded]++;
        continue;
      }
    }
    // Which load balancer: the best flow's, or the daemon's own when no flow is defined.
    let lb = view;
    let hashAddresses = false;
    if (flows !== undefined) {
      const f = flows.match(info, buf);
      if (f < 0) {
        if (config.nolbFwmark !== 0) {
          verdicts.accept(id, config.nolbFwmark);
          counters[C.noFlowMarked]++;
        } else {
          verdicts.drop(id);
          counters[C.noFlowDropped]++;
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
      continue;
    }
    let mark = lb.fwmarkBySlot[slot];
    if (fragments !== undefined && info.fragKind !== FragKind.None) {
      mark = fragments.markFor(
        info,
        buf,
        payloadOffset[i],
        payloadLength[i],
        batch.origLength[i],
        mark,
        now,
      );
      // 0: a copy waits for its first fragment, or the table dropped it (counted there).
      if (mark === 0) {
        verdicts.drop(id);
        continue;
      }
    }
    verdicts.accept(id, mark);
    // Per-target counters are the daemon's own load balancer's (flows count per flow).
    if (lb === view) counters[C.perSlot + slot]++;
    marked++;
  }
  fragments?.afterBatch(now);
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
      flowLbViews = [...byName.values()].filter((v) => v !== view);
    }
    post({
      type: "log",
      level: "info",
      message: `queue ${config.queue.queue}: ${specs.length} flows`,
    });
  } catch (err) {
    post({
      type: "log",
      level: "warning",
      message: `flows not applied, keeping the previous ones: ${(err as Error).message}`,
    });
  }
}

/** Once a second: publish socket counters, follow a re-created state file. */
function housekeeping(): void {
  counters[C.updatedAt] = Date.now();
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
