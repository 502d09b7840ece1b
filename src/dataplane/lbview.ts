// A daemon's private copy of one load balancer's targets and Maglev table, refreshed
// when the shared state's generation moves. The table is translated once per change
// into target slot numbers, so the per-packet path is one array read for the slot and
// one for the fwmark, and per-target counters need no map.
//
// Damage: a copy that does not verify (checksums, stamp, generation, header; see
// src/state/layout.ts) is never used. The view keeps serving its last good table, counts
// the damage once per episode (damageCount, lastDamage) and does not copy the same
// damaged generation again; the episode ends at the next good copy or audit. Nothing
// here throws: the worker calls it between batches.
import { type LbTable, NO_SLOT } from "../decide/table.js";
import { reciprocalScale } from "../hash/jhash.js";
import { STAMP_WORDS, T, TARGET_WORDS, TS_IN_TABLE, tableStart } from "../state/layout.js";
import { READ_BUSY, READ_DAMAGED, type StateFile } from "../state/store.js";

export { NO_SLOT };

export class LbView implements LbTable {
  readonly tableSize: number;
  readonly maxTargets: number;
  readonly hashSeed: number;
  /** Generation of the table in use; -1 before the first good copy. */
  generation = -1;
  /** Targets in the table in use. */
  activeTargets = 0;
  /** Maglev entry -> target slot (NO_SLOT when the table is empty). */
  readonly slotTable: Uint16Array;
  readonly fwmarkBySlot: Uint32Array;
  /** Damage episodes seen so far (monotonic): a worker counts and logs the increase. */
  damageCount = 0;
  /** What was wrong, the last time damage was found. */
  lastDamage: string | undefined;
  /** In a damage episode now (the shared state does not verify). */
  damaged = false;
  /** The generation word last found damaged: not copied again until it moves. */
  private damagedGeneration = -1;
  /** Scratch copy of a published buffer (verified before anything is taken from it). */
  private readonly copy: Uint32Array;
  private readonly tableOffset: number;

  constructor(private readonly state: StateFile) {
    this.tableSize = state.config.tableSize;
    this.maxTargets = state.config.maxTargets;
    this.hashSeed = state.config.hashSeed;
    this.slotTable = new Uint16Array(this.tableSize).fill(NO_SLOT);
    this.fwmarkBySlot = new Uint32Array(this.maxTargets);
    this.copy = new Uint32Array(state.bufferWords());
    this.tableOffset = tableStart(state.geometry);
  }

  /** True when the shared state moved on since the last refresh (one atomic load). */
  stale(): boolean {
    const g = this.state.generation();
    return g !== this.generation && g !== this.damagedGeneration;
  }

  /**
   * Copies the published state. Returns the slots whose fwmark changed (their counters
   * belong to a new target now), or undefined if no copy was taken: a writer was busy
   * (try again at the next batch), or the state is damaged (damageCount, lastDamage; the
   * previous table stays in use).
   */
  refresh(): number[] | undefined {
    const generation = this.state.readBuffer(this.copy);
    if (generation === READ_BUSY) return undefined;
    if (generation === READ_DAMAGED) {
      this.damagedGeneration = this.state.generation();
      this.noteDamage(this.state.lastDamage);
      return undefined;
    }
    this.damaged = false;
    this.damagedGeneration = -1;
    const changedSlots: number[] = [];
    const slotOf = new Map<number, number>();
    let inTable = 0;
    for (let slot = 0; slot < this.maxTargets; slot++) {
      const base = STAMP_WORDS + slot * TARGET_WORDS;
      const fwmark = this.copy[base + T.fwmark];
      if (fwmark !== this.fwmarkBySlot[slot]) changedSlots.push(slot);
      this.fwmarkBySlot[slot] = fwmark;
      if (fwmark !== 0) slotOf.set(fwmark, slot);
      if (fwmark !== 0 && (this.copy[base + T.status] & TS_IN_TABLE) !== 0) inTable++;
    }
    for (let i = 0; i < this.tableSize; i++) {
      const fwmark = this.copy[this.tableOffset + i];
      this.slotTable[i] = fwmark === 0 ? NO_SLOT : (slotOf.get(fwmark) ?? NO_SLOT);
    }
    this.activeTargets = inTable;
    this.generation = generation;
    return changedSlots;
  }

  /**
   * Verifies the shared state in place (about once a second): finds damage that came
   * without a new generation, and ends an episode when the state verifies again.
   * Returns false while damaged.
   */
  audit(): boolean {
    const generation = this.state.audit();
    if (generation === READ_DAMAGED) {
      this.noteDamage(this.state.lastDamage);
      return false;
    }
    if (generation === this.generation) this.damaged = false;
    // A good state of another generation: let stale() report it, the next refresh takes it.
    else if (generation >= 0) this.damagedGeneration = -1;
    return !this.damaged;
  }

  /** The target slot for a flow hash, or NO_SLOT. */
  slotFor(hash: number): number {
    return this.slotTable[reciprocalScale(hash, this.tableSize)];
  }

  private noteDamage(reason: string | undefined): void {
    if (this.damaged) return;
    this.damaged = true;
    this.damageCount++;
    this.lastDamage = reason ?? "unknown damage";
  }
}
