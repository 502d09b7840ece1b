// Per-queue daemon counters in a small shared file next to the state file
// (<state dir>/<name>.q<queue>.stats). The worker of that queue is the only writer;
// `nflb stats` reads it while the daemon runs and after it stops.
import { closeSync, ftruncateSync, openSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseLbName } from "../domain/names.js";
import { loadAddon } from "../native/addon.js";
import { countersFileQueue, countersPath, stateDir } from "../paths.js";

const COUNTERS_MAGIC = 0x4e464c53; // "NFLS"

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
  /** maxTargets words: packets per target slot. */
  perSlot: 72,
} as const;

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
  tierForwarded: number;
  noFlowDropped: number;
  noFlowMarked: number;
  stateDamage: number;
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
      tierForwarded: w[C.tierForwarded],
      noFlowDropped: w[C.noFlowDropped],
      noFlowMarked: w[C.noFlowMarked],
      stateDamage: w[C.stateDamage],
      invalidByReason,
      fragments: Object.fromEntries(
        Object.entries(FRAGMENT_COUNTERS).map(([key, index]) => [key, w[index]]),
      ) as QueueCounters["fragments"],
      perSlot: Array.from(w.subarray(C.perSlot, C.perSlot + w[C.maxTargets])),
    });
  }
  return result.sort((a, b) => a.queue - b.queue);
}
