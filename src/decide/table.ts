// What decide() needs of a load balancer: its hash seed and its Maglev table, as target
// slots and their fwmarks. The daemon's LbView (a copy of the shared state) is one; a
// FixedTable, built from a table of fwmarks, is another (tests, tools). Pure: no I/O.
import { reciprocalScale } from "../hash/jhash.js";

/** Slot number meaning "no target" (the table is empty). */
export const NO_SLOT = 0xffff;

export interface LbTable {
  readonly hashSeed: number;
  /** Target slot -> fwmark. */
  readonly fwmarkBySlot: Uint32Array;
  /** The target slot for a flow hash, or NO_SLOT. */
  slotFor(hash: number): number;
}

/** An LbTable over a fixed table of fwmarks (entry i = fwmark of Maglev entry i, 0 = none). */
export class FixedTable implements LbTable {
  readonly fwmarkBySlot: Uint32Array;
  private readonly slots: Uint16Array;

  constructor(
    fwmarks: Uint32Array,
    readonly hashSeed: number,
  ) {
    const marks = [...new Set(fwmarks)].filter((m) => m !== 0).sort((a, b) => a - b);
    if (marks.length >= NO_SLOT) throw new RangeError(`too many targets: ${marks.length}`);
    this.fwmarkBySlot = Uint32Array.from(marks);
    const slotOf = new Map(marks.map((m, i) => [m, i]));
    this.slots = Uint16Array.from(fwmarks, (m) => (m === 0 ? NO_SLOT : (slotOf.get(m) ?? NO_SLOT)));
  }

  slotFor(hash: number): number {
    return this.slots[reciprocalScale(hash, this.slots.length)];
  }
}
