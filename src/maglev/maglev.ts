// Maglev consistent hashing (Eisenbud et al., NSDI 2016, section 3.4): build the
// lookup table from a set of weighted targets, and map a flow hash onto it.
// Pure: no I/O, no clock. The data path only ever calls maglevLookup().

import { MAX_FWMARK } from "../domain/fwmark.js";
import { MAX_WEIGHT } from "../domain/weight.js";
import { reciprocalScale } from "../hash/jhash.js";
import { maglevPermutation } from "./permutation.js";
import { schedulePeriod, weightedTurns } from "./schedule.js";
import { isPrime, MAX_TABLE_SIZE, MIN_TABLE_SIZE } from "./table-size.js";

export { maglevPermutation } from "./permutation.js";
export {
  DEFAULT_TABLE_SIZE,
  isPrime,
  MAX_TABLE_SIZE,
  MIN_TABLE_SIZE,
  normalizeTableSize,
} from "./table-size.js";

/** A real target: the fwmark Linux forwards by, and its integer weight (0 = owns nothing). */
export interface MaglevTarget {
  readonly fwmark: number;
  readonly weight: number;
}

export { MAX_FWMARK, MAX_WEIGHT };

/**
 * Checks every target and returns those with weight > 0, sorted by fwmark, so the
 * table depends only on the set of (fwmark, weight), never on the order given.
 */
function activeTargetsByFwmark(targets: readonly MaglevTarget[]): MaglevTarget[] {
  for (const t of targets) {
    if (!Number.isInteger(t.fwmark) || t.fwmark < 1 || t.fwmark > MAX_FWMARK) {
      throw new RangeError(
        `Maglev target fwmark must be an integer in 1..0xffffffff, got ${t.fwmark}`,
      );
    }
    if (!Number.isInteger(t.weight) || t.weight < 0 || t.weight > MAX_WEIGHT) {
      throw new RangeError(
        `Maglev target ${t.fwmark}: weight must be an integer in 0..${MAX_WEIGHT}, got ${t.weight}`,
      );
    }
  }
  const sorted = targets.slice().sort((a, b) => a.fwmark - b.fwmark);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].fwmark === sorted[i - 1].fwmark) {
      throw new RangeError(`Maglev target fwmark ${sorted[i].fwmark} appears more than once`);
    }
  }
  return sorted.filter((t) => t.weight > 0);
}

/**
 * Builds the lookup table: entry i is the fwmark of the target owning slot i, all 0
 * when no target has weight > 0. `size` must be a prime in [MIN_TABLE_SIZE,
 * MAX_TABLE_SIZE] (see normalizeTableSize). Reuses `out` when its length is `size`.
 * Throws RangeError on bad targets; `out` is left untouched then.
 */
export function buildMaglevTable(
  targets: readonly MaglevTarget[],
  size: number,
  out?: Uint32Array,
): Uint32Array {
  // A non-prime M would let a permutation cycle short of M slots: the fill loop
  // could then spin forever, so refuse it rather than silently rounding here.
  if (!Number.isInteger(size) || size < MIN_TABLE_SIZE || size > MAX_TABLE_SIZE || !isPrime(size)) {
    throw new RangeError(
      `Maglev table size must be a prime in [${MIN_TABLE_SIZE}, ${MAX_TABLE_SIZE}], got ${size}`,
    );
  }
  const active = activeTargetsByFwmark(targets);
  const table = out !== undefined && out.length === size ? out : new Uint32Array(size);
  // 0 is never a valid fwmark, so it doubles as the "slot free" marker while filling.
  table.fill(0);
  const n = active.length;
  if (n === 0) return table;

  // Per-target state in typed arrays, O(N): the permutations themselves (N × M) are
  // never stored; pos[i] walks target i's permutation on the fly, adding skip mod M.
  const mark = new Uint32Array(n);
  const weight = new Uint32Array(n);
  const pos = new Uint32Array(n);
  const skip = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const t = active[i];
    const p = maglevPermutation(t.fwmark, size);
    mark[i] = t.fwmark;
    weight[i] = t.weight;
    pos[i] = p.offset;
    skip[i] = p.skip;
  }
  // Whose turn it is, cycling through one period of the weighted schedule (see
  // schedule.ts); equal weights give 0..N-1, the paper's round robin.
  const turns = weightedTurns(weight, Math.min(schedulePeriod(weight), size));
  const period = turns.length;

  // Terminates: M prime makes each walk visit every slot, so a free one is found
  // while filled < M.
  let filled = 0;
  let j = 0;
  for (;;) {
    const t = turns[j];
    if (++j === period) j = 0;
    const s = skip[t];
    let c = pos[t];
    while (table[c] !== 0) {
      c += s;
      if (c >= size) c -= size;
    }
    table[c] = mark[t];
    if (++filled === size) break;
    c += s;
    if (c >= size) c -= size;
    pos[t] = c;
  }
  return table;
}

/**
 * O(1), no allocation: the fwmark for a 32-bit flow hash (0 = no target), at index
 * (hash * M) >> 32 like the kernel's reciprocal_scale(), so an nft `jhash ... mod M`
 * map built from the same table agrees with user space.
 */
export function maglevLookup(table: Uint32Array, hash: number): number {
  // >>> 0 accepts a hash that went through signed 32-bit arithmetic.
  return table[reciprocalScale(hash >>> 0, table.length)];
}

/** Entries owned per fwmark (for `nflb show`), in fwmark order; free (0) entries are not counted. */
export function tableShares(table: Uint32Array): Map<number, number> {
  const counts = new Map<number, number>();
  for (let i = 0; i < table.length; i++) {
    const m = table[i];
    if (m !== 0) counts.set(m, (counts.get(m) ?? 0) + 1);
  }
  return new Map([...counts].sort((a, b) => a[0] - b[0]));
}
