// A daemon's private copy of one load balancer's targets and Maglev table, refreshed
// when the shared state's generation moves. The table is translated once per change
// into target slot numbers, so the per-packet path is one array read for the slot and
// one for the fwmark, and per-target counters need no map.
import { type LbTable, NO_SLOT } from "../decide/table.js";
import { reciprocalScale } from "../hash/jhash.js";
import { T, TARGET_WORDS } from "../state/layout.js";
import type { StateFile } from "../state/store.js";

export { NO_SLOT };

export class LbView implements LbTable {
  readonly tableSize: number;
  readonly maxTargets: number;
  readonly hashSeed: number;
  generation = -1;
  activeTargets = 0;
  /** Maglev entry -> target slot (NO_SLOT when the table is empty). */
  readonly slotTable: Uint16Array;
  readonly fwmarkBySlot: Uint32Array;
  private readonly targetWords: Uint32Array;
  private readonly fwmarkTable: Uint32Array;

  constructor(private readonly state: StateFile) {
    this.tableSize = state.config.tableSize;
    this.maxTargets = state.config.maxTargets;
    this.hashSeed = state.config.hashSeed;
    this.slotTable = new Uint16Array(this.tableSize).fill(NO_SLOT);
    this.fwmarkBySlot = new Uint32Array(this.maxTargets);
    this.targetWords = new Uint32Array(this.maxTargets * TARGET_WORDS);
    this.fwmarkTable = new Uint32Array(this.tableSize);
  }

  /** True when the shared state moved on since the last refresh (one atomic load). */
  stale(): boolean {
    return this.state.generation() !== this.generation;
  }

  /**
   * Copies the published state. Returns the slots whose fwmark changed (their counters
   * belong to a new target now), or undefined if the copy could not be taken this time.
   */
  refresh(): number[] | undefined {
    const generation = this.state.readInto(this.targetWords, this.fwmarkTable);
    if (generation < 0) return undefined;
    const changedSlots: number[] = [];
    const slotOf = new Map<number, number>();
    let active = 0;
    for (let slot = 0; slot < this.maxTargets; slot++) {
      const fwmark = this.targetWords[slot * TARGET_WORDS + T.fwmark];
      if (fwmark !== this.fwmarkBySlot[slot]) changedSlots.push(slot);
      this.fwmarkBySlot[slot] = fwmark;
      if (fwmark !== 0 && this.targetWords[slot * TARGET_WORDS + T.active] === 1) {
        slotOf.set(fwmark, slot);
        active++;
      }
    }
    for (let i = 0; i < this.tableSize; i++) {
      const fwmark = this.fwmarkTable[i];
      this.slotTable[i] = fwmark === 0 ? NO_SLOT : (slotOf.get(fwmark) ?? NO_SLOT);
    }
    this.activeTargets = active;
    this.generation = generation;
    return changedSlots;
  }

  /** The target slot for a flow hash, or NO_SLOT. */
  slotFor(hash: number): number {
    return this.slotTable[reciprocalScale(hash, this.tableSize)];
  }
}
