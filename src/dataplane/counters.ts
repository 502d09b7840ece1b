// Per-queue daemon counters in a small shared file next to the state file
// (<state dir>/<name>.q<queue>.stats). The worker of that queue is the only writer;
// `nflb stats` reads it while the daemon runs and after it stops.
import { closeSync, ftruncateSync, openSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type Decision,
  type LbTable,
  NO_SLOT,
  REASON_COUNT,
  Reason,
  Verdict,
} from "../decide/index.js";
import { parseLbName } from "../domain/names.js";
import { loadAddon } from "../native/addon.js";
import { countersFileQueue, countersPath, stateDir } from "../paths.js";

/** "NFL2": the layout below (perSlot moved to word 96); files of the older layout are skipped. */
const COUNTERS_MAGIC = 0x4e464c32;

/** Float64 word indices; counters stay exact up to 2^53. */
export const C = {
  magic: 0,
  pid: 1,
  queue: 2,
  startedAt: 3,
  updatedAt: 4,
  maxTargets: 5,
  packets: 6,
  batches: 7,
  marked: 8,
  noTargetDropped: 9,
  noTargetMarked: 10,
  invalidDropped: 11,
  invalidAccepted: 12,
  sendErrors: 13,
  recvErrors: 14,
  tableChanges: 15,
  generation: 16,
  running: 17,
  fragFirstSeen: 18,
  fragForwarded: 19,
  fragStored: 20,
  fragReinjected: 21,
  fragExpiredEntries: 22,
  fragDroppedExpired: 23,
  fragDroppedPoolFull: 24,
  fragDroppedTooBig: 25,
  fragDroppedTableFull: 26,
  fragDroppedPoisoned: 27,
  fragTruncated: 28,
  fragReinjectErrors: 29,
  fragEntries: 30,
  fragHeld: 31,
  /** 32 words: invalid packets by classifier reason code. */
  invalidByReason: 32,
  /** Fragments handed to the tier instance that owns them. */
  tierForwarded: 64,
  fragPoisoned: 65,
  fragDiscardedPoisoned: 66,
  fragFirstDuplicate: 67,
  fragLaterSeen: 68,
  noFlowDropped: 69,
  noFlowMarked: 70,
  /** Damage episodes of the shared state (a copy or audit that did not verify). */
  stateDamage: 71,
  /** Flow sets this queue applied, when it applied the last one (ms), and its flows. */
  flowsApplied: 72,
  flowsAppliedAt: 73,
  flows: 74,
  /** The largest packet queued (its original length: a GSO packet is larger than the MTU). */
  largestPacket: 75,
  /** When the queue last applied a change of its load balancer's table (ms). */
  tableChangedAt: 76,
  /** maxTargets words: packets per target slot. */
  perSlot: 96,
} as const;

/** Per (reason, verdict): the counter a decision moves, -1 for none. */
const COUNTER_OF = (() => {
  const t = new Int16Array(REASON_COUNT * 3).fill(-1);
  const set = (reason: Reason, verdict: Verdict, counter: number) => {
    t[reason * 3 + verdict] = counter;
  };
  set(Reason.Balanced, Verdict.Accept, C.marked);
  set(Reason.FragFirst, Verdict.Accept, C.marked);
  set(Reason.FragForwarded, Verdict.Accept, C.marked);
  set(Reason.Invalid, Verdict.Drop, C.invalidDropped);
  set(Reason.Invalid, Verdict.AcceptUnmarked, C.invalidAccepted);
  set(Reason.TierPeer, Verdict.Accept, C.tierForwarded);
  set(Reason.NoFlow, Verdict.Drop, C.noFlowDropped);
  set(Reason.NoFlow, Verdict.Accept, C.noFlowMarked);
  set(Reason.NoTarget, Verdict.Drop, C.noTargetDropped);
  set(Reason.NoTarget, Verdict.Accept, C.noTargetMarked);
  set(Reason.FragTruncated, Verdict.Drop, C.fragTruncated);
  // Held and dropped fragments are counted by the fragment table (C.frag*).
  return t;
})();

/**
 * Counts one decision: its reason's counter, the invalid packet's classifier reason, and
 * the packet of its target slot when the queue's own load balancer chose it (flows are
 * counted per flow's load balancer elsewhere).
 */
export function countDecision(w: Float64Array, d: Decision, own: LbTable): void {
  if (d.reason === Reason.Balanced) {
    w[C.marked]++;
    if (d.lb === own) w[C.perSlot + d.slot]++;
    return;
  }
  const counter = COUNTER_OF[d.reason * 3 + d.verdict];
  if (counter >= 0) w[counter]++;
  if (d.reason === Reason.Invalid) w[C.invalidByReason + (d.invalid % INVALID_REASON_SLOTS)]++;
  else if (d.slot !== NO_SLOT && d.lb === own) w[C.perSlot + d.slot]++;
}

export const INVALID_REASON_SLOTS = 32;

/** Fragment counters as `nflb stats` names them. */
const FRAGMENT_COUNTERS = {
  firstSeen: C.fragFirstSeen,
  forwarded: C.fragForwarded,
  stored: C.fragStored,
  reinjected: C.fragReinjected,
  expiredEntries: C.fragExpiredEntries,
  droppedExpired: C.fragDroppedExpired,
  droppedPoolFull: C.fragDroppedPoolFull,
  droppedTooBig: C.fragDroppedTooBig,
  droppedTableFull: C.fragDroppedTableFull,
  droppedPoisoned: C.fragDroppedPoisoned,
  poisoned: C.fragPoisoned,
  discardedPoisoned: C.fragDiscardedPoisoned,
  firstDuplicate: C.fragFirstDuplicate,
  laterSeen: C.fragLaterSeen,
  truncated: C.fragTruncated,
  reinjectErrors: C.fragReinjectErrors,
  entries: C.fragEntries,
  held: C.fragHeld,
} as const;

export { countersPath };

/** Creates (or reuses) the counters file of a queue and maps it; the worker writes into it. */
export function mapCounters(name: string, queue: number, maxTargets: number): Float64Array {
  const words = C.perSlot + maxTargets;
  const fd = openSync(countersPath(name, queue), "w+", 0o644);
  try {
    ftruncateSync(fd, words * 8);
    const counters = new Float64Array(loadAddon().mmapShared(fd, words * 8));
    counters[C.magic] = COUNTERS_MAGIC;
    counters[C.queue] = queue;
    counters[C.maxTargets] = maxTargets;
    counters[C.pid] = process.pid;
    counters[C.startedAt] = Date.now();
    return counters;
  } finally {
    closeSync(fd);
  }
}

export interface QueueCounters {
  queue: number;
  pid: number;
  running: boolean;
  startedAt: string;
  updatedAt: string;
  packets: number;
  batches: number;
  marked: number;
  noTargetDropped: number;
  noTargetMarked: number;
  invalidDropped: number;
  invalidAccepted: number;
  sendErrors: number;
  recvErrors: number;
  tableChanges: number;
  /** The table generation the queue uses, and when it applied it. */
  generation: number;
  tableChangedAt: string;
  tierForwarded: number;
  noFlowDropped: number;
  noFlowMarked: number;
  /** Damage episodes of the shared states the queue reads. */
  stateDamage: number;
  /** Flow sets applied since the start, when the last was applied, its flows. */
  flowsApplied: number;
  flowsAppliedAt: string;
  flows: number;
  /** Largest packet queued, in bytes (GSO packets are larger than the MTU). */
  largestPacket: number;
  invalidByReason: Record<number, number>;
  fragments: Record<keyof typeof FRAGMENT_COUNTERS, number>;
  perSlot: number[];
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A queue's drops by reason, named as decide() names its reasons (the status and metrics
 * of `nflb run` show these): packets the daemon dropped, and fragments the fragment
 * table dropped or let expire.
 */
export function dropsByReason(q: QueueCounters): Record<string, number> {
  const f = q.fragments;
  return {
    "no-target": q.noTargetDropped,
    "no-flow": q.noFlowDropped,
    invalid: q.invalidDropped,
    "fragment-dropped":
      f.droppedPoolFull + f.droppedTooBig + f.droppedTableFull + f.droppedPoisoned,
    "fragment-truncated": f.truncated,
    "fragment-expired": f.droppedExpired,
  };
}

/** Reads every queue's counters file of a load balancer. */
export function readCounters(name: string): QueueCounters[] {
  parseLbName(name);
  let files: string[];
  try {
    files = readdirSync(stateDir());
  } catch {
    return [];
  }
  const result: QueueCounters[] = [];
  for (const file of files) {
    if (countersFileQueue(name, file) === undefined) continue;
    const bytes = readFileSync(join(stateDir(), file));
    if (bytes.length < C.perSlot * 8) continue;
    const w = new Float64Array(bytes.buffer, bytes.byteOffset, Math.floor(bytes.length / 8));
    if (w[C.magic] !== COUNTERS_MAGIC) continue;
    const invalidByReason: Record<number, number> = {};
    for (let r = 0; r < INVALID_REASON_SLOTS; r++) {
      if (w[C.invalidByReason + r] > 0) invalidByReason[r] = w[C.invalidByReason + r];
    }
    result.push({
      queue: w[C.queue],
      pid: w[C.pid],
      running: w[C.running] === 1 && processAlive(w[C.pid]),
      startedAt: new Date(w[C.startedAt]).toISOString(),
      updatedAt: new Date(w[C.updatedAt]).toISOString(),
      packets: w[C.packets],
      batches: w[C.batches],
      marked: w[C.marked],
      noTargetDropped: w[C.noTargetDropped],
      noTargetMarked: w[C.noTargetMarked],
      invalidDropped: w[C.invalidDropped],
      invalidAccepted: w[C.invalidAccepted],
      sendErrors: w[C.sendErrors],
      recvErrors: w[C.recvErrors],
      tableChanges: w[C.tableChanges],
      generation: w[C.generation],
      tableChangedAt: new Date(w[C.tableChangedAt]).toISOString(),
      tierForwarded: w[C.tierForwarded],
      noFlowDropped: w[C.noFlowDropped],
      noFlowMarked: w[C.noFlowMarked],
      stateDamage: w[C.stateDamage],
      flowsApplied: w[C.flowsApplied],
      flowsAppliedAt: new Date(w[C.flowsAppliedAt]).toISOString(),
      flows: w[C.flows],
      largestPacket: w[C.largestPacket],
      invalidByReason,
      fragments: Object.fromEntries(
        Object.entries(FRAGMENT_COUNTERS).map(([key, index]) => [key, w[index]]),
      ) as QueueCounters["fragments"],
      perSlot: Array.from(w.subarray(C.perSlot, C.perSlot + w[C.maxTargets])),
    });
  }
  return result.sort((a, b) => a.queue - b.queue);
}
